/*
 * zero_grads.h - the gradient partition of ZeRO stages 2 and 3 (each plugin is its own .so, so
 * this is header-only): a rank keeps only its own partition of the gradients (accumulated over
 * the micro-batches, one contiguous buffer). During backward the model's gradients land in a
 * scratch arena sized before step 1 from the model's max_grad_elements; as soon as backward
 * releases a range, each owner's piece of it is reduced to that owner (as DeepSpeed stages 2
 * and 3 do, on every micro-batch) and the arena space is reused.
 *
 * Sums are the communicator's rank-order sums, so with one micro-batch per step the gradients
 * are the same bits as ddp's. Under accumulation DeepSpeed's order (sum over ranks per
 * micro-batch, then over micro-batches) differs from ddp's (micro-batches first, ranks at the
 * end): the results agree to round-off, not bit for bit. With 16-bit gradients the
 * communicator sums in fp32 and rounds once, and each micro-batch's reduced piece is added to
 * the 16-bit partition in fp32 with one more rounding (zero_accumulate).
 */
#ifndef LOOM_PLUGINS_ZERO_GRADS_H
#define LOOM_PLUGINS_ZERO_GRADS_H

#include <string.h>

#include "zero_common.h"
#include "zero_offload.h"

#define ZERO_GRADS_MAX_HELD 64
#define ZERO_GRADS_MAX_WORLD 256

typedef struct zero_held_range {
    int64_t arena_offset, begin, end; /* arena [arena_offset, + end - begin) holds [begin, end) */
    int32_t released;                 /* reductions in flight (overlap_comm)                  */
    uint64_t sequence;                /* release order: completions add in this order         */
    loom_comm_request *requests[ZERO_GRADS_MAX_WORLD];
    int64_t own_begin, own_end; /* this rank's piece of [begin, end)                     */
} zero_held_range;

typedef struct zero_grads {
    const loom_kernels_api *kernels;           /* the host's: 16-bit accumulation (zero_accumulate)     */
    unsigned char *owned;                      /* P elements: this rank's accumulated gradients            */
    unsigned char *arena;                      /* max_grad_elements: gradients backward is producing       */
    int64_t arena_elements;                    /* offsets into the arena below are in elements too         */
    zero_held_range held[ZERO_GRADS_MAX_HELD]; /* sorted by arena_offset                      */
    size_t n_held;
    uint64_t releases;     /* release counter, for the order of completions            */
    int32_t use_reduce;    /* reduce_scatter true: reduce to owner; false: all-reduce  */
    int32_t overlap;       /* overlap_comm: reductions run while backward goes on      */
    int32_t last_micro;    /* this micro-batch ends the accumulation                   */
    zero_offload *offload; /* zero2's cpu_offload: each final piece goes to the host as
                              its reduction completes; NULL without offload            */
} zero_grads;

/* The checks and buffers of a stage that partitions gradients. On failure reports through
 * api->fail; the caller then releases g with zero_grads_free. */
static inline loom_status zero_grads_init(zero_grads *g, const zero_base *z, const loom_sharding_setup *setup,
                                          const zero_options *o, const char *stage)
{
    loom_host *host = z->host;
    const loom_host_api *api = z->api;
    if (setup->world_size > ZERO_GRADS_MAX_WORLD)
        return api->fail(host, LOOM_E_UNSUPPORTED, "%s supports up to %d ranks", stage, ZERO_GRADS_MAX_WORLD);
    g->kernels = api->service(host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (setup->param_dtype != LOOM_DTYPE_F32 &&
        !(LOOM_HAS(g->kernels, loom_kernels_api, accumulate_f32) && g->kernels->convert))
        return api->fail(host, LOOM_E_UNSUPPORTED, "16-bit gradients need the host's 16-bit kernels (ABI 1.1)");
    g->use_reduce = o->reduce_scatter;
    g->overlap = o->overlap_comm;
    g->arena_elements = setup->max_grad_elements > 0 && setup->max_grad_elements < setup->total_numel
                            ? setup->max_grad_elements
                            : setup->total_numel;
    const size_t element = z->element_size;
    g->owned = api->alloc(host, (size_t)z->partition * element + 1, 0, setup->device, 0);
    g->arena = api->alloc(host, (size_t)g->arena_elements * element + 1, 0, setup->device, 0);
    if (!g->owned || !g->arena)
        return api->fail(host, LOOM_E_NOMEM, "out of memory for the gradient partition and arena");
    memset(g->owned, 0, (size_t)z->partition * element);
    return LOOM_OK;
}

/* Waits for what is still in flight (an aborted step) and frees the buffers. */
static inline void zero_grads_free(zero_grads *g, const zero_base *z)
{
    for (size_t i = 0; i < g->n_held; i++)
        for (int32_t r = 0; r < z->world; r++)
            if (g->held[i].requests[r]) z->cv->wait(z->comm, g->held[i].requests[r]);
    z->api->free_memory(z->host, g->owned);
    z->api->free_memory(z->host, g->arena);
}

/* Wait for the reductions of released range `slot`, add this rank's piece into its partition
 * and give the arena space back. */
static inline loom_status zero_grads_complete(zero_grads *g, const zero_base *z, size_t slot)
{
    zero_held_range *h = &g->held[slot];
    loom_status st = LOOM_OK;
    for (int32_t r = 0; r < z->world; r++) {
        if (!h->requests[r]) continue;
        loom_status w = z->cv->wait(z->comm, h->requests[r]);
        h->requests[r] = NULL;
        if (st == LOOM_OK) st = w;
    }
    if (st == LOOM_OK && h->own_end > h->own_begin) {
        size_t element = z->element_size;
        const unsigned char *piece = g->arena + (size_t)(h->arena_offset + (h->own_begin - h->begin)) * element;
        unsigned char *into = g->owned + (size_t)(h->own_begin - z->ranges[z->rank].begin) * element;
        zero_accumulate(g->kernels, into, piece, h->own_end - h->own_begin, z->dtype);
        /* Final for this step: on its way to the host while backward goes on. */
        if (g->offload && g->last_micro) st = zero_offload_grad_piece(g->offload, g->owned, h->own_begin, h->own_end);
    }
    memmove(&g->held[slot], &g->held[slot + 1], (g->n_held - slot - 1) * sizeof *g->held);
    g->n_held--;
    return st;
}

/* Complete released ranges in the order they were released, so a partition's sum over
 * micro-batches is added in the same order with or without overlap_comm. */
static inline loom_status zero_grads_complete_released(zero_grads *g, const zero_base *z)
{
    for (;;) {
        size_t oldest = g->n_held;
        for (size_t slot = 0; slot < g->n_held; slot++)
            if (g->held[slot].released && (oldest == g->n_held || g->held[slot].sequence < g->held[oldest].sequence))
                oldest = slot;
        if (oldest == g->n_held) return LOOM_OK;
        loom_status st = zero_grads_complete(g, z, oldest);
        if (st != LOOM_OK) return st;
    }
}

/* grad_acquire: first fit in the arena among the held ranges (sorted by arena offset). */
static inline loom_status zero_grads_acquire(zero_grads *g, const zero_base *z, int64_t begin, int64_t end,
                                             void **memory)
{
    loom_status st = sharding_check_range(z->host, z->api, begin, end, z->total);
    if (st != LOOM_OK) return st;
    int64_t need = end - begin, at = 0;
    size_t slot = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        at = 0;
        for (slot = 0; slot < g->n_held; slot++) {
            if (g->held[slot].arena_offset - at >= need) break;
            at = g->held[slot].arena_offset + (g->held[slot].end - g->held[slot].begin);
        }
        if (g->arena_elements - at >= need && g->n_held < ZERO_GRADS_MAX_HELD) break;
        /* No room: the ranges still being reduced must finish first. */
        st = zero_grads_complete_released(g, z);
        if (st != LOOM_OK) return st;
        if (attempt == 1)
            return z->api->fail(z->host, LOOM_E_INVALID,
                                "backward holds more gradients at once than the model's max_grad_elements (%lld)",
                                (long long)g->arena_elements);
    }
    memmove(&g->held[slot + 1], &g->held[slot], (g->n_held - slot) * sizeof *g->held);
    memset(&g->held[slot], 0, sizeof g->held[slot]);
    g->held[slot].arena_offset = at;
    g->held[slot].begin = begin;
    g->held[slot].end = end;
    g->n_held++;
    memset(g->arena + (size_t)at * z->element_size, 0, (size_t)need * z->element_size);
    *memory = g->arena + (size_t)at * z->element_size;
    return LOOM_OK;
}

/* grad_release: each owner's piece of the released range goes to it now; the owner adds it to
 * its partition when the reduction is done (at once, or later with overlap_comm). */
static inline loom_status zero_grads_release(zero_grads *g, const zero_base *z, int64_t begin, int64_t end)
{
    size_t slot = 0;
    while (slot < g->n_held && !(g->held[slot].begin == begin && g->held[slot].end == end && !g->held[slot].released))
        slot++;
    if (slot == g->n_held)
        return z->api->fail(z->host, LOOM_E_INVALID, "release of [%lld, %lld), which was not acquired",
                            (long long)begin, (long long)end);
    zero_held_range *h = &g->held[slot];
    unsigned char *grads = g->arena + (size_t)h->arena_offset * z->element_size;
    h->released = 1;
    h->sequence = g->releases++;
    loom_status st = LOOM_OK;
    for (int32_t r = 0; r < z->world && st == LOOM_OK; r++) {
        int64_t b = begin > z->ranges[r].begin ? begin : z->ranges[r].begin;
        int64_t e = end < z->ranges[r].end ? end : z->ranges[r].end;
        if (b >= e) continue;
        if (r == z->rank) h->own_begin = b, h->own_end = e;
        unsigned char *piece = grads + (size_t)(b - begin) * z->element_size;
        loom_comm_request **request = g->overlap ? &h->requests[r] : NULL;
        st = g->use_reduce ? z->cv->reduce(z->comm, piece, (size_t)(e - b), z->dtype, LOOM_REDUCE_SUM, r, request)
                           : z->cv->all_reduce(z->comm, piece, (size_t)(e - b), z->dtype, LOOM_REDUCE_SUM, request);
    }
    if (st != LOOM_OK) return st;
    return g->overlap ? LOOM_OK : zero_grads_complete(g, z, slot);
}

/* finish_grads: every reduction done; the owned partition is the step's gradient. */
static inline loom_status zero_grads_finish(zero_grads *g, const zero_base *z)
{
    loom_status st = zero_grads_complete_released(g, z);
    if (st == LOOM_OK && g->n_held)
        return z->api->fail(z->host, LOOM_E_INVALID, "%zu gradient ranges were acquired and never released", g->n_held);
    return st;
}

static inline void zero_grads_clear(zero_grads *g, const zero_base *z)
{
    memset(g->owned, 0, (size_t)z->partition * z->element_size);
}

/* The memory report's gradient and bucket bytes. */
static inline void zero_grads_memory(const zero_grads *g, const zero_base *z, loom_sharding_memory *out)
{
    out->gradient_bytes = (uint64_t)z->partition * z->element_size;
    out->bucket_bytes = (uint64_t)g->arena_elements * z->element_size + zero_base_gather_bytes(z);
}

#endif
