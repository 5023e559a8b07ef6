/*
 * lk_cpu.h - the CPU kernels (lk_*): the reference every other device is tested against and
 * the functions behind the CPU kernel table that the host lends to plugins (abi/loom/kernels.h
 * states each contract; the signatures here match that table member for member).
 *
 * Conventions (llm.c's): outputs first, then inputs, sizes last; row-major; every *_backward
 * ACCUMULATES into its gradient outputs, and a NULL gradient output is skipped. Row and
 * element loops run on OpenMP threads when the work is large enough to pay for the fork;
 * every output element is computed by exactly one thread in a fixed order, so results do not
 * depend on the thread count.
 */
#ifndef LOOM_LK_CPU_H
#define LOOM_LK_CPU_H

#include <loom/kernels.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scratch a kernel cannot do without: a void kernel cannot report running out of memory, and
 * skipping its work would train on garbage, so failing ends the process with a message naming
 * `who`. 64-byte aligned; release with free(). */
static inline void *lk_workspace(const char *who, size_t bytes)
{
    void *w = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!w) {
        fprintf(stderr, "loom: %s: out of memory for %zu bytes of workspace\n", who, bytes);
        abort();
    }
    return w;
}

/* Below this many elements of work a loop stays on the calling thread: an OpenMP fork/join
 * costs a few microseconds, about what 32k simple float operations take. */
#define LK_OMP_MIN_WORK 32768

/* exp(x) in a form GCC vectorises inside `omp simd` loops (glibc's expf stays a scalar call
 * without -ffast-math, and softmax over a 50k vocabulary spends most of its time there).
 * Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' degree-6 polynomial, then scaling
 * by 2^n built in the exponent bits: within 2 ulp of expf over [-87.3, 88.3]. Below -87.3 it
 * returns 0 (expf gives a subnormal < 1.2e-38 there: harmless for softmax weights); above
 * 88.3 it saturates at about 2.1e38 instead of overflowing; NaN in gives NaN out.
 * GCC only vectorises the clamps (compare + blend) in a file built with -fno-trapping-math
 * (our kernels never unmask FP traps), hence the `#pragma GCC optimize` in its users. */
static inline float lk_expf(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -87.3f ? -87.3f : x; /* comparisons are false for NaN: it passes through */
    xc = xc > 88.3f ? 88.3f : xc;
    const float j = xc * 1.44269504088896341f + magic;
    const float n = j - magic;
    const float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, xc));
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    const float y = fmaf(p * r, r, r) + 1.0f;
    /* n's integer value sits in j's low mantissa bits; unsigned arithmetic keeps the garbage
     * a NaN leaves there well defined. */
    uint32_t bits;
    memcpy(&bits, &j, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.3f ? 0.0f : y * scale;
}

/* One row's step of an online softmax (the tiled attentions, attention_flash.c and
 * attention_amx.c): with the row's running max m, row[0..n) becomes exp(row - mx) for
 * mx = max(m, row[0..n)); returns their sum and sets *mx. */
static inline float lk_online_softmax_row(float *row, int64_t n, float m, float *mx)
{
    float x = m;
#pragma omp simd reduction(max : x)
    for (int64_t c = 0; c < n; c++)
        x = row[c] > x ? row[c] : x;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < n; c++) {
        const float e = lk_expf(row[c] - x);
        row[c] = e;
        sum += e;
    }
    *mx = x;
    return sum;
}

/* Then the row's output accumulator o[0..hs) and sum *l under the new max mx: the first tile
 * starts them, a later one rescales them by exp(*m - mx) (1 when the max stayed). */
static inline void lk_online_softmax_rescale(float *o, int64_t hs, float *l, float *m, float mx, float sum, int first)
{
    if (first) {
        memset(o, 0, (size_t)hs * sizeof *o);
        *l = sum;
    } else {
        const float alpha = lk_expf(*m - mx);
#pragma omp simd
        for (int64_t i = 0; i < hs; i++)
            o[i] *= alpha;
        *l = fmaf(*l, alpha, sum);
    }
    *m = mx;
}

/* The end of a row: dst[0..hs) = o / l, and the row's log-sum-exp m + log l into *lse. */
static inline void lk_online_softmax_finish(float *dst, const float *o, int64_t hs, float l, float m, float *lse)
{
    const float inv = 1.0f / l;
#pragma omp simd
    for (int64_t i = 0; i < hs; i++)
        dst[i] = o[i] * inv;
    *lse = m + logf(l);
}

/* dst[t * ld + i] += src[t * hs + i] for t < T, i < hs: a head's [T, hs] panel (the tiled
 * attentions' dq) added into its columns of a wider [T, ld] gradient. */
static inline void lk_add_panel(float *dst, int64_t ld, const float *src, int64_t T, int64_t hs)
{
    for (int64_t t = 0; t < T; t++) {
        float *d = dst + t * ld;
        const float *x = src + t * hs;
#pragma omp simd
        for (int64_t i = 0; i < hs; i++)
            d[i] += x[i];
    }
}

/* bf16 is the top half of an f32: widening is a shift (NaNs pass unchanged). Inline so short
 * rows (the tiled attention's packing) need no call per row. */
static inline float lk_bf16_to_f32(uint16_t h)
{
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The table for api->service(host, LOOM_KERNELS_CPU_SERVICE, 0). Static; valid forever. */
const loom_kernels_api *lk_cpu_kernel_table(void);

/* matmul.c */
void lk_sgemm(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);

/* linear.c */
void lk_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t B, int64_t IC, int64_t OC);
void lk_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t B, int64_t IC, int64_t OC);

/* relu.c */
void lk_relu_forward(float *out, const float *inp, int64_t n);
void lk_relu_backward(float *dinp, const float *inp, const float *dout, int64_t n);

/* gelu.c */
void lk_gelu_forward(float *out, const float *inp, int64_t n);
void lk_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n);
/* ABI 1.9: GELU on 16-bit activations, one pass (kernels.h). */
void lk_gelu_forward_cast(void *out, uint32_t out_dtype, const void *inp, uint32_t inp_dtype, int64_t n);
void lk_gelu_backward_cast(float *dinp, const void *inp, uint32_t inp_dtype, const float *dout, int64_t n);

/* cross_entropy.c. Labels are in [0, C) or -100 (ignored: loss 0, no gradient). A label
 * outside both is a caller bug the kernel cannot report: it gets a NaN loss (so the run's
 * non-finite check stops it) and no gradient, and memory outside the row is never touched.
 * probs may alias logits (the softmax then runs in place). */
void lk_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits,
                                      const int32_t *labels, int64_t B, int64_t C);
void lk_softmax_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels,
                                       float scale, int64_t B, int64_t C);
/* The same with HF's label smoothing (ABI 1.4; smoothing 0: the calls above, bit for bit). */
void lk_softmax_cross_entropy_smoothed_forward(float *probs, float *losses, const float *logits,
                                               const int32_t *labels, float smoothing, int64_t B, int64_t C);
void lk_softmax_cross_entropy_smoothed_backward(float *dlogits, const float *probs, const int32_t *labels,
                                                float scale, float smoothing, int64_t B, int64_t C);
void lk_softmax_cross_entropy_smoothed_backward_cast(void *dlogits, uint32_t dtype, const float *probs,
                                                     const int32_t *labels, float scale, float smoothing, int64_t B,
                                                     int64_t C);

/* encoder.c. Token ids must lie in [0, vocab) of the caller's wte; the kernel cannot check. */
void lk_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                        int64_t B, int64_t T, int64_t C);
void lk_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                         int64_t B, int64_t T, int64_t C);

/* layernorm.c. mean and rstd may be NULL in the forward (inference: nothing to save). */
void lk_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int64_t N, int64_t C, float eps);
void lk_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int64_t N, int64_t C);

/* conv1d.c (HF Conv1D: weight [IC, OC]). */
void lk_conv1d_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t N, int64_t IC, int64_t OC);
void lk_conv1d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t N, int64_t IC, int64_t OC);

/* attention.c. C must be a multiple of NH. */
void lk_attention_forward(float *out, float *att, const float *qkv, int64_t B, int64_t T,
                          int64_t C, int64_t NH);
void lk_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           int64_t B, int64_t T, int64_t C, int64_t NH);

/* rmsnorm.c (T5LayerNorm). rstd may be NULL in the forward. */
void lk_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int64_t N,
                        int64_t C, float eps);
void lk_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int64_t N, int64_t C);

/* mha.c: attention over separate q, k, v with bias, key mask and optional causality. A
 * malloc failure inside the backward (Tk floats per thread) leaves its gradients unwritten. */
void lk_mha_forward(float *out, float *att, const float *q, const float *k, const float *v, const float *bias,
                    const int32_t *key_mask, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                    int64_t kv_rows, float scale, int32_t causal, float dropout, uint64_t dropout_seed);
void lk_mha_backward(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q,
                     const float *k, const float *v, const float *att, int64_t B, int64_t NH, int64_t Tq,
                     int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float dropout, uint64_t dropout_seed);

/* attention_amx.c: attention_flash's bf16 path on AMX tiles. Each returns 0 (and does
 * nothing) when it cannot run here: no AMX, the OS refused the tile state, a head size not a
 * multiple of 32, or LOOM_ATTENTION_AMX=0; the caller then runs the f32 tiles. */
int lk_attention_amx_ready(void);
int lk_attention_amx_forward(float *out, float *lse, const uint16_t *qkv, int64_t B, int64_t T, int64_t C, int64_t NH);
int lk_attention_amx_backward(float *dqkv, const float *dout, const uint16_t *qkv, const float *out, const float *lse,
                              int64_t B, int64_t T, int64_t C, int64_t NH);

/* attention_flash.c: the attention without [T, T] (kernels.h states the contract). */
void lk_attention_flash_forward(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B, int64_t T,
                                int64_t C, int64_t NH);
void lk_attention_flash_backward(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype, const float *out,
                                 const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH);
/* The same with attention dropout (ABI 1.4; dropout 0: the two above). */
void lk_attention_flash_forward_dropout(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B,
                                        int64_t T, int64_t C, int64_t NH, float dropout, uint64_t seed);
void lk_attention_flash_backward_dropout(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                         const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                         int64_t NH, float dropout, uint64_t seed);

/* classifier.c: LM head + softmax + loss + dlogits in row chunks (kernels.h). */
void lk_classifier(float *losses, float *dinp, float *dweight, void *scratch, const void *inp, const void *weight,
                   uint32_t dtype, const int32_t *labels, float scale, int64_t N, int64_t C, int64_t V, int64_t chunk);
void lk_classifier_smoothed(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                            const void *weight, uint32_t dtype, const int32_t *labels, float scale, float smoothing,
                            int64_t N, int64_t C, int64_t V, int64_t chunk);
/* classifier_columns.c (ABI 1.8): the same by slabs of vocabulary columns (kernels.h). */
void lk_classifier_columns(float *losses, float *lse, float *dinp, void *dweight, uint32_t dweight_dtype, void *scratch,
                           size_t scratch_bytes, const void *inp, const void *weight, uint32_t dtype,
                           const int32_t *labels, float scale, float smoothing, int64_t N, int64_t C, int64_t V);

/* elementwise.c */
void lk_add(float *out, const float *a, const float *b, int64_t n);
void lk_accumulate(float *dst, const float *src, int64_t n);

/* convert.c. Bit-exact with F16C / AVX512_BF16 whichever path the CPU takes. A dtype other
 * than LOOM_DTYPE_F32, _F16 or _BF16 makes either call do nothing (callers validate). */
void lk_convert(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n);
/* lk_convert on the calling thread alone, for kernels that convert block by block inside
 * their own parallel loops (gelu.c's 16-bit GELU): the same bits. */
void lk_convert_serial(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n);
void lk_softmax_cross_entropy_backward_cast(void *dlogits, uint32_t dtype, const float *probs, const int32_t *labels,
                                            float scale, int64_t B, int64_t C);
void lk_accumulate_f32(void *dst, uint32_t dst_dtype, const float *src, int64_t n);

/* gemm_mixed.c. bf16 x bf16 on oneDNN where the build and CPU allow (LOOM_BF16_GEMM=fp32 in
 * the environment turns that off), else widen to f32 and lk_sgemm. Unknown dtypes: nothing. */
void lk_gemm_mixed(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const void *A, uint32_t a_dtype, int64_t lda, const void *B, uint32_t b_dtype,
                   int64_t ldb, float beta, float *C, int64_t ldc);
/* Always the widening path (what every lk_gemm_mixed call runs without oneDNN). */
void lk_gemm_mixed_fp32(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K,
                        float alpha, const void *A, uint32_t a_dtype, int64_t lda, const void *B,
                        uint32_t b_dtype, int64_t ldb, float beta, float *C, int64_t ldc);
/* What the last lk_gemm_mixed / _fp32 call ran: "sgemm" (both f32), "fp32" (widened), or
 * "onednn:<implementation>". For tests and benchmarks; not synchronised. */
const char *lk_gemm_mixed_last_path(void);

/* optim_step.c (ABI 1.5): the optimizer step's element-wise work; the loops are shared with the
 * plugins (step_loops/lk_step_loops.h). */
void lk_adam_update(const struct loom_span *spans, size_t n_spans, const struct loom_adam_args *args);
void lk_scale_check(float *x, int64_t n, float scale, int32_t *found_inf);
void lk_sum_squares(double *sums, const float *x, const int64_t *bounds, int64_t n_segments);

#endif
