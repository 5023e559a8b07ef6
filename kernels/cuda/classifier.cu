/*
 * classifier.cu - the fused classifier on CUDA, with the contract of kernels/cpu/classifier.c
 * (abi/loom/kernels.h, classifier): `chunk` rows at a time, logits = inp weight^T into the
 * caller's scratch, softmax and losses in place, dlogits = scale (p - onehot) (cast once to
 * 16-bit when dtype is), then dinp += dlogits weight and dweight += dlogits^T inp. The [N, V]
 * logits never exist; the products are cuBLAS's (gemm_mixed), the row work the
 * cross-entropy kernels'. Everything is issued on the compute stream in order, so the scratch
 * block is reused by the next chunk only after this chunk's products have read it.
 *
 * classifier_smoothed (ABI 1.4) is the same with HF's label smoothing eps: the smoothed
 * cross-entropy kernels, and dlogits = scale (p - eps / V) - scale (1 - eps) onehot; eps = 0 is
 * the unsmoothed classifier, bit for bit (the CPU's classifier.c does the same).
 */
#include "common.cuh"

/* scale (p - eps / V) - scale (1 - eps) onehot in place, rounding as the CPU does
 * (0 + scale (p - eps / V), then the label's entry loses scale (1 - eps)); rows without a valid
 * label get zeros. */
static __global__ void lk_classifier_dlogits_kernel(float *rows, const int32_t *labels, float scale, float smoothing,
                                                    int64_t R, int64_t V)
{
    const float uniform = smoothing / (float)V, target = scale * (1.0f - smoothing);
    for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
        const int32_t label = labels[r];
        float *row = rows + r * V;
        const bool valid = label >= 0 && label < V;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < V; c += (int64_t)gridDim.x * blockDim.x) {
            float v = valid ? __fadd_rn(0.0f, __fmul_rn(scale, __fsub_rn(row[c], uniform))) : 0.0f;
            if (valid && c == label) v -= target;
            row[c] = v;
        }
    }
}

extern "C" void lk_classifier_smoothed_cuda(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                                            const void *weight, uint32_t dtype, const int32_t *labels, float scale,
                                            float smoothing, int64_t N, int64_t C, int64_t V, int64_t chunk)
{
    static const char fn[] = "lk_classifier_smoothed_cuda";
    if (!(dtype == LOOM_DTYPE_F32 || dtype == LOOM_DTYPE_BF16 || dtype == LOOM_DTYPE_F16) || N <= 0 || chunk <= 0)
        return;
    const size_t es = dtype == LOOM_DTYPE_F32 ? 4 : 2;
    float *logits = (float *)scratch;
    void *dl16 = dtype == LOOM_DTYPE_F32 ? NULL : (void *)(logits + chunk * V);
    const int backward = dinp || dweight;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        const int64_t R = chunk < N - r0 ? chunk : N - r0;
        const void *x = (const char *)inp + (size_t)(r0 * C) * es;
        lk_gemm_mixed_cuda(0, 1, R, V, C, 1.0f, x, dtype, C, weight, dtype, C, 0.0f, logits, V);
        lk_softmax_cross_entropy_smoothed_forward_cuda(logits, losses + r0, logits, labels + r0, smoothing, R, V);
        if (!backward) continue;
        const void *dl = logits;
        if (dl16) {
            lk_softmax_cross_entropy_smoothed_backward_cast_cuda(dl16, dtype, logits, labels + r0, scale, smoothing, R,
                                                                 V);
            dl = dl16;
        } else {
            const dim3 grid(lk_cuda_grid(V, LK_CUDA_BLOCK) < 64 ? lk_cuda_grid(V, LK_CUDA_BLOCK) : 64,
                            lk_cuda_grid_y(R));
            lk_classifier_dlogits_kernel<<<grid, LK_CUDA_BLOCK>>>(logits, labels + r0, scale, smoothing, R, V);
            if (!lk_cuda_launched(fn)) return;
        }
        if (dinp) lk_gemm_mixed_cuda(0, 0, R, C, V, 1.0f, dl, dtype, V, weight, dtype, C, 1.0f, dinp + r0 * C, C);
        if (dweight) lk_gemm_mixed_cuda(1, 0, V, C, R, 1.0f, dl, dtype, V, x, dtype, C, 1.0f, dweight, C);
    }
}

extern "C" void lk_classifier_cuda(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                                   const void *weight, uint32_t dtype, const int32_t *labels, float scale, int64_t N,
                                   int64_t C, int64_t V, int64_t chunk)
{
    lk_classifier_smoothed_cuda(losses, dinp, dweight, scratch, inp, weight, dtype, labels, scale, 0.0f, N, C, V,
                                chunk);
}
