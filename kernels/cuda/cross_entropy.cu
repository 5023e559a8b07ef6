/*
 * cross_entropy.cu - row-wise softmax fused with the cross-entropy loss, and its backward.
 * Labels of -100 (PyTorch's ignore_index) mark rows that are not targets. Same contract and
 * formulas as kernels/cpu/cross_entropy.c, including probs aliasing logits (in place).
 *
 * One block per row (grid-stride over rows): the block finds the row max, then the sum of
 * exp(x - max), with block-wide reductions, and writes the probabilities in a third pass. A
 * GPT-2 row (50257 logits, 200 KB) is read three times from L2, which holds it.
 */
#include "common.cuh"

#define LK_IGNORE_INDEX (-100)

/* Threads per row: up to 512 for long rows; a short row gets the fewest warps that cover it
 * (a 10-class row should not idle 246 threads). Always a multiple of 32, as the block
 * reductions require. */
static int lk_ce_block(int64_t C)
{
    if (C >= 512) return 512;
    const int64_t warps = (C + 31) / 32;
    return (int)(warps > 0 ? warps * 32 : 32);
}

static __global__ void lk_ce_forward_kernel(float *probs, float *losses, const float *logits, const int32_t *labels,
                                            float smoothing, int64_t B, int64_t C)
{
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        const float *x = logits + b * C;
        float *p = probs + b * C;
        /* Subtracting the row max keeps every exponent <= 0: no overflow, and the largest term
         * is exactly 1, so the sum cannot underflow to 0. fmaxf skips NaN like the CPU's
         * comparison does. */
        float max = -INFINITY;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            max = fmaxf(max, x[c]);
        max = lk_block_reduce(max, lk_max_op(), -INFINITY);
        /* Label smoothing's mean logit (ABI 1.4), before an in-place softmax overwrites x. */
        float xsum = 0.0f;
        if (smoothing != 0.0f) {
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
                xsum += x[c];
            xsum = lk_block_reduce(xsum, lk_sum_op(), 0.0f);
        }
        /* probs may alias logits: the target's logit is read now; the reduction below
         * synchronises the block before any thread overwrites the row. */
        const int32_t label = labels[b];
        const bool valid = label >= 0 && label < C;
        const float x_label = valid && threadIdx.x == 0 ? x[label] : 0.0f;
        float sum = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            sum += expf(x[c] - max);
        sum = lk_block_reduce(sum, lk_sum_op(), 0.0f);
        const float inv = 1.0f / sum;
        /* Each element is read and written by the same thread: in place is safe. */
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
            p[c] = expf(x[c] - max) * inv;
        if (threadIdx.x == 0) {
            if (label == LK_IGNORE_INDEX)
                losses[b] = 0.0f;
            else if (!valid)
                losses[b] = __int_as_float(0x7fc00000); /* quiet NaN: a caller bug, made loud */
            else
                /* -log p[label] as log(sum) - (x - max): finite even when p[label] underflows. */
                losses[b] = smoothing == 0.0f
                                ? logf(sum) - (x_label - max)
                                : (1.0f - smoothing) * (logf(sum) - (x_label - max)) +
                                      smoothing * (logf(sum) - (xsum / (float)C - max));
        }
        /* The next row's first reduction synchronises before its shared memory is reused. */
    }
}

static __global__ void lk_ce_backward_kernel(float *dlogits, const float *probs, const int32_t *labels, float scale,
                                             float smoothing, int64_t B, int64_t C)
{
    const float uniform = smoothing / (float)C, target = scale * (1.0f - smoothing);
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        const int32_t label = labels[b];       /* the same for the whole block: no divergence */
        if (label < 0 || label >= C) continue; /* ignored (or invalid: no gradient) */
        const float *p = probs + b * C;
        float *d = dlogits + b * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            /* __fmul_rn/__fadd_rn: no fused multiply-add, so each element rounds as the CPU's
             * d += scale * p; d[label] -= scale does. */
            float v = __fadd_rn(d[c], __fmul_rn(scale, __fsub_rn(p[c], uniform)));
            if (c == label) v -= target;
            d[c] = v;
        }
    }
}

extern "C" void lk_softmax_cross_entropy_smoothed_forward_cuda(float *probs, float *losses, const float *logits,
                                                               const int32_t *labels, float smoothing, int64_t B,
                                                               int64_t C)
{
    if (B <= 0) return;
    const unsigned int grid = (unsigned int)(B < LK_CUDA_MAX_GRID ? B : LK_CUDA_MAX_GRID);
    lk_ce_forward_kernel<<<grid, lk_ce_block(C)>>>(probs, losses, logits, labels, smoothing, B, C);
    lk_cuda_launched("lk_softmax_cross_entropy_forward_cuda");
}

extern "C" void lk_softmax_cross_entropy_forward_cuda(float *probs, float *losses, const float *logits,
                                                      const int32_t *labels, int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_forward_cuda(probs, losses, logits, labels, 0.0f, B, C);
}

extern "C" void lk_softmax_cross_entropy_smoothed_backward_cuda(float *dlogits, const float *probs,
                                                                const int32_t *labels, float scale, float smoothing,
                                                                int64_t B, int64_t C)
{
    if (B <= 0 || C <= 0 || !dlogits) return;
    const unsigned int grid = (unsigned int)(B < LK_CUDA_MAX_GRID ? B : LK_CUDA_MAX_GRID);
    lk_ce_backward_kernel<<<grid, lk_ce_block(C)>>>(dlogits, probs, labels, scale, smoothing, B, C);
    lk_cuda_launched("lk_softmax_cross_entropy_backward_cuda");
}

extern "C" void lk_softmax_cross_entropy_backward_cuda(float *dlogits, const float *probs, const int32_t *labels,
                                                       float scale, int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_smoothed_backward_cuda(dlogits, probs, labels, scale, 0.0f, B, C);
}
