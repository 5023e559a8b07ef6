/*
 * relu.cu - rectified linear unit, elementwise, grid-stride loops.
 */
#include "common.cuh"

static __global__ void lk_relu_forward_kernel(float *out, const float *inp, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = inp[i] <= 0.0f ? 0.0f : inp[i]; /* NaN goes through, as on the CPU and in PyTorch */
}

/* The derivative at exactly 0 is taken as 0 (PyTorch's choice, and the CPU's); at NaN it passes. */
static __global__ void lk_relu_backward_kernel(float *dinp, const float *inp, const float *dout, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dinp[i] += inp[i] <= 0.0f ? 0.0f : dout[i];
}

extern "C" void lk_relu_forward_cuda(float *out, const float *inp, int64_t n)
{
    if (n <= 0) return;
    lk_relu_forward_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(out, inp, n);
    lk_cuda_launched("lk_relu_forward_cuda");
}

extern "C" void lk_relu_backward_cuda(float *dinp, const float *inp, const float *dout, int64_t n)
{
    if (n <= 0 || !dinp) return;
    lk_relu_backward_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dinp, inp, dout, n);
    lk_cuda_launched("lk_relu_backward_cuda");
}
