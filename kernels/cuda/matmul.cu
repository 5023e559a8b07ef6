/*
 * matmul.cu - lk_sgemm_cuda: row-major C = alpha op(A) op(B) + beta C on cuBLAS.
 *
 * cuBLAS is column-major. A row-major M x N matrix with row stride ldc is, read column-major,
 * its transpose: an N x M matrix with leading dimension ldc. So the row-major product
 *   C = op(A) op(B)   is the column-major product   C^T = op(B)^T op(A)^T
 * and we call cuBLAS with the operands swapped (B first), the sizes swapped (N, M) and each
 * operand's own transpose flag: op(B)^T of the stored B^T is "no transpose" exactly when
 * trans_b is 0. No data moves.
 */
#include "common.cuh"

/* C = beta * C over an M x N block with row stride ldc (the K == 0 product). As in BLAS,
 * beta == 0 writes zeros without reading C, so an uninitialised C cannot leak NaN. */
static __global__ void lk_scale_matrix_kernel(float *C, int64_t ldc, int64_t M, int64_t N, float beta)
{
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
        float *c = C + i * ldc + j;
        *c = beta == 0.0f ? 0.0f : *c * beta;
    }
}

extern "C" void lk_sgemm_cuda(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc)
{
    static const char fn[] = "lk_sgemm_cuda";
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        /* Done here because cuBLAS, like BLAS, rejects the lda/ldb a caller naturally passes
         * for an empty inner dimension (0 < max(1, K)). */
        if (beta == 1.0f) return;
        const dim3 grid(lk_cuda_grid(N, LK_CUDA_BLOCK), lk_cuda_grid_y(M));
        lk_scale_matrix_kernel<<<grid, LK_CUDA_BLOCK>>>(C, ldc, M, N, beta);
        lk_cuda_launched(fn);
        return;
    }
    cublasHandle_t h = lk_cuda_cublas(fn);
    if (!h) return;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
#if CUBLAS_VER_MAJOR >= 12
    /* The 64-bit interface (cuBLAS 12+): any size the memory holds, no blocking needed. */
    lk_cublas_ok(cublasSgemm_64(h, op_b, op_a, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc), fn);
#else
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX) {
        lk_cuda_record(fn, "sizes past 2^31 need cuBLAS 12 or later");
        return;
    }
    lk_cublas_ok(
        cublasSgemm(h, op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc), fn);
#endif
}
