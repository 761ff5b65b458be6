/*
 * Row adds for float32 and float64 with a pinned NaN rule.
 *
 * IEEE leaves open which payload survives when both operands of an add are
 * NaN; x86 returns the first source operand.  NumPy's np.add.at on rows keeps
 * the gradient's NaN (the second operand of dst + src), so the adds here put
 * the gradient first, in assembly, where the compiler cannot swap the operands
 * of what it treats as a commutative operation.  Everything else about the
 * add (rounding, -0.0, inf, subnormals) is plain IEEE and the same either way.
 *
 * The widest instruction set the CPU has is picked at run time (AVX-512F,
 * AVX, or the SSE2 that every x86-64 has); nothing here is compiled for the
 * build machine only.  Other architectures get a portable C loop that applies
 * the same NaN rule explicitly.
 */
#ifndef FE_ADD_H
#define FE_ADD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void (*fe_add_f32_fn)(float *, const float *, ptrdiff_t);
typedef void (*fe_add_f64_fn)(double *, const double *, ptrdiff_t);

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FE_X86_ASM 1
#include <immintrin.h>

/* r = s + d, with s (the gradient) as the first source */
static inline float fe_addf(float d, float s)
{
    __asm__("addss %1, %0" : "+x"(s) : "x"(d));
    return s;
}

static inline double fe_addd(double d, double s)
{
    __asm__("addsd %1, %0" : "+x"(s) : "x"(d));
    return s;
}

/* r = a * b, with a first: on NaN * NaN, a's payload (quieted) survives */
static inline float fe_mulf(float a, float b)
{
    __asm__("mulss %1, %0" : "+x"(a) : "x"(b));
    return a;
}

static inline double fe_muld(double a, double b)
{
    __asm__("mulsd %1, %0" : "+x"(a) : "x"(b));
    return a;
}

/* a - b and a / b, a first */
static inline float fe_subf(float a, float b)
{
    __asm__("subss %1, %0" : "+x"(a) : "x"(b));
    return a;
}

static inline double fe_subd(double a, double b)
{
    __asm__("subsd %1, %0" : "+x"(a) : "x"(b));
    return a;
}

static inline float fe_divf(float a, float b)
{
    __asm__("divss %1, %0" : "+x"(a) : "x"(b));
    return a;
}

static inline double fe_divd(double a, double b)
{
    __asm__("divsd %1, %0" : "+x"(a) : "x"(b));
    return a;
}

static void fe_add_row_f32_sse2(float *dst, const float *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m128 s = _mm_loadu_ps(src + j);
        __m128 d = _mm_loadu_ps(dst + j);
        __asm__("addps %1, %0" : "+x"(s) : "x"(d));
        _mm_storeu_ps(dst + j, s);
    }
    for (; j < n; j++) {
        dst[j] = fe_addf(dst[j], src[j]);
    }
}

static void fe_add_row_f64_sse2(double *dst, const double *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 2 <= n; j += 2) {
        __m128d s = _mm_loadu_pd(src + j);
        __m128d d = _mm_loadu_pd(dst + j);
        __asm__("addpd %1, %0" : "+x"(s) : "x"(d));
        _mm_storeu_pd(dst + j, s);
    }
    for (; j < n; j++) {
        dst[j] = fe_addd(dst[j], src[j]);
    }
}

__attribute__((target("avx")))
static void fe_add_row_f32_avx(float *dst, const float *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 s = _mm256_loadu_ps(src + j);
        __m256 d = _mm256_loadu_ps(dst + j);
        __m256 r;
        __asm__("vaddps %2, %1, %0" : "=x"(r) : "x"(s), "x"(d));
        _mm256_storeu_ps(dst + j, r);
    }
    for (; j < n; j++) {
        float s = src[j], d = dst[j], r;
        __asm__("vaddss %2, %1, %0" : "=x"(r) : "x"(s), "x"(d));
        dst[j] = r;
    }
}

__attribute__((target("avx")))
static void fe_add_row_f64_avx(double *dst, const double *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d s = _mm256_loadu_pd(src + j);
        __m256d d = _mm256_loadu_pd(dst + j);
        __m256d r;
        __asm__("vaddpd %2, %1, %0" : "=x"(r) : "x"(s), "x"(d));
        _mm256_storeu_pd(dst + j, r);
    }
    for (; j < n; j++) {
        double s = src[j], d = dst[j], r;
        __asm__("vaddsd %2, %1, %0" : "=x"(r) : "x"(s), "x"(d));
        dst[j] = r;
    }
}

__attribute__((target("avx512f")))
static void fe_add_row_f32_avx512(float *dst, const float *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 s = _mm512_loadu_ps(src + j);
        __m512 d = _mm512_loadu_ps(dst + j);
        __m512 r;
        __asm__("vaddps %2, %1, %0" : "=v"(r) : "v"(s), "v"(d));
        _mm512_storeu_ps(dst + j, r);
    }
    if (j < n) {
        /* the tail is masked: lanes past n are neither read nor written */
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1u);
        __m512 s = _mm512_maskz_loadu_ps(m, src + j);
        __m512 d = _mm512_maskz_loadu_ps(m, dst + j);
        __m512 r;
        __asm__("vaddps %2, %1, %0" : "=v"(r) : "v"(s), "v"(d));
        _mm512_mask_storeu_ps(dst + j, m, r);
    }
}

__attribute__((target("avx512f")))
static void fe_add_row_f64_avx512(double *dst, const double *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m512d s = _mm512_loadu_pd(src + j);
        __m512d d = _mm512_loadu_pd(dst + j);
        __m512d r;
        __asm__("vaddpd %2, %1, %0" : "=v"(r) : "v"(s), "v"(d));
        _mm512_storeu_pd(dst + j, r);
    }
    if (j < n) {
        __mmask8 m = (__mmask8)((1u << (n - j)) - 1u);
        __m512d s = _mm512_maskz_loadu_pd(m, src + j);
        __m512d d = _mm512_maskz_loadu_pd(m, dst + j);
        __m512d r;
        __asm__("vaddpd %2, %1, %0" : "=v"(r) : "v"(s), "v"(d));
        _mm512_mask_storeu_pd(dst + j, m, r);
    }
}

static int fe_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

static int fe_cpu_has_avx512f(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

static int fe_cpu_is_amd(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
}

static int fe_cpu_has(int level)
{
    __builtin_cpu_init();
    if (level >= 2) {
        return __builtin_cpu_supports("avx512f");
    }
    if (level == 1) {
        return __builtin_cpu_supports("avx");
    }
    return 1;
}

#else /* not x86-64 with a GNU-compatible compiler */
#define FE_X86_ASM 0

static inline float fe_quietf(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    b |= 0x00400000u;
    memcpy(&x, &b, sizeof b);
    return x;
}

static inline double fe_quietd(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    b |= 0x0008000000000000ull;
    memcpy(&x, &b, sizeof b);
    return x;
}

static inline float fe_addf(float d, float s)
{
    float r = d + s;
    if (r != r && s != s) {
        r = fe_quietf(s);
    } else if (r != r && d != d) {
        r = fe_quietf(d);
    }
    return r;
}

static inline double fe_addd(double d, double s)
{
    double r = d + s;
    if (r != r && s != s) {
        r = fe_quietd(s);
    } else if (r != r && d != d) {
        r = fe_quietd(d);
    }
    return r;
}

static inline float fe_mulf(float a, float b)
{
    float r = a * b;
    if (r != r && a != a) {
        r = fe_quietf(a);
    } else if (r != r && b != b) {
        r = fe_quietf(b);
    }
    return r;
}

static inline double fe_muld(double a, double b)
{
    double r = a * b;
    if (r != r && a != a) {
        r = fe_quietd(a);
    } else if (r != r && b != b) {
        r = fe_quietd(b);
    }
    return r;
}

#define FE_FIRST_NAN(T, Q, expr)                  \
    T r = (expr);                                  \
    if (r != r && a != a) {                        \
        r = Q(a);                                  \
    } else if (r != r && b != b) {                 \
        r = Q(b);                                  \
    }                                              \
    return r;

static inline float fe_subf(float a, float b) { FE_FIRST_NAN(float, fe_quietf, a - b) }
static inline double fe_subd(double a, double b) { FE_FIRST_NAN(double, fe_quietd, a - b) }
static inline float fe_divf(float a, float b) { FE_FIRST_NAN(float, fe_quietf, a / b) }
static inline double fe_divd(double a, double b) { FE_FIRST_NAN(double, fe_quietd, a / b) }

static void fe_add_row_f32_sse2(float *dst, const float *src, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        dst[j] = fe_addf(dst[j], src[j]);
    }
}

static void fe_add_row_f64_sse2(double *dst, const double *src, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        dst[j] = fe_addd(dst[j], src[j]);
    }
}

#define fe_add_row_f32_avx fe_add_row_f32_sse2
#define fe_add_row_f64_avx fe_add_row_f64_sse2
#define fe_add_row_f32_avx512 fe_add_row_f32_sse2
#define fe_add_row_f64_avx512 fe_add_row_f64_sse2

static int fe_cpu_has(int level) { return level == 0; }
static int fe_cpu_has_avx2(void) { return 0; }
static int fe_cpu_has_avx512f(void) { return 0; }
static int fe_cpu_is_amd(void) { return 0; }
#endif

/* 0 = baseline (SSE2 or portable C), 1 = AVX, 2 = AVX-512F */
static int fe_isa_level = 0;
static fe_add_f32_fn fe_add_row_f32 = fe_add_row_f32_sse2;
static fe_add_f64_fn fe_add_row_f64 = fe_add_row_f64_sse2;

/* Picks the widest level the CPU has, at most `cap`; returns the level in use. */
static int fe_set_isa_level(int cap)
{
    int level = 2;
    if (cap < level) {
        level = cap;
    }
    while (level > 0 && !fe_cpu_has(level)) {
        level--;
    }
    if (level < 0) {
        level = 0;
    }
    fe_isa_level = level;
    fe_add_row_f32 = level == 2 ? fe_add_row_f32_avx512
                   : level == 1 ? fe_add_row_f32_avx : fe_add_row_f32_sse2;
    fe_add_row_f64 = level == 2 ? fe_add_row_f64_avx512
                   : level == 1 ? fe_add_row_f64_avx : fe_add_row_f64_sse2;
    return level;
}

static int fe_get_isa_level(void) { return fe_isa_level; }

#endif /* FE_ADD_H */

/* ---- row copies for gather ------------------------------------------- */
#ifndef FE_COPY_H
#define FE_COPY_H

/*
 * A row copy specialised on the common widths: a constant-size memcpy is
 * inlined as a few vector moves, where a call into libc's memcpy costs more
 * than the copy itself on a 64-byte row (bench/: d=16 float32 went from
 * 0.92x to above np.take).
 */
static inline void fe_copy_row(char *dst, const char *src, size_t n)
{
    switch (n) {
    case 16: memcpy(dst, src, 16); return;
    case 32: memcpy(dst, src, 32); return;
    case 64: memcpy(dst, src, 64); return;
    case 128: memcpy(dst, src, 128); return;
    case 256: memcpy(dst, src, 128); memcpy(dst + 128, src + 128, 128); return;
    default: memcpy(dst, src, n); return;
    }
}

/*
 * Prefetches for reading take a hint chosen at run time (fe_set_prefetch_nta):
 * into every cache level (T0), or non-temporal (NTA) on AMD.  Bags and
 * gathers read rows ahead of use and touch them once.  On an Intel Xeon
 * (2 vCPUs, 2 MB L2, AVX-512), 1 thread, calls alternated in one process,
 * NTA took 1.33x / 3.21x / 1.88x the time of T0 for the float32 bag sums at
 * (T=1M d=64 20 per bag), (T=100k d=128 100 per bag), (T=1M d=256 4 per
 * bag), and 1.01-1.41x for gathers at T=200000 and 1M, d=64-768.  On an AMD
 * EPYC (2 vCPUs, AVX2), T0 took 1.19x the time of NTA for the d=64 bag sum in
 * one run, and was within the noise in another.  A read hint costs a
 * predictable branch on a global, beside a cache miss.
 */
static int fe_prefetch_nta = 0;
static void fe_set_prefetch_nta(int on) { fe_prefetch_nta = on != 0; }
static int fe_get_prefetch_nta(void) { return fe_prefetch_nta; }

#if defined(__GNUC__) || defined(__clang__)
#define FE_PREFETCH(p) \
    (fe_prefetch_nta ? __builtin_prefetch((p), 0, 0) : __builtin_prefetch((p), 0, 3))
#define FE_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
#else
#define FE_PREFETCH(p) ((void)0)
#define FE_PREFETCH_W(p) ((void)0)
#endif

/*
 * Every cache line of [p, p + bytes), for reading: a line every 64 bytes and
 * the line of the last byte, which is one more line when p does not start one
 * (NumPy's large arrays start 16 bytes into a line, and so do their rows).
 * bytes > 0; a constant bytes unrolls.
 */
static inline void fe_prefetch_span(const char *p, ptrdiff_t bytes)
{
    ptrdiff_t o;
    for (o = 0; o < bytes; o += 64) {
        FE_PREFETCH(p + o);
    }
    FE_PREFETCH(p + bytes - 1);
}

/*
 * A row copy with non-temporal stores, for a gather whose output is far larger
 * than the caches: an ordinary store first reads its line (read for
 * ownership), so writing `out` costs twice its size in memory traffic; a
 * streaming store writes it once.  dst must be 16-byte aligned and n a
 * multiple of 16 (fe_copy_row_stream_ok); SSE2, which every x86-64 has, or
 * wider stores where the CPU has them (fe_isa_level).  The stores are weakly
 * ordered: fe_stream_fence() after the last one, before anything says the
 * rows are written.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
static inline int fe_copy_row_stream_ok(const char *dst, size_t n)
{
    return ((uintptr_t)dst & 15u) == 0 && (n & 15u) == 0;
}
static inline __attribute__((always_inline)) void
fe_copy_row_stream_sse2(char *dst, const char *src, size_t n)
{
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + j));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + j + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + j + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(src + j + 48));
        _mm_stream_si128((__m128i *)(dst + j), a);
        _mm_stream_si128((__m128i *)(dst + j + 16), b);
        _mm_stream_si128((__m128i *)(dst + j + 32), c);
        _mm_stream_si128((__m128i *)(dst + j + 48), e);
    }
    for (; j < n; j += 16) {
        _mm_stream_si128((__m128i *)(dst + j), _mm_loadu_si128((const __m128i *)(src + j)));
    }
}

/* The same with the widest streaming store the CPU has: 16-byte stores up to
 * the first boundary of the store's width (NumPy's large arrays start 16
 * bytes into a line), whole-width stores, and a 16-byte tail. */
#define FE_COPY_ROW_STREAM_WIDE(name, isa, width, store)                             \
    static inline __attribute__((always_inline, target(isa))) void                   \
    name(char *dst, const char *src, size_t n)                                      \
    {                                                                               \
        size_t j = 0;                                                               \
        for (; j < n && ((uintptr_t)(dst + j) & (width - 1u)) != 0; j += 16) {      \
            _mm_stream_si128((__m128i *)(dst + j),                                  \
                             _mm_loadu_si128((const __m128i *)(src + j)));          \
        }                                                                           \
        for (; j + width <= n; j += width) {                                        \
            store;                                                                  \
        }                                                                           \
        for (; j < n; j += 16) {                                                    \
            _mm_stream_si128((__m128i *)(dst + j),                                  \
                             _mm_loadu_si128((const __m128i *)(src + j)));          \
        }                                                                           \
    }
FE_COPY_ROW_STREAM_WIDE(fe_copy_row_stream_avx, "avx", 32,
                        _mm256_stream_si256((__m256i *)(dst + j),
                                            _mm256_loadu_si256((const __m256i *)(src + j))))
FE_COPY_ROW_STREAM_WIDE(fe_copy_row_stream_avx512, "avx512f", 64,
                        _mm512_stream_si512((void *)(dst + j),
                                            _mm512_loadu_si512((const void *)(src + j))))

/*
 * A gather's rows lo..hi streamed into out (rows row_bytes apart), the first
 * `head` bytes of the row `dist` indices ahead prefetched: the whole loop
 * compiled for each store width, chosen by fe_isa_level once per range.  A
 * call per row to a wider copy lost 2-12% at rows of 128 and 256 bytes.
 * 1 thread, 65536 rows, T=200000 and 1M, alternated in one process on an
 * Intel Xeon, time with 16-byte stores / time with 64-byte ones: rows of
 * 256 B 1.04-1.05, 512 B 1.14-1.22, 1536 B 1.21-1.28, 3072 B 1.27-1.29 (2
 * threads at T=1M: 1.05, 1.19, 1.24, 1.27); 32-byte stores 1.04-1.25.  Rows
 * of 128 B gave 0.94-1.00 (three 16-byte stores to reach a line, one
 * 64-byte store, one 16-byte tail) and keep 16-byte stores.
 */
#define FE_STREAM_WIDE_MIN_ROW_BYTES 256
#define FE_GATHER_STREAM(name, attrs, copy, index_t)                                  \
    static attrs void name(char *out, const char *w, ptrdiff_t ws, const index_t *idx, \
                           ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t row_bytes,           \
                           ptrdiff_t head, ptrdiff_t dist)                            \
    {                                                                                 \
        ptrdiff_t k;                                                                  \
        for (k = lo; k < hi; k++) {                                                   \
            if (k < hi - dist) {                                                      \
                fe_prefetch_span(w + (ptrdiff_t)idx[k + dist] * ws, head);            \
            }                                                                         \
            copy(out + k * row_bytes, w + (ptrdiff_t)idx[k] * ws, (size_t)row_bytes); \
        }                                                                             \
    }
FE_GATHER_STREAM(fe_gather_stream_i32_sse2, , fe_copy_row_stream_sse2, int32_t)
FE_GATHER_STREAM(fe_gather_stream_i64_sse2, , fe_copy_row_stream_sse2, int64_t)
FE_GATHER_STREAM(fe_gather_stream_i32_avx, __attribute__((target("avx"))),
                 fe_copy_row_stream_avx, int32_t)
FE_GATHER_STREAM(fe_gather_stream_i64_avx, __attribute__((target("avx"))),
                 fe_copy_row_stream_avx, int64_t)
FE_GATHER_STREAM(fe_gather_stream_i32_avx512, __attribute__((target("avx512f"))),
                 fe_copy_row_stream_avx512, int32_t)
FE_GATHER_STREAM(fe_gather_stream_i64_avx512, __attribute__((target("avx512f"))),
                 fe_copy_row_stream_avx512, int64_t)

/* the width for this row length and the CPU (fe_set_isa_level) */
#define FE_GATHER_STREAM_DISPATCH(name, index_t)                                      \
    static void name(char *out, const char *w, ptrdiff_t ws, const index_t *idx,     \
                     ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t row_bytes,                \
                     ptrdiff_t head, ptrdiff_t dist)                                 \
    {                                                                                \
        if (row_bytes < FE_STREAM_WIDE_MIN_ROW_BYTES) {                              \
            name##_sse2(out, w, ws, idx, lo, hi, row_bytes, head, dist);             \
        } else if (fe_isa_level == 2) {                                              \
            name##_avx512(out, w, ws, idx, lo, hi, row_bytes, head, dist);           \
        } else if (fe_isa_level == 1) {                                              \
            name##_avx(out, w, ws, idx, lo, hi, row_bytes, head, dist);              \
        } else {                                                                     \
            name##_sse2(out, w, ws, idx, lo, hi, row_bytes, head, dist);             \
        }                                                                            \
    }
FE_GATHER_STREAM_DISPATCH(fe_gather_stream_i32, int32_t)
FE_GATHER_STREAM_DISPATCH(fe_gather_stream_i64, int64_t)
static inline void fe_stream_fence(void) { _mm_sfence(); }
#else
static inline int fe_copy_row_stream_ok(const char *dst, size_t n) { (void)dst; (void)n; return 0; }
/* no streaming stores here: the rows copied in order */
#define FE_GATHER_COPY_LOOP(name, index_t)                                            \
    static void name(char *out, const char *w, ptrdiff_t ws, const index_t *idx,     \
                     ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t row_bytes,                \
                     ptrdiff_t head, ptrdiff_t dist)                                 \
    {                                                                                \
        ptrdiff_t k;                                                                 \
        (void)head;                                                                  \
        (void)dist;                                                                  \
        for (k = lo; k < hi; k++) {                                                  \
            memcpy(out + k * row_bytes, w + (ptrdiff_t)idx[k] * ws, (size_t)row_bytes); \
        }                                                                            \
    }
FE_GATHER_COPY_LOOP(fe_gather_stream_i32, int32_t)
FE_GATHER_COPY_LOOP(fe_gather_stream_i64, int64_t)
static inline void fe_stream_fence(void) {}
#endif

#endif /* FE_COPY_H */
