/*
 * relu.c - rectified linear unit.
 */
#include "lk_cpu.h"

/* A NaN goes through, as in PyTorch: "x > 0 ? x : 0" made it 0, and a model whose weights
 * had gone NaN then trained and evaluated on with a loss that looked normal. */
void lk_relu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        out[i] = inp[i] <= 0.0f ? 0.0f : inp[i];
}

/* The derivative at exactly 0 is taken as 0 (PyTorch's choice), so a unit that is off stays
 * off in both passes; at NaN the gradient passes, as PyTorch's threshold_backward lets it. */
void lk_relu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        dinp[i] += inp[i] <= 0.0f ? 0.0f : dout[i];
}
