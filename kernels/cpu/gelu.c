/*
 * gelu.c - GELU, tanh approximation as in GPT-2:
 *   gelu(x) = 0.5 x (1 + tanh(u)),  u = k (x + 0.044715 x^3),  k = sqrt(2/pi)
 *   gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),  t = tanh(u)
 *
 * tanh goes through lk_expf, which vectorises where tanhf is a scalar libm call. With
 * e = exp(-2|u|) in [0, 1] (never overflows) and a = 2 / (1 + e):
 *   1 + t = a (u >= 0) or a e (u < 0),   1 - t = the other one,   1 - t^2 = a^2 e.
 * Each factor is a product or quotient of positive numbers, so 1 + t, 1 - t and 1 - t^2 keep
 * their relative accuracy everywhere: no 1 - t^2 or 1 + t cancellation. Max abs error vs a
 * double reference over |x| <= 10: 5.1e-7 forward, 2.0e-7 derivative (tanhf with 1 - t^2
 * gave 4.3e-7 and 5.6e-7); tests/kernels/test_gelu.c holds it under 2e-6.
 *
 * Saturation needs no branch: once |u| > 43.65 (|x| > ~10.01), lk_expf(-2|u|) returns exactly
 * 0, so a = 2 and a e = 0: gelu(x) = x exactly for large x and -0 for large -x, and the
 * derivative is exactly 1 or 0. u = +-inf (x = +-inf, or x^3 overflowing) takes the same path.
 * Two clamps of x keep inf * 0 = NaN out of those products: the forward's x >= -GELU_XCLAMP
 * and the derivative's |x| <= GELU_XCLAMP only change x where the factor it multiplies is
 * already exactly 0. NaN passes through every comparison-based clamp and comes out NaN.
 *
 * The element loops vectorise without an omp simd: GCC versions them for aliasing (the
 * vector path also covers out == inp). "parallel for simd if (...)" would be worse: an if
 * without a modifier applies to the simd part too (OpenMP 5.0), so below LK_OMP_MIN_WORK the
 * loop would run one element at a time (~10x slower at n = 20000).
 *
 * Both passes need IEEE semantics: under -ffast-math / -Ofast the compiler may drop the NaN
 * pass-through or reassociate the products. This library builds with -O3 only.
 */
/* Let GCC if-convert the clamps and selects (here and in lk_expf) into plain vector blends:
 * -fno-trapping-math only drops the assumption that FP exceptions trap (they never do here);
 * results are unchanged. Without it GCC 12 still vectorises these loops, ~15% slower. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "lk_cpu.h"

#include <math.h>

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* Well past the |x| ~ 10.01 where lk_expf(-2|u|) becomes exactly 0 (u(20) ~ 301). */
#define GELU_XCLAMP 20.0f

/* 1 + t and a^2 e = 1 - t^2 for t = tanh(k (x + c x^3)). */
static inline float gelu_tanh_parts(float x, float *one_minus_t2)
{
    const float u = GELU_K * (x + GELU_C * x * x * x);
    const float e = lk_expf(-2.0f * fabsf(u));
    const float a = 2.0f / (1.0f + e);
    const float ae = a * e;
    *one_minus_t2 = a * ae;
    return u >= 0.0f ? a : ae; /* NaN: ae, which is NaN too */
}

/* gelu(x). For x < -GELU_XCLAMP, 1 + t is exactly 0: the clamp only turns -inf * 0 into -0
 * like every other large negative x. */
static inline float gelu_value(float x)
{
    float sech2;
    const float one_plus_t = gelu_tanh_parts(x, &sech2);
    const float xf = x < -GELU_XCLAMP ? -GELU_XCLAMP : x;
    return 0.5f * xf * one_plus_t;
}

/* gelu'(x). For |x| > GELU_XCLAMP, sech2 is exactly 0; the clamp keeps x (1 + 3c x^2) finite
 * there, so the second term is 0 and not inf * 0. */
static inline float gelu_slope(float x)
{
    float sech2;
    const float one_plus_t = gelu_tanh_parts(x, &sech2);
    float xd = x < -GELU_XCLAMP ? -GELU_XCLAMP : x;
    xd = xd > GELU_XCLAMP ? GELU_XCLAMP : xd;
    return 0.5f * one_plus_t + 0.5f * xd * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * xd * xd);
}

void lk_gelu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        out[i] = gelu_value(inp[i]);
}

void lk_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        dinp[i] += gelu_slope(inp[i]) * dout[i];
}

/* Elements per block of the 16-bit GELU: widened into an f32 buffer on the stack, computed
 * there and narrowed, so each element crosses memory once each way instead of through three
 * whole-tensor f32 passes (docs/architecture.md#gelu-cast). 2 KiB stays in L1. */
#define GELU_BLOCK 512

static int64_t gelu_blocks(int64_t n)
{
    return (n + GELU_BLOCK - 1) / GELU_BLOCK;
}

/* The block of inp (stored as dtype) from element i on, widened into buf; returns its length. */
static int64_t widen_block(float *buf, const void *inp, uint32_t dtype, int64_t i, int64_t n)
{
    const int64_t m = n - i < GELU_BLOCK ? n - i : GELU_BLOCK;
    lk_convert_serial(buf, LOOM_DTYPE_F32, (const char *)inp + (size_t)i * loom_dtype_size(dtype), dtype, m);
    return m;
}

void lk_gelu_forward_cast(void *out, uint32_t out_dtype, const void *inp, uint32_t inp_dtype, int64_t n)
{
    if (n <= 0 || !loom_dtype_is_param(out_dtype) || !loom_dtype_is_param(inp_dtype)) return;
    if (out_dtype == LOOM_DTYPE_F32 && inp_dtype == LOOM_DTYPE_F32) {
        lk_gelu_forward(out, inp, n);
        return;
    }
    const size_t os = loom_dtype_size(out_dtype);
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < gelu_blocks(n); b++) {
        float buf[GELU_BLOCK];
        const int64_t i = b * GELU_BLOCK, m = widen_block(buf, inp, inp_dtype, i, n);
        for (int64_t j = 0; j < m; j++)
            buf[j] = gelu_value(buf[j]);
        lk_convert_serial((char *)out + (size_t)i * os, out_dtype, buf, LOOM_DTYPE_F32, m);
    }
}

/* Written as 0 + slope * dout: the bits of zeroing dinp and accumulating into it (a -0
 * product gives +0 either way). */
void lk_gelu_backward_cast(float *dinp, const void *inp, uint32_t inp_dtype, const float *dout, int64_t n)
{
    if (n <= 0 || !dinp || !loom_dtype_is_param(inp_dtype)) return;
    if (inp_dtype == LOOM_DTYPE_F32) {
        const float *x = inp;
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
        for (int64_t i = 0; i < n; i++)
            dinp[i] = 0.0f + gelu_slope(x[i]) * dout[i];
        return;
    }
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < gelu_blocks(n); b++) {
        float buf[GELU_BLOCK];
        const int64_t i = b * GELU_BLOCK, m = widen_block(buf, inp, inp_dtype, i, n);
        for (int64_t j = 0; j < m; j++)
            dinp[i + j] = 0.0f + gelu_slope(buf[j]) * dout[i + j];
    }
}
