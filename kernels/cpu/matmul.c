/*
 * matmul.c - matrix products: lk_sgemm (OpenBLAS), in blocks cblas's int sizes can hold.
 * The layers built on it are in linear.c and conv1d.c.
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
