/*
 * none.c - the sharding of one process: this rank owns every parameter, gradients accumulate
 * in one full flat buffer, and nothing is communicated. With a world size above 1 it refuses
 * to run (use ddp): silently training N unsynchronised copies would be a lie.
 */
#include <string.h>

#include <loom/sharding.h>

#include "sharding_common.h"

typedef struct none_sharding {
    loom_host *host;
    const loom_host_api *api;
    loom_range owned;
    int64_t total;
    size_t element_size;
    unsigned char *grads;
} none_sharding;

static void none_destroy(loom_sharding *self_)
{
    none_sharding *self = (none_sharding *)self_;
    if (!self) return;
    self->api->free_memory(self->host, self->grads);
    self->api->free_memory(self->host, self);
}

static loom_status none_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               const loom_sharding_setup *setup, loom_sharding **out)
{
    (void)config;
    *out = NULL;
    if (setup->world_size != 1)
        return api->fail(host, LOOM_E_INVALID,
                         "sharding 'none' runs one process, but the world size is %d: use --plugin ddp",
                         setup->world_size);
    size_t element = 0;
    loom_status st = sharding_element_size(host, api, setup->param_dtype, &element);
    if (st != LOOM_OK) return st;
    none_sharding *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->total = setup->total_numel;
    self->owned.begin = 0;
    self->owned.end = setup->total_numel;
    self->element_size = element;
    self->grads = api->alloc(host, (size_t)setup->total_numel * element + 1, 0, setup->device, 0);
    if (!self->grads) {
        none_destroy((loom_sharding *)self);
        return api->fail(host, LOOM_E_NOMEM, "out of memory for %lld gradients", (long long)setup->total_numel);
    }
    memset(self->grads, 0, (size_t)setup->total_numel * element);
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status none_owned_ranges(const loom_sharding *self_, int32_t rank, const loom_range **ranges,
                                     size_t *n_ranges)
{
    const none_sharding *self = (const none_sharding *)self_;
    if (rank != 0) return self->api->fail(self->host, LOOM_E_INVALID, "no rank %d in a one-process run", rank);
    *ranges = &self->owned;
    *n_ranges = 1;
    return LOOM_OK;
}

static loom_status none_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const none_sharding *self = (const none_sharding *)self_;
    out->gradient_bytes = (uint64_t)self->total * self->element_size;
    out->bucket_bytes = 0;
    return LOOM_OK;
}

static loom_status none_begin_micro_batch(loom_sharding *self, int32_t micro, int32_t last)
{
    (void)self, (void)micro, (void)last;
    return LOOM_OK;
}

static loom_status none_grad_acquire(loom_sharding *self_, int64_t begin, int64_t end, void **memory)
{
    none_sharding *self = (none_sharding *)self_;
    loom_status st = sharding_check_range(self->host, self->api, begin, end, self->total);
    if (st != LOOM_OK) return st;
    *memory = self->grads + (size_t)begin * self->element_size;
    return LOOM_OK;
}

static loom_status none_grad_release(loom_sharding *self, int64_t begin, int64_t end)
{
    (void)self, (void)begin, (void)end;
    return LOOM_OK;
}

static loom_status none_finish_grads(loom_sharding *self)
{
    (void)self;
    return LOOM_OK;
}

static loom_status none_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    none_sharding *self = (none_sharding *)self_;
    if (range_index != 0) return self->api->fail(self->host, LOOM_E_INVALID, "no owned range %zu", range_index);
    *memory = self->grads;
    return LOOM_OK;
}

static loom_status none_zero_grads(loom_sharding *self_)
{
    none_sharding *self = (none_sharding *)self_;
    memset(self->grads, 0, (size_t)self->total * self->element_size);
    return LOOM_OK;
}

static loom_status none_publish_params(loom_sharding *self)
{
    (void)self;
    return LOOM_OK;
}

static loom_status none_set_reduction(loom_sharding *self, int32_t enabled)
{
    (void)self, (void)enabled; /* one rank: its own gradients are the reduced ones */
    return LOOM_OK;
}

static const loom_sharding_vtable none_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = none_create,
    .destroy = none_destroy,
    .owned_ranges = none_owned_ranges,
    .memory = none_memory,
    .begin_micro_batch = none_begin_micro_batch,
    .grad_acquire = none_grad_acquire,
    .grad_release = none_grad_release,
    .finish_grads = none_finish_grads,
    .owned_grads = none_owned_grads,
    .zero_grads = none_zero_grads,
    .publish_params = none_publish_params,
    .set_reduction = none_set_reduction,
};

static const loom_plugin_desc none_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "none",
    .version = "1.0.0",
    .summary = "one process: owns everything, communicates nothing",
    .vtable = &none_vtable,
    .params = NULL,
};

LOOM_EXPORT const loom_plugin_desc *loom_plugin_query(uint32_t host_abi_major, uint32_t index)
{
    (void)host_abi_major;
    return index == 0 ? &none_desc : NULL;
}
