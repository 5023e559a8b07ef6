/*
 * common.cuh - what the CUDA kernel files share: error recording (no exceptions, no aborts:
 * a failure is written to the calling thread's error slot and the call returns), the
 * per-thread cuBLAS handle and scratch buffer, launch-size helpers and warp/block-wide
 * reductions.
 *
 * Everything here is internal to loom_kernels_cuda; the public surface is lk_cuda.h.
 */
#ifndef LOOM_KERNELS_CUDA_COMMON_CUH
#define LOOM_KERNELS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "lk_cuda.h"

/* Threads per block for the elementwise kernels: a multiple of the warp size that keeps
 * enough warps resident per SM to hide memory latency on every architecture we build for. */
#define LK_CUDA_BLOCK 256

/* Upper bound on blocks per launch for grid-stride kernels. More blocks than this add no
 * parallelism on any current GPU (an H100 holds 132 SMs x 2048 threads = 1056 blocks of 256)
 * and keep gridDim.x well inside its 2^31 - 1 limit for any n. */
#define LK_CUDA_MAX_GRID 65536

/* gridDim.y and gridDim.z are limited to 65535: row loops over y stride by gridDim.y. */
#define LK_CUDA_MAX_GRID_Y 65535

/* Record "fn: message" as this thread's last error. */
void lk_cuda_record(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Return 1 when err is cudaSuccess; otherwise record it (naming fn) and return 0. */
int lk_cuda_ok(cudaError_t err, const char *fn);

/* After a <<<>>> launch: picks up a launch failure (bad configuration, no device, no kernel
 * image for this GPU) and records it. Returns 1 when the launch went through. */
int lk_cuda_launched(const char *fn);

/* Return 1 when st is CUBLAS_STATUS_SUCCESS; otherwise record it and return 0. */
int lk_cublas_ok(cublasStatus_t st, const char *fn);

/* This thread's cuBLAS handle for the current device, created on first use (it is bound to
 * the device that was current when it was created, so there is one per device). NULL, with
 * the error recorded, when there is no device or cuBLAS cannot start. */
cublasHandle_t lk_cuda_cublas(const char *fn);

/* This thread's scratch buffer on the current device, at least `bytes` long; reused (and
 * grown) across calls, so it is only valid until this thread's next call that uses it. Work
 * on it is ordered by stream 0 like everything else here. NULL, with the error recorded, on
 * failure. For kernels whose API takes no scratch from the caller (attention backward). */
void *lk_cuda_workspace(size_t bytes, const char *fn);

/* The bias of the linear and Conv1D layers (linear.cu). lk_seed_bias writes bias into every
 * row of out[B, OC] before a product with beta = 1 and returns that beta (0 without a bias,
 * -1 when the launch failed, recorded); lk_bias_backward adds the column sums of dout[B, OC]
 * to dbias (nothing when dbias is NULL). */
float lk_seed_bias(float *out, const float *bias, int64_t B, int64_t OC, const char *fn);
void lk_bias_backward(float *dbias, const float *dout, int64_t B, int64_t OC, const char *fn);

/* Blocks for a grid-stride loop over n elements with `block` threads each. n must be > 0. */
static inline unsigned int lk_cuda_grid(int64_t n, int block)
{
    const int64_t g = (n + block - 1) / block;
    return (unsigned int)(g < LK_CUDA_MAX_GRID ? g : LK_CUDA_MAX_GRID);
}

/* Blocks along y for a loop over `rows` rows (rows > 0). */
static inline unsigned int lk_cuda_grid_y(int64_t rows)
{
    return (unsigned int)(rows < LK_CUDA_MAX_GRID_Y ? rows : LK_CUDA_MAX_GRID_Y);
}

/* Element i of a buffer stored as dtype (F32, F16 or BF16), widened to f32; and the store that
 * rounds to nearest even (keeping NaN, f16 overflowing to inf), as the CPU's conversions do. */
static __device__ __forceinline__ float lk_load(const void *p, uint32_t dtype, int64_t i)
{
    if (dtype == LOOM_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    if (dtype == LOOM_DTYPE_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

static __device__ __forceinline__ void lk_store(void *p, uint32_t dtype, int64_t i, float v)
{
    if (dtype == LOOM_DTYPE_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else if (dtype == LOOM_DTYPE_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}

/* ---------------------------------------------------------------------------------------- */
/* Warp- and block-wide reductions. For the block ones, blockDim.x must be a multiple of 32
 * (at most 1024) and every thread of the block must call them (they synchronise); each thread
 * gets the block's result. */

struct lk_max_op {
    __device__ float operator()(float a, float b) const
    {
        return fmaxf(a, b);
    }
};
struct lk_sum_op {
    __device__ float operator()(float a, float b) const
    {
        return a + b;
    }
};

/* Every lane of the warp gets the result; all 32 lanes must call it. */
template <typename Op> static __device__ __forceinline__ float lk_warp_reduce(float v, Op op)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

template <typename Op> static __device__ __forceinline__ float lk_block_reduce(float v, Op op, float identity)
{
    __shared__ float partial[32];
    __shared__ float result;
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int warps = (int)(blockDim.x >> 5);
    v = lk_warp_reduce(v, op);
    /* The previous call's readers of `partial`/`result` must be done before we overwrite. */
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lk_warp_reduce(lane < warps ? partial[lane] : identity, op);
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

#endif
