/*
 * nccl_plugin.c - the nccl comm plugin: the communicator of nccl_comm.c on the real NCCL and
 * CUDA runtime (nccl_real.c). docs/gpu.md#nccl.
 */
#include <loom/plugin.h>

#include "nccl_comm.h"

static const loom_plugin_desc nccl_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_COMM,
    .name = "nccl",
    .version = "1.0.0",
    .summary = "NCCL between GPUs: the unique id through the rendezvous store, every wait bounded by --ddp_timeout",
    .vtable = &nccl_comm_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&nccl_desc)
