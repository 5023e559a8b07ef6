/*
 * sharded_ddp.c - FairScale's OSS + ShardedDataParallel: every parameter tensor belongs WHOLE to
 * one rank, assigned in declaration order to the rank with the fewest elements so far (OSS's
 * greedy partition); the owner alone keeps its optimizer states and steps it. A tensor's
 * gradient is reduced to its owner as soon as backward releases it on the last micro-batch, and
 * after the update every owner broadcasts its tensors to the others. Optimizers that need whole
 * tensors (Adafactor) work here, as under zero1/zero2 (which cut at tensor boundaries for them).
 *
 * Gradients are kept whole on every rank in this version (FairScale frees the ones a rank does
 * not own after the reduce; loom's gradient memory here is DDP's).
 */
#include <string.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>
#include <loom/plugin.h>

#include "replicated.h"

#define SHARDED_MAX_PENDING 8192

typedef struct sharded_sharding {
    replicated_sharding base; /* first: the shared vtable members cast to it */
    loom_comm *comm;
    const loom_comm_vtable *cv;
    int32_t rank, world;
    size_t n_tensors;
    int64_t *offsets;         /* n_tensors + 1 */
    int32_t *owner;           /* per tensor */
    loom_range *all_ranges;   /* every rank's owned tensors, rank by rank, merged when adjacent */
    size_t *first_range;      /* world + 1 indices into all_ranges */
    unsigned char *params;
    int32_t last_micro;
    loom_comm_request *pending[SHARDED_MAX_PENDING];
    size_t n_pending;
    unsigned char *reduced;   /* per tensor, this step */
} sharded_sharding;

static void sharded_destroy(loom_sharding *self_)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    if (!self) return;
    for (size_t i = 0; i < self->n_pending; i++)
        if (self->pending[i]) self->cv->wait(self->comm, self->pending[i]);
    const loom_host_api *api = self->base.api;
    api->free_memory(self->base.host, self->offsets);
    api->free_memory(self->base.host, self->owner);
    api->free_memory(self->base.host, self->all_ranges);
    api->free_memory(self->base.host, self->first_range);
    api->free_memory(self->base.host, self->reduced);
    replicated_free(&self->base);
    api->free_memory(self->base.host, self);
}

static loom_status sharded_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  const loom_sharding_setup *setup, loom_sharding **out)
{
    (void)config;
    *out = NULL;
    size_t element = 0;
    loom_status st = sharding_element_size(host, api, setup->param_dtype, &element);
    if (st != LOOM_OK) return st;
    if (!setup->comm || !setup->comm_vtable) return api->fail(host, LOOM_E_INVALID, "sharded_ddp needs a communicator");
    sharded_sharding *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    if ((st = replicated_init(&self->base, host, api, setup, element)) != LOOM_OK) {
        sharded_destroy((loom_sharding *)self);
        return st;
    }
    self->comm = setup->comm;
    self->cv = setup->comm_vtable;
    self->rank = setup->rank;
    self->world = setup->world_size;
    self->n_tensors = setup->n_tensors;
    self->params = setup->params;
    size_t n = setup->n_tensors;
    self->offsets = api->alloc(host, (n + 1) * sizeof *self->offsets, 0, LOOM_DEVICE_CPU, 0);
    self->owner = api->alloc(host, (n + 1) * sizeof *self->owner, 0, LOOM_DEVICE_CPU, 0);
    self->all_ranges = api->alloc(host, (n + 1) * sizeof *self->all_ranges, 0, LOOM_DEVICE_CPU, 0);
    self->first_range = api->alloc(host, ((size_t)self->world + 1) * sizeof *self->first_range, 0, LOOM_DEVICE_CPU, 0);
    self->reduced = api->alloc(host, n + 1, 0, LOOM_DEVICE_CPU, 0);
    int64_t *load = api->alloc(host, (size_t)self->world * sizeof *load, 0, LOOM_DEVICE_CPU, 0);
    if (!self->offsets || !self->owner || !self->all_ranges || !self->first_range || !self->reduced || !load) {
        api->free_memory(host, load);
        sharded_destroy((loom_sharding *)self);
        return api->fail(host, LOOM_E_NOMEM, "out of memory");
    }
    memcpy(self->offsets, setup->tensor_offsets, (n + 1) * sizeof *self->offsets);
    memset(load, 0, (size_t)self->world * sizeof *load);
    for (size_t i = 0; i < n; i++) {
        int32_t best = 0;
        for (int32_t r = 1; r < self->world; r++)
            if (load[r] < load[best]) best = r;
        self->owner[i] = best;
        load[best] += self->offsets[i + 1] - self->offsets[i];
    }
    api->free_memory(host, load);
    /* Each rank's tensors as sorted ranges, adjacent ones merged. */
    size_t k = 0;
    for (int32_t r = 0; r < self->world; r++) {
        self->first_range[r] = k;
        for (size_t i = 0; i < n; i++) {
            if (self->owner[i] != r || self->offsets[i + 1] == self->offsets[i]) continue;
            if (k > self->first_range[r] && self->all_ranges[k - 1].end == self->offsets[i])
                self->all_ranges[k - 1].end = self->offsets[i + 1];
            else
                self->all_ranges[k++] = (loom_range){self->offsets[i], self->offsets[i + 1]};
        }
    }
    self->first_range[self->world] = k;
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status sharded_owned_ranges(const loom_sharding *self_, int32_t rank, const loom_range **ranges,
                                        size_t *n_ranges)
{
    const sharded_sharding *self = (const sharded_sharding *)self_;
    if (rank < 0 || rank >= self->world)
        return self->base.api->fail(self->base.host, LOOM_E_INVALID, "no rank %d in a world of %d", rank, self->world);
    *ranges = self->all_ranges + self->first_range[rank];
    *n_ranges = self->first_range[rank + 1] - self->first_range[rank];
    return LOOM_OK;
}

static loom_status sharded_begin_micro_batch(loom_sharding *self_, int32_t micro, int32_t last)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    (void)micro;
    self->last_micro = last;
    if (last) memset(self->reduced, 0, self->n_tensors);
    return LOOM_OK;
}

static loom_status reduce_tensor(sharded_sharding *self, size_t i)
{
    if (self->reduced[i]) return LOOM_OK;
    self->reduced[i] = 1;
    int64_t b = self->offsets[i], e = self->offsets[i + 1];
    if (e == b) return LOOM_OK;
    if (self->n_pending == SHARDED_MAX_PENDING)
        return self->base.api->fail(self->base.host, LOOM_E_INTERNAL, "more than %d pending reductions",
                                    SHARDED_MAX_PENDING);
    loom_comm_request **request = &self->pending[self->n_pending++];
    *request = NULL;
    return self->cv->reduce(self->comm, self->base.grads + (size_t)b * self->base.element_size, (size_t)(e - b),
                            self->base.dtype, LOOM_REDUCE_SUM, self->owner[i], request);
}

/* Tensors wholly inside a released range go to their owner now. */
static loom_status sharded_grad_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    if (!self->last_micro) return LOOM_OK;
    for (size_t i = self->n_tensors; i-- > 0;) {
        if (self->offsets[i] >= begin && self->offsets[i + 1] <= end) {
            loom_status st = reduce_tensor(self, i);
            if (st != LOOM_OK) return st;
        }
    }
    return LOOM_OK;
}

static loom_status sharded_finish_grads(loom_sharding *self_)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    loom_status st = LOOM_OK;
    for (size_t i = self->n_tensors; st == LOOM_OK && i-- > 0;) st = reduce_tensor(self, i);
    for (size_t i = 0; i < self->n_pending; i++) {
        loom_status w = self->pending[i] ? self->cv->wait(self->comm, self->pending[i]) : LOOM_OK;
        self->pending[i] = NULL;
        if (st == LOOM_OK) st = w;
    }
    self->n_pending = 0;
    return st;
}

static loom_status sharded_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    size_t first = self->first_range[self->rank], count = self->first_range[self->rank + 1] - first;
    if (range_index >= count)
        return self->base.api->fail(self->base.host, LOOM_E_INVALID, "no owned range %zu", range_index);
    *memory = self->base.grads + (size_t)self->all_ranges[first + range_index].begin * self->base.element_size;
    return LOOM_OK;
}

/* Every owner broadcasts its updated tensors (one broadcast per owner range). */
static loom_status sharded_publish_params(loom_sharding *self_)
{
    sharded_sharding *self = (sharded_sharding *)self_;
    for (int32_t r = 0; r < self->world; r++) {
        for (size_t k = self->first_range[r]; k < self->first_range[r + 1]; k++) {
            const loom_range *range = &self->all_ranges[k];
            loom_status st =
                self->cv->broadcast(self->comm, self->params + (size_t)range->begin * self->base.element_size,
                                    (size_t)(range->end - range->begin), self->base.dtype, r, NULL);
            if (st != LOOM_OK) return st;
        }
    }
    return LOOM_OK;
}

static const loom_sharding_vtable sharded_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = sharded_create,
    .destroy = sharded_destroy,
    .owned_ranges = sharded_owned_ranges,
    .memory = replicated_memory,
    .begin_micro_batch = sharded_begin_micro_batch,
    .grad_acquire = replicated_grad_acquire,
    .grad_release = sharded_grad_release,
    .finish_grads = sharded_finish_grads,
    .owned_grads = sharded_owned_grads,
    .zero_grads = replicated_zero_grads,
    .publish_params = sharded_publish_params,
};

static const loom_plugin_desc sharded_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "sharded_ddp",
    .version = "1.0.0",
    .summary = "FairScale OSS + ShardedDDP: whole tensors owned greedily by size, reduce to owner, broadcast",
    .vtable = &sharded_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&sharded_desc)
