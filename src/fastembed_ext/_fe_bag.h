/*
 * Bag sums in registers: out[j] = (+0.0) + row_0[j] + row_1[j] + ... over the
 * bag's entries in order (each row times its per-sample weight, the product
 * rounded first, when weights are given), for float32 and float64.
 *
 * FBGEMM's EmbeddingSpMDM technique: the sum of a block of the row (64
 * float32, 32 float64: eight AVX registers) stays in registers across the
 * bag's entries and is written once, and rows are prefetched a few entries
 * ahead (fe_bag_sum_prefetch_distance).  The generic kernel read and wrote
 * the output row once per entry.  Every add is the same IEEE add in the
 * same order as the generic path and the NumPy reference.  No FMA.
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
 * Further down, the same for bag maxima (FE_BAG_MAX), and both for the
 * 16-bit floats, float16 with F16C and bfloat16 (FE_HALF_BAG_SUMS,
 * FE_HALF_BAG_MAXES), each rounding as NumPy or ml_dtypes does.
 *
 * AVX (checked at run time by the caller), and for bfloat16 sums a second
 * build for AVX2 (fe_bag_use_avx2); other CPUs take the generic path.
 */
#ifndef FE_BAG_H
#define FE_BAG_H

#include <stddef.h>
#include <stdint.h>

#include "_fe_add.h"
#include "_fe_half.h"

#define FE_BAG_PREFETCH 16

/* whether the AVX2 builds run where the CPU has AVX2 (the tests turn it off
   to run the AVX builds on the same CPU) */
static int fe_bag_use_avx2 = 0;
static void fe_set_bag_avx2(int on) { fe_bag_use_avx2 = on ? fe_cpu_has_avx2() : 0; }
static int fe_get_bag_avx2(void) { return fe_bag_use_avx2; }

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

/* whether any lane of eight registers is NaN: fe_bag_nan_ps, fe_bag_nan_pd */
#define FE_BAG_NAN_IN(NAME, V, CMP, OR, MOVEMASK)                                              \
__attribute__((target("avx")))                                                                 \
static inline int NAME(V a0, V a1, V a2, V a3, V a4, V a5, V a6, V a7)                         \
{                                                                                              \
    V u = OR(OR(CMP(a0, a0, _CMP_UNORD_Q), CMP(a1, a1, _CMP_UNORD_Q)),                         \
             OR(CMP(a2, a2, _CMP_UNORD_Q), CMP(a3, a3, _CMP_UNORD_Q)));                        \
    V v = OR(OR(CMP(a4, a4, _CMP_UNORD_Q), CMP(a5, a5, _CMP_UNORD_Q)),                         \
             OR(CMP(a6, a6, _CMP_UNORD_Q), CMP(a7, a7, _CMP_UNORD_Q)));                        \
    return MOVEMASK(OR(u, v)) != 0;                                                            \
}
FE_BAG_NAN_IN(fe_bag_nan_ps, __m256, _mm256_cmp_ps, _mm256_or_ps, _mm256_movemask_ps)
FE_BAG_NAN_IN(fe_bag_nan_pd, __m256d, _mm256_cmp_pd, _mm256_or_pd, _mm256_movemask_pd)

/* every line of the bytes [off, off + bytes) of the row `dist` entries
   ahead, where there is one (without the line of the last byte, a fifth of a
   256-byte block's lines were misses the loop waited for) */
#define FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, off, bytes, dist)                         \
    do {                                                                                       \
        if ((k) + (dist) < (n)) {                                                              \
            fe_prefetch_span((w) + (ptrdiff_t)(idx)[(k) + (dist)] * (stride) + (off), (bytes)); \
        }                                                                                      \
    } while (0)

/*
 * How many entries ahead a bag sum prefetches (FE_BAG_PREFETCH for the other
 * kernels).  A row of several 256-byte blocks is summed block by block, each
 * block's pass over the bag prefetching that block of the rows `dist` entries
 * ahead.  In a short bag most of those entries belong to the bags after it,
 * whose pass reaches that block only about dist x blocks entries later, by
 * which time 16 ahead had fetched far too early.  So bags under 32 entries on
 * average prefetch about 32 block steps ahead: 32 / blocks entries, 4 to 8.
 * One block, or long bags, keep 16.  1 thread, float32 sums, calls with
 * either distance alternated in one process, time at 16 / time with this:
 * T=1M d=256 4 per bag 1.04-1.05 in five comparisons of six, 0.95 in one
 * (2 threads 1.10), d=128 4 per bag 1.02-1.08, T=300000 d=768 4 per bag
 * 1.32-1.37 (2 threads 1.18) and 20 per bag 1.06-1.07, T=100000 d=1024 10
 * per bag 1.16-1.19; float64 T=300000 d=384 4 per bag 1.21.  Long bags
 * lost with a short distance (d=256/768, 100 per bag: 0.92-0.94), and so did
 * the compare-heavy max kernels (d=128, 100 per bag: 0.77) and the float16
 * sums (d=1024, 10 per bag: 0.81).
 */
static inline ptrdiff_t fe_bag_sum_prefetch_distance(ptrdiff_t row_bytes, ptrdiff_t entries,
                                                     ptrdiff_t bags)
{
    ptrdiff_t blocks = (row_bytes + 255) / 256;
    ptrdiff_t dist;
    if (blocks <= 1 || bags <= 0 || entries >= 32 * bags) {
        return FE_BAG_PREFETCH;
    }
    dist = 32 / blocks;
    return dist < 4 ? 4 : dist > 8 ? 8 : dist;
}

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
     ptrdiff_t n, int64_t pad, const T *psw, ptrdiff_t d, T *out, ptrdiff_t dist)              \
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
                    FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * (ptrdiff_t)sizeof(T),         \
                                          BLOCK_BYTES, dist);                                  \
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
                    FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * (ptrdiff_t)sizeof(T),         \
                                          BLOCK_BYTES, dist);                                  \
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
    const ptrdiff_t dist = fe_bag_sum_prefetch_distance(d * (ptrdiff_t)sizeof(T),             \
                                                        bounds[b_hi] - bounds[b_lo], b_hi - b_lo); \
    for (b = b_lo; b < b_hi; b++) {                                                            \
        T *row = (T *)(out + b * out_stride);                                                  \
        ptrdiff_t lo = bounds[b], hi = bounds[b + 1], count = hi - lo, k;                      \
        BAG(w, stride, idx, lo, hi, n, pad, psw, d, row, dist);                                \
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

/* `first` = the bag [lo, hi)'s first entry that is not padding; where there
   is none (first == hi), the bag's d outputs are zeros and its max_indices -1 */
#define FE_BAG_FIRST_KEPT(first, idx, lo, hi, pad, row, mi, d)                                  \
    do {                                                                                       \
        ptrdiff_t t_;                                                                          \
        (first) = (lo);                                                                        \
        while ((first) < (hi) && (int64_t)(idx)[first] == (pad)) {                             \
            (first)++;                                                                         \
        }                                                                                      \
        if ((first) == (hi)) {                                                                 \
            for (t_ = 0; t_ < (d); t_++) {                                                     \
                (row)[t_] = 0;                                                                 \
                (mi)[t_] = -1;                                                                 \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/*
 * Bag maxima in registers: per column, the bag's first entry (padding left
 * out) starts the maximum and a later entry replaces it only if strictly
 * greater (an ordered compare: a NaN never replaces, a leading NaN stays, and
 * the first of equal values, -0.0 and +0.0 included, stays), each value
 * copied bit for bit; max_indices holds the winning entry's table row.  A
 * block of the row (32 float32, 16 float64: four registers) and, beside it,
 * the position in the bag of the entry that won each lane stay in registers
 * across the bag's entries, written once.  The generic path compared and
 * stored element by element, and ran about 9 times as long as a bag sum.
 *
 * FE_BAG_MAX(NAME, T, INDEX_T, POS_T, V, LANES, LOADU, MASKLOAD, STOREU, MASKSTORE,
 *            MASKT, MASKFROM, GT, BLEND, POS1, POS_STORE)
 * defines: int NAME(w, stride, idx, lo, hi, n, pad, d, out, max_indices)
 *   the bag of entries [lo, hi) into out (d values) and max_indices (d rows);
 *   returns 0, or -1 (nothing written) for a bag longer than POS_T counts.
 *   GT(x, v): the lanes where x > v, ordered; BLEND(v, x, m): x where m, else
 *   v; POS1(k): k in every lane's position; POS_STORE(p, v): a register of
 *   positions stored to p.
 */
#define FE_BAG_MAX(NAME, T, INDEX_T, POS_T, V, LANES, LOADU, MASKLOAD, STOREU, MASKSTORE,    \
                   MASKT, MASKFROM, GT, BLEND, POS1, POS_STORE)                                 \
__attribute__((target("avx"))) static inline __attribute__((always_inline)) int                \
NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, ptrdiff_t lo, ptrdiff_t hi,         \
     ptrdiff_t n, int64_t pad, ptrdiff_t d, T *out, int64_t *max_indices)                      \
{                                                                                              \
    enum { BLOCK = 4 * LANES, BLOCK_BYTES = 4 * LANES * (int)sizeof(T) };                      \
    POS_T pos[BLOCK];                                                                          \
    ptrdiff_t first, j0, k, t;                                                                 \
    if (sizeof(POS_T) < sizeof(int64_t) && hi - lo > INT32_MAX) {                              \
        return -1;                                                                             \
    }                                                                                          \
    FE_BAG_FIRST_KEPT(first, idx, lo, hi, pad, out, max_indices, d);                           \
    if (first == hi) {                                                                         \
        return 0;                                                                              \
    }                                                                                          \
    for (j0 = 0; j0 + BLOCK <= d; j0 += BLOCK) {                                               \
        const T *r = (const T *)(w + (ptrdiff_t)idx[first] * stride) + j0;                     \
        V v0 = LOADU(r), v1 = LOADU(r + LANES), v2 = LOADU(r + 2 * LANES);                     \
        V v3 = LOADU(r + 3 * LANES);                                                           \
        V p0 = POS1(first - lo), p1 = p0, p2 = p0, p3 = p0;                                    \
        for (k = first + 1; k < hi; k++) {                                                     \
            int64_t i = (int64_t)idx[k];                                                       \
            V x, m, pk;                                                                        \
            FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * (ptrdiff_t)sizeof(T), BLOCK_BYTES,  \
                                  FE_BAG_PREFETCH);                                            \
            if (i == pad) {                                                                    \
                continue;                                                                      \
            }                                                                                  \
            r = (const T *)(w + i * stride) + j0;                                              \
            pk = POS1(k - lo);                                                                 \
            x = LOADU(r);                                                                      \
            m = GT(x, v0); v0 = BLEND(v0, x, m); p0 = BLEND(p0, pk, m);                       \
            x = LOADU(r + LANES);                                                              \
            m = GT(x, v1); v1 = BLEND(v1, x, m); p1 = BLEND(p1, pk, m);                       \
            x = LOADU(r + 2 * LANES);                                                          \
            m = GT(x, v2); v2 = BLEND(v2, x, m); p2 = BLEND(p2, pk, m);                       \
            x = LOADU(r + 3 * LANES);                                                          \
            m = GT(x, v3); v3 = BLEND(v3, x, m); p3 = BLEND(p3, pk, m);                       \
        }                                                                                      \
        STOREU(out + j0, v0);                                                                  \
        STOREU(out + j0 + LANES, v1);                                                          \
        STOREU(out + j0 + 2 * LANES, v2);                                                      \
        STOREU(out + j0 + 3 * LANES, v3);                                                      \
        POS_STORE(pos, p0);                                                                    \
        POS_STORE(pos + LANES, p1);                                                            \
        POS_STORE(pos + 2 * LANES, p2);                                                        \
        POS_STORE(pos + 3 * LANES, p3);                                                        \
        for (t = 0; t < BLOCK; t++) {                                                          \
            max_indices[j0 + t] = (int64_t)idx[lo + pos[t]];                                   \
        }                                                                                      \
    }                                                                                          \
    for (; j0 < d; j0 += LANES) {                                                              \
        /* the last, partial block: one register at a time, the tail masked */                \
        ptrdiff_t width = d - j0 < LANES ? d - j0 : LANES;                                     \
        MASKT mask = MASKFROM(width);                                                          \
        V v = MASKLOAD((const T *)(w + (ptrdiff_t)idx[first] * stride) + j0, mask);           \
        V p = POS1(first - lo);                                                                \
        for (k = first + 1; k < hi; k++) {                                                     \
            int64_t i = (int64_t)idx[k];                                                       \
            V x, m;                                                                            \
            if (i == pad) {                                                                    \
                continue;                                                                      \
            }                                                                                  \
            x = MASKLOAD((const T *)(w + i * stride) + j0, mask);                              \
            m = GT(x, v);                                                                      \
            v = BLEND(v, x, m);                                                                \
            p = BLEND(p, POS1(k - lo), m);                                                     \
        }                                                                                      \
        MASKSTORE(out + j0, mask, v);                                                          \
        POS_STORE(pos, p);                                                                     \
        for (t = 0; t < width; t++) {                                                          \
            max_indices[j0 + t] = (int64_t)idx[lo + pos[t]];                                   \
        }                                                                                      \
    }                                                                                          \
    return 0;                                                                                  \
}

/*
 * FE_BAG_MAXES(NAME, BAG, T, INDEX_T) defines:
 *   int NAME(w, stride, idx, bounds, b_lo, b_hi, n, pad, d, out, out_stride, max_indices)
 * the bags b_lo .. b_hi - 1 by BAG, bag b's maxima to the row out + b * out_stride
 * and its max_indices to max_indices + b * d.  Returns the first bag it did
 * not write (b_hi when it wrote them all).
 */
#define FE_BAG_MAXES(NAME, BAG, T, INDEX_T)                                                    \
__attribute__((target("avx")))                                                                 \
static ptrdiff_t NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx,                    \
                      const ptrdiff_t *bounds, ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n,   \
                      int64_t pad, ptrdiff_t d, char *out, ptrdiff_t out_stride,              \
                      int64_t *max_indices)                                                    \
{                                                                                              \
    ptrdiff_t b;                                                                               \
    for (b = b_lo; b < b_hi; b++) {                                                            \
        if (BAG(w, stride, idx, bounds[b], bounds[b + 1], n, pad, d,                           \
                (T *)(out + b * out_stride), max_indices + b * d) != 0) {                     \
            return b;                                                                          \
        }                                                                                      \
    }                                                                                          \
    return b_hi;                                                                               \
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

/* max: the lanes' positions in the bag ride in the value registers (int32
   beside float32, int64 beside float64), blended with the same mask */
__attribute__((target("avx")))
static inline __m256 fe_bag_gt_ps(__m256 x, __m256 v)
{
    return _mm256_cmp_ps(x, v, _CMP_GT_OQ);
}
__attribute__((target("avx")))
static inline __m256d fe_bag_gt_pd(__m256d x, __m256d v)
{
    return _mm256_cmp_pd(x, v, _CMP_GT_OQ);
}
/* x where m, else v: vblendvps / vblendvpd, in assembly (the compiler turned
   the intrinsic on integer positions, without AVX2, into lane-by-lane
   scalar code) */
__attribute__((target("avx")))
static inline __m256 fe_bag_blend_ps(__m256 v, __m256 x, __m256 m)
{
    __asm__("vblendvps %2, %1, %0, %0" : "+x"(v) : "x"(x), "x"(m));
    return v;
}
__attribute__((target("avx")))
static inline __m256d fe_bag_blend_pd(__m256d v, __m256d x, __m256d m)
{
    __asm__("vblendvpd %2, %1, %0, %0" : "+x"(v) : "x"(x), "x"(m));
    return v;
}
__attribute__((target("avx")))
static inline __m256 fe_bag_pos1_ps(ptrdiff_t k)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)k));
}
__attribute__((target("avx")))
static inline __m256d fe_bag_pos1_pd(ptrdiff_t k)
{
    return _mm256_castsi256_pd(_mm256_set1_epi64x((int64_t)k));
}
__attribute__((target("avx")))
static inline void fe_bag_pos_store_ps(int32_t *p, __m256 v)
{
    _mm256_storeu_si256((__m256i *)p, _mm256_castps_si256(v));
}
__attribute__((target("avx")))
static inline void fe_bag_pos_store_pd(int64_t *p, __m256d v)
{
    _mm256_storeu_si256((__m256i *)p, _mm256_castpd_si256(v));
}
#define FE_BAG_MAX_F32(NAME, INDEX_T)                                                        \
    FE_BAG_MAX(NAME, float, INDEX_T, int32_t, __m256, 8, _mm256_loadu_ps, _mm256_maskload_ps, \
               _mm256_storeu_ps, _mm256_maskstore_ps, __m256i, fe_bag_mask32, fe_bag_gt_ps,   \
               fe_bag_blend_ps, fe_bag_pos1_ps, fe_bag_pos_store_ps)
#define FE_BAG_MAX_F64(NAME, INDEX_T)                                                        \
    FE_BAG_MAX(NAME, double, INDEX_T, int64_t, __m256d, 4, _mm256_loadu_pd,                  \
               _mm256_maskload_pd, _mm256_storeu_pd, _mm256_maskstore_pd, __m256i,            \
               fe_bag_mask64, fe_bag_gt_pd, fe_bag_blend_pd, fe_bag_pos1_pd,                  \
               fe_bag_pos_store_pd)
FE_BAG_MAX_F32(fe_bag_max_f32_i32, int32_t)
FE_BAG_MAX_F32(fe_bag_max_f32_i64, int64_t)
FE_BAG_MAX_F64(fe_bag_max_f64_i32, int32_t)
FE_BAG_MAX_F64(fe_bag_max_f64_i64, int64_t)
FE_BAG_MAXES(fe_bag_maxes_f32_i32, fe_bag_max_f32_i32, float, int32_t)
FE_BAG_MAXES(fe_bag_maxes_f32_i64, fe_bag_max_f32_i64, float, int64_t)
FE_BAG_MAXES(fe_bag_maxes_f64_i32, fe_bag_max_f64_i32, double, int32_t)
FE_BAG_MAXES(fe_bag_maxes_f64_i64, fe_bag_max_f64_i64, double, int64_t)

/*
 * float16 bag sums in registers (AVX and F16C, checked at run time by the
 * caller).  NumPy adds float16 by converting both operands to float32,
 * adding, and rounding back to float16 after every add; so each accumulator
 * holds float16 values widened to float32 and is rounded (vcvtps2ph, to
 * nearest even, then back) after every add, the add pinned with the row's
 * NaN first (fe_bag_addps).  The hardware conversions give NumPy's bits on
 * every value an add, a product or a division can produce (_fe_half.h).  A
 * weighted entry is the row times its weight, rounded to float16 first; a
 * mean divides the float16 sum, widened, by the count in float32 and rounds
 * once.  The generic path added each entry into the output row in memory, a
 * conversion there and back per entry: 2.5 times as long as a float32 bag.
 */
__attribute__((target("avx,f16c")))
static inline __m256 fe_half_round_ps(__m256 x)
{
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

/* the lanes [j, j + m) of a float16 row widened (m < 8: through a buffer, the
   rest zeros) */
__attribute__((target("avx,f16c")))
static inline __m256 fe_half_load8(const uint16_t *p, ptrdiff_t m)
{
    uint16_t b[8] = {0};
    if (m == 8) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    }
    memcpy(b, p, (size_t)m * sizeof(uint16_t));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b));
}

/* 8 raw values (m of them) into p */
__attribute__((target("avx")))
static inline void fe_half_put8(uint16_t *p, __m128i h, ptrdiff_t m)
{
    uint16_t b[8];
    if (m == 8) {
        _mm_storeu_si128((__m128i *)p, h);
        return;
    }
    _mm_storeu_si128((__m128i *)b, h);
    memcpy(p, b, (size_t)m * sizeof(uint16_t));
}
__attribute__((target("avx,f16c")))
static inline void fe_half_store8(uint16_t *p, __m256 x, ptrdiff_t m)
{
    fe_half_put8(p, _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT), m);
}

/* acc + the entry's lanes (times s when weighted), each step rounded */
#define FE_HALF_BAG_STEP(acc, x, s, weighted, ROUND)                                           \
    ROUND(fe_bag_addps((weighted) ? ROUND(fe_bag_mulps((x), (s))) : (x), (acc)))

/*
 * FE_HALF_BAG_SUMS(NAME, INDEX_T, TGT, LOAD8, ROUND, STORE8, TO_FLOAT) defines:
 *   void NAME(w, stride, idx, bounds, b_lo, b_hi, n, pad, psw, d, out, out_stride, mean)
 * as FE_BAG_SUMS for a 16-bit float (psw: weights of that type, or NULL),
 * compiled for the target TGT.  LOAD8(p, m) widens m (8 or fewer) values to
 * float32, ROUND rounds float32 lanes to the type and widens them back,
 * STORE8(p, x, m) rounds and stores m lanes, TO_FLOAT widens one value.  A
 * block is 64 lanes (eight registers, 128 bytes of each row).
 */
#define FE_HALF_BAG_SUMS(NAME, INDEX_T, TGT, LOAD8, ROUND, STORE8, TO_FLOAT)                   \
__attribute__((target(TGT))) static inline __attribute__((always_inline)) void                 \
NAME##_bags(const char *w, ptrdiff_t stride, const INDEX_T *idx, const ptrdiff_t *bounds,      \
            ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n, int64_t pad, const uint16_t *psw,     \
            ptrdiff_t d, char *out, ptrdiff_t out_stride, int mean)                            \
{                                                                                              \
    ptrdiff_t b, j0, k, v;                                                                     \
    const int weighted = psw != NULL;   /* a constant where NAME calls it */                  \
    for (b = b_lo; b < b_hi; b++) {                                                            \
        uint16_t *row = (uint16_t *)(out + b * out_stride);                                    \
        ptrdiff_t lo = bounds[b], hi = bounds[b + 1], count = hi - lo;                         \
        __m256 c;                                                                              \
        if (mean && pad >= 0) {                                                                \
            for (k = lo; k < hi; k++) {                                                        \
                count -= (int64_t)idx[k] == pad;                                               \
            }                                                                                  \
        }                                                                                      \
        c = _mm256_set1_ps((float)count);                                                      \
        for (j0 = 0; j0 < d; j0 += 64) {                                                       \
            if (d - j0 >= 64) {                                                                \
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                    \
                __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;                                     \
                for (k = lo; k < hi; k++) {                                                    \
                    int64_t i = (int64_t)idx[k];                                               \
                    const uint16_t *r;                                                         \
                    __m256 s = _mm256_setzero_ps();                                            \
                    FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * 2, 128, FE_BAG_PREFETCH); \
                    if (i == pad) {                                                            \
                        continue;                                                              \
                    }                                                                          \
                    r = (const uint16_t *)(w + i * stride) + j0;                               \
                    if (weighted) {                                                            \
                        s = _mm256_set1_ps(TO_FLOAT(psw[k]));                          \
                    }                                                                          \
                    a0 = FE_HALF_BAG_STEP(a0, LOAD8(r, 8), s, weighted, ROUND);              \
                    a1 = FE_HALF_BAG_STEP(a1, LOAD8(r + 8, 8), s, weighted, ROUND);          \
                    a2 = FE_HALF_BAG_STEP(a2, LOAD8(r + 16, 8), s, weighted, ROUND);         \
                    a3 = FE_HALF_BAG_STEP(a3, LOAD8(r + 24, 8), s, weighted, ROUND);         \
                    a4 = FE_HALF_BAG_STEP(a4, LOAD8(r + 32, 8), s, weighted, ROUND);         \
                    a5 = FE_HALF_BAG_STEP(a5, LOAD8(r + 40, 8), s, weighted, ROUND);         \
                    a6 = FE_HALF_BAG_STEP(a6, LOAD8(r + 48, 8), s, weighted, ROUND);         \
                    a7 = FE_HALF_BAG_STEP(a7, LOAD8(r + 56, 8), s, weighted, ROUND);         \
                }                                                                              \
                if (mean && count > 0) {                                                       \
                    a0 = _mm256_div_ps(a0, c); a1 = _mm256_div_ps(a1, c);                      \
                    a2 = _mm256_div_ps(a2, c); a3 = _mm256_div_ps(a3, c);                      \
                    a4 = _mm256_div_ps(a4, c); a5 = _mm256_div_ps(a5, c);                      \
                    a6 = _mm256_div_ps(a6, c); a7 = _mm256_div_ps(a7, c);                      \
                }                                                                              \
                STORE8(row + j0, a0, 8);                                               \
                STORE8(row + j0 + 8, a1, 8);                                           \
                STORE8(row + j0 + 16, a2, 8);                                          \
                STORE8(row + j0 + 24, a3, 8);                                          \
                STORE8(row + j0 + 32, a4, 8);                                          \
                STORE8(row + j0 + 40, a5, 8);                                          \
                STORE8(row + j0 + 48, a6, 8);                                          \
                STORE8(row + j0 + 56, a7, 8);                                          \
                continue;                                                                      \
            }                                                                                  \
            /* the last, partial block: one register at a time */                             \
            for (v = j0; v < d; v += 8) {                                                      \
                ptrdiff_t m = d - v < 8 ? d - v : 8;                                           \
                __m256 a = _mm256_setzero_ps();                                                \
                for (k = lo; k < hi; k++) {                                                    \
                    int64_t i = (int64_t)idx[k];                                               \
                    __m256 s = _mm256_setzero_ps();                                            \
                    if (i == pad) {                                                            \
                        continue;                                                              \
                    }                                                                          \
                    if (weighted) {                                                            \
                        s = _mm256_set1_ps(TO_FLOAT(psw[k]));                          \
                    }                                                                          \
                    a = FE_HALF_BAG_STEP(a, LOAD8((const uint16_t *)(w + i * stride) + v, m), \
                                         s, weighted, ROUND);                                  \
                }                                                                              \
                if (mean && count > 0) {                                                       \
                    a = _mm256_div_ps(a, c);                                                   \
                }                                                                              \
                STORE8(row + v, a, m);                                                 \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
__attribute__((target(TGT)))                                                                   \
static void NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx, const ptrdiff_t *bounds, \
                 ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n, int64_t pad, const uint16_t *psw, \
                 ptrdiff_t d, char *out, ptrdiff_t out_stride, int mean)                       \
{                                                                                              \
    if (psw == NULL) {                                                                         \
        NAME##_bags(w, stride, idx, bounds, b_lo, b_hi, n, pad, NULL, d, out, out_stride, mean); \
    } else {                                                                                   \
        NAME##_bags(w, stride, idx, bounds, b_lo, b_hi, n, pad, psw, d, out, out_stride, mean); \
    }                                                                                          \
}
FE_HALF_BAG_SUMS(fe_half_bag_sums_i32, int32_t, "avx,f16c", fe_half_load8, fe_half_round_ps,
                 fe_half_store8, fe_half_to_float)
FE_HALF_BAG_SUMS(fe_half_bag_sums_i64, int64_t, "avx,f16c", fe_half_load8, fe_half_round_ps,
                 fe_half_store8, fe_half_to_float)

/*
 * float16 bag maxima: as FE_BAG_MAX, with the compare on the values widened
 * to float32 (exact, and ordered as float16 compares are) and, beside them,
 * the float16 bits themselves (zero-extended to 32-bit lanes) blended with
 * the same mask, so that the maximum written is the row's own bits, a
 * signalling NaN's included.  A block is 16 lanes: for each 8, the widened
 * maximum, its bits and the position that won, in three registers.
 */
__attribute__((target("avx")))
static inline __m256 fe_half_bits8(__m128i h)
{
    __m128i lo = _mm_cvtepu16_epi32(h), hi = _mm_cvtepu16_epi32(_mm_srli_si128(h, 8));
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
__attribute__((target("avx")))
static inline __m128i fe_half_pack8(__m256 bits)
{
    __m256i b = _mm256_castps_si256(bits);
    return _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extractf128_si256(b, 1));
}
__attribute__((target("avx")))
static inline __m128i fe_half_raw8(const uint16_t *p, ptrdiff_t m)
{
    uint16_t b[8] = {0};
    if (m == 8) {
        return _mm_loadu_si128((const __m128i *)p);
    }
    memcpy(b, p, (size_t)m * sizeof(uint16_t));
    return _mm_loadu_si128((const __m128i *)b);
}

/* one entry's 8 lanes against the running maximum v (widened), its bits r
   and positions p; the entry's position in every lane of pk */
#define FE_HALF_MAX_STEP(v, r, p, raw, pk, WIDEN, BITS8)                                       \
    do {                                                                                       \
        __m128i h_ = (raw);                                                                    \
        __m256 x_ = WIDEN(h_);                                                                 \
        __m256 m_ = _mm256_cmp_ps(x_, (v), _CMP_GT_OQ);                                        \
        (v) = fe_bag_blend_ps((v), x_, m_);                                                    \
        (r) = fe_bag_blend_ps((r), BITS8(h_), m_);                                             \
        (p) = fe_bag_blend_ps((p), (pk), m_);                                                  \
    } while (0)

/* max_indices of 8 lanes (m of them) from their positions in the bag */
#define FE_HALF_MAX_INDICES(dst, p, m)                                                         \
    do {                                                                                       \
        int32_t pos_[8];                                                                       \
        ptrdiff_t t_;                                                                          \
        fe_bag_pos_store_ps(pos_, (p));                                                        \
        for (t_ = 0; t_ < (m); t_++) {                                                         \
            (dst)[t_] = (int64_t)idx[lo + pos_[t_]];                                           \
        }                                                                                      \
    } while (0)

/*
 * FE_HALF_BAG_MAXES(NAME, INDEX_T, TGT, WIDEN, BITS8, PACK8) defines:
 *   ptrdiff_t NAME(w, stride, idx, bounds, b_lo, b_hi, n, pad, d, out, out_stride, max_indices)
 * as FE_BAG_MAXES for a 16-bit float, compiled for the target TGT: WIDEN(h)
 * widens 8 raw values to float32, BITS8(h) puts their bits in 32-bit lanes,
 * PACK8 takes those lanes back to 8 raw values.
 */
#define FE_HALF_BAG_MAXES(NAME, INDEX_T, TGT, WIDEN, BITS8, PACK8)                             \
__attribute__((target(TGT)))                                                                   \
static ptrdiff_t NAME(const char *w, ptrdiff_t stride, const INDEX_T *idx,                    \
                      const ptrdiff_t *bounds, ptrdiff_t b_lo, ptrdiff_t b_hi, ptrdiff_t n,   \
                      int64_t pad, ptrdiff_t d, char *out, ptrdiff_t out_stride,              \
                      int64_t *max_indices)                                                    \
{                                                                                              \
    ptrdiff_t b, j0, k;                                                                        \
    for (b = b_lo; b < b_hi; b++) {                                                            \
        uint16_t *row = (uint16_t *)(out + b * out_stride);                                    \
        int64_t *mi = max_indices + b * d;                                                     \
        ptrdiff_t lo = bounds[b], hi = bounds[b + 1], first;                                   \
        if (hi - lo > INT32_MAX) {                                                             \
            return b;                                                                          \
        }                                                                                      \
        FE_BAG_FIRST_KEPT(first, idx, lo, hi, pad, row, mi, d);                                \
        if (first == hi) {                                                                     \
            continue;                                                                          \
        }                                                                                      \
        for (j0 = 0; j0 + 16 <= d; j0 += 16) {                                                 \
            const uint16_t *r = (const uint16_t *)(w + (ptrdiff_t)idx[first] * stride) + j0;   \
            __m128i h0 = _mm_loadu_si128((const __m128i *)r);                                  \
            __m128i h1 = _mm_loadu_si128((const __m128i *)(r + 8));                            \
            __m256 v0 = WIDEN(h0), v1 = WIDEN(h1);                         \
            __m256 r0 = BITS8(h0), r1 = BITS8(h1);                             \
            __m256 p0 = fe_bag_pos1_ps(first - lo), p1 = p0;                                   \
            for (k = first + 1; k < hi; k++) {                                                 \
                int64_t i = (int64_t)idx[k];                                                   \
                __m256 pk;                                                                     \
                FE_BAG_PREFETCH_AHEAD(w, stride, idx, k, n, j0 * 2, 32, FE_BAG_PREFETCH);     \
                if (i == pad) {                                                                \
                    continue;                                                                  \
                }                                                                              \
                r = (const uint16_t *)(w + i * stride) + j0;                                   \
                pk = fe_bag_pos1_ps(k - lo);                                                   \
                FE_HALF_MAX_STEP(v0, r0, p0, _mm_loadu_si128((const __m128i *)r), pk, WIDEN,    \
                                 BITS8);                                                       \
                FE_HALF_MAX_STEP(v1, r1, p1, _mm_loadu_si128((const __m128i *)(r + 8)), pk,     \
                                 WIDEN, BITS8);                                                \
            }                                                                                  \
            _mm_storeu_si128((__m128i *)(row + j0), PACK8(r0));                        \
            _mm_storeu_si128((__m128i *)(row + j0 + 8), PACK8(r1));                    \
            FE_HALF_MAX_INDICES(mi + j0, p0, 8);                                               \
            FE_HALF_MAX_INDICES(mi + j0 + 8, p1, 8);                                           \
        }                                                                                      \
        for (; j0 < d; j0 += 8) {                                                              \
            /* the last, partial block: 8 lanes at a time, the tail through a buffer */       \
            ptrdiff_t m = d - j0 < 8 ? d - j0 : 8;                                             \
            __m128i h = fe_half_raw8((const uint16_t *)(w + (ptrdiff_t)idx[first] * stride) + j0, m); \
            __m256 v = WIDEN(h), rb = BITS8(h);                              \
            __m256 p = fe_bag_pos1_ps(first - lo);                                             \
            uint16_t o[8];                                                                     \
            for (k = first + 1; k < hi; k++) {                                                 \
                int64_t i = (int64_t)idx[k];                                                   \
                if (i == pad) {                                                                \
                    continue;                                                                  \
                }                                                                              \
                FE_HALF_MAX_STEP(v, rb, p,                                                     \
                                 fe_half_raw8((const uint16_t *)(w + i * stride) + j0, m),    \
                                 fe_bag_pos1_ps(k - lo), WIDEN, BITS8);                        \
            }                                                                                  \
            _mm_storeu_si128((__m128i *)o, PACK8(rb));                                 \
            memcpy(row + j0, o, (size_t)m * sizeof(uint16_t));                                 \
            FE_HALF_MAX_INDICES(mi + j0, p, m);                                                \
        }                                                                                      \
    }                                                                                          \
    return b_hi;                                                                               \
}
FE_HALF_BAG_MAXES(fe_half_bag_maxes_i32, int32_t, "avx,f16c", _mm256_cvtph_ps, fe_half_bits8,
                  fe_half_pack8)
FE_HALF_BAG_MAXES(fe_half_bag_maxes_i64, int64_t, "avx,f16c", _mm256_cvtph_ps, fe_half_bits8,
                  fe_half_pack8)

/*
 * bfloat16 bags, by the same two kernels.  ml_dtypes adds bfloat16 by
 * widening both operands to float32 (the bits shifted up: exact), adding,
 * and rounding back to nearest even, a NaN becoming 0x7fc0 with the float32
 * NaN's sign (_fe_half.h, fe_float_to_bf16): so the rounding here is that
 * integer rounding, u + 0x7fff + (bit 16 of u), the low half cleared.
 *
 * The NaN rule is applied once, when a sum is stored, not after every add.
 * Every value in an accumulator has its low 16 bits clear (a widened
 * bfloat16, or a rounded sum), so a NaN that an add or a product makes has
 * them clear too (a NaN operand, quieted, or the default NaN), and the
 * integer rounding leaves it as it is.  A NaN, once in a sum, stays; which
 * of two NaNs an add returns depends on the operands' order only, never on
 * their payloads.  So the sum's NaN has the sign of the reference's, which
 * dropped the payload at every step, and storing 0x7fc0 with that sign gives
 * the reference's bits.  That takes four instructions per eight lanes out of
 * every add.
 *
 * Two builds of the kernels: AVX, where an integer instruction takes four
 * lanes, and AVX2 (chosen at run time, fe_bag_use_avx2), eight.
 */
__attribute__((target("avx")))
static inline __m256 fe_bf16_widen8(__m128i h)
{
    __m128i z = _mm_setzero_si128();
    __m128i lo = _mm_unpacklo_epi16(z, h), hi = _mm_unpackhi_epi16(z, h);
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
__attribute__((target("avx")))
static inline __m128i fe_bf16_round4(__m128i u)
{
    __m128i odd = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
    u = _mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)), odd);
    return _mm_and_si128(u, _mm_set1_epi32((int32_t)0xffff0000u));
}
/* float32 lanes rounded to bfloat16 and widened back, a NaN left as it is */
__attribute__((target("avx")))
static inline __m256 fe_bf16_round_ps(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m128i lo = fe_bf16_round4(_mm256_castsi256_si128(u));
    __m128i hi = fe_bf16_round4(_mm256_extractf128_si256(u, 1));
    return _mm256_castsi256_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
/* rounded lanes r of x with the NaN rule: a NaN lane of x becomes 0x7fc0
   with its sign */
__attribute__((target("avx")))
static inline __m256 fe_bf16_nan_rule(__m256 r, __m256 x)
{
    __m256 sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)0x80000000u)));
    __m256 nan = _mm256_or_ps(sign, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)));
    return fe_bag_blend_ps(r, nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
__attribute__((target("avx")))
static inline __m128i fe_bf16_pack8(__m256 bits)
{
    __m256i b = _mm256_castps_si256(bits);
    return _mm_packus_epi32(_mm_srli_epi32(_mm256_castsi256_si128(b), 16),
                            _mm_srli_epi32(_mm256_extractf128_si256(b, 1), 16));
}
__attribute__((target("avx")))
static inline __m256 fe_bf16_load8(const uint16_t *p, ptrdiff_t m)
{
    return fe_bf16_widen8(fe_half_raw8(p, m));
}
__attribute__((target("avx")))
static inline void fe_bf16_store8(uint16_t *p, __m256 x, ptrdiff_t m)
{
    fe_half_put8(p, fe_bf16_pack8(fe_bf16_nan_rule(fe_bf16_round_ps(x), x)), m);
}
FE_HALF_BAG_SUMS(fe_bf16_bag_sums_i32, int32_t, "avx", fe_bf16_load8, fe_bf16_round_ps,
                 fe_bf16_store8, fe_bf16_to_float)
FE_HALF_BAG_SUMS(fe_bf16_bag_sums_i64, int64_t, "avx", fe_bf16_load8, fe_bf16_round_ps,
                 fe_bf16_store8, fe_bf16_to_float)

/* the same with AVX2's eight-lane integer instructions */
__attribute__((target("avx2")))
static inline __m256 fe_bf16_load8_avx2(const uint16_t *p, ptrdiff_t m)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(fe_half_raw8(p, m)), 16));
}
__attribute__((target("avx2")))
static inline __m256 fe_bf16_round_ps_avx2(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd);
    return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int32_t)0xffff0000u)));
}
__attribute__((target("avx2")))
static inline void fe_bf16_store8_avx2(uint16_t *p, __m256 x, ptrdiff_t m)
{
    fe_half_put8(p, fe_bf16_pack8(fe_bf16_nan_rule(fe_bf16_round_ps_avx2(x), x)), m);
}
FE_HALF_BAG_SUMS(fe_bf16_bag_sums_avx2_i32, int32_t, "avx2", fe_bf16_load8_avx2,
                 fe_bf16_round_ps_avx2, fe_bf16_store8_avx2, fe_bf16_to_float)
FE_HALF_BAG_SUMS(fe_bf16_bag_sums_avx2_i64, int64_t, "avx2", fe_bf16_load8_avx2,
                 fe_bf16_round_ps_avx2, fe_bf16_store8_avx2, fe_bf16_to_float)

FE_HALF_BAG_MAXES(fe_bf16_bag_maxes_i32, int32_t, "avx", fe_bf16_widen8, fe_bf16_widen8,
                  fe_bf16_pack8)
FE_HALF_BAG_MAXES(fe_bf16_bag_maxes_i64, int64_t, "avx", fe_bf16_widen8, fe_bf16_widen8,
                  fe_bf16_pack8)

#endif /* FE_X86_ASM */

/*
 * The bag kernels by value type and index width, one entry point each for
 * the kernels module:
 *   ptrdiff_t fe_bag_sums(type, idx64, w, stride, idx, bounds, b_lo, b_hi, n, pad, psw, d,
 *                         out, out_stride, mean)
 *   ptrdiff_t fe_bag_maxes(type, idx64, w, stride, idx, bounds, b_lo, b_hi, n, pad, d,
 *                          out, out_stride, max_indices)
 * type is one of FE_BAG_F32 .. FE_BAG_BF16, idx64 says whether idx is int64
 * (else int32), psw points to weights of the value type or is NULL.  Each
 * returns the first bag it did not write: b_hi when it wrote them all, b_lo
 * where there is no kernel (no AVX, float16 without F16C, not x86-64); the
 * caller writes the rest element by element.
 */
enum { FE_BAG_F32 = 0, FE_BAG_F64 = 1, FE_BAG_F16 = 2, FE_BAG_BF16 = 3 };

#define FE_BAG_BY_INDEX(FN32, FN64, ...)                                                       \
    ((idx64) ? FN64(w, stride, (const int64_t *)idx, __VA_ARGS__)                             \
             : FN32(w, stride, (const int32_t *)idx, __VA_ARGS__))

static ptrdiff_t fe_bag_sums(int type, int idx64, const char *w, ptrdiff_t stride,
                             const void *idx, const ptrdiff_t *bounds, ptrdiff_t b_lo,
                             ptrdiff_t b_hi, ptrdiff_t n, int64_t pad, const void *psw,
                             ptrdiff_t d, char *out, ptrdiff_t out_stride, int mean)
{
#if FE_X86_ASM
    if (fe_get_isa_level() >= 1 && (type != FE_BAG_F16 || fe_get_use_f16c())) {
        switch (type) {
        case FE_BAG_F32:
            FE_BAG_BY_INDEX(fe_bag_sums_f32_i32, fe_bag_sums_f32_i64, bounds, b_lo, b_hi, n, pad,
                            (const float *)psw, d, out, out_stride, mean);
            return b_hi;
        case FE_BAG_F64:
            FE_BAG_BY_INDEX(fe_bag_sums_f64_i32, fe_bag_sums_f64_i64, bounds, b_lo, b_hi, n, pad,
                            (const double *)psw, d, out, out_stride, mean);
            return b_hi;
        case FE_BAG_F16:
            FE_BAG_BY_INDEX(fe_half_bag_sums_i32, fe_half_bag_sums_i64, bounds, b_lo, b_hi, n,
                            pad, (const uint16_t *)psw, d, out, out_stride, mean);
            return b_hi;
        case FE_BAG_BF16:
            if (fe_bag_use_avx2) {
                FE_BAG_BY_INDEX(fe_bf16_bag_sums_avx2_i32, fe_bf16_bag_sums_avx2_i64, bounds,
                                b_lo, b_hi, n, pad, (const uint16_t *)psw, d, out, out_stride,
                                mean);
            } else {
                FE_BAG_BY_INDEX(fe_bf16_bag_sums_i32, fe_bf16_bag_sums_i64, bounds, b_lo, b_hi,
                                n, pad, (const uint16_t *)psw, d, out, out_stride, mean);
            }
            return b_hi;
        }
    }
#endif
    (void)type; (void)idx64; (void)w; (void)stride; (void)idx; (void)bounds; (void)b_hi;
    (void)n; (void)pad; (void)psw; (void)d; (void)out; (void)out_stride; (void)mean;
    return b_lo;
}

static ptrdiff_t fe_bag_maxes(int type, int idx64, const char *w, ptrdiff_t stride,
                              const void *idx, const ptrdiff_t *bounds, ptrdiff_t b_lo,
                              ptrdiff_t b_hi, ptrdiff_t n, int64_t pad, ptrdiff_t d, char *out,
                              ptrdiff_t out_stride, int64_t *max_indices)
{
#if FE_X86_ASM
    if (fe_get_isa_level() >= 1 && (type != FE_BAG_F16 || fe_get_use_f16c())) {
        switch (type) {
        case FE_BAG_F32:
            return FE_BAG_BY_INDEX(fe_bag_maxes_f32_i32, fe_bag_maxes_f32_i64, bounds, b_lo,
                                   b_hi, n, pad, d, out, out_stride, max_indices);
        case FE_BAG_F64:
            return FE_BAG_BY_INDEX(fe_bag_maxes_f64_i32, fe_bag_maxes_f64_i64, bounds, b_lo,
                                   b_hi, n, pad, d, out, out_stride, max_indices);
        case FE_BAG_F16:
            return FE_BAG_BY_INDEX(fe_half_bag_maxes_i32, fe_half_bag_maxes_i64, bounds, b_lo,
                                   b_hi, n, pad, d, out, out_stride, max_indices);
        case FE_BAG_BF16:
            return FE_BAG_BY_INDEX(fe_bf16_bag_maxes_i32, fe_bf16_bag_maxes_i64, bounds, b_lo,
                                   b_hi, n, pad, d, out, out_stride, max_indices);
        }
    }
#endif
    (void)type; (void)idx64; (void)w; (void)stride; (void)idx; (void)bounds; (void)b_hi;
    (void)n; (void)pad; (void)d; (void)out; (void)out_stride; (void)max_indices;
    return b_lo;
}


#endif /* FE_BAG_H */
