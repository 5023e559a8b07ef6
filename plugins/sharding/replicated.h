/*
 * replicated.h - the replicated gradient buffer that none, ddp and sharded_ddp share (as zero1
 * and zero2 share zero_common.h): every rank keeps the gradients of the whole model in one flat
 * buffer of the parameter dtype; the plugins differ only in what they communicate.
 *
 * A plugin's instance starts with a replicated_sharding member, so the vtable members below
 * take the loom_sharding pointer as it is. Header-only because each plugin is its own .so.
 */
#ifndef LOOM_PLUGINS_REPLICATED_H
#define LOOM_PLUGINS_REPLICATED_H

#include <string.h>

#include <loom/sharding.h>

#include "sharding_common.h"

typedef struct replicated_sharding {
    loom_host *host;
    const loom_host_api *api;
    int64_t total;        /* elements of the flat buffer                                    */
    size_t element_size;  /* bytes per element of dtype                                     */
    uint32_t dtype;       /* param_dtype: of parameters, gradients and every collective     */
    unsigned char *grads; /* total elements on setup->device, zeroed; owned                 */
    /* Set when grads is the communicator's alloc_shared memory (ABI 1.6), given back there. */
    loom_comm *shared_comm;
    const loom_comm_vtable *shared_vtable;
} replicated_sharding;

/* Fill the base of an instance (allocated and zeroed by the caller) and allocate its zeroed
 * gradient buffer. On failure the caller destroys the instance (replicated_free is safe). */
static inline loom_status replicated_init(replicated_sharding *r, loom_host *host, const loom_host_api *api,
                                          const loom_sharding_setup *setup, size_t element_size)
{
    r->host = host;
    r->api = api;
    r->total = setup->total_numel;
    r->element_size = element_size;
    r->dtype = setup->param_dtype;
    /* + 1: a model without parameters still gets a valid pointer. */
    r->grads = api->alloc(host, (size_t)r->total * element_size + 1, 0, setup->device, 0);
    if (!r->grads)
        return api->fail(host, LOOM_E_NOMEM, "out of memory for %lld gradients", (long long)setup->total_numel);
    memset(r->grads, 0, (size_t)r->total * element_size);
    return LOOM_OK;
}

/* replicated_init, but with the gradients in memory the communicator shares between the ranks
 * of one machine when it lends some (comm.h alloc_shared, ABI 1.6): an all_reduce of them then
 * runs in place, with no copy through the transport (docs/architecture.md#shared-buffers).
 * Collective: every rank of the run calls it. `wanted` 0, a communicator without the members
 * or one that lends nothing: the plugin's own memory, as replicated_init. */
static inline loom_status replicated_init_shared(replicated_sharding *r, loom_host *host, const loom_host_api *api,
                                                 const loom_sharding_setup *setup, size_t element_size, int wanted)
{
    const loom_comm_vtable *cv = setup->comm_vtable;
    if (!wanted || setup->world_size < 2 || setup->device != LOOM_DEVICE_CPU || setup->total_numel < 1 ||
        !(LOOM_HAS(cv, loom_comm_vtable, alloc_shared) && cv->free_shared))
        return replicated_init(r, host, api, setup, element_size);
    r->host = host; /* first: a failure below destroys the instance through replicated_free */
    r->api = api;
    void *memory = NULL;
    loom_status st = cv->alloc_shared(setup->comm, (size_t)setup->total_numel * element_size, &memory);
    if (st != LOOM_OK) return st;
    if (!memory) return replicated_init(r, host, api, setup, element_size);
    r->total = setup->total_numel;
    r->element_size = element_size;
    r->dtype = setup->param_dtype;
    r->grads = memory; /* zeroed by the communicator */
    r->shared_comm = setup->comm;
    r->shared_vtable = cv;
    return LOOM_OK;
}

static inline void replicated_free(replicated_sharding *r)
{
    if (r->shared_comm && r->grads)
        r->shared_vtable->free_shared(r->shared_comm, r->grads);
    else
        r->api->free_memory(r->host, r->grads);
    r->grads = NULL;
}

/* Bytes of the gradient buffer, for memory(). */
static inline uint64_t replicated_gradient_bytes(const loom_sharding *self)
{
    const replicated_sharding *r = (const replicated_sharding *)self;
    return (uint64_t)r->total * r->element_size;
}

/* loom_sharding_vtable.memory of a plugin without buckets (none, sharded_ddp). */
static inline loom_status replicated_memory(const loom_sharding *self, loom_sharding_memory *out)
{
    out->gradient_bytes = replicated_gradient_bytes(self);
    out->bucket_bytes = 0;
    return LOOM_OK;
}

/* loom_sharding_vtable.grad_acquire: the range of the flat buffer, in place. */
static inline loom_status replicated_grad_acquire(loom_sharding *self, int64_t begin, int64_t end, void **memory)
{
    replicated_sharding *r = (replicated_sharding *)self;
    loom_status st = sharding_check_range(r->host, r->api, begin, end, r->total);
    if (st != LOOM_OK) return st;
    *memory = r->grads + (size_t)begin * r->element_size;
    return LOOM_OK;
}

/* loom_sharding_vtable.zero_grads. */
static inline loom_status replicated_zero_grads(loom_sharding *self)
{
    replicated_sharding *r = (replicated_sharding *)self;
    memset(r->grads, 0, (size_t)r->total * r->element_size);
    return LOOM_OK;
}

/* loom_sharding_vtable.owned_grads for a plugin whose rank owns the whole buffer (one range). */
static inline loom_status replicated_owned_grads_whole(loom_sharding *self, size_t range_index, void **memory)
{
    replicated_sharding *r = (replicated_sharding *)self;
    if (range_index != 0) return r->api->fail(r->host, LOOM_E_INVALID, "no owned range %zu", range_index);
    *memory = r->grads;
    return LOOM_OK;
}

#endif
