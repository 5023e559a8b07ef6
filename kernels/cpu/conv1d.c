/*
 * conv1d.c - HF's Conv1D: a linear layer whose weight is stored [IC, OC] (transposed
 * relative to nn.Linear), so the forward is a plain row-major product out = inp @ W and no
 * operand is transposed. All three products go through lk_sgemm (OpenBLAS, threaded by
 * OpenBLAS itself), and the backward products use beta = 1 to accumulate in place.
 */
#include "lk_cpu.h"

#include <string.h>

/* Columns per block in the bias gradient: the block's accumulators stay in registers while
 * the rows stream past, and each column is summed by one thread in row order, so the result
 * is the same for any thread count. */
#define LK_BIAS_BLOCK 64

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

void lk_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t N, int64_t IC, int64_t OC)
{
    float beta = 0.0f;
    if (bias) {
        /* Seed every row with the bias and let the product add onto it (beta = 1): one pass
         * over out instead of a second one after the product. */
#pragma omp parallel for if (N * OC >= LK_OMP_MIN_WORK)
        for (int64_t n = 0; n < N; n++) memcpy(out + n * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    lk_sgemm(0, 0, N, OC, IC, 1.0f, inp, IC, weight, OC, beta, out, OC);
}

void lk_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t N, int64_t IC, int64_t OC)
{
    /* dinp[N,IC] += dout[N,OC] @ W[IC,OC]^T */
    if (dinp) lk_sgemm(0, 1, N, IC, OC, 1.0f, dout, OC, weight, OC, 1.0f, dinp, IC);
    /* dW[IC,OC] += inp[N,IC]^T @ dout[N,OC] */
    if (dweight) lk_sgemm(1, 0, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dweight, OC);
    if (dbias) {
        const int64_t blocks = (OC + LK_BIAS_BLOCK - 1) / LK_BIAS_BLOCK;
#pragma omp parallel for if (N * OC >= LK_OMP_MIN_WORK)
        for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t o0 = blk * LK_BIAS_BLOCK, width = min_i64(LK_BIAS_BLOCK, OC - o0);
            float acc[LK_BIAS_BLOCK] = {0};
            for (int64_t n = 0; n < N; n++) {
                const float *row = dout + n * OC + o0;
#pragma omp simd
                for (int64_t j = 0; j < width; j++) acc[j] += row[j];
            }
            for (int64_t j = 0; j < width; j++) dbias[o0 + j] += acc[j];
        }
    }
}
