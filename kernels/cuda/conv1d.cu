/*
 * conv1d.cu - HF's Conv1D (weight [IC, OC], GPT-2's layout) on lk_sgemm_cuda: nn.Linear
 * (linear.cu) with the weight's transposes flipped, and the same bias kernels.
 *   forward:  out[N,OC]      = inp[N,IC] @ weight (+ bias, broadcast over rows)
 *   backward: dinp[N,IC]    += dout[N,OC] @ weight^T
 *             dweight[IC,OC]+= inp^T @ dout
 *             dbias[OC]     += sum over rows of dout
 */
#include "common.cuh"

extern "C" void lk_conv1d_forward_cuda(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                                       int64_t IC, int64_t OC)
{
    if (N <= 0 || OC <= 0) return;
    const float beta = lk_seed_bias(out, bias, N, OC, "lk_conv1d_forward_cuda");
    if (beta < 0.0f) return;
    lk_sgemm_cuda(0, 0, N, OC, IC, 1.0f, inp, IC, weight, OC, beta, out, OC);
}

extern "C" void lk_conv1d_backward_cuda(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                        const float *weight, int64_t N, int64_t IC, int64_t OC)
{
    /* dinp[N,IC] += dout[N,OC] @ W[IC,OC]^T;  dW[IC,OC] += inp[N,IC]^T @ dout[N,OC] */
    if (dinp) lk_sgemm_cuda(0, 1, N, IC, OC, 1.0f, dout, OC, weight, OC, 1.0f, dinp, IC);
    if (dweight) lk_sgemm_cuda(1, 0, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dweight, OC);
    lk_bias_backward(dbias, dout, N, OC, "lk_conv1d_backward_cuda");
}
