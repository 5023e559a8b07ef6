/*
 * mha.cu - T5's multi-head attention on CUDA: separate q, k, v, an additive position bias
 * [NH, Tq, Tk], a key padding mask, causality, a KV cache (kv_rows >= Tk) and dropout on the
 * probabilities, with the contract and formulas of kernels/cpu/mha.c (abi/loom/kernels.h,
 * mha_forward and mha_backward).
 *
 * Forward: one warp per (batch, head, query) row. Each lane scores the keys j = lane,
 * lane + 32, ... (q in shared memory) into the row of att, the warp reduces the max and the
 * sum, each lane normalises its own entries, and then every lane accumulates the output
 * dimensions it owns (d = lane, lane + 32, ...) over the keys, 32 at a time, each key's
 * dropped weight broadcast by a shuffle. The dropout mask is loom_dropout_keep's, the same
 * function the CPU calls, at the same element index, so both devices draw the same masks.
 *
 * Backward, deterministic (no atomics): with datt_j = keep_j dout_i . v_j and
 * ds_ij = att_ij (datt_j - sum_j att_ij datt_j),
 *   1. a warp per query row computes ds into a scratch [B, NH, Tq, Tk] (the library's own
 *      per-thread workspace) and dq_i += scale sum_j ds_ij k_j, over j in order;
 *   2. a warp per key row: dk_j += scale sum_i ds_ij q_i and dv_j += sum_i att'_ij dout_i,
 *      over i in order (att' = att with dropout), each row owned by one warp;
 *   3. a thread per dbias element: dbias[h, i, j] += ds_ij summed over the batch in order,
 *      exactly the CPU's order.
 * Head sizes up to LK_MHA_MAX_HS (larger ones are recorded as an error).
 */
#include "common.cuh"

#define LK_MHA_MAX_HS 256                /* 8 output dimensions per lane */
#define LK_MHA_DIMS (LK_MHA_MAX_HS / 32) /* registers per lane for a row's accumulators */
#define LK_MHA_WARPS 4                   /* rows per block */

typedef struct lk_mha_shape {
    int64_t B, NH, Tq, Tk, HS, kv_rows, C;
    float scale, dropout, keep_scale;
    uint64_t seed;
} lk_mha_shape;

/* Dropout's multiplier for element e of att: 1 without dropout, else 0 or 1 / (1 - p). */
static __device__ __forceinline__ float lk_mha_keep(const lk_mha_shape &s, uint64_t e)
{
    if (s.dropout <= 0.0f) return 1.0f;
    return loom_dropout_keep(s.seed, e, s.dropout) ? s.keep_scale : 0.0f;
}

/* Offset of head h's part of row t of a [rows, NH * HS] tensor of batch entry b. */
static __device__ __forceinline__ int64_t lk_mha_row(const lk_mha_shape &s, int64_t b, int64_t rows, int64_t t,
                                                     int64_t h)
{
    return (b * rows + t) * s.C + h * s.HS;
}

/* acc (this lane's dimensions d = lane + 32 m) += sum over the group's n rows of w_kk * row_kk,
 * rows[kk * stride] the group's rows and w_kk lane kk's weight, broadcast: the warp-wide
 * product of a group of 32 weights and their rows, in row order. A zero weight skips its row
 * (the same for every lane: no divergence). */
static __device__ __forceinline__ void lk_mha_gather(float acc[LK_MHA_DIMS], float w, const float *rows, int64_t stride,
                                                     int n, int lane, int64_t HS)
{
    for (int kk = 0; kk < n; kk++) {
        const float wk = __shfl_sync(0xffffffffu, w, kk);
        if (wk == 0.0f) continue;
        const float *row = rows + kk * stride;
        for (int m = 0; m < LK_MHA_DIMS; m++) {
            const int64_t d = lane + 32 * m;
            if (d < HS) acc[m] += wk * row[d];
        }
    }
}

/* A row's accumulators (this lane's dimensions) from row (zeros when row is NULL), and back. */
static __device__ __forceinline__ void lk_mha_load(float acc[LK_MHA_DIMS], const float *row, int lane, int64_t HS)
{
    for (int m = 0; m < LK_MHA_DIMS; m++) {
        const int64_t d = lane + 32 * m;
        acc[m] = row && d < HS ? row[d] : 0.0f;
    }
}

static __device__ __forceinline__ void lk_mha_store(float *row, const float acc[LK_MHA_DIMS], int lane, int64_t HS)
{
    for (int m = 0; m < LK_MHA_DIMS; m++) {
        const int64_t d = lane + 32 * m;
        if (d < HS) row[d] = acc[m];
    }
}

static __global__ void lk_mha_forward_kernel(float *out, float *att, const float *q, const float *k, const float *v,
                                             const float *bias, const int32_t *key_mask, int32_t causal, lk_mha_shape s)
{
    extern __shared__ float lk_mha_shared[];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    float *q_row = lk_mha_shared + warp * s.HS;
    const int64_t rows = s.B * s.NH * s.Tq, warps = (int64_t)gridDim.x * LK_MHA_WARPS;
    for (int64_t r = (int64_t)blockIdx.x * LK_MHA_WARPS + warp; r < rows; r += warps) { /* uniform per warp */
        const int64_t i = r % s.Tq, bh = r / s.Tq, h = bh % s.NH, b = bh / s.NH;
        __syncwarp(); /* the previous row's readers of q_row are done */
        const float *qi = q + lk_mha_row(s, b, s.Tq, i, h);
        for (int64_t d = lane; d < s.HS; d += 32)
            q_row[d] = qi[d];
        __syncwarp();
        float *a = att + r * s.Tk;
        const float *bi = bias ? bias + (h * s.Tq + i) * s.Tk : NULL;
        const int64_t last = causal ? i + s.Tk - s.Tq : s.Tk - 1; /* the last key row i may see */
        float maxv = -INFINITY;
        for (int64_t j = lane; j < s.Tk; j += 32) {
            if ((key_mask && key_mask[b * s.Tk + j] == 0) || j > last) {
                a[j] = -INFINITY;
                continue;
            }
            const float *kj = k + lk_mha_row(s, b, s.kv_rows, j, h);
            float dot = 0.0f;
            for (int64_t d = 0; d < s.HS; d++)
                dot += q_row[d] * kj[d];
            const float score = s.scale * dot + (bi ? bi[j] : 0.0f);
            a[j] = score;
            maxv = fmaxf(maxv, score);
        }
        maxv = lk_warp_reduce(maxv, lk_max_op());
        float *o = out + lk_mha_row(s, b, s.Tq, i, h);
        if (maxv == -INFINITY) { /* no key to attend to: zero probabilities, zero output */
            for (int64_t j = lane; j < s.Tk; j += 32)
                a[j] = 0.0f;
            for (int64_t d = lane; d < s.HS; d += 32)
                o[d] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (int64_t j = lane; j < s.Tk; j += 32) {
            const float e = a[j] == -INFINITY ? 0.0f : expf(a[j] - maxv);
            a[j] = e;
            sum += e;
        }
        const float inv = 1.0f / lk_warp_reduce(sum, lk_sum_op());
        float acc[LK_MHA_DIMS];
        lk_mha_load(acc, NULL, lane, s.HS);
        const uint64_t row = (uint64_t)(r * s.Tk);
        for (int64_t j0 = 0; j0 < s.Tk; j0 += 32) {
            const int64_t j = j0 + lane;
            float w = 0.0f;
            if (j < s.Tk) { /* a[j] is this lane's own entry: no other lane wrote it */
                const float p = a[j] * inv;
                a[j] = p;
                w = p != 0.0f ? p * lk_mha_keep(s, row + (uint64_t)j) : 0.0f;
            }
            const int keys = (int)(s.Tk - j0 < 32 ? s.Tk - j0 : 32);
            lk_mha_gather(acc, w, v + lk_mha_row(s, b, s.kv_rows, j0, h), s.C, keys, lane, s.HS);
        }
        lk_mha_store(o, acc, lane, s.HS);
    }
}

/* Per query row: ds (into ws, the same [B, NH, Tq, Tk] layout as att) and, when dq is not
 * NULL, dq_i += scale sum_j ds_ij k_j. */
static __global__ void lk_mha_backward_dq_kernel(float *dq, float *ws, const float *dout, const float *k,
                                                 const float *v, const float *att, lk_mha_shape s)
{
    extern __shared__ float lk_mha_shared[];
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    float *g_row = lk_mha_shared + warp * s.HS;
    const int64_t rows = s.B * s.NH * s.Tq, warps = (int64_t)gridDim.x * LK_MHA_WARPS;
    for (int64_t r = (int64_t)blockIdx.x * LK_MHA_WARPS + warp; r < rows; r += warps) {
        const int64_t i = r % s.Tq, bh = r / s.Tq, h = bh % s.NH, b = bh / s.NH;
        __syncwarp();
        const float *g = dout + lk_mha_row(s, b, s.Tq, i, h);
        for (int64_t d = lane; d < s.HS; d += 32)
            g_row[d] = g[d];
        __syncwarp();
        const float *a = att + r * s.Tk;
        float *ds = ws + r * s.Tk;
        const uint64_t row = (uint64_t)(r * s.Tk);
        float dot_sum = 0.0f;
        for (int64_t j = lane; j < s.Tk; j += 32) {
            const float f = a[j] != 0.0f ? lk_mha_keep(s, row + (uint64_t)j) : 0.0f;
            float dot = 0.0f;
            if (f != 0.0f) {
                const float *vj = v + lk_mha_row(s, b, s.kv_rows, j, h);
                for (int64_t d = 0; d < s.HS; d++)
                    dot += g_row[d] * vj[d];
                dot *= f;
            }
            ds[j] = dot;
            dot_sum += a[j] * dot;
        }
        dot_sum = lk_warp_reduce(dot_sum, lk_sum_op());
        if (!dq) { /* ds is all the other kernels need */
            for (int64_t j = lane; j < s.Tk; j += 32)
                ds[j] = a[j] * (ds[j] - dot_sum);
            continue;
        }
        float *dqi = dq + lk_mha_row(s, b, s.Tq, i, h);
        float acc[LK_MHA_DIMS];
        lk_mha_load(acc, dqi, lane, s.HS);
        for (int64_t j0 = 0; j0 < s.Tk; j0 += 32) {
            const int64_t j = j0 + lane;
            float w = 0.0f;
            if (j < s.Tk) { /* this lane's own entries of ds */
                const float dsj = a[j] * (ds[j] - dot_sum);
                ds[j] = dsj;
                w = s.scale * dsj;
            }
            const int keys = (int)(s.Tk - j0 < 32 ? s.Tk - j0 : 32);
            lk_mha_gather(acc, w, k + lk_mha_row(s, b, s.kv_rows, j0, h), s.C, keys, lane, s.HS);
        }
        lk_mha_store(dqi, acc, lane, s.HS);
    }
}

/* Per key row j of (b, h): dk_j += scale sum_i ds_ij q_i (when dk), dv_j += sum_i att'_ij dout_i
 * (when dv), the queries 32 at a time in order. */
static __global__ void lk_mha_backward_dkdv_kernel(float *dk, float *dv, const float *ws, const float *dout,
                                                   const float *q, const float *att, lk_mha_shape s)
{
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    const int64_t rows = s.B * s.NH * s.Tk, warps = (int64_t)gridDim.x * LK_MHA_WARPS;
    for (int64_t r = (int64_t)blockIdx.x * LK_MHA_WARPS + warp; r < rows; r += warps) {
        const int64_t j = r % s.Tk, bh = r / s.Tk, h = bh % s.NH, b = bh / s.NH;
        float *dkj = dk ? dk + lk_mha_row(s, b, s.kv_rows, j, h) : NULL;
        float *dvj = dv ? dv + lk_mha_row(s, b, s.kv_rows, j, h) : NULL;
        float acc_k[LK_MHA_DIMS], acc_v[LK_MHA_DIMS];
        lk_mha_load(acc_k, dkj, lane, s.HS);
        lk_mha_load(acc_v, dvj, lane, s.HS);
        for (int64_t i0 = 0; i0 < s.Tq; i0 += 32) {
            const int64_t i = i0 + lane;
            float wk_lane = 0.0f, wv_lane = 0.0f;
            if (i < s.Tq) {
                const int64_t e = (bh * s.Tq + i) * s.Tk + j;
                if (dkj) wk_lane = s.scale * ws[e];
                if (dvj && att[e] != 0.0f) wv_lane = att[e] * lk_mha_keep(s, (uint64_t)e);
            }
            const int n = (int)(s.Tq - i0 < 32 ? s.Tq - i0 : 32);
            const int64_t first = lk_mha_row(s, b, s.Tq, i0, h);
            lk_mha_gather(acc_k, wk_lane, q + first, s.C, n, lane, s.HS);
            lk_mha_gather(acc_v, wv_lane, dout + first, s.C, n, lane, s.HS);
        }
        if (dkj) lk_mha_store(dkj, acc_k, lane, s.HS);
        if (dvj) lk_mha_store(dvj, acc_v, lane, s.HS);
    }
}

/* dbias[h, i, j] += ds[b, h, i, j] for b = 0, 1, ... in order (the CPU's order). */
static __global__ void lk_mha_backward_dbias_kernel(float *dbias, const float *ws, lk_mha_shape s)
{
    const int64_t n = s.NH * s.Tq * s.Tk;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        float acc = dbias[e];
        for (int64_t b = 0; b < s.B; b++)
            acc += ws[b * n + e];
        dbias[e] = acc;
    }
}

/* The checks both directions share; 0 when the call has nothing to do or is refused (recorded). */
static int lk_mha_shape_of(lk_mha_shape *s, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows,
                           float scale, float dropout, uint64_t seed, const char *fn)
{
    if (B <= 0 || NH <= 0 || Tq <= 0 || HS <= 0 || Tk < 0) return 0;
    if (HS > LK_MHA_MAX_HS || kv_rows < Tk) {
        lk_cuda_record(fn, "HS=%lld kv_rows=%lld Tk=%lld: heads of at most %d dimensions, kv_rows >= Tk", (long long)HS,
                       (long long)kv_rows, (long long)Tk, LK_MHA_MAX_HS);
        return 0;
    }
    *s = lk_mha_shape{
        B, NH, Tq, Tk, HS, kv_rows, NH * HS, scale, dropout, dropout > 0.0f ? 1.0f / (1.0f - dropout) : 1.0f, seed};
    return 1;
}

static unsigned int lk_mha_grid(int64_t rows)
{
    const int64_t g = (rows + LK_MHA_WARPS - 1) / LK_MHA_WARPS;
    return (unsigned int)(g < LK_CUDA_MAX_GRID ? g : LK_CUDA_MAX_GRID);
}

extern "C" void lk_mha_forward_cuda(float *out, float *att, const float *q, const float *k, const float *v,
                                    const float *bias, const int32_t *key_mask, int64_t B, int64_t NH, int64_t Tq,
                                    int64_t Tk, int64_t HS, int64_t kv_rows, float scale, int32_t causal, float dropout,
                                    uint64_t dropout_seed)
{
    static const char fn[] = "lk_mha_forward_cuda";
    lk_mha_shape s;
    if (!lk_mha_shape_of(&s, B, NH, Tq, Tk, HS, kv_rows, scale, dropout, dropout_seed, fn)) return;
    const size_t shared = (size_t)LK_MHA_WARPS * (size_t)HS * sizeof(float);
    lk_mha_forward_kernel<<<lk_mha_grid(B * NH * Tq), 32 * LK_MHA_WARPS, shared>>>(out, att, q, k, v, bias, key_mask,
                                                                                   causal, s);
    lk_cuda_launched(fn);
}

extern "C" void lk_mha_backward_cuda(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q,
                                     const float *k, const float *v, const float *att, int64_t B, int64_t NH,
                                     int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float dropout,
                                     uint64_t dropout_seed)
{
    static const char fn[] = "lk_mha_backward_cuda";
    lk_mha_shape s;
    if (!lk_mha_shape_of(&s, B, NH, Tq, Tk, HS, kv_rows, scale, dropout, dropout_seed, fn) || Tk == 0) return;
    const int need_ds = dq || dk || dbias;
    float *ws = NULL;
    if (need_ds) {
        ws = (float *)lk_cuda_workspace((size_t)(B * NH * Tq * Tk) * sizeof(float), fn);
        if (!ws) return;
        const size_t shared = (size_t)LK_MHA_WARPS * (size_t)HS * sizeof(float);
        lk_mha_backward_dq_kernel<<<lk_mha_grid(B * NH * Tq), 32 * LK_MHA_WARPS, shared>>>(dq, ws, dout, k, v, att, s);
        if (!lk_cuda_launched(fn)) return;
    }
    if (dk || dv) {
        lk_mha_backward_dkdv_kernel<<<lk_mha_grid(B * NH * Tk), 32 * LK_MHA_WARPS>>>(dk, dv, ws, dout, q, att, s);
        if (!lk_cuda_launched(fn)) return;
    }
    if (dbias) {
        lk_mha_backward_dbias_kernel<<<lk_cuda_grid(NH * Tq * Tk, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(dbias, ws, s);
        lk_cuda_launched(fn);
    }
}
