/*
 * classifier_columns.cu - the fused classifier by slabs of vocabulary columns on CUDA (ABI 1.8),
 * with the contract of kernels/cpu/classifier_columns.c (abi/loom/kernels.h,
 * classifier_columns) and its scratch layout: the rows' statistics (sum and sum of logits in
 * double, running max, the target's logit), then the slab's [N, w] f32 logits, its 16-bit
 * dlogits, its [w, C] f32 dweight. The slab width is computed the same way, so a forward and
 * its backward see the same slabs.
 *
 * The products are cuBLAS's (gemm_mixed); the row work is one block per row over the slab's w
 * columns. Everything is issued on the compute stream in order, so a slab's scratch is reused
 * by the next slab only after its products have read it.
 */
#include "common.cuh"
#include "lk_classifier_columns.h"

#define LK_IGNORE_INDEX (-100)

static int lk_cc_block(int64_t w)
{
    return w >= 256 ? 256 : (int)((w + 31) / 32 * 32);
}

static __global__ void lk_cc_init_kernel(double *sum, double *xsum, float *max, float *x_label, int64_t N)
{
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < N; r += (int64_t)gridDim.x * blockDim.x) {
        sum[r] = 0.0;
        xsum[r] = 0.0;
        max[r] = -INFINITY;
        x_label[r] = 0.0f;
    }
}

/* One slab [N, w] into the rows' running statistics (the earlier slabs' sum moved to the new
 * max). */
static __global__ void lk_cc_forward_kernel(double *sum, double *xsum, float *max, float *x_label, const float *logits,
                                            const int32_t *labels, int smoothing, int64_t N, int64_t w, int64_t v0)
{
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        const float *x = logits + r * w;
        float mx = max[r];
        for (int64_t c = threadIdx.x; c < w; c += blockDim.x)
            mx = fmaxf(mx, x[c]);
        mx = lk_block_reduce(mx, lk_max_op(), -INFINITY);
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < w; c += blockDim.x)
            s += expf(x[c] - mx);
        s = lk_block_reduce(s, lk_sum_op(), 0.0f);
        float xs = 0.0f;
        if (smoothing) {
            for (int64_t c = threadIdx.x; c < w; c += blockDim.x)
                xs += x[c];
            xs = lk_block_reduce(xs, lk_sum_op(), 0.0f);
        }
        if (threadIdx.x == 0) {
            sum[r] = (max[r] == -INFINITY ? 0.0 : sum[r] * exp((double)max[r] - (double)mx)) + (double)s;
            max[r] = mx;
            xsum[r] += (double)xs;
            const int32_t label = labels[r];
            if (label >= v0 && label < v0 + w) x_label[r] = x[label - v0];
        }
    }
}

static __global__ void lk_cc_finish_kernel(float *losses, float *lse, const double *sum, const double *xsum,
                                           const float *max, const float *x_label, const int32_t *labels,
                                           float smoothing, int64_t N, int64_t V)
{
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < N; r += (int64_t)gridDim.x * blockDim.x) {
        const double log_sum = log(sum[r]);
        lse[r] = (float)((double)max[r] + log_sum);
        const int32_t label = labels[r];
        if (label == LK_IGNORE_INDEX) {
            losses[r] = 0.0f;
        } else if (label < 0 || label >= V) {
            losses[r] = __int_as_float(0x7fc00000); /* quiet NaN, as the row kernels */
        } else {
            const double nll = log_sum - (double)(x_label[r] - max[r]);
            losses[r] = smoothing == 0.0f
                            ? (float)nll
                            : (float)((1.0 - (double)smoothing) * nll +
                                      (double)smoothing * (log_sum - (xsum[r] / (double)V - (double)max[r])));
        }
    }
}

/* scale (exp(x - lse) - eps / V), the label's entry less scale (1 - eps); rows that are not
 * targets: zeros. In place on the slab. */
static __global__ void lk_cc_dlogits_kernel(float *logits, const float *lse, const int32_t *labels, float scale,
                                            float smoothing, int64_t N, int64_t w, int64_t v0, int64_t V)
{
    const float uniform = smoothing / (float)V, target = scale * (1.0f - smoothing);
    for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
        float *x = logits + r * w;
        const int32_t label = labels[r];
        const bool valid = label >= 0 && label < V;
        const float m = lse[r];
        for (int64_t c = threadIdx.x; c < w; c += blockDim.x) {
            float v = valid ? scale * (expf(x[c] - m) - uniform) : 0.0f;
            if (valid && v0 + c == label) v -= target;
            x[c] = v;
        }
    }
}

extern "C" void lk_classifier_columns_cuda(float *losses, float *lse, float *dinp, void *dweight,
                                           uint32_t dweight_dtype, void *scratch, size_t scratch_bytes, const void *inp,
                                           const void *weight, uint32_t dtype, const int32_t *labels, float scale,
                                           float smoothing, int64_t N, int64_t C, int64_t V)
{
    static const char fn[] = "lk_classifier_columns_cuda";
    const int backward = dinp || dweight;
    if (!loom_dtype_is_param(dtype) || (dweight && !loom_dtype_is_param(dweight_dtype)) || N <= 0 || !lse ||
        (!backward && !losses))
        return;
    const lk_cc_layout y = lk_cc_cut(scratch, scratch_bytes, N, C, V, dtype);
    const int64_t w_max = y.columns;
    if (w_max <= 0) return;
    const size_t es = loom_dtype_size(dtype), ds = dweight ? loom_dtype_size(dweight_dtype) : 0;
    double *sum = y.sum, *xsum = y.xsum;
    float *max = y.max, *x_label = y.x_label, *logits = y.logits, *dw_slab = y.dw_slab;
    void *dl16 = y.dl16;
    const unsigned rows_grid = lk_cuda_grid(N, 1);
    if (!backward) {
        lk_cc_init_kernel<<<lk_cuda_grid(N, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(sum, xsum, max, x_label, N);
        if (!lk_cuda_launched(fn)) return;
    }
    for (int64_t v0 = 0; v0 < V; v0 += w_max) {
        const int64_t w = V - v0 < w_max ? V - v0 : w_max;
        const void *wt = (const char *)weight + (size_t)(v0 * C) * es;
        lk_gemm_mixed_cuda(0, 1, N, w, C, 1.0f, inp, dtype, C, wt, dtype, C, 0.0f, logits, w);
        if (!backward) {
            lk_cc_forward_kernel<<<rows_grid, lk_cc_block(w)>>>(sum, xsum, max, x_label, logits, labels,
                                                                smoothing != 0.0f, N, w, v0);
            if (!lk_cuda_launched(fn)) return;
            continue;
        }
        lk_cc_dlogits_kernel<<<rows_grid, lk_cc_block(w)>>>(logits, lse, labels, scale, smoothing, N, w, v0, V);
        if (!lk_cuda_launched(fn)) return;
        const void *dl = logits;
        if (dl16) {
            lk_convert_cuda(dl16, dtype, logits, LOOM_DTYPE_F32, N * w);
            dl = dl16;
        }
        if (dinp) lk_gemm_mixed_cuda(0, 0, N, C, w, 1.0f, dl, dtype, w, wt, dtype, C, 1.0f, dinp, C);
        if (!dweight) continue;
        char *dst = (char *)dweight + (size_t)(v0 * C) * ds;
        if (dweight_dtype == LOOM_DTYPE_F32) {
            lk_gemm_mixed_cuda(1, 0, w, C, N, 1.0f, dl, dtype, w, inp, dtype, C, 1.0f, (float *)dst, C);
        } else {
            lk_gemm_mixed_cuda(1, 0, w, C, N, 1.0f, dl, dtype, w, inp, dtype, C, 0.0f, dw_slab, C);
            lk_accumulate_f32_cuda(dst, dweight_dtype, dw_slab, w * C);
        }
    }
    if (!backward) {
        lk_cc_finish_kernel<<<lk_cuda_grid(N, LK_CUDA_BLOCK), LK_CUDA_BLOCK>>>(losses, lse, sum, xsum, max, x_label,
                                                                               labels, smoothing, N, V);
        lk_cuda_launched(fn);
    }
}
