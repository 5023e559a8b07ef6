/*
 * kernels.h - the numeric kernels the host lends to plugins (a model plugin computes its
 * forward and backward with them), so a plugin runs on whichever device the host picked
 * without linking a kernel library of its own.
 *
 * Obtain it with api->service(host, LOOM_KERNELS_CPU_SERVICE, 0) (or the CUDA name). All
 * pointers are on the table's device. Shapes are row-major; sizes are element counts.
 * Convention (llm.c's): outputs first, then inputs, sizes last; every *_backward
 * ACCUMULATES into its gradient outputs (d += ...), so the caller zeroes gradients once and
 * residual fan-in is correct by construction. A gradient output that is NULL is skipped.
 * All functions are MT-safe; each parallelises internally over the host's threads, so call
 * them from one thread at a time per instance.
 */
#ifndef LOOM_KERNELS_H
#define LOOM_KERNELS_H

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_KERNELS_CPU_SERVICE "loom.kernels.cpu/1"
#define LOOM_KERNELS_CUDA_SERVICE "loom.kernels.cuda/1"

/* What makes a header-only helper callable from CUDA device code as well (nvcc defines
 * __CUDACC__); empty for C and C++ compilers. */
#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__
#else
#define LOOM_HOST_DEVICE
#endif

/* A uniform draw in [0, 1) for element `index` of a tensor under `seed` (header-only, the hash
 * of loom_dropout_keep since ABI 1.3, named on its own since 1.10 for NEFTune's noise): a
 * counter-based hash, so any element can be drawn again from (seed, index) alone, on every
 * device and thread count. Integer arithmetic and one exact float product: 24 uniform bits. */
static inline LOOM_HOST_DEVICE float loom_uniform(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * 0x1p-24f;
}

/* Dropout's keep decision for element `index` of a tensor under `seed` with drop probability
 * p (header-only, ABI 1.3), so a forward and its backward draw the same mask without storing
 * it. Kept elements are scaled by 1 / (1 - p) by the caller. p <= 0 keeps everything. The CUDA
 * kernels call this very function (LOOM_HOST_DEVICE), so a CPU and a GPU run draw the same
 * masks. */
static inline LOOM_HOST_DEVICE int loom_dropout_keep(uint64_t seed, uint64_t index, float p)
{
    return p <= 0.0f || loom_uniform(seed, index) >= p;
}

struct loom_span;      /* optimizer.h: one piece of a parameter tensor (adam_update, ABI 1.5) */
struct loom_adam_args; /* below: adam_update's coefficients (ABI 1.5)                        */

/* Built by the host (or a backend plugin): static storage, never freed; pointers passed to a
 * kernel are the caller's, borrowed for the call. Members are since 1.0 unless an "ABI 1.x"
 * heading above them says otherwise (loom.h's version log lists them). A 1.0 member
 * is Required (never NULL); a later one is Optional to the reader: read it through LOOM_HAS
 * (NULL or beyond struct_size: this table lacks it). All MT-safe as said above. */
typedef struct loom_kernels_api {
    LOOM_STRUCT_HEADER;
    uint32_t device;   /* LOOM_DEVICE_* these kernels run on                                */
    uint32_t reserved1;

    /* C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, op = transpose when trans_* != 0;
     * lda/ldb/ldc are row strides in elements. With beta == 0, C is not read (BLAS semantics:
     * it may hold garbage, even NaN). */
    void (*sgemm)(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);

    /* out[B,OC] = inp[B,IC] @ weight[OC,IC]^T + bias[OC] (bias may be NULL). */
    void (*linear_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t B, int64_t IC, int64_t OC);
    /* dinp[B,IC] += dout @ weight; dweight[OC,IC] += dout^T @ inp; dbias[OC] += sum_b dout. */
    void (*linear_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int64_t B, int64_t IC, int64_t OC);

    /* out = max(inp, 0); dinp += dout * (inp > 0). */
    void (*relu_forward)(float *out, const float *inp, int64_t n);
    void (*relu_backward)(float *dinp, const float *inp, const float *dout, int64_t n);

    /* GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
    void (*gelu_forward)(float *out, const float *inp, int64_t n);
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, int64_t n);

    /* Row-wise softmax of logits[B,C] into probs[B,C], and losses[b] = -log probs[b, label]
     * (0 where labels[b] == -100, the ignore index). Returns nothing; sum losses yourself.
     * probs may alias logits (the softmax is then done in place, saving B*C floats). */
    void (*softmax_cross_entropy_forward)(float *probs, float *losses, const float *logits,
                                          const int32_t *labels, int64_t B, int64_t C);
    /* dlogits[b,:] += scale * (probs[b,:] - onehot(labels[b])) for rows not ignored. */
    void (*softmax_cross_entropy_backward)(float *dlogits, const float *probs,
                                           const int32_t *labels, float scale, int64_t B, int64_t C);

    /* ---- transformer kernels (GPT-2). N = rows (B * T). ---- */

    /* out[B,T,C] = wte[tokens[b,t], :] + wpe[t, :]. */
    void (*encoder_forward)(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                            int64_t B, int64_t T, int64_t C);
    /* dwte[tokens[b,t], :] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:] (either may be NULL). */
    void (*encoder_backward)(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             int64_t B, int64_t T, int64_t C);
    /* Layer normalisation over the last dimension of inp[N, C]:
     * out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) (biased variance).
     * Saves mean[N] and rstd[N] for the backward. */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int64_t N, int64_t C, float eps);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int64_t N, int64_t C);
    /* HF's Conv1D layout: out[N, OC] = inp[N, IC] @ weight[IC, OC] + bias[OC] (bias may be NULL).
     * dinp[N,IC] += dout @ weight^T; dweight[IC,OC] += inp^T @ dout; dbias[OC] += sum_n dout. */
    void (*conv1d_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t IC, int64_t OC);
    void (*conv1d_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int64_t N, int64_t IC, int64_t OC);
    /* Causal multi-head self-attention. qkv[B,T,3C] holds q, k, v (each C = NH heads x C/NH)
     * for every position; out[B,T,C] = concat over heads of softmax(q k^T / sqrt(hs)) v with
     * position t attending to 0..t. att[B,NH,T,T] receives the softmax probabilities (rows
     * t: entries > t are zero) for the backward. */
    void (*attention_forward)(float *out, float *att, const float *qkv, int64_t B, int64_t T,
                              int64_t C, int64_t NH);
    /* dqkv[B,T,3C] += gradient of the attention from dout[B,T,C], given the forward's qkv and
     * att. Needs no scratch memory from the caller. */
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att,
                               int64_t B, int64_t T, int64_t C, int64_t NH);
    /* out[i] = a[i] + b[i] (out may alias a or b). */
    void (*add)(float *out, const float *a, const float *b, int64_t n);
    /* dst[i] += src[i]. */
    void (*accumulate)(float *dst, const float *src, int64_t n);

    /* ---- ABI 1.1: 16-bit storage and mixed-precision matrix products. Check with
     * LOOM_HAS(k, loom_kernels_api, gemm_mixed) before use: a 1.0 host lends none of these. ---- */

    /* dst[i] = src[i] converted from src_dtype to dst_dtype, each one of LOOM_DTYPE_F32, _F16,
     * _BF16 (equal dtypes copy). Narrowing rounds to nearest, ties to even, exactly like the
     * hardware instructions (F16C vcvtps2ph with imm 0, AVX512_BF16 vcvtneps2bf16): NaN stays
     * NaN (quiet), f16 overflow gives +-inf, f16 subnormals are kept. dst and src must not
     * overlap unless they are the same pointer with equal element sizes. */
    void (*convert)(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n);
    /* dst[i] = round(dst[i] + src[i]) with dst in dst_dtype (F32, F16 or BF16): adds an f32
     * partial result into 16-bit storage, computing in f32 and rounding once (nearest even). */
    void (*accumulate_f32)(void *dst, uint32_t dst_dtype, const float *src, int64_t n);
    /* Like sgemm, with A and B stored as a_dtype / b_dtype (each F32, F16 or BF16) and C in f32:
     * C[M,N] = alpha * op(A) @ op(B) + beta * C, products accumulated in f32. BF16 x BF16 runs
     * as a true bf16 product (oneDNN's AVX512_BF16 / AMX kernels) when the CPU and the build
     * have them; every other combination, and bf16 without them, converts the inputs to f32
     * and runs sgemm, which gives the same products up to summation order (f16 on the CPU
     * always takes that path). Not reentrant with itself: call from one thread at a time. */
    void (*gemm_mixed)(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, uint32_t a_dtype, int64_t lda, const void *B, uint32_t b_dtype,
                       int64_t ldb, float beta, float *C, int64_t ldc);
    /* dlogits[b,:] = dtype(scale * (probs[b,:] - onehot(labels[b]))), WRITTEN (not accumulated)
     * in dtype (F32, F16 or BF16), rounded once; rows whose label is ignored (-100) or invalid
     * get zeros. Equal bit for bit to zeroing, softmax_cross_entropy_backward and convert, in
     * one pass: a mixed-precision model's dlogits straight from the f32 probabilities. dlogits
     * and probs must not overlap. */
    void (*softmax_cross_entropy_backward_cast)(void *dlogits, uint32_t dtype, const float *probs,
                                                const int32_t *labels, float scale, int64_t B,
                                                int64_t C);

    /* ---- ABI 1.3: T5's kernels (docs/seq2seq.md#kernels). Check with
     * LOOM_HAS(k, loom_kernels_api, mha_backward) before use: a 1.2 host lends none of these,
     * and a device table may leave them NULL until it implements them. ---- */

    /* RMS normalisation over the last dimension of inp[N, C], no mean and no bias (T5LayerNorm):
     * out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps). Saves rstd[N] for the
     * backward (rstd may be NULL: inference). out may alias inp. */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                            int64_t N, int64_t C, float eps);
    /* dinp[N, C] += d(out)/d(inp) applied to dout; dweight[C] += sum_n dout * inp * rstd. */
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int64_t N, int64_t C);
    /* Multi-head attention over separate projections: q[B, Tq, NH*HS]; k and v [B, kv_rows,
     * NH*HS] of which the first Tk rows per batch entry are read (kv_rows >= Tk: a KV cache
     * with room to grow). For head h, query i, key j:
     *   score = scale * q_i . k_j + bias[h, i, j]   (bias [NH, Tq, Tk], shared by the batch; NULL: 0)
     * and key j is left out when key_mask[b, j] == 0 (key_mask I32 [B, Tk]; NULL: none) or,
     * with causal != 0, when j > i + Tk - Tq (queries are the last Tq positions).
     * att[B, NH, Tq, Tk] receives the softmax probabilities (0 where left out; a query with no
     * key left gets an all-zero row and a zero output); out[B, Tq, NH*HS] = att' @ v per head,
     * att' = att with dropout: element e of att (its index in [B, NH, Tq, Tk]) is kept and
     * scaled by 1 / (1 - dropout) when loom_dropout_keep(dropout_seed, e, dropout), else 0
     * (dropout 0: att' = att; att itself always holds the probabilities before dropout). */
    void (*mha_forward)(float *out, float *att, const float *q, const float *k, const float *v,
                        const float *bias, const int32_t *key_mask, int64_t B, int64_t NH,
                        int64_t Tq, int64_t Tk, int64_t HS, int64_t kv_rows, float scale,
                        int32_t causal, float dropout, uint64_t dropout_seed);
    /* Gradients of mha_forward from dout[B, Tq, NH*HS], given its q, k, v, att and the same
     * dropout and seed: dq, dk, dv (shapes of q, k, v; rows past Tk untouched) and
     * dbias[NH, Tq, Tk] (summed over the batch) accumulate; any may be NULL. Needs no scratch
     * memory from the caller. */
    void (*mha_backward)(float *dq, float *dk, float *dv, float *dbias, const float *dout,
                         const float *q, const float *k, const float *v, const float *att,
                         int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                         int64_t kv_rows, float scale, float dropout, uint64_t dropout_seed);

    /* ---- ABI 1.3: memory-lean attention and classifier for long sequences. Check with
     * LOOM_HAS(k, loom_kernels_api, classifier) (or the member you use): older hosts lend none. */

    /* The same causal attention as attention_forward, without the [B,NH,T,T] probabilities:
     * tiled with an online softmax, O(T) memory per head (the kernel allocates its per-thread
     * workspace itself). qkv [B,T,3C] is stored as qkv_dtype (F32, BF16 or F16; computed in
     * f32); out [B,T,C] f32 is written; lse [B,NH,T] f32 receives each query row's
     * log-sum-exp of its scaled scores, all the backward needs besides qkv and out. An unknown
     * qkv_dtype does nothing. BF16 qkv asks for bf16 products: a table may then also round the
     * probabilities (and in the backward dout and dS) to bf16 as the products read them, with
     * f32 accumulation and f32 softmax statistics, as a bf16 attention does (the CPU table on
     * AMX tiles: kernels/cpu/attention_amx.c; ~1e-3 relative in out and dqkv). */
    void (*attention_flash_forward)(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B,
                                    int64_t T, int64_t C, int64_t NH);
    /* dqkv[B,T,3C] (f32) += the gradient from dout[B,T,C], recomputing the probabilities from
     * the forward's qkv, out and lse. Equal to attention_backward up to f32 round-off (BF16
     * qkv: up to the bf16 rounding of the forward's note). */
    void (*attention_flash_backward)(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                     const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                     int64_t NH);
    /* The fused classifier: for rows inp[N,C] and a head weight[V,C] (both stored as dtype:
     * F32, BF16 or F16), `chunk` rows at a time: logits = inp weight^T, losses[n] = the
     * softmax cross-entropy against labels (as softmax_cross_entropy_forward: 0 for -100), and
     * when dinp or dweight is not NULL, dlogits = scale (softmax - onehot) (in dtype, rounded
     * once, as softmax_cross_entropy_backward_cast), dinp[N,C] += dlogits weight and
     * dweight[V,C] += dlogits^T inp (both f32). No [N,V] buffer: scratch (caller's, any
     * content) holds chunk*V floats, plus chunk*V 16-bit values after them when dtype is not
     * F32. Calls gemm_mixed: not reentrant with it. */
    void (*classifier)(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                       const void *weight, uint32_t dtype, const int32_t *labels, float scale, int64_t N,
                       int64_t C, int64_t V, int64_t chunk);

    /* ---- ABI 1.4: label smoothing (HF's LabelSmoother, docs/semantics/trainer.md#label-smoothing).
     * Check with LOOM_HAS(k, loom_kernels_api, <member>) before use: a 1.3 host lends none of
     * these, and a device table may leave a member NULL until it implements it. With
     * smoothing eps in [0, 1), a target row's loss is
     *     (1 - eps) (-log p[label]) + eps mean over the C classes of (-log p[c])
     * and its gradient with respect to the logits p - (1 - eps) onehot(label) - eps / C.
     * smoothing 0 gives exactly (bit for bit) the results of the unsmoothed member. ---- */

    /* softmax_cross_entropy_forward with smoothing: the same probs (may alias logits), ignored
     * rows (-100) a loss of 0, an invalid label NaN. */
    void (*softmax_cross_entropy_smoothed_forward)(float *probs, float *losses, const float *logits,
                                                   const int32_t *labels, float smoothing, int64_t B, int64_t C);
    /* dlogits[b,:] += scale * (probs[b,:] - (1 - smoothing) onehot(labels[b]) - smoothing / C)
     * for rows not ignored (ignored and invalid rows untouched). */
    void (*softmax_cross_entropy_smoothed_backward)(float *dlogits, const float *probs, const int32_t *labels,
                                                    float scale, float smoothing, int64_t B, int64_t C);
    /* softmax_cross_entropy_backward_cast with smoothing: the gradient above WRITTEN in dtype
     * (F32, F16 or BF16), rounded once; ignored or invalid rows get zeros; no overlap. */
    void (*softmax_cross_entropy_smoothed_backward_cast)(void *dlogits, uint32_t dtype, const float *probs,
                                                         const int32_t *labels, float scale, float smoothing,
                                                         int64_t B, int64_t C);
    /* classifier with smoothing: the smoothed losses and, when dinp or dweight is not NULL,
     * dlogits = scale (softmax - (1 - smoothing) onehot - smoothing / V); everything else
     * (scratch, dtypes, chunks, not reentrant with gemm_mixed) as classifier. */
    void (*classifier_smoothed)(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                                const void *weight, uint32_t dtype, const int32_t *labels, float scale,
                                float smoothing, int64_t N, int64_t C, int64_t V, int64_t chunk);

    /* ---- ABI 1.4: attention dropout for the tiled attention (GPT-2's attn_pdrop). Check with
     * LOOM_HAS(k, loom_kernels_api, attention_flash_backward_dropout): older hosts lend none. ---- */

    /* attention_flash_forward with dropout on the probabilities: element e of the [B, NH, T, T]
     * probabilities (e = ((b NH + h) T + t) T + s) is kept and scaled by 1 / (1 - dropout) when
     * loom_dropout_keep(dropout_seed, e, dropout), else 0, before it weights v. lse remains the
     * log-sum-exp of the undropped scores. dropout 0: attention_flash_forward, bit for bit. */
    void (*attention_flash_forward_dropout)(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B,
                                            int64_t T, int64_t C, int64_t NH, float dropout, uint64_t dropout_seed);
    /* attention_flash_backward of the forward above, given the same dropout and seed: the mask
     * is drawn again, not stored. dqkv accumulates, as attention_flash_backward. */
    void (*attention_flash_backward_dropout)(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                             const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                             int64_t NH, float dropout, uint64_t dropout_seed);

    /* ---- ABI 1.5: the optimizer step's element-wise work, so the step runs where the
     * parameters are (docs/architecture.md#device-step). Optional: check with
     * LOOM_HAS(k, loom_kernels_api, <member>); NULL (an older host, or a device table that
     * lacks one) means the caller runs its own loop, which computes the same values. The CPU
     * members ARE those loops (kernels/step_loops/lk_step_loops.h), so on the CPU both give
     * the same bits. Unlike the members above, the small host-side arguments of these three
     * (the span array, args, bounds, sums, found_inf) are in HOST memory; only the arrays they
     * point into (parameters, gradients, states, x) are on the table's device. sum_squares and
     * scale_check return results in host memory, so a device implementation waits for its work
     * before it returns; adam_update does not wait. MT-safe as said above; each is a single
     * call for the whole step, parallelised (or launched) internally. Since 1.5. ---- */

    /* One Adam-family update of every span, in place: for each span s (the array's stride is
     * spans[0].struct_size, a newer host's spans may be longer) and each element i < numel,
     * with g = grad[i] * args->grad_scale, p = param, m = state[0], v = state[1] (all f32):
     *     ADAMW: p = p * (float)(1 - lr wd) - step_size (m' / (sqrt(v') / bias2_sqrt + eps))
     *     ADAM:  g += (float)wd * p; then p -= step_size (m' / (sqrt(v') / bias2_sqrt + eps))
     *     HF:    q = p - step_size (m' / (sqrt(v') + eps)); p = q + (float)(-lr wd) * q
     * where m' = beta1 m + one_minus_beta1 g, v' = beta2 v + one_minus_beta2 g g (both stored),
     * wd = s->weight_decay and lr = args->lr (rule: args->rule, LOOM_ADAM_RULE_*). Every
     * product is one f32 rounding, no fused multiply-add, so a device that contracts nothing
     * equals the CPU bit for bit. Spans with numel 0 are skipped; the caller has checked the
     * rest (param, grad, state[0], state[1] not NULL, weight_decay finite). An unknown rule
     * does nothing. Elements of different spans must not overlap. */
    void (*adam_update)(const struct loom_span *spans, size_t n_spans, const struct loom_adam_args *args);
    /* x[i] *= scale in place over n elements, and *found_inf = 1 when any result is inf or NaN
     * (*found_inf is left as it was otherwise, so one flag accumulates over several calls; it
     * is set from the exponent bits, so -ffinite-math-only cannot drop the test). Unscaling a
     * loss-scaled gradient (scale = 1 / loss scale) and clipping in place are both this call.
     * found_inf may be NULL: scale only. */
    void (*scale_check)(float *x, int64_t n, float scale, int32_t *found_inf);
    /* Sums of squares of n_segments segments of x: sums[i] = sum over j in
     * [bounds[2i], bounds[2i+1]) of (double)x[j] * (double)x[j], accumulated in double, each
     * segment in a fixed order that does not depend on the thread count or on the other
     * segments (the CPU: one thread per segment, its `omp simd` reduction; a device: a fixed
     * two-pass tree), so a device agrees with the CPU to double round-off and with itself bit
     * for bit. A non-finite x makes its segment's sum non-finite. sums is written, not
     * accumulated. The trainer's global gradient norm (docs/architecture.md#canonical-order). */
    void (*sum_squares)(double *sums, const float *x, const int64_t *bounds, int64_t n_segments);

    /* ---- ABI 1.8: the fused classifier by vocabulary columns. Optional: check with
     * LOOM_HAS(k, loom_kernels_api, classifier_columns); a 1.7 host, or a device table that
     * lacks it, lends NULL (use classifier / classifier_smoothed then). Since 1.8. ---- */

    /* The classifier of classifier_smoothed (smoothing 0: unsmoothed) taking all N rows
     * against a slab of vocabulary columns at a time, so each slab's rows of dweight are final
     * in one product: a 16-bit dweight is rounded into once per element, with no f32 [V, C]
     * accumulator. Two calls:
     *   forward (dinp and dweight NULL): losses[N] as classifier_smoothed writes them, and
     *     lse[N], each row's log-sum-exp of its logits (the softmax's statistics across slabs);
     *   backward (dinp or dweight not NULL): reads lse from the forward with the same inp,
     *     weight, dtype, labels, N, C, V and scratch_bytes (the backward recomputes the logits
     *     in the same slabs), and with dlogits = scale (softmax - (1 - smoothing) onehot -
     *     smoothing / V) (in dtype, rounded once; rows that are not targets: 0) adds
     *     dinp[N,C] += dlogits weight (f32) and dweight[V,C] += dlogits^T inp, dweight stored as
     *     dweight_dtype (F32, BF16 or F16: a 16-bit element is widened, added to and rounded
     *     once). losses is not touched and may be NULL.
     * inp[N,C] and weight[V,C] are stored as dtype (F32, BF16 or F16). scratch (caller's, any
     * content) holds scratch_bytes; at least loom_classifier_columns_bytes(N, C, 1, dtype),
     * more makes the slabs wider (a few thousand columns keep the products efficient). Too
     * little scratch, a NULL lse or an unknown dtype does nothing. Calls gemm_mixed: not
     * reentrant with it. */
    void (*classifier_columns)(float *losses, float *lse, float *dinp, void *dweight, uint32_t dweight_dtype,
                               void *scratch, size_t scratch_bytes, const void *inp, const void *weight, uint32_t dtype,
                               const int32_t *labels, float scale, float smoothing, int64_t N, int64_t C, int64_t V);

    /* ---- ABI 1.9: GELU on 16-bit activations. Optional: check with
     * LOOM_HAS(k, loom_kernels_api, gelu_backward_cast); a 1.8 host, or a device table that
     * lacks them, lends NULL (convert, gelu_forward / gelu_backward and convert again then).
     * Since 1.9. ----
     * A mixed-precision model keeps GELU's input in 16 bits and feeds GELU's output to a
     * 16-bit product: in one pass over blocks that stay in cache, instead of three passes over
     * the whole tensor through f32 buffers (docs/architecture.md#gelu-cast). inp_dtype and
     * out_dtype are each F32, F16 or BF16; an unknown one does nothing. */

    /* out[i] = out_dtype(gelu(f32(inp[i]))), rounded once (nearest even, as convert): equal bit
     * for bit to convert to f32, gelu_forward, convert to out_dtype. out and inp must not
     * overlap unless they are the same pointer with equal element sizes. */
    void (*gelu_forward_cast)(void *out, uint32_t out_dtype, const void *inp, uint32_t inp_dtype, int64_t n);
    /* dinp[i] = gelu'(f32(inp[i])) * dout[i], WRITTEN (not accumulated, unlike gelu_backward):
     * equal bit for bit to zeroing dinp, converting inp to f32 and gelu_backward, so the caller
     * skips both the zeroing pass and an f32 copy of inp. dinp may be dout; no other overlap. */
    void (*gelu_backward_cast)(float *dinp, const void *inp, uint32_t inp_dtype, const float *dout, int64_t n);

    /* ABI 1.13+: append below. */
} loom_kernels_api;

/* The scratch bytes classifier_columns needs for slabs of `columns` columns (ABI 1.8,
 * header-only): the rows' statistics (24 bytes a row, rounded up to 64), then per column N f32
 * logits, N 16-bit dlogits when dtype is 16-bit, and C f32 of dweight, plus 64 bytes that let
 * the dweight slab start aligned. columns <= 0: the statistics alone. */
static inline size_t loom_classifier_columns_bytes(int64_t N, int64_t C, int64_t columns, uint32_t dtype)
{
    const size_t stats = ((size_t)N * 24u + 63u) / 64u * 64u;
    if (columns <= 0) return stats;
    const size_t per_column = (size_t)N * (dtype == LOOM_DTYPE_F32 ? 4u : 6u) + (size_t)C * 4u;
    return stats + 64u + (size_t)columns * per_column;
}

/* loom_adam_args.rule: which member of the Adam family adam_update computes (ABI 1.5). */
#define LOOM_ADAM_RULE_ADAMW 0u /* torch.optim.AdamW: decoupled decay before the update            */
#define LOOM_ADAM_RULE_ADAM 1u  /* torch.optim.Adam: weight decay as L2, through the moments        */
#define LOOM_ADAM_RULE_HF 2u    /* transformers.AdamW (v4.2): eps outside the correction, decay after */

/* The per-step coefficients of adam_update (ABI 1.5), computed once per step by the optimizer
 * and rounded to f32 by it, so every device multiplies by the same floats. Built by the
 * caller in host memory; borrowed for the call. */
typedef struct loom_adam_args {
    LOOM_STRUCT_HEADER;
    uint32_t rule;            /* LOOM_ADAM_RULE_*                                             */
    float grad_scale;         /* multiplies every gradient element first (clipping; 1 = none) */
    float beta1, one_minus_beta1; /* the step's beta1 and (float)(1 - beta1), rounded apart  */
    float beta2, one_minus_beta2;
    float eps;
    float step_size;          /* ADAMW/ADAM: lr / (1 - b1^t); HF: lr, bias-corrected or not   */
    float bias2_sqrt;         /* ADAMW/ADAM: sqrt(1 - b2^t); unused by HF                     */
    uint32_t reserved1;       /* 0                                                            */
    double lr;                /* for the per-span decay factors of ADAMW and HF (see above)   */
} loom_adam_args;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, sgemm) == 24, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, rmsnorm_forward) == 208, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, attention_flash_forward) == 240, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, softmax_cross_entropy_smoothed_forward) == 264,
                   "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, adam_update) == 312, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, classifier_columns) == 336, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, gelu_forward_cast) == 344, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_kernels_api) == 360, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_adam_args, step_size) == 44, "loom_adam_args layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_adam_args, lr) == 56, "loom_adam_args layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_adam_args) == 64, "loom_adam_args layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_KERNELS_H */
