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

/* Below this many elements of work a loop stays on the calling thread: an OpenMP fork/join
 * costs a few microseconds, about what 32k simple float operations take. */
#define LK_OMP_MIN_WORK 32768

/* The table for api->service(host, LOOM_KERNELS_CPU_SERVICE, 0). Static; valid forever. */
const loom_kernels_api *lk_cpu_kernel_table(void);

/* matmul.c */
void lk_sgemm(int32_t trans_a, int32_t trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);
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

/* cross_entropy.c. Labels are in [0, C) or -100 (ignored: loss 0, no gradient). A label
 * outside both is a caller bug the kernel cannot report: it gets a NaN loss (so the run's
 * non-finite check stops it) and no gradient, and memory outside the row is never touched. */
void lk_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits,
                                      const int32_t *labels, int64_t B, int64_t C);
void lk_softmax_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *labels,
                                       float scale, int64_t B, int64_t C);

#endif
