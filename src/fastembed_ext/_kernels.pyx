# Compiled loops that only move numbers: every piece of arithmetic of the
# compiled path lives here, and nowhere else.
#
# Every argument arrives validated by the operations (dtypes, shapes, row
# strides, alignment, index bounds, overlap), so a kernel never has to report
# a bad input.  The only failure a kernel can meet is a failed scratch
# allocation, and every kernel allocates before its first write.
#
# How a call reads: a Python entry (bottom of the file) fills the argument
# struct of its kernel from ndarrays and calls _dispatch, the one place where
# a dtype becomes a C type; _typed then calls the kernel's specialisation.
# Kernels are written once over two fused types, value_t (float16, bfloat16,
# float32, float64) and index_t (int32, int64).  Every kernel has a naive
# serial twin, the plainest element-by-element loop, that the tests hold the
# fast one to.
#
# Arrays are read through the NumPy C API (pointer, shape, strides) rather
# than typed memoryviews: acquiring a buffer per argument costs more than the
# whole copy on a small batch.

from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t
from libc.stdlib cimport calloc, malloc, free
from libc.math cimport fabs, pow, sqrt, sqrtf, isnan, INFINITY
from libc.string cimport memcpy, memset

cimport numpy as cnp

cnp.import_array()

cdef extern from "_fe_engine.h" nogil:
    # the parallel engine: fe_run(fn, ctx, nchunks, nthreads) runs fn(ctx, c)
    # for every chunk c, the calling thread included (see the header)
    ctypedef void (*fe_task_fn)(void* ctx, ptrdiff_t chunk) noexcept nogil
    const char* FE_ENGINE_NAME
    int FE_MAX_THREADS
    void fe_run(fe_task_fn fn, void* ctx, ptrdiff_t nchunks, int nthreads)
    void fe_run_check(fe_task_fn fn, void* ctx, ptrdiff_t nchunks, int nthreads)
    int fe_engine_parallel()
    int fe_engine_workers()
    long fe_engine_jobs()
    long fe_engine_jobs_alone()
    long fe_engine_check_jobs()
    int fe_engine_helper_share()
    Py_ssize_t fe_load_acquire(Py_ssize_t* p)
    void fe_store_release(Py_ssize_t* p, Py_ssize_t v)
    void fe_add_release(Py_ssize_t* p, Py_ssize_t v)
    bint fe_try_take(int* flag)
    void fe_release(int* flag)
    void fe_pause_or_yield(Py_ssize_t spins)
    int fe_runnable_others()
    int fe_runnable_others_recent()
    int fe_runnable_others_now()
    int fe_cpu_budget
    void fe_engine_init()
    int fe_default_threads
    int fe_threads_source
    void fe_set_default_threads(int n, int source)

cdef extern from "_fe_add.h" nogil:
    # float32/float64 scalar operations with a pinned NaN rule, and the row
    # adds chosen at run time for the CPU (SSE2, AVX, AVX-512F)
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
    int fe_cpu_has_avx2()
    int fe_cpu_has_avx512f()
    int fe_cpu_is_amd()
    void fe_set_prefetch_nta(int on)
    int fe_get_prefetch_nta()
    void fe_copy_row(char* dst, const char* src, size_t n)
    bint fe_copy_row_stream_ok(const char* dst, size_t n)
    void fe_gather_stream_i32(char* out, const char* w, Py_ssize_t ws, const int32_t* idx,
                              Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t row_bytes,
                              Py_ssize_t head, Py_ssize_t dist)
    void fe_gather_stream_i64(char* out, const char* w, Py_ssize_t ws, const int64_t* idx,
                              Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t row_bytes,
                              Py_ssize_t head, Py_ssize_t dist)
    void fe_stream_fence()
    void FE_PREFETCH(const void* p)
    void FE_PREFETCH_W(const void* p)
    void fe_prefetch_span(const char* p, Py_ssize_t bytes)

cdef extern from "_fe_bag.h" nogil:
    # bag sums, means and maxima in registers (AVX; float16 with F16C; bfloat16
    # sums also built for AVX2); see the header
    enum:
        FE_BAG_F32
        FE_BAG_F64
        FE_BAG_F16
        FE_BAG_BF16
    Py_ssize_t fe_bag_sums(int type, int idx64, const char* w, Py_ssize_t stride,
                           const void* idx, const Py_ssize_t* bounds, Py_ssize_t b_lo,
                           Py_ssize_t b_hi, Py_ssize_t n, int64_t pad, const void* psw,
                           Py_ssize_t d, char* out, Py_ssize_t out_stride, int mean)
    Py_ssize_t fe_bag_maxes(int type, int idx64, const char* w, Py_ssize_t stride,
                            const void* idx, const Py_ssize_t* bounds, Py_ssize_t b_lo,
                            Py_ssize_t b_hi, Py_ssize_t n, int64_t pad, Py_ssize_t d,
                            char* out, Py_ssize_t out_stride, int64_t* max_indices)
    void fe_set_bag_avx2(int on)
    int fe_get_bag_avx2()

cdef extern from "_fe_half.h" nogil:
    # float16 and bfloat16: conversions and the rounding row adds
    float fe_half_to_float(uint16_t h)
    uint16_t fe_float_to_half(float f)
    void fe_half_add_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n)
    void fe_half_add_scaled_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale)
    int fe_cpu_has_f16c()
    void fe_set_use_f16c(int on)
    int fe_get_use_f16c()
    void fe_bf16_add_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n)
    void fe_bf16_add_scaled_row(uint16_t* dst, const uint16_t* src, Py_ssize_t n, float scale)
    float fe_bf16_to_float(uint16_t h)
    uint16_t fe_float_to_bf16(float f)

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

# the arithmetic type of a value type: float32 for the 16-bit types and float32,
# float64 for float64 (what NumPy computes an add, a product or a quotient in)
ctypedef fused real_t:
    float
    double

# value and index kinds, as _dispatch reads them
cdef enum:
    V_FLOAT16 = 0
    V_BFLOAT16 = 1
    V_FLOAT32 = 2
    V_FLOAT64 = 3
    I_INT32 = 0
    I_INT64 = 1

# the codes of bag modes and optimizers, defined here only
cdef enum:
    BAG_SUM = 0
    BAG_MEAN = 1
    BAG_MAX = 2
    OPT_SGD = 0
    OPT_ADAGRAD = 1
    OPT_ROWWISE_ADAGRAD = 2

BAG_MODES = {"sum": BAG_SUM, "mean": BAG_MEAN, "max": BAG_MAX}
OPTIMIZERS = {"sgd": OPT_SGD, "adagrad": OPT_ADAGRAD, "rowwise_adagrad": OPT_ROWWISE_ADAGRAD}


# The cost model of every parallel kernel: work is measured in bytes of rows
# moved (read from the table or the gradient, written to the output or the
# table) and cut into chunks of CHUNK_BYTES, which threads claim one at a
# time; below PARALLEL_MIN_BYTES a call stays on the calling thread, because
# a helper that wakes after the caller is done only costs the wake-up.
cdef Py_ssize_t CHUNK_BYTES = 1 << 16
cdef Py_ssize_t PARALLEL_MIN_BYTES = 1 << 18
# Gathers and bags prefetch rows a few indices ahead, so the prefetches at a
# chunk's end fetch rows of the next chunk, which another thread may claim:
# their chunks grow to READ_CHUNK_BYTES while each thread still has
# READ_CHUNKS_PER_THREAD to claim (2 threads, 64 KiB -> 512 KiB chunks: bags
# at the bench shapes 10.9/17.9/8.3 -> 10.2/16.1/7.8 ms; gather B=65536
# d=64/128 2.9/6.5 -> 2.5/6.1 ms, d=384/768 within the noise)
cdef Py_ssize_t READ_CHUNK_BYTES = 1 << 19
cdef Py_ssize_t READ_CHUNKS_PER_THREAD = 8
# A scatter-add's rows narrower than two cache lines stay on one thread.
cdef Py_ssize_t LINE_BYTES = 64
cdef Py_ssize_t SCATTER_PARALLEL_MIN_ROW_BYTES = 2 * LINE_BYTES
# A threaded scatter-add also pays for its plan's sample, its parts' bitmaps of
# earlier rows and a second engine job, and checks every update; it starts
# from 4 MiB of updates.  2 threads over 1, uniform ids, T=200000 and 1M,
# d=32/64/128 float32, 41 calls alternating: at 0.5/1/2 MiB of updates
# 0.68-1.32x (medians 0.90/0.93/0.98), at 4 MiB 0.91-1.47x (median 1.09),
# at 8 and 16 MiB 1.04-1.60x.
cdef Py_ssize_t SCATTER_PARALLEL_MIN_BYTES = 1 << 22
# parts (row ranges) per thread, so that a late or descheduled helper's share
# is taken by the others; each part scans the index list once
cdef Py_ssize_t PARTS_PER_THREAD = 1
cdef Py_ssize_t SCATTER_BLOCKS_PER_LANE = 16
# test hook: the plans' judgement (the load, and for a scatter-add its row
# width, table size and distinct rows) can be switched off, so that tests run
# the threaded kernels on any machine
cdef bint _scatter_heuristics = True
# test hook: with the judgement off, how the parts are cut (see _scatter_plan)
cdef bint _scatter_force_split = True
# when a parallel scatter-add pays (see _scatter_plan): the least share of
# sampled updates with a row of their own (percent); for parts split by
# position, a table of at least this many rows per update; for parts cut by
# rows, this many per streamed gradient row, unless the rows are long
cdef Py_ssize_t SCATTER_MIN_DISTINCT = 50
cdef Py_ssize_t SCATTER_MIN_TABLE_TO_UPDATES = 2
cdef Py_ssize_t SCATTER_ROWS_MIN_TABLE_TO_STREAMED = 8
cdef Py_ssize_t SCATTER_LONG_ROW_BYTES = 1024
# Threads that own bands of columns (each applies every update, in index
# order, to its band of the row) for updates that hit a hot set in cache: the
# band edges fall on 128-byte blocks of the table, a pair of cache lines that
# the adjacent-line prefetcher fetches together, so that no two threads write
# one pair (2 threads, B=65536 float32, a C loop alternated with the cut on a
# block edge: a cut at the middle of 512-byte rows, inside a pair, took
# 1.09-1.39x the time; at d=768, 0.98x).  A band is about
# SCATTER_MIN_BAND_BYTES or more, and the sample
# needs SCATTER_BANDS_MIN_DISTINCT percent of updates with a row of their own
# (see _hot_set_plan for the measurements).
cdef Py_ssize_t SCATTER_BAND_ALIGN = 128
cdef Py_ssize_t SCATTER_MIN_BAND_BYTES = 768
cdef Py_ssize_t SCATTER_BANDS_MIN_DISTINCT = 15
# test hook: with the judgement off, cut the columns where the rows allow it
cdef bint _scatter_force_columns = False
# test hook: every engine job runs on the calling thread, its chunks in
# order, as when no helper ever shows up
cdef bint _chunks_alone = False
# polls of a part that defers nothing new before _scatter_follow gives up on it
cdef Py_ssize_t FOLLOW_PATIENCE = 1024
# the most deferred updates _scatter_follow applies between two looks at the
# part it follows (a few tens of microseconds)
cdef Py_ssize_t FOLLOW_BATCH = 256

cdef enum:
    SCATTER_MAX_PARTS = 64
    SCATTER_BUCKETS = 4096      # the sample's histogram: row ranges of T / 4096 rows
    SCATTER_SAMPLES = 2048      # with a 4096-slot hash set: 68 KB of stack in all



# Rows are prefetched this many indices ahead when the table is larger than
# the caches: the loads of a random gather are otherwise serialised misses.
# From 4 MiB, not 16: 1 thread, B=65536, alternating builds in one process,
# a 7.7 MB table (T=30000 d=64) gathered 1.27-2.03x faster with prefetches,
# 3 MB (T=12000 d=64) 1.23-1.37x; 2.56 MB of 64-byte rows 0.94-0.99x.
cdef Py_ssize_t PREFETCH_AHEAD = 8
cdef Py_ssize_t PREFETCH_MIN_TABLE_BYTES = 1 << 22
# A gather writes its output with streaming stores from this size up, for
# rows this long (an ordinary store reads its line first, so writing out costs
# twice its size).  Against ordinary stores, 1 thread, B=65536 float32, 4 runs
# of calls alternated in one process on an AMD EPYC (old time / new time):
# T=200000 d=128 1.26-1.29, d=384 1.05-1.07, d=768 0.94-1.07; T=1000000 d=128
# 1.02-1.17.  There, at 256-byte rows (d=64), streaming lost 3-8%, so on AMD
# it starts at 512 bytes.  On an Intel Xeon (2 vCPUs, AVX-512) it won at rows
# of 128 and 256 bytes, 1 thread, calls alternated in one process (time with
# ordinary stores / time streaming): d=32 (T=200000 and 1M, B=131072)
# 1.10-1.24, d=64 (T=30000, 200000, 1M) 1.11-1.35, d=100 1.23; 2 threads
# 1.02-1.11.  At 64-byte rows (d=16) it made no difference (0.98-1.03).  So
# elsewhere it starts at 128 bytes.
# It prefetches the first STREAM_PREFETCH_HEAD_BYTES of the row PREFETCH_AHEAD
# indices ahead, and the hardware streams the rest of the row.  It prefetched
# whole rows about 4 KiB ahead: one row ahead at d=768, and so few rows in
# flight.  On an Intel Xeon (2 vCPUs, AVX-512), 1 thread, calls alternated in
# one process (time with whole rows / time with heads): T=200000 and 1M,
# d=256 1.10-1.13, d=300 1.10-1.11, d=384 1.06-1.12, d=768 1.13-1.16 and
# 1.31-1.34 (2 threads: d=256-768 1.08-1.26); at d=128 the head is the whole
# row, 8 ahead, as before.  Heads of 256 bytes ran like heads of 512 at d=256
# and wider and lost up to 5% at d=128.
cdef Py_ssize_t GATHER_STREAM_MIN_BYTES = 1 << 23
cdef Py_ssize_t GATHER_STREAM_MIN_ROW_BYTES = 512 if fe_cpu_is_amd() else 128
cdef Py_ssize_t STREAM_PREFETCH_HEAD_BYTES = 512

fe_set_use_f16c(1)
fe_set_bag_avx2(1)
fe_set_isa_level(2)
fe_set_prefetch_nta(fe_cpu_is_amd())
fe_engine_init()


# --------------------------------------------------------------------------
# process state, set by _runtime.py

# test hooks: the k-th next scratch allocation fails (0: none); every kernel
# runs as its naive twin
cdef Py_ssize_t _fail_allocation_at = 0
cdef bint _naive_kernels = False


cdef inline int _threads(int num_threads) noexcept nogil:
    # num_threads=0 is the library default, which the engine keeps
    if num_threads > 0:
        return num_threads if num_threads < FE_MAX_THREADS else FE_MAX_THREADS
    return fe_default_threads


cdef inline int _plan(Py_ssize_t work_bytes, int num_threads) noexcept nogil:
    # The threads a job of work_bytes gets: one below PARALLEL_MIN_BYTES, and
    # no more than the CPUs no other task is waiting for.  A helper that must
    # share a core with another task is descheduled mid-chunk and holds the
    # caller (one busy-loop process beside a 2-thread gather, T=200000 d=128:
    # 0.89-0.94x of one thread; a threaded scatter-add, which gains 1.1-1.6x
    # on free cores: 0.32-0.99x; with this rule both run on one).
    cdef int threads, free
    if work_bytes < PARALLEL_MIN_BYTES:
        return 1
    threads = _threads(num_threads)
    if threads > 1 and _scatter_heuristics:
        free = fe_cpu_budget - fe_runnable_others_recent()
        if threads > free:
            threads = free if free > 1 else 1
    return threads


cdef inline Py_ssize_t _per_chunk(Py_ssize_t item_bytes) noexcept nogil:
    # items of item_bytes each in a chunk of about CHUNK_BYTES
    return CHUNK_BYTES // item_bytes if item_bytes < CHUNK_BYTES else 1


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t _clamp(Py_ssize_t x, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if x < lo else (hi if x > hi else x)


cdef inline Py_ssize_t _per_read_chunk(Py_ssize_t n, Py_ssize_t item_bytes,
                                       int threads) noexcept nogil:
    # items per chunk for a kernel that prefetches rows ahead: at least a
    # CHUNK_BYTES chunk, at most a READ_CHUNK_BYTES one, and no more than a
    # READ_CHUNKS_PER_THREAD-th of each thread's share
    cdef Py_ssize_t least = _per_chunk(item_bytes)
    cdef Py_ssize_t most = READ_CHUNK_BYTES // item_bytes if item_bytes < READ_CHUNK_BYTES else 1
    cdef Py_ssize_t share = _ceil_div(n, threads * READ_CHUNKS_PER_THREAD)
    if share > most:
        share = most
    return share if share > least else least


cdef void* _alloc(size_t nbytes, bint zeroed) noexcept nogil:
    # scratch memory, always taken on the calling thread before the first write
    global _fail_allocation_at
    if _fail_allocation_at > 0:
        _fail_allocation_at -= 1
        if _fail_allocation_at == 0:
            return NULL
    if nbytes == 0:
        nbytes = 1
    return calloc(nbytes, 1) if zeroed else malloc(nbytes)


# --------------------------------------------------------------------------
# what the kernels receive

ctypedef struct Rows:
    # a 2-D array whose rows are contiguous: row r starts at data + r * stride
    char* data
    Py_ssize_t n          # rows
    Py_ssize_t d          # items per row
    Py_ssize_t row_bytes  # bytes of one row's items (d * itemsize)
    Py_ssize_t stride     # bytes between rows

ctypedef struct Indices:
    const void* data      # int32 or int64, contiguous
    Py_ssize_t n

ctypedef struct BoundsArgs:
    Indices idx           # IN
    Py_ssize_t num_rows
    int num_threads
    Py_ssize_t per_chunk  # (the kernel's) indices per chunk
    Py_ssize_t any_bad    # (the kernel's) 1 once a chunk has found an index out of range
    Py_ssize_t first_bad  # OUT: flat position of the first index outside [0, num_rows), or -1

ctypedef struct GatherArgs:
    Rows weight           # IN (T, d)
    Indices idx           # IN (n,)
    Rows out              # OUT (n, d)
    int num_threads
    Py_ssize_t per_chunk  # (the kernel's) indices per chunk
    bint prefetch         # (the kernel's) prefetch rows: the table is larger than the caches
    bint stream           # (the kernel's) streaming stores: so is the output

ctypedef struct ScatterArgs:
    Rows table            # INOUT (T, d): grad_weight
    Indices idx           # IN (n,)
    Rows grad             # IN (m, d): update k reads row src_rows[k] (or k)
    Py_ssize_t padding_idx          # -1 for none
    bint scale_by_freq              # each update times 1 / count of its index
    const Py_ssize_t* src_rows      # IN (n,) or NULL
    const void* scales              # IN (n,) of the value dtype, or NULL: update k times scales[k]
    int num_threads
    const Py_ssize_t* counts        # (the kernel's) count of each row, for scale_by_freq
    # (the kernel's) lanes of a parallel scatter: lane p owns rows
    # [cuts[p], cuts[p + 1]) and runs its updates in nblocks blocks of `block`
    # (by rows), or the deferred updates of a split by position
    Py_ssize_t cuts[65]
    Py_ssize_t nlanes, nblocks, block
    Py_ssize_t lane_next[64]        # the next block of each lane (atomic)
    int lane_busy[64]               # a thread holds the lane (atomic)
    Py_ssize_t lanes_left           # lanes not finished (atomic)
    # (the kernel's) parts split by position: part p applies updates
    # [starts[p], starts[p + 1]); see _scatter_split_part
    bint split
    Py_ssize_t nsplit
    Py_ssize_t starts[65]
    Py_ssize_t nlater[64]           # part p's deferred updates: deferred[starts[p]:][:nlater[p]]
    uint64_t* seen                  # part p >= 1: bits set for rows named before starts[p]
    Py_ssize_t seen_words
    int seen_shift                  # 0: a bit per row; else bit (row * golden) >> seen_shift
    Py_ssize_t* deferred            # n slots: part p's deferred updates from starts[p] on
    # (the kernel's) a thread done with its part applies a later part's
    # deferred updates while that part runs (_scatter_follow)
    Py_ssize_t part_state[64]       # 0 unclaimed, 1 running, 2 done (atomic)
    Py_ssize_t applied[64]          # part q's deferred updates applied so far
    int follower                    # a thread is following (atomic)
    Py_ssize_t follow_q             # the part it follows, or the next
    bint follow_live                # it began that part while the part ran
    # (the kernel's) threads owning columns, where nbands > 1: band b is
    # columns [bands[b], bands[b + 1]) of every row, for every update
    Py_ssize_t nbands
    Py_ssize_t bands[65]

ctypedef struct BagArgs:
    Rows weight           # IN (T, d)
    Indices idx           # IN (n,)
    const Py_ssize_t* bounds        # IN (B + 1,): bag b is entries [bounds[b], bounds[b + 1])
    Rows out              # OUT (B, d)
    int mode
    const void* psw                 # IN (n,) of the value dtype, or NULL
    int64_t* max_indices            # OUT (B, d) for mode max
    Py_ssize_t padding_idx
    int num_threads
    Py_ssize_t per_chunk            # (the kernel's) entries per chunk

ctypedef struct BagBackwardArgs:
    Rows grad_weight      # INOUT (T, d)
    Rows grad             # IN (B, d)
    Indices idx           # IN (n,)
    const Py_ssize_t* bounds        # IN (B + 1,)
    int mode                        # sum or mean
    const void* psw                 # IN (n,), or NULL
    Rows weight                     # IN (T, d), read when psw is given
    void* grad_psw                  # OUT (n,), written when psw is given
    const int64_t* max_indices      # IN (B, d), mode max only
    Py_ssize_t padding_idx
    int num_threads

ctypedef struct RowUpdateArgs:
    Rows weight           # INOUT (T, d)
    const int64_t* rows   # IN (n,) distinct rows
    Py_ssize_t n
    Rows values           # IN (n, d) summed gradients (optimizers)
    void* state           # INOUT (T, d) or (T,), float32 or float64 (optimizers)
    int kind              # an OPT_ code
    double lr, eps, weight_decay
    double max_norm, norm_type      # renorm
    int num_threads
    Py_ssize_t per_chunk            # (the kernel's) rows per chunk


# --------------------------------------------------------------------------
# element arithmetic
#
# A value is read into its arithmetic type, combined there, and rounded back
# once.  Every binary operation keeps its first operand's payload on NaN op NaN
# (fe_* put the operands in that order in assembly); adds put the incoming
# value first, as np.add.at on rows does.

cdef inline float _to_float(value_t x) noexcept nogil:
    if value_t is uint16_t:
        return fe_half_to_float(x)
    elif value_t is bf16_t:
        return fe_bf16_to_float(x.bits)
    else:
        return <float>x


cdef inline double _to_double(value_t x) noexcept nogil:
    if value_t is double:
        return x
    else:
        return <double>_to_float(x)


cdef inline value_t _from_real(real_t x, value_t* _v) noexcept nogil:
    cdef value_t r
    if value_t is uint16_t:
        return fe_float_to_half(<float>x)
    elif value_t is bf16_t:
        r.bits = fe_float_to_bf16(<float>x)
        return r
    else:
        return <value_t>x


cdef inline real_t _add(real_t a, real_t b) noexcept nogil:
    # a + b with b's payload on NaN + NaN (b is the incoming value)
    if real_t is float:
        return fe_addf(a, b)
    else:
        return fe_addd(a, b)


cdef inline real_t _mul(real_t a, real_t b) noexcept nogil:
    if real_t is float:
        return fe_mulf(a, b)
    else:
        return fe_muld(a, b)


cdef inline real_t _sub(real_t a, real_t b) noexcept nogil:
    if real_t is float:
        return fe_subf(a, b)
    else:
        return fe_subd(a, b)


cdef inline real_t _div(real_t a, real_t b) noexcept nogil:
    if real_t is float:
        return fe_divf(a, b)
    else:
        return fe_divd(a, b)


cdef inline real_t _sqrt(real_t a) noexcept nogil:
    if real_t is float:
        return sqrtf(a)
    else:
        return sqrt(a)


cdef inline void _add_elem(value_t* dst, value_t src) noexcept nogil:
    # dst = round(dst + src), element by element: the naive twins' add
    if value_t is double:
        dst[0] = fe_addd(dst[0], src)
    else:
        dst[0] = _from_real(fe_addf(_to_float(dst[0]), _to_float(src)), dst)


cdef inline value_t _scaled(value_t x, double scale) noexcept nogil:
    # round(x * scale), the scale rounded to the arithmetic type first
    if value_t is double:
        return fe_muld(x, scale)
    else:
        return _from_real(fe_mulf(_to_float(x), <float>scale), &x)


cdef inline bint _greater(value_t a, value_t b) noexcept nogil:
    if value_t is uint16_t or value_t is bf16_t:
        return _to_float(a) > _to_float(b)
    else:
        return a > b


cdef inline value_t _divided(value_t x, Py_ssize_t count) noexcept nogil:
    # round(x / count), divided in the arithmetic type
    if value_t is double:
        return x / <double>count
    else:
        return _from_real(_to_float(x) / <float>count, &x)


# --------------------------------------------------------------------------
# row arithmetic: the fast paths of the element rules above

cdef inline value_t* _row(Rows* r, Py_ssize_t i, value_t* _v) noexcept nogil:
    return <value_t*>(r.data + i * r.stride)


cdef inline value_t* _grad_row(ScatterArgs* a, Py_ssize_t k, value_t* _v) noexcept nogil:
    # the gradient row update k adds: row src_rows[k], or row k
    return _row(&a.grad, k if a.src_rows == NULL else a.src_rows[k], _v)


cdef inline void _add_row(value_t* dst, const value_t* src, Py_ssize_t d) noexcept nogil:
    # run-time dispatched on the CPU; the incoming NaN wins a NaN + NaN, as in NumPy
    if value_t is uint16_t:
        fe_half_add_row(dst, src, d)
    elif value_t is bf16_t:
        fe_bf16_add_row(<uint16_t*>dst, <const uint16_t*>src, d)
    elif value_t is float:
        fe_add_row_f32(dst, src, d)
    else:
        fe_add_row_f64(dst, src, d)


cdef inline void _add_scaled_row(value_t* dst, const value_t* src, Py_ssize_t d,
                                 double scale) noexcept nogil:
    # dst += round(src * scale): the scaled row is formed in the add's own
    # precision (float32 for float16 and float32), rounded, then added
    cdef Py_ssize_t j
    cdef float s32 = <float>scale
    if value_t is uint16_t:
        fe_half_add_scaled_row(dst, src, d, s32)
    elif value_t is bf16_t:
        fe_bf16_add_scaled_row(<uint16_t*>dst, <const uint16_t*>src, d, s32)
    elif value_t is float:
        for j in range(d):
            dst[j] = fe_addf(dst[j], fe_mulf(src[j], s32))
    else:
        for j in range(d):
            dst[j] = fe_addd(dst[j], fe_muld(src[j], scale))


cdef inline void _div_row(value_t* row, Py_ssize_t d, Py_ssize_t count) noexcept nogil:
    # float32 and float64: one division per lane, which the compiler packs
    # (an exact IEEE operation: the same bits as one at a time; bag mean at
    # T=1M d=64 20 per bag spent 1 ms of 19 in scalar divisions)
    cdef Py_ssize_t j
    cdef float cf = <float>count
    cdef double cd = <double>count
    if value_t is float:
        for j in range(d):
            row[j] = row[j] / cf
    elif value_t is double:
        for j in range(d):
            row[j] = row[j] / cd
    else:
        for j in range(d):
            row[j] = _divided(row[j], count)


# --------------------------------------------------------------------------
# index bounds

cdef inline bint _any_out_of_range(const index_t* idx, Py_ssize_t lo, Py_ssize_t hi,
                                   Py_ssize_t num_rows) noexcept nogil:
    # No compare and no early exit, so that it vectorises with the baseline
    # instructions (subtract and or): in unsigned 64-bit arithmetic,
    # i | (T - 1 - i) has its top bit set exactly when i < 0 (i's own top bit,
    # sign-extended) or i > T - 1 (the difference wraps).  Against a compare
    # per index: 327680 cached int64 indices 0.49 -> 0.14 ms, int32 0.29 ->
    # 0.13 ms; 4M from memory 1.3-1.5x.
    cdef uint64_t last = <uint64_t>num_rows - 1, seen = 0, x
    cdef Py_ssize_t k
    for k in range(lo, hi):
        x = <uint64_t><int64_t>idx[k]
        seen |= x | (last - x)
    return seen >> 63 != 0


cdef void _bounds_chunk(BoundsArgs* a, Py_ssize_t c, index_t* _i) noexcept nogil:
    cdef Py_ssize_t lo = c * a.per_chunk
    cdef Py_ssize_t hi = lo + a.per_chunk if lo + a.per_chunk < a.idx.n else a.idx.n
    if _any_out_of_range(<const index_t*>a.idx.data, lo, hi, a.num_rows):
        fe_store_release(&a.any_bad, 1)


cdef void _first_out_of_range(BoundsArgs* a, index_t* _i) noexcept nogil:
    # Scanned on the call's threads, as the work it guards will be: on one,
    # the pass over 65536 int64 indices (23 us) left the other thread idle
    # long enough to fall asleep before the gather it preceded, which then
    # paid a wake-up (2 threads, T=1M d=16 float32: 0.46 ms, against 0.22 ms
    # for the gather alone).  Only when some index is out of range is the
    # first one looked for, on this thread.
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t k, n = a.idx.n
    cdef int threads = _plan(n * <Py_ssize_t>sizeof(index_t), a.num_threads)
    a.first_bad = -1
    if threads <= 1:
        if not _any_out_of_range(idx, 0, n, a.num_rows):
            return
    else:
        a.any_bad = 0
        a.per_chunk = _per_chunk(sizeof(index_t))
        _parallel(C_BOUNDS, V_FLOAT32, _ik(_i), a, _ceil_div(n, a.per_chunk), threads)
        if fe_load_acquire(&a.any_bad) == 0:
            return
    for k in range(n):
        if <size_t>idx[k] >= <size_t>a.num_rows:
            a.first_bad = k
            return


# --------------------------------------------------------------------------
# gather: out[k, :] = weight[idx[k], :]

cdef void _gather_range(GatherArgs* a, const index_t* idx, Py_ssize_t lo, Py_ssize_t hi,
                        bint prefetch) noexcept nogil:
    cdef Py_ssize_t k, j, row_bytes = a.out.row_bytes
    cdef const char* w = a.weight.data
    cdef Py_ssize_t ws = a.weight.stride
    cdef char* out = a.out.data
    cdef const char* row
    # the first lines of a row PREFETCH_AHEAD indices ahead; the hardware
    # streams the rest (16 or 32 ahead, or whole rows, measured no better).
    # Ordinary stores: the first 256 bytes.  Streaming stores: the first
    # STREAM_PREFETCH_HEAD_BYTES, with the line of its last byte: a row that
    # does not start on a line (NumPy's large arrays start 16 bytes into one)
    # has one more line (1 thread, T=200000 d=128: 1.05-1.13x; the same for
    # the 256 bytes the ordinary path prefetches lost 2-16% at d=64)
    cdef Py_ssize_t dist = PREFETCH_AHEAD
    cdef Py_ssize_t ahead = hi - dist
    cdef Py_ssize_t span = row_bytes if row_bytes < 256 else 256
    cdef Py_ssize_t head = _clamp(row_bytes, 0, STREAM_PREFETCH_HEAD_BYTES)
    if a.stream:
        # an output far larger than the caches: written once, not read first
        # (rows of GATHER_STREAM_MIN_ROW_BYTES or more)
        if index_t is int32_t:
            fe_gather_stream_i32(out, w, ws, idx, lo, hi, row_bytes, head, dist)
        else:
            fe_gather_stream_i64(out, w, ws, idx, lo, hi, row_bytes, head, dist)
        fe_stream_fence()
    elif prefetch:
        for k in range(lo, hi):
            if k < ahead:
                row = w + <Py_ssize_t>idx[k + dist] * ws
                # the first lines of the row; the hardware streams the rest
                for j in range(0, span, 64):
                    FE_PREFETCH(row + j)
            fe_copy_row(out + k * row_bytes, w + <Py_ssize_t>idx[k] * ws, row_bytes)
    else:
        for k in range(lo, hi):
            fe_copy_row(out + k * row_bytes, w + <Py_ssize_t>idx[k] * ws, row_bytes)


cdef void _gather_chunk(GatherArgs* a, Py_ssize_t c, index_t* _i) noexcept nogil:
    cdef Py_ssize_t lo = c * a.per_chunk
    cdef Py_ssize_t hi = lo + a.per_chunk if lo + a.per_chunk < a.idx.n else a.idx.n
    _gather_range(a, <const index_t*>a.idx.data, lo, hi, a.prefetch)


cdef void _gather(GatherArgs* a, index_t* _i) noexcept nogil:
    # rows are copied as bytes: any dtype of a fixed size gathers alike; each
    # chunk writes its own slice of out (and first-touches its pages when out
    # is fresh)
    cdef Py_ssize_t n = a.idx.n
    cdef int threads = _plan(n * a.out.row_bytes, a.num_threads)
    a.prefetch = a.weight.n * a.weight.row_bytes >= PREFETCH_MIN_TABLE_BYTES
    a.stream = (n * a.out.row_bytes >= GATHER_STREAM_MIN_BYTES
                and a.out.row_bytes >= GATHER_STREAM_MIN_ROW_BYTES
                and fe_copy_row_stream_ok(a.out.data, a.out.row_bytes))
    if threads <= 1:
        _gather_range(a, <const index_t*>a.idx.data, 0, n, a.prefetch)
        return
    a.per_chunk = _per_read_chunk(n, a.out.row_bytes, threads)
    _parallel(C_GATHER, V_FLOAT32, _ik(_i), a, _ceil_div(n, a.per_chunk), threads)


cdef void _naive_gather(GatherArgs* a, index_t* _i) noexcept nogil:
    # the plainest serial loop, byte by byte
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t k, b, row_bytes = a.out.row_bytes
    for k in range(a.idx.n):
        for b in range(row_bytes):
            a.out.data[k * row_bytes + b] = a.weight.data[<Py_ssize_t>idx[k] * a.weight.stride + b]


# --------------------------------------------------------------------------
# scatter-add: table[idx[k], :] += grad[k, :], in index order per row

cdef void _scatter_columns(ScatterArgs* a, Py_ssize_t j0, Py_ssize_t j1,
                           value_t* _v, index_t* _i) noexcept nogil:
    # Applies every update k = 0..n in order to columns [j0, j1) of its row:
    # table[idx[k], j0:j1] += grad[src_rows[k] (or k), j0:j1] times scales[k]
    # or 1 / counts[idx[k]] when given.
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t n = a.idx.n, k, i, j, ahead, width = j1 - j0
    cdef Py_ssize_t pad = a.padding_idx, row_bytes = a.table.row_bytes
    cdef Py_ssize_t band = width * <Py_ssize_t>sizeof(value_t)
    cdef Py_ssize_t reach = band if band < 512 else 512
    cdef const value_t* scales = <const value_t*>a.scales
    cdef const Py_ssize_t* counts = a.counts
    cdef char* first = a.table.data + j0 * <Py_ssize_t>sizeof(value_t)
    cdef value_t* gw = <value_t*>a.table.data
    cdef Py_ssize_t d = a.table.d
    cdef const value_t* src
    cdef char* row
    for k in range(n):
        # the destination band of a later update, for writing: a random
        # read-modify-write otherwise stalls on each row (bench/: 1.2-1.4x on
        # one thread, from a cache-resident 7.7 MB table to a 256 MB one)
        if k + PREFETCH_AHEAD < n:
            ahead = idx[k + PREFETCH_AHEAD]
            row = first + ahead * row_bytes
            for j in range(0, reach, 64):
                FE_PREFETCH_W(row + j)
        i = idx[k]
        if i == pad:
            continue
        src = _grad_row(a, k, _v) + j0
        if scales != NULL:
            _add_scaled_row(gw + i * d + j0, src, width, _to_double(scales[k]))
        elif counts != NULL:
            _add_scaled_row(gw + i * d + j0, src, width, 1.0 / <double>counts[i])
        else:
            _add_row(gw + i * d + j0, src, width)


cdef inline void _apply_update(ScatterArgs* a, Py_ssize_t k, Py_ssize_t i,
                               value_t* _v) noexcept nogil:
    # table[i, :] += grad[src_rows[k] (or k), :], times scales[k] or 1 / counts[i]
    cdef const value_t* src = _grad_row(a, k, _v)
    cdef value_t* dst = <value_t*>a.table.data + i * a.table.d
    if a.scales != NULL:
        _add_scaled_row(dst, src, a.table.d, _to_double((<const value_t*>a.scales)[k]))
    elif a.counts != NULL:
        _add_scaled_row(dst, src, a.table.d, 1.0 / <double>a.counts[i])
    else:
        _add_row(dst, src, a.table.d)


cdef void _scatter_part(ScatterArgs* a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t k0,
                        Py_ssize_t n, const Py_ssize_t* order, value_t* _v,
                        index_t* _i) noexcept nogil:
    # Applies, in index order, the updates k0 <= k < n whose row lies in
    # [lo, hi); with an order, the updates order[k] instead (positions,
    # ascending).  It scans those indices; a ring of the next PREFETCH_AHEAD
    # owned updates lets it prefetch their rows.  With an order it prefetches
    # their gradient rows too.  In the second pass of a split (2 threads,
    # T=200000, B=65536 float32, 7.5% of the updates deferred; medians of 15
    # calls, timed inside the kernel, 2 runs each) that pass took 377 and
    # 504 us instead of 560-598 at d=64; at d=128 (690, 883 against 760-887)
    # and d=768 it made no clear difference.
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t pad = a.padding_idx
    cdef Py_ssize_t row_bytes = a.table.row_bytes
    cdef Py_ssize_t reach = row_bytes if row_bytes < 512 else 512
    cdef size_t width = <size_t>(hi - lo)
    cdef Py_ssize_t ring[16]
    cdef Py_ssize_t head = 0, tail = 0, scan = k0, k, i, j
    cdef char* row
    while True:
        # top the ring up with the next owned updates, prefetching their rows
        while scan < n and tail - head < PREFETCH_AHEAD:
            k = scan if order == NULL else order[scan]
            i = idx[k]
            if <size_t>(i - lo) < width and i != pad:
                ring[tail & 15] = k
                tail += 1
                row = a.table.data + i * row_bytes
                for j in range(0, reach, 64):
                    FE_PREFETCH_W(row + j)
                if order != NULL:
                    # and, in the scattered order of a list, its gradient row
                    row = <char*>_grad_row(a, k, _v)
                    for j in range(0, reach, 64):
                        FE_PREFETCH(row + j)
            scan += 1
        if head == tail:
            return
        k = ring[head & 15]
        head += 1
        _apply_update(a, k, idx[k], _v)


cdef inline Py_ssize_t _seen_bit(ScatterArgs* a, Py_ssize_t i) noexcept nogil:
    # the bit of row i in a part's set of earlier rows: the row itself, or,
    # for a table much larger than the batch, a hash of it (a false hit only
    # defers an update that need not wait)
    if a.seen_shift == 0:
        return i
    return <Py_ssize_t>((<uint64_t>i * 0x9E3779B97F4A7C15ULL) >> a.seen_shift)


cdef inline bint _named_before(ScatterArgs* a, const uint64_t* seen, Py_ssize_t i) noexcept nogil:
    # whether row i is in a part's set of earlier rows (none for part 0: seen NULL)
    if seen == NULL:
        return False
    i = _seen_bit(a, i)
    return (seen[i >> 6] >> (i & 63)) & 1


cdef void _scatter_split_part(ScatterArgs* a, Py_ssize_t p, value_t* _v,
                              index_t* _i) noexcept nogil:
    # Part p of a split scatter-add: the updates k in [starts[p], starts[p + 1]).
    # Those whose row no earlier update names are applied at once: no other
    # part writes that row in this pass, nor does a follower (it applies only
    # rows an earlier part names), and the second pass comes after it.  The
    # rest are deferred, in order, and published as they are: for the thread
    # that follows this part (_scatter_follow), and what it does not get to
    # for the second pass (_scatter_deferred_lane), once every part is done.
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t lo = a.starts[p], hi = a.starts[p + 1]
    cdef Py_ssize_t pad = a.padding_idx, row_bytes = a.table.row_bytes
    cdef Py_ssize_t reach = row_bytes if row_bytes < 512 else 512
    cdef uint64_t* seen = NULL
    cdef Py_ssize_t* later = a.deferred + lo
    cdef Py_ssize_t nlater = 0, k, i, j
    cdef char* row
    fe_store_release(&a.part_state[p], 1)
    # Part 1 begun once part 0 is done (a late helper, or the thread of part 0
    # taking part 1 itself) defers nothing: part 0 defers nothing either, so
    # every earlier update of its rows is applied, and it runs as one thread
    # would, without the set of earlier rows.  After 10 ms idle, when this
    # machine's second CPU often joined late or not at all, 2 threads / 1
    # (T=200000 d=64/128, T=1M d=64, 41 calls alternated) went from
    # 0.90/0.92/1.08 to 1.03/0.98/1.12; back to back, 1.42/1.67/1.51 to
    # 1.53/1.67/1.55.
    if p > 0 and not (p == 1 and fe_load_acquire(&a.part_state[0]) == 2):
        seen = a.seen + (p - 1) * a.seen_words
        for k in range(lo):
            i = idx[k]
            if i != pad:
                i = _seen_bit(a, i)
                seen[i >> 6] |= (<uint64_t>1) << (i & 63)
    for k in range(lo, hi):
        # the destination of a later update, for writing (see _scatter_columns),
        # unless this part will defer that update: its row is not written now,
        # so fetching it (a row an earlier part writes) is traffic for nothing
        # (uniform ids, T=200000 and 1M, builds alternated in one process, 2
        # runs of 31-41 rounds: the 2-thread call took 0.88-0.94 of the time
        # at d=64 and 0.93-0.99 at d=128; 1.00-1.02 at d=768, in one run)
        if k + PREFETCH_AHEAD < hi:
            i = idx[k + PREFETCH_AHEAD]
            if not _named_before(a, seen, i):
                row = a.table.data + i * row_bytes
                for j in range(0, reach, 64):
                    FE_PREFETCH_W(row + j)
        i = idx[k]
        if i == pad:
            continue
        if _named_before(a, seen, i):
            later[nlater] = k
            nlater += 1
            fe_store_release(&a.nlater[p], nlater)   # for _scatter_follow
            continue
        _apply_update(a, k, i, _v)
    fe_store_release(&a.part_state[p], 2)
    _scatter_follow(a, _v, _i)


cdef inline bint _parts_reached(ScatterArgs* a, Py_ssize_t parts, Py_ssize_t state) noexcept nogil:
    # parts 0 .. parts - 1 of a split are all at least at state (1 claimed, 2 done)
    cdef Py_ssize_t r
    for r in range(parts):
        if fe_load_acquire(&a.part_state[r]) < state:
            return False
    return True


cdef void _scatter_follow(ScatterArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # Run by a thread whose part of a split scatter-add is done: while part q
    # still runs and every earlier part is done, apply q's deferred updates as
    # q defers them.  Their rows are rows an earlier part names, which q
    # itself and the parts after q only defer, so nothing else writes them
    # now, and they come in index order after every earlier update of their
    # row.  The second pass then has only what no thread followed.  It
    # follows only once every part is claimed (else its thread goes back to
    # claim one: nothing waits on a part no thread runs), never begins a part
    # already done (the second pass splits those by rows), stops following
    # one that is done with more than FOLLOW_BATCH of its deferred updates
    # still to apply (its thread is free: the second pass splits them by
    # rows), and gives up on a part that defers nothing new for
    # FOLLOW_PATIENCE polls (its thread descheduled).
    cdef Py_ssize_t q, state, avail, idle
    cdef bint claimed = False
    if not fe_try_take(&a.follower):
        return   # another thread follows
    q = a.follow_q
    while q < a.nsplit:
        if not _parts_reached(a, q, 2):
            break   # an earlier part still runs
        state = fe_load_acquire(&a.part_state[q])
        if state == 0 or (state == 2 and not a.follow_live):
            break
        a.follow_live = True
        idle = 0
        while True:
            claimed = claimed or _parts_reached(a, a.nsplit, 1)   # once true, for good
            if not claimed:
                break
            state = fe_load_acquire(&a.part_state[q])   # before the count: done means final
            avail = fe_load_acquire(&a.nlater[q])
            if state == 2 and avail - a.applied[q] > FOLLOW_BATCH:
                break   # q's thread is free: the second pass splits the rest by rows
            if a.applied[q] < avail:
                if avail > a.applied[q] + FOLLOW_BATCH:
                    avail = a.applied[q] + FOLLOW_BATCH
                _scatter_part(a, 0, a.table.n, a.applied[q], avail,
                              a.deferred + a.starts[q], _v, _i)
                a.applied[q] = avail
                idle = 0
            elif state == 2:
                break
            else:
                idle += 1
                if idle > FOLLOW_PATIENCE:
                    break
                fe_pause_or_yield(idle)
        if not claimed or state != 2 or a.applied[q] < fe_load_acquire(&a.nlater[q]):
            break
        q += 1
        a.follow_live = False
    a.follow_q = q
    fe_release(&a.follower)


cdef void _scatter_deferred_lane(ScatterArgs* a, Py_ssize_t p, value_t* _v,
                                 index_t* _i) noexcept nogil:
    # The second pass of a split scatter-add: lane p applies the deferred
    # updates whose row lies in [cuts[p], cuts[p + 1]), part after part, each
    # part's in index order, so every row receives its updates in index
    # order.  The lanes own disjoint rows, so they run at once.
    cdef Py_ssize_t q
    for q in range(1, a.nsplit):
        _scatter_part(a, a.cuts[p], a.cuts[p + 1], a.applied[q], a.nlater[q],
                      a.deferred + a.starts[q], _v, _i)


cdef void _scatter_worker(ScatterArgs* a, Py_ssize_t c, value_t* _v,
                          index_t* _i) noexcept nogil:
    # One engine chunk per thread.  Lane p owns rows [cuts[p], cuts[p + 1]);
    # its updates run in blocks of the index range, block after block.  A
    # thread takes the next block of any lane that no thread holds, so a slow
    # or descheduled helper holds up one block of one lane, never a whole
    # part: the caller carries on with the other lanes, and with that lane
    # once the block is done.  Releasing a lane is a release store and taking
    # one an acquire, so a row's updates happen in index order whichever
    # threads run the blocks.
    cdef Py_ssize_t p, b, spins = 0
    cdef Py_ssize_t p0 = c % a.nlanes
    cdef bint took
    while fe_load_acquire(&a.lanes_left) > 0:
        took = False
        for p in range(a.nlanes):
            p = (p0 + p) % a.nlanes
            if fe_load_acquire(&a.lane_next[p]) >= a.nblocks or not fe_try_take(&a.lane_busy[p]):
                continue
            b = fe_load_acquire(&a.lane_next[p])
            if b < a.nblocks:
                _scatter_part(a, a.cuts[p], a.cuts[p + 1], b * a.block,
                              (b + 1) * a.block if (b + 1) * a.block < a.idx.n else a.idx.n,
                              NULL, _v, _i)
                fe_store_release(&a.lane_next[p], b + 1)
                if b + 1 == a.nblocks:
                    fe_add_release(&a.lanes_left, -1)
            fe_release(&a.lane_busy[p])
            took = True
            p0 = p   # stay on the lane: its rows are in this core's caches
            break
        if took:
            spins = 0
        else:
            # every lane left is held: wait for a block to end
            spins += 1
            fe_pause_or_yield(spins)


cdef Py_ssize_t _cut_rows(ScatterArgs* a, Py_ssize_t nparts, Py_ssize_t* largest,
                          Py_ssize_t* distinct, index_t* _i) noexcept nogil:
    # Cuts the rows into nparts ranges of about equal update counts, judged
    # from a fixed-stride sample of the indices (a cut never changes the bits,
    # only the balance), into a.cuts[0..nparts].  Returns the parts made;
    # largest gets the biggest part's share of the sample and distinct the
    # share of sampled updates whose row no other sampled update names, both
    # in percent.
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef Py_ssize_t n = a.idx.n, num_rows = a.table.n
    cdef Py_ssize_t hist[SCATTER_BUCKETS]
    cdef int64_t seen[2 * SCATTER_SAMPLES]   # open addressing; -1 is empty
    cdef unsigned char twice[2 * SCATTER_SAMPLES]
    cdef Py_ssize_t samples = n if n < SCATTER_SAMPLES else SCATTER_SAMPLES
    cdef Py_ssize_t s, b, i, h, total = 0, cum = 0, part_count = 0, made = 0, repeated = 0
    cdef int shift = 0
    while ((num_rows - 1) >> shift) >= SCATTER_BUCKETS:
        shift += 1
    memset(hist, 0, sizeof(hist))
    memset(seen, 0xff, sizeof(seen))
    memset(twice, 0, sizeof(twice))
    for s in range(samples):
        i = idx[s * n // samples]
        if i != a.padding_idx:
            hist[i >> shift] += 1
            total += 1
            h = <Py_ssize_t>((<uint64_t>i * 0x9E3779B97F4A7C15ULL) >> 52)   # 12 bits
            while seen[h] != -1 and seen[h] != i:
                h = (h + 1) & (2 * SCATTER_SAMPLES - 1)
            if seen[h] == i:
                repeated += 1 + (twice[h] == 0)   # the first sighting counts once it repeats
                twice[h] = 1
            else:
                seen[h] = i
    distinct[0] = 100 - repeated * 100 // (total if total else 1)
    a.cuts[0] = 0
    largest[0] = 0
    for b in range(SCATTER_BUCKETS):
        cum += hist[b]
        part_count += hist[b]
        # close the part once it holds its share of the sample
        if made < nparts - 1 and cum * nparts >= total * (made + 1) and (b + 1) << shift < num_rows:
            made += 1
            a.cuts[made] = (b + 1) << shift
            if part_count * 100 > largest[0] * total:
                largest[0] = part_count * 100 // (total if total else 1)
            part_count = 0
    made += 1
    a.cuts[made] = num_rows
    if total and part_count * 100 > largest[0] * total:
        largest[0] = part_count * 100 // total
    return made


cdef Py_ssize_t _column_bands(ScatterArgs* a, int threads, Py_ssize_t min_band) noexcept nogil:
    # Cuts the columns into at most `threads` bands, one per min_band bytes of
    # row, whose edges fall on SCATTER_BAND_ALIGN-byte blocks of the table in
    # every row, into a.bands[0..nbands]; returns the bands made, 1 where the
    # rows cannot be cut so (rows that are not a whole number of blocks apart,
    # or blocks that do not start at an item).
    cdef Py_ssize_t row_bytes = a.table.row_bytes, align = SCATTER_BAND_ALIGN
    cdef Py_ssize_t size, lead, nb, b, edge, made = 0
    a.bands[0] = 0
    if a.table.d == 0 or a.table.stride % align:
        return 1
    size = row_bytes // a.table.d
    # bytes from a row's start to its first block edge
    lead = (align - <Py_ssize_t>(<size_t>a.table.data % <size_t>align)) % align
    if lead % size:
        return 1
    nb = row_bytes // min_band
    if nb > threads:
        nb = threads
    if nb > SCATTER_MAX_PARTS:
        nb = SCATTER_MAX_PARTS
    for b in range(1, nb):
        # the block edge nearest b / nb of the row
        edge = lead + (row_bytes * b // nb - lead + align // 2) // align * align
        if edge > a.bands[made] * size and edge < row_bytes:
            made += 1
            a.bands[made] = edge // size
    made += 1
    a.bands[made] = a.table.d
    return made


cdef Py_ssize_t _hot_set_plan(ScatterArgs* a, int threads, Py_ssize_t min_band,
                              Py_ssize_t distinct) noexcept nogil:
    # Updates that hit a hot set in cache: threads own bands of columns where
    # the rows are long enough and enough updates still miss the cache
    # (a.nbands > 1), else one thread.  Each thread applies every update to its
    # band, so nothing waits and the bits are those of one thread; but each
    # streams its band of every gradient row, and the prefetchers pull in
    # more (a 1-thread pass over half of each 512-byte row took 0.62-0.70 of
    # the whole row's time), and a band's edge lines are next to the other
    # thread's, which the prefetchers also pull.  So it pays where the table's
    # read-modify-writes, not the gradient stream, are most of the time.
    # 2 threads / 1, B=65536 float32, calls alternated in one process, Zipf
    # a=1.1 ids (37% of sampled updates with a row of their own):
    #   d=128 (256-byte bands): 0.92-0.98/0.94-1.09 with the hot rows spread
    #     over T=200000/1M, 0.73-0.75 with them at the table's start;
    #   d=256: 0.93 spread, 0.98 at the start;
    #   d=384: 1.24-1.32/1.31-1.49 spread, 1.12-1.18 at the start; d=768:
    #     1.50-1.63 spread, 1.45-1.50 at the start (2 runs).
    # By the sample's share of distinct rows (T=200000): d=384 Zipf a=1.3
    # (17%) 1.08, 85% of updates to 100 rows (16%) 1.13, Zipf a=1.6 (5%)
    # 0.87; d=768 1.36-1.45 at 5-17%; 95% of updates to one row (5-6%) 0.68 at
    # d=256, 0.92 at d=384, 0.98 at d=768.
    a.nbands = 1
    if distinct >= SCATTER_BANDS_MIN_DISTINCT:
        a.nbands = _column_bands(a, threads, min_band)
    return a.nbands


cdef Py_ssize_t _scatter_plan(ScatterArgs* a, int threads, Py_ssize_t* largest,
                              Py_ssize_t* distinct, index_t* _i) noexcept nogil:
    # The parts a parallel scatter-add runs in, or 1 for one thread; a.split
    # says how they are cut.
    #
    # By position (a.split): part p takes a contiguous range of the updates,
    # so each thread streams only its own share of the gradient.  An update
    # whose row an earlier part also names is deferred to a second pass
    # (_scatter_split_part): with uniform ids, 1 - exp(-n / (2 T)) of the
    # second half, 15% at T=200000 and 3% at T=1M for n=65536.  The thread
    # that finishes part 0 applies part 1's deferred updates while part 1
    # still runs (_scatter_follow); a second pass splits what is left by
    # rows (_scatter_deferred_lane).  The parts are equal: part 0 shortened
    # by half of part 1's expected deferrals, so that it would finish first,
    # took 1.01-1.12x the time of equal halves at T=200000 and 1.01-1.05x at
    # T=1M, d=64/128, and 0.99x at d=768 (2 threads, builds alternated in one
    # process, 3 runs of 31-41 rounds, with the deferred updates' rows no
    # longer prefetched by the part that defers them).  Following, against
    # the second pass alone (2 threads / 1, builds alternated in one
    # process, 3 runs, part 0 then shortened):
    # T=200000 d=64/128/768 1.14-1.61x/1.43-1.49x/1.42-1.49x, from
    # 1.07-1.41x/1.23-1.38x/1.37-1.46x; T=1M 1.47-1.66x/1.68-1.81x/1.47-1.67x,
    # from 1.25-1.59x/1.54-1.75x/1.43-1.67x.  (Then, with equal halves, part
    # 1 finished first in 17 of 30 calls at T=200000 d=128 and nothing was
    # followed in those, which is why part 0 was shortened; timed against
    # equal halves after the prefetch change, shortening lost, as above.)
    # Before following, 2 cores, uniform ids, n=65536, 2 threads / 1 (3 runs):
    # T=1M d=64/128/768 1.35-1.45x/1.45-1.73x/1.58-1.72x; T=200000
    # 1.20-1.44x/1.26-1.45x/1.33-1.55x.  Where one thread applied each part's
    # deferred updates after every earlier part was done, the two-pass split
    # takes 0.92-0.98 of the time at T=200000 and 0.84-1.06 at T=1M.  Cutting
    # the updates into 2 parts per thread took 1.03-1.19x the time of 1, and
    # starts placed so that the parts apply equal shares at once (from
    # exp(-s / T), without following) 0.97-1.13x.  (By rows: T=1M
    # 1.17-1.25x/1.12x/1.32-1.46x; T=65536 d=64 by position 0.93x.)
    #
    # By rows (not a.split): part p owns a range of rows and applies their
    # updates, scanning every index; the parts' owned updates interleave, so
    # the hardware prefetchers of both cores stream almost all of grad.  It
    # pays where rows are long and the table is too small for the position
    # split (T=32768/65536 d=768, n=65536: 1.43x/1.46x, by position 1.09x/1.25x),
    # and for a bag backward, whose entries share their bag's gradient row,
    # so there is little gradient to stream twice (T=100000 d=128 100 per
    # bag: by position 1.00-1.24x, as 87% of the second half is deferred).
    #
    # Neither pays when updates hit a hot set already in cache (Zipf ids:
    # 0.70-0.97x by position, 0.74-0.96x by rows at d=64/128; the two-pass
    # split 0.67-1.04x with the hot rows spread over the table, 0.75-0.85x
    # with them at its start).  A hot row's updates stay in index order, so
    # most of the second half is deferred, and the second pass reads their
    # gradient rows out of order; by rows, each thread reads every other
    # gradient row, and the prefetchers pull in the rest.  Even a split by
    # position that keeps nothing in order (bench/native/scatter_split_limit.c)
    # ran at 0.65-0.89x there: both cores write the hot rows' lines.
    #
    # By columns (a.nbands > 1, _hot_set_plan): for a hot set, where rows are
    # long, each thread applies every update to its band of columns.
    cdef Py_ssize_t nparts = PARTS_PER_THREAD * threads
    if nparts > SCATTER_MAX_PARTS:
        nparts = SCATTER_MAX_PARTS
    a.nbands = 1
    if not _scatter_heuristics:
        if _scatter_force_columns and _hot_set_plan(a, threads, SCATTER_BAND_ALIGN, 100) > 1:
            largest[0] = 0
            distinct[0] = 100
            return a.nbands
        a.split = _scatter_force_split
        a.nlanes = _cut_rows(a, nparts, largest, distinct, _i)
        if a.split:
            largest[0] = 0
            distinct[0] = 100
            return nparts
        return a.nlanes
    # The gradient it streams: a row per update, or, where updates share
    # source rows (a bag's gradient row serves every entry of the bag, and
    # stays in cache), the source rows alone (bag backward, 2 threads, uniform
    # ids: T=1M d=64 20 per bag 1.58x; T=100000 d=128 100 per bag 1.28x).
    cdef Py_ssize_t streamed = a.idx.n if a.src_rows == NULL else a.grad.n
    a.split = a.src_rows == NULL and a.table.n >= SCATTER_MIN_TABLE_TO_UPDATES * a.idx.n
    if not a.split and a.table.row_bytes < SCATTER_LONG_ROW_BYTES \
            and a.table.n < SCATTER_ROWS_MIN_TABLE_TO_STREAMED * streamed:
        largest[0] = 0
        distinct[0] = 0
        return 1
    # the sample: its share of distinct rows, and the cuts of rows
    a.nlanes = _cut_rows(a, nparts, largest, distinct, _i)
    if distinct[0] < SCATTER_MIN_DISTINCT or (not a.split and largest[0] >= 90):
        return _hot_set_plan(a, threads, SCATTER_MIN_BAND_BYTES, distinct[0])
    # cores taken by other work were already left out by _plan
    return nparts if a.split else a.nlanes


cdef inline int _scatter_threads(ScatterArgs* a) noexcept nogil:
    # The threads a scatter-add may take before its plan reads the updates:
    # one for rows under SCATTER_PARALLEL_MIN_ROW_BYTES or updates under
    # SCATTER_PARALLEL_MIN_BYTES (unless the judgement is off, for tests)
    cdef Py_ssize_t work = a.idx.n * a.table.row_bytes
    if _scatter_heuristics and (a.table.row_bytes < SCATTER_PARALLEL_MIN_ROW_BYTES
                                or work < SCATTER_PARALLEL_MIN_BYTES):
        return 1
    return _plan(work, a.num_threads)


cdef Py_ssize_t* _counts_of(const index_t* idx, Py_ssize_t n, Py_ssize_t num_rows) noexcept nogil:
    # PyTorch's trick: a table-sized counter array whose untouched pages are
    # never faulted in, so the cost follows the batch, not the table
    cdef Py_ssize_t k
    cdef Py_ssize_t* counts = <Py_ssize_t*>_alloc(num_rows * sizeof(Py_ssize_t), False)
    if counts == NULL:
        return NULL
    for k in range(n):
        counts[idx[k]] = 0
    for k in range(n):
        counts[idx[k]] += 1
    return counts


cdef int _scatter(ScatterArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # Returns 0, or -1 when scratch memory could not be had (nothing written).
    #
    # Each row receives its updates in index order, whatever thread applies
    # them: the same bits for any thread count and any schedule.  The plan
    # (_scatter_plan) cuts the work one of three ways:
    # - by position: part p applies a contiguous range of the updates; an
    #   update whose row an earlier range names is deferred, applied by a
    #   thread that follows the part once every earlier part is done, or in a
    #   second pass, in which lanes owning disjoint rows apply them
    #   (_scatter_split_part, _scatter_follow, _scatter_deferred_lane);
    # - by rows: the rows are cut into ranges of about equal update counts,
    #   and the thread that claims a part applies the updates to its rows,
    #   scanning the whole index list (_scatter_worker);
    # - by columns, for updates that hit a hot set: each band of columns,
    #   its edges on 128-byte blocks, takes every update (_scatter_columns,
    #   the loop one thread runs over the whole row).
    # No pass over all the indices comes first (the earlier partition, a
    # parallel counting sort, paid two and ran at 0.67-1.09x of one thread).
    # Columns for every call ran at 0.35-1.4x, with band edges inside a pair
    # of lines: every thread visits every update, and the prefetchers pull
    # lines the other core then writes (_hot_set_plan says where it pays).
    cdef Py_ssize_t n = a.idx.n, d = a.table.d, nparts, largest, distinct, p, later
    cdef Py_ssize_t* counts = NULL
    cdef int threads
    if n == 0 or d == 0:
        return 0
    if a.scale_by_freq:
        counts = _counts_of(<const index_t*>a.idx.data, n, a.table.n)
        if counts == NULL:
            return -1
    a.counts = counts
    threads = _scatter_threads(a)
    if threads > 1:
        nparts = _scatter_plan(a, threads, &largest, &distinct, _i)
        if nparts <= 1:
            threads = 1
    if threads <= 1:
        _scatter_columns(a, 0, d, _v, _i)
    elif a.nbands > 1:
        _parallel(C_SCATTER_BANDS, _vk(_v), _ik(_i), a, a.nbands,
                  threads if threads < a.nbands else <int>a.nbands)
    elif a.split:
        a.nsplit = nparts
        for p in range(a.nsplit + 1):
            a.starts[p] = n * p // a.nsplit
        memset(a.nlater, 0, sizeof(a.nlater))
        memset(a.part_state, 0, sizeof(a.part_state))
        memset(a.applied, 0, sizeof(a.applied))
        a.follower = 0
        a.follow_q = 1
        a.follow_live = False
        # a bit per row, or 2**k >= 16 n bits for a larger table: at most
        # 1 in 16 updates is then deferred for nothing
        a.seen_shift = 0
        a.seen_words = (a.table.n + 63) >> 6
        if a.table.n > 16 * n:
            a.seen_shift = 64 - 6
            a.seen_words = 1
            while a.seen_words * 64 < 16 * n:
                a.seen_words *= 2
                a.seen_shift -= 1
        a.seen = <uint64_t*>_alloc((a.nsplit - 1) * a.seen_words * sizeof(uint64_t), True)
        a.deferred = <Py_ssize_t*>_alloc(n * sizeof(Py_ssize_t), False)
        if a.seen == NULL or a.deferred == NULL:
            free(a.seen)
            free(a.deferred)
            free(counts)
            return -1
        _parallel(C_SCATTER_SPLIT, _vk(_v), _ik(_i), a, a.nsplit, threads)
        later = 0
        for p in range(1, a.nsplit):
            later += a.nlater[p] - a.applied[p]
        if later > 0:
            _parallel(C_SCATTER_DEFERRED, _vk(_v), _ik(_i), a, a.nlanes, threads)
        free(a.seen)
        free(a.deferred)
    else:
        a.nlanes = nparts
        a.block = n // SCATTER_BLOCKS_PER_LANE if n // SCATTER_BLOCKS_PER_LANE > 1024 else 1024
        a.nblocks = _ceil_div(n, a.block)
        memset(a.lane_next, 0, sizeof(a.lane_next))
        memset(a.lane_busy, 0, sizeof(a.lane_busy))
        a.lanes_left = nparts
        _parallel(C_SCATTER_PART, _vk(_v), _ik(_i), a, threads, threads)
    free(counts)
    return 0


cdef int _naive_scatter(ScatterArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # the plainest serial loop, element by element, portable arithmetic
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef const value_t* scales = <const value_t*>a.scales
    cdef Py_ssize_t k, j, i, r, n = a.idx.n
    cdef value_t* dst
    cdef const value_t* src
    cdef double scale
    cdef Py_ssize_t* counts = NULL
    if a.scale_by_freq and n > 0:
        counts = <Py_ssize_t*>_alloc(a.table.n * sizeof(Py_ssize_t), True)
        if counts == NULL:
            return -1
        for k in range(n):
            counts[idx[k]] += 1
    for k in range(n):
        i = idx[k]
        if i == a.padding_idx:
            continue
        r = k if a.src_rows == NULL else a.src_rows[k]
        dst = _row(&a.table, i, _v)
        src = _row(&a.grad, r, _v)
        scale = 1.0
        if scales != NULL:
            scale = _to_double(scales[k])
        elif counts != NULL:
            scale = 1.0 / <double>counts[i]
        for j in range(a.table.d):
            if scales != NULL or counts != NULL:
                _add_elem(&dst[j], _scaled(src[j], scale))
            else:
                _add_elem(&dst[j], src[j])
    free(counts)
    return 0


# --------------------------------------------------------------------------
# bags: out[b] = reduce over the entries of bag b (sum, mean or max)

cdef inline int _bag_type(value_t* _v) noexcept nogil:
    # the header's name for the value type
    if value_t is float:
        return FE_BAG_F32
    elif value_t is double:
        return FE_BAG_F64
    elif value_t is bf16_t:
        return FE_BAG_BF16
    else:  # uint16_t: float16
        return FE_BAG_F16


cdef void _bag_range(BagArgs* a, const index_t* idx, Py_ssize_t b_lo, Py_ssize_t b_hi,
                     value_t* _v) noexcept nogil:
    cdef Py_ssize_t b, k, j, i, count, d = a.out.d
    cdef const value_t* psw = <const value_t*>a.psw
    cdef value_t* row
    cdef const value_t* src
    # the bags the kernels in registers write (bench/test_layers.py: the bag
    # groups); the rest, if any, element by element below
    cdef int idx64 = index_t is int64_t
    if a.mode == BAG_MAX:
        b_lo = fe_bag_maxes(_bag_type(_v), idx64, a.weight.data, a.weight.stride, idx, a.bounds,
                            b_lo, b_hi, a.idx.n, a.padding_idx, a.out.d, a.out.data,
                            a.out.stride, a.max_indices)
    else:
        b_lo = fe_bag_sums(_bag_type(_v), idx64, a.weight.data, a.weight.stride, idx, a.bounds,
                           b_lo, b_hi, a.idx.n, a.padding_idx, a.psw, a.out.d, a.out.data,
                           a.out.stride, a.mode == BAG_MEAN)
    for b in range(b_lo, b_hi):
        row = _row(&a.out, b, _v)
        memset(row, 0, d * sizeof(value_t))
        count = 0
        for k in range(a.bounds[b], a.bounds[b + 1]):
            i = idx[k]
            if i == a.padding_idx:
                continue
            src = _row(&a.weight, i, _v)
            if a.mode == BAG_MAX:
                if count == 0:
                    memcpy(row, src, d * sizeof(value_t))
                    for j in range(d):
                        a.max_indices[b * d + j] = i
                else:
                    for j in range(d):
                        # strictly greater: the first of equal values stays, a NaN never wins
                        if _greater(src[j], row[j]):
                            row[j] = src[j]
                            a.max_indices[b * d + j] = i
            elif psw != NULL:
                _add_scaled_row(row, src, d, _to_double(psw[k]))
            else:
                _add_row(row, src, d)
            count += 1
        if a.mode == BAG_MEAN and count > 0:
            _div_row(row, d, count)
        if a.mode == BAG_MAX and count == 0:
            for j in range(d):
                a.max_indices[b * d + j] = -1


cdef inline Py_ssize_t _first_bag_at(const Py_ssize_t* bounds, Py_ssize_t num_bags,
                                     Py_ssize_t e) noexcept nogil:
    # the first bag b (or num_bags) whose entries start at e or later
    cdef Py_ssize_t lo = 0, hi = num_bags, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < e:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void _bag_chunk(BagArgs* a, Py_ssize_t c, value_t* _v, index_t* _i) noexcept nogil:
    # the bags whose first entry lies in chunk c's entries: each bag (empty
    # ones included) in exactly one chunk, its output row written by one thread
    cdef Py_ssize_t num_bags = a.out.n, entries = a.bounds[num_bags]
    cdef Py_ssize_t lo = c * a.per_chunk, hi = lo + a.per_chunk
    if hi >= entries:
        hi = entries + 1
    _bag_range(a, <const index_t*>a.idx.data, _first_bag_at(a.bounds, num_bags, lo),
               _first_bag_at(a.bounds, num_bags, hi), _v)


cdef void _bag(BagArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    cdef Py_ssize_t entries = a.bounds[a.out.n]
    cdef int threads = _plan(entries * a.weight.row_bytes, a.num_threads)
    if threads <= 1:
        _bag_range(a, <const index_t*>a.idx.data, 0, a.out.n, _v)
        return
    a.per_chunk = _per_read_chunk(entries, a.weight.row_bytes, threads)
    _parallel(C_BAG, _vk(_v), _ik(_i), a, _ceil_div(entries, a.per_chunk), threads)


cdef void _naive_bag(BagArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # bag by bag, element by element
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef const value_t* psw = <const value_t*>a.psw
    cdef Py_ssize_t b, k, j, i, count, d = a.out.d
    cdef value_t* row
    cdef const value_t* src
    for b in range(a.out.n):
        row = _row(&a.out, b, _v)
        count = 0
        for j in range(d):
            row[j] = _from_real(<float>0.0, _v)
            if a.mode == BAG_MAX:
                a.max_indices[b * d + j] = -1
        for k in range(a.bounds[b], a.bounds[b + 1]):
            i = idx[k]
            if i == a.padding_idx:
                continue
            src = _row(&a.weight, i, _v)
            for j in range(d):
                if a.mode == BAG_MAX:
                    if count == 0 or _greater(src[j], row[j]):
                        row[j] = src[j]
                        a.max_indices[b * d + j] = i
                elif psw != NULL:
                    _add_elem(&row[j], _scaled(src[j], _to_double(psw[k])))
                else:
                    _add_elem(&row[j], src[j])
            count += 1
        if a.mode == BAG_MEAN and count > 0:
            for j in range(d):
                row[j] = _divided(row[j], count)


# --------------------------------------------------------------------------
# bag backward (sum, mean): grad_weight[idx[k]] += g_b (times psw[k]) for the bag b of entry k

cdef value_t _row_dot(const value_t* g, const value_t* w, Py_ssize_t d) noexcept nogil:
    # sum_j round(g[j] * w[j]), strictly left to right; the gradient first in
    # each product (its payload survives NaN * NaN), each product the incoming
    # value of its add
    cdef Py_ssize_t j
    cdef value_t acc, p
    memset(&acc, 0, sizeof(value_t))
    for j in range(d):
        if value_t is double:
            p = fe_muld(g[j], w[j])
        else:
            p = _from_real(fe_mulf(_to_float(g[j]), _to_float(w[j])), &p)
        if j == 0:
            acc = p
        else:
            _add_row(&acc, &p, 1)
    return acc


cdef int _bag_backward(BagBackwardArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # the gradient row of every entry's bag (divided by the bag's count for
    # mean), the dots of those rows with the weight rows for psw, then one
    # scatter in entry order
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef const value_t* psw = <const value_t*>a.psw
    cdef value_t* grad_psw = <value_t*>a.grad_psw
    cdef Py_ssize_t n = a.idx.n, num_bags = a.grad.n, d = a.grad.d
    cdef Py_ssize_t b, k, j, count
    cdef Py_ssize_t* bag = <Py_ssize_t*>_alloc(n * sizeof(Py_ssize_t), False)
    cdef value_t* scaled = NULL
    cdef Rows src = a.grad
    cdef ScatterArgs s
    cdef int rc
    if bag == NULL:
        return -1
    if a.mode == BAG_MEAN:
        scaled = <value_t*>_alloc(num_bags * d * sizeof(value_t), False)
        if scaled == NULL:
            free(bag)
            return -1
    for b in range(num_bags):
        count = 0
        for k in range(a.bounds[b], a.bounds[b + 1]):
            bag[k] = b
            count += idx[k] != a.padding_idx
        if scaled != NULL:
            # every row is divided, by 1 for a bag with no entries (NumPy's np.maximum(counts, 1))
            for j in range(d):
                scaled[b * d + j] = _divided(_row(&a.grad, b, _v)[j], count if count > 0 else 1)
    if scaled != NULL:
        src.data = <char*>scaled
        src.stride = src.row_bytes
    if psw != NULL:
        for k in range(n):
            if idx[k] == a.padding_idx or d == 0:
                memset(&grad_psw[k], 0, sizeof(value_t))
            else:
                grad_psw[k] = _row_dot(_row(&src, bag[k], _v), _row(&a.weight, idx[k], _v), d)
    s.table = a.grad_weight
    s.idx = a.idx
    s.grad = src
    s.padding_idx = a.padding_idx
    s.scale_by_freq = False
    s.src_rows = bag
    s.scales = a.psw
    s.num_threads = a.num_threads
    rc = _scatter(&s, _v, _i)
    free(bag)
    free(scaled)
    return rc


cdef int _naive_bag_backward(BagBackwardArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # entry by entry, element by element; each entry finds its bag and count afresh
    cdef const index_t* idx = <const index_t*>a.idx.data
    cdef const value_t* psw = <const value_t*>a.psw
    cdef value_t* grad_psw = <value_t*>a.grad_psw
    cdef Py_ssize_t k, b, j, m, count, i
    cdef value_t g, acc, p
    for k in range(a.idx.n):
        i = idx[k]
        b = 0
        while a.bounds[b + 1] <= k:
            b += 1
        count = 0
        for m in range(a.bounds[b], a.bounds[b + 1]):
            count += idx[m] != a.padding_idx
        if psw != NULL:
            memset(&grad_psw[k], 0, sizeof(value_t))
        if i == a.padding_idx:
            continue
        for j in range(a.grad.d):
            g = _row(&a.grad, b, _v)[j]
            if a.mode == BAG_MEAN:
                g = _divided(g, count)
            if psw != NULL:
                if value_t is double:
                    p = fe_muld(g, _row(&a.weight, i, _v)[j])
                else:
                    p = _from_real(fe_mulf(_to_float(g), _to_float(_row(&a.weight, i, _v)[j])), _v)
                if j == 0:
                    acc = p
                else:
                    _add_elem(&acc, p)
                g = _scaled(g, _to_double(psw[k]))
            _add_elem(&_row(&a.grad_weight, i, _v)[j], g)
        if psw != NULL and a.grad.d > 0:
            grad_psw[k] = acc
    return 0


cdef int _max_backward(BagBackwardArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # bag order, column by column: each element is its own accumulation
    cdef Py_ssize_t b, j, i, d = a.grad.d
    for j in range(d):
        for b in range(a.grad.n):
            i = a.max_indices[b * d + j]
            if i >= 0:
                _add_row(_row(&a.grad_weight, i, _v) + j, _row(&a.grad, b, _v) + j, 1)
    return 0


cdef int _naive_max_backward(BagBackwardArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    cdef Py_ssize_t b, j, i, d = a.grad.d
    for j in range(d):
        for b in range(a.grad.n):
            i = a.max_indices[b * d + j]
            if i >= 0:
                _add_elem(&_row(&a.grad_weight, i, _v)[j], _row(&a.grad, b, _v)[j])
    return 0


# --------------------------------------------------------------------------
# max-norm and optimizer steps, one distinct row at a time
#
# Arithmetic runs in the add's precision (float32 for float16, bfloat16 and
# float32 tables; float64 for float64) and rounds to the table's dtype once.

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


cdef inline void _renorm_row(value_t* row, Py_ssize_t d, double max_norm, double p) noexcept nogil:
    cdef Py_ssize_t j
    cdef double norm = _row_norm(row, d, p)
    if norm > max_norm:
        for j in range(d):
            row[j] = _scaled(row[j], max_norm / (norm + 1e-7))


cdef void _row_update_chunk(RowUpdateArgs* a, Py_ssize_t c, bint renorm,
                            value_t* _v) noexcept nogil:
    # distinct rows: each row of the table (and of the state) has one writer
    cdef Py_ssize_t r, lo = c * a.per_chunk
    cdef Py_ssize_t hi = lo + a.per_chunk if lo + a.per_chunk < a.n else a.n
    for r in range(lo, hi):
        if renorm:
            _renorm_row(_row(&a.weight, a.rows[r], _v), a.weight.d, a.max_norm, a.norm_type)
        else:
            _opt_update(a, r, _v)


cdef int _row_updates(RowUpdateArgs* a, bint renorm, value_t* _v, index_t* _i) noexcept nogil:
    cdef int threads = _plan(a.n * a.weight.row_bytes, a.num_threads)
    a.per_chunk = a.n if threads <= 1 else _per_chunk(a.weight.row_bytes)
    if threads <= 1:
        _row_update_chunk(a, 0, renorm, _v)
    else:
        _parallel(C_RENORM if renorm else C_OPTIMIZER, _vk(_v), _ik(_i), a,
                  _ceil_div(a.n, a.per_chunk), threads)
    return 0


cdef int _renorm(RowUpdateArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    return _row_updates(a, True, _v, _i)


cdef int _naive_renorm(RowUpdateArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(a.n):
        _renorm_row(_row(&a.weight, a.rows[r], _v), a.weight.d, a.max_norm, a.norm_type)
    return 0


cdef inline real_t _load(value_t x, real_t* _r) noexcept nogil:
    # a value in the arithmetic type real_t
    if real_t is float:
        return _to_float(x)
    else:
        return _to_double(x)


cdef inline real_t _decayed(real_t g, real_t w, real_t wd) noexcept nogil:
    # g + wd * w, the gradient's payload winning NaN + NaN
    return g if wd == 0.0 else _add(_mul(wd, w), g)


cdef void _opt_row(value_t* w, const value_t* g, real_t* state, Py_ssize_t d, int kind,
                   real_t lr, real_t eps, real_t wd) noexcept nogil:
    # one optimizer update of one row, in the arithmetic type real_t
    cdef Py_ssize_t j
    cdef real_t wj, gj, s, acc = 0.0, sq
    if kind == OPT_ROWWISE_ADAGRAD and d > 0:
        for j in range(d):
            gj = _decayed(_load(g[j], &lr), _load(w[j], &lr), wd)
            sq = _mul(gj, gj)
            acc = sq if j == 0 else _add(acc, sq)     # the square's payload wins, as np.add.at
        state[0] = _add(_div(acc, <real_t>d), state[0])   # state + mean, state first
    for j in range(d):
        wj = _load(w[j], &lr)
        gj = _decayed(_load(g[j], &lr), wj, wd)
        if kind == OPT_SGD:
            wj = _sub(wj, _mul(lr, gj))
        else:
            if kind == OPT_ADAGRAD:
                state[j] = _add(_mul(gj, gj), state[j])
                s = state[j]
            else:
                s = state[0]
            wj = _sub(wj, _div(_mul(lr, gj), _add(eps, _sqrt(s))))
        w[j] = _from_real(wj, w)


cdef inline void _opt_update(RowUpdateArgs* a, Py_ssize_t r, value_t* _v) noexcept nogil:
    cdef Py_ssize_t srow = a.rows[r] * (a.weight.d if a.kind == OPT_ADAGRAD else 1)
    cdef value_t* w = _row(&a.weight, a.rows[r], _v)
    cdef const value_t* g = _row(&a.values, r, _v)
    if value_t is double:
        _opt_row(w, g, NULL if a.state == NULL else <double*>a.state + srow, a.weight.d,
                 a.kind, a.lr, a.eps, a.weight_decay)
    else:
        _opt_row(w, g, NULL if a.state == NULL else <float*>a.state + srow, a.weight.d,
                 a.kind, <float>a.lr, <float>a.eps, <float>a.weight_decay)


cdef int _optimizer(RowUpdateArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    return _row_updates(a, False, _v, _i)


cdef int _naive_optimizer(RowUpdateArgs* a, value_t* _v, index_t* _i) noexcept nogil:
    # element by element in float64 or float32, the formulas written out
    cdef Py_ssize_t r, j, d = a.weight.d
    cdef value_t* w
    cdef const value_t* g
    cdef double w64, g64, s64, acc64, lr64 = a.lr, eps64 = a.eps, wd64 = a.weight_decay
    cdef float w32, g32, s32, acc32, lr32 = <float>a.lr, eps32 = <float>a.eps
    cdef float wd32 = <float>a.weight_decay
    cdef double* st64 = <double*>a.state
    cdef float* st32 = <float*>a.state
    cdef Py_ssize_t srow
    for r in range(a.n):
        w = _row(&a.weight, a.rows[r], _v)
        g = _row(&a.values, r, _v)
        srow = a.rows[r] if a.kind == OPT_ROWWISE_ADAGRAD else a.rows[r] * d
        if a.kind == OPT_ROWWISE_ADAGRAD and d > 0:
            acc64 = 0.0
            acc32 = 0.0
            for j in range(d):
                if value_t is double:
                    g64 = g[j] if wd64 == 0.0 else fe_addd(fe_muld(wd64, w[j]), g[j])
                    acc64 = fe_muld(g64, g64) if j == 0 else fe_addd(acc64, fe_muld(g64, g64))
                else:
                    g32 = _to_float(g[j]) if wd32 == 0.0 else fe_addf(fe_mulf(wd32, _to_float(w[j])), _to_float(g[j]))
                    acc32 = fe_mulf(g32, g32) if j == 0 else fe_addf(acc32, fe_mulf(g32, g32))
            if value_t is double:
                st64[srow] = fe_addd(fe_divd(acc64, <double>d), st64[srow])
            else:
                st32[srow] = fe_addf(fe_divf(acc32, <float>d), st32[srow])
        for j in range(d):
            if value_t is double:
                w64 = w[j]
                g64 = g[j] if wd64 == 0.0 else fe_addd(fe_muld(wd64, w64), g[j])
                if a.kind == OPT_SGD:
                    w64 = fe_subd(w64, fe_muld(lr64, g64))
                else:
                    if a.kind == OPT_ADAGRAD:
                        st64[srow + j] = fe_addd(fe_muld(g64, g64), st64[srow + j])
                        s64 = st64[srow + j]
                    else:
                        s64 = st64[srow]
                    w64 = fe_subd(w64, fe_divd(fe_muld(lr64, g64), fe_addd(eps64, sqrt(s64))))
                w[j] = w64
            else:
                w32 = _to_float(w[j])
                g32 = _to_float(g[j]) if wd32 == 0.0 else fe_addf(fe_mulf(wd32, w32), _to_float(g[j]))
                if a.kind == OPT_SGD:
                    w32 = fe_subf(w32, fe_mulf(lr32, g32))
                else:
                    if a.kind == OPT_ADAGRAD:
                        st32[srow + j] = fe_addf(fe_mulf(g32, g32), st32[srow + j])
                        s32 = st32[srow + j]
                    else:
                        s32 = st32[srow]
                    w32 = fe_subf(w32, fe_divf(fe_mulf(lr32, g32), fe_addf(eps32, sqrtf(s32))))
                w[j] = _from_real(w32, _v)
    return 0


# --------------------------------------------------------------------------
# the dispatcher: the one place where a dtype becomes a C type

# every kernel with a naive twin is followed by it: twin = kernel + 1
cdef enum:
    K_BOUNDS
    K_GATHER
    K_NAIVE_GATHER
    K_SCATTER
    K_NAIVE_SCATTER
    K_BAG
    K_NAIVE_BAG
    K_BAG_BACKWARD
    K_NAIVE_BAG_BACKWARD
    K_MAX_BACKWARD
    K_NAIVE_MAX_BACKWARD
    K_RENORM
    K_NAIVE_RENORM
    K_OPTIMIZER
    K_NAIVE_OPTIMIZER
    # chunks of the parallel kernels, run by the engine (no twins)
    C_GATHER
    C_SCATTER_PART
    C_SCATTER_SPLIT
    C_SCATTER_DEFERRED
    C_SCATTER_BANDS
    C_BAG
    C_RENORM
    C_OPTIMIZER
    C_COPY
    C_BOUNDS


cdef int _typed(int kernel, void* args, Py_ssize_t chunk, value_t* _v,
                index_t* _i) noexcept nogil:
    if kernel == C_GATHER:
        _gather_chunk(<GatherArgs*>args, chunk, _i)
    elif kernel == C_SCATTER_PART:
        _scatter_worker(<ScatterArgs*>args, chunk, _v, _i)
    elif kernel == C_SCATTER_SPLIT:
        _scatter_split_part(<ScatterArgs*>args, chunk, _v, _i)
    elif kernel == C_SCATTER_DEFERRED:
        _scatter_deferred_lane(<ScatterArgs*>args, chunk, _v, _i)
    elif kernel == C_SCATTER_BANDS:
        _scatter_columns(<ScatterArgs*>args, (<ScatterArgs*>args).bands[chunk],
                         (<ScatterArgs*>args).bands[chunk + 1], _v, _i)
    elif kernel == C_BAG:
        _bag_chunk(<BagArgs*>args, chunk, _v, _i)
    elif kernel == C_RENORM:
        _row_update_chunk(<RowUpdateArgs*>args, chunk, True, _v)
    elif kernel == C_OPTIMIZER:
        _row_update_chunk(<RowUpdateArgs*>args, chunk, False, _v)
    elif kernel == C_COPY:
        _copy_chunk(<CopyArgs*>args, chunk)
    elif kernel == C_BOUNDS:
        _bounds_chunk(<BoundsArgs*>args, chunk, _i)
    elif kernel == K_BOUNDS:
        _first_out_of_range(<BoundsArgs*>args, _i)
    elif kernel == K_GATHER:
        _gather(<GatherArgs*>args, _i)
    elif kernel == K_NAIVE_GATHER:
        _naive_gather(<GatherArgs*>args, _i)
    elif kernel == K_SCATTER:
        return _scatter(<ScatterArgs*>args, _v, _i)
    elif kernel == K_NAIVE_SCATTER:
        return _naive_scatter(<ScatterArgs*>args, _v, _i)
    elif kernel == K_BAG:
        _bag(<BagArgs*>args, _v, _i)
    elif kernel == K_NAIVE_BAG:
        _naive_bag(<BagArgs*>args, _v, _i)
    elif kernel == K_BAG_BACKWARD:
        return _bag_backward(<BagBackwardArgs*>args, _v, _i)
    elif kernel == K_NAIVE_BAG_BACKWARD:
        return _naive_bag_backward(<BagBackwardArgs*>args, _v, _i)
    elif kernel == K_MAX_BACKWARD:
        return _max_backward(<BagBackwardArgs*>args, _v, _i)
    elif kernel == K_NAIVE_MAX_BACKWARD:
        return _naive_max_backward(<BagBackwardArgs*>args, _v, _i)
    elif kernel == K_RENORM:
        return _renorm(<RowUpdateArgs*>args, _v, _i)
    elif kernel == K_NAIVE_RENORM:
        return _naive_renorm(<RowUpdateArgs*>args, _v, _i)
    elif kernel == K_OPTIMIZER:
        return _optimizer(<RowUpdateArgs*>args, _v, _i)
    elif kernel == K_NAIVE_OPTIMIZER:
        return _naive_optimizer(<RowUpdateArgs*>args, _v, _i)
    return 0


cdef int _dispatch(int kernel, int vkind, int ikind, void* args,
                   Py_ssize_t chunk=-1) noexcept nogil:
    if _naive_kernels and K_GATHER <= kernel <= K_NAIVE_OPTIMIZER and (kernel - K_GATHER) % 2 == 0:
        kernel += 1
    if ikind == I_INT32:
        if vkind == V_FLOAT32:
            return _typed(kernel, args, chunk, <float*>NULL, <int32_t*>NULL)
        elif vkind == V_FLOAT64:
            return _typed(kernel, args, chunk, <double*>NULL, <int32_t*>NULL)
        elif vkind == V_FLOAT16:
            return _typed(kernel, args, chunk, <uint16_t*>NULL, <int32_t*>NULL)
        return _typed(kernel, args, chunk, <bf16_t*>NULL, <int32_t*>NULL)
    if vkind == V_FLOAT32:
        return _typed(kernel, args, chunk, <float*>NULL, <int64_t*>NULL)
    elif vkind == V_FLOAT64:
        return _typed(kernel, args, chunk, <double*>NULL, <int64_t*>NULL)
    elif vkind == V_FLOAT16:
        return _typed(kernel, args, chunk, <uint16_t*>NULL, <int64_t*>NULL)
    return _typed(kernel, args, chunk, <bf16_t*>NULL, <int64_t*>NULL)


# --------------------------------------------------------------------------
# a parallel job: the engine calls _run_chunk(job, c) for every chunk c, on
# whichever thread claimed it; the job names the chunk kernel and its types

ctypedef struct Job:
    int kernel
    int vkind
    int ikind
    void* args


cdef void _run_chunk(void* job, ptrdiff_t c) noexcept nogil:
    cdef Job* j = <Job*>job
    _dispatch(j.kernel, j.vkind, j.ikind, j.args, c)


cdef void _parallel(int kernel, int vkind, int ikind, void* args, Py_ssize_t nchunks,
                    int threads) noexcept nogil:
    cdef Job job
    job.kernel = kernel
    job.vkind = vkind
    job.ikind = ikind
    job.args = args
    if kernel == C_BOUNDS:
        fe_run_check(_run_chunk, &job, nchunks, 1 if _chunks_alone else threads)
    else:
        fe_run(_run_chunk, &job, nchunks, 1 if _chunks_alone else threads)


cdef inline int _vk(value_t* _v) noexcept nogil:
    if value_t is float:
        return V_FLOAT32
    elif value_t is double:
        return V_FLOAT64
    elif value_t is uint16_t:
        return V_FLOAT16
    return V_BFLOAT16


cdef inline int _ik(index_t* _i) noexcept nogil:
    return I_INT32 if index_t is int32_t else I_INT64


# --------------------------------------------------------------------------
# the Python entries: ndarrays in, one dispatched kernel call

cdef inline int _vkind(cnp.ndarray a) noexcept:
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT32:
        return V_FLOAT32
    if t == cnp.NPY_FLOAT64:
        return V_FLOAT64
    if t == cnp.NPY_FLOAT16:
        return V_FLOAT16
    return V_BFLOAT16  # the only other value dtype the operations let through


cdef inline int _ikind(cnp.ndarray a) noexcept:
    return I_INT32 if cnp.PyArray_ITEMSIZE(a) == 4 else I_INT64


cdef inline Rows _rows_of(cnp.ndarray a) noexcept:
    # a (n, d) array with contiguous rows
    cdef Rows r
    r.data = <char*>cnp.PyArray_DATA(a)
    r.n = cnp.PyArray_DIM(a, 0)
    r.d = cnp.PyArray_DIM(a, 1)
    r.row_bytes = r.d * cnp.PyArray_ITEMSIZE(a)
    r.stride = cnp.PyArray_STRIDE(a, 0)
    return r


cdef inline Indices _indices_of(cnp.ndarray a) noexcept:
    cdef Indices i
    i.data = cnp.PyArray_DATA(a)
    i.n = cnp.PyArray_SIZE(a)
    return i


cdef inline const void* _data_or_null(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _run(int kernel, int vkind, int ikind, void* args, str what) except -1:
    cdef int rc
    with nogil:
        rc = _dispatch(kernel, vkind, ikind, args)
    if rc != 0:
        raise MemoryError(f"{what}: could not allocate scratch memory")
    return 0


def first_out_of_range(cnp.ndarray indices,   # IN int32 or int64, contiguous
                       Py_ssize_t num_rows,
                       int num_threads=0):     # 0: the library default
    """Flat position of the first index outside [0, num_rows), or -1."""
    cdef BoundsArgs a
    a.idx = _indices_of(indices)
    a.num_rows = num_rows
    a.num_threads = num_threads
    _run(K_BOUNDS, V_FLOAT32, _ikind(indices), &a, "bounds")
    return a.first_bad


cdef GatherArgs _gather_args(cnp.ndarray weight, cnp.ndarray indices, cnp.ndarray out,
                             int num_threads):
    cdef GatherArgs a
    memset(&a, 0, sizeof(GatherArgs))
    a.weight = _rows_of(weight)
    a.idx = _indices_of(indices)
    a.out = _rows_of(out)
    a.num_threads = num_threads
    return a


def gather_rows(cnp.ndarray weight,   # IN (T, d), rows contiguous, any dtype
                cnp.ndarray indices,  # IN (n,) int32 or int64, contiguous
                cnp.ndarray out,      # OUT (n, d), C-contiguous
                int num_threads):     # 0: the library default
    cdef GatherArgs a = _gather_args(weight, indices, out, num_threads)
    _run(K_GATHER, V_FLOAT32, _ikind(indices), &a, "gather")


def naive_gather_rows(cnp.ndarray weight, cnp.ndarray indices, cnp.ndarray out):
    cdef GatherArgs a = _gather_args(weight, indices, out, 1)
    _run(K_NAIVE_GATHER, V_FLOAT32, _ikind(indices), &a, "gather")


cdef ScatterArgs _scatter_args(cnp.ndarray grad_weight, cnp.ndarray indices, cnp.ndarray grad,
                               Py_ssize_t padding_idx, bint scale_by_freq, int num_threads):
    cdef ScatterArgs a
    a.table = _rows_of(grad_weight)
    a.idx = _indices_of(indices)
    a.grad = _rows_of(grad)
    a.padding_idx = padding_idx
    a.scale_by_freq = scale_by_freq
    a.src_rows = NULL
    a.scales = NULL
    a.num_threads = num_threads
    return a


def scatter_add_rows(cnp.ndarray grad_weight,  # INOUT (T, d), C-contiguous
                     cnp.ndarray indices,      # IN (n,) int32 or int64, contiguous
                     cnp.ndarray grad,         # IN (n, d), rows contiguous
                     Py_ssize_t padding_idx,   # -1 for none
                     bint scale_by_freq,       # each update times 1 / count of its index
                     int num_threads):         # 0: the library default
    cdef ScatterArgs a = _scatter_args(grad_weight, indices, grad, padding_idx, scale_by_freq,
                                       num_threads)
    _run(K_SCATTER, _vkind(grad_weight), _ikind(indices), &a, "scatter_add")


def naive_scatter_add_rows(cnp.ndarray grad_weight, cnp.ndarray indices, cnp.ndarray grad,
                           Py_ssize_t padding_idx, bint scale_by_freq):
    cdef ScatterArgs a = _scatter_args(grad_weight, indices, grad, padding_idx, scale_by_freq, 1)
    _run(K_NAIVE_SCATTER, _vkind(grad_weight), _ikind(indices), &a, "scatter_add")


cdef BagArgs _bag_args(cnp.ndarray weight, cnp.ndarray indices, cnp.ndarray bounds,
                       cnp.ndarray out, int mode, object per_sample_weights,
                       object max_indices, Py_ssize_t padding_idx, int num_threads):
    cdef BagArgs a
    a.weight = _rows_of(weight)
    a.idx = _indices_of(indices)
    a.bounds = <const Py_ssize_t*>cnp.PyArray_DATA(bounds)
    a.out = _rows_of(out)
    a.mode = mode
    a.psw = _data_or_null(per_sample_weights)
    a.max_indices = <int64_t*>_data_or_null(max_indices)
    a.padding_idx = padding_idx
    a.num_threads = num_threads
    return a


def bag_rows(cnp.ndarray weight,       # IN (T, d), rows contiguous
             cnp.ndarray indices,      # IN (n,) int32 or int64, contiguous
             cnp.ndarray bounds,       # IN (B + 1,) intp: bag b is entries [bounds[b], bounds[b+1])
             cnp.ndarray out,          # OUT (B, d), C-contiguous
             int mode,                 # a BAG_MODES value
             object per_sample_weights,  # IN (n,) of the value dtype, contiguous, or None
             object max_indices,       # OUT (B, d) int64 for max, or None
             Py_ssize_t padding_idx,   # -1 for none
             int num_threads):
    cdef BagArgs a = _bag_args(weight, indices, bounds, out, mode, per_sample_weights,
                               max_indices, padding_idx, num_threads)
    _run(K_BAG, _vkind(weight), _ikind(indices), &a, "embedding_bag")



cdef BagBackwardArgs _bag_backward_args(cnp.ndarray grad_weight, cnp.ndarray grad,
                                        object indices, object bounds, int mode,
                                        object per_sample_weights, object weight,
                                        object grad_psw, object max_indices,
                                        Py_ssize_t padding_idx, int num_threads):
    cdef BagBackwardArgs a
    memset(&a, 0, sizeof(BagBackwardArgs))
    a.grad_weight = _rows_of(grad_weight)
    a.grad = _rows_of(grad)
    if indices is not None:
        a.idx = _indices_of(<cnp.ndarray>indices)
    a.bounds = <const Py_ssize_t*>_data_or_null(bounds)
    a.mode = mode
    a.psw = _data_or_null(per_sample_weights)
    if weight is not None:
        a.weight = _rows_of(<cnp.ndarray>weight)
    a.grad_psw = <void*>_data_or_null(grad_psw)
    a.max_indices = <const int64_t*>_data_or_null(max_indices)
    a.padding_idx = padding_idx
    a.num_threads = num_threads
    return a


def bag_backward_rows(cnp.ndarray grad_weight,  # INOUT (T, d), C-contiguous
                      cnp.ndarray grad,         # IN (B, d), rows contiguous
                      cnp.ndarray indices,      # IN (n,) int32 or int64, contiguous
                      cnp.ndarray bounds,       # IN (B + 1,) intp
                      int mode,                 # sum or mean
                      object per_sample_weights,  # IN (n,) of the value dtype, or None
                      object weight,            # IN (T, d) rows contiguous, when psw is given
                      object grad_psw,          # OUT (n,) of the value dtype, when psw is given
                      Py_ssize_t padding_idx,
                      int num_threads):
    cdef BagBackwardArgs a = _bag_backward_args(grad_weight, grad, indices, bounds, mode,
                                                per_sample_weights, weight, grad_psw, None,
                                                padding_idx, num_threads)
    _run(K_BAG_BACKWARD, _vkind(grad_weight), _ikind(indices), &a, "embedding_bag_backward")



def bag_max_backward_rows(cnp.ndarray grad_weight,  # INOUT (T, d), C-contiguous
                          cnp.ndarray grad,         # IN (B, d), C-contiguous
                          cnp.ndarray max_indices):  # IN (B, d) int64, C-contiguous
    cdef BagBackwardArgs a = _bag_backward_args(grad_weight, grad, None, None, BAG_MAX, None,
                                                None, None, max_indices, -1, 1)
    _run(K_MAX_BACKWARD, _vkind(grad_weight), I_INT64, &a, "embedding_bag_backward")



cdef RowUpdateArgs _row_update_args(cnp.ndarray weight, cnp.ndarray rows, int num_threads):
    cdef RowUpdateArgs a
    memset(&a, 0, sizeof(RowUpdateArgs))
    a.weight = _rows_of(weight)
    a.rows = <const int64_t*>cnp.PyArray_DATA(rows)
    a.n = cnp.PyArray_SIZE(rows)
    a.num_threads = num_threads
    return a


def renorm_rows(cnp.ndarray weight,  # INOUT (T, d), C-contiguous
                cnp.ndarray rows,    # IN (n,) int64, distinct, in range
                double max_norm, double norm_type, int num_threads):
    cdef RowUpdateArgs a = _row_update_args(weight, rows, num_threads)
    a.max_norm = max_norm
    a.norm_type = norm_type
    _run(K_RENORM, _vkind(weight), I_INT64, &a, "renorm_")



cdef RowUpdateArgs _optimizer_args(cnp.ndarray weight, cnp.ndarray rows, cnp.ndarray values,
                                   object state, int kind, double lr, double eps,
                                   double weight_decay, int num_threads):
    cdef RowUpdateArgs a = _row_update_args(weight, rows, num_threads)
    a.values = _rows_of(values)
    a.state = <void*>_data_or_null(state)
    a.kind = kind
    a.lr = lr
    a.eps = eps
    a.weight_decay = weight_decay
    return a


def optimizer_rows(cnp.ndarray weight,   # INOUT (T, d), C-contiguous
                   cnp.ndarray rows,     # IN (n,) int64, distinct, in range
                   cnp.ndarray values,   # IN (n, d) summed gradients, C-contiguous
                   object state,         # INOUT (T, d) or (T,) float32/float64, or None
                   int kind,             # an OPTIMIZERS value
                   double lr, double eps, double weight_decay, int num_threads):
    cdef RowUpdateArgs a = _optimizer_args(weight, rows, values, state, kind, lr, eps,
                                           weight_decay, num_threads)
    _run(K_OPTIMIZER, _vkind(weight), I_INT64, &a, "optimizer step")



# --------------------------------------------------------------------------
# the lean entry points
#
# The operations call these first when a call is the common simple case
# (plain ndarrays, 1-D int32/int64 indices, C-contiguous float arrays, no
# options, backend="auto", num_threads=None).  They only accept: any input
# they are not sure of, and any bad input, makes them return False having
# written nothing, and the full path then applies every rule and raises the
# precise error.  This keeps a tiny call at a fraction of a microsecond: no
# buffer acquisition, no Python attribute lookups.

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


# The lean entries call their kernels' specialisations directly rather than
# through _dispatch: the generic dispatch cost 100-170 more instructions per
# tiny call (callgrind, B=8 d=64: gather(out=) 1250 -> 1422 in the kernels),
# a measurable share of a 0.15 us call.

cdef inline bint _lean_gather(GatherArgs* a, BoundsArgs* b, index_t* _i) noexcept nogil:
    _first_out_of_range(b, _i)
    if b.first_bad >= 0:
        return False
    _gather(a, _i)
    return True


cdef inline int _lean_scatter(ScatterArgs* a, BoundsArgs* b, value_t* _v,
                              index_t* _i) noexcept nogil:
    _first_out_of_range(b, _i)
    if b.first_bad >= 0:
        return 0
    return _scatter(a, _v, _i)


def gather_lean(object weight, object indices, object out, int num_threads=0):
    """gather into out for the simple case; False (nothing written) if not applicable."""
    if _naive_kernels or not _lean_ok(weight, indices, out, out):
        return False
    cdef BoundsArgs b
    cdef GatherArgs a = _gather_args(<cnp.ndarray>weight, <cnp.ndarray>indices,
                                     <cnp.ndarray>out, num_threads)
    cdef bint done
    b.idx = a.idx
    b.num_rows = a.weight.n
    b.num_threads = num_threads
    with nogil:
        if cnp.PyArray_ITEMSIZE(<cnp.ndarray>indices) == 4:
            done = _lean_gather(&a, &b, <int32_t*>NULL)
        else:
            done = _lean_gather(&a, &b, <int64_t*>NULL)
    return done


def scatter_add_lean(object grad_weight, object indices, object grad, int num_threads=0):
    """scatter_add for the simple case; False (nothing written) if not applicable."""
    if _naive_kernels or not _lean_ok(grad_weight, indices, grad, grad_weight):
        return False
    cdef BoundsArgs b
    cdef ScatterArgs a = _scatter_args(<cnp.ndarray>grad_weight, <cnp.ndarray>indices,
                                       <cnp.ndarray>grad, -1, False, num_threads)
    cdef bint is32 = cnp.PyArray_ITEMSIZE(<cnp.ndarray>indices) == 4
    cdef int vk = _vkind(<cnp.ndarray>grad_weight)   # float16, float32 or float64 here
    cdef int rc
    b.idx = a.idx
    b.num_rows = a.table.n
    b.num_threads = num_threads
    with nogil:
        if vk == V_FLOAT32:
            rc = (_lean_scatter(&a, &b, <float*>NULL, <int32_t*>NULL) if is32
                  else _lean_scatter(&a, &b, <float*>NULL, <int64_t*>NULL))
        elif vk == V_FLOAT64:
            rc = (_lean_scatter(&a, &b, <double*>NULL, <int32_t*>NULL) if is32
                  else _lean_scatter(&a, &b, <double*>NULL, <int64_t*>NULL))
        else:
            rc = (_lean_scatter(&a, &b, <uint16_t*>NULL, <int32_t*>NULL) if is32
                  else _lean_scatter(&a, &b, <uint16_t*>NULL, <int64_t*>NULL))
    if rc != 0:
        raise MemoryError("scatter_add: could not allocate scratch memory")
    return b.first_bad < 0


ctypedef struct CopyArgs:
    const char* src
    char* dst
    Py_ssize_t nbytes
    Py_ssize_t per_chunk


cdef void _copy_chunk(CopyArgs* a, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t lo = c * a.per_chunk
    cdef Py_ssize_t hi = lo + a.per_chunk if lo + a.per_chunk < a.nbytes else a.nbytes
    memcpy(a.dst + lo, a.src + lo, hi - lo)


def copy_bytes(cnp.ndarray src, cnp.ndarray dst, int num_threads):
    """A streaming copy of src into dst (both C-contiguous, same size) on num_threads
    threads of the engine: the bandwidth ceiling that bench/ measures gather against."""
    cdef CopyArgs a
    a.src = <const char*>cnp.PyArray_DATA(src)
    a.dst = <char*>cnp.PyArray_DATA(dst)
    a.nbytes = cnp.PyArray_NBYTES(dst)
    a.per_chunk = 16 * CHUNK_BYTES
    with nogil:
        if num_threads <= 1:
            memcpy(a.dst, a.src, a.nbytes)
        else:
            _parallel(C_COPY, V_FLOAT32, I_INT64, &a, _ceil_div(a.nbytes, a.per_chunk), num_threads)


# --------------------------------------------------------------------------
# the process state, what this build and this CPU can do, test hooks

THREAD_SOURCES = ("cpus", "OMP_NUM_THREADS", "FASTEMBED_EXT_NUM_THREADS", "set_num_threads",
                  "threadpoolctl")


def set_default_threads(int n, str source):
    """The thread count for num_threads=None, and which setting it comes from
    (one of THREAD_SOURCES); set by _runtime.py."""
    fe_set_default_threads(n, THREAD_SOURCES.index(source))


def set_cpu_budget(int n):
    """The CPUs this process may use (affinity mask, cgroup quota); set by _runtime.py."""
    global fe_cpu_budget
    fe_cpu_budget = n if n > 0 else 1


def runnable_others():
    """Tasks other than this process's running ones that want a CPU now (Linux;
    else 0).  The kernels' thread counts use this reading for the next 10 ms."""
    return fe_runnable_others_now()


def default_threads():
    """(the thread count for num_threads=None, the setting it comes from)."""
    return fe_default_threads, THREAD_SOURCES[fe_threads_source]


def scatter_plan(cnp.ndarray grad_weight, cnp.ndarray indices, int num_threads,
                 Py_ssize_t source_rows=-1):
    """How scatter_add would run these updates: threads, parts, and the sample's
    largest part and distinct-row shares (percent).  With source_rows >= 0 the
    updates read that many gradient rows between them, as a bag backward's
    entries share their bag's row.  For diagnostics and tests."""
    cdef ScatterArgs a
    cdef Py_ssize_t parts = 1, largest = 0, distinct = 100
    cdef int threads = 1
    memset(&a, 0, sizeof(ScatterArgs))
    a.table = _rows_of(grad_weight)
    a.idx = _indices_of(indices)
    a.padding_idx = -1
    if source_rows >= 0:
        # the plan reads only whether source rows are shared, and how many
        a.grad.n = source_rows
        a.src_rows = &source_rows
    a.num_threads = num_threads
    threads = _scatter_threads(&a)
    if threads > 1:
        if _ikind(indices) == I_INT32:
            parts = _scatter_plan(&a, threads, &largest, &distinct, <int32_t*>NULL)
        else:
            parts = _scatter_plan(&a, threads, &largest, &distinct, <int64_t*>NULL)
        if parts <= 1:
            threads = 1
    return {"threads": threads, "parts": parts if threads > 1 else 1,
            "split": ("columns" if a.nbands > 1 else "position" if a.split else "rows")
                     if threads > 1 else None,
            "bands": [a.bands[p] for p in range(a.nbands + 1)]
                     if threads > 1 and a.nbands > 1 else None,
            "largest_part_percent": largest, "distinct_percent": distinct}


def fail_allocation(Py_ssize_t k):
    """Test hook: the k-th scratch allocation from now fails (0: none)."""
    global _fail_allocation_at
    _fail_allocation_at = k


def scatter_heuristics(bint on):
    """Test hook: with the plans' judgement off, every call with two or more
    threads and work above the parallel threshold runs threaded, whatever the
    load (and a scatter-add whatever its rows)."""
    global _scatter_heuristics
    _scatter_heuristics = on


def scatter_force_split(bint on):
    """Test hook: with the plan's judgement off, parts are split by position
    (on, the default) or by rows (off)."""
    global _scatter_force_split
    _scatter_force_split = on


def run_chunks_alone(bint on):
    """Test hook: every engine job runs its chunks in order on the calling
    thread (on), as when its helpers never start, or as planned (off)."""
    global _chunks_alone
    _chunks_alone = on


def scatter_force_columns(bint on):
    """Test hook: with the plan's judgement off, threads own bands of columns
    wherever the rows can be cut on 128-byte blocks (on), or parts are cut as
    scatter_force_split says (off, the default)."""
    global _scatter_force_columns
    _scatter_force_columns = on


def use_naive_kernels(bint on):
    """Test hook: every kernel runs as its naive serial twin (on) or as itself (off)."""
    global _naive_kernels
    _naive_kernels = on


def build_info():
    return {
        "engine": FE_ENGINE_NAME.decode("ascii"),
        "parallel": bool(fe_engine_parallel()),
        "cflags": FE_BUILD_CFLAGS.decode("ascii"),
        "max_threads": FE_MAX_THREADS,
        "chunk_bytes": CHUNK_BYTES,
        "parallel_min_bytes": PARALLEL_MIN_BYTES,
        "scatter_parallel_min_row_bytes": SCATTER_PARALLEL_MIN_ROW_BYTES,
        "scatter_parallel_min_bytes": SCATTER_PARALLEL_MIN_BYTES,
        "scatter_min_distinct_percent": SCATTER_MIN_DISTINCT,
        "scatter_min_table_rows_per_update": SCATTER_MIN_TABLE_TO_UPDATES,
        "scatter_rows_min_table_rows_per_streamed_row": SCATTER_ROWS_MIN_TABLE_TO_STREAMED,
        "scatter_long_row_bytes": SCATTER_LONG_ROW_BYTES,
        "scatter_min_band_bytes": SCATTER_MIN_BAND_BYTES,
        "scatter_band_align_bytes": SCATTER_BAND_ALIGN,
        "scatter_bands_min_distinct_percent": SCATTER_BANDS_MIN_DISTINCT,
    }


def engine_state():
    """The engine's workers started so far, the kernels' jobs run on the pool,
    the index checks' jobs run on it (counted apart, so that "jobs" says
    whether a kernel ran threaded), the jobs that ran alone because another
    thread's job held the pool, and the share of chunks its workers have been
    running lately (per mille)."""
    return {"workers": fe_engine_workers(), "jobs": fe_engine_jobs(),
            "check_jobs": fe_engine_check_jobs(),
            "jobs_alone": fe_engine_jobs_alone(),
            "helper_share_per_mille": fe_engine_helper_share()}


def cpu_features():
    return {
        "f16c": bool(fe_cpu_has_f16c()),
        "avx": bool(fe_cpu_has_avx2()) or bool(fe_cpu_has_f16c()),
        "avx2": bool(fe_cpu_has_avx2()),
        "avx512f": bool(fe_cpu_has_avx512f()),
    }


def prefetch_hint(hint=None):
    """The hint of the kernels' read prefetches, "t0" or "nta" (chosen at
    import from the CPU's vendor); with a hint, use it from now on."""
    if hint is not None:
        if hint not in ("t0", "nta"):
            raise ValueError(f"hint must be 't0' or 'nta', got {hint!r}")
        fe_set_prefetch_nta(hint == "nta")
    return "nta" if fe_get_prefetch_nta() else "t0"


def gather_stream_min_row_bytes():
    """The shortest rows a gather writes with streaming stores, once its
    output is 8 MiB or more: 512 bytes on AMD, 128 elsewhere (chosen at
    import from the CPU's vendor)."""
    return GATHER_STREAM_MIN_ROW_BYTES


def use_f16c(bint on):
    """Turn the F16C float16 path on (where the CPU has it) or off; returns the new state."""
    fe_set_use_f16c(on)
    return bool(fe_get_use_f16c())


def f16c_active():
    return bool(fe_get_use_f16c())


def use_avx2(bint on):
    """Turn the AVX2 bag kernels (bfloat16 sums and means) on (where the CPU has
    AVX2) or off, leaving their AVX builds; returns the new state."""
    fe_set_bag_avx2(on)
    return bool(fe_get_bag_avx2())


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

