/*
 * zero3.c - ZeRO stage 3 (DeepSpeed's P_os+g+p): zero2's partitions of optimizer states, master
 * weights and gradients (zero_grads.h), plus the parameters themselves: between uses a rank keeps
 * only its own range of the model-dtype parameters. The model acquires a range (a block) before it
 * reads it and releases it after (the host's loom_param_source, ABI 1.12); acquiring broadcasts
 * each owner's piece of the range into its place in params, releasing gives the pages of the
 * pieces this rank does not own back to the kernel (madvise MADV_DONTNEED: they read as zeros until
 * the next acquire writes them). So a rank's parameter memory is its partition plus the model's
 * working set (GPT-2: the embeddings and one block), not the whole model.
 *
 * The partition is zero2's (the same owned ranges, so checkpoints have zero2's layout) and the
 * gathers move bits, so zero3 trains the same bits as zero2 (and as ddp with one micro-batch).
 * After the update the owned ranges are current where they lie and nothing is gathered: the next
 * forward gathers what it reads.
 *
 * CPU only in this version (the discarding relies on anonymous host pages), where offloading to
 * the CPU means nothing: the configuration layers pass cpu_offload false, and true is refused. The
 * ZeRO-3 tuning keys (prefetch, persistence, live parameters) are accepted: this plugin gathers
 * exactly what the model asks for, when it asks (docs/architecture.md#zero-3).
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>
#include <loom/plugin.h>

#include "sharding_common.h"

#include "zero_common.h"
#include "zero_grads.h"

#define ZERO3_MAX_HELD 16

typedef struct zero3_sharding {
    zero_base z;                     /* first: the layout and partition                          */
    zero_grads g;                    /* the gradient partition and its arena                     */
    loom_range held[ZERO3_MAX_HELD]; /* parameter ranges acquired and not released            */
    size_t n_held;
    int64_t capacity;    /* elements of params (total_numel and the zero tail)       */
    int64_t working_set; /* the model's max_grad_elements: what it holds at once     */
    uintptr_t page;      /* the kernel's page size                                   */
} zero3_sharding;

static const loom_param_spec zero3_params[] = {
    ZERO_SHARED_PARAMS,
    ZERO_GRADIENT_PARAMS,
    {"cpu_offload", LOOM_PARAM_BOOL, 0, "false",
     "ZeRO-Offload: zero3 runs on the CPU, where it means nothing (true is refused: --plugin zero3 asked for it)"},
    {"prefetch_bucket_size", LOOM_PARAM_INT, 0, "50000000",
     "elements fetched ahead of use (DeepSpeed); accepted: ranges are gathered when the model acquires them"},
    {"param_persistence_threshold", LOOM_PARAM_INT, 0, "100000",
     "tensors below this stay whole (DeepSpeed); accepted: every range is partitioned"},
    {"model_persistence_threshold", LOOM_PARAM_INT, 0, "9223372036854775807", "accepted, as above"},
    {"max_live_parameters", LOOM_PARAM_INT, 0, "1000000000",
     "parameters gathered at once at most (DeepSpeed); accepted: the model holds its working set only"},
    {"max_reuse_distance", LOOM_PARAM_INT, 0, "1000000000", "accepted: a released range is always discarded"},
    {"gather_16bit_weights_on_model_save", LOOM_PARAM_BOOL, 0, "false",
     "accepted: the host gathers the whole model for every save and writes model.safetensors"},
    {NULL, 0, 0, NULL, NULL},
};

static void zero3_destroy(loom_sharding *self_)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    if (!self) return;
    zero_grads_free(&self->g, &self->z);
    zero_instance_free(&self->z);
}

/* The whole pages of params[x, y) go back to the kernel; the pages at either end may hold
 * elements of a neighbouring range still in use, and stay. */
static void discard_span(zero3_sharding *self, int64_t x, int64_t y)
{
    if (x >= y) return;
    uintptr_t lo = (uintptr_t)(self->z.params + (size_t)x * self->z.element_size);
    uintptr_t hi = (uintptr_t)(self->z.params + (size_t)y * self->z.element_size);
    lo = (lo + self->page - 1) / self->page * self->page;
    hi = hi / self->page * self->page;
    /* Advice only: if the kernel declines, the pages stay and hold stale values that the next
     * acquire overwrites. */
    if (lo < hi) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* [begin, end) less this rank's own range. */
static void discard(zero3_sharding *self, int64_t begin, int64_t end)
{
    const loom_range *own = &self->z.ranges[self->z.rank];
    if (own->end <= own->begin) {
        discard_span(self, begin, end);
        return;
    }
    discard_span(self, begin, end < own->begin ? end : own->begin);
    discard_span(self, begin > own->end ? begin : own->end, end);
}

static loom_status zero3_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                const loom_sharding_setup *setup, loom_sharding **out)
{
    *out = NULL;
    zero_options o;
    loom_status st = zero_read_options(host, api, config, setup, "zero3", &o);
    if (st != LOOM_OK) return st;
    if (o.cpu_offload)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "cpu_offload (optimizer offload) is not supported with ZeRO stage 3; use zero2 for offload");
    if (setup->device != LOOM_DEVICE_CPU)
        return api->fail(
            host, LOOM_E_UNSUPPORTED,
            "ZeRO stage 3 runs on the CPU only in this version (it releases host pages); use zero2 on a GPU");
    const char *ints[] = {"prefetch_bucket_size", "param_persistence_threshold", "model_persistence_threshold",
                          "max_live_parameters", "max_reuse_distance"};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        int64_t v = 0;
        if (api->cfg_i64(config, ints[i], &v) == 0 && v < 0)
            return api->fail(host, LOOM_E_INVALID, "%s must be >= 0, got %lld", ints[i], (long long)v);
    }
    o.publishes = 0;
    zero3_sharding *self = zero_instance_new(host, api, setup, &o, sizeof *self, &st);
    if (!self) return st;
    if ((st = zero_grads_init(&self->g, &self->z, setup, &o, "zero3")) != LOOM_OK) {
        zero3_destroy((loom_sharding *)self);
        return st;
    }
    long page = sysconf(_SC_PAGESIZE);
    self->page = page > 0 ? (uintptr_t)page : 4096;
    self->capacity =
        LOOM_HAS_FIELD(setup, loom_sharding_setup, params_capacity) && setup->params_capacity > setup->total_numel
            ? setup->params_capacity
            : setup->total_numel;
    self->working_set = self->g.arena_elements;
    /* The host made params whole (initialised and broadcast); from here on this rank keeps its
     * own range only. */
    discard(self, 0, self->capacity);
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status zero3_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const zero3_sharding *self = (const zero3_sharding *)self_;
    zero_grads_memory(&self->g, &self->z, out);
    if (LOOM_HAS_FIELD(out, loom_sharding_memory, host_bytes)) out->host_bytes = 0;
    if (LOOM_HAS_FIELD(out, loom_sharding_memory, param_bytes)) {
        int64_t resident = self->z.partition + self->working_set;
        if (resident > self->z.total) resident = self->z.total;
        out->param_bytes = (uint64_t)resident * self->z.element_size;
    }
    return LOOM_OK;
}

static loom_status zero3_begin_micro_batch(loom_sharding *self_, int32_t micro, int32_t last)
{
    (void)micro;
    zero3_sharding *self = (zero3_sharding *)self_;
    self->g.last_micro = last != 0;
    return LOOM_OK;
}

static loom_status zero3_grad_acquire(loom_sharding *self_, int64_t begin, int64_t end, void **memory)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    return zero_grads_acquire(&self->g, &self->z, begin, end, memory);
}

static loom_status zero3_grad_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    return zero_grads_release(&self->g, &self->z, begin, end);
}

static loom_status zero3_finish_grads(loom_sharding *self_)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    return zero_grads_finish(&self->g, &self->z);
}

static loom_status zero3_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    loom_status st = zero_check_range_index(&self->z, range_index);
    if (st != LOOM_OK) return st;
    *memory = self->g.owned;
    return LOOM_OK;
}

static loom_status zero3_zero_grads(loom_sharding *self_)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    zero_grads_clear(&self->g, &self->z);
    return LOOM_OK;
}

/* The owned ranges were updated where they lie; every other range is gathered when the model
 * next acquires it, so there is nothing to publish. */
static loom_status zero3_publish_params(loom_sharding *self_)
{
    (void)self_;
    return LOOM_OK;
}

static loom_status zero3_param_acquire(loom_sharding *self_, int64_t begin, int64_t end)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    const zero_base *z = &self->z;
    if (begin < 0 || end > z->total || begin >= end)
        return z->api->fail(z->host, LOOM_E_INVALID, "parameter range [%lld, %lld) outside [0, %lld)", (long long)begin,
                            (long long)end, (long long)z->total);
    for (size_t i = 0; i < self->n_held; i++)
        if (begin < self->held[i].end && self->held[i].begin < end)
            return z->api->fail(z->host, LOOM_E_INVALID,
                                "parameter range [%lld, %lld) acquired while [%lld, %lld), which overlaps it, is held",
                                (long long)begin, (long long)end, (long long)self->held[i].begin,
                                (long long)self->held[i].end);
    if (self->n_held == ZERO3_MAX_HELD)
        return z->api->fail(z->host, LOOM_E_INVALID, "more than %d parameter ranges held at once", ZERO3_MAX_HELD);
    /* Each owner's piece, from the owner: the same bytes on every rank. */
    for (int32_t r = 0; r < z->world; r++) {
        int64_t b = begin > z->ranges[r].begin ? begin : z->ranges[r].begin;
        int64_t e = end < z->ranges[r].end ? end : z->ranges[r].end;
        if (b >= e) continue;
        loom_status st =
            z->cv->broadcast(z->comm, z->params + (size_t)b * z->element_size, (size_t)(e - b), z->dtype, r, NULL);
        if (st != LOOM_OK) return st;
    }
    self->held[self->n_held++] = (loom_range){begin, end};
    return LOOM_OK;
}

static loom_status zero3_param_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    zero3_sharding *self = (zero3_sharding *)self_;
    size_t i = 0;
    while (i < self->n_held && !(self->held[i].begin == begin && self->held[i].end == end))
        i++;
    if (i == self->n_held)
        return self->z.api->fail(self->z.host, LOOM_E_INVALID,
                                 "release of parameter range [%lld, %lld), which was not acquired", (long long)begin,
                                 (long long)end);
    self->held[i] = self->held[--self->n_held];
    discard(self, begin, end);
    return LOOM_OK;
}

static const loom_sharding_vtable zero3_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = zero3_create,
    .destroy = zero3_destroy,
    .owned_ranges = zero_owned_ranges,
    .memory = zero3_memory,
    .begin_micro_batch = zero3_begin_micro_batch,
    .grad_acquire = zero3_grad_acquire,
    .grad_release = zero3_grad_release,
    .finish_grads = zero3_finish_grads,
    .owned_grads = zero3_owned_grads,
    .zero_grads = zero3_zero_grads,
    .publish_params = zero3_publish_params,
    .param_acquire = zero3_param_acquire,
    .param_release = zero3_param_release,
};

static const loom_plugin_desc zero3_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "zero3",
    .version = "1.0.0",
    .summary = "ZeRO stage 3: zero2 plus parameters kept only for the owned partition between uses, gathered "
               "range by range as the model reads them",
    .vtable = &zero3_vtable,
    .params = zero3_params,
};

LOOM_PLUGIN_EXPORT(&zero3_desc)
