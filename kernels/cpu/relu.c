/*
 * relu.c - rectified linear unit.
 */
#include "lk_cpu.h"

void lk_relu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

/* The derivative at exactly 0 is taken as 0 (PyTorch's choice), so a unit that is off stays
 * off in both passes. */
void lk_relu_backward(float *dinp, const float *inp, const float *dout, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
}
