/*
 * kernel_table.c - the CPU kernel table the host lends to plugins
 * (LOOM_KERNELS_CPU_SERVICE).
 */
#include "lk_cpu.h"

static const loom_kernels_api lk_cpu_table = {
    LOOM_HEADER_INIT(loom_kernels_api),
    .device = LOOM_DEVICE_CPU,
    .sgemm = lk_sgemm,
    .linear_forward = lk_linear_forward,
    .linear_backward = lk_linear_backward,
    .relu_forward = lk_relu_forward,
    .relu_backward = lk_relu_backward,
    .gelu_forward = lk_gelu_forward,
    .gelu_backward = lk_gelu_backward,
    .softmax_cross_entropy_forward = lk_softmax_cross_entropy_forward,
    .softmax_cross_entropy_backward = lk_softmax_cross_entropy_backward,
    .encoder_forward = lk_encoder_forward,
    .encoder_backward = lk_encoder_backward,
    .layernorm_forward = lk_layernorm_forward,
    .layernorm_backward = lk_layernorm_backward,
    .conv1d_forward = lk_conv1d_forward,
    .conv1d_backward = lk_conv1d_backward,
    .attention_forward = lk_attention_forward,
    .attention_backward = lk_attention_backward,
    .add = lk_add,
    .accumulate = lk_accumulate,
    .convert = lk_convert,
    .accumulate_f32 = lk_accumulate_f32,
    .gemm_mixed = lk_gemm_mixed,
    .softmax_cross_entropy_backward_cast = lk_softmax_cross_entropy_backward_cast,
    .rmsnorm_forward = lk_rmsnorm_forward,
    .rmsnorm_backward = lk_rmsnorm_backward,
    .mha_forward = lk_mha_forward,
    .mha_backward = lk_mha_backward,
    .attention_flash_forward = lk_attention_flash_forward,
    .attention_flash_backward = lk_attention_flash_backward,
    .classifier = lk_classifier,
    .softmax_cross_entropy_smoothed_forward = lk_softmax_cross_entropy_smoothed_forward,
    .softmax_cross_entropy_smoothed_backward = lk_softmax_cross_entropy_smoothed_backward,
    .softmax_cross_entropy_smoothed_backward_cast = lk_softmax_cross_entropy_smoothed_backward_cast,
    .classifier_smoothed = lk_classifier_smoothed,
    .attention_flash_forward_dropout = lk_attention_flash_forward_dropout,
    .attention_flash_backward_dropout = lk_attention_flash_backward_dropout,
    .adam_update = lk_adam_update,
    .scale_check = lk_scale_check,
    .sum_squares = lk_sum_squares,
    .classifier_columns = lk_classifier_columns,
    .gelu_forward_cast = lk_gelu_forward_cast,
    .gelu_backward_cast = lk_gelu_backward_cast,
};

const loom_kernels_api *lk_cpu_kernel_table(void) { return &lk_cpu_table; }
