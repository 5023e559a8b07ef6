/*
 * classifier.c - the fused classifier (llm.c's idea on the CPU): an LM head, the softmax, the
 * cross-entropy loss and the gradient of the logits, `chunk` rows at a time, so the [N, V]
 * logits never exist. Per chunk of rows r:
 *   logits_r = inp_r @ weight^T          (a [chunk, V] f32 block in the caller's scratch)
 *   p_r = softmax(logits_r), losses_r    (in place: lk_softmax_cross_entropy_forward)
 *   dlogits_r = scale (p_r - onehot)     (in place in f32; cast once into the 16-bit half of
 *                                         the scratch when dtype is 16-bit)
 *   dinp_r += dlogits_r @ weight,  dweight += dlogits_r^T @ inp_r
 * Each step is the unfused kernel the model used before (same products, same softmax), so
 * the results equal the unfused path's up to the products' blocking (summation order).
 *
 * A chunk of a few hundred rows keeps the products efficient (the head's weight is streamed
 * once per chunk) while the block stays a few tens of MB instead of N x V.
 */
#include "lk_cpu.h"

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* smoothing (ABI 1.4): HF's label smoothing through the smoothed softmax cross-entropy
 * (cross_entropy.c); 0 is the unsmoothed classifier, bit for bit. */
void lk_classifier_smoothed(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                            const void *weight, uint32_t dtype, const int32_t *labels, float scale, float smoothing,
                            int64_t N, int64_t C, int64_t V, int64_t chunk)
{
    if (!(dtype == LOOM_DTYPE_F32 || dtype == LOOM_DTYPE_BF16 || dtype == LOOM_DTYPE_F16) || N <= 0 || chunk <= 0)
        return;
    const size_t es = loom_dtype_size(dtype);
    float *logits = scratch;
    /* The 16-bit dlogits live after the f32 block (the cast may not run in place). */
    void *dl16 = dtype == LOOM_DTYPE_F32 ? NULL : logits + chunk * V;
    const int backward = dinp || dweight;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        const int64_t R = min_i64(chunk, N - r0);
        const void *x = (const char *)inp + (size_t)(r0 * C) * es;
        lk_gemm_mixed(0, 1, R, V, C, 1.0f, x, dtype, C, weight, dtype, C, 0.0f, logits, V);
        lk_softmax_cross_entropy_smoothed_forward(logits, losses + r0, logits, labels + r0, smoothing, R, V);
        if (!backward) continue;
        const void *dl = logits;
        if (dl16) {
            lk_softmax_cross_entropy_smoothed_backward_cast(dl16, dtype, logits, labels + r0, scale, smoothing, R, V);
            dl = dl16;
        } else {
            /* scale (p - eps/V) - scale (1 - eps) onehot in place: the same arithmetic as zeroing
             * a buffer and running the backward kernel into it. */
            const float uniform = smoothing / (float)V, target = scale * (1.0f - smoothing);
#pragma omp parallel for if (R * V >= LK_OMP_MIN_WORK)
            for (int64_t r = 0; r < R; r++) {
                float *row = logits + r * V;
                const int32_t label = labels[r0 + r];
                if (label < 0 || label >= V) {
                    for (int64_t c = 0; c < V; c++) row[c] = 0.0f;
                    continue;
                }
#pragma omp simd
                for (int64_t c = 0; c < V; c++) row[c] = 0.0f + scale * (row[c] - uniform);
                row[label] -= target;
            }
        }
        if (dinp) lk_gemm_mixed(0, 0, R, C, V, 1.0f, dl, dtype, V, weight, dtype, C, 1.0f, dinp + r0 * C, C);
        if (dweight) lk_gemm_mixed(1, 0, V, C, R, 1.0f, dl, dtype, V, x, dtype, C, 1.0f, dweight, C);
    }
}

void lk_classifier(float *losses, float *dinp, float *dweight, void *scratch, const void *inp, const void *weight,
                   uint32_t dtype, const int32_t *labels, float scale, int64_t N, int64_t C, int64_t V, int64_t chunk)
{
    lk_classifier_smoothed(losses, dinp, dweight, scratch, inp, weight, dtype, labels, scale, 0.0f, N, C, V, chunk);
}
