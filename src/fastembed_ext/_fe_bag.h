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
 * path and the NumPy reference; the incoming row's NaN wins a NaN + NaN, and
 * the row's NaN a NaN * NaN, pinned in assembly as in _fe_add.h.  No FMA.
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
 * FE_BAG_SUM(NAME, T, INDEX_T, V, LANES, SET1, LOADU, MASKLOAD, STOREU, MASKSTORE, ADD, MUL)
 * defines: ptrdiff_t NAME(w, stride, idx, lo, hi, n, pad, psw, d, out)
 *   w, stride : the table and its row stride in bytes
 *   idx       : the flat indices (n of them); the bag is entries [lo, hi)
 *   pad       : entries equal to it are left out (-1: none)
 *   psw       : per-sample weights of the value type, or NULL
 *   out       : the bag's output row (d values), written once
 * Returns the entries that counted (for the mean).
 */
#define FE_BAG_SUM(NAME, T, INDEX_T, V, LANES, SETZERO, SET1, LOADU, MASKLOAD, STOREU,      \
                   MASKSTORE, MASKT, MASKFROM, ADD, MUL)                                       \
__attribute__((target("avx")))                                                                 \
static ptrdiff_t NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, ptrdiff_t lo,      \
                      ptrdiff_t hi, ptrdiff_t n, int64_t pad, const T *psw, ptrdiff_t d,      \
                      T *out)                                                                  \
{                                                                                              \
    const ptrdiff_t block = 8 * LANES;                                                         \
    enum { BLOCK_BYTES = 8 * LANES * (int)sizeof(T) };  /* a constant: the prefetches unroll */ \
    ptrdiff_t count = 0, j0, k;                                                                \
    for (k = lo; k < hi; k++) {                                                                \
        count += (int64_t)idx[k] != pad;                                                       \
    }                                                                                          \
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
                    a0 = ADD(MUL(LOADU(r + 0 * LANES), s), a0);                                \
                    a1 = ADD(MUL(LOADU(r + 1 * LANES), s), a1);                                \
                    a2 = ADD(MUL(LOADU(r + 2 * LANES), s), a2);                                \
                    a3 = ADD(MUL(LOADU(r + 3 * LANES), s), a3);                                \
                    a4 = ADD(MUL(LOADU(r + 4 * LANES), s), a4);                                \
                    a5 = ADD(MUL(LOADU(r + 5 * LANES), s), a5);                                \
                    a6 = ADD(MUL(LOADU(r + 6 * LANES), s), a6);                                \
                    a7 = ADD(MUL(LOADU(r + 7 * LANES), s), a7);                                \
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
                    a0 = ADD(LOADU(r + 0 * LANES), a0);                                        \
                    a1 = ADD(LOADU(r + 1 * LANES), a1);                                        \
                    a2 = ADD(LOADU(r + 2 * LANES), a2);                                        \
                    a3 = ADD(LOADU(r + 3 * LANES), a3);                                        \
                    a4 = ADD(LOADU(r + 4 * LANES), a4);                                        \
                    a5 = ADD(LOADU(r + 5 * LANES), a5);                                        \
                    a6 = ADD(LOADU(r + 6 * LANES), a6);                                        \
                    a7 = ADD(LOADU(r + 7 * LANES), a7);                                        \
                }                                                                              \
            }                                                                                  \
            STOREU(out + j0 + 0 * LANES, a0);                                                  \
            STOREU(out + j0 + 1 * LANES, a1);                                                  \
            STOREU(out + j0 + 2 * LANES, a2);                                                  \
            STOREU(out + j0 + 3 * LANES, a3);                                                  \
            STOREU(out + j0 + 4 * LANES, a4);                                                  \
            STOREU(out + j0 + 5 * LANES, a5);                                                  \
            STOREU(out + j0 + 6 * LANES, a6);                                                  \
            STOREU(out + j0 + 7 * LANES, a7);                                                  \
        } else {                                                                               \
            /* the last, partial block: one register at a time, the tail masked */            \
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
    return count;                                                                              \
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
               __m256i, fe_bag_mask32, fe_bag_addps, fe_bag_mulps)
#define FE_BAG_SUM_F64(NAME, INDEX_T)                                                        \
    FE_BAG_SUM(NAME, double, INDEX_T, __m256d, 4, _mm256_setzero_pd, _mm256_set1_pd,         \
               _mm256_loadu_pd, _mm256_maskload_pd, _mm256_storeu_pd, _mm256_maskstore_pd,   \
               __m256i, fe_bag_mask64, fe_bag_addpd, fe_bag_mulpd)

FE_BAG_SUM_F32(fe_bag_sum_f32_i32, int32_t)
FE_BAG_SUM_F32(fe_bag_sum_f32_i64, int64_t)
FE_BAG_SUM_F64(fe_bag_sum_f64_i32, int32_t)
FE_BAG_SUM_F64(fe_bag_sum_f64_i64, int64_t)
#define FE_HAVE_BAG_AVX 1

#else /* not x86-64: the generic kernel only */
#define FE_HAVE_BAG_AVX 0
#define FE_BAG_STUB(NAME, T, INDEX_T)                                                        \
    static ptrdiff_t NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, ptrdiff_t lo, \
                          ptrdiff_t hi, ptrdiff_t n, int64_t pad, const T *psw, ptrdiff_t d, \
                          T *out)                                                            \
    {                                                                                        \
        (void)w; (void)stride; (void)idx; (void)lo; (void)hi; (void)n; (void)pad;            \
        (void)psw; (void)d; (void)out;                                                       \
        return -1;                                                                           \
    }
FE_BAG_STUB(fe_bag_sum_f32_i32, float, int32_t)
FE_BAG_STUB(fe_bag_sum_f32_i64, float, int64_t)
FE_BAG_STUB(fe_bag_sum_f64_i32, double, int32_t)
FE_BAG_STUB(fe_bag_sum_f64_i64, double, int64_t)
#endif /* FE_X86_ASM */

#endif /* FE_BAG_H */
