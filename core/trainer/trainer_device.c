/*
 * trainer_device.c - where a run computes (docs/gpu.md#device-selection): HF's rules applied
 * to this run's flags, the backend's one-line refusal when it was named and cannot run, and
 * the one limit of this version: the step (optimizers, loss scaling, the gradient norm,
 * checkpoints) still runs on the CPU, so a backend must lend memory the CPU can address
 * (docs/gpu.md#what-runs-where).
 */
#include <string.h>

#include <loom/backend.h>

#include "device.h"
#include "error.h"
#include "host.h"
#include "trainer_internal.h"

loom_status loom_trainer_open_device(loom_trainer *t)
{
    const loom_args *a = &t->args;
    int no_cuda = a->no_cuda || a->use_cpu;
    /* Under a launcher LOCAL_RANK picks the device; one process takes the first. */
    int launched = t->ranks.source && strcmp(t->ranks.source, "single process") != 0;
    int local_rank = launched ? t->local_rank : -1;
    loom_status st = loom_device_open(t->backend_plugin, t->backend_plugin != NULL, no_cuda, local_rank,
                                      t->local_world_size, NULL);
    if (st != LOOM_OK) return st;
    t->device = loom_device_current();
    t->device_index = loom_device_index();
    /* HF's tf32: none and false leave FP32 products as they are, which is what loom computes
     * on either device (the CUDA backend keeps cuBLAS's default math, kernels/cuda/common.cu).
     * true is HF's error where there is no Ampere GPU, and not done yet where there is
     * (docs/semantics/trainer.md#every-hf-argument). */
    if (a->tf32 == 1 && t->device == LOOM_DEVICE_CPU)
        return loom_error(LOOM_E_INVALID,
                          "--tf32 true (%s): TF32 needs an Ampere or newer NVIDIA GPU, and this run is on the CPU; "
                          "leave it unset or false",
                          loom_args_origin_text(a, LOOM__ARG_tf32));
    if (a->tf32 == 1)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--tf32 true (%s) is not supported yet: the CUDA backend computes FP32 products in full "
                          "FP32 (TF32 tensor-core math: later)",
                          loom_args_origin_text(a, LOOM__ARG_tf32));
    if (t->device == LOOM_DEVICE_CPU) return LOOM_OK;
    /* FSDP's offload keeps parameters and gradients in host memory between uses: on the CPU
     * they are there anyway (args_fsdp.c), on a GPU that is not done yet. */
    if (a->fsdp && strstr(a->fsdp, "offload"))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--fsdp offload (%s) on a GPU is not supported yet (parameters and gradients stay in GPU "
                          "memory); DeepSpeed's zero_optimization.offload_optimizer is",
                          loom_args_origin_text(a, LOOM__ARG_fsdp));
    /* HF's full_determinism: every kernel of a CPU run adds in a fixed order, so a CPU run
     * always repeats bit for bit. The CUDA tiled attention's backward adds with atomics
     * (kernels/cuda/attention_flash.cu), so a GPU run cannot promise it yet. */
    if (a->full_determinism)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--full_determinism on a GPU: the tiled attention's backward adds with atomics there, in "
                          "whatever order the warps run; a CPU run is deterministic (add --no_cuda)");
    const loom_backend_vtable *vt = loom_device_backend(NULL);
    if (!(vt->flags & LOOM_BACKEND_HOST_ACCESSIBLE))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "the device's memory is not addressable by the CPU, and the optimizer step, loss scaling and "
                          "checkpoints still run on the CPU (docs/gpu.md#what-runs-where): add --no_cuda");
    char where[256];
    loom_device_describe(where, sizeof where);
    loom_log(LOOM_LOG_DEBUG, "device: %s", where);
    return LOOM_OK;
}
