/*
 * classifier_columns.c - the fused classifier by slabs of vocabulary columns (ABI 1.8,
 * abi/loom/kernels.h classifier_columns).
 *
 * Why columns: the row-chunk classifier (classifier.c) adds a partial dweight per chunk of
 * rows, so a 16-bit head weight needs an f32 [V, C] accumulator beside it for as long as the
 * backward runs (GPT-2: 147 MiB, the largest activation of a bf16 step at T = 1024). Taking all
 * N rows against `w` columns at a time makes each slab's dweight final in one product, so it
 * is rounded into the 16-bit gradient at once and only a [w, C] slab is ever f32.
 *
 * The price is that a slab does not see a whole row: the forward keeps each row's running max
 * and sum across slabs (an online softmax) and hands the backward the rows' log-sum-exp, from
 * which p = exp(logit - lse) is exact per slab. The backward recomputes the logits in the
 * forward's slabs (same products, same shapes), as the row-chunk backward does, so it costs the
 * same products: logits, dinp and dweight per slab.
 *
 * Scratch (loom_classifier_columns_bytes): the rows' statistics, then the slab's [N, w] f32
 * logits, its [N, w] 16-bit dlogits (16-bit dtype), its [w, C] f32 dweight. w is the same in
 * the forward and the backward for the same N, C, dtype and scratch_bytes, so the backward's
 * logits are the forward's.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math") /* lk_expf's clamps as blends (see cross_entropy.c) */
#endif
#include "lk_classifier_columns.h"
#include "lk_cpu.h"

#include <math.h>

#define LK_IGNORE_INDEX (-100)

/* One slab [N, w] of logits into the rows' running statistics. */
static void forward_slab(lk_cc_layout s, const float *logits, const int32_t *labels, int smoothing, int64_t N,
                         int64_t w, int64_t v0)
{
#pragma omp parallel for if (N * w >= LK_OMP_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        const float *x = logits + r * w;
        float mx = s.max[r];
#pragma omp simd reduction(max : mx)
        for (int64_t c = 0; c < w; c++)
            mx = x[c] > mx ? x[c] : mx;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < w; c++)
            sum += lk_expf(x[c] - mx);
        /* The earlier slabs' sum, moved to the new max (exactly 1 when it stayed). */
        s.sum[r] = (s.max[r] == -INFINITY ? 0.0 : s.sum[r] * exp((double)s.max[r] - (double)mx)) + sum;
        s.max[r] = mx;
        if (smoothing) {
            double xs = 0.0;
#pragma omp simd reduction(+ : xs)
            for (int64_t c = 0; c < w; c++)
                xs += x[c];
            s.xsum[r] += xs;
        }
        const int32_t label = labels[r];
        if (label >= v0 && label < v0 + w) s.x_label[r] = x[label - v0];
    }
}

/* The rows' losses and log-sum-exps, as lk_softmax_cross_entropy_smoothed_forward makes them:
 * ignored rows (-100) a loss of 0, an invalid label NaN. */
static void forward_finish(float *losses, float *lse, lk_cc_layout s, const int32_t *labels, float smoothing, int64_t N,
                           int64_t V)
{
    for (int64_t r = 0; r < N; r++) {
        const double log_sum = log(s.sum[r]);
        lse[r] = (float)((double)s.max[r] + log_sum);
        const int32_t label = labels[r];
        if (label == LK_IGNORE_INDEX) {
            losses[r] = 0.0f;
        } else if (label < 0 || label >= V) {
            losses[r] = NAN;
        } else {
            const double nll = log_sum - (double)(s.x_label[r] - s.max[r]);
            if (smoothing == 0.0f) {
                losses[r] = (float)nll;
            } else {
                const double mean_nll = log_sum - (s.xsum[r] / (double)V - (double)s.max[r]);
                losses[r] = (float)((1.0 - (double)smoothing) * nll + (double)smoothing * mean_nll);
            }
        }
    }
}

/* A slab's logits become scale (p - eps / V - (1 - eps) onehot) in place; rows that are not
 * targets become zeros. */
static void dlogits_slab(float *logits, const float *lse, const int32_t *labels, float scale, float smoothing,
                         int64_t N, int64_t w, int64_t v0, int64_t V)
{
    const float uniform = smoothing / (float)V, target = scale * (1.0f - smoothing);
#pragma omp parallel for if (N * w >= LK_OMP_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        float *x = logits + r * w;
        const int32_t label = labels[r];
        if (label < 0 || label >= V) {
            memset(x, 0, (size_t)w * sizeof *x);
            continue;
        }
        const float m = lse[r];
#pragma omp simd
        for (int64_t c = 0; c < w; c++)
            x[c] = scale * (lk_expf(x[c] - m) - uniform);
        if (label >= v0 && label < v0 + w) x[label - v0] -= target;
    }
}

void lk_classifier_columns(float *losses, float *lse, float *dinp, void *dweight, uint32_t dweight_dtype, void *scratch,
                           size_t scratch_bytes, const void *inp, const void *weight, uint32_t dtype,
                           const int32_t *labels, float scale, float smoothing, int64_t N, int64_t C, int64_t V)
{
    const int backward = dinp || dweight;
    if (!loom_dtype_is_param(dtype) || (dweight && !loom_dtype_is_param(dweight_dtype)) || N <= 0 || !lse ||
        (!backward && !losses))
        return;
    const lk_cc_layout s = lk_cc_cut(scratch, scratch_bytes, N, C, V, dtype);
    const int64_t w_max = s.columns;
    if (w_max <= 0) return;
    const size_t es = loom_dtype_size(dtype), ds = dweight ? loom_dtype_size(dweight_dtype) : 0;
    float *logits = s.logits, *dw_slab = s.dw_slab;
    void *dl16 = s.dl16;
    if (!backward) {
        for (int64_t r = 0; r < N; r++) {
            s.sum[r] = 0.0;
            s.xsum[r] = 0.0;
            s.max[r] = -INFINITY;
            s.x_label[r] = 0.0f;
        }
    }
    for (int64_t v0 = 0; v0 < V; v0 += w_max) {
        const int64_t w = V - v0 < w_max ? V - v0 : w_max;
        const void *wt = (const char *)weight + (size_t)(v0 * C) * es;
        lk_gemm_mixed(0, 1, N, w, C, 1.0f, inp, dtype, C, wt, dtype, C, 0.0f, logits, w);
        if (!backward) {
            forward_slab(s, logits, labels, smoothing != 0.0f, N, w, v0);
            continue;
        }
        dlogits_slab(logits, lse, labels, scale, smoothing, N, w, v0, V);
        const void *dl = logits;
        if (dl16) {
            lk_convert(dl16, dtype, logits, LOOM_DTYPE_F32, N * w);
            dl = dl16;
        }
        if (dinp) lk_gemm_mixed(0, 0, N, C, w, 1.0f, dl, dtype, w, wt, dtype, C, 1.0f, dinp, C);
        if (!dweight) continue;
        char *dst = (char *)dweight + (size_t)(v0 * C) * ds;
        if (dweight_dtype == LOOM_DTYPE_F32) {
            lk_gemm_mixed(1, 0, w, C, N, 1.0f, dl, dtype, w, inp, dtype, C, 1.0f, (float *)dst, C);
        } else { /* this slab's rows of dweight are final: one rounding into the 16-bit gradient */
            lk_gemm_mixed(1, 0, w, C, N, 1.0f, dl, dtype, w, inp, dtype, C, 0.0f, dw_slab, C);
            lk_accumulate_f32(dst, dweight_dtype, dw_slab, w * C);
        }
    }
    if (!backward) forward_finish(losses, lse, s, labels, smoothing, N, V);
}
