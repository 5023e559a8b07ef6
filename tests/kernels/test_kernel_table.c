/* test_kernel_table.c - the CPU kernel table is complete and points at the lk_* functions. */
#include "lk_cpu.h"
#include "test_util.h"

#include <string.h>

int main(void)
{
    const loom_kernels_api *k = lk_cpu_kernel_table();
    CHECK(k != NULL);
    CHECK(k == lk_cpu_kernel_table());
    CHECK(k->abi_major == LOOM_ABI_MAJOR && k->abi_minor == LOOM_ABI_MINOR);
    CHECK(k->struct_size == sizeof(loom_kernels_api));
    CHECK(k->device == LOOM_DEVICE_CPU);
    CHECK(k->sgemm == lk_sgemm);
    CHECK(k->linear_forward == lk_linear_forward);
    CHECK(k->linear_backward == lk_linear_backward);
    CHECK(k->relu_forward == lk_relu_forward);
    CHECK(k->relu_backward == lk_relu_backward);
    CHECK(k->gelu_forward == lk_gelu_forward);
    CHECK(k->gelu_backward == lk_gelu_backward);
    CHECK(k->softmax_cross_entropy_forward == lk_softmax_cross_entropy_forward);
    CHECK(k->softmax_cross_entropy_backward == lk_softmax_cross_entropy_backward);
    CHECK(k->encoder_forward == lk_encoder_forward);
    CHECK(k->encoder_backward == lk_encoder_backward);
    CHECK(k->layernorm_forward == lk_layernorm_forward);
    CHECK(k->layernorm_backward == lk_layernorm_backward);
    CHECK(k->conv1d_forward == lk_conv1d_forward);
    CHECK(k->conv1d_backward == lk_conv1d_backward);
    CHECK(k->attention_forward == lk_attention_forward);
    CHECK(k->attention_backward == lk_attention_backward);
    CHECK(k->add == lk_add);
    CHECK(k->accumulate == lk_accumulate);
    CHECK(k->convert == lk_convert);
    CHECK(k->accumulate_f32 == lk_accumulate_f32);
    CHECK(k->gemm_mixed == lk_gemm_mixed);
    CHECK(LOOM_HAS(k, loom_kernels_api, gemm_mixed));
    /* Every function slot is set: the CPU table lends every member, the ABI 1.1 ones included. */
    for (size_t off = offsetof(loom_kernels_api, sgemm); off < sizeof *k; off += sizeof(void *)) {
        void *slot;
        memcpy(&slot, (const char *)k + off, sizeof slot);
        CHECK(slot != NULL);
    }
    return test_finish("test_kernel_table");
}
