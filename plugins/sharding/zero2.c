/*
 * zero2.c - ZeRO stage 2 (DeepSpeed's P_os+g): zero1's partition of optimizer states and master
 * weights, plus gradient partitioning: a rank keeps only its own partition of the gradients
 * (accumulated over the micro-batches, one contiguous buffer). During backward the model's
 * gradients land in a scratch arena sized before step 1 from the model's max_grad_elements;
 * as soon as backward releases a range, each owner's piece of it is reduced to that owner (as
 * DeepSpeed stage 2 does, on every micro-batch) and the arena space is reused. After the update
 * the partitions are all-gathered back, as in zero1. An optimizer that needs whole tensors
 * (Adafactor) gets zero1's whole-tensor partitions (zero_whole.h); nothing below assumes even ones.
 *
 * Sums are the communicator's rank-order sums, so with one micro-batch per step zero2's gradients
 * are the same bits as ddp's. Under accumulation DeepSpeed's order (sum over ranks per
 * micro-batch, then over micro-batches) differs from ddp's (micro-batches first, ranks at the
 * end): the results agree to round-off, not bit for bit. With 16-bit gradients the
 * communicator sums in fp32 and rounds once, and each micro-batch's reduced piece is added to
 * the 16-bit partition in fp32 with one more rounding (zero_accumulate), so under accumulation
 * zero2 rounds once per micro-batch where ddp's model rounds once per local accumulation.
 *
 * cpu_offload (ZeRO-Offload, zero_offload.h): the owned partition is stepped in host memory.
 * On the last micro-batch each finished piece of the gradient partition is copied to the host
 * as its reduction completes; the host binds master weights and optimizer states to host memory
 * (host_params) and the updated partition goes back to the device before the all-gather. The
 * copies move bits, so offload changes where the step runs, never its result.
 */
#include <string.h>

#include <loom/optimizer.h>
#include <loom/sharding.h>
#include <loom/plugin.h>

#include "sharding_common.h"

#include "zero_common.h"
#include "zero_offload.h"

#define ZERO2_MAX_HELD 64
#define LOOM_ZERO2_MAX_WORLD 256

typedef struct held_range {
    int64_t arena_offset, begin, end; /* arena [arena_offset, + end - begin) holds [begin, end) */
    int32_t released;                 /* reductions in flight (overlap_comm)                  */
    uint64_t sequence;                /* release order: completions add in this order         */
    int32_t owner_piece;              /* which of the pieces below is this rank's, or -1      */
    loom_comm_request *requests[LOOM_ZERO2_MAX_WORLD];
    int64_t own_begin, own_end;       /* this rank's piece of [begin, end)                     */
} held_range;

typedef struct zero2_sharding {
    zero_base z;                  /* first: the layout, partition and all-gather              */
    const loom_kernels_api *kernels; /* the host's: 16-bit accumulation (zero_accumulate)     */
    unsigned char *owned;         /* P elements: this rank's accumulated gradients            */
    unsigned char *arena;         /* max_grad_elements: gradients backward is producing       */
    int64_t arena_elements;       /* offsets into the arena below are in elements too         */
    held_range held[ZERO2_MAX_HELD]; /* sorted by arena_offset                               */
    size_t n_held;
    uint64_t releases;            /* release counter, for the order of completions            */
    int32_t use_reduce;           /* reduce_scatter true: reduce to owner; false: all-reduce  */
    int32_t overlap;              /* overlap_comm: reductions run while backward goes on      */
    int32_t offload;              /* cpu_offload: the step's partition lives on the host      */
    int32_t last_micro;           /* this micro-batch ends the accumulation                   */
    zero_offload host_copy;       /* cpu_offload's host copies and copies in flight           */
} zero2_sharding;

static const loom_param_spec zero2_params[] = {
    ZERO_SHARED_PARAMS,
    {"reduce_scatter", LOOM_PARAM_BOOL, 0, "true",
     "reduce each piece to its owner (false: all-reduce it, as DeepSpeed)"},
    {"reduce_bucket_size", LOOM_PARAM_INT, 0, "500000000",
     "the pieces reduced are the ranges backward releases (a layer), so this is accepted as a bound only"},
    {"overlap_comm", LOOM_PARAM_BOOL, 0, "false",
     "reduce asynchronously while backward goes on (the arena space is reused once the reduction is done)"},
    {"contiguous_gradients", LOOM_PARAM_BOOL, 0, "false", "the owned gradients are one contiguous buffer either way"},
    {"cpu_offload", LOOM_PARAM_BOOL, 0, "false",
     "ZeRO-Offload: master weights, optimizer states and the step on the host CPU; the gradient partition copied "
     "to the host during backward"},
    {NULL, 0, 0, NULL, NULL},
};

static void zero2_destroy(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    if (!self) return;
    loom_host *host = self->z.host;
    const loom_host_api *api = self->z.api;
    for (size_t i = 0; i < self->n_held; i++)
        for (int32_t r = 0; r < self->z.world; r++)
            if (self->held[i].requests[r]) self->z.cv->wait(self->z.comm, self->held[i].requests[r]);
    zero_offload_release(&self->host_copy);
    api->free_memory(host, self->owned);
    api->free_memory(host, self->arena);
    zero_instance_free(&self->z);
}

static loom_status zero2_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                const loom_sharding_setup *setup, loom_sharding **out)
{
    *out = NULL;
    zero_options o;
    loom_status st = zero_read_options(host, api, config, setup, "zero2", &o);
    if (st != LOOM_OK) return st;
    if (setup->world_size > LOOM_ZERO2_MAX_WORLD)
        return api->fail(host, LOOM_E_UNSUPPORTED, "zero2 supports up to %d ranks", LOOM_ZERO2_MAX_WORLD);
    const loom_kernels_api *kernels = api->service(host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (setup->param_dtype != LOOM_DTYPE_F32 &&
        !(LOOM_HAS(kernels, loom_kernels_api, accumulate_f32) && kernels->convert))
        return api->fail(host, LOOM_E_UNSUPPORTED, "16-bit gradients need the host's 16-bit kernels (ABI 1.1)");
    zero2_sharding *self = zero_instance_new(host, api, setup, &o, sizeof *self, &st);
    if (!self) return st;
    self->kernels = kernels;
    self->use_reduce = o.reduce_scatter;
    self->overlap = o.overlap_comm;
    self->arena_elements = setup->max_grad_elements > 0 && setup->max_grad_elements < setup->total_numel
                               ? setup->max_grad_elements
                               : setup->total_numel;
    const size_t element = self->z.element_size;
    self->owned = api->alloc(host, (size_t)self->z.partition * element + 1, 0, setup->device, 0);
    self->arena = api->alloc(host, (size_t)self->arena_elements * element + 1, 0, setup->device, 0);
    if (!self->owned || !self->arena) {
        zero2_destroy((loom_sharding *)self);
        return api->fail(host, LOOM_E_NOMEM, "out of memory for the gradient partition and arena");
    }
    memset(self->owned, 0, (size_t)self->z.partition * element);
    self->offload = o.cpu_offload;
    if (self->offload) {
        const loom_range *mine = &self->z.ranges[self->z.rank];
        if ((st = zero_offload_init(&self->host_copy, host, api, setup->params, mine->begin, mine->end - mine->begin,
                                    element)) != LOOM_OK) {
            zero2_destroy((loom_sharding *)self);
            return st;
        }
        api->log(host, LOOM_LOG_DEBUG, "cpu_offload: %lld elements of this rank's partition stepped in %s host memory",
                 (long long)(mine->end - mine->begin), self->host_copy.backend ? "pinned" : "ordinary");
    }
    *out = (loom_sharding *)self;
    return LOOM_OK;
}

static loom_status zero2_memory(const loom_sharding *self_, loom_sharding_memory *out)
{
    const zero2_sharding *self = (const zero2_sharding *)self_;
    out->gradient_bytes = (uint64_t)self->z.partition * self->z.element_size;
    out->bucket_bytes = (uint64_t)self->arena_elements * self->z.element_size + zero_base_gather_bytes(&self->z);
    if (LOOM_HAS_FIELD(out, loom_sharding_memory, host_bytes))
        out->host_bytes = self->offload ? zero_offload_bytes(&self->host_copy) : 0;
    return LOOM_OK;
}

static loom_status zero2_begin_micro_batch(loom_sharding *self_, int32_t micro, int32_t last)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    self->last_micro = last != 0;
    if (micro == 0 && self->offload) zero_offload_begin_step(&self->host_copy);
    return LOOM_OK;
}

/* Wait for the reductions of released range `slot`, add this rank's piece into its partition
 * and give the arena space back. */
static loom_status complete(zero2_sharding *self, size_t slot)
{
    held_range *h = &self->held[slot];
    loom_status st = LOOM_OK;
    for (int32_t r = 0; r < self->z.world; r++) {
        if (!h->requests[r]) continue;
        loom_status w = self->z.cv->wait(self->z.comm, h->requests[r]);
        h->requests[r] = NULL;
        if (st == LOOM_OK) st = w;
    }
    if (st == LOOM_OK && h->own_end > h->own_begin) {
        size_t element = self->z.element_size;
        const unsigned char *piece = self->arena + (size_t)(h->arena_offset + (h->own_begin - h->begin)) * element;
        unsigned char *into = self->owned + (size_t)(h->own_begin - self->z.ranges[self->z.rank].begin) * element;
        zero_accumulate(self->kernels, into, piece, h->own_end - h->own_begin, self->z.dtype);
        /* Final for this step: on its way to the host while backward goes on. */
        if (self->offload && self->last_micro)
            st = zero_offload_grad_piece(&self->host_copy, self->owned, h->own_begin, h->own_end);
    }
    memmove(&self->held[slot], &self->held[slot + 1], (self->n_held - slot - 1) * sizeof *self->held);
    self->n_held--;
    return st;
}

/* Complete released ranges in the order they were released, so a partition's sum over
 * micro-batches is added in the same order with or without overlap_comm. */
static loom_status complete_released(zero2_sharding *self)
{
    for (;;) {
        size_t oldest = self->n_held;
        for (size_t slot = 0; slot < self->n_held; slot++)
            if (self->held[slot].released &&
                (oldest == self->n_held || self->held[slot].sequence < self->held[oldest].sequence))
                oldest = slot;
        if (oldest == self->n_held) return LOOM_OK;
        loom_status st = complete(self, oldest);
        if (st != LOOM_OK) return st;
    }
}

/* First fit in the arena among the held ranges (sorted by arena offset). */
static loom_status zero2_grad_acquire(loom_sharding *self_, int64_t begin, int64_t end, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    loom_status st = sharding_check_range(self->z.host, self->z.api, begin, end, self->z.total);
    if (st != LOOM_OK) return st;
    int64_t need = end - begin, at = 0;
    size_t slot = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        at = 0;
        for (slot = 0; slot < self->n_held; slot++) {
            if (self->held[slot].arena_offset - at >= need) break;
            at = self->held[slot].arena_offset + (self->held[slot].end - self->held[slot].begin);
        }
        if (self->arena_elements - at >= need && self->n_held < ZERO2_MAX_HELD) break;
        /* No room: the ranges still being reduced must finish first. */
        st = complete_released(self);
        if (st != LOOM_OK) return st;
        if (attempt == 1)
            return self->z.api->fail(self->z.host, LOOM_E_INVALID,
                                   "backward holds more gradients at once than the model's max_grad_elements (%lld)",
                                   (long long)self->arena_elements);
    }
    memmove(&self->held[slot + 1], &self->held[slot], (self->n_held - slot) * sizeof *self->held);
    memset(&self->held[slot], 0, sizeof self->held[slot]);
    self->held[slot].arena_offset = at;
    self->held[slot].begin = begin;
    self->held[slot].end = end;
    self->n_held++;
    memset(self->arena + (size_t)at * self->z.element_size, 0, (size_t)need * self->z.element_size);
    *memory = self->arena + (size_t)at * self->z.element_size;
    return LOOM_OK;
}

/* Each owner's piece of the released range goes to it now; the owner adds it to its partition
 * when the reduction is done (at once, or later with overlap_comm). */
static loom_status zero2_grad_release(loom_sharding *self_, int64_t begin, int64_t end)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    size_t slot = 0;
    while (slot < self->n_held &&
           !(self->held[slot].begin == begin && self->held[slot].end == end && !self->held[slot].released))
        slot++;
    if (slot == self->n_held)
        return self->z.api->fail(self->z.host, LOOM_E_INVALID, "release of [%lld, %lld), which was not acquired",
                               (long long)begin, (long long)end);
    held_range *h = &self->held[slot];
    unsigned char *grads = self->arena + (size_t)h->arena_offset * self->z.element_size;
    h->released = 1;
    h->sequence = self->releases++;
    loom_status st = LOOM_OK;
    for (int32_t r = 0; r < self->z.world && st == LOOM_OK; r++) {
        int64_t b = begin > self->z.ranges[r].begin ? begin : self->z.ranges[r].begin;
        int64_t e = end < self->z.ranges[r].end ? end : self->z.ranges[r].end;
        if (b >= e) continue;
        if (r == self->z.rank) h->own_begin = b, h->own_end = e;
        unsigned char *piece = grads + (size_t)(b - begin) * self->z.element_size;
        loom_comm_request **request = self->overlap ? &h->requests[r] : NULL;
        st =
            self->use_reduce
                ? self->z.cv->reduce(self->z.comm, piece, (size_t)(e - b), self->z.dtype, LOOM_REDUCE_SUM, r, request)
                : self->z.cv->all_reduce(self->z.comm, piece, (size_t)(e - b), self->z.dtype, LOOM_REDUCE_SUM, request);
    }
    if (st != LOOM_OK) return st;
    return self->overlap ? LOOM_OK : complete(self, slot);
}

static loom_status zero2_finish_grads(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    loom_status st = complete_released(self);
    if (st == LOOM_OK && self->n_held)
        return self->z.api->fail(self->z.host, LOOM_E_INVALID, "%zu gradient ranges were acquired and never released",
                               self->n_held);
    if (st == LOOM_OK && self->offload) st = zero_offload_finish(&self->host_copy, self->owned);
    return st;
}

static loom_status zero2_owned_grads(loom_sharding *self_, size_t range_index, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    loom_status st = zero_check_range_index(&self->z, range_index);
    if (st != LOOM_OK) return st;
    *memory = self->offload ? self->host_copy.grads : self->owned;
    return LOOM_OK;
}

static loom_status zero2_zero_grads(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    memset(self->owned, 0, (size_t)self->z.partition * self->z.element_size);
    return LOOM_OK;
}

static loom_status zero2_publish_params(loom_sharding *self_)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    if (self->offload) {
        loom_status st = zero_offload_publish(&self->host_copy, self->z.params);
        if (st != LOOM_OK) return st;
    }
    return zero_base_publish(&self->z);
}

static loom_status zero2_host_params(loom_sharding *self_, void **memory)
{
    zero2_sharding *self = (zero2_sharding *)self_;
    *memory = self->offload ? self->host_copy.params : NULL;
    return LOOM_OK;
}

static const loom_sharding_vtable zero2_vtable = {
    LOOM_HEADER_INIT(loom_sharding_vtable),
    .create = zero2_create,
    .destroy = zero2_destroy,
    .owned_ranges = zero_owned_ranges,
    .memory = zero2_memory,
    .begin_micro_batch = zero2_begin_micro_batch,
    .grad_acquire = zero2_grad_acquire,
    .grad_release = zero2_grad_release,
    .finish_grads = zero2_finish_grads,
    .owned_grads = zero2_owned_grads,
    .zero_grads = zero2_zero_grads,
    .publish_params = zero2_publish_params,
    .host_params = zero2_host_params,
};

static const loom_plugin_desc zero2_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SHARDING,
    .name = "zero2",
    .version = "1.0.0",
    .summary =
        "ZeRO stage 2: zero1 plus gradients kept only for the owned partition, reduced to owners during backward",
    .vtable = &zero2_vtable,
    .params = zero2_params,
};

LOOM_PLUGIN_EXPORT(&zero2_desc)
