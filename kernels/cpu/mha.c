/*
 * mha.c - multi-head attention over separate q, k, v with an additive position bias, a key
 * padding mask and optional causality: T5's attention (no 1/sqrt(d) unless the caller passes
 * it as `scale`), its cross-attention, and a decoder step over a KV cache (kv_rows > Tk).
 * Contracts in abi/loom/kernels.h; the GPT-2 kernel in attention.c is separate (fused qkv,
 * always causal, no mask).
 *
 * Forward: a thread per (batch, head, query) row, its scores in its row of att. Dropout on the
 * probabilities draws its mask from loom_dropout_keep (nothing stored: the backward recomputes
 * it). Backward, with ds = att * (datt - sum(att * datt)) and datt = keep * dout . v:
 *   dq_i += scale * sum_j ds_ij k_j,  dk_j += scale * sum_i ds_ij q_i,  dv_j += sum_i att_ij dout_i
 * a thread per (batch, head), which owns those rows of dq, dk, dv; and dbias[h, i, j] +=
 * sum_b ds_ij, a thread per (head, query) summing the batch in order, recomputing ds. Every
 * element is written by one thread in a fixed order: results do not depend on the thread count.
 */
#include "lk_cpu.h"

#include <stdlib.h>

static int key_allowed(const int32_t *key_mask, int64_t b, int64_t Tk, int64_t i, int64_t j, int64_t Tq,
                       int32_t causal)
{
    if (key_mask && key_mask[b * Tk + j] == 0) return 0;
    return !causal || j <= i + Tk - Tq;
}

void lk_mha_forward(float *out, float *att, const float *q, const float *k, const float *v, const float *bias,
                    const int32_t *key_mask, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                    int64_t kv_rows, float scale, int32_t causal, float dropout, uint64_t dropout_seed)
{
    const int64_t C = NH * HS;
    const float keep_scale = dropout > 0.0f ? 1.0f / (1.0f - dropout) : 1.0f;
#pragma omp parallel for collapse(3) if (B * NH * Tq * Tk * HS >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < NH; h++) {
            for (int64_t i = 0; i < Tq; i++) {
                const float *qi = q + (b * Tq + i) * C + h * HS;
                float *a = att + ((b * NH + h) * Tq + i) * Tk;
                const float *bi = bias ? bias + (h * Tq + i) * Tk : NULL;
                float maxv = -INFINITY;
                for (int64_t j = 0; j < Tk; j++) {
                    if (!key_allowed(key_mask, b, Tk, i, j, Tq, causal)) {
                        a[j] = -INFINITY;
                        continue;
                    }
                    const float *kj = k + (b * kv_rows + j) * C + h * HS;
                    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int64_t d = 0; d < HS; d++) dot += qi[d] * kj[d];
                    const float s = scale * dot + (bi ? bi[j] : 0.0f);
                    a[j] = s;
                    if (s > maxv) maxv = s;
                }
                float *o = out + (b * Tq + i) * C + h * HS;
                for (int64_t d = 0; d < HS; d++) o[d] = 0.0f;
                if (maxv == -INFINITY) { /* no key to attend to */
                    for (int64_t j = 0; j < Tk; j++) a[j] = 0.0f;
                    continue;
                }
                float sum = 0.0f;
                for (int64_t j = 0; j < Tk; j++) {
                    const float e = a[j] == -INFINITY ? 0.0f : expf(a[j] - maxv);
                    a[j] = e;
                    sum += e;
                }
                const float inv = 1.0f / sum;
                const uint64_t row = (uint64_t)(((b * NH + h) * Tq + i) * Tk);
                for (int64_t j = 0; j < Tk; j++) {
                    a[j] *= inv;
                    if (a[j] == 0.0f || !loom_dropout_keep(dropout_seed, row + (uint64_t)j, dropout)) continue;
                    const float *vj = v + (b * kv_rows + j) * C + h * HS;
                    const float w = a[j] * keep_scale;
#pragma omp simd
                    for (int64_t d = 0; d < HS; d++) o[d] += w * vj[d];
                }
            }
        }
    }
}

/* Dropout's multiplier of att element `e`: 0, or 1 / (1 - p) when kept. */
static float keep_factor(uint64_t seed, uint64_t e, float p)
{
    if (p <= 0.0f) return 1.0f;
    return loom_dropout_keep(seed, e, p) ? 1.0f / (1.0f - p) : 0.0f;
}

/* ds[j] = att_ij * (datt_j - sum_j att_ij datt_j) for query i of (b, h), datt_j = the
 * dropout factor times dout_i . v_j. */
static void score_grad(float *ds, const float *dout, const float *v, const float *att, int64_t b, int64_t h,
                       int64_t i, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float p,
                       uint64_t seed)
{
    const int64_t C = NH * HS;
    const float *a = att + ((b * NH + h) * Tq + i) * Tk;
    const float *g = dout + (b * Tq + i) * C + h * HS;
    const uint64_t row = (uint64_t)(((b * NH + h) * Tq + i) * Tk);
    float s = 0.0f;
    for (int64_t j = 0; j < Tk; j++) {
        float dot = 0.0f;
        const float f = a[j] != 0.0f ? keep_factor(seed, row + (uint64_t)j, p) : 0.0f;
        if (f != 0.0f) {
            const float *vj = v + (b * kv_rows + j) * C + h * HS;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < HS; d++) dot += g[d] * vj[d];
            dot *= f;
        }
        ds[j] = dot;
        s += a[j] * dot;
    }
    for (int64_t j = 0; j < Tk; j++) ds[j] = a[j] * (ds[j] - s);
}

void lk_mha_backward(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q,
                     const float *k, const float *v, const float *att, int64_t B, int64_t NH, int64_t Tq,
                     int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float dropout, uint64_t dropout_seed)
{
    const int64_t C = NH * HS;
    const int big = B * NH * Tq * Tk * HS >= LK_OMP_MIN_WORK;
#pragma omp parallel if (big)
    {
        float *ds = malloc((size_t)(Tk > 0 ? Tk : 1) * sizeof *ds);
#pragma omp for collapse(2)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < NH; h++) {
                if (!ds) continue;
                for (int64_t i = 0; i < Tq; i++) {
                    score_grad(ds, dout, v, att, b, h, i, NH, Tq, Tk, HS, kv_rows, dropout, dropout_seed);
                    const float *a = att + ((b * NH + h) * Tq + i) * Tk;
                    const float *qi = q + (b * Tq + i) * C + h * HS;
                    const float *g = dout + (b * Tq + i) * C + h * HS;
                    float *dqi = dq ? dq + (b * Tq + i) * C + h * HS : NULL;
                    for (int64_t j = 0; j < Tk; j++) {
                        const float *kj = k + (b * kv_rows + j) * C + h * HS;
                        const float w = scale * ds[j];
                        if (dqi && w != 0.0f) {
#pragma omp simd
                            for (int64_t d = 0; d < HS; d++) dqi[d] += w * kj[d];
                        }
                        if (dk && w != 0.0f) {
                            float *dkj = dk + (b * kv_rows + j) * C + h * HS;
#pragma omp simd
                            for (int64_t d = 0; d < HS; d++) dkj[d] += w * qi[d];
                        }
                        const float aw = a[j] != 0.0f
                                             ? a[j] * keep_factor(dropout_seed,
                                                                  (uint64_t)(((b * NH + h) * Tq + i) * Tk + j), dropout)
                                             : 0.0f;
                        if (dv && aw != 0.0f) {
                            float *dvj = dv + (b * kv_rows + j) * C + h * HS;
#pragma omp simd
                            for (int64_t d = 0; d < HS; d++) dvj[d] += aw * g[d];
                        }
                    }
                }
            }
        }
        free(ds);
    }
    if (!dbias) return;
#pragma omp parallel if (big)
    {
        float *ds = malloc((size_t)(Tk > 0 ? Tk : 1) * sizeof *ds);
#pragma omp for collapse(2)
        for (int64_t h = 0; h < NH; h++) {
            for (int64_t i = 0; i < Tq; i++) {
                if (!ds) continue;
                float *db = dbias + (h * Tq + i) * Tk;
                for (int64_t b = 0; b < B; b++) {
                    score_grad(ds, dout, v, att, b, h, i, NH, Tq, Tk, HS, kv_rows, dropout, dropout_seed);
                    for (int64_t j = 0; j < Tk; j++) db[j] += ds[j];
                }
            }
        }
        free(ds);
    }
}
