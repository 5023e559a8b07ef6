/*
 * elementwise.c - the residual connection's add (forward) and gradient fan-in (backward).
 */
#include "lk_cpu.h"

/* out may alias a or b: each element is read before it is written, at the same index. */
void lk_add(float *out, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void lk_accumulate(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for simd if (n >= LK_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}
