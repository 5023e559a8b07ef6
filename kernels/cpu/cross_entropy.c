/*
 * cross_entropy.c - row-wise softmax fused with the cross-entropy loss, and its backward.
 * Labels of -100 (PyTorch's ignore_index) mark rows that are not targets.
 */
#include "lk_cpu.h"

#include <math.h>

#define LK_IGNORE_INDEX (-100)

void lk_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits,
                                      const int32_t *labels, int64_t B, int64_t C)
{
#pragma omp parallel for if (B * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        const float *x = logits + b * C;
        float *p = probs + b * C;
        /* Subtracting the row max keeps every exponent <= 0: no overflow, and the largest
         * term is exactly 1, so the sum cannot underflow to 0 either. */
        float max = -INFINITY;
        for (int64_t c = 0; c < C; c++) max = x[c] > max ? x[c] : max;
        double sum = 0.0; /* double: a 50k-class row sums many small terms */
        for (int64_t c = 0; c < C; c++) {
            p[c] = expf(x[c] - max);
            sum += p[c];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < C; c++) p[c] *= inv;

        const int32_t label = labels[b];
        if (label == LK_IGNORE_INDEX) {
            losses[b] = 0.0f;
        } else if (label < 0 || label >= C) {
            losses[b] = NAN;
        } else {
            /* -log p[label] written as log(sum) - (x - max): finite even when p[label]
             * underflows to 0 in float. */
            losses[b] = (float)(log(sum) - (double)(x[label] - max));
        }
    }
}

void lk_softmax_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels,
                                       float scale, int64_t B, int64_t C)
{
#pragma omp parallel for if (B * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        const int32_t label = labels[b];
        if (label < 0 || label >= C) continue; /* ignored (or invalid: no gradient) */
        const float *p = probs + b * C;
        float *d = dlogits + b * C;
        for (int64_t c = 0; c < C; c++) d[c] += scale * p[c];
        d[label] -= scale;
    }
}
