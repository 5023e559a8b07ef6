/*
 * convert.c - storage conversions between f32, f16 and bf16 (lk_convert) and adding an f32
 * partial result into 16-bit storage (lk_accumulate_f32).
 *
 * The bits must be the hardware's (F16C vcvtps2ph with imm 0, AVX512_BF16 vcvtneps2bf16)
 * whichever path runs, so that a checkpoint or an all-reduce gives the same 16-bit values on
 * every machine. The scalar code is therefore integer arithmetic that spells out what those
 * instructions do, and each vector path is chosen at run time (a build without -march=native
 * still uses the instructions the CPU has).
 */
#include "lk_cpu.h"
#include "cpu_features.h"

#include <immintrin.h>

/* Above this many elements a call splits into chunks on OpenMP threads. One AVX-512 core
 * converts 2^16 elements in under 2 us, about what an OpenMP fork/join costs. */
#define LK_CONVERT_PAR_MIN (1 << 16)
#define LK_CONVERT_CHUNK (1 << 14)
/* Elements per stack buffer when a conversion goes through f32 (f16 <-> bf16, accumulate):
 * 2 KiB stays in L1 between the two passes. */
#define LK_CONVERT_BLOCK 512

/* What the CPU offers, best last. The tests build this file with LK_CONVERT_SCALAR_ONLY to
 * check the portable code on machines that would never run it. */
enum { LK_ISA_SCALAR, LK_ISA_F16C, LK_ISA_AVX512, LK_ISA_AVX512_BF16 };

static int lk_convert_isa(void)
{
#ifdef LK_CONVERT_SCALAR_ONLY
    return LK_ISA_SCALAR;
#else
    if (__builtin_cpu_supports("avx512f"))
        return lk_cpu_has_avx512_bf16() ? LK_ISA_AVX512_BF16 : LK_ISA_AVX512;
    if (lk_cpu_has_f16c()) return LK_ISA_F16C;
    return LK_ISA_SCALAR;
#endif
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- scalar: the definition every vector path must match bit for bit ---- */

/* vcvtps2ph, round to nearest even. A NaN keeps its sign and the top 10 payload bits and
 * becomes quiet; |x| >= 65520 (halfway past the largest f16, 65504) gives inf. */
static inline uint16_t f32_to_f16_1(float f)
{
    const uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* 2^-14 and up: a normal f16; rebias the exponent 127 -> 15 */
        uint32_t h = (a - 0x38000000u) >> 13;
        const uint32_t rem = a & 0x1fffu;
        h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));
        return (uint16_t)(sign | h); /* a carry out of the mantissa bumps the exponent: right */
    }
    /* 2^-25 itself is a tie between 0 and the smallest subnormal, 2^-24: even is 0. */
    if (a <= 0x33000000u) return (uint16_t)sign;
    /* Subnormal f16: the value in units of 2^-24 is the 24-bit significand shifted right by
     * 126 - exponent (14..24 here). Rounding up from the largest one gives 0x400, the
     * smallest normal, which is correct. */
    const uint32_t shift = 126u - (a >> 23), m = (a & 0x7fffffu) | 0x800000u;
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    h += rem > half || (rem == half && (h & 1u));
    return (uint16_t)(sign | h);
}

/* vcvtph2ps: exact; a signalling NaN comes back quiet, as the instruction makes it. */
static inline float f16_to_f32_1(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e) return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    /* zero or subnormal: m * 2^-24 is exact in float */
    return bits_f32(sign | f32_bits((float)m * 0x1p-24f));
}

/* vcvtneps2bf16: round to nearest even by adding 0x7fff plus the lowest kept bit. The
 * instruction treats f32 subnormals as zero (keeping the sign) and quiets a NaN by setting
 * bit 6 of its top half. Finite values near FLT_MAX round to inf through the carry. */
static inline uint16_t f32_to_bf16_1(float f)
{
    const uint32_t u = f32_bits(f), a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    if (a < 0x00800000u) return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void f32_to_f16_scalar(uint16_t *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = f32_to_f16_1(src[i]);
}

static void f16_to_f32_scalar(float *dst, const uint16_t *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32_1(src[i]);
}

static void f32_to_bf16_scalar(uint16_t *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = f32_to_bf16_1(src[i]);
}

static void bf16_to_f32_scalar(float *dst, const uint16_t *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = lk_bf16_to_f32(src[i]);
}

/* ---- vector paths; each leaves its last n % width elements to the scalar code ---- */

__attribute__((target("avx,f16c"))) static int64_t f32_to_f16_f16c(uint16_t *dst,
                                                                    const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

__attribute__((target("avx,f16c"))) static int64_t f16_to_f32_f16c(float *dst,
                                                                    const uint16_t *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    return i;
}

__attribute__((target("avx512f"))) static int64_t f32_to_f16_avx512(uint16_t *dst,
                                                                     const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

__attribute__((target("avx512f"))) static int64_t f16_to_f32_avx512(float *dst,
                                                                     const uint16_t *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    return i;
}

__attribute__((target("avx512f"))) static int64_t bf16_to_f32_avx512(float *dst,
                                                                      const uint16_t *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
    }
    return i;
}

/* Without AVX512_BF16: f32_to_bf16_1 on 16 lanes, the special cases as masked moves. */
__attribute__((target("avx512f"))) static int64_t f32_to_bf16_avx512(uint16_t *dst,
                                                                      const float *src, int64_t n)
{
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i min_normal = _mm512_set1_epi32(0x00800000), one = _mm512_set1_epi32(1);
    const __m512i bias = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
    const __m512i sign = _mm512_set1_epi32(0x8000);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512(src + i), a = _mm512_and_si512(u, abs_mask);
        const __m512i top = _mm512_srli_epi32(u, 16);
        const __m512i lsb = _mm512_and_si512(top, one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(a, inf), _mm512_or_si512(top, quiet));
        r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epu32_mask(a, min_normal),
                                  _mm512_and_si512(top, sign));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    return i;
}

__attribute__((target("avx512f,avx512bf16"))) static int64_t
f32_to_bf16_avx512bf16(uint16_t *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    return i;
}

/* ---- one span on the calling thread, at a given ISA level ---- */

static void f32_to_f16_span(uint16_t *dst, const float *src, int64_t n, int isa)
{
    int64_t i = 0;
    if (isa >= LK_ISA_AVX512) i = f32_to_f16_avx512(dst, src, n);
    else if (isa >= LK_ISA_F16C) i = f32_to_f16_f16c(dst, src, n);
    f32_to_f16_scalar(dst + i, src + i, n - i);
}

static void f16_to_f32_span(float *dst, const uint16_t *src, int64_t n, int isa)
{
    int64_t i = 0;
    if (isa >= LK_ISA_AVX512) i = f16_to_f32_avx512(dst, src, n);
    else if (isa >= LK_ISA_F16C) i = f16_to_f32_f16c(dst, src, n);
    f16_to_f32_scalar(dst + i, src + i, n - i);
}

static void f32_to_bf16_span(uint16_t *dst, const float *src, int64_t n, int isa)
{
    int64_t i = 0;
    if (isa >= LK_ISA_AVX512_BF16) i = f32_to_bf16_avx512bf16(dst, src, n);
    else if (isa >= LK_ISA_AVX512) i = f32_to_bf16_avx512(dst, src, n);
    f32_to_bf16_scalar(dst + i, src + i, n - i);
}

static void bf16_to_f32_span(float *dst, const uint16_t *src, int64_t n, int isa)
{
    int64_t i = 0;
    if (isa >= LK_ISA_AVX512) i = bf16_to_f32_avx512(dst, src, n);
    bf16_to_f32_scalar(dst + i, src + i, n - i);
}

static void to_f32_span(float *dst, const void *src, uint32_t src_dtype, int64_t n, int isa)
{
    if (src_dtype == LOOM_DTYPE_F16) f16_to_f32_span(dst, src, n, isa);
    else if (src_dtype == LOOM_DTYPE_BF16) bf16_to_f32_span(dst, src, n, isa);
    else memcpy(dst, src, (size_t)n * sizeof *dst);
}

static void from_f32_span(void *dst, uint32_t dst_dtype, const float *src, int64_t n, int isa)
{
    if (dst_dtype == LOOM_DTYPE_F16) f32_to_f16_span(dst, src, n, isa);
    else if (dst_dtype == LOOM_DTYPE_BF16) f32_to_bf16_span(dst, src, n, isa);
    else memcpy(dst, src, (size_t)n * sizeof *src);
}

/* Only the dtypes these conversions know; 0 makes the calls below do nothing. */
static size_t dtype_size(uint32_t dtype) { return loom_dtype_is_param(dtype) ? loom_dtype_size(dtype) : 0; }

static void convert_span(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype,
                         int64_t n, int isa)
{
    if (dst_dtype == src_dtype) {
        if (dst != src) memcpy(dst, src, (size_t)n * dtype_size(dst_dtype));
    } else if (src_dtype == LOOM_DTYPE_F32) {
        from_f32_span(dst, dst_dtype, src, n, isa);
    } else if (dst_dtype == LOOM_DTYPE_F32) {
        to_f32_span(dst, src, src_dtype, n, isa);
    } else {
        /* f16 <-> bf16 through f32 (widening is exact, so this rounds once). Block by block
         * through the stack, which also makes dst == src safe. */
        float buf[LK_CONVERT_BLOCK];
        for (int64_t i = 0; i < n; i += LK_CONVERT_BLOCK) {
            const int64_t m = n - i < LK_CONVERT_BLOCK ? n - i : LK_CONVERT_BLOCK;
            to_f32_span(buf, (const uint16_t *)src + i, src_dtype, m, isa);
            from_f32_span((uint16_t *)dst + i, dst_dtype, buf, m, isa);
        }
    }
}

static void accumulate_span(void *dst, uint32_t dst_dtype, const float *src, int64_t n, int isa)
{
    float buf[LK_CONVERT_BLOCK];
    for (int64_t i = 0; i < n; i += LK_CONVERT_BLOCK) {
        const int64_t m = n - i < LK_CONVERT_BLOCK ? n - i : LK_CONVERT_BLOCK;
        uint16_t *d = (uint16_t *)dst + i;
        to_f32_span(buf, d, dst_dtype, m, isa);
        for (int64_t j = 0; j < m; j++) buf[j] += src[i + j];
        from_f32_span(d, dst_dtype, buf, m, isa);
    }
}

void lk_convert_serial(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n)
{
    if (n <= 0 || !dtype_size(dst_dtype) || !dtype_size(src_dtype)) return;
    convert_span(dst, dst_dtype, src, src_dtype, n, lk_convert_isa());
}

/* Unknown dtypes make both functions do nothing: they are void, so they cannot report it,
 * and the callers (the precision plugins) validate dtypes when they set up. Every element is
 * converted independently, so the chunking never changes a result. */
void lk_convert(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n)
{
    const size_t dsz = dtype_size(dst_dtype), ssz = dtype_size(src_dtype);
    if (n <= 0 || !dsz || !ssz) return;
    const int isa = lk_convert_isa();
    if (n <= LK_CONVERT_PAR_MIN) {
        convert_span(dst, dst_dtype, src, src_dtype, n, isa);
        return;
    }
    const int64_t chunks = (n + LK_CONVERT_CHUNK - 1) / LK_CONVERT_CHUNK;
#pragma omp parallel for
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i = c * LK_CONVERT_CHUNK, m = n - i < LK_CONVERT_CHUNK ? n - i : LK_CONVERT_CHUNK;
        convert_span((char *)dst + (size_t)i * dsz, dst_dtype, (const char *)src + (size_t)i * ssz,
                     src_dtype, m, isa);
    }
}

void lk_accumulate_f32(void *dst, uint32_t dst_dtype, const float *src, int64_t n)
{
    if (n <= 0) return;
    if (dst_dtype == LOOM_DTYPE_F32) {
        lk_accumulate(dst, src, n);
        return;
    }
    if (dst_dtype != LOOM_DTYPE_F16 && dst_dtype != LOOM_DTYPE_BF16) return;
    const int isa = lk_convert_isa();
    if (n <= LK_CONVERT_PAR_MIN) {
        accumulate_span(dst, dst_dtype, src, n, isa);
        return;
    }
    const int64_t chunks = (n + LK_CONVERT_CHUNK - 1) / LK_CONVERT_CHUNK;
#pragma omp parallel for
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i = c * LK_CONVERT_CHUNK, m = n - i < LK_CONVERT_CHUNK ? n - i : LK_CONVERT_CHUNK;
        accumulate_span((uint16_t *)dst + i, dst_dtype, src + i, m, isa);
    }
}
