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

typedef struct loom_kernels_api {
    LOOM_STRUCT_HEADER;
    uint32_t device;   /* LOOM_DEVICE_* these kernels run on                                */
    uint32_t reserved1;

    /* C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, op = transpose when trans_* != 0;
     * lda/ldb/ldc are row strides in elements. */
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
     * (0 where labels[b] == -100, the ignore index). Returns nothing; sum losses yourself. */
    void (*softmax_cross_entropy_forward)(float *probs, float *losses, const float *logits,
                                          const int32_t *labels, int64_t B, int64_t C);
    /* dlogits[b,:] += scale * (probs[b,:] - onehot(labels[b])) for rows not ignored. */
    void (*softmax_cross_entropy_backward)(float *dlogits, const float *probs,
                                           const int32_t *labels, float scale, int64_t B, int64_t C);

    /* ABI 1.1+: append below. */
} loom_kernels_api;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(offsetof(loom_kernels_api, sgemm) == 24, "loom_kernels_api layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_kernels_api) == 96, "loom_kernels_api layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_KERNELS_H */
