/*
 * linear.cu - nn.Linear on lk_sgemm_cuda, and the two small bias kernels it shares with
 * conv1d.cu:
 *
 * nn.Linear (weight [OC, IC]):
 *   forward:  out[B,OC]      = inp[B,IC] @ weight^T (+ bias, broadcast over rows)
 *   backward: dinp[B,IC]    += dout[B,OC] @ weight              (sgemm, beta = 1)
 *             dweight[OC,IC]+= dout^T @ inp                     (sgemm, beta = 1)
 *             dbias[OC]     += sum over rows of dout            (column reduction)
 * HF Conv1D (conv1d.cu) is the same with the weight's transposes flipped.
 */
#include "common.cuh"

/* Columns per block of the bias reduction: one warp reads 32 consecutive floats of a row, so
 * every load is a single coalesced 128-byte transaction. */
#define LK_BIAS_COLS 32
/* Rows summed in parallel per column (threadIdx.y); the partial sums meet in shared memory.
 * Each column is summed by one block in a fixed order, so the result is deterministic. */
#define LK_BIAS_ROWS 16

/* out[b, :] = bias for every row: the product then adds onto it (beta = 1), as on the CPU,
 * so both devices round the same sum in the same order. */
static __global__ void lk_bias_broadcast_kernel(float *out, const float *bias, int64_t B, int64_t OC)
{
    const int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    const float v = bias[o];
    for (int64_t b = blockIdx.y; b < B; b += gridDim.y)
        out[b * OC + o] = v;
}

static __global__ void lk_bias_backward_kernel(float *dbias, const float *dout, int64_t B, int64_t OC)
{
    __shared__ float partial[LK_BIAS_ROWS][LK_BIAS_COLS + 1]; /* +1: no bank conflicts */
    const int64_t o = (int64_t)blockIdx.x * LK_BIAS_COLS + threadIdx.x;
    float acc = 0.0f;
    if (o < OC)
        for (int64_t b = threadIdx.y; b < B; b += LK_BIAS_ROWS)
            acc += dout[b * OC + o];
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && o < OC) {
        float sum = 0.0f;
        for (int r = 0; r < LK_BIAS_ROWS; r++)
            sum += partial[r][threadIdx.x];
        dbias[o] += sum;
    }
}

/* See common.cuh. */
float lk_seed_bias(float *out, const float *bias, int64_t B, int64_t OC, const char *fn)
{
    if (!bias) return 0.0f;
    const dim3 grid(lk_cuda_grid(OC, LK_CUDA_BLOCK), lk_cuda_grid_y(B));
    lk_bias_broadcast_kernel<<<grid, LK_CUDA_BLOCK>>>(out, bias, B, OC);
    return lk_cuda_launched(fn) ? 1.0f : -1.0f;
}

void lk_bias_backward(float *dbias, const float *dout, int64_t B, int64_t OC, const char *fn)
{
    if (!dbias || OC <= 0 || B <= 0) return;
    const dim3 block(LK_BIAS_COLS, LK_BIAS_ROWS);
    const dim3 grid((unsigned int)((OC + LK_BIAS_COLS - 1) / LK_BIAS_COLS));
    lk_bias_backward_kernel<<<grid, block>>>(dbias, dout, B, OC);
    lk_cuda_launched(fn);
}

extern "C" void lk_linear_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int64_t B,
                                       int64_t IC, int64_t OC)
{
    if (B <= 0 || OC <= 0) return;
    const float beta = lk_seed_bias(out, bias, B, OC, "lk_linear_forward_cuda");
    if (beta < 0.0f) return;
    lk_sgemm_cuda(0, 1, B, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
}

extern "C" void lk_linear_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                        const float *weight, int64_t B, int64_t IC, int64_t OC)
{
    if (dinp) lk_sgemm_cuda(0, 0, B, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
    if (dweight) lk_sgemm_cuda(1, 0, OC, IC, B, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    lk_bias_backward(dbias, dout, B, OC, "lk_linear_backward_cuda");
}
