/*
 * zero1.c - ZeRO stage 1 (DeepSpeed's P_os): the flat parameter buffer is split evenly over the
 * ranks (tensors may straddle ranks); each rank keeps fp32 master weights and optimizer states
 * for its partition only, so optimizer memory is 1/N of DDP's. Gradients stay whole during
 * backward (as in DeepSpeed stage 1) and each partition is reduced to its owner once, at the
 * end of the accumulation (a reduce-scatter, as one rooted reduce per owner: the communicator's
 * reduce works through bounded pieces, where one reduce-scatter of the whole buffer would need
 * scratch the size of every rank's gradients); after the update the partitions are all-gathered back into
 * every rank's parameters, in pieces of allgather_bucket_size elements.
 *
 * Partition r is [r P, min((r+1) P, total)) with P = ceil(total / N) rounded up to a multiple of
 * 16384 elements (the host's canonical norm block); the last partitions may be shorter or empty.
 * For an optimizer that needs whole tensors (Adafactor) the partitions are runs of whole tensors
 * instead (zero_whole.h), of uneven lengths, P the longest. The gradient buffer is the flat buffer
 * padded to N P; each owner's partition is reduced to it over the partition's own length. Sums
 * are the communicator's canonical rank-order sums; no division by N (the loss seed carries
 * 1 / targets of the global batch).
 */
#include <string.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>
#include <loom/plugin.h>

#include "sharding_common.h"

#include "zero_common.h"

typedef struct zero1_sharding {
    zero_base z;                /* first: the layout, partition and all-gather                */
    unsigned char *grads;       /* N P elements: whole gradients, padded; the owned gradients
                                   are this rank's block of it                                */
} zero1_sharding;

/* DeepSpeed's zero_optimization keys. Each does what its name says or is refused: stage 1 has
 * no backward-time communication, so the stage-2 keys must keep values that mean nothing here. */
static const loom_param_spec zero1_params[] = {
    ZERO_SHARED_PARAMS,
    {"reduce_scatter", LOOM_PARAM_BOOL, 0, "true",
     "reduce gradients with a reduce-scatter (stage 1 requires it, as DeepSpeed)"},
    {"reduce_bucket_size", LOOM_PARAM_INT, 0, "500000000",
     "stage 1 reduces the whole gradient once per step, in the communicator's own pieces"},
    {"overlap_comm", LOOM_PARAM_BOOL, 0, "false", "stage 2 only: stage 1 communicates after backward"},
    {"contiguous_gradients", LOOM_PARAM_BOOL, 0, "false", "stage 1's gradients are one contiguous buffer already"},
    {"cpu_offload", LOOM_PARAM_BOOL, 0, "false", "stage 2 only (DeepSpeed's ZeRO-Offload)"},
    {NULL, 0, 0, NULL, NULL},
};

static void zero1_destroy(loom_sharding *self_)
{
    zero1_sharding *self = (zero1_sharding *)self_;
    if (!self) return;
    self->z.api->free_memory(self->z.host, self->grads);
    zero_instance_free(&self->z);
}

static loom_status zero1_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                const loom_sharding_setup *setup, loom_sharding **out)
{
    *out = NULL;
    zero_options o;
    loom_status st = zero_read_options(host, api, config, setup, "zero1", &o);
    if (st != LOOM_OK) return st;
    if (!o.reduce_scatter)
        return api->fail(host, LOOM_E_INVALID, "ZeRO stage 1 needs reduce_scatter true (as DeepSpeed)");
    if (o.overlap_comm)
        return api->fail(host, LOOM_E_INVALID, "overlap_comm applies to stage 2: stage 1 communicates after backward");
    if (o.cpu_offload) return api->fail(host, LOOM_E_INVALID, "cpu_offload needs ZeRO stage 2 (as DeepSpeed)");
    zero1_sharding *self = zero_instance_new(host, api, setup, &o, sizeof *self, &st);
    if (!self) return st;
    const size_t bytes = (size_t)self->z.partition * (size_t)self->z.world * self->z.element_size;
    self->grads = api->alloc(host, bytes + 1, 0, setup->device, 0);
    if (!self->grads) {
        zero1_destroy((loom_sharding *)self);
        return api->fail(host, LOOM_E_NOMEM, "out of memory for %lld gradients", (long long)setup->total_numel);
    }
    memset(self->grads, 0, bytes);
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status zero1_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const zero1_sharding *self = (const zero1_sharding *)self_;
    out->gradient_bytes = (uint64_t)self->z.partition * (uint64_t)self->z.world * self->z.element_size;
    /* The all-gather pieces (the owned gradients are this rank's block of the buffer above). */
    out->bucket_bytes = zero_base_gather_bytes(&self->z);
    return LOOM_OK;
}

static loom_status zero1_begin_micro_batch(loom_sharding *self, int32_t micro, int32_t last)
{
    (void)self, (void)micro, (void)last;
    return LOOM_OK;
}

static loom_status zero1_grad_acquire(loom_sharding *self_, int64_t begin, int64_t end, void **memory)
{
    zero1_sharding *self = (zero1_sharding *)self_;
    loom_status st = sharding_check_range(self->z.host, self->z.api, begin, end, self->z.total);
    if (st != LOOM_OK) return st;
    *memory = self->grads + (size_t)begin * self->z.element_size;
    return LOOM_OK;
}

static loom_status zero1_grad_release(loom_sharding *self, int64_t begin, int64_t end)
{
    (void)self, (void)begin, (void)end; /* stage 1 reduces once, at the end of the accumulation */
    return LOOM_OK;
}

static loom_status zero1_finish_grads(loom_sharding *self_)
{
    zero1_sharding *self = (zero1_sharding *)self_;
    /* Rank-order sums either way: the same bits as a reduce-scatter or ddp's all-reduce. Every
     * rank knows every partition, so all skip the same empty ones. */
    for (int32_t r = 0; r < self->z.world; r++) {
        const loom_range *part = &self->z.ranges[r];
        if (part->end <= part->begin) continue;
        unsigned char *block = self->grads + (size_t)part->begin * self->z.element_size;
        loom_status st = self->z.cv->reduce(self->z.comm, block, (size_t)(part->end - part->begin), self->z.dtype,
                                            LOOM_REDUCE_SUM, r, NULL);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static loom_status zero1_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    zero1_sharding *self = (zero1_sharding *)self_;
    loom_status st = zero_check_range_index(&self->z, range_index);
    if (st != LOOM_OK) return st;
    *memory = self->grads + (size_t)self->z.ranges[self->z.rank].begin * self->z.element_size;
    return LOOM_OK;
}

static loom_status zero1_zero_grads(loom_sharding *self_)
{
    zero1_sharding *self = (zero1_sharding *)self_;
    memset(self->grads, 0, (size_t)self->z.partition * (size_t)self->z.world * self->z.element_size);
    return LOOM_OK;
}

/* Every rank's updated partition back into every rank's parameters. */
static loom_status zero1_publish_params(loom_sharding *self_)
{
    return zero_base_publish(&((zero1_sharding *)self_)->z);
}

static const loom_sharding_vtable zero1_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = zero1_create,
    .destroy = zero1_destroy,
    .owned_ranges = zero_owned_ranges,
    .memory = zero1_memory,
    .begin_micro_batch = zero1_begin_micro_batch,
    .grad_acquire = zero1_grad_acquire,
    .grad_release = zero1_grad_release,
    .finish_grads = zero1_finish_grads,
    .owned_grads = zero1_owned_grads,
    .zero_grads = zero1_zero_grads,
    .publish_params = zero1_publish_params,
};

static const loom_plugin_desc zero1_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "zero1",
    .version = "1.0.0",
    .summary = "ZeRO stage 1: optimizer states and master weights partitioned over ranks (evenly, or by whole "
               "tensors for optimizers that need them)",
    .vtable = &zero1_vtable,
    .params = zero1_params,
};

LOOM_PLUGIN_EXPORT(&zero1_desc)
