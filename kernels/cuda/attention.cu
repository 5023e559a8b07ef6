/*
 * attention.cu - causal multi-head self-attention (GPT-2's), qkv packed [B, T, 3C], with the
 * CPU's contract and formulas (kernels/cpu/attention.c):
 *   q_t = qkv[b, t, h*hs : (h+1)*hs], k_t at offset C, v_t at offset 2C, hs = C / NH,
 *   att[t, t2] = softmax_{t2 <= t}(q_t . k_t2 / sqrt(hs)),  out_t = sum_{t2 <= t} att[t, t2] v_t2.
 *
 * A straightforward, exact kernel (no flash-style tiling): one warp per (b, h, t) row.
 *   forward:  lanes take the scores t2 = lane, lane + 32, ... (a dot product over hs each),
 *             the row's max and sum are warp reductions, and then lanes take the hs output
 *             dimensions (coalesced reads of v rows).
 *   backward, with datt[t, t2] = dout_t . v_t2, S_t = sum_t2 att[t, t2] datt[t, t2] and
 *             dpre[t, t2] = att[t, t2] (datt[t, t2] - S_t) / sqrt(hs):
 *     kernel 1, warp per row t:     S_t (kept in a scratch buffer), dq_t += sum_t2 dpre k_t2;
 *     kernel 2, warp per column t2: dk_t2 += sum_{t >= t2} dpre q_t, dv_t2 += sum att dout_t.
 *   Splitting by column gives dk and dv one writer per element: deterministic, no atomics.
 *   The scratch buffer (B * NH * T floats) is this thread's lk_cuda_workspace, since the API
 *   takes no scratch from the caller.
 * In both, lanes hold LK_ATT_DIMS output dimensions in registers; a head size past 32 *
 * LK_ATT_DIMS is done in several sweeps (correct, slower).
 */
#include "common.cuh"

#define LK_ATT_WARPS 8 /* warps (rows) per block                                          */
#define LK_ATT_DIMS 8  /* head dimensions per lane held in registers: hs <= 256 in one go */

/* a . b over n floats, cooperatively by the warp; every lane gets the result. */
static __device__ __forceinline__ float lk_warp_dot(const float *a, const float *b, int64_t n, int lane)
{
    float s = 0.0f;
    for (int64_t i = lane; i < n; i += 32)
        s += a[i] * b[i];
    return lk_warp_reduce(s, lk_sum_op());
}

static __global__ void lk_attention_forward_kernel(float *out, float *att, const float *qkv, int64_t B, int64_t T,
                                                   int64_t C, int64_t NH)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t hs = C / NH, C3 = 3 * C, rows = B * NH * T;
    const float scale = 1.0f / sqrtf((float)hs);
    const int64_t first = (int64_t)blockIdx.x * LK_ATT_WARPS + (threadIdx.x >> 5);
    for (int64_t row = first; row < rows; row += (int64_t)gridDim.x * LK_ATT_WARPS) {
        const int64_t t = row % T, bh = row / T, h = bh % NH, b = bh / NH;
        const float *q = qkv + b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        const float *qt = q + t * C3;
        float *a = att + row * T; /* att[b, h, t, :]: rows are (b, h, t) in order */
        float max = -INFINITY;
        for (int64_t t2 = lane; t2 <= t; t2 += 32) {
            const float *kt = k + t2 * C3;
            float x = 0.0f;
            for (int64_t i = 0; i < hs; i++)
                x += qt[i] * kt[i];
            x *= scale;
            a[t2] = x;
            max = fmaxf(max, x);
        }
        max = lk_warp_reduce(max, lk_max_op());
        float sum = 0.0f;
        for (int64_t t2 = lane; t2 <= t; t2 += 32) { /* each lane rereads only its own scores */
            const float e = expf(a[t2] - max);
            a[t2] = e;
            sum += e;
        }
        const float inv = 1.0f / lk_warp_reduce(sum, lk_sum_op());
        for (int64_t t2 = lane; t2 <= t; t2 += 32)
            a[t2] *= inv;
        for (int64_t t2 = t + 1 + lane; t2 < T; t2 += 32)
            a[t2] = 0.0f;
        __syncwarp(); /* every lane's probabilities are visible to the whole warp */
        float *ot = out + b * T * C + t * C + h * hs;
        for (int64_t i0 = 0; i0 < hs; i0 += 32 * LK_ATT_DIMS) {
            float acc[LK_ATT_DIMS];
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++)
                acc[r] = 0.0f;
            for (int64_t t2 = 0; t2 <= t; t2++) {
                const float p = a[t2];
                const float *vt = v + t2 * C3 + i0;
#pragma unroll
                for (int r = 0; r < LK_ATT_DIMS; r++) {
                    const int64_t i = lane + 32 * r;
                    if (i0 + i < hs) acc[r] += p * vt[i];
                }
            }
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++) {
                const int64_t i = lane + 32 * r;
                if (i0 + i < hs) ot[i0 + i] = acc[r];
            }
        }
        __syncwarp(); /* the row's reads of a[] finish before the next row's writes */
    }
}

/* Kernel 1: S_t for every row, and dq. */
static __global__ void lk_attention_backward_dq_kernel(float *dqkv, float *rowsum, const float *dout, const float *qkv,
                                                       const float *att, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t hs = C / NH, C3 = 3 * C, rows = B * NH * T;
    const float scale = 1.0f / sqrtf((float)hs);
    const int64_t first = (int64_t)blockIdx.x * LK_ATT_WARPS + (threadIdx.x >> 5);
    for (int64_t row = first; row < rows; row += (int64_t)gridDim.x * LK_ATT_WARPS) {
        const int64_t t = row % T, bh = row / T, h = bh % NH, b = bh / NH;
        const float *q = qkv + b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        const float *a = att + row * T;
        const float *gt = dout + b * T * C + t * C + h * hs;
        float *dqt = dqkv + b * T * C3 + t * C3 + h * hs;
        float s = 0.0f;
        for (int64_t t2 = 0; t2 <= t; t2++)
            s += a[t2] * lk_warp_dot(gt, v + t2 * C3, hs, lane);
        if (lane == 0) rowsum[row] = s;
        for (int64_t i0 = 0; i0 < hs; i0 += 32 * LK_ATT_DIMS) {
            float acc[LK_ATT_DIMS];
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++)
                acc[r] = 0.0f;
            for (int64_t t2 = 0; t2 <= t; t2++) {
                const float dpre = a[t2] * (lk_warp_dot(gt, v + t2 * C3, hs, lane) - s) * scale;
                const float *kt = k + t2 * C3 + i0;
#pragma unroll
                for (int r = 0; r < LK_ATT_DIMS; r++) {
                    const int64_t i = lane + 32 * r;
                    if (i0 + i < hs) acc[r] += dpre * kt[i];
                }
            }
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++) {
                const int64_t i = lane + 32 * r;
                if (i0 + i < hs) dqt[i0 + i] += acc[r];
            }
        }
    }
}

/* Kernel 2: dk and dv, one warp per key/value position t2. */
static __global__ void lk_attention_backward_dkv_kernel(float *dqkv, const float *rowsum, const float *dout,
                                                        const float *qkv, const float *att, int64_t B, int64_t T,
                                                        int64_t C, int64_t NH)
{
    const int lane = (int)(threadIdx.x & 31u);
    const int64_t hs = C / NH, C3 = 3 * C, cols = B * NH * T;
    const float scale = 1.0f / sqrtf((float)hs);
    const int64_t first = (int64_t)blockIdx.x * LK_ATT_WARPS + (threadIdx.x >> 5);
    for (int64_t col = first; col < cols; col += (int64_t)gridDim.x * LK_ATT_WARPS) {
        const int64_t t2 = col % T, bh = col / T, h = bh % NH, b = bh / NH;
        const float *q = qkv + b * T * C3 + h * hs;
        const float *vt2 = q + 2 * C + t2 * C3;
        const float *g = dout + b * T * C + h * hs;
        const float *a = att + bh * T * T; /* a[t * T + t2] */
        const float *s = rowsum + bh * T;
        float *dkt2 = dqkv + b * T * C3 + t2 * C3 + C + h * hs, *dvt2 = dkt2 + C;
        for (int64_t i0 = 0; i0 < hs; i0 += 32 * LK_ATT_DIMS) {
            float dk[LK_ATT_DIMS], dv[LK_ATT_DIMS];
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++)
                dk[r] = 0.0f, dv[r] = 0.0f;
            for (int64_t t = t2; t < T; t++) {
                const float *gt = g + t * C, *qt = q + t * C3;
                const float p = a[t * T + t2];
                const float dpre = p * (lk_warp_dot(gt, vt2, hs, lane) - s[t]) * scale;
#pragma unroll
                for (int r = 0; r < LK_ATT_DIMS; r++) {
                    const int64_t i = i0 + lane + 32 * r;
                    if (i < hs) dk[r] += dpre * qt[i], dv[r] += p * gt[i];
                }
            }
#pragma unroll
            for (int r = 0; r < LK_ATT_DIMS; r++) {
                const int64_t i = i0 + lane + 32 * r;
                if (i < hs) dkt2[i] += dk[r], dvt2[i] += dv[r];
            }
        }
    }
}

static unsigned int lk_att_grid(int64_t rows)
{
    const int64_t g = (rows + LK_ATT_WARPS - 1) / LK_ATT_WARPS;
    return (unsigned int)(g < LK_CUDA_MAX_GRID ? g : LK_CUDA_MAX_GRID);
}

extern "C" void lk_attention_forward_cuda(float *out, float *att, const float *qkv, int64_t B, int64_t T, int64_t C,
                                          int64_t NH)
{
    if (B <= 0 || T <= 0 || C <= 0 || NH <= 0) return;
    lk_attention_forward_kernel<<<lk_att_grid(B * NH * T), 32 * LK_ATT_WARPS>>>(out, att, qkv, B, T, C, NH);
    lk_cuda_launched("lk_attention_forward_cuda");
}

extern "C" void lk_attention_backward_cuda(float *dqkv, const float *dout, const float *qkv, const float *att,
                                           int64_t B, int64_t T, int64_t C, int64_t NH)
{
    static const char fn[] = "lk_attention_backward_cuda";
    if (!dqkv || B <= 0 || T <= 0 || C <= 0 || NH <= 0) return;
    const int64_t rows = B * NH * T;
    float *rowsum = (float *)lk_cuda_workspace((size_t)rows * sizeof(float), fn);
    if (!rowsum) return;
    lk_attention_backward_dq_kernel<<<lk_att_grid(rows), 32 * LK_ATT_WARPS>>>(dqkv, rowsum, dout, qkv, att, B, T, C,
                                                                              NH);
    if (!lk_cuda_launched(fn)) return;
    lk_attention_backward_dkv_kernel<<<lk_att_grid(rows), 32 * LK_ATT_WARPS>>>(dqkv, rowsum, dout, qkv, att, B, T, C,
                                                                               NH);
    lk_cuda_launched(fn);
}
