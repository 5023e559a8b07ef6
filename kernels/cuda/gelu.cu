/*
 * gelu.cu - GELU, tanh approximation as in GPT-2, with the CPU's formulas (kernels/cpu/gelu.c):
 *   gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))),  k = sqrt(2/pi)
 *   gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),  t = tanh(...)
 *
 * Built without --use_fast_math: tanhf is the accurate one (2 ulp), not the approximate
 * tanh.approx instruction, and the 1 - t^2 cancellation is evaluated as written.
 */
#include "common.cuh"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* Beyond |x| = 10, tanhf(.) is exactly +-1 in float and the derivative exactly 1 or 0; the
 * guard also avoids 0 * inf = NaN once x*x overflows. Same threshold as the CPU. */
#define GELU_SATURATED 10.0f

static __device__ __forceinline__ float lk_gelu_value(float x)
{
    return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
}

static __device__ __forceinline__ float lk_gelu_slope(float x)
{
    if (x > GELU_SATURATED) return 1.0f;
    if (x < -GELU_SATURATED) return 0.0f;
    const float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
    const float sech2 = 1.0f - t * t; /* not 1/cosh^2: coshf overflows */
    return 0.5f * (1.0f + t) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
}

static __global__ void lk_gelu_forward_kernel(float *out, const float *inp, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = lk_gelu_value(inp[i]);
}

static __global__ void lk_gelu_backward_kernel(float *dinp, const float *inp, const float *dout, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dinp[i] += lk_gelu_slope(inp[i]) * dout[i];
}

/* ABI 1.9: the same on stored dtypes, each element loaded widened and stored rounded once. */
static __global__ void lk_gelu_forward_cast_kernel(void *out, uint32_t od, const void *inp, uint32_t id, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        lk_store(out, od, i, lk_gelu_value(lk_load(inp, id, i)));
}

/* Written as 0 + slope * dout: the bits of zeroing and accumulating, as on the CPU. */
static __global__ void lk_gelu_backward_cast_kernel(float *dinp, const void *inp, uint32_t id, const float *dout,
                                                    int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dinp[i] = 0.0f + lk_gelu_slope(lk_load(inp, id, i)) * dout[i];
}

extern "C" void lk_gelu_forward_cuda(float *out, const float *inp, int64_t n)
{
    if (n <= 0) return;
    lk_gelu_forward_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(out, inp, n);
    lk_cuda_launched("lk_gelu_forward_cuda");
}

extern "C" void lk_gelu_backward_cuda(float *dinp, const float *inp, const float *dout, int64_t n)
{
    if (n <= 0 || !dinp) return;
    lk_gelu_backward_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dinp, inp, dout, n);
    lk_cuda_launched("lk_gelu_backward_cuda");
}

extern "C" void lk_gelu_forward_cast_cuda(void *out, uint32_t out_dtype, const void *inp, uint32_t inp_dtype, int64_t n)
{
    if (n <= 0 || !loom_dtype_is_param(out_dtype) || !loom_dtype_is_param(inp_dtype)) return;
    lk_gelu_forward_cast_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(out, out_dtype, inp, inp_dtype, n);
    lk_cuda_launched("lk_gelu_forward_cast_cuda");
}

extern "C" void lk_gelu_backward_cast_cuda(float *dinp, const void *inp, uint32_t inp_dtype, const float *dout,
                                           int64_t n)
{
    if (n <= 0 || !dinp || !loom_dtype_is_param(inp_dtype)) return;
    lk_gelu_backward_cast_kernel<<<lk_cuda_grid(n, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dinp, inp, inp_dtype, dout, n);
    lk_cuda_launched("lk_gelu_backward_cast_cuda");
}
