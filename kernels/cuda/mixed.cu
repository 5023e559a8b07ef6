/*
 * mixed.cu - the ABI 1.1 members on CUDA: 16-bit storage (convert, accumulate_f32), mixed
 * products (gemm_mixed on cuBLAS with f32 accumulation) and the classifier gradient written
 * straight into 16-bit storage. Same contracts as kernels/cpu (abi/loom/kernels.h); the
 * hardware conversions (__float2half_rn, __float2bfloat16_rn) round to nearest even, keep NaN
 * and overflow f16 to inf, as the CPU's vcvtps2ph / vcvtneps2bf16 do.
 */
#include "common.cuh"

static int lk_storage_dtype(uint32_t d)
{
    return d == LOOM_DTYPE_F32 || d == LOOM_DTYPE_F16 || d == LOOM_DTYPE_BF16;
}

static __global__ void lk_convert_kernel(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        lk_store(dst, dst_dtype, i, lk_load(src, src_dtype, i));
}

extern "C" void lk_convert_cuda(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n)
{
    static const char fn[] = "lk_convert_cuda";
    if (n <= 0) return;
    if (!lk_storage_dtype(dst_dtype) || !lk_storage_dtype(src_dtype)) {
        lk_cuda_record(fn, "dtypes %u -> %u: f32, f16 or bf16 only", src_dtype, dst_dtype);
        return;
    }
    if (dst_dtype == src_dtype) {
        if (dst != src)
            lk_cuda_ok(cudaMemcpyAsync(dst, src, (size_t)n * (dst_dtype == LOOM_DTYPE_F32 ? 4 : 2),
                                       cudaMemcpyDeviceToDevice, cudaStreamLegacy),
                       fn);
        return;
    }
    lk_convert_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dst, dst_dtype, src, src_dtype, n);
    lk_cuda_launched(fn);
}

static __global__ void lk_accumulate_f32_kernel(void *dst, uint32_t dtype, const float *src, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        lk_store(dst, dtype, i, lk_load(dst, dtype, i) + src[i]);
}

extern "C" void lk_accumulate_f32_cuda(void *dst, uint32_t dst_dtype, const float *src, int64_t n)
{
    static const char fn[] = "lk_accumulate_f32_cuda";
    if (n <= 0) return;
    if (!lk_storage_dtype(dst_dtype)) {
        lk_cuda_record(fn, "dtype %u: f32, f16 or bf16 only", dst_dtype);
        return;
    }
    lk_accumulate_f32_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dst, dst_dtype, src, n);
    lk_cuda_launched(fn);
}

static cudaDataType_t lk_cuda_type(uint32_t dtype)
{
    return dtype == LOOM_DTYPE_F16 ? CUDA_R_16F : dtype == LOOM_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

extern "C" void lk_gemm_mixed_cuda(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const void *A, uint32_t a_dtype, int64_t lda, const void *B, uint32_t b_dtype,
                                   int64_t ldb, float beta, float *C, int64_t ldc)
{
    static const char fn[] = "lk_gemm_mixed_cuda";
    if (!lk_storage_dtype(a_dtype) || !lk_storage_dtype(b_dtype)) {
        lk_cuda_record(fn, "dtypes %u x %u: f32, f16 or bf16 only", a_dtype, b_dtype);
        return;
    }
    if (a_dtype == LOOM_DTYPE_F32 && b_dtype == LOOM_DTYPE_F32) {
        lk_sgemm_cuda(trans_a, trans_b, M, N, K, alpha, (const float *)A, lda, (const float *)B, ldb, beta, C, ldc);
        return;
    }
    if (M <= 0 || N <= 0) return;
    if (a_dtype != b_dtype || K <= 0) {
        /* cuBLAS multiplies equal input types only: widen both to f32 (exact) and run sgemm,
         * which gives the same products as the CPU's path for these combinations. */
        const int64_t a_rows = trans_a ? K : M, b_rows = trans_b ? N : K;
        const int64_t a_n = a_rows * lda, b_n = b_rows * ldb;
        float *wide = (float *)lk_cuda_workspace((size_t)(a_n + b_n) * sizeof(float) + 1, fn);
        if (!wide) return;
        if (a_n > 0) lk_convert_cuda(wide, LOOM_DTYPE_F32, A, a_dtype, a_n);
        if (b_n > 0) lk_convert_cuda(wide + a_n, LOOM_DTYPE_F32, B, b_dtype, b_n);
        lk_sgemm_cuda(trans_a, trans_b, M, N, K, alpha, wide, lda, wide + a_n, ldb, beta, C, ldc);
        return;
    }
    cublasHandle_t h = lk_cuda_cublas(fn);
    if (!h) return;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
     * 16-bit inputs, f32 accumulation and output (CUBLAS_COMPUTE_32F: no reduced-precision
     * reduction), tensor cores where the GPU has them. */
    lk_cublas_ok(cublasGemmEx_64(h, op_b, op_a, N, M, K, &alpha, B, lk_cuda_type(b_dtype), ldb, A,
                                 lk_cuda_type(a_dtype), lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT),
                 fn);
}

/* One block per row: d = scale * p, then the label's entry loses scale, rounded once into
 * dtype, the CPU's arithmetic exactly. */
static __global__ void lk_ce_backward_cast_kernel(void *dlogits, uint32_t dtype, const float *probs,
                                                  const int32_t *labels, float scale, float smoothing, int64_t B,
                                                  int64_t C)
{
    /* Label smoothing (ABI 1.4): with smoothing 0 these are 0 and scale, the unsmoothed bits. */
    const float uniform = smoothing / (float)C, target = scale * (1.0f - smoothing);
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        const int32_t label = labels[b];
        const int valid = label >= 0 && label < C;
        const float *p = probs + b * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            float v = 0.0f;
            if (valid) {
                v = __fmul_rn(scale, __fsub_rn(p[c], uniform));
                if (c == label) v -= target;
            }
            lk_store(dlogits, dtype, b * C + c, v);
        }
    }
}

extern "C" void lk_softmax_cross_entropy_smoothed_backward_cast_cuda(void *dlogits, uint32_t dtype,
                                                                     const float *probs, const int32_t *labels,
                                                                     float scale, float smoothing, int64_t B, int64_t C)
{
    static const char fn[] = "lk_softmax_cross_entropy_backward_cast_cuda";
    if (B <= 0 || C <= 0) return;
    if (!lk_storage_dtype(dtype)) {
        lk_cuda_record(fn, "dtype %u: f32, f16 or bf16 only", dtype);
        return;
    }
    lk_ce_backward_cast_kernel<<<(unsigned int)(B < LK_CUDA_MAX_GRID ? B : LK_CUDA_MAX_GRID), LK_CUDA_BLOCK>>>(
        dlogits, dtype, probs, labels, scale, smoothing, B, C);
    lk_cuda_launched(fn);
}

extern "C" void lk_softmax_cross_entropy_backward_cast_cuda(void *dlogits, uint32_t dtype, const float *probs,
                                                            const int32_t *labels, float scale, int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_backward_cast_cuda(dlogits, dtype, probs, labels, scale, 0.0f, B, C);
}
