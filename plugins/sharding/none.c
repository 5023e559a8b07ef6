/*
 * none.c - the sharding of one process: this rank owns every parameter, gradients accumulate
 * in one full flat buffer, and nothing is communicated. With a world size above 1 it refuses
 * to run (use ddp): silently training N unsynchronised copies would be a lie.
 */
#include <string.h>

#include <loom/sharding.h>
#include <loom/plugin.h>

#include "replicated.h"

typedef struct none_sharding {
    replicated_sharding base; /* first: the shared vtable members cast to it */
    loom_range owned;
} none_sharding;

static void none_destroy(loom_sharding *self_)
{
    none_sharding *self = (none_sharding *)self_;
    if (!self) return;
    replicated_free(&self->base);
    self->base.api->free_memory(self->base.host, self);
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
    self->owned.begin = 0;
    self->owned.end = setup->total_numel;
    if ((st = replicated_init(&self->base, host, api, setup, element)) != LOOM_OK) {
        none_destroy((loom_sharding *)self);
        return st;
    }
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status none_owned_ranges(const loom_sharding *self_, int32_t rank, const loom_range **ranges,
                                     size_t *n_ranges)
{
    const none_sharding *self = (const none_sharding *)self_;
    if (rank != 0)
        return self->base.api->fail(self->base.host, LOOM_E_INVALID, "no rank %d in a one-process run", rank);
    *ranges = &self->owned;
    *n_ranges = 1;
    return LOOM_OK;
}

static loom_status none_begin_micro_batch(loom_sharding *self, int32_t micro, int32_t last)
{
    (void)self, (void)micro, (void)last;
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
    .memory = replicated_memory,
    .begin_micro_batch = none_begin_micro_batch,
    .grad_acquire = replicated_grad_acquire,
    .grad_release = none_grad_release,
    .finish_grads = none_finish_grads,
    .owned_grads = replicated_owned_grads_whole,
    .zero_grads = replicated_zero_grads,
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

LOOM_PLUGIN_EXPORT(&none_desc)
