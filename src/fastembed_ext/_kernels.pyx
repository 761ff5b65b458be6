# Compiled loops that only move numbers.
#
# Every argument arrives validated by _api.py: dtypes, shapes, row strides,
# alignment, index bounds and overlap are all checked there, before anything
# here runs, so a kernel never has to report a bad input.  The only failure a
# kernel can meet is a failed scratch allocation, and it allocates before its
# first write.
#
# Arrays are read through the NumPy C API (pointer, shape, strides) rather
# than typed memoryviews: acquiring a buffer per argument costs more than the
# whole copy on a small batch.

from libc.stdint cimport int32_t, int64_t, uint16_t
from libc.stdlib cimport calloc, malloc, free
from libc.math cimport fabs, pow, sqrt, sqrtf, isnan, INFINITY
from libc.string cimport memcpy, memset
from cython.parallel cimport prange

cimport numpy as cnp

from fastembed_ext._openmp cimport (fe_get_pool_started, fe_mark_pool_started, fe_omp_max_threads,
                                    fe_openmp_enabled, fe_openmp_version)

cnp.import_array()

cdef extern from "_fe_half.h" nogil:
    float fe_half_to_float(uint16_t h)
    uint16_t fe_float_to_half(float f)
    void fe_half_add_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n)
    void fe_half_add_scaled_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale)
    int fe_cpu_has_f16c()
    int fe_cpu_has_avx2()
    int fe_cpu_has_avx512f()
    void fe_set_use_f16c(int on)
    int fe_get_use_f16c()
    float fe_addf(float d, float s)
    double fe_addd(double d, double s)
    float fe_mulf(float a, float b)
    double fe_muld(double a, double b)
    float fe_subf(float a, float b)
    double fe_subd(double a, double b)
    float fe_divf(float a, float b)
    double fe_divd(double a, double b)
    void fe_add_row_f32(float* dst, const float* src, Py_ssize_t n)
    void fe_add_row_f64(double* dst, const double* src, Py_ssize_t n)
    int fe_set_isa_level(int cap)
    int fe_get_isa_level()
    void fe_copy_row(char* dst, const char* src, size_t n)
    void fe_bf16_add_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n)
    void fe_bf16_add_scaled_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale)
    float fe_bf16_to_float(uint16_t h)
    uint16_t fe_float_to_bf16(float f)
    void FE_PREFETCH(const void* p)
    void FE_PREFETCH_W(const void* p)

cdef extern from *:
    """
    #ifndef FE_BUILD_CFLAGS
    #define FE_BUILD_CFLAGS ""
    #endif
    """
    const char* FE_BUILD_CFLAGS


ctypedef fused index_t:
    int32_t
    int64_t

ctypedef struct bf16_t:
    uint16_t bits  # ml_dtypes.bfloat16, as its bits; arithmetic in _fe_half.h

ctypedef fused value_t:
    uint16_t  # float16, as its bits; arithmetic goes through _fe_half.h
    bf16_t
    float
    double

# what a 2-byte value dtype is; every other dtype is told apart by itemsize
cdef enum:
    KIND_FLOAT16 = 0
    KIND_BFLOAT16 = 1

VALUE_FLOAT16 = KIND_FLOAT16
VALUE_BFLOAT16 = KIND_BFLOAT16


# Below this many bytes moved, a call stays on the calling thread: waking the
# OpenMP team costs more than it saves, and on a loaded machine a parallel
# region waits for a descheduled thread (a training loop of 655 KB gathers ran
# 25x slower with 2 threads than with 1 while the other core was busy).
cdef Py_ssize_t GATHER_PARALLEL_MIN_BYTES = 1 << 20
# A parallel scatter pays for its partition pass only when the rows are wide
# and the table is larger than the caches (bench/, 2 cores: a cache-resident
# table or 64-byte rows ran at 0.6-0.98x of one thread; T=1M d=64 at 1.6x).
cdef Py_ssize_t SCATTER_PARALLEL_MIN_BYTES = 1 << 20
cdef Py_ssize_t SCATTER_PARALLEL_MIN_ROW_BYTES = 256
cdef Py_ssize_t SCATTER_PARALLEL_MIN_TABLE_BYTES = 1 << 25

# Row-ownership partition of a parallel scatter: indices are histogrammed into
# at most this many buckets of consecutive rows, and cut into parts of equal
# index counts along the bucket boundaries.
cdef int N_BUCKETS_MAX = 4096

fe_set_use_f16c(1)
fe_set_isa_level(2)


# --------------------------------------------------------------------------
# index bounds

cdef Py_ssize_t _first_out_of_range(const index_t* idx, Py_ssize_t n,
                                    Py_ssize_t num_rows) noexcept nogil:
    # Negative indices wrap to huge unsigned values, so one compare covers both
    # ends; the first pass has no early exit so that it vectorises.
    cdef size_t limit = <size_t>num_rows
    cdef Py_ssize_t k
    cdef int bad = 0
    for k in range(n):
        bad |= <size_t>idx[k] >= limit
    if not bad:
        return -1
    for k in range(n):
        if <size_t>idx[k] >= limit:
            return k
    return -1


def first_out_of_range(cnp.ndarray indices, Py_ssize_t num_rows):
    """Flat position of the first index outside [0, num_rows), or -1."""
    cdef void* p = cnp.PyArray_DATA(indices)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef Py_ssize_t bad
    with nogil:
        if cnp.PyArray_ITEMSIZE(indices) == 4:
            bad = _first_out_of_range(<const int32_t*>p, n, num_rows)
        else:
            bad = _first_out_of_range(<const int64_t*>p, n, num_rows)
    return bad


# --------------------------------------------------------------------------
# gather: out[k, :] = weight[idx[k], :]

# Rows are prefetched this many indices ahead when the table is larger than
# the caches: the loads of a random gather are otherwise serialised misses.
cdef Py_ssize_t PREFETCH_AHEAD = 8
cdef Py_ssize_t PREFETCH_MIN_TABLE_BYTES = 1 << 24


cdef void _gather_range(const char* weight, Py_ssize_t w_stride, const index_t* idx,
                        Py_ssize_t lo, Py_ssize_t hi, char* out, Py_ssize_t row_bytes,
                        bint prefetch) noexcept nogil:
    cdef Py_ssize_t k, j, ahead
    cdef const char* row
    if prefetch:
        ahead = hi - PREFETCH_AHEAD
        for k in range(lo, hi):
            if k < ahead:
                row = weight + <Py_ssize_t>idx[k + PREFETCH_AHEAD] * w_stride
                # the first lines of the row; the hardware streams the rest
                for j in range(0, row_bytes if row_bytes < 256 else 256, 64):
                    FE_PREFETCH(row + j)
            fe_copy_row(out + k * row_bytes, weight + <Py_ssize_t>idx[k] * w_stride, row_bytes)
    else:
        for k in range(lo, hi):
            fe_copy_row(out + k * row_bytes, weight + <Py_ssize_t>idx[k] * w_stride, row_bytes)


cdef void _gather(const char* weight, Py_ssize_t w_stride, Py_ssize_t num_rows,
                  const index_t* idx, Py_ssize_t n, char* out, Py_ssize_t row_bytes,
                  int num_threads) noexcept nogil:
    cdef Py_ssize_t c
    cdef bint prefetch = num_rows * row_bytes >= PREFETCH_MIN_TABLE_BYTES
    if num_threads <= 0:
        num_threads = fe_omp_max_threads()  # OMP_NUM_THREADS, threadpoolctl
    if num_threads > 1 and n * row_bytes >= GATHER_PARALLEL_MIN_BYTES:
        # each thread writes one contiguous slice of out (and first-touches
        # its pages, when out is fresh)
        fe_mark_pool_started()
        for c in prange(num_threads, num_threads=num_threads, schedule='static', chunksize=1):
            _gather_range(weight, w_stride, idx, n * c // num_threads, n * (c + 1) // num_threads,
                          out, row_bytes, prefetch)
    else:
        _gather_range(weight, w_stride, idx, 0, n, out, row_bytes, prefetch)


def gather_rows(cnp.ndarray weight,   # IN (T, d), rows contiguous
                cnp.ndarray indices,  # IN (B,) int32 or int64, contiguous
                cnp.ndarray out,      # OUT (B, d), C-contiguous
                int num_threads):     # 0: OpenMP's current default
    cdef const char* w = <const char*>cnp.PyArray_DATA(weight)
    cdef Py_ssize_t w_stride = cnp.PyArray_STRIDE(weight, 0)
    cdef void* ip = cnp.PyArray_DATA(indices)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef char* o = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t row_bytes = cnp.PyArray_DIM(weight, 1) * cnp.PyArray_ITEMSIZE(weight)
    cdef Py_ssize_t num_rows = cnp.PyArray_DIM(weight, 0)
    with nogil:
        if cnp.PyArray_ITEMSIZE(indices) == 4:
            _gather(w, w_stride, num_rows, <const int32_t*>ip, n, o, row_bytes, num_threads)
        else:
            _gather(w, w_stride, num_rows, <const int64_t*>ip, n, o, row_bytes, num_threads)


def naive_gather_rows(cnp.ndarray weight, cnp.ndarray indices, cnp.ndarray out):
    """The plainest serial loop, element by element; tests hold the fast one to it."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef Py_ssize_t row_bytes = cnp.PyArray_DIM(weight, 1) * cnp.PyArray_ITEMSIZE(weight)
    cdef Py_ssize_t w_stride = cnp.PyArray_STRIDE(weight, 0)
    cdef const char* w = <const char*>cnp.PyArray_DATA(weight)
    cdef char* o = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t k, b, i
    for k in range(n):
        if cnp.PyArray_ITEMSIZE(indices) == 4:
            i = (<const int32_t*>cnp.PyArray_DATA(indices))[k]
        else:
            i = (<const int64_t*>cnp.PyArray_DATA(indices))[k]
        for b in range(row_bytes):
            o[k * row_bytes + b] = w[i * w_stride + b]


# --------------------------------------------------------------------------
# scatter-add: grad_weight[idx[k], :] += grad[k, :], in index order per row

cdef inline void _add_row(value_t* dst, const value_t* src, Py_ssize_t d) noexcept nogil:
    # run-time dispatched on the CPU; the gradient's NaN wins a NaN + NaN, as in NumPy
    if value_t is uint16_t:
        fe_half_add_row(dst, src, d)
    elif value_t is bf16_t:
        fe_bf16_add_row(<uint16_t*>dst, <const uint16_t*>src, d)
    elif value_t is float:
        fe_add_row_f32(dst, src, d)
    else:
        fe_add_row_f64(dst, src, d)


cdef inline void _add_scaled_row(value_t* dst, const value_t* src, Py_ssize_t d,
                                 double inv_count) noexcept nogil:
    # The scaled gradient is formed in the add's own precision (float32 for
    # float16 and float32), rounded to the value dtype, then added.
    cdef Py_ssize_t j
    cdef float s32 = <float>inv_count
    if value_t is uint16_t:
        fe_half_add_scaled_row(dst, src, d, s32)
    elif value_t is bf16_t:
        fe_bf16_add_scaled_row(<uint16_t*>dst, <const uint16_t*>src, d, s32)
    elif value_t is float:
        for j in range(d):
            dst[j] = fe_addf(dst[j], fe_mulf(src[j], s32))
    else:
        for j in range(d):
            dst[j] = fe_addd(dst[j], fe_muld(src[j], inv_count))


cdef void _scatter_list(value_t* gw, Py_ssize_t d, const index_t* idx,
                        const value_t* grad, Py_ssize_t g_stride,
                        const Py_ssize_t* ks, Py_ssize_t n, Py_ssize_t padding_idx,
                        const Py_ssize_t* counts, const Py_ssize_t* src_rows,
                        const double* scales) noexcept nogil:
    # Applies the updates k = ks[0..n) (or k = 0..n when ks is NULL) in order:
    # gw[idx[k]] += grad[src_rows[k] (or k)] * (scales[k] or 1 / counts[idx[k]]).
    cdef Py_ssize_t m, k, i, j, ahead, row_bytes = d * <Py_ssize_t>sizeof(value_t)
    cdef const value_t* src
    cdef char* row
    for m in range(n):
        k = m if ks == NULL else ks[m]
        # the destination row of a later update, for writing: a random
        # read-modify-write otherwise stalls on each row (bench/: 1.2-1.4x on
        # one thread, from a cache-resident 7.7 MB table to a 256 MB one)
        if m + PREFETCH_AHEAD < n:
            ahead = idx[m + PREFETCH_AHEAD if ks == NULL else ks[m + PREFETCH_AHEAD]]
            row = <char*>(gw + ahead * d)
            for j in range(0, row_bytes if row_bytes < 512 else 512, 64):
                FE_PREFETCH_W(row + j)
        i = idx[k]
        if i == padding_idx:
            continue
        src = grad + (k if src_rows == NULL else src_rows[k]) * g_stride
        if scales != NULL:
            _add_scaled_row(gw + i * d, src, d, scales[k])
        elif counts != NULL:
            _add_scaled_row(gw + i * d, src, d, 1.0 / <double>counts[i])
        else:
            _add_row(gw + i * d, src, d)


cdef void _histogram_chunk(const index_t* idx, Py_ssize_t lo, Py_ssize_t hi, int shift,
                           Py_ssize_t padding_idx, Py_ssize_t* hist) noexcept nogil:
    cdef Py_ssize_t k, i
    for k in range(lo, hi):
        i = idx[k]
        if i != padding_idx:
            hist[i >> shift] += 1


cdef void _order_chunk(const index_t* idx, Py_ssize_t lo, Py_ssize_t hi, int shift,
                       Py_ssize_t padding_idx, const int* bucket_part, Py_ssize_t* fill,
                       Py_ssize_t* order) noexcept nogil:
    # stable: chunk c's updates land after those of chunks < c in every part
    cdef Py_ssize_t k, i
    cdef int p
    for k in range(lo, hi):
        i = idx[k]
        if i != padding_idx:
            p = bucket_part[i >> shift]
            order[fill[p]] = k
            fill[p] += 1


cdef int _scatter(value_t* gw, Py_ssize_t num_rows, Py_ssize_t d,
                  const index_t* idx, Py_ssize_t n,
                  const value_t* grad, Py_ssize_t g_stride,
                  Py_ssize_t padding_idx, bint scale_by_freq,
                  int num_threads, const Py_ssize_t* src_rows=NULL,
                  const double* scales=NULL) noexcept nogil:
    # Returns 0, or -1 when scratch memory could not be had (nothing written).
    cdef Py_ssize_t* counts = NULL
    cdef Py_ssize_t* order = NULL
    cdef Py_ssize_t* hist = NULL      # (nchunks, nbuckets) per-chunk histograms
    cdef Py_ssize_t* fill = NULL      # (nchunks, nparts) write cursors
    cdef int* bucket_part = NULL
    cdef Py_ssize_t part_start[65]
    cdef Py_ssize_t k, i, b, total, cum, largest, h
    cdef int p, c, nparts, nchunks, shift, nbuckets
    cdef int rc = 0

    if n == 0 or d == 0:
        return 0
    if scale_by_freq:
        # PyTorch's trick: a table-sized counter array whose untouched pages
        # are never faulted in, so the cost follows the batch, not the table.
        counts = <Py_ssize_t*>malloc(num_rows * sizeof(Py_ssize_t))
        if counts == NULL:
            return -1
        for k in range(n):
            counts[idx[k]] = 0
        for k in range(n):
            counts[idx[k]] += 1

    if num_threads <= 0:
        num_threads = fe_omp_max_threads()  # OMP_NUM_THREADS, threadpoolctl
    nparts = num_threads if num_threads < 64 else 64
    if (nparts <= 1 or n * d * <Py_ssize_t>sizeof(value_t) < SCATTER_PARALLEL_MIN_BYTES
            or d * <Py_ssize_t>sizeof(value_t) < SCATTER_PARALLEL_MIN_ROW_BYTES
            or num_rows * d * <Py_ssize_t>sizeof(value_t) < SCATTER_PARALLEL_MIN_TABLE_BYTES):
        _scatter_list(gw, d, idx, grad, g_stride, NULL, n, padding_idx, counts, src_rows, scales)
        free(counts)
        return 0

    # Row ownership: part p owns the rows of a run of buckets and applies the
    # updates to its rows in index order.  Every row is written by one part
    # only, in the order a serial loop would use: the same bits for any
    # thread count.  The parts are cut so that each holds about the same
    # number of updates (Zipf-hot rows do not all land on one thread), and the
    # updates are sorted into parts by a parallel, stable counting sort.
    nchunks = nparts
    shift = 0
    while ((num_rows - 1) >> shift) >= N_BUCKETS_MAX:
        shift += 1
    nbuckets = <int>(((num_rows - 1) >> shift) + 1)
    hist = <Py_ssize_t*>calloc(<size_t>nchunks * nbuckets, sizeof(Py_ssize_t))
    fill = <Py_ssize_t*>malloc(<size_t>nchunks * nparts * sizeof(Py_ssize_t))
    bucket_part = <int*>malloc(nbuckets * sizeof(int))
    order = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    if hist == NULL or fill == NULL or bucket_part == NULL or order == NULL:
        rc = -1
    else:
        fe_mark_pool_started()
        for c in prange(nchunks, num_threads=num_threads, schedule='static', chunksize=1):
            _histogram_chunk(idx, n * c // nchunks, n * (c + 1) // nchunks, shift,
                             padding_idx, hist + <Py_ssize_t>c * nbuckets)
        # merge into chunk 0's row, keeping the others for the cursors below
        total = 0
        p = 0
        cum = 0
        for b in range(nbuckets):
            h = 0
            for c in range(nchunks):
                h = h + hist[<Py_ssize_t>c * nbuckets + b]
            total += h
        for p in range(nparts + 1):
            part_start[p] = 0
        p = 0
        for b in range(nbuckets):
            h = 0
            for c in range(nchunks):
                h = h + hist[<Py_ssize_t>c * nbuckets + b]
            bucket_part[b] = p
            part_start[p + 1] += h
            cum += h
            if p < nparts - 1 and cum * nparts >= total * (p + 1):
                p += 1
        largest = 0
        for p in range(nparts):
            if part_start[p + 1] > largest:
                largest = part_start[p + 1]
            part_start[p + 1] += part_start[p]
        if largest * 10 > total * 9:
            # a hot set owned by one part: the other threads would only wait
            _scatter_list(gw, d, idx, grad, g_stride, NULL, n, padding_idx, counts, src_rows, scales)
        else:
            # cursor of (chunk c, part p) = start of p + updates of p in chunks < c
            memset(fill, 0, <size_t>nchunks * nparts * sizeof(Py_ssize_t))
            for c in range(nchunks):
                for b in range(nbuckets):
                    fill[<Py_ssize_t>c * nparts + bucket_part[b]] += hist[<Py_ssize_t>c * nbuckets + b]
            for p in range(nparts):
                cum = part_start[p]
                for c in range(nchunks):
                    h = fill[<Py_ssize_t>c * nparts + p]
                    fill[<Py_ssize_t>c * nparts + p] = cum
                    cum = cum + h
            for c in prange(nchunks, num_threads=num_threads, schedule='static', chunksize=1):
                _order_chunk(idx, n * c // nchunks, n * (c + 1) // nchunks, shift, padding_idx,
                             bucket_part, fill + <Py_ssize_t>c * nparts, order)
            for p in prange(nparts, num_threads=num_threads, schedule='static', chunksize=1):
                _scatter_list(gw, d, idx, grad, g_stride, order + part_start[p],
                              part_start[p + 1] - part_start[p], padding_idx, counts,
                              src_rows, scales)
    free(hist)
    free(fill)
    free(bucket_part)
    free(order)
    free(counts)
    return rc


cdef int _scatter_by_value(cnp.ndarray grad_weight, const index_t* idx, Py_ssize_t n,
                           cnp.ndarray grad, Py_ssize_t padding_idx,
                           bint scale_by_freq, int num_threads, int kind16=KIND_FLOAT16,
                           const Py_ssize_t* src_rows=NULL, const double* scales=NULL):
    cdef void* gw = cnp.PyArray_DATA(grad_weight)
    cdef const void* g = cnp.PyArray_DATA(grad)
    cdef Py_ssize_t num_rows = cnp.PyArray_DIM(grad_weight, 0)
    cdef Py_ssize_t d = cnp.PyArray_DIM(grad_weight, 1)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(grad_weight)
    cdef Py_ssize_t g_stride = cnp.PyArray_STRIDE(grad, 0) // itemsize
    cdef int rc
    with nogil:
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            rc = _scatter(<bf16_t*>gw, num_rows, d, idx, n, <const bf16_t*>g, g_stride,
                          padding_idx, scale_by_freq, num_threads, src_rows, scales)
        elif itemsize == 2:
            rc = _scatter(<uint16_t*>gw, num_rows, d, idx, n, <const uint16_t*>g, g_stride,
                          padding_idx, scale_by_freq, num_threads, src_rows, scales)
        elif itemsize == 4:
            rc = _scatter(<float*>gw, num_rows, d, idx, n, <const float*>g, g_stride,
                          padding_idx, scale_by_freq, num_threads, src_rows, scales)
        else:
            rc = _scatter(<double*>gw, num_rows, d, idx, n, <const double*>g, g_stride,
                          padding_idx, scale_by_freq, num_threads, src_rows, scales)
    return rc


def scatter_add_rows(cnp.ndarray grad_weight,  # INOUT (T, d), C-contiguous
                     cnp.ndarray indices,      # IN (n,) int32 or int64, contiguous
                     cnp.ndarray grad,         # IN (m, d), rows contiguous
                     Py_ssize_t padding_idx,   # -1 for none
                     bint scale_by_freq,
                     int num_threads,          # 0: OpenMP's current default
                     int kind16=KIND_FLOAT16,  # what a 2-byte value dtype is
                     cnp.ndarray src_rows=None,  # IN (n,) intp: update k reads grad[src_rows[k]]
                     cnp.ndarray scales=None):   # IN (n,) float64: update k is scaled by scales[k]
    cdef void* ip = cnp.PyArray_DATA(indices)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef const Py_ssize_t* sr = NULL if src_rows is None else <const Py_ssize_t*>cnp.PyArray_DATA(src_rows)
    cdef const double* sc = NULL if scales is None else <const double*>cnp.PyArray_DATA(scales)
    cdef int rc
    if cnp.PyArray_ITEMSIZE(indices) == 4:
        rc = _scatter_by_value(grad_weight, <const int32_t*>ip, n, grad, padding_idx,
                               scale_by_freq, num_threads, kind16, sr, sc)
    else:
        rc = _scatter_by_value(grad_weight, <const int64_t*>ip, n, grad, padding_idx,
                               scale_by_freq, num_threads, kind16, sr, sc)
    if rc != 0:
        raise MemoryError("scatter_add: could not allocate scratch memory")


def naive_scatter_add_rows(cnp.ndarray grad_weight, cnp.ndarray indices, cnp.ndarray grad,
                           Py_ssize_t padding_idx, int kind16=KIND_FLOAT16):
    """The plainest serial loop, portable float16 arithmetic; tests hold the fast one to it."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef Py_ssize_t d = cnp.PyArray_DIM(grad_weight, 1)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(grad_weight)
    cdef Py_ssize_t g_stride = cnp.PyArray_STRIDE(grad, 0) // itemsize
    cdef Py_ssize_t k, j, i
    cdef uint16_t* h_dst
    cdef const uint16_t* h_src
    for k in range(n):
        if cnp.PyArray_ITEMSIZE(indices) == 4:
            i = (<const int32_t*>cnp.PyArray_DATA(indices))[k]
        else:
            i = (<const int64_t*>cnp.PyArray_DATA(indices))[k]
        if i == padding_idx:
            continue
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            h_dst = <uint16_t*>cnp.PyArray_DATA(grad_weight) + i * d
            h_src = <const uint16_t*>cnp.PyArray_DATA(grad) + k * g_stride
            for j in range(d):
                h_dst[j] = fe_float_to_bf16(fe_addf(fe_bf16_to_float(h_dst[j]), fe_bf16_to_float(h_src[j])))
        elif itemsize == 2:
            h_dst = <uint16_t*>cnp.PyArray_DATA(grad_weight) + i * d
            h_src = <const uint16_t*>cnp.PyArray_DATA(grad) + k * g_stride
            for j in range(d):
                h_dst[j] = fe_float_to_half(fe_addf(fe_half_to_float(h_dst[j]), fe_half_to_float(h_src[j])))
        elif itemsize == 4:
            for j in range(d):
                (<float*>cnp.PyArray_DATA(grad_weight))[i * d + j] = fe_addf(
                    (<float*>cnp.PyArray_DATA(grad_weight))[i * d + j],
                    (<const float*>cnp.PyArray_DATA(grad))[k * g_stride + j])
        else:
            for j in range(d):
                (<double*>cnp.PyArray_DATA(grad_weight))[i * d + j] = fe_addd(
                    (<double*>cnp.PyArray_DATA(grad_weight))[i * d + j],
                    (<const double*>cnp.PyArray_DATA(grad))[k * g_stride + j])


# --------------------------------------------------------------------------
# bags: out[b] = reduce over the entries of bag b (sum, mean or max)

cdef enum:
    BAG_SUM = 0
    BAG_MEAN = 1
    BAG_MAX = 2


cdef inline float _to_float(value_t x) noexcept nogil:
    if value_t is uint16_t:
        return fe_half_to_float(x)
    elif value_t is bf16_t:
        return fe_bf16_to_float(x.bits)
    else:
        return <float>x


cdef inline bint _greater(value_t a, value_t b) noexcept nogil:
    if value_t is uint16_t or value_t is bf16_t:
        return _to_float(a) > _to_float(b)
    else:
        return a > b


cdef inline void _div_row(value_t* row, Py_ssize_t d, Py_ssize_t count) noexcept nogil:
    # divided in the add's precision (float32 for the 16-bit types), then rounded
    cdef Py_ssize_t j
    cdef float c32 = <float>count
    for j in range(d):
        if value_t is uint16_t:
            row[j] = fe_float_to_half(fe_half_to_float(row[j]) / c32)
        elif value_t is bf16_t:
            row[j].bits = fe_float_to_bf16(fe_bf16_to_float(row[j].bits) / c32)
        elif value_t is float:
            row[j] = row[j] / c32
        else:
            row[j] = row[j] / <double>count


cdef void _bag_range(const value_t* weight, Py_ssize_t w_stride, Py_ssize_t d,
                     const index_t* idx, const Py_ssize_t* bounds, Py_ssize_t b_lo,
                     Py_ssize_t b_hi, value_t* out, int64_t* max_indices, int mode,
                     const double* psw, Py_ssize_t padding_idx) noexcept nogil:
    cdef Py_ssize_t b, k, j, i, count
    cdef value_t* row
    cdef const value_t* src
    for b in range(b_lo, b_hi):
        row = out + b * d
        memset(row, 0, d * sizeof(value_t))
        count = 0
        for k in range(bounds[b], bounds[b + 1]):
            i = idx[k]
            if i == padding_idx:
                continue
            src = weight + i * w_stride
            if mode == BAG_MAX:
                if count == 0:
                    memcpy(row, src, d * sizeof(value_t))
                    for j in range(d):
                        max_indices[b * d + j] = i
                else:
                    for j in range(d):
                        # strictly greater: the first of equal values stays, a NaN never wins
                        if _greater(src[j], row[j]):
                            row[j] = src[j]
                            max_indices[b * d + j] = i
            elif psw != NULL:
                _add_scaled_row(row, src, d, psw[k])
            else:
                _add_row(row, src, d)
            count += 1
        if mode == BAG_MEAN and count > 0:
            _div_row(row, d, count)
        if mode == BAG_MAX and count == 0:
            for j in range(d):
                max_indices[b * d + j] = -1


cdef void _bag(const value_t* weight, Py_ssize_t w_stride, Py_ssize_t d, const index_t* idx,
               const Py_ssize_t* bounds, Py_ssize_t num_bags, value_t* out,
               int64_t* max_indices, int mode, const double* psw, Py_ssize_t padding_idx,
               int num_threads) noexcept nogil:
    cdef Py_ssize_t c
    if num_threads <= 0:
        num_threads = fe_omp_max_threads()
    if num_threads > 1 and bounds[num_bags] * d * <Py_ssize_t>sizeof(value_t) >= GATHER_PARALLEL_MIN_BYTES:
        # each bag's output row is written by one thread
        fe_mark_pool_started()
        for c in prange(num_threads, num_threads=num_threads, schedule='static', chunksize=1):
            _bag_range(weight, w_stride, d, idx, bounds, num_bags * c // num_threads,
                       num_bags * (c + 1) // num_threads, out, max_indices, mode, psw, padding_idx)
    else:
        _bag_range(weight, w_stride, d, idx, bounds, 0, num_bags, out, max_indices, mode, psw,
                   padding_idx)


cdef void _bag_by_value(cnp.ndarray weight, const index_t* idx, const Py_ssize_t* bounds,
                        Py_ssize_t num_bags, cnp.ndarray out, int64_t* mi, int mode,
                        const double* psw, Py_ssize_t padding_idx, int num_threads, int kind16):
    cdef const void* w = cnp.PyArray_DATA(weight)
    cdef void* o = cnp.PyArray_DATA(out)
    cdef Py_ssize_t d = cnp.PyArray_DIM(weight, 1)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(weight)
    cdef Py_ssize_t ws = cnp.PyArray_STRIDE(weight, 0) // itemsize
    with nogil:
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            _bag(<const bf16_t*>w, ws, d, idx, bounds, num_bags, <bf16_t*>o, mi, mode, psw, padding_idx, num_threads)
        elif itemsize == 2:
            _bag(<const uint16_t*>w, ws, d, idx, bounds, num_bags, <uint16_t*>o, mi, mode, psw, padding_idx, num_threads)
        elif itemsize == 4:
            _bag(<const float*>w, ws, d, idx, bounds, num_bags, <float*>o, mi, mode, psw, padding_idx, num_threads)
        else:
            _bag(<const double*>w, ws, d, idx, bounds, num_bags, <double*>o, mi, mode, psw, padding_idx, num_threads)


def bag_rows(cnp.ndarray weight,       # IN (T, d), rows contiguous
             cnp.ndarray indices,      # IN (n,) int32 or int64, contiguous
             cnp.ndarray bounds,       # IN (B + 1,) intp: bag b is entries [bounds[b], bounds[b+1])
             cnp.ndarray out,          # OUT (B, d), C-contiguous
             int mode,                 # 0 sum, 1 mean, 2 max
             cnp.ndarray per_sample_weights,  # IN (n,) float64, or None
             cnp.ndarray max_indices,  # OUT (B, d) int64 for max, or None
             Py_ssize_t padding_idx,   # -1 for none
             int num_threads,
             int kind16=KIND_FLOAT16):
    cdef void* ip = cnp.PyArray_DATA(indices)
    cdef const Py_ssize_t* bp = <const Py_ssize_t*>cnp.PyArray_DATA(bounds)
    cdef Py_ssize_t num_bags = cnp.PyArray_SIZE(bounds) - 1
    cdef const double* psw = NULL if per_sample_weights is None else <const double*>cnp.PyArray_DATA(per_sample_weights)
    cdef int64_t* mi = NULL if max_indices is None else <int64_t*>cnp.PyArray_DATA(max_indices)
    if cnp.PyArray_ITEMSIZE(indices) == 4:
        _bag_by_value(weight, <const int32_t*>ip, bp, num_bags, out, mi, mode, psw, padding_idx,
                      num_threads, kind16)
    else:
        _bag_by_value(weight, <const int64_t*>ip, bp, num_bags, out, mi, mode, psw, padding_idx,
                      num_threads, kind16)


cdef void _bag_max_backward(value_t* gw, Py_ssize_t d, const value_t* grad,
                            const int64_t* mi, Py_ssize_t num_bags) noexcept nogil:
    # bag order, column by column: each element is its own accumulation
    cdef Py_ssize_t b, j, i
    for j in range(d):
        for b in range(num_bags):
            i = mi[b * d + j]
            if i >= 0:
                _add_row(gw + i * d + j, grad + b * d + j, 1)


def bag_max_backward_rows(cnp.ndarray grad_weight,  # INOUT (T, d), C-contiguous
                          cnp.ndarray grad,         # IN (B, d), C-contiguous
                          cnp.ndarray max_indices,  # IN (B, d) int64, C-contiguous
                          int kind16=KIND_FLOAT16):
    cdef void* gw = cnp.PyArray_DATA(grad_weight)
    cdef const void* g = cnp.PyArray_DATA(grad)
    cdef const int64_t* mi = <const int64_t*>cnp.PyArray_DATA(max_indices)
    cdef Py_ssize_t d = cnp.PyArray_DIM(grad_weight, 1)
    cdef Py_ssize_t nb = cnp.PyArray_DIM(grad, 0)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(grad_weight)
    with nogil:
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            _bag_max_backward(<bf16_t*>gw, d, <const bf16_t*>g, mi, nb)
        elif itemsize == 2:
            _bag_max_backward(<uint16_t*>gw, d, <const uint16_t*>g, mi, nb)
        elif itemsize == 4:
            _bag_max_backward(<float*>gw, d, <const float*>g, mi, nb)
        else:
            _bag_max_backward(<double*>gw, d, <const double*>g, mi, nb)


cdef void _row_dots(const value_t* grad, const value_t* weight, Py_ssize_t w_stride,
                    Py_ssize_t d, const index_t* idx, const Py_ssize_t* bag,
                    Py_ssize_t n, Py_ssize_t padding_idx, value_t* out) noexcept nogil:
    # out[k] = sum_j round(grad[bag[k], j] * weight[idx[k], j]), strictly left to right
    cdef Py_ssize_t k, j, i
    cdef value_t acc, p
    cdef const value_t* g
    cdef const value_t* w
    for k in range(n):
        i = idx[k]
        memset(&out[k], 0, sizeof(value_t))
        if i == padding_idx or bag[k] < 0 or d == 0:
            continue
        g = grad + bag[k] * d
        w = weight + i * w_stride
        for j in range(d):
            # the gradient first: on NaN * NaN its payload survives
            if value_t is uint16_t:
                p = fe_float_to_half(fe_mulf(fe_half_to_float(g[j]), fe_half_to_float(w[j])))
            elif value_t is bf16_t:
                p.bits = fe_float_to_bf16(fe_mulf(fe_bf16_to_float(g[j].bits), fe_bf16_to_float(w[j].bits)))
            elif value_t is float:
                p = fe_mulf(g[j], w[j])
            else:
                p = fe_muld(g[j], w[j])
            if j == 0:
                acc = p
            else:
                _add_row(&acc, &p, 1)
        out[k] = acc


cdef void _row_dots_by_value(const void* g, const void* w, Py_ssize_t ws, Py_ssize_t d,
                             const index_t* idx, const Py_ssize_t* bag, Py_ssize_t n,
                             Py_ssize_t padding_idx, void* out, int itemsize, int kind16) noexcept nogil:
    if itemsize == 2 and kind16 == KIND_BFLOAT16:
        _row_dots(<const bf16_t*>g, <const bf16_t*>w, ws, d, idx, bag, n, padding_idx, <bf16_t*>out)
    elif itemsize == 2:
        _row_dots(<const uint16_t*>g, <const uint16_t*>w, ws, d, idx, bag, n, padding_idx, <uint16_t*>out)
    elif itemsize == 4:
        _row_dots(<const float*>g, <const float*>w, ws, d, idx, bag, n, padding_idx, <float*>out)
    else:
        _row_dots(<const double*>g, <const double*>w, ws, d, idx, bag, n, padding_idx, <double*>out)


def row_dots(cnp.ndarray grad,      # IN (B, d), C-contiguous
             cnp.ndarray weight,    # IN (T, d), rows contiguous
             cnp.ndarray indices,   # IN (n,) int32 or int64
             cnp.ndarray bag,       # IN (n,) intp, -1 for entries in no bag
             Py_ssize_t padding_idx,
             cnp.ndarray out,       # OUT (n,), the value dtype
             int kind16=KIND_FLOAT16):
    cdef const void* g = cnp.PyArray_DATA(grad)
    cdef const void* w = cnp.PyArray_DATA(weight)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(weight)
    cdef Py_ssize_t ws = cnp.PyArray_STRIDE(weight, 0) // itemsize
    cdef Py_ssize_t d = cnp.PyArray_DIM(weight, 1)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(indices)
    cdef const Py_ssize_t* bp = <const Py_ssize_t*>cnp.PyArray_DATA(bag)
    cdef void* o = cnp.PyArray_DATA(out)
    cdef void* ip = cnp.PyArray_DATA(indices)
    with nogil:
        if cnp.PyArray_ITEMSIZE(indices) == 4:
            _row_dots_by_value(g, w, ws, d, <const int32_t*>ip, bp, n, padding_idx, o, itemsize, kind16)
        else:
            _row_dots_by_value(g, w, ws, d, <const int64_t*>ip, bp, n, padding_idx, o, itemsize, kind16)


# --------------------------------------------------------------------------
# max-norm and optimizer steps, one distinct row at a time
#
# Arithmetic runs in the add's precision (float32 for float16, bfloat16 and
# float32 tables; float64 for float64) and rounds to the table's dtype once.
# Every binary operation keeps its first operand's payload on NaN op NaN.

cdef inline double _to_double(value_t x) noexcept nogil:
    if value_t is double:
        return x
    else:
        return <double>_to_float(x)


cdef inline value_t _from_float(float x, value_t like) noexcept nogil:
    cdef value_t r
    if value_t is uint16_t:
        return fe_float_to_half(x)
    elif value_t is bf16_t:
        r.bits = fe_float_to_bf16(x)
        return r
    else:
        return <value_t>x


cdef inline double _row_norm(const value_t* row, Py_ssize_t d, double p) noexcept nogil:
    # float64, strictly left to right; any NaN gives NaN
    cdef Py_ssize_t j
    cdef double acc = 0.0, x
    if d == 0:
        return 0.0
    for j in range(d):
        x = fabs(_to_double(row[j]))
        if p == INFINITY:
            if isnan(x):
                return x
            if j == 0 or x > acc:
                acc = x
        elif p == 2.0:
            acc = x * x if j == 0 else acc + x * x
        elif p == 1.0:
            acc = x if j == 0 else acc + x
        else:
            acc = pow(x, p) if j == 0 else acc + pow(x, p)
    if p == 2.0:
        return sqrt(acc)
    if p == 1.0 or p == INFINITY:
        return acc
    return pow(acc, 1.0 / p)


cdef void _renorm(value_t* weight, Py_ssize_t d, const int64_t* rows, Py_ssize_t n,
                  double max_norm, double p, int num_threads) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef double norm, scale
    cdef float s32
    cdef value_t* row
    if num_threads <= 0:
        num_threads = fe_omp_max_threads()
    if num_threads > 1 and n * d * <Py_ssize_t>sizeof(value_t) >= GATHER_PARALLEL_MIN_BYTES:
        fe_mark_pool_started()
    else:
        num_threads = 1
    # distinct rows: each is read and written by one thread
    for r in prange(n, num_threads=num_threads, schedule='static'):
        row = weight + rows[r] * d
        norm = _row_norm(row, d, p)
        if norm > max_norm:
            scale = max_norm / (norm + 1e-7)
            s32 = <float>scale
            for j in range(d):
                if value_t is double:
                    row[j] = row[j] * scale
                else:
                    row[j] = _from_float(_to_float(row[j]) * s32, row[j])


def renorm_rows(cnp.ndarray weight,  # INOUT (T, d), C-contiguous
                cnp.ndarray rows,    # IN (n,) int64, distinct, in range
                double max_norm, double norm_type, int num_threads, int kind16=KIND_FLOAT16):
    cdef void* w = cnp.PyArray_DATA(weight)
    cdef const int64_t* rp = <const int64_t*>cnp.PyArray_DATA(rows)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(rows)
    cdef Py_ssize_t d = cnp.PyArray_DIM(weight, 1)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(weight)
    with nogil:
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            _renorm(<bf16_t*>w, d, rp, n, max_norm, norm_type, num_threads)
        elif itemsize == 2:
            _renorm(<uint16_t*>w, d, rp, n, max_norm, norm_type, num_threads)
        elif itemsize == 4:
            _renorm(<float*>w, d, rp, n, max_norm, norm_type, num_threads)
        else:
            _renorm(<double*>w, d, rp, n, max_norm, norm_type, num_threads)


cdef enum:
    OPT_SGD = 0
    OPT_ADAGRAD = 1
    OPT_ROWWISE_ADAGRAD = 2


cdef inline float _decayed_f(float g, float w, float wd) noexcept nogil:
    return g if wd == 0.0 else fe_addf(fe_mulf(wd, w), g)   # g + wd * w, g first


cdef inline double _decayed_d(double g, double w, double wd) noexcept nogil:
    return g if wd == 0.0 else fe_addd(fe_muld(wd, w), g)


cdef void _opt_row_f(value_t* w, const value_t* g, float* state, Py_ssize_t d, int kind,
                     float lr, float eps, float wd) noexcept nogil:
    # float32 arithmetic for float16, bfloat16 and float32 tables
    cdef Py_ssize_t j
    cdef float wj, gj, s, acc = 0.0, sq
    if kind == OPT_ROWWISE_ADAGRAD and d > 0:
        for j in range(d):
            gj = _decayed_f(_to_float(g[j]), _to_float(w[j]), wd)
            sq = fe_mulf(gj, gj)
            acc = sq if j == 0 else fe_addf(acc, sq)     # the square's payload wins, as np.add.at
        state[0] = fe_addf(fe_divf(acc, <float>d), state[0])   # state + mean, state first
    for j in range(d):
        wj = _to_float(w[j])
        gj = _decayed_f(_to_float(g[j]), wj, wd)
        if kind == OPT_SGD:
            wj = fe_subf(wj, fe_mulf(lr, gj))
        else:
            if kind == OPT_ADAGRAD:
                state[j] = fe_addf(fe_mulf(gj, gj), state[j])
                s = state[j]
            else:
                s = state[0]
            wj = fe_subf(wj, fe_divf(fe_mulf(lr, gj), fe_addf(eps, sqrtf(s))))
        w[j] = _from_float(wj, w[j])


cdef void _opt_row_d(double* w, const double* g, double* state, Py_ssize_t d, int kind,
                     double lr, double eps, double wd) noexcept nogil:
    cdef Py_ssize_t j
    cdef double wj, gj, s, acc = 0.0, sq
    if kind == OPT_ROWWISE_ADAGRAD and d > 0:
        for j in range(d):
            gj = _decayed_d(g[j], w[j], wd)
            sq = fe_muld(gj, gj)
            acc = sq if j == 0 else fe_addd(acc, sq)
        state[0] = fe_addd(fe_divd(acc, <double>d), state[0])
    for j in range(d):
        wj = w[j]
        gj = _decayed_d(g[j], wj, wd)
        if kind == OPT_SGD:
            wj = fe_subd(wj, fe_muld(lr, gj))
        else:
            if kind == OPT_ADAGRAD:
                state[j] = fe_addd(fe_muld(gj, gj), state[j])
                s = state[j]
            else:
                s = state[0]
            wj = fe_subd(wj, fe_divd(fe_muld(lr, gj), fe_addd(eps, sqrt(s))))
        w[j] = wj


cdef void _opt(value_t* weight, Py_ssize_t d, const int64_t* rows, Py_ssize_t n,
               const value_t* values, void* state, int kind, double lr, double eps,
               double wd, int num_threads) noexcept nogil:
    cdef Py_ssize_t r, srow
    cdef Py_ssize_t sstride = d if kind == OPT_ADAGRAD else 1
    if num_threads <= 0:
        num_threads = fe_omp_max_threads()
    if num_threads > 1 and n * d * <Py_ssize_t>sizeof(value_t) >= GATHER_PARALLEL_MIN_BYTES:
        fe_mark_pool_started()
    else:
        num_threads = 1
    # distinct rows: each row of the table and of the state has one writer
    for r in prange(n, num_threads=num_threads, schedule='static'):
        srow = rows[r] * sstride
        if value_t is double:
            _opt_row_d(weight + rows[r] * d, values + r * d,
                       NULL if state == NULL else <double*>state + srow, d, kind, lr, eps, wd)
        else:
            _opt_row_f(weight + rows[r] * d, values + r * d,
                       NULL if state == NULL else <float*>state + srow, d, kind,
                       <float>lr, <float>eps, <float>wd)


def optimizer_rows(cnp.ndarray weight,   # INOUT (T, d), C-contiguous
                   cnp.ndarray rows,     # IN (n,) int64, distinct, in range
                   cnp.ndarray values,   # IN (n, d) summed gradients, C-contiguous
                   cnp.ndarray state,    # INOUT (T, d) or (T,) float32/float64, or None
                   int kind, double lr, double eps, double weight_decay,
                   int num_threads, int kind16=KIND_FLOAT16):
    cdef void* w = cnp.PyArray_DATA(weight)
    cdef const int64_t* rp = <const int64_t*>cnp.PyArray_DATA(rows)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(rows)
    cdef Py_ssize_t d = cnp.PyArray_DIM(weight, 1)
    cdef const void* v = cnp.PyArray_DATA(values)
    cdef void* st = NULL if state is None else cnp.PyArray_DATA(state)
    cdef int itemsize = cnp.PyArray_ITEMSIZE(weight)
    with nogil:
        if itemsize == 2 and kind16 == KIND_BFLOAT16:
            _opt(<bf16_t*>w, d, rp, n, <const bf16_t*>v, st, kind, lr, eps, weight_decay, num_threads)
        elif itemsize == 2:
            _opt(<uint16_t*>w, d, rp, n, <const uint16_t*>v, st, kind, lr, eps, weight_decay, num_threads)
        elif itemsize == 4:
            _opt(<float*>w, d, rp, n, <const float*>v, st, kind, lr, eps, weight_decay, num_threads)
        else:
            _opt(<double*>w, d, rp, n, <const double*>v, st, kind, lr, eps, weight_decay, num_threads)


# --------------------------------------------------------------------------
# the lean entry points
#
# _api.py calls these first when a call is the common simple case (plain
# ndarrays, 1-D int32/int64 indices, C-contiguous float arrays, no options).
# They only accept: any input they are not sure of, and any bad input, makes
# them return False having written nothing, and _api.py then takes the full
# path, which applies every rule and raises the precise error.  This keeps a
# tiny call at a fraction of a microsecond: no buffer acquisition, no Python
# attribute lookups.

cdef inline bint _plain_values(cnp.ndarray a, int ndim) noexcept:
    cdef int t = cnp.PyArray_TYPE(a)
    return (cnp.PyArray_NDIM(a) == ndim
            and (t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64 or t == cnp.NPY_FLOAT16)
            and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a))


cdef inline bint _plain_indices(cnp.ndarray a) noexcept:
    cdef int t = cnp.PyArray_TYPE(a)
    return (cnp.PyArray_NDIM(a) == 1
            and (t == cnp.NPY_INT32 or t == cnp.NPY_INT64)
            and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a))


cdef inline bint _disjoint(cnp.ndarray a, cnp.ndarray b) noexcept:
    # both C-contiguous: their bytes are exactly [data, data + nbytes)
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(a)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(b)
    return na == 0 or nb == 0 or pa + na <= pb or pb + nb <= pa


cdef bint _lean_ok(object table, object indices, object rows, object dest):
    # table (T, d) and rows (n, d), one row per index; dest (one of the two) is written
    if type(table) is not cnp.ndarray or type(indices) is not cnp.ndarray \
            or type(rows) is not cnp.ndarray:
        return False
    cdef cnp.ndarray t = <cnp.ndarray>table
    cdef cnp.ndarray i = <cnp.ndarray>indices
    cdef cnp.ndarray r = <cnp.ndarray>rows
    return (_plain_values(t, 2) and _plain_indices(i) and _plain_values(r, 2)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>dest)
            and cnp.PyArray_TYPE(r) == cnp.PyArray_TYPE(t)
            and cnp.PyArray_DIM(r, 0) == cnp.PyArray_DIM(i, 0)
            and cnp.PyArray_DIM(r, 1) == cnp.PyArray_DIM(t, 1)
            and _disjoint(t, r) and _disjoint(<cnp.ndarray>dest, i))


def gather_lean(object weight, object indices, object out, int num_threads):
    """gather into out for the simple case; False (nothing written) if not applicable."""
    if not _lean_ok(weight, indices, out, out):
        return False
    cdef cnp.ndarray w = <cnp.ndarray>weight
    cdef cnp.ndarray idx = <cnp.ndarray>indices
    cdef cnp.ndarray o = <cnp.ndarray>out
    cdef void* ip = cnp.PyArray_DATA(idx)
    cdef Py_ssize_t n = cnp.PyArray_DIM(idx, 0)
    cdef Py_ssize_t num_rows = cnp.PyArray_DIM(w, 0)
    cdef Py_ssize_t row_bytes = cnp.PyArray_DIM(w, 1) * cnp.PyArray_ITEMSIZE(w)
    cdef const char* wp = <const char*>cnp.PyArray_DATA(w)
    cdef char* op = <char*>cnp.PyArray_DATA(o)
    cdef bint is32 = cnp.PyArray_TYPE(idx) == cnp.NPY_INT32
    cdef Py_ssize_t bad
    with nogil:
        if is32:
            bad = _first_out_of_range(<const int32_t*>ip, n, num_rows)
            if bad < 0:
                _gather(wp, row_bytes, num_rows, <const int32_t*>ip, n, op, row_bytes, num_threads)
        else:
            bad = _first_out_of_range(<const int64_t*>ip, n, num_rows)
            if bad < 0:
                _gather(wp, row_bytes, num_rows, <const int64_t*>ip, n, op, row_bytes, num_threads)
    return bad < 0


def scatter_add_lean(object grad_weight, object indices, object grad, int num_threads):
    """scatter_add for the simple case; False (nothing written) if not applicable."""
    if not _lean_ok(grad_weight, indices, grad, grad_weight):
        return False
    cdef cnp.ndarray gw = <cnp.ndarray>grad_weight
    cdef cnp.ndarray idx = <cnp.ndarray>indices
    cdef cnp.ndarray g = <cnp.ndarray>grad
    cdef void* ip = cnp.PyArray_DATA(idx)
    cdef Py_ssize_t n = cnp.PyArray_DIM(idx, 0)
    cdef int rc
    if cnp.PyArray_TYPE(idx) == cnp.NPY_INT32:
        if _first_out_of_range(<const int32_t*>ip, n, cnp.PyArray_DIM(gw, 0)) >= 0:
            return False
        rc = _scatter_by_value(gw, <const int32_t*>ip, n, g, -1, False, num_threads)
    else:
        if _first_out_of_range(<const int64_t*>ip, n, cnp.PyArray_DIM(gw, 0)) >= 0:
            return False
        rc = _scatter_by_value(gw, <const int64_t*>ip, n, g, -1, False, num_threads)
    if rc != 0:
        raise MemoryError("scatter_add: could not allocate scratch memory")
    return True


def copy_bytes(cnp.ndarray src, cnp.ndarray dst, int num_threads):
    """A streaming copy of src into dst (both C-contiguous, same size) in num_threads
    slices: the bandwidth ceiling that bench/ measures gather against."""
    cdef const char* s = <const char*>cnp.PyArray_DATA(src)
    cdef char* d = <char*>cnp.PyArray_DATA(dst)
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(dst)
    cdef Py_ssize_t t, lo, hi
    cdef int parts = num_threads if num_threads > 1 else 1
    if parts == 1:
        memcpy(d, s, nbytes)
        return
    fe_mark_pool_started()
    for t in prange(parts, nogil=True, num_threads=parts, schedule='static', chunksize=1):
        lo = nbytes * t // parts
        hi = nbytes * (t + 1) // parts
        memcpy(d + lo, s + lo, hi - lo)


# --------------------------------------------------------------------------
# what this build and this CPU can do

def build_info():
    return {
        "openmp": bool(fe_openmp_enabled()),
        "openmp_version": fe_openmp_version(),
        "omp_max_threads": fe_omp_max_threads(),
        "cflags": FE_BUILD_CFLAGS.decode("ascii"),
        "gather_parallel_min_bytes": GATHER_PARALLEL_MIN_BYTES,
        "scatter_parallel_min_bytes": SCATTER_PARALLEL_MIN_BYTES,
        "scatter_parallel_min_row_bytes": SCATTER_PARALLEL_MIN_ROW_BYTES,
        "scatter_parallel_min_table_bytes": SCATTER_PARALLEL_MIN_TABLE_BYTES,
    }


def omp_max_threads():
    """OpenMP's current default team size (1 in a serial build)."""
    return fe_omp_max_threads()


def pool_started():
    """Whether this process has run an OpenMP parallel region."""
    return bool(fe_get_pool_started())


def cpu_features():
    return {
        "f16c": bool(fe_cpu_has_f16c()),
        "avx": bool(fe_cpu_has_avx2()) or bool(fe_cpu_has_f16c()),
        "avx2": bool(fe_cpu_has_avx2()),
        "avx512f": bool(fe_cpu_has_avx512f()),
    }


def use_f16c(bint on):
    """Turn the F16C float16 path on (where the CPU has it) or off; returns the new state."""
    fe_set_use_f16c(on)
    return bool(fe_get_use_f16c())


def f16c_active():
    return bool(fe_get_use_f16c())


def set_isa_level(int cap):
    """Use at most this instruction-set level for float32/float64 adds
    (0 = SSE2/portable, 1 = AVX, 2 = AVX-512F); returns the level in use."""
    return fe_set_isa_level(cap)


def isa_level():
    return fe_get_isa_level()


def half_to_float_portable(cnp.ndarray h, cnp.ndarray out):
    """float16 bits -> float32 with the portable converter (for tests)."""
    cdef Py_ssize_t k, n = cnp.PyArray_SIZE(h)
    cdef const uint16_t* src = <const uint16_t*>cnp.PyArray_DATA(h)
    cdef float* dst = <float*>cnp.PyArray_DATA(out)
    with nogil:
        for k in range(n):
            dst[k] = fe_half_to_float(src[k])


def float_to_half_portable(cnp.ndarray f, cnp.ndarray out):
    """float32 -> float16 bits with the portable converter (for tests)."""
    cdef Py_ssize_t k, n = cnp.PyArray_SIZE(f)
    cdef const float* src = <const float*>cnp.PyArray_DATA(f)
    cdef uint16_t* dst = <uint16_t*>cnp.PyArray_DATA(out)
    with nogil:
        for k in range(n):
            dst[k] = fe_float_to_half(src[k])
