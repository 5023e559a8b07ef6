/*
 * lk_cuda.h - the CUDA kernels (lk_*_cuda): the same contracts and signatures as the CPU
 * kernels in lk_cpu.h (abi/loom/kernels.h states each one), with every tensor pointer a
 * device pointer on the calling thread's current device. tests/gpu/test_cuda_kernels checks
 * each against its CPU twin.
 *
 * Execution: every call is enqueued on the legacy default stream (stream 0) of the current
 * device and returns without waiting, so calls from one thread run in order; copy results
 * back with cudaMemcpy (which waits) or call lk_cuda_synchronize(). Matrix products use
 * cuBLAS in plain fp32 (no TF32) through one lazily created handle per thread and device.
 *
 * Errors: nothing here throws, aborts or exits. A CUDA or cuBLAS failure (a launch error, a
 * bad argument cuBLAS rejects, no device at all) is recorded in a per-thread slot and the
 * call returns with its outputs unspecified; read it with lk_cuda_last_error(). Errors that
 * happen later, while a kernel runs, surface at the next synchronising call
 * (lk_cuda_synchronize, cudaMemcpy).
 */
#ifndef LOOM_LK_CUDA_H
#define LOOM_LK_CUDA_H

#include <loom/kernels.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The table for api->service(host, LOOM_KERNELS_CUDA_SERVICE, 0) (device LOOM_DEVICE_CUDA).
 * Static; valid forever. Getting it needs no GPU; calling through it does. */
const loom_kernels_api *lk_cuda_kernel_table(void);

/* The same kernels, each waiting for its work before it returns (the cuda backend's table
 * while the CPU reads managed memory between kernels: docs/gpu.md#what-runs-where). */
const loom_kernels_api *lk_cuda_synchronous_kernel_table(void);

/* 1 when the CUDA runtime sees at least one device, 0 otherwise (no GPU, no driver, a driver
 * too old for this runtime). Never aborts and records nothing. */
int lk_cuda_available(void);

/* The most recent error recorded on this thread ("lk_sgemm_cuda: cuBLAS
 * CUBLAS_STATUS_INVALID_VALUE ..."), or NULL when none was recorded since the thread started
 * or since lk_cuda_clear_error(). The string is this thread's: it stays valid until the next
 * error is recorded on the thread or the error is cleared. */
const char *lk_cuda_last_error(void);
void lk_cuda_clear_error(void);

/* Waits for all work on the current device. 0 when everything so far succeeded; -1 when the
 * wait failed or an error is recorded on this thread (see lk_cuda_last_error). */
int lk_cuda_synchronize(void);

/* matmul.cu. lk_sgemm_cuda is cublasSgemm on row-major operands. */
void lk_sgemm_cuda(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* linear.cu */
void lk_linear_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int64_t B, int64_t IC,
                            int64_t OC);
void lk_linear_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, int64_t B, int64_t IC, int64_t OC);

/* relu.cu */
void lk_relu_forward_cuda(float *out, const float *inp, int64_t n);
void lk_relu_backward_cuda(float *dinp, const float *inp, const float *dout, int64_t n);

/* gelu.cu */
void lk_gelu_forward_cuda(float *out, const float *inp, int64_t n);
void lk_gelu_backward_cuda(float *dinp, const float *inp, const float *dout, int64_t n);
/* ABI 1.9: GELU on stored dtypes in one pass (kernels.h gelu_forward_cast / _backward_cast). */
void lk_gelu_forward_cast_cuda(void *out, uint32_t out_dtype, const void *inp, uint32_t inp_dtype, int64_t n);
void lk_gelu_backward_cast_cuda(float *dinp, const void *inp, uint32_t inp_dtype, const float *dout, int64_t n);

/* cross_entropy.cu. labels is a device array. Labels in [0, C) or -100 (ignored: loss 0, no
 * gradient); any other label gets a NaN loss and no gradient, as on the CPU. probs may alias
 * logits (in place). */
void lk_softmax_cross_entropy_forward_cuda(float *probs, float *losses, const float *logits, const int32_t *labels,
                                           int64_t B, int64_t C);
void lk_softmax_cross_entropy_backward_cuda(float *dlogits, const float *probs, const int32_t *labels, float scale,
                                            int64_t B, int64_t C);
/* With HF's label smoothing (ABI 1.4; smoothing 0: the two above). */
void lk_softmax_cross_entropy_smoothed_forward_cuda(float *probs, float *losses, const float *logits,
                                                    const int32_t *labels, float smoothing, int64_t B, int64_t C);
void lk_softmax_cross_entropy_smoothed_backward_cuda(float *dlogits, const float *probs, const int32_t *labels,
                                                     float scale, float smoothing, int64_t B, int64_t C);

/* conv1d.cu (HF Conv1D: weight [IC, OC]). */
void lk_conv1d_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int64_t N, int64_t IC,
                            int64_t OC);
void lk_conv1d_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, int64_t N, int64_t IC, int64_t OC);

/* encoder.cu. tokens is a device array of ids in [0, vocab). The backward is deterministic
 * (no atomics) and adds in the CPU's order. */
void lk_encoder_forward_cuda(float *out, const int32_t *tokens, const float *wte, const float *wpe, int64_t B,
                             int64_t T, int64_t C);
void lk_encoder_backward_cuda(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int64_t B, int64_t T,
                              int64_t C);

/* layernorm.cu. mean and rstd may be NULL in the forward. */
void lk_layernorm_forward_cuda(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                               const float *bias, int64_t N, int64_t C, float eps);
void lk_layernorm_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                const float *weight, const float *mean, const float *rstd, int64_t N, int64_t C);

/* attention.cu. C must be a multiple of NH. The backward uses a per-thread device scratch
 * buffer of B * NH * T floats that the library allocates (and keeps) itself. */
void lk_attention_forward_cuda(float *out, float *att, const float *qkv, int64_t B, int64_t T, int64_t C, int64_t NH);
void lk_attention_backward_cuda(float *dqkv, const float *dout, const float *qkv, const float *att, int64_t B,
                                int64_t T, int64_t C, int64_t NH);

/* elementwise.cu */
void lk_add_cuda(float *out, const float *a, const float *b, int64_t n);
void lk_accumulate_cuda(float *dst, const float *src, int64_t n);

/* mixed.cu: the ABI 1.1 members (16-bit storage, f32 accumulation), contracts as in kernels.h.
 * gemm_mixed runs equal 16-bit input types on cuBLAS (cublasGemmEx, CUBLAS_COMPUTE_32F) and
 * widens unequal ones to f32 in the per-thread workspace. */
void lk_convert_cuda(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n);
void lk_accumulate_f32_cuda(void *dst, uint32_t dst_dtype, const float *src, int64_t n);
void lk_gemm_mixed_cuda(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                        uint32_t a_dtype, int64_t lda, const void *B, uint32_t b_dtype, int64_t ldb, float beta,
                        float *C, int64_t ldc);
void lk_softmax_cross_entropy_backward_cast_cuda(void *dlogits, uint32_t dtype, const float *probs,
                                                 const int32_t *labels, float scale, int64_t B, int64_t C);
void lk_softmax_cross_entropy_smoothed_backward_cast_cuda(void *dlogits, uint32_t dtype, const float *probs,
                                                          const int32_t *labels, float scale, float smoothing,
                                                          int64_t B, int64_t C);

/* attention_flash.cu, classifier.cu: the ABI 1.3 members. Flash attention takes heads of up to
 * 256 dimensions (larger ones are recorded as an error); its backward adds dk and dv with
 * atomics, so their round-off depends on scheduling. The classifier calls gemm_mixed_cuda and
 * the cross-entropy kernels, in order on the compute stream. */
void lk_attention_flash_forward_cuda(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B, int64_t T,
                                     int64_t C, int64_t NH);
void lk_attention_flash_backward_cuda(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                      const float *out, const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH);
void lk_classifier_cuda(float *losses, float *dinp, float *dweight, void *scratch, const void *inp, const void *weight,
                        uint32_t dtype, const int32_t *labels, float scale, int64_t N, int64_t C, int64_t V,
                        int64_t chunk);

/* The ABI 1.4 members: the tiled attention with dropout on its probabilities (the mask is
 * loom_dropout_keep's, drawn exactly as on the CPU) and the classifier with label smoothing. */
void lk_attention_flash_forward_dropout_cuda(float *out, float *lse, const void *qkv, uint32_t qkv_dtype, int64_t B,
                                             int64_t T, int64_t C, int64_t NH, float dropout, uint64_t dropout_seed);
void lk_attention_flash_backward_dropout_cuda(float *dqkv, const float *dout, const void *qkv, uint32_t qkv_dtype,
                                              const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                              int64_t NH, float dropout, uint64_t dropout_seed);
void lk_classifier_smoothed_cuda(float *losses, float *dinp, float *dweight, void *scratch, const void *inp,
                                 const void *weight, uint32_t dtype, const int32_t *labels, float scale,
                                 float smoothing, int64_t N, int64_t C, int64_t V, int64_t chunk);

/* rmsnorm.cu, mha.cu: T5's kernels (ABI 1.3). rstd may be NULL in the forward; out may alias
 * inp. mha takes heads of up to 256 dimensions (larger ones are recorded as an error), key_mask
 * is a device array; its dropout mask is loom_dropout_keep's, drawn exactly as on the CPU. Both
 * backwards are deterministic (no atomics): dweight and dbias sum rows and batch entries in a
 * fixed order (dbias in the CPU's), and the mha backward uses a per-thread device scratch of
 * B * NH * Tq * Tk floats that the library allocates (and keeps) itself. */
void lk_rmsnorm_forward_cuda(float *out, float *rstd, const float *inp, const float *weight, int64_t N, int64_t C,
                             float eps);
void lk_rmsnorm_backward_cuda(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                              const float *rstd, int64_t N, int64_t C);
void lk_mha_forward_cuda(float *out, float *att, const float *q, const float *k, const float *v, const float *bias,
                         const int32_t *key_mask, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS,
                         int64_t kv_rows, float scale, int32_t causal, float dropout, uint64_t dropout_seed);
void lk_mha_backward_cuda(float *dq, float *dk, float *dv, float *dbias, const float *dout, const float *q,
                          const float *k, const float *v, const float *att, int64_t B, int64_t NH, int64_t Tq,
                          int64_t Tk, int64_t HS, int64_t kv_rows, float scale, float dropout, uint64_t dropout_seed);

/* optim_step.cu: the ABI 1.5 step kernels. adam_update is enqueued like the others; scale_check
 * and sum_squares return their results in host memory, so they wait. */
void lk_adam_update_cuda(const struct loom_span *spans, size_t n_spans, const struct loom_adam_args *args);
void lk_scale_check_cuda(float *x, int64_t n, float scale, int32_t *found_inf);
void lk_sum_squares_cuda(double *sums, const float *x, const int64_t *bounds, int64_t n_segments);

/* classifier_columns.cu: the ABI 1.8 classifier by vocabulary columns (classifier_columns.c's
 * contract and scratch layout), on gemm_mixed_cuda and row kernels in order on the stream. */
void lk_classifier_columns_cuda(float *losses, float *lse, float *dinp, void *dweight, uint32_t dweight_dtype,
                                void *scratch, size_t scratch_bytes, const void *inp, const void *weight,
                                uint32_t dtype, const int32_t *labels, float scale, float smoothing, int64_t N,
                                int64_t C, int64_t V);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_LK_CUDA_H */
