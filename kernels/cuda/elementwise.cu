/*
 * elementwise.cu - the residual connection's add (forward) and gradient fan-in (backward).
 */
#include "common.cuh"

/* out may alias a or b: each element is read before it is written, by the same thread. */
static __global__ void lk_add_kernel(float *out, const float *a, const float *b, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = a[i] + b[i];
}

static __global__ void lk_accumulate_kernel(float *dst, const float *src, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] += src[i];
}

extern "C" void lk_add_cuda(float *out, const float *a, const float *b, int64_t n)
{
    if (n <= 0) return;
    lk_add_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(out, a, b, n);
    lk_cuda_launched("lk_add_cuda");
}

extern "C" void lk_accumulate_cuda(float *dst, const float *src, int64_t n)
{
    if (n <= 0 || !dst) return;
    lk_accumulate_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dst, src, n);
    lk_cuda_launched("lk_accumulate_cuda");
}
