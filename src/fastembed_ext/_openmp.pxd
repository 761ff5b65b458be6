# OpenMP helpers guarded by #ifdef _OPENMP, so that a build without OpenMP
# (FASTEMBED_EXT_OPENMP=0, or a compiler that lacks it) still compiles and
# imports, and simply runs every loop on one thread.

cdef extern from * nogil:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fe_openmp_enabled(void) { return 1; }
    static int fe_omp_max_threads(void) { return omp_get_max_threads(); }
    static int fe_openmp_version(void) { return _OPENMP; }
    #else
    static int fe_openmp_enabled(void) { return 0; }
    static int fe_omp_max_threads(void) { return 1; }
    static int fe_openmp_version(void) { return 0; }
    #endif
    """
    int fe_openmp_enabled()
    int fe_omp_max_threads()
    int fe_openmp_version()
