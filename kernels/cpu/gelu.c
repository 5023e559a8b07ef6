/*
 * gelu.c - GELU, tanh approximation as in GPT-2:
 *   gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))),  k = sqrt(2/pi)
 *   gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),  t = tanh(...)
 *
 * Both passes need IEEE semantics: under -ffast-math / -Ofast the compiler may rewrite the
 * 1 - t^2 cancellation and the large-|x| guard away. This library builds with -O3 only.
 */
#include "lk_cpu.h"

#include <math.h>

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* Beyond |x| = 10 the tanh argument exceeds 40 and tanhf(.) is exactly +-1 in float, so the
 * derivative is exactly 1 (x > 0) or 0 (x < 0). Returning those directly also avoids
 * 0 * inf = NaN in the second term once x*x overflows (|x| > ~1.8e19). */
#define GELU_SATURATED 10.0f

void lk_gelu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        const float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
    }
}

void lk_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
#pragma omp parallel for if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        const float x = inp[i];
        float local;
        if (x > GELU_SATURATED) {
            local = 1.0f;
        } else if (x < -GELU_SATURATED) {
            local = 0.0f;
        } else {
            const float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
            /* sech^2 = 1 - tanh^2 rather than 1/cosh^2: coshf overflows to inf for
             * arguments above ~89, and squaring it above ~44. */
            const float sech2 = 1.0f - t * t;
            local = 0.5f * (1.0f + t) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
        }
        dinp[i] += local * dout[i];
    }
}
