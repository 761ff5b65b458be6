/*
 * float16 helpers for the kernels: IEEE binary16 <-> binary32 conversion and
 * a row add that rounds after every element, exactly as NumPy's float16 add
 * does (convert both operands to float32, add in float32, round to nearest
 * even back to float16).
 *
 * The portable conversions reproduce NumPy's npy_half_to_float and
 * npy_float_to_half bit for bit, NaN payloads included.  Where the CPU has
 * F16C (checked at run time, never assumed at compile time) the row add uses
 * the hardware conversions, which give the same bits on every value an add
 * can produce (the add quiets any NaN before it is rounded back).
 */
#ifndef FE_HALF_H
#define FE_HALF_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>

#include "_fe_add.h"

static inline float fe_half_to_float(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t man = (uint32_t)h & 0x3ffu;
    uint32_t bits;
    float f;

    if (exp == 0x1fu) {
        /* inf or NaN: the payload is kept as it is, signalling bit included */
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* subnormal half: normalise into a float32 normal */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t fe_float_to_half(float f)
{
    uint32_t x;
    uint16_t sign;
    uint32_t r, rem, halfway;

    memcpy(&x, &f, sizeof x);
    sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;

    if (x >= 0x7f800000u) {
        if (x == 0x7f800000u) {
            return (uint16_t)(sign | 0x7c00u);
        }
        /* NaN: keep the top payload bits, but make sure it stays a NaN */
        r = 0x7c00u + ((x & 0x007fffffu) >> 13);
        if (r == 0x7c00u) {
            r++;
        }
        return (uint16_t)(sign | r);
    }
    if (x >= 0x477ff000u) {
        /* 65520 and above round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (x < 0x38800000u) {
        /* below the smallest normal half: a subnormal or zero */
        uint32_t man, shift;
        if (x <= 0x33000000u) {
            /* at most 2**-25: rounds (ties to even) to zero */
            return sign;
        }
        man = (x & 0x007fffffu) | 0x00800000u;
        shift = 126u - (x >> 23);
        r = man >> shift;
        rem = man & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (r & 1u))) {
            r++;
        }
        return (uint16_t)(sign | r);
    }
    r = (x >> 13) - (112u << 10);
    rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) {
        r++;
    }
    return (uint16_t)(sign | r);
}

/* dst[j] = half(float(dst[j]) + float(src[j])), portable */
static void fe_half_add_row_portable(uint16_t *dst, const uint16_t *src, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        dst[j] = fe_float_to_half(fe_addf(fe_half_to_float(dst[j]), fe_half_to_float(src[j])));
    }
}

/* dst[j] = half(float(dst[j]) + float(half(float(src[j]) * scale))), portable */
static void fe_half_add_scaled_row_portable(uint16_t *dst, const uint16_t *src,
                                            ptrdiff_t n, float scale)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        uint16_t c = fe_float_to_half(fe_mulf(fe_half_to_float(src[j]), scale));
        dst[j] = fe_float_to_half(fe_addf(fe_half_to_float(dst[j]), fe_half_to_float(c)));
    }
}

#if FE_X86_ASM
#define FE_HAVE_F16C_PATH 1
#include <immintrin.h>

/*
 * The add is written in assembly so that the compiler cannot swap its
 * operands: when both are NaN, x86 returns the first source, and NumPy's
 * np.add.at on rows keeps the gradient's NaN (see _fe_add.h).
 */
__attribute__((target("avx,f16c")))
static inline __m256 fe_add_ps_first(__m256 a, __m256 b)
{
    __m256 s;
    __asm__("vaddps %2, %1, %0" : "=x"(s) : "x"(a), "x"(b));
    return s;
}

__attribute__((target("avx,f16c")))
static inline __m256 fe_mul_ps_src_first(__m256 a, __m256 b)
{
    __m256 s;
    __asm__("vmulps %2, %1, %0" : "=x"(s) : "x"(a), "x"(b));
    return s;
}

__attribute__((target("avx,f16c")))
static void fe_half_add_row_f16c(uint16_t *dst, const uint16_t *src, ptrdiff_t n)
{
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dst + j)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + j)));
        __m256 s = fe_add_ps_first(b, a);
        _mm_storeu_si128((__m128i *)(dst + j), _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
    }
    if (j < n) {
        /* the tail goes through a small buffer so that it rounds the same way */
        uint16_t bd[8] = {0}, bs[8] = {0};
        ptrdiff_t m = n - j;
        __m256 a, b, s;
        memcpy(bd, dst + j, (size_t)m * sizeof(uint16_t));
        memcpy(bs, src + j, (size_t)m * sizeof(uint16_t));
        a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bd));
        b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bs));
        s = fe_add_ps_first(b, a);
        _mm_storeu_si128((__m128i *)bd, _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
        memcpy(dst + j, bd, (size_t)m * sizeof(uint16_t));
    }
}

__attribute__((target("avx,f16c")))
static void fe_half_add_scaled_row_f16c(uint16_t *dst, const uint16_t *src,
                                        ptrdiff_t n, float scale)
{
    ptrdiff_t j = 0;
    __m256 sc = _mm256_set1_ps(scale);
    uint16_t bd[8], bs[8];
    while (j < n) {
        ptrdiff_t m = (n - j) < 8 ? (n - j) : 8;
        __m256 a, b, s;
        __m128i c;
        memset(bd, 0, sizeof bd);
        memset(bs, 0, sizeof bs);
        memcpy(bd, dst + j, (size_t)m * sizeof(uint16_t));
        memcpy(bs, src + j, (size_t)m * sizeof(uint16_t));
        a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bd));
        b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)bs));
        /* the scaled gradient is rounded to float16 before it is added */
        c = _mm256_cvtps_ph(fe_mul_ps_src_first(b, sc), _MM_FROUND_TO_NEAREST_INT);
        s = fe_add_ps_first(_mm256_cvtph_ps(c), a);
        _mm_storeu_si128((__m128i *)bd, _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
        memcpy(dst + j, bd, (size_t)m * sizeof(uint16_t));
        j += m;
    }
}

static int fe_cpu_has_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}

#else
#define FE_HAVE_F16C_PATH 0
static int fe_cpu_has_f16c(void) { return 0; }
static void fe_half_add_row_f16c(uint16_t *dst, const uint16_t *src, ptrdiff_t n)
{
    fe_half_add_row_portable(dst, src, n);
}
static void fe_half_add_scaled_row_f16c(uint16_t *dst, const uint16_t *src,
                                        ptrdiff_t n, float scale)
{
    fe_half_add_scaled_row_portable(dst, src, n, scale);
}
#endif

/* set once at import by the kernels module; 0 forces the portable path */
static int fe_use_f16c = 0;

static void fe_set_use_f16c(int on) { fe_use_f16c = on ? fe_cpu_has_f16c() : 0; }
static int fe_get_use_f16c(void) { return fe_use_f16c; }

static inline void fe_half_add_row(uint16_t *dst, const uint16_t *src, ptrdiff_t n)
{
    if (fe_use_f16c) {
        fe_half_add_row_f16c(dst, src, n);
    } else {
        fe_half_add_row_portable(dst, src, n);
    }
}

static inline void fe_half_add_scaled_row(uint16_t *dst, const uint16_t *src,
                                          ptrdiff_t n, float scale)
{
    if (fe_use_f16c) {
        fe_half_add_scaled_row_f16c(dst, src, n, scale);
    } else {
        fe_half_add_scaled_row_portable(dst, src, n, scale);
    }
}

/* ---- bfloat16 (ml_dtypes) ------------------------------------------- */
/*
 * ml_dtypes adds bfloat16 by converting both operands to float32, adding, and
 * rounding back to nearest even; a NaN result becomes the canonical quiet NaN
 * 0x7fc0 with the sign of the float32 NaN (payloads do not survive).
 */
static inline float fe_bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t fe_float_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((u >> 16) & 0x8000u) | 0x7fc0u;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void fe_bf16_add_row(uint16_t *dst, const uint16_t *src, ptrdiff_t n)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        dst[j] = fe_float_to_bf16(fe_addf(fe_bf16_to_float(dst[j]), fe_bf16_to_float(src[j])));
    }
}

static void fe_bf16_add_scaled_row(uint16_t *dst, const uint16_t *src, ptrdiff_t n, float scale)
{
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        uint16_t c = fe_float_to_bf16(fe_mulf(fe_bf16_to_float(src[j]), scale));
        dst[j] = fe_float_to_bf16(fe_addf(fe_bf16_to_float(dst[j]), fe_bf16_to_float(c)));
    }
}

#endif /* FE_HALF_H */
