/*
 * kernel_table.cuh - the CUDA kernel table as a constant expression, shared by the
 * asynchronous table (kernel_table.cu) and the synchronous one (sync_table.cu).
 *
 * Built by a constexpr function rather than C's designated initialisers (C++20 only), so the
 * tables are still constants: no static constructor, nothing to run before main.
 */
#ifndef LOOM_KERNELS_CUDA_KERNEL_TABLE_CUH
#define LOOM_KERNELS_CUDA_KERNEL_TABLE_CUH

#include "common.cuh"

static inline constexpr loom_kernels_api lk_cuda_make_table()
{
    loom_kernels_api t{};
    t.abi_major = LOOM_ABI_MAJOR;
    t.abi_minor = LOOM_ABI_MINOR;
    t.struct_size = sizeof(loom_kernels_api);
    t.device = LOOM_DEVICE_CUDA;
    t.sgemm = lk_sgemm_cuda;
    t.linear_forward = lk_linear_forward_cuda;
    t.linear_backward = lk_linear_backward_cuda;
    t.relu_forward = lk_relu_forward_cuda;
    t.relu_backward = lk_relu_backward_cuda;
    t.gelu_forward = lk_gelu_forward_cuda;
    t.gelu_backward = lk_gelu_backward_cuda;
    t.softmax_cross_entropy_forward = lk_softmax_cross_entropy_forward_cuda;
    t.softmax_cross_entropy_backward = lk_softmax_cross_entropy_backward_cuda;
    t.encoder_forward = lk_encoder_forward_cuda;
    t.encoder_backward = lk_encoder_backward_cuda;
    t.layernorm_forward = lk_layernorm_forward_cuda;
    t.layernorm_backward = lk_layernorm_backward_cuda;
    t.conv1d_forward = lk_conv1d_forward_cuda;
    t.conv1d_backward = lk_conv1d_backward_cuda;
    t.attention_forward = lk_attention_forward_cuda;
    t.attention_backward = lk_attention_backward_cuda;
    t.add = lk_add_cuda;
    t.accumulate = lk_accumulate_cuda;
    t.convert = lk_convert_cuda;
    t.accumulate_f32 = lk_accumulate_f32_cuda;
    t.gemm_mixed = lk_gemm_mixed_cuda;
    t.softmax_cross_entropy_backward_cast = lk_softmax_cross_entropy_backward_cast_cuda;
    t.attention_flash_forward = lk_attention_flash_forward_cuda;
    t.attention_flash_backward = lk_attention_flash_backward_cuda;
    t.rmsnorm_forward = lk_rmsnorm_forward_cuda;
    t.rmsnorm_backward = lk_rmsnorm_backward_cuda;
    t.mha_forward = lk_mha_forward_cuda;
    t.mha_backward = lk_mha_backward_cuda;
    t.classifier = lk_classifier_cuda;
    t.softmax_cross_entropy_smoothed_forward = lk_softmax_cross_entropy_smoothed_forward_cuda;
    t.softmax_cross_entropy_smoothed_backward = lk_softmax_cross_entropy_smoothed_backward_cuda;
    t.softmax_cross_entropy_smoothed_backward_cast = lk_softmax_cross_entropy_smoothed_backward_cast_cuda;
    t.classifier_smoothed = lk_classifier_smoothed_cuda;
    t.attention_flash_forward_dropout = lk_attention_flash_forward_dropout_cuda;
    t.attention_flash_backward_dropout = lk_attention_flash_backward_dropout_cuda;
    /* ABI 1.5: the optimizer step (docs/architecture.md#device-step). */
    t.adam_update = lk_adam_update_cuda;
    t.scale_check = lk_scale_check_cuda;
    t.sum_squares = lk_sum_squares_cuda;
    t.classifier_columns = lk_classifier_columns_cuda;
    t.gelu_forward_cast = lk_gelu_forward_cast_cuda;
    t.gelu_backward_cast = lk_gelu_backward_cast_cuda;
    return t;
}

#endif
