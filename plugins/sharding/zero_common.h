/*
 * zero_common.h - what ZeRO stages 1 and 2 share (each plugin is its own .so, so this is
 * header-only): the block-aligned even partition of the flat buffer and the all-gather that
 * puts every rank's updated partition back into every rank's parameters.
 */
#ifndef LOOM_PLUGINS_ZERO_COMMON_H
#define LOOM_PLUGINS_ZERO_COMMON_H

#include <string.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>

/* Partitions cut the buffer at multiples of the host's gradient-norm block (16384 elements), so
 * every canonical norm piece has one owner and the norm is the same bits as DDP's. */
#define ZERO_ALIGN 16384

/* DeepSpeed's zero_optimization keys as both stages read them; each stage refuses the values
 * that would mean something it does not do. */
typedef struct zero_options {
    int64_t allgather_bucket_size;
    int32_t allgather_partitions, reduce_scatter, overlap_comm, cpu_offload;
} zero_options;

/* The checks every stage shares (dtype, communicator, whole-tensor optimizers, bucket sizes),
 * then the options. `stage` names the plugin in messages. */
static inline loom_status zero_read_options(loom_host *host, const loom_host_api *api, const loom_config *config,
                                            const loom_sharding_setup *setup, const char *stage, zero_options *o)
{
    if (setup->param_dtype != LOOM_DTYPE_F32)
        return api->fail(host, LOOM_E_UNSUPPORTED, "%s supports fp32 parameters in this version", stage);
    if (!setup->comm || !setup->comm_vtable) return api->fail(host, LOOM_E_INVALID, "%s needs a communicator", stage);
    if (setup->optimizer_flags & LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "this optimizer needs whole tensors; %s splits tensors across ranks (use sharded_ddp)", stage);
    *o = (zero_options){500000000, 1, 1, 0, 0};
    api->cfg_i64(config, "allgather_bucket_size", &o->allgather_bucket_size);
    api->cfg_bool(config, "allgather_partitions", &o->allgather_partitions);
    api->cfg_bool(config, "reduce_scatter", &o->reduce_scatter);
    api->cfg_bool(config, "overlap_comm", &o->overlap_comm);
    api->cfg_bool(config, "cpu_offload", &o->cpu_offload);
    if (o->allgather_bucket_size < 1) return api->fail(host, LOOM_E_INVALID, "allgather_bucket_size must be >= 1");
    if (!o->allgather_partitions)
        return api->fail(host, LOOM_E_UNSUPPORTED, "allgather_partitions false (broadcasts) is not supported");
    return LOOM_OK;
}

/* P = ceil(total / world) rounded up to ZERO_ALIGN; ranges[r] = [r P, min((r+1) P, total)). */
static inline int64_t zero_partition(int64_t total, int32_t world, loom_range *ranges)
{
    int64_t even = (total + world - 1) / world;
    int64_t P = (even + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN;
    for (int32_t r = 0; r < world; r++) {
        int64_t b = (int64_t)r * P, e = b + P;
        ranges[r].begin = b < total ? b : total;
        ranges[r].end = e < total ? e : total;
    }
    return P;
}

/* All-gather the partitions of params (total elements, partitions of P) in pieces of at most c
 * elements per rank through send (c) and recv (world c) scratch. */
static inline loom_status zero_publish(loom_comm *comm, const loom_comm_vtable *cv, float *params, int64_t total,
                                       int64_t P, int32_t rank, int32_t world, int64_t c, float *send, float *recv)
{
    for (int64_t at = 0; at < P; at += c) {
        int64_t n = P - at < c ? P - at : c;
        int64_t mine = (int64_t)rank * P + at;
        for (int64_t i = 0; i < n; i++) send[i] = mine + i < total ? params[mine + i] : 0.0f;
        loom_status st = cv->all_gather(comm, send, recv, (size_t)n, LOOM_DTYPE_F32, NULL);
        if (st != LOOM_OK) return st;
        for (int32_t r = 0; r < world; r++) {
            int64_t theirs = (int64_t)r * P + at;
            int64_t keep = total - theirs < n ? total - theirs : n;
            if (keep > 0) memcpy(params + theirs, recv + (int64_t)r * n, (size_t)keep * sizeof(float));
        }
    }
    return LOOM_OK;
}

#endif
