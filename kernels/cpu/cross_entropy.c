/*
 * cross_entropy.c - row-wise softmax fused with the cross-entropy loss, and its backward.
 * Labels of -100 (PyTorch's ignore_index) mark rows that are not targets. probs may alias
 * logits: each row reads everything it needs from its logits before overwriting them.
 *
 * Label smoothing (ABI 1.4, HF's LabelSmoother, docs/semantics/trainer.md#label-smoothing):
 * with eps, a row's loss is (1 - eps) nll + eps mean_c(-log p_c); as -log p_c = lse - x_c with
 * lse = log(sum) + max, that is lse - (1 - eps) x_label - eps mean(x), so the forward needs
 * only the row's mean logit besides. The gradient is p - (1 - eps) onehot - eps / C. eps = 0
 * runs the unsmoothed arithmetic: the same bits as the 1.0 members.
 */
/* Let GCC if-convert lk_expf's clamps into vector blends: -fno-trapping-math only drops the
 * assumption that FP exceptions trap (they never do here); results are unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "lk_cpu.h"

#include <math.h>

#define LK_IGNORE_INDEX (-100)

void lk_softmax_cross_entropy_smoothed_forward(float *probs, float *losses, const float *logits,
                                               const int32_t *labels, float smoothing, int64_t B, int64_t C)
{
#pragma omp parallel for if (B * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        const float *x = logits + b * C;
        float *p = probs + b * C;
        /* Subtracting the row max keeps every exponent <= 0: no overflow, and the largest
         * term is exactly 1, so the sum cannot underflow to 0 either. */
        float max = -INFINITY;
#pragma omp simd reduction(max : max)
        for (int64_t c = 0; c < C; c++) max = x[c] > max ? x[c] : max;
        /* Smoothing's mean logit, read before an in-place softmax overwrites the row. */
        double xsum = 0.0;
        if (smoothing != 0.0f) {
#pragma omp simd reduction(+ : xsum)
            for (int64_t c = 0; c < C; c++) xsum += x[c];
        }
        /* probs may alias logits: read the target's logit before the row is overwritten. */
        const int32_t label = labels[b];
        const int valid = label >= 0 && label < C;
        const float x_label = valid ? x[label] : 0.0f;
        /* double: a 50k-class row sums many small terms. The simd reduction keeps one
         * partial sum per lane (a fixed order, so still deterministic) instead of one serial
         * chain of dependent adds, and lk_expf vectorises where expf is a scalar call. */
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; c++) {
            const float e = lk_expf(x[c] - max);
            p[c] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) p[c] *= inv;

        if (label == LK_IGNORE_INDEX) {
            losses[b] = 0.0f;
        } else if (!valid) {
            losses[b] = NAN;
        } else {
            /* -log p[label] written as log(sum) - (x - max): finite even when p[label]
             * underflows to 0 in float. */
            const double nll = log(sum) - (double)(x_label - max);
            if (smoothing == 0.0f) {
                losses[b] = (float)nll;
            } else {
                const double mean_nll = log(sum) - (xsum / (double)C - (double)max); /* mean_c -log p_c */
                losses[b] = (float)((1.0 - (double)smoothing) * nll + (double)smoothing * mean_nll);
            }
        }
    }
}

void lk_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits, const int32_t *labels,
                                      int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_forward(probs, losses, logits, labels, 0.0f, B, C);
}

/* With eps = 0, p - 0 is p and scale (1 - 0) is scale: the unsmoothed bits. */
void lk_softmax_cross_entropy_smoothed_backward(float *dlogits, const float *probs, const int32_t *labels,
                                                float scale, float smoothing, int64_t B, int64_t C)
{
    const float uniform = smoothing / (float)C, target = scale * (1.0f - smoothing);
#pragma omp parallel for if (B * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        const int32_t label = labels[b];
        if (label < 0 || label >= C) continue; /* ignored (or invalid: no gradient) */
        const float *p = probs + b * C;
        float *d = dlogits + b * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) d[c] += scale * (p[c] - uniform);
        d[label] -= target;
    }
}

void lk_softmax_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels, float scale,
                                       int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_backward(dlogits, probs, labels, scale, 0.0f, B, C);
}

/* The same arithmetic as zeroing + lk_softmax_cross_entropy_backward (0 + scale p is scale p;
 * the label's entry then loses scale), made in a small f32 block that stays in L1 and cast from
 * there: one pass over the probabilities, no f32 copy of the gradient. */
void lk_softmax_cross_entropy_smoothed_backward_cast(void *dlogits, uint32_t dtype, const float *probs,
                                                     const int32_t *labels, float scale, float smoothing, int64_t B,
                                                     int64_t C)
{
    enum { BLOCK = 1024 };
    const float uniform = smoothing / (float)C, target = scale * (1.0f - smoothing);
    const size_t es = dtype == LOOM_DTYPE_F32 ? sizeof(float) : 2;
#pragma omp parallel for if (B * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        float block[BLOCK];
        const float *p = probs + b * C;
        char *d = (char *)dlogits + (size_t)(b * C) * es;
        const int32_t label = labels[b];
        const int valid = label >= 0 && label < C;
        for (int64_t c0 = 0; c0 < C; c0 += BLOCK) {
            const int64_t m = C - c0 < BLOCK ? C - c0 : BLOCK;
            if (valid) {
#pragma omp simd
                for (int64_t j = 0; j < m; j++) block[j] = scale * (p[c0 + j] - uniform);
                if (label >= c0 && label < c0 + m) block[label - c0] -= target;
            } else {
                for (int64_t j = 0; j < m; j++) block[j] = 0.0f;
            }
            lk_convert(d + (size_t)c0 * es, dtype, block, LOOM_DTYPE_F32, m);
        }
    }
}

void lk_softmax_cross_entropy_backward_cast(void *dlogits, uint32_t dtype, const float *probs, const int32_t *labels,
                                            float scale, int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_backward_cast(dlogits, dtype, probs, labels, scale, 0.0f, B, C);
}
