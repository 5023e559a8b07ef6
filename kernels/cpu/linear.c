/*
 * linear.c - nn.Linear (weight [OC, IC]) on lk_sgemm: out = inp @ weight^T + bias.
 */
#include "lk_cpu.h"

#include <string.h>

/* Columns per block when summing dout over rows for the bias gradient: a block's
 * accumulators stay in registers/L1 while the rows stream past, and each column is summed by
 * one thread in row order, so the result is the same for any thread count. */
#define LK_BIAS_BLOCK 64

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

void lk_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t B, int64_t IC,
                       int64_t OC)
{
    float beta = 0.0f;
    if (bias) {
        /* Seed every row with the bias and let the product add onto it (beta = 1): one pass
         * over out instead of a second one after the product. */
#pragma omp parallel for if (B * OC >= LK_OMP_MIN_WORK)
        for (int64_t b = 0; b < B; b++)
            memcpy(out + b * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    lk_sgemm(0, 1, B, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}

void lk_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, int64_t B, int64_t IC, int64_t OC)
{
    if (dinp) lk_sgemm(0, 0, B, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
    if (dweight) lk_sgemm(1, 0, OC, IC, B, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias) {
#pragma omp parallel for if (B * OC >= LK_OMP_MIN_WORK)
        for (int64_t o0 = 0; o0 < OC; o0 += LK_BIAS_BLOCK) {
            const int64_t width = min_i64(LK_BIAS_BLOCK, OC - o0);
            float acc[LK_BIAS_BLOCK] = {0};
            for (int64_t b = 0; b < B; b++) {
                const float *row = dout + b * OC + o0;
                for (int64_t j = 0; j < width; j++)
                    acc[j] += row[j];
            }
            for (int64_t j = 0; j < width; j++)
                dbias[o0 + j] += acc[j];
        }
    }
}
