/*
 * layernorm.cu - layer normalisation over the last dimension, as in GPT-2, with the CPU's
 * formulas (kernels/cpu/layernorm.c):
 *   norm = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps) (biased variance),
 *   out  = norm * weight + bias.
 * Backward, with dnorm = dout * weight:
 *   dinp    += (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) * rstd
 *   dweight += sum_rows dout * norm,  dbias += sum_rows dout.
 *
 * One warp per row for the forward and for dinp (a GPT-2 row, 768 floats, is 24 per lane; the
 * row stays in L1 across the passes). The variance is the corrected two-pass one, as on the
 * CPU. dweight and dbias are column sums: a block owns 32 columns and sums every row in a
 * fixed order (deterministic, no atomics), like the linear layer's bias gradient.
 */
#include "common.cuh"

#define LK_LN_WARPS 8 /* rows (warps) per block in the row kernels          */
#define LK_LN_COLS 32 /* columns per block in the dweight/dbias reduction   */
#define LK_LN_ROWS 16 /* rows summed in parallel per column (threadIdx.y)  */

static __global__ void lk_layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                                   const float *weight, const float *bias, int64_t N, int64_t C,
                                                   float eps)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t warp = (int64_t)blockIdx.x * LK_LN_WARPS + (threadIdx.x >> 5);
    const int64_t warps = (int64_t)gridDim.x * LK_LN_WARPS;
    const float inv_c = 1.0f / (float)C;
    for (int64_t n = warp; n < N; n += warps) { /* uniform per warp: the shuffles see 32 lanes */
        const float *x = inp + n * C;
        float *o = out + n * C;
        float sum = 0.0f;
        for (int64_t c = lane; c < C; c += 32)
            sum += x[c];
        const float m0 = lk_warp_reduce(sum, lk_sum_op()) * inv_c;
        /* Corrected two-pass: the deviations' own sum is m0's rounding error; adding it back
         * keeps the mean accurate when |mean| >> std. */
        float dsum = 0.0f, var = 0.0f;
        for (int64_t c = lane; c < C; c += 32) {
            const float d = x[c] - m0;
            dsum += d;
            var += d * d;
        }
        dsum = lk_warp_reduce(dsum, lk_sum_op());
        var = lk_warp_reduce(var, lk_sum_op());
        const float m = m0 + dsum * inv_c;
        var = (var - dsum * dsum * inv_c) * inv_c;
        const float s = 1.0f / sqrtf(var + eps);
        for (int64_t c = lane; c < C; c += 32)
            o[c] = (x[c] - m) * s * weight[c] + bias[c];
        if (lane == 0) {
            if (mean) mean[n] = m;
            if (rstd) rstd[n] = s;
        }
    }
}

static __global__ void lk_layernorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                                         const float *weight, const float *mean, const float *rstd,
                                                         int64_t N, int64_t C)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t warp = (int64_t)blockIdx.x * LK_LN_WARPS + (threadIdx.x >> 5);
    const int64_t warps = (int64_t)gridDim.x * LK_LN_WARPS;
    const float inv_c = 1.0f / (float)C;
    for (int64_t n = warp; n < N; n += warps) {
        const float *x = inp + n * C, *g = dout + n * C;
        float *d = dinp + n * C;
        const float m = mean[n], s = rstd[n];
        float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
        for (int64_t c = lane; c < C; c += 32) {
            const float dnorm = g[c] * weight[c];
            dnorm_sum += dnorm;
            dnorm_norm_sum += dnorm * (x[c] - m) * s;
        }
        const float dnorm_mean = lk_warp_reduce(dnorm_sum, lk_sum_op()) * inv_c;
        const float dnorm_norm_mean = lk_warp_reduce(dnorm_norm_sum, lk_sum_op()) * inv_c;
        for (int64_t c = lane; c < C; c += 32) {
            const float norm = (x[c] - m) * s;
            d[c] += (g[c] * weight[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
}

static __global__ void lk_layernorm_backward_params_kernel(float *dweight, float *dbias, const float *dout,
                                                           const float *inp, const float *mean, const float *rstd,
                                                           int64_t N, int64_t C)
{
    __shared__ float pw[LK_LN_ROWS][LK_LN_COLS + 1], pb[LK_LN_ROWS][LK_LN_COLS + 1];
    const int64_t c = (int64_t)blockIdx.x * LK_LN_COLS + threadIdx.x;
    float dw = 0.0f, db = 0.0f;
    if (c < C) {
        for (int64_t n = threadIdx.y; n < N; n += LK_LN_ROWS) {
            const float g = dout[n * C + c];
            dw += g * (inp[n * C + c] - mean[n]) * rstd[n];
            db += g;
        }
    }
    pw[threadIdx.y][threadIdx.x] = dw;
    pb[threadIdx.y][threadIdx.x] = db;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float sw = 0.0f, sb = 0.0f;
        for (int r = 0; r < LK_LN_ROWS; r++)
            sw += pw[r][threadIdx.x], sb += pb[r][threadIdx.x];
        if (dweight) dweight[c] += sw;
        if (dbias) dbias[c] += sb;
    }
}

static unsigned int lk_ln_row_grid(int64_t N)
{
    const int64_t g = (N + LK_LN_WARPS - 1) / LK_LN_WARPS;
    return (unsigned int)(g < LK_CUDA_MAX_GRID ? g : LK_CUDA_MAX_GRID);
}

extern "C" void lk_layernorm_forward_cuda(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                          const float *bias, int64_t N, int64_t C, float eps)
{
    if (N <= 0 || C <= 0) return;
    lk_layernorm_forward_kernel<<<lk_ln_row_grid(N), 32 * LK_LN_WARPS>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
    lk_cuda_launched("lk_layernorm_forward_cuda");
}

extern "C" void lk_layernorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout,
                                           const float *inp, const float *weight, const float *mean, const float *rstd,
                                           int64_t N, int64_t C)
{
    static const char fn[] = "lk_layernorm_backward_cuda";
    if (N <= 0 || C <= 0) return;
    if (dinp) {
        lk_layernorm_backward_dinp_kernel<<<lk_ln_row_grid(N), 32 * LK_LN_WARPS>>>(dinp, dout, inp, weight, mean, rstd,
                                                                                   N, C);
        if (!lk_cuda_launched(fn)) return;
    }
    if (dweight || dbias) {
        const dim3 block(LK_LN_COLS, LK_LN_ROWS);
        const dim3 grid((unsigned int)((C + LK_LN_COLS - 1) / LK_LN_COLS));
        lk_layernorm_backward_params_kernel<<<grid, block>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
        lk_cuda_launched(fn);
    }
}
