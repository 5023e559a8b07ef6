/*
 * kernel_table.cu - the CUDA kernel table the host lends to plugins
 * (LOOM_KERNELS_CUDA_SERVICE); every call returns without waiting (lk_cuda.h).
 */
#include "kernel_table.cuh"

static constexpr loom_kernels_api lk_cuda_table = lk_cuda_make_table();

extern "C" const loom_kernels_api *lk_cuda_kernel_table(void)
{
    return &lk_cuda_table;
}
