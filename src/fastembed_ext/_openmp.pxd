# OpenMP helpers guarded by #ifdef _OPENMP, so that a build without OpenMP
# (FASTEMBED_EXT_OPENMP=0, or a compiler that lacks it) still compiles and
# imports, and simply runs every loop on one thread.

cdef extern from * nogil:
    """
    /* set on the first parallel region: after a fork, libgomp's pool is not
       usable in the child, so the library then runs serially there */
    static int fe_pool_started = 0;
    static void fe_mark_pool_started(void) { fe_pool_started = 1; }
    static int fe_get_pool_started(void) { return fe_pool_started; }
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
    void fe_mark_pool_started()
    int fe_get_pool_started()
    int fe_openmp_enabled()
    int fe_omp_max_threads()
    int fe_openmp_version()
