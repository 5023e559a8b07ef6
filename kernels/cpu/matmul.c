/*
 * matmul.c - matrix products: lk_sgemm (OpenBLAS) and the linear layer built on it.
 */
#include "lk_cpu.h"

#include <cblas.h>
#include <limits.h>
#include <string.h>

/* cblas takes int sizes (blasint is 32-bit in the Debian builds). Larger products are split
 * into blocks no larger than this; the tests build this file with a tiny value to exercise
 * the split. */
#ifndef LK_SGEMM_CHUNK
#define LK_SGEMM_CHUNK INT_MAX
#endif

/* Columns per block when summing dout over rows for the bias gradient: a block's
 * accumulators stay in registers/L1 while the rows stream past, and each column is summed by
 * one thread in row order, so the result is the same for any thread count. */
#define LK_BIAS_BLOCK 64

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* C = beta * C for a product with K == 0. Done here because BLAS rejects the lda/ldb a
 * caller naturally passes for an empty inner dimension (0 < max(1, K)). As in BLAS, beta == 0
 * writes zeros without reading C, so an uninitialised C cannot leak NaN. */
static void scale_c(float *C, int64_t ldc, int64_t M, int64_t N, float beta)
{
    for (int64_t i = 0; i < M; i++) {
        float *row = C + i * ldc;
        if (beta == 0.0f) {
            memset(row, 0, (size_t)N * sizeof *row);
        } else if (beta != 1.0f) {
            for (int64_t j = 0; j < N; j++) row[j] *= beta;
        }
    }
}

void lk_sgemm(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        scale_c(C, ldc, M, N, beta);
        return;
    }
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    const int64_t chunk = LK_SGEMM_CHUNK;
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
        const int64_t mb = min_i64(chunk, M - m0);
        for (int64_t n0 = 0; n0 < N; n0 += chunk) {
            const int64_t nb = min_i64(chunk, N - n0);
            for (int64_t k0 = 0; k0 < K; k0 += chunk) {
                const int64_t kb = min_i64(chunk, K - k0);
                /* op(A)[m, k] lives at A[m*lda + k] untransposed, A[k*lda + m] transposed;
                 * likewise op(B)[k, n]. Later K blocks add onto the first one's result. */
                const float *a = trans_a ? A + k0 * lda + m0 : A + m0 * lda + k0;
                const float *b = trans_b ? B + n0 * ldb + k0 : B + k0 * ldb + n0;
                cblas_sgemm(CblasRowMajor, ta, tb, (blasint)mb, (blasint)nb, (blasint)kb, alpha,
                            a, (blasint)lda, b, (blasint)ldb, k0 == 0 ? beta : 1.0f,
                            C + m0 * ldc + n0, (blasint)ldc);
            }
        }
    }
}

void lk_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t B, int64_t IC, int64_t OC)
{
    float beta = 0.0f;
    if (bias) {
        /* Seed every row with the bias and let the product add onto it (beta = 1): one pass
         * over out instead of a second one after the product. */
#pragma omp parallel for if (B * OC >= LK_OMP_MIN_WORK)
        for (int64_t b = 0; b < B; b++) memcpy(out + b * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    lk_sgemm(0, 1, B, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}

void lk_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t B, int64_t IC, int64_t OC)
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
                for (int64_t j = 0; j < width; j++) acc[j] += row[j];
            }
            for (int64_t j = 0; j < width; j++) dbias[o0 + j] += acc[j];
        }
    }
}
