/*
 * lk_classifier_columns.h - how classifier_columns (ABI 1.8) cuts its scratch, shared by the CPU
 * kernel (cpu/classifier_columns.c) and the CUDA one (cuda/classifier_columns.cu) so both cut
 * the same slabs from the same scratch: the rows' statistics (sum and sum of logits in double,
 * running max and the target's logit in f32), then the slab's [N, w] f32 logits, its [N, w]
 * 16-bit dlogits (16-bit dtype) and its [w, C] f32 dweight.
 */
#ifndef LOOM_LK_CLASSIFIER_COLUMNS_H
#define LOOM_LK_CLASSIFIER_COLUMNS_H

#include <loom/kernels.h>

typedef struct {
    double *sum;     /* [N] of exp(logit - max), across the slabs so far           */
    double *xsum;    /* [N] of the logits (smoothing's mean)                       */
    float *max;      /* [N] the running max                                        */
    float *x_label;  /* [N] the target's logit, once its slab passed               */
    float *logits;   /* [N, w] f32                                                 */
    void *dl16;      /* [N, w] 16-bit dlogits; NULL for F32                        */
    float *dw_slab;  /* [w, C] f32                                                 */
    int64_t columns; /* w: the widest slab the scratch holds; 0 when none fits     */
} lk_cc_layout;

/* A multiple of 16 columns when it can be (aligned rows for the products). */
static inline lk_cc_layout lk_cc_cut(void *scratch, size_t scratch_bytes, int64_t N, int64_t C, int64_t V,
                                     uint32_t dtype)
{
    lk_cc_layout y = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    const size_t head = loom_classifier_columns_bytes(N, C, 0, dtype),
                 one = loom_classifier_columns_bytes(N, C, 1, dtype);
    const size_t per = loom_classifier_columns_bytes(N, C, 2, dtype) - one, fixed = one - per; /* head + 64 */
    if (scratch_bytes < one) return y;
    int64_t w = (int64_t)((scratch_bytes - fixed) / per);
    w = w >= V ? V : w >= 16 ? w / 16 * 16 : w;
    char *base = (char *)scratch;
    y.columns = w;
    y.sum = (double *)base;
    y.xsum = y.sum + N;
    y.max = (float *)(y.xsum + N);
    y.x_label = y.max + N;
    y.logits = (float *)(base + head);
    y.dl16 = dtype == LOOM_DTYPE_F32 ? NULL : (void *)(y.logits + N * w);
    const uintptr_t end = (uintptr_t)((char *)y.logits + (size_t)(N * w) * (sizeof(float) + (y.dl16 ? 2u : 0u)));
    y.dw_slab = (float *)((end + 63u) & ~(uintptr_t)63u); /* the 64 bytes of slack */
    return y;
}

#endif
