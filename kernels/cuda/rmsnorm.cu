/*
 * rmsnorm.cu - T5's layer norm on CUDA, with the formulas of kernels/cpu/rmsnorm.c:
 *   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps).
 * Backward, with dn = dout * weight and norm = x * rstd:
 *   dinp    += (dn - norm * mean(dn * norm)) * rstd
 *   dweight += sum_rows dout * norm
 *
 * One warp per row for the forward and for dinp (a T5-small row is 512 floats, 16 per lane).
 * In the forward every lane has read its elements into the sum before the warp reduction
 * returns, so out may alias inp. dweight is a column sum: a block owns 32 columns and sums all
 * rows in a fixed order (deterministic, no atomics), as layernorm.cu's parameter gradients.
 */
#include "common.cuh"

#define LK_RMS_WARPS 8 /* rows (warps) per block in the row kernels        */
#define LK_RMS_COLS 32 /* columns per block in the dweight reduction      */
#define LK_RMS_ROWS 16 /* rows summed in parallel per column (threadIdx.y) */

static __global__ void lk_rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *weight,
                                                 int64_t N, int64_t C, float eps)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t warps = (int64_t)gridDim.x * LK_RMS_WARPS;
    for (int64_t n = (int64_t)blockIdx.x * LK_RMS_WARPS + (threadIdx.x >> 5); n < N; n += warps) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        float ss = 0.0f;
        for (int64_t c = lane; c < C; c += 32)
            ss += x[c] * x[c];
        ss = lk_warp_reduce(ss, lk_sum_op());
        const float s = 1.0f / sqrtf(ss / (float)C + eps);
        for (int64_t c = lane; c < C; c += 32)
            o[c] = x[c] * s * weight[c];
        if (rstd && lane == 0) rstd[n] = s;
    }
}

static __global__ void lk_rmsnorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                                       const float *weight, const float *rstd, int64_t N, int64_t C)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t warps = (int64_t)gridDim.x * LK_RMS_WARPS;
    for (int64_t n = (int64_t)blockIdx.x * LK_RMS_WARPS + (threadIdx.x >> 5); n < N; n += warps) {
        const float *x = inp + n * C, *g = dout + n * C;
        float *d = dinp + n * C;
        const float s = rstd[n];
        float dot = 0.0f;
        for (int64_t c = lane; c < C; c += 32)
            dot += g[c] * weight[c] * x[c] * s;
        const float m = lk_warp_reduce(dot, lk_sum_op()) / (float)C;
        for (int64_t c = lane; c < C; c += 32)
            d[c] += (g[c] * weight[c] - x[c] * s * m) * s;
    }
}

static __global__ void lk_rmsnorm_backward_dweight_kernel(float *dweight, const float *dout, const float *inp,
                                                          const float *rstd, int64_t N, int64_t C)
{
    __shared__ float part[LK_RMS_ROWS][LK_RMS_COLS + 1];
    const int64_t c = (int64_t)blockIdx.x * LK_RMS_COLS + threadIdx.x;
    float acc = 0.0f;
    if (c < C)
        for (int64_t n = threadIdx.y; n < N; n += LK_RMS_ROWS)
            acc += dout[n * C + c] * inp[n * C + c] * rstd[n];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float sum = 0.0f;
        for (int r = 0; r < LK_RMS_ROWS; r++)
            sum += part[r][threadIdx.x];
        dweight[c] += sum;
    }
}

static unsigned int lk_rms_row_grid(int64_t N)
{
    const int64_t g = (N + LK_RMS_WARPS - 1) / LK_RMS_WARPS;
    return (unsigned int)(g < LK_CUDA_MAX_GRID ? g : LK_CUDA_MAX_GRID);
}

extern "C" void lk_rmsnorm_forward_cuda(float *out, float *rstd, const float *inp, const float *weight, int64_t N,
                                        int64_t C, float eps)
{
    if (N <= 0 || C <= 0) return;
    lk_rmsnorm_forward_kernel<<<lk_rms_row_grid(N), 32 * LK_RMS_WARPS>>>(out, rstd, inp, weight, N, C, eps);
    lk_cuda_launched("lk_rmsnorm_forward_cuda");
}

extern "C" void lk_rmsnorm_backward_cuda(float *dinp, float *dweight, const float *dout, const float *inp,
                                         const float *weight, const float *rstd, int64_t N, int64_t C)
{
    static const char fn[] = "lk_rmsnorm_backward_cuda";
    if (N <= 0 || C <= 0) return;
    if (dinp) {
        lk_rmsnorm_backward_dinp_kernel<<<lk_rms_row_grid(N), 32 * LK_RMS_WARPS>>>(dinp, dout, inp, weight, rstd, N, C);
        if (!lk_cuda_launched(fn)) return;
    }
    if (dweight) {
        const dim3 block(LK_RMS_COLS, LK_RMS_ROWS);
        const dim3 grid((unsigned int)((C + LK_RMS_COLS - 1) / LK_RMS_COLS));
        lk_rmsnorm_backward_dweight_kernel<<<grid, block>>>(dweight, dout, inp, rstd, N, C);
        lk_cuda_launched(fn);
    }
}
