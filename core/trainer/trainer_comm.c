/*
 * trainer_comm.c - which comm plugin a run uses (docs/gpu.md#nccl). HF's --ddp_backend names
 * it; left empty, torch's default applies: NCCL between GPUs, Gloo between CPU processes. A
 * one-process run needs no communication and gets `local`, unless NCCL is named (a
 * one-rank NCCL communicator is how a GPU machine checks NCCL alone).
 */
#include <string.h>

#include "error.h"
#include "trainer_internal.h"

loom_status loom_trainer_comm_name(const loom_trainer *t, const char **name)
{
    const char *asked = t->args.ddp_backend && *t->args.ddp_backend ? t->args.ddp_backend : NULL;
    int nccl = asked ? strcmp(asked, "nccl") == 0 : t->world_size > 1 && t->device == LOOM_DEVICE_CUDA;
    if (nccl && t->device == LOOM_DEVICE_CPU)
        return loom_error(LOOM_E_INVALID, "--ddp_backend nccl: NCCL moves data between GPU memory and this run is on "
                                          "the CPU (no GPU, or --no_cuda): use --ddp_backend gloo");
    if (nccl)
        *name = "nccl";
    else
        *name = t->world_size == 1 ? "local" : asked ? asked : "gloo";
    return LOOM_OK;
}

uint32_t loom_trainer_comm_device(const loom_trainer *t, const loom_plugin *comm)
{
    return strcmp(comm->desc->name, "nccl") == 0 ? t->device : LOOM_DEVICE_CPU;
}

loom_status loom_trainer_reduce_f64(loom_trainer *t, double *values, size_t n, uint32_t op)
{
    const loom_comm_vtable *cv = t->comm.vtable;
    return cv->all_reduce(t->comm.instance, values, n, LOOM_DTYPE_F64, op, NULL);
}
