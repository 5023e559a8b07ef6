/*
 * attention_flash.cu - causal attention without the [B, NH, T, T] probabilities on CUDA: the
 * contract of kernels/cpu/attention_flash.c (abi/loom/kernels.h, attention_flash_forward and
 * _backward): qkv [B, T, 3C] stored as F32, BF16 or F16, computed in f32; the forward keeps an
 * online softmax per query row and saves lse = max + log(sum); the backward recomputes
 * P = exp(S - lse).
 *
 * Schedule: one warp per (batch, head, query row); keys go by in groups of 32, one key per
 * lane. A lane computes its key's full score (q is in shared memory), the warp merges the 32
 * scores into the running max and sum, and then each lane updates the output dimensions it
 * owns (d = lane, lane + 32, ...) with every key's probability broadcast by a shuffle. Memory
 * is O(1) per row beyond qkv, out and lse; head sizes up to LK_FLASH_MAX_HS.
 *
 * This is the correctness-first version: no tensor cores and no shared K/V tiles between the
 * rows of a block, so at T = 1024 it is far from FlashAttention-2's speed (docs/gpu.md lists
 * it as not yet tuned). The backward's dk and dv are sums over query rows that several warps
 * add to with atomicAdd: their round-off depends on the order the warps run in, unlike the
 * CPU kernel's, which is deterministic.
 *
 * Dropout (ABI 1.4, _dropout members): probability e = ((b NH + h) T + t) T + j is kept, scaled
 * by 1 / (1 - p), when loom_dropout_keep(seed, e, p) (the function the CPU kernel calls, so both
 * devices draw the same mask); the running sum and lse stay the undropped softmax's. The
 * backward draws the mask again: dv += P Z dout, dS = P (Z dP - D), FlashAttention's backward
 * with dropout. Without dropout nothing is multiplied: the 1.3 arithmetic, bit for bit.
 */
#include "common.cuh"

#define LK_FLASH_MAX_HS 256                  /* 8 dimensions per lane */
#define LK_FLASH_DIMS (LK_FLASH_MAX_HS / 32) /* registers per lane for a row's accumulators */
#define LK_FLASH_WARPS 4                     /* query rows per block */

typedef struct lk_flash_shape {
    int64_t B, T, C, NH, hs;
    float scale, dropout, keep_scale;
    uint64_t seed;
} lk_flash_shape;

/* Dropout's multiplier of probability (row t, key j) of head bh: 0 or 1 / (1 - p). Called only
 * with s.dropout > 0. */
static __device__ __forceinline__ float lk_flash_keep(const lk_flash_shape &s, int64_t bh, int64_t t, int64_t j)
{
    return loom_dropout_keep(s.seed, (uint64_t)((bh * s.T + t) * s.T + j), s.dropout) ? s.keep_scale : 0.0f;
}

/* Element d of row t's part `part` (0 = q, 1 = k, 2 = v) of head h in batch b. */
static __device__ __forceinline__ float lk_qkv(const void *qkv, uint32_t dtype, const lk_flash_shape &s, int64_t b,
                                               int64_t t, int part, int64_t h, int64_t d)
{
    return lk_load(qkv, dtype, (b * s.T + t) * 3 * s.C + part * s.C + h * s.hs + d);
}

/* The scaled score of query row q_row (in shared memory) against key j. */
static __device__ __forceinline__ float lk_score(const float *q_row, const void *qkv, uint32_t dtype,
                                                 const lk_flash_shape &s, int64_t b, int64_t j, int64_t h)
{
    float dot = 0.0f;
    for (int64_t d = 0; d < s.hs; d++)
        dot += q_row[d] * lk_qkv(qkv, dtype, s, b, j, 1, h, d);
    return dot * s.scale;
}

static __global__ void lk_flash_forward_kernel(float *out, float *lse, const void *qkv, uint32_t dtype,
                                               lk_flash_shape s)
{
    __shared__ float q_shared[LK_FLASH_WARPS][LK_FLASH_MAX_HS];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int64_t bh = blockIdx.y, b = bh / s.NH, h = bh % s.NH;
    const int64_t t = (int64_t)blockIdx.x * LK_FLASH_WARPS + warp;
    if (t >= s.T) return; /* a whole warp leaves together: no shuffle is left waiting */
    float *q_row = q_shared[warp];
    for (int64_t d = lane; d < s.hs; d += 32)
        q_row[d] = lk_qkv(qkv, dtype, s, b, t, 0, h, d);
    __syncwarp();
    float acc[LK_FLASH_DIMS];
    for (int i = 0; i < LK_FLASH_DIMS; i++)
        acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 <= t; j0 += 32) {
        const int64_t j = j0 + lane;
        const float score = j <= t ? lk_score(q_row, qkv, dtype, s, b, j, h) : -INFINITY;
        const float m_new = fmaxf(m, lk_warp_reduce(score, lk_max_op()));
        float p = j <= t ? expf(score - m_new) : 0.0f;
        const float rescale = expf(m - m_new); /* 0 on the first group (m = -inf) */
        l = l * rescale + lk_warp_reduce(p, lk_sum_op());
        if (s.dropout > 0.0f && j <= t) p *= lk_flash_keep(s, bh, t, j); /* after the sum: l stays undropped */
        for (int i = 0; i < LK_FLASH_DIMS; i++)
            acc[i] *= rescale;
        const int keys = (int)(t - j0 + 1 < 32 ? t - j0 + 1 : 32);
        for (int k = 0; k < keys; k++) {
            const float pk = __shfl_sync(0xffffffffu, p, k);
            for (int i = 0; i < LK_FLASH_DIMS; i++) {
                const int64_t d = lane + 32 * i;
                if (d < s.hs) acc[i] += pk * lk_qkv(qkv, dtype, s, b, j0 + k, 2, h, d);
            }
        }
        m = m_new;
    }
    const float inv = 1.0f / l;
    for (int i = 0; i < LK_FLASH_DIMS; i++) {
        const int64_t d = lane + 32 * i;
        if (d < s.hs) out[(b * s.T + t) * s.C + h * s.hs + d] = acc[i] * inv;
    }
    if (lane == 0) lse[bh * s.T + t] = m + logf(l);
}

/* Per query row t: D = dout . out; for each key j <= t: P = exp(S - lse), dP = dout . v_j,
 * dS = P (dP - D); dq += scale dS k_j (this warp's registers), dk_j += scale dS q and
 * dv_j += P dout (atomics: other rows add to the same keys). */
static __global__ void lk_flash_backward_kernel(float *dqkv, const float *dout, const void *qkv, uint32_t dtype,
                                                const float *out, const float *lse, lk_flash_shape s)
{
    __shared__ float q_shared[LK_FLASH_WARPS][LK_FLASH_MAX_HS];
    __shared__ float do_shared[LK_FLASH_WARPS][LK_FLASH_MAX_HS];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int64_t bh = blockIdx.y, b = bh / s.NH, h = bh % s.NH;
    const int64_t t = (int64_t)blockIdx.x * LK_FLASH_WARPS + warp;
    if (t >= s.T) return;
    float *q_row = q_shared[warp], *do_row = do_shared[warp];
    const int64_t row = (b * s.T + t) * s.C + h * s.hs;
    float D = 0.0f;
    for (int64_t d = lane; d < s.hs; d += 32) {
        q_row[d] = lk_qkv(qkv, dtype, s, b, t, 0, h, d);
        do_row[d] = dout[row + d];
        D += do_row[d] * out[row + d];
    }
    D = lk_warp_reduce(D, lk_sum_op());
    __syncwarp();
    const float row_lse = lse[bh * s.T + t];
    float dq[LK_FLASH_DIMS];
    for (int i = 0; i < LK_FLASH_DIMS; i++)
        dq[i] = 0.0f;
    for (int64_t j0 = 0; j0 <= t; j0 += 32) {
        const int64_t j = j0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (j <= t) {
            p = expf(lk_score(q_row, qkv, dtype, s, b, j, h) - row_lse);
            float dp = 0.0f;
            for (int64_t d = 0; d < s.hs; d++)
                dp += do_row[d] * lk_qkv(qkv, dtype, s, b, j, 2, h, d);
            if (s.dropout > 0.0f) { /* p becomes the dropped weight of v; ds uses the undropped one */
                const float z = lk_flash_keep(s, bh, t, j);
                ds = p * (dp * z - D);
                p *= z;
            } else {
                ds = p * (dp - D);
            }
        }
        const int keys = (int)(t - j0 + 1 < 32 ? t - j0 + 1 : 32);
        for (int k = 0; k < keys; k++) {
            const float pk = __shfl_sync(0xffffffffu, p, k), dsk = __shfl_sync(0xffffffffu, ds, k);
            float *dk = dqkv + (b * s.T + j0 + k) * 3 * s.C + s.C + h * s.hs;
            float *dv = dk + s.C;
            for (int i = 0; i < LK_FLASH_DIMS; i++) {
                const int64_t d = lane + 32 * i;
                if (d >= s.hs) continue;
                dq[i] += s.scale * dsk * lk_qkv(qkv, dtype, s, b, j0 + k, 1, h, d);
                atomicAdd(dk + d, s.scale * dsk * q_row[d]);
                atomicAdd(dv + d, pk * do_row[d]);
            }
        }
    }
    float *dq_row = dqkv + (b * s.T + t) * 3 * s.C + h * s.hs;
    for (int i = 0; i < LK_FLASH_DIMS; i++) {
        const int64_t d = lane + 32 * i;
        if (d < s.hs) dq_row[d] += dq[i]; /* only this warp writes row t's q part */
    }
}

/* The shape checks both directions share; 0 (with the error recorded) when the call does nothing. */
static int lk_flash_shape_of(lk_flash_shape *s, uint32_t dtype, int64_t B, int64_t T, int64_t C, int64_t NH,
                             float dropout, uint64_t seed, const char *fn)
{
    if (B <= 0 || T <= 0 || C <= 0 || NH <= 0) return 0;
    if (dtype != LOOM_DTYPE_F32 && dtype != LOOM_DTYPE_BF16 && dtype != LOOM_DTYPE_F16) return 0;
    if (C % NH != 0 || C / NH > LK_FLASH_MAX_HS || B * NH > LK_CUDA_MAX_GRID_Y) {
        lk_cuda_record(fn, "C=%lld NH=%lld B=%lld: heads of at most %d dimensions, B*NH at most %d", (long long)C,
                       (long long)NH, (long long)B, LK_FLASH_MAX_HS, LK_CUDA_MAX_GRID_Y);
        return 0;
    }
    *s = lk_flash_shape{
        B,   T, C, NH, C / NH, 1.0f / sqrtf((float)(C / NH)), dropout, dropout > 0.0f ? 1.0f / (1.0f - dropout) : 1.0f,
        seed};
    return 1;
}

extern "C" void lk_attention_flash_forward_dropout_cuda(float *out, float *lse, const void *qkv, uint32_t qkv_dtype,
                                                        int64_t B, int64_t T, int64_t C, int64_t NH, float dropout,
                                                        uint64_t dropout_seed)
{
    static const char fn[] = "lk_attention_flash_forward_dropout_cuda";
    lk_flash_shape s;
    if (!lk_flash_shape_of(&s, qkv_dtype, B, T, C, NH, dropout, dropout_seed, fn)) return;
    const dim3 grid((unsigned int)((T + LK_FLASH_WARPS - 1) / LK_FLASH_WARPS), (unsigned int)(B * NH));
    lk_flash_forward_kernel<<<grid, 32 * LK_FLASH_WARPS>>>(out, lse, qkv, qkv_dtype, s);
    lk_cuda_launched(fn);
}

extern "C" void lk_attention_flash_forward_cuda(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B,
                                                int64_t T, int64_t C, int64_t NH)
{
    lk_attention_flash_forward_dropout_cuda(out, lse, qkv, qkv_dtype, B, T, C, NH, 0.0f, 0);
}

extern "C" void lk_attention_flash_backward_dropout_cuda(float *dqkv, const float *dout, const void *qkv,
                                                         uint32_t qkv_dtype, const float *out, const float *lse,
                                                         int64_t B, int64_t T, int64_t C, int64_t NH, float dropout,
                                                         uint64_t dropout_seed)
{
    static const char fn[] = "lk_attention_flash_backward_dropout_cuda";
    lk_flash_shape s;
    if (!dqkv || !lk_flash_shape_of(&s, qkv_dtype, B, T, C, NH, dropout, dropout_seed, fn)) return;
    const dim3 grid((unsigned int)((T + LK_FLASH_WARPS - 1) / LK_FLASH_WARPS), (unsigned int)(B * NH));
    lk_flash_backward_kernel<<<grid, 32 * LK_FLASH_WARPS>>>(dqkv, dout, qkv, qkv_dtype, out, lse, s);
    lk_cuda_launched(fn);
}

extern "C" void lk_attention_flash_backward_cuda(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                                 const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                                 int64_t NH)
{
    lk_attention_flash_backward_dropout_cuda(dqkv, dout, qkv, qkv_dtype, out, lse, B, T, C, NH, 0.0f, 0);
}
