/*
 * Bag sums in registers: out[j] = (+0.0) + row_0[j] + row_1[j] + ... over the
 * bag's entries in order (each row times its per-sample weight, the product
 * rounded first, when weights are given), for float32 and float64.
 *
 * FBGEMM's EmbeddingSpMDM technique: the sum of a block of the row (64
 * float32, 32 float64: eight AVX registers) stays in registers across the
 * bag's entries and is written once, and rows are prefetched PREFETCH
 * entries ahead.  The generic kernel read and wrote the output row once per
 * entry.  Every add is the same IEEE add in the same order as the generic
 * path and the NumPy reference.  No FMA.
 *
 * NaN payloads.  In the reference the incoming row's NaN wins a NaN + NaN,
 * and the row's NaN a NaN * NaN.  The whole blocks add each row straight
 * from memory into its accumulator (a load folded into the add: fewer
 * instructions per entry, so more entries in flight), which makes the
 * accumulator the first operand and lets its NaN win instead.  The two orders
 * give the same bits wherever the sum is not NaN (IEEE add and multiply
 * commute), and a NaN, once in a sum, stays.  So a block is checked once,
 * when its bag is done: one whose sum has a NaN lane is summed again in the
 * reference's operand order, pinned in assembly as in _fe_add.h.  At the
 * bag shapes of bench/test_layers.py, 1 thread, builds alternated in one
 * process, this took 0.97-0.98 of the time of the pinned order everywhere.
 *
 * AVX (checked at run time by the caller); other CPUs take the generic path.
 */
#ifndef FE_BAG_H
#define FE_BAG_H

#include <stddef.h>
#include <stdint.h>

#include "_fe_add.h"

#define FE_BAG_PREFETCH 16

#if FE_X86_ASM
#include <immintrin.h>

/* x + acc, x's NaN first (x is the first source operand).  The result is
   written over acc, the accumulator's own register: with a separate output
   the compiler copied every sum back and spilled a register per entry. */
__attribute__((target("avx")))
static inline __m256 fe_bag_addps(__m256 x, __m256 acc)
{
    __asm__("vaddps %0, %1, %0" : "+x"(acc) : "x"(x));
    return acc;
}
__attribute__((target("avx")))
static inline __m256d fe_bag_addpd(__m256d x, __m256d acc)
{
    __asm__("vaddpd %0, %1, %0" : "+x"(acc) : "x"(x));
    return acc;
}
/* x * s, x's NaN first, written over x */
__attribute__((target("avx")))
static inline __m256 fe_bag_mulps(__m256 x, __m256 s)
{
    __asm__("vmulps %1, %0, %0" : "+x"(x) : "x"(s));
    return x;
}
__attribute__((target("avx")))
static inline __m256d fe_bag_mulpd(__m256d x, __m256d s)
{
    __asm__("vmulpd %1, %0, %0" : "+x"(x) : "x"(s));
    return x;
}

/* whether any lane of eight registers is NaN */
__attribute__((target("avx")))
static inline int fe_bag_nan_ps(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4,
                                __m256 a5, __m256 a6, __m256 a7)
{
    __m256 u = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(a0, a0, _CMP_UNORD_Q),
                                         _mm256_cmp_ps(a1, a1, _CMP_UNORD_Q)),
                            _mm256_or_ps(_mm256_cmp_ps(a2, a2, _CMP_UNORD_Q),
                                         _mm256_cmp_ps(a3, a3, _CMP_UNORD_Q)));
    __m256 v = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(a4, a4, _CMP_UNORD_Q),
                                         _mm256_cmp_ps(a5, a5, _CMP_UNORD_Q)),
                            _mm256_or_ps(_mm256_cmp_ps(a6, a6, _CMP_UNORD_Q),
                                         _mm256_cmp_ps(a7, a7, _CMP_UNORD_Q)));
    return _mm256_movemask_ps(_mm256_or_ps(u, v)) != 0;
}
__attribute__((target("avx")))
static inline int fe_bag_nan_pd(__m256d a0, __m256d a1, __m256d a2, __m256d a3, __m256d a4,
                                __m256d a5, __m256d a6, __m256d a7)
{
    __m256d u = _mm256_or_pd(_mm256_or_pd(_mm256_cmp_pd(a0, a0, _CMP_UNORD_Q),
                                          _mm256_cmp_pd(a1, a1, _CMP_UNORD_Q)),
                             _mm256_or_pd(_mm256_cmp_pd(a2, a2, _CMP_UNORD_Q),
                                          _mm256_cmp_pd(a3, a3, _CMP_UNORD_Q)));
    __m256d v = _mm256_or_pd(_mm256_or_pd(_mm256_cmp_pd(a4, a4, _CMP_UNORD_Q),
                                          _mm256_cmp_pd(a5, a5, _CMP_UNORD_Q)),
                             _mm256_or_pd(_mm256_cmp_pd(a6, a6, _CMP_UNORD_Q),
                                          _mm256_cmp_pd(a7, a7, _CMP_UNORD_Q)));
    return _mm256_movemask_pd(_mm256_or_pd(u, v)) != 0;
}

/* every line of the bytes [off, off + bytes) of the row FE_BAG_PREFETCH entries
   ahead, where there is one (without the line of the last byte, a fifth of a
   256-byte block's lines were misses the loop waited for) */
#define FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, off, bytes)                               \
    do {                                                                                       \
        if ((k) + FE_BAG_PREFETCH < (n)) {                                                     \
            fe_prefetch_span((w) + (ptrdiff_t)(idx)[(k) + FE_BAG_PREFETCH] * (stride) + (off), \
                             (bytes));                                                         \
        }                                                                                      \
    } while (0)

/*
 * FE_BAG_SUM(NAME, T, INDEX_T, V, LANES, SETZERO, SET1, LOADU, MASKLOAD, STOREU, MASKSTORE,
 *            MASKT, MASKFROM, ADD, MUL, FAST_ADD, FAST_MUL, NAN_IN)
 * defines (inlined into FE_BAG_SUMS' loop): void NAME(w, stride, idx, lo, hi, n, pad, psw, d, out)
 *   w, stride : the table and its row stride in bytes
 *   idx       : the flat indices (n of them); the bag is entries [lo, hi)
 *   pad       : entries equal to it are left out (-1: none)
 *   psw       : per-sample weights of the value type, or NULL
 *   out       : the bag's output row (d values), written once
 * ADD and MUL take the row's NaN first; FAST_ADD(acc, x) and FAST_MUL(s, x)
 * are the plain intrinsics; NAN_IN(a0, ..., a7) says whether a lane is NaN.
 */
#define FE_BAG_SUM(NAME, T, INDEX_T, V, LANES, SETZERO, SET1, LOADU, MASKLOAD, STOREU,      \
                   MASKSTORE, MASKT, MASKFROM, ADD, MUL, FAST_ADD, FAST_MUL, NAN_IN)           \
__attribute__((target("avx"))) static inline __attribute__((always_inline)) void               \
NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, ptrdiff_t lo, ptrdiff_t hi,         \
     ptrdiff_t n, int64_t pad, const T *psw, ptrdiff_t d, T *out)                              \
{                                                                                              \
    const ptrdiff_t block = 8 * LANES;                                                         \
    enum { BLOCK_BYTES = 8 * LANES * (int)sizeof(T) };  /* a constant: the prefetches unroll */ \
    ptrdiff_t j0, k;                                                                           \
    for (j0 = 0; j0 < d; j0 += block) {                                                        \
        ptrdiff_t width = d - j0 < block ? d - j0 : block;                                     \
        if (width == block) {                                                                  \
            V a0 = SETZERO(), a1 = SETZERO(), a2 = SETZERO(), a3 = SETZERO();                  \
            V a4 = SETZERO(), a5 = SETZERO(), a6 = SETZERO(), a7 = SETZERO();                  \
            /* two loops, so that the weightless one needs no register for the weight          \
               and no accumulator is spilled */                                                \
            if (psw != NULL) {                                                                 \
                for (k = lo; k < hi; k++) {                                                    \
                    int64_t i = (int64_t)idx[k];                                               \
                    const T *r;                                                                \
                    V s;                                                                       \
                    FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * (ptrdiff_t)sizeof(T), BLOCK_BYTES); \
                    if (i == pad) {                                                            \
                        continue;                                                              \
                    }                                                                          \
                    r = (const T *)(w + i * stride) + j0;                                      \
                    s = SET1(psw[k]);                                                          \
                    a0 = FAST_ADD(a0, FAST_MUL(s, LOADU(r + 0 * LANES)));                      \
                    a1 = FAST_ADD(a1, FAST_MUL(s, LOADU(r + 1 * LANES)));                      \
                    a2 = FAST_ADD(a2, FAST_MUL(s, LOADU(r + 2 * LANES)));                      \
                    a3 = FAST_ADD(a3, FAST_MUL(s, LOADU(r + 3 * LANES)));                      \
                    a4 = FAST_ADD(a4, FAST_MUL(s, LOADU(r + 4 * LANES)));                      \
                    a5 = FAST_ADD(a5, FAST_MUL(s, LOADU(r + 5 * LANES)));                      \
                    a6 = FAST_ADD(a6, FAST_MUL(s, LOADU(r + 6 * LANES)));                      \
                    a7 = FAST_ADD(a7, FAST_MUL(s, LOADU(r + 7 * LANES)));                      \
                }                                                                              \
            } else {                                                                           \
                for (k = lo; k < hi; k++) {                                                    \
                    int64_t i = (int64_t)idx[k];                                               \
                    const T *r;                                                                \
                    FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * (ptrdiff_t)sizeof(T), BLOCK_BYTES); \
                    if (i == pad) {                                                            \
                        continue;                                                              \
                    }                                                                          \
                    r = (const T *)(w + i * stride) + j0;                                      \
                    a0 = FAST_ADD(a0, LOADU(r + 0 * LANES));                                   \
                    a1 = FAST_ADD(a1, LOADU(r + 1 * LANES));                                   \
                    a2 = FAST_ADD(a2, LOADU(r + 2 * LANES));                                   \
                    a3 = FAST_ADD(a3, LOADU(r + 3 * LANES));                                   \
                    a4 = FAST_ADD(a4, LOADU(r + 4 * LANES));                                   \
                    a5 = FAST_ADD(a5, LOADU(r + 5 * LANES));                                   \
                    a6 = FAST_ADD(a6, LOADU(r + 6 * LANES));                                   \
                    a7 = FAST_ADD(a7, LOADU(r + 7 * LANES));                                   \
                }                                                                              \
            }                                                                                  \
            if (!NAN_IN(a0, a1, a2, a3, a4, a5, a6, a7)) {                                     \
                STOREU(out + j0 + 0 * LANES, a0);                                              \
                STOREU(out + j0 + 1 * LANES, a1);                                              \
                STOREU(out + j0 + 2 * LANES, a2);                                              \
                STOREU(out + j0 + 3 * LANES, a3);                                              \
                STOREU(out + j0 + 4 * LANES, a4);                                              \
                STOREU(out + j0 + 5 * LANES, a5);                                              \
                STOREU(out + j0 + 6 * LANES, a6);                                              \
                STOREU(out + j0 + 7 * LANES, a7);                                              \
                continue;                                                                      \
            }                                                                                  \
            /* a NaN in the sum: its payload depends on the operand order, so the            \
               block is summed again below in the reference's order */                        \
        }                                                                                      \
        {                                                                                      \
            /* the last, partial block, and a block whose sum is NaN somewhere: one           \
               register at a time, each add and product with the row's NaN first,            \
               the tail masked */                                                              \
            ptrdiff_t v;                                                                       \
            for (v = 0; v < width; v += LANES) {                                               \
                ptrdiff_t m = width - v < LANES ? width - v : LANES;                           \
                MASKT mask = MASKFROM(m);                                                      \
                V a = SETZERO();                                                               \
                for (k = lo; k < hi; k++) {                                                    \
                    int64_t i = (int64_t)idx[k];                                               \
                    V x;                                                                       \
                    if (i == pad) {                                                            \
                        continue;                                                              \
                    }                                                                          \
                    x = MASKLOAD((const T *)(w + i * stride) + j0 + v, mask);                  \
                    a = ADD(psw != NULL ? MUL(x, SET1(psw[k])) : x, a);                        \
                }                                                                              \
                MASKSTORE(out + j0 + v, mask, a);                                              \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

/*
 * FE_BAG_SUMS(NAME, BAG, T, INDEX_T) defines:
 *   void NAME(w, stride, idx, bounds, b_lo, b_hi, n, pad, psw, d, out, out_stride, mean)
 * the bags b_lo .. b_hi - 1 (bag b is entries [bounds[b], bounds[b + 1])) by BAG,
 * bag b written to the row out + b * out_stride, and divided by its count when
 * mean is set and the count is not 0 (an IEEE division per lane, as the
 * reference's).  One call for the range, the bag kernel inlined in its loop.
 */
#define FE_BAG_SUMS(NAME, BAG, T, INDEX_T)                                                     \
__attribute__((target("avx")))                                                                 \
static void NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, const ptrdiff_t *bounds, \
                 ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n, int64_t pad, const T *psw,      \
                 ptrdiff_t d, char *out, ptrdiff_t out_stride, int mean)                       \
{                                                                                              \
    ptrdiff_t b, j;                                                                            \
    for (b = b_lo; b < b_hi; b++) {                                                            \
        T *row = (T *)(out + b * out_stride);                                                  \
        ptrdiff_t lo = bounds[b], hi = bounds[b + 1], count = hi - lo, k;                      \
        BAG(w, stride, idx, lo, hi, n, pad, psw, d, row);                                      \
        if (mean && pad >= 0) {                                                                \
            for (k = lo; k < hi; k++) {                                                        \
                count -= (int64_t)idx[k] == pad;                                               \
            }                                                                                  \
        }                                                                                      \
        if (mean && count > 0) {                                                               \
            T c = (T)count;                                                                    \
            for (j = 0; j < d; j++) {                                                          \
                row[j] = row[j] / c;                                                           \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

/* lane masks for the partial block: the first m lanes (from a table: AVX has
   no 256-bit integer compare) */
static const int32_t fe_bag_mask32_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t fe_bag_mask64_table[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
__attribute__((target("avx")))
static inline __m256i fe_bag_mask32(ptrdiff_t m)
{
    return _mm256_loadu_si256((const __m256i *)(fe_bag_mask32_table + 8 - m));
}
__attribute__((target("avx")))
static inline __m256i fe_bag_mask64(ptrdiff_t m)
{
    return _mm256_loadu_si256((const __m256i *)(fe_bag_mask64_table + 4 - m));
}

#define FE_BAG_SUM_F32(NAME, INDEX_T)                                                        \
    FE_BAG_SUM(NAME, float, INDEX_T, __m256, 8, _mm256_setzero_ps, _mm256_set1_ps,           \
               _mm256_loadu_ps, _mm256_maskload_ps, _mm256_storeu_ps, _mm256_maskstore_ps,   \
               __m256i, fe_bag_mask32, fe_bag_addps, fe_bag_mulps, _mm256_add_ps,            \
               _mm256_mul_ps, fe_bag_nan_ps)
#define FE_BAG_SUM_F64(NAME, INDEX_T)                                                        \
    FE_BAG_SUM(NAME, double, INDEX_T, __m256d, 4, _mm256_setzero_pd, _mm256_set1_pd,         \
               _mm256_loadu_pd, _mm256_maskload_pd, _mm256_storeu_pd, _mm256_maskstore_pd,   \
               __m256i, fe_bag_mask64, fe_bag_addpd, fe_bag_mulpd, _mm256_add_pd,            \
               _mm256_mul_pd, fe_bag_nan_pd)

FE_BAG_SUM_F32(fe_bag_sum_f32_i32, int32_t)
FE_BAG_SUM_F32(fe_bag_sum_f32_i64, int64_t)
FE_BAG_SUM_F64(fe_bag_sum_f64_i32, int32_t)
FE_BAG_SUM_F64(fe_bag_sum_f64_i64, int64_t)
FE_BAG_SUMS(fe_bag_sums_f32_i32, fe_bag_sum_f32_i32, float, int32_t)
FE_BAG_SUMS(fe_bag_sums_f32_i64, fe_bag_sum_f32_i64, float, int64_t)
FE_BAG_SUMS(fe_bag_sums_f64_i32, fe_bag_sum_f64_i32, double, int32_t)
FE_BAG_SUMS(fe_bag_sums_f64_i64, fe_bag_sum_f64_i64, double, int64_t)
#define FE_HAVE_BAG_AVX 1

#else /* not x86-64: the generic kernel only */
#define FE_HAVE_BAG_AVX 0
#define FE_BAG_STUB(NAME, T, INDEX_T)                                                        \
    static void NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx,                    \
                     const ptrdiff_t *bounds, ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n,   \
                     int64_t pad, const T *psw, ptrdiff_t d, char *out, ptrdiff_t out_stride, \
                     int mean)                                                               \
    {                                                                                        \
        (void)w; (void)stride; (void)idx; (void)bounds; (void)b_lo; (void)b_hi; (void)n;     \
        (void)pad; (void)psw; (void)d; (void)out; (void)out_stride; (void)mean;              \
    }
FE_BAG_STUB(fe_bag_sums_f32_i32, float, int32_t)
FE_BAG_STUB(fe_bag_sums_f32_i64, float, int64_t)
FE_BAG_STUB(fe_bag_sums_f64_i32, double, int32_t)
FE_BAG_STUB(fe_bag_sums_f64_i64, double, int64_t)
#endif /* FE_X86_ASM */

#endif /* FE_BAG_H */
