/*
 * ddp.c - data parallelism as torch's DistributedDataParallel does it: every rank holds the
 * whole model and all of its gradients; gradients are summed over ranks in buckets of about
 * bucket_cap_mb, each all-reduce starting as soon as backward has released the bucket's
 * gradients (the last layer first), so communication overlaps the rest of backward. Under
 * gradient accumulation the buckets are only reduced on the last micro-batch. No division by
 * the world size: the loss seed already carries 1 / (targets of the global batch).
 *
 * A bucket is a contiguous piece of the flat gradient buffer reduced in place: models release
 * their layers last to first, and consecutive releases that meet (the new range ends where the
 * bucket begins) grow the bucket downwards; anything else closes it. Whatever was never
 * released is reduced by finish_grads, so a model that releases nothing is merely slower.
 *
 * set_reduction(0) (ABI 1.1) turns the reduction off for a step: the gradients then stay this
 * rank's own, for an optimizer that exchanges compressed state instead (1-bit Adam).
 *
 * Between the ranks of one machine the gradient buffer itself is the communicator's shared
 * memory when it lends some (comm.h alloc_shared, ABI 1.6), so each bucket's all-reduce sums the
 * ranks' copies in place instead of copying them through the transport
 * (docs/architecture.md#shared-buffers); shared_gradients=false keeps it private.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/sharding.h>
#include <loom/plugin.h>

#include "replicated.h"

#define DDP_MAX_PENDING 4096

typedef struct ddp_sharding {
    replicated_sharding base; /* first: the shared vtable members cast to it */
    loom_comm *comm;
    const loom_comm_vtable *cv;
    int32_t rank, world;
    loom_range owned;
    int64_t bucket_elements;
    int32_t last_micro;
    int32_t local; /* set_reduction(0): this step communicates nothing */
    /* The open bucket [lo, hi), empty when lo == hi. */
    int64_t lo, hi;
    /* Reduced (or in flight) ranges of this step and their requests, in issue order. */
    loom_range reduced[DDP_MAX_PENDING];
    loom_comm_request *requests[DDP_MAX_PENDING];
    size_t n_reduced;
    /* Overlap accounting (report_overlap): per step, the window from the first bucket's
     * all-reduce to the last one's completion, and the part of it finish_grads waited: this
     * rank's own wait, and the least wait of any rank (the rank that finished backward last
     * waits only for communication; the others also wait for it). */
    int32_t report_overlap;
    double first_launch, window_seconds, exposed_seconds, own_exposed_seconds;
    int64_t steps;
} ddp_sharding;

static const loom_param_spec ddp_params[] = {
    {"bucket_cap_mb", LOOM_PARAM_FLOAT, 0, "25", "gradient bucket size in MB (--ddp_bucket_cap_mb)"},
    {"report_overlap", LOOM_PARAM_BOOL, 0, "false", "log at the end how much of the all-reduce time backward hid"},
    {"shared_gradients", LOOM_PARAM_BOOL, 0, "true",
     "gradients in memory the communicator shares between the ranks of one machine, all-reduced in place"},
    {NULL, 0, 0, NULL, NULL},
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void ddp_destroy(loom_sharding *self_)
{
    ddp_sharding *self = (ddp_sharding *)self_;
    if (!self) return;
    if (self->report_overlap && self->steps > 0 && self->window_seconds > 0)
        self->base.api->log(
            self->base.host, LOOM_LOG_INFO,
            "%lld steps, all-reduce window %.1f ms/step, exposed wait %.1f ms/step: %.0f%% hidden behind backward "
            "(the exposed wait is the least of any rank's each step; this rank waited %.1f ms/step, its share of "
            "the ranks' skew included)",
            (long long)self->steps, 1e3 * self->window_seconds / (double)self->steps,
            1e3 * self->exposed_seconds / (double)self->steps,
            100.0 * (1.0 - self->exposed_seconds / self->window_seconds),
            1e3 * self->own_exposed_seconds / (double)self->steps);
    for (size_t i = 0; i < self->n_reduced; i++)
        if (self->requests[i]) self->cv->wait(self->comm, self->requests[i]);
    replicated_free(&self->base);
    self->base.api->free_memory(self->base.host, self);
}

static loom_status ddp_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                              const loom_sharding_setup *setup, loom_sharding **out)
{
    *out = NULL;
    size_t element = 0;
    loom_status st = sharding_element_size(host, api, setup->param_dtype, &element);
    if (st != LOOM_OK) return st;
    if (!setup->comm || !setup->comm_vtable) return api->fail(host, LOOM_E_INVALID, "ddp needs a communicator");
    double cap_mb = 25;
    api->cfg_f64(config, "bucket_cap_mb", &cap_mb);
    int32_t report = 0, shared = 1;
    api->cfg_bool(config, "report_overlap", &report);
    if ((st = loom_cfg_opt_bool(host, api, config, "shared_gradients", &shared)) != LOOM_OK) return st;
    if (!(cap_mb > 0)) return api->fail(host, LOOM_E_INVALID, "bucket_cap_mb must be > 0, got %g", cap_mb);
    ddp_sharding *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->comm = setup->comm;
    self->cv = setup->comm_vtable;
    self->rank = setup->rank;
    self->world = setup->world_size;
    self->owned.begin = 0;
    self->owned.end = setup->total_numel;
    self->report_overlap = report;
    self->bucket_elements = (int64_t)(cap_mb * 1024.0 * 1024.0 / (double)element);
    if (self->bucket_elements < 1) self->bucket_elements = 1;
    if ((st = replicated_init_shared(&self->base, host, api, setup, element, shared)) != LOOM_OK) {
        ddp_destroy((loom_sharding *)self);
        return st;
    }
    if (self->base.shared_comm && setup->rank == 0)
        api->log(host, LOOM_LOG_INFO, "gradients in memory shared by the ranks of this machine: all-reduced in place");
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status ddp_owned_ranges(const loom_sharding *self_, int32_t rank, const loom_range **ranges,
                                    size_t *n_ranges)
{
    const ddp_sharding *self = (const ddp_sharding *)self_;
    if (rank < 0 || rank >= self->world)
        return self->base.api->fail(self->base.host, LOOM_E_INVALID, "no rank %d in a world of %d", rank, self->world);
    *ranges = &self->owned; /* DDP replicates: every rank owns everything */
    *n_ranges = 1;
    return LOOM_OK;
}

static loom_status ddp_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const ddp_sharding *self = (const ddp_sharding *)self_;
    out->gradient_bytes = replicated_gradient_bytes(self_);
    /* Buckets are reduced in place in the gradient buffer, but an all-reduce needs room to
     * receive the other ranks' pieces of one: the communicator holds up to a bucket. With
     * shared gradients it holds none, and this rank instead touches its block of every peer's
     * copy: (world - 1) / world of the gradients, resident here too (the pages are shared,
     * not doubled, on the machine). */
    const int64_t bucket = self->bucket_elements < self->base.total ? self->bucket_elements : self->base.total;
    out->bucket_bytes = self->world > 1 ? (uint64_t)bucket * self->base.element_size : 0;
    if (self->base.shared_comm)
        out->bucket_bytes = out->gradient_bytes / (uint64_t)self->world * (uint64_t)(self->world - 1);
    return LOOM_OK;
}

/* Start the all-reduce of [lo, hi). */
static loom_status launch_one(ddp_sharding *self, int64_t lo, int64_t hi)
{
    if (self->n_reduced == DDP_MAX_PENDING)
        return self->base.api->fail(self->base.host, LOOM_E_INTERNAL, "more than %d gradient buckets in one step",
                                    DDP_MAX_PENDING);
    if (self->n_reduced == 0 && self->report_overlap) self->first_launch = now_seconds();
    size_t i = self->n_reduced++;
    self->reduced[i].begin = lo;
    self->reduced[i].end = hi;
    self->requests[i] = NULL;
    return self->cv->all_reduce(self->comm, self->base.grads + (size_t)lo * self->base.element_size, (size_t)(hi - lo),
                                self->base.dtype, LOOM_REDUCE_SUM, &self->requests[i]);
}

/* [lo, hi) in all-reduces of at most a bucket each: a range backward releases whole (the
 * embeddings) does not make the communicator hold a receive buffer larger than the bucket the
 * memory budget counts. The sums are element by element, so the split changes no bit. */
static loom_status launch(ddp_sharding *self, int64_t lo, int64_t hi)
{
    loom_status st = LOOM_OK;
    for (int64_t b = lo; b < hi && st == LOOM_OK; b += self->bucket_elements)
        st = launch_one(self, b, hi - b < self->bucket_elements ? hi : b + self->bucket_elements);
    return st;
}

static loom_status close_bucket(ddp_sharding *self)
{
    loom_status st = launch(self, self->lo, self->hi);
    self->lo = self->hi = 0;
    return st;
}

static loom_status ddp_begin_micro_batch(loom_sharding *self_, int32_t micro, int32_t last)
{
    ddp_sharding *self = (ddp_sharding *)self_;
    (void)micro;
    self->last_micro = last;
    self->lo = self->hi = 0;
    return LOOM_OK;
}

static loom_status ddp_grad_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    ddp_sharding *self = (ddp_sharding *)self_;
    if (self->local || !self->last_micro || begin >= end) return LOOM_OK; /* accumulate locally until the last */
    loom_status st = LOOM_OK;
    if (self->lo < self->hi && end != self->lo) st = close_bucket(self);
    if (st != LOOM_OK) return st;
    if (self->lo == self->hi) {
        self->lo = begin;
        self->hi = end;
    } else {
        self->lo = begin;
    }
    if (self->hi - self->lo >= self->bucket_elements) st = close_bucket(self);
    return st;
}

static int compare_ranges(const void *a, const void *b)
{
    const loom_range *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static loom_status ddp_finish_grads(loom_sharding *self_)
{
    ddp_sharding *self = (ddp_sharding *)self_;
    if (self->local) return LOOM_OK; /* nothing was launched: grad_release kept it all local */
    double finish_start = self->report_overlap ? now_seconds() : 0;
    int any_overlap = self->n_reduced > 0;
    loom_status st = close_bucket(self);
    /* Gaps nobody released: reduce them now, in flat order (the same on every rank). */
    size_t issued = self->n_reduced;
    loom_range sorted[DDP_MAX_PENDING];
    memcpy(sorted, self->reduced, issued * sizeof *sorted);
    qsort(sorted, issued, sizeof *sorted, compare_ranges);
    int64_t at = 0;
    for (size_t i = 0; st == LOOM_OK && i <= issued; i++) {
        int64_t next = i < issued ? sorted[i].begin : self->base.total;
        if (next > at) st = launch(self, at, next);
        if (i < issued && sorted[i].end > at) at = sorted[i].end;
    }
    for (size_t i = 0; i < self->n_reduced; i++) {
        loom_status w = self->requests[i] ? self->cv->wait(self->comm, self->requests[i]) : LOOM_OK;
        self->requests[i] = NULL;
        if (st == LOOM_OK) st = w;
    }
    if (self->report_overlap && any_overlap && st == LOOM_OK) {
        double end = now_seconds(), waited = end - finish_start, least = waited;
        /* One more (tiny) collective per step, only when reporting: every rank reports alike. */
        st = self->cv->all_reduce(self->comm, &least, 1, LOOM_DTYPE_F64, LOOM_REDUCE_MIN, NULL);
        self->window_seconds += end - self->first_launch;
        self->exposed_seconds += least;
        self->own_exposed_seconds += waited;
        self->steps++;
    }
    self->n_reduced = 0;
    return st;
}

static loom_status ddp_publish_params(loom_sharding *self)
{
    (void)self; /* every rank applied the same update to the same parameters */
    return LOOM_OK;
}

static loom_status ddp_set_reduction(loom_sharding *self_, int32_t enabled)
{
    ddp_sharding *self = (ddp_sharding *)self_;
    /* Switching mid-step would leave some buckets summed and others not. */
    if (self->n_reduced > 0 || self->lo < self->hi)
        return self->base.api->fail(self->base.host, LOOM_E_INVALID,
                                    "set_reduction called while gradients are being reduced");
    self->local = !enabled;
    return LOOM_OK;
}

static const loom_sharding_vtable ddp_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = ddp_create,
    .destroy = ddp_destroy,
    .owned_ranges = ddp_owned_ranges,
    .memory = ddp_memory,
    .begin_micro_batch = ddp_begin_micro_batch,
    .grad_acquire = replicated_grad_acquire,
    .grad_release = ddp_grad_release,
    .finish_grads = ddp_finish_grads,
    .owned_grads = replicated_owned_grads_whole,
    .zero_grads = replicated_zero_grads,
    .publish_params = ddp_publish_params,
    .set_reduction = ddp_set_reduction,
};

static const loom_plugin_desc ddp_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "ddp",
    .version = "1.0.0",
    .summary = "data parallel: replicated model, bucketed all-reduce overlapping backward",
    .vtable = &ddp_vtable,
    .params = ddp_params,
};

LOOM_PLUGIN_EXPORT(&ddp_desc)
