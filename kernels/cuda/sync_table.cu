/*
 * sync_table.cu - the CUDA kernel table whose every member waits for its work before it
 * returns: what the cuda backend lends while the CPU still reads device (managed) memory
 * between kernels (plugins/backend/cuda, docs/gpu.md#what-runs-where). A model that sums its
 * losses on the host right after softmax_cross_entropy_forward then reads finished values.
 */
#include "kernel_table.cuh"

/* lk_sync<f>::call has f's signature, calls it, then waits on the compute stream. An error
 * the wait reports is recorded like any kernel error (lk_cuda_last_error). */
template <auto F> struct lk_sync;
template <typename... Args, void (*F)(Args...)> struct lk_sync<F> {
    static void call(Args... args)
    {
        F(args...);
        lk_cuda_ok(cudaStreamSynchronize(cudaStreamLegacy), "lk_cuda (synchronous table)");
    }
};

static constexpr loom_kernels_api lk_cuda_make_sync_table()
{
    loom_kernels_api t = lk_cuda_make_table();
    t.sgemm = lk_sync<lk_sgemm_cuda>::call;
    t.linear_forward = lk_sync<lk_linear_forward_cuda>::call;
    t.linear_backward = lk_sync<lk_linear_backward_cuda>::call;
    t.relu_forward = lk_sync<lk_relu_forward_cuda>::call;
    t.relu_backward = lk_sync<lk_relu_backward_cuda>::call;
    t.gelu_forward = lk_sync<lk_gelu_forward_cuda>::call;
    t.gelu_backward = lk_sync<lk_gelu_backward_cuda>::call;
    t.softmax_cross_entropy_forward = lk_sync<lk_softmax_cross_entropy_forward_cuda>::call;
    t.softmax_cross_entropy_backward = lk_sync<lk_softmax_cross_entropy_backward_cuda>::call;
    t.encoder_forward = lk_sync<lk_encoder_forward_cuda>::call;
    t.encoder_backward = lk_sync<lk_encoder_backward_cuda>::call;
    t.layernorm_forward = lk_sync<lk_layernorm_forward_cuda>::call;
    t.layernorm_backward = lk_sync<lk_layernorm_backward_cuda>::call;
    t.conv1d_forward = lk_sync<lk_conv1d_forward_cuda>::call;
    t.conv1d_backward = lk_sync<lk_conv1d_backward_cuda>::call;
    t.attention_forward = lk_sync<lk_attention_forward_cuda>::call;
    t.attention_backward = lk_sync<lk_attention_backward_cuda>::call;
    t.add = lk_sync<lk_add_cuda>::call;
    t.accumulate = lk_sync<lk_accumulate_cuda>::call;
    t.convert = lk_sync<lk_convert_cuda>::call;
    t.accumulate_f32 = lk_sync<lk_accumulate_f32_cuda>::call;
    t.gemm_mixed = lk_sync<lk_gemm_mixed_cuda>::call;
    t.softmax_cross_entropy_backward_cast = lk_sync<lk_softmax_cross_entropy_backward_cast_cuda>::call;
    t.attention_flash_forward = lk_sync<lk_attention_flash_forward_cuda>::call;
    t.attention_flash_backward = lk_sync<lk_attention_flash_backward_cuda>::call;
    t.classifier = lk_sync<lk_classifier_cuda>::call;
    t.softmax_cross_entropy_smoothed_forward = lk_sync<lk_softmax_cross_entropy_smoothed_forward_cuda>::call;
    t.softmax_cross_entropy_smoothed_backward = lk_sync<lk_softmax_cross_entropy_smoothed_backward_cuda>::call;
    t.softmax_cross_entropy_smoothed_backward_cast =
        lk_sync<lk_softmax_cross_entropy_smoothed_backward_cast_cuda>::call;
    t.rmsnorm_forward = lk_sync<lk_rmsnorm_forward_cuda>::call;
    t.rmsnorm_backward = lk_sync<lk_rmsnorm_backward_cuda>::call;
    t.mha_forward = lk_sync<lk_mha_forward_cuda>::call;
    t.mha_backward = lk_sync<lk_mha_backward_cuda>::call;
    t.classifier_smoothed = lk_sync<lk_classifier_smoothed_cuda>::call;
    t.attention_flash_forward_dropout = lk_sync<lk_attention_flash_forward_dropout_cuda>::call;
    t.attention_flash_backward_dropout = lk_sync<lk_attention_flash_backward_dropout_cuda>::call;
    /* scale_check and sum_squares wait already (their results are host memory). */
    t.adam_update = lk_sync<lk_adam_update_cuda>::call;
    t.classifier_columns = lk_sync<lk_classifier_columns_cuda>::call;
    t.gelu_forward_cast = lk_sync<lk_gelu_forward_cast_cuda>::call;
    t.gelu_backward_cast = lk_sync<lk_gelu_backward_cast_cuda>::call;
    return t;
}

static constexpr loom_kernels_api lk_cuda_sync_table = lk_cuda_make_sync_table();

extern "C" const loom_kernels_api *lk_cuda_synchronous_kernel_table(void)
{
    return &lk_cuda_sync_table;
}
