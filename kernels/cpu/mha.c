/*
 * mha.c - multi-head attention over separate q, k, v with an additive position bias, a key
 * padding mask and optional causality: T5's attention (no 1/sqrt(d) unless the caller passes
 * it as `scale`), its cross-attention, and a decoder step over a KV cache (kv_rows > Tk).
 * Contracts in abi/loom/kernels.h; the GPT-2 kernel in attention.c is separate (fused qkv,
 * always causal, no mask).
 *
 * Work goes by (batch, head) pair. A pair first copies its keys (forward) or values (backward)
 * into a thread-local [HS, Tk] transpose, so that the Tk scores of a query are one vectorised
 * loop over keys (an FMA of a broadcast q[d] with a row of the transpose per d) instead of Tk
 * dot products that each end in a cross-lane sum. Causal rows stop at their last key. The
 * softmax runs on lk_expf (vectorised; within 2 ulp of expf). Dropout on the probabilities
 * draws its mask from loom_dropout_keep (nothing stored: the backward recomputes it).
 *
 * Backward, with ds = att * (datt - sum(att * datt)) and datt = keep * dout . v:
 *   dq_i += scale * sum_j ds_ij k_j,  dk_j += scale * sum_i ds_ij q_i,  dv_j += sum_i att'_ij dout_i
 *   dbias[h, i, j] += sum_b ds_ij
 * The thread that owns a pair owns its rows of dq, dk, dv and sums over queries in order. With
 * dbias, a thread takes whole heads and runs the batch in order inside each, so dbias is summed
 * over b in a fixed order without a second pass. Every element is written by one thread in a
 * fixed order: results do not depend on the thread count.
 */
/* Let GCC if-convert lk_expf's clamps into vector blends (see attention.c): results are the
 * same, FP exceptions never trap here. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "lk_cpu.h"

#include <stdlib.h>

/* Keys query i may see before the key mask: all Tk, or up to i + Tk - Tq when causal. */
static int64_t key_end(int64_t i, int64_t Tq, int64_t Tk, int32_t causal)
{
    if (!causal) return Tk;
    const int64_t e = i + Tk - Tq + 1;
    return e < 0 ? 0 : e > Tk ? Tk : e;
}

/* t[d * Tk + j] = x[(row0 + j) * C + d] for j < Tk, d < HS: one head's keys or values. */
static void transpose_head(float *t, const float *x, int64_t Tk, int64_t HS, int64_t C)
{
    for (int64_t j = 0; j < Tk; j++) {
        const float *xj = x + j * C;
        for (int64_t d = 0; d < HS; d++)
            t[d * Tk + j] = xj[d];
    }
}

/* Keys per block of dots_t and head dimensions per block of mix: 64 floats are four AVX-512
 * registers, so a block's accumulators stay in registers across the whole inner sum. */
#define LK_MHA_BLOCK 64

/* s[j] = a . (column j of t[HS, ldt]) for j < n; may also write s[n .. ldt). */
static inline void dots_t(float *s, const float *a, const float *t, int64_t ldt, int64_t n, int64_t HS)
{
    int64_t j0 = 0;
    for (; j0 < n && j0 + LK_MHA_BLOCK <= ldt; j0 += LK_MHA_BLOCK) {
        float acc[LK_MHA_BLOCK] = {0};
        for (int64_t d = 0; d < HS; d++) {
            const float ad = a[d];
            const float *td = t + d * ldt + j0;
#pragma omp simd
            for (int64_t jj = 0; jj < LK_MHA_BLOCK; jj++)
                acc[jj] = fmaf(ad, td[jj], acc[jj]);
        }
        for (int64_t jj = 0; jj < LK_MHA_BLOCK; jj++)
            s[j0 + jj] = acc[jj];
    }
    if (j0 >= n) return;
    for (int64_t j = j0; j < n; j++)
        s[j] = 0.0f;
    for (int64_t d = 0; d < HS; d++) {
        const float ad = a[d];
        const float *td = t + d * ldt;
#pragma omp simd
        for (int64_t j = j0; j < n; j++)
            s[j] = fmaf(ad, td[j], s[j]);
    }
}

/* o[d] += alpha * sum_j w[j * ldw] x[j * ldx + d] for d < HS, j < n in order (zero weights
 * skipped). */
static inline void mix(float *o, float alpha, const float *w, int64_t ldw, const float *x, int64_t ldx, int64_t n,
                       int64_t HS)
{
    for (int64_t d0 = 0; d0 < HS; d0 += LK_MHA_BLOCK) {
        const int64_t width = HS - d0 < LK_MHA_BLOCK ? HS - d0 : LK_MHA_BLOCK;
        float acc[LK_MHA_BLOCK] = {0};
        if (width == LK_MHA_BLOCK) {
            for (int64_t j = 0; j < n; j++) {
                const float wj = w[j * ldw];
                if (wj == 0.0f) continue;
                const float *xj = x + j * ldx + d0;
#pragma omp simd
                for (int64_t dd = 0; dd < LK_MHA_BLOCK; dd++)
                    acc[dd] = fmaf(wj, xj[dd], acc[dd]);
            }
        } else {
            for (int64_t j = 0; j < n; j++) {
                const float wj = w[j * ldw];
                if (wj == 0.0f) continue;
                const float *xj = x + j * ldx + d0;
#pragma omp simd
                for (int64_t dd = 0; dd < width; dd++)
                    acc[dd] = fmaf(wj, xj[dd], acc[dd]);
            }
        }
        for (int64_t dd = 0; dd < width; dd++)
            o[d0 + dd] = fmaf(alpha, acc[dd], o[d0 + dd]);
    }
}

/* Dropout's multiplier of att element `e`: 0, or 1 / (1 - p) when kept. */
static float keep_factor(uint64_t seed, uint64_t e, float p)
{
    if (p <= 0.0f) return 1.0f;
    return loom_dropout_keep(seed, e, p) ? 1.0f / (1.0f - p) : 0.0f;
}

/* Forward of pair (b, h); scratch: kt, HS * Tk floats; w, Tk floats. */
static inline void pair_forward(float *out, float *att, const float *q, const float *k, const float *v,
                                const float *bias, const int32_t *key_mask, int64_t b, int64_t h, int64_t NH,
                                int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float scale, int32_t causal,
                                float dropout, uint64_t seed, float *kt, float *w)
{
    const int64_t C = NH * HS;
    const float *kb = k + b * kv_rows * C + h * HS, *vb = v + b * kv_rows * C + h * HS;
    const int32_t *mask = key_mask ? key_mask + b * Tk : NULL;
    transpose_head(kt, kb, Tk, HS, C);
    for (int64_t i = 0; i < Tq; i++) {
        const float *qi = q + (b * Tq + i) * C + h * HS;
        float *a = att + ((b * NH + h) * Tq + i) * Tk;
        float *o = out + (b * Tq + i) * C + h * HS;
        const float *bi = bias ? bias + (h * Tq + i) * Tk : NULL;
        const int64_t n = key_end(i, Tq, Tk, causal);
        dots_t(a, qi, kt, Tk, n, HS);
        float maxv = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            float s = scale * a[j] + (bi ? bi[j] : 0.0f);
            if (mask && mask[j] == 0) s = -INFINITY;
            a[j] = s;
            maxv = s > maxv ? s : maxv;
        }
        for (int64_t j = n; j < Tk; j++)
            a[j] = 0.0f;
        for (int64_t d = 0; d < HS; d++)
            o[d] = 0.0f;
        if (maxv == -INFINITY) { /* no key to attend to */
            for (int64_t j = 0; j < n; j++)
                a[j] = 0.0f;
            continue;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; j++) {
            const float e = a[j] == -INFINITY ? 0.0f : lk_expf(a[j] - maxv);
            a[j] = e;
            sum += e;
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            a[j] *= inv;
        const float *wts = a;
        if (dropout > 0.0f) {
            const uint64_t row = (uint64_t)(((b * NH + h) * Tq + i) * Tk);
            for (int64_t j = 0; j < n; j++)
                w[j] = a[j] != 0.0f ? a[j] * keep_factor(seed, row + (uint64_t)j, dropout) : 0.0f;
            wts = w;
        }
        mix(o, 1.0f, wts, 1, vb, C, n, HS);
    }
}

void lk_mha_forward(float *out, float *att, const float *q, const float *k, const float *v, const float *bias,
                    const int32_t *key_mask, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows,
                    float scale, int32_t causal, float dropout, uint64_t dropout_seed)
{
#pragma omp parallel if (B * NH * Tq * Tk * HS >= LK_OMP_MIN_WORK)
    {
        float *kt = malloc((size_t)(HS * Tk + Tk + 1) * sizeof *kt);
        float *w = kt ? kt + HS * Tk : NULL;
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < NH; h++) {
                if (!kt) continue;
                /* HS = 64 (T5's d_kv) gets a copy with a constant width, which GCC unrolls. */
                if (HS == 64)
                    pair_forward(out, att, q, k, v, bias, key_mask, b, h, NH, Tq, Tk, 64, kv_rows, scale, causal,
                                 dropout, dropout_seed, kt, w);
                else
                    pair_forward(out, att, q, k, v, bias, key_mask, b, h, NH, Tq, Tk, HS, kv_rows, scale, causal,
                                 dropout, dropout_seed, kt, w);
            }
        }
        free(kt);
    }
}

/* Backward of pair (b, h), adding its ds into db (dbias's head h; NULL: none). Scratch: vt,
 * HS * Tk floats; ds, Tq * Tk (kept whole: dk_j and dv_j are sums down its columns); awt,
 * Tq * Tk, the probabilities after dropout (unused without dropout). */
static inline void pair_backward(float *dq, float *dk, float *dv, float *db, const float *dout, const float *q,
                                 const float *k, const float *v, const float *att, int64_t b, int64_t h, int64_t NH,
                                 int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float p,
                                 uint64_t seed, float *vt, float *ds, float *awt)
{
    const int64_t C = NH * HS;
    const float *kb = k + b * kv_rows * C + h * HS, *vb = v + b * kv_rows * C + h * HS;
    const float *qb = q + b * Tq * C + h * HS, *gb = dout + b * Tq * C + h * HS;
    const float *ab = att + (b * NH + h) * Tq * Tk;
    transpose_head(vt, vb, Tk, HS, C);
    for (int64_t i = 0; i < Tq; i++) {
        const float *a = ab + i * Tk;
        const float *g = gb + i * C;
        const uint64_t row = (uint64_t)(((b * NH + h) * Tq + i) * Tk);
        float *dsi = ds + i * Tk;
        /* keys past the row's last nonzero probability (the causal tail) contribute nothing */
        int64_t n = Tk;
        while (n > 0 && a[n - 1] == 0.0f)
            n--;
        if (n > 0) dots_t(dsi, g, vt, Tk, n, HS); /* datt before dropout */
        for (int64_t j = n; j < Tk; j++)
            dsi[j] = 0.0f;
        if (p > 0.0f) {
            for (int64_t j = 0; j < Tk; j++) {
                const float f = a[j] != 0.0f ? keep_factor(seed, row + (uint64_t)j, p) : 0.0f;
                dsi[j] *= f;
                awt[i * Tk + j] = a[j] * f;
            }
        }
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; j++)
            s += a[j] * dsi[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dsi[j] = a[j] * (dsi[j] - s);
        if (db) {
            float *dbi = db + i * Tk;
#pragma omp simd
            for (int64_t j = 0; j < n; j++)
                dbi[j] += dsi[j];
        }
        if (dq) mix(dq + (b * Tq + i) * C + h * HS, scale, dsi, 1, kb, C, n, HS);
    }
    if (dk)
        for (int64_t j = 0; j < Tk; j++)
            mix(dk + (b * kv_rows + j) * C + h * HS, scale, ds + j, Tk, qb, C, Tq, HS);
    const float *aw = p > 0.0f ? awt : ab;
    if (dv)
        for (int64_t j = 0; j < Tk; j++)
            mix(dv + (b * kv_rows + j) * C + h * HS, 1.0f, aw + j, Tk, gb, C, Tq, HS);
}

static void pair_backward_any(float *dq, float *dk, float *dv, float *db, const float *dout, const float *q,
                              const float *k, const float *v, const float *att, int64_t b, int64_t h, int64_t NH,
                              int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float p, uint64_t seed,
                              float *scratch)
{
    float *vt = scratch, *ds = vt + HS * Tk, *awt = ds + Tq * Tk;
    if (HS == 64)
        pair_backward(dq, dk, dv, db, dout, q, k, v, att, b, h, NH, Tq, Tk, 64, kv_rows, scale, p, seed, vt, ds, awt);
    else
        pair_backward(dq, dk, dv, db, dout, q, k, v, att, b, h, NH, Tq, Tk, HS, kv_rows, scale, p, seed, vt, ds, awt);
}

void lk_mha_backward(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q, const float *k,
                     const float *v, const float *att, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                     int64_t kv_rows, float scale, float dropout, uint64_t dropout_seed)
{
#pragma omp parallel if (B * NH * Tq * Tk * HS >= LK_OMP_MIN_WORK)
    {
        float *scratch = malloc((size_t)(HS * Tk + 2 * Tq * Tk + 1) * sizeof *scratch);
        if (dbias) { /* whole heads per thread: dbias[h] sums the batch in order */
#pragma omp for schedule(static)
            for (int64_t h = 0; h < NH; h++)
                for (int64_t b = 0; scratch && b < B; b++)
                    pair_backward_any(dq, dk, dv, dbias + h * Tq * Tk, dout, q, k, v, att, b, h, NH, Tq, Tk, HS,
                                      kv_rows, scale, dropout, dropout_seed, scratch);
        } else {
#pragma omp for collapse(2) schedule(static)
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < NH; h++)
                    if (scratch)
                        pair_backward_any(dq, dk, dv, NULL, dout, q, k, v, att, b, h, NH, Tq, Tk, HS, kv_rows, scale,
                                          dropout, dropout_seed, scratch);
        }
        free(scratch);
    }
}
