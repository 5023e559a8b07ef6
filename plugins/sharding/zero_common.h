/*
 * zero_common.h - what ZeRO stages 1, 2 and 3 share (each plugin is its own .so, so this is
 * header-only): the keys they read alike, the partition of the flat buffer (block-aligned and
 * even, or at tensor boundaries for optimizers that need whole tensors: zero_whole.h), the
 * instance's life cycle, and the all-gather that puts every rank's updated partition back into
 * every rank's parameters.
 */
#ifndef LOOM_PLUGINS_ZERO_COMMON_H
#define LOOM_PLUGINS_ZERO_COMMON_H

#include <stdint.h>
#include <string.h>

#include <loom/optimizer.h>
#include <loom/kernels.h>
#include <loom/sharding.h>

#include "sharding_common.h"
#include "zero_whole.h"

/* Partitions cut the buffer at multiples of the host's gradient-norm block (16384 elements), so
 * every canonical norm piece has one owner and the norm is the same bits as DDP's. */
#define ZERO_ALIGN 16384

/* The zero_optimization keys both stages take with one meaning (each stage's table lists these
 * beside its own). */
#define ZERO_SHARED_PARAMS                                                                                       \
    {"allgather_bucket_size", LOOM_PARAM_INT, 0, "500000000",                                                   \
     "elements per rank gathered at once after the update (DeepSpeed's allgather_bucket_size)"},                \
        {"allgather_partitions", LOOM_PARAM_BOOL, 0, "true",                                                    \
         "gather updated partitions with all-gather (false: broadcasts; not supported)"},                       \
        {"load_from_fp32_weights", LOOM_PARAM_BOOL, 0, "true",                                                  \
         "resume from the fp32 master weights (the only copy in fp32 runs)"},                                   \
        {"elastic_checkpoint", LOOM_PARAM_BOOL, 0, "true", "checkpoints are per-rank shards of one flat layout"}

/* The keys of the stages that partition gradients (zero2, zero3). */
#define ZERO_GRADIENT_PARAMS                                                                                           \
    {"reduce_scatter", LOOM_PARAM_BOOL, 0, "true",                                                                     \
     "reduce each piece to its owner (false: all-reduce it, as DeepSpeed)"},                                           \
        {"reduce_bucket_size", LOOM_PARAM_INT, 0, "500000000",                                                         \
         "the pieces reduced are the ranges backward releases (a layer), so this is accepted as a bound only"},        \
        {"overlap_comm", LOOM_PARAM_BOOL, 0, "false",                                                                  \
         "reduce asynchronously while backward goes on (the arena space is reused once the reduction is done)"},       \
    {                                                                                                                  \
        "contiguous_gradients", LOOM_PARAM_BOOL, 0, "false",                                                           \
            "the owned gradients are one contiguous buffer either way"                                                 \
    }

/* DeepSpeed's zero_optimization keys as both stages read them; each stage refuses the values
 * that would mean something it does not do. */
typedef struct zero_options {
    int64_t allgather_bucket_size; /* elements, whatever the dtype (DeepSpeed's meaning) */
    int32_t allgather_partitions, reduce_scatter, overlap_comm, cpu_offload;
    size_t element_size;           /* bytes per parameter / gradient element            */
    int32_t whole_tensors;         /* the optimizer needs whole tensors: cut at tensor
                                      boundaries (zero_whole.h) instead of evenly          */
    int32_t publishes;             /* the stage all-gathers the partitions after the update
                                      (zero1, zero2; zero3 gathers on use): gather pieces  */
} zero_options;

/* The checks every stage shares (dtype, communicator, bucket sizes),
 * then the options. `stage` names the plugin in messages. */
static inline loom_status zero_read_options(loom_host *host, const loom_host_api *api, const loom_config *config,
                                            const loom_sharding_setup *setup, const char *stage, zero_options *o)
{
    size_t element = 0;
    loom_status st = sharding_element_size(host, api, setup->param_dtype, &element);
    if (st != LOOM_OK) return st;
    if (!setup->comm || !setup->comm_vtable) return api->fail(host, LOOM_E_INVALID, "%s needs a communicator", stage);
    *o = (zero_options){
        500000000, 1, 1, 0, 0, element, (setup->optimizer_flags & LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS) != 0, 1};
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

/* Whether the partitions can be all-gathered in place, straight into params: they are the even
 * cut (partition r starts at r P; whole-tensor partitions do not), one piece covers a partition
 * (allgather_bucket_size >= P, DeepSpeed's default 5e8 usually does) and the host's params
 * buffer has room for world P elements. Then no gather buffers exist at all. */
static inline int zero_gather_in_place(const loom_sharding_setup *setup, int64_t P, int64_t bucket, int whole)
{
    return !whole && LOOM_HAS_FIELD(setup, loom_sharding_setup, params_capacity) &&
           setup->params_capacity >= (int64_t)setup->world_size * P && bucket >= P;
}

/* All-gather the partitions ranges[0..world) of params (elements of `element` bytes, none
 * longer than P) in pieces of at most c elements per rank through send (c elements) and recv
 * (world c) scratch, or, with send NULL (zero_gather_in_place: partition r starts at r P), in
 * one all-gather inside params. Pure data movement: the bits each owner wrote are the bits
 * every rank gets. */
static inline loom_status zero_publish(loom_comm *comm, const loom_comm_vtable *cv, void *params_,
                                       const loom_range *ranges, int64_t P, int32_t rank, int32_t world, int64_t c,
                                       size_t element, uint32_t dtype, void *send_, void *recv_)
{
    uint8_t *params = params_, *send = send_;
    const uint8_t *recv = recv_;
    if (!send) return cv->all_gather(comm, params + (size_t)rank * (size_t)P * element, params, (size_t)P, dtype, NULL);
    for (int64_t at = 0; at < P; at += c) {
        int64_t n = P - at < c ? P - at : c;
        int64_t mine = ranges[rank].begin + at;
        int64_t have = ranges[rank].end - mine < n ? ranges[rank].end - mine : n;
        if (have < 0) have = 0;
        /* A partition shorter than P pads its last pieces with zeros; receivers drop them. */
        if (have > 0) memcpy(send, params + (size_t)mine * element, (size_t)have * element);
        if (have < n) memset(send + (size_t)have * element, 0, (size_t)(n - have) * element);
        loom_status st = cv->all_gather(comm, send, recv_, (size_t)n, dtype, NULL);
        if (st != LOOM_OK) return st;
        for (int32_t r = 0; r < world; r++) {
            int64_t theirs = ranges[r].begin + at;
            int64_t keep = ranges[r].end - theirs < n ? ranges[r].end - theirs : n;
            if (keep > 0)
                memcpy(params + (size_t)theirs * element, recv + (size_t)r * (size_t)n * element,
                       (size_t)keep * element);
        }
    }
    return LOOM_OK;
}

/* What zero1 and zero2 share: the run's layout, the partition and the all-gather of the updated
 * partitions (in place, or through send/recv pieces of gather_elements). */
typedef struct zero_base {
    loom_host *host;
    const loom_host_api *api;
    loom_comm *comm;
    const loom_comm_vtable *cv;
    int32_t rank, world;
    int64_t total, partition;     /* elements; P = partition, the longest of the ranges        */
    loom_range *ranges;           /* ranges[r] = partition of rank r                           */
    int32_t whole_tensors;        /* ranges cut at tensor boundaries (zero_whole.h)            */
    size_t element_size;          /* bytes per element of dtype                                */
    uint32_t dtype;               /* param_dtype: of params, gradients and every collective    */
    unsigned char *params;        /* the trainer's flat parameters (lent for the run)          */
    unsigned char *gather_send, *gather_recv; /* c and N c elements; NULL when in place         */
    int64_t gather_elements;      /* c; 0 when in place                                        */
} zero_base;

/* Fill b from the setup and allocate the ranges and gather pieces. On failure reports through
 * api->fail; the caller then releases b with zero_base_release. */
static inline loom_status zero_base_init(zero_base *b, loom_host *host, const loom_host_api *api,
                                         const loom_sharding_setup *setup, const zero_options *o)
{
    *b = (zero_base){.host = host, .api = api, .comm = setup->comm, .cv = setup->comm_vtable, .rank = setup->rank,
                     .world = setup->world_size, .total = setup->total_numel, .element_size = o->element_size,
                     .dtype = setup->param_dtype, .params = setup->params, .whole_tensors = o->whole_tensors};
    b->ranges = api->alloc(host, (size_t)b->world * sizeof *b->ranges, 0, LOOM_DEVICE_CPU, 0);
    if (!b->ranges) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    b->partition = b->whole_tensors
                       ? zero_whole_partition(setup->tensor_offsets, setup->n_tensors, b->world, b->ranges)
                       : zero_partition(b->total, b->world, b->ranges);
    /* In place (no gather buffers) when the host's params have room for every partition. */
    const int64_t bucket = o->allgather_bucket_size;
    if (!o->publishes || zero_gather_in_place(setup, b->partition, bucket, b->whole_tensors)) return LOOM_OK;
    b->gather_elements = bucket < b->partition ? bucket : b->partition;
    if (b->gather_elements < 1) b->gather_elements = 1;
    b->gather_send = api->alloc(host, (size_t)b->gather_elements * b->element_size, 0, setup->device, 0);
    b->gather_recv =
        api->alloc(host, (size_t)b->gather_elements * (size_t)b->world * b->element_size, 0, setup->device, 0);
    if (!b->gather_send || !b->gather_recv)
        return api->fail(host, LOOM_E_NOMEM, "out of memory for the all-gather pieces (%lld elements)",
                         (long long)b->gather_elements);
    return LOOM_OK;
}

static inline void zero_base_release(zero_base *b)
{
    b->api->free_memory(b->host, b->ranges);
    b->api->free_memory(b->host, b->gather_send);
    b->api->free_memory(b->host, b->gather_recv);
}

/* A stage's instance: `bytes` of host memory starting with its zero_base, zeroed, the base
 * filled from the setup. NULL (after api->fail, nothing left allocated) on failure. */
static inline void *zero_instance_new(loom_host *host, const loom_host_api *api, const loom_sharding_setup *setup,
                                      const zero_options *o, size_t bytes, loom_status *st)
{
    zero_base *b = api->alloc(host, bytes, 0, LOOM_DEVICE_CPU, 0);
    if (!b) {
        *st = api->fail(host, LOOM_E_NOMEM, "out of memory");
        return NULL;
    }
    memset(b, 0, bytes);
    if ((*st = zero_base_init(b, host, api, setup, o)) != LOOM_OK) {
        zero_base_release(b);
        api->free_memory(host, b);
        return NULL;
    }
    return b;
}

/* The last of a stage's destroy: the base's buffers and the instance itself. */
static inline void zero_instance_free(zero_base *b)
{
    loom_host *host = b->host;
    const loom_host_api *api = b->api;
    zero_base_release(b);
    api->free_memory(host, b);
}

/* Bytes of the all-gather pieces (0 in place), for the memory report. */
static inline uint64_t zero_base_gather_bytes(const zero_base *b)
{
    return (uint64_t)b->gather_elements * (uint64_t)(b->world + 1) * b->element_size;
}

static inline loom_status zero_base_publish(zero_base *b)
{
    return zero_publish(b->comm, b->cv, b->params, b->ranges, b->partition, b->rank, b->world, b->gather_elements,
                        b->element_size, b->dtype, b->gather_send, b->gather_recv);
}

/* owned_ranges of either stage (its instance starts with the zero_base). */
static inline loom_status zero_owned_ranges(const loom_sharding *self, int32_t rank, const loom_range **ranges,
                                            size_t *n_ranges)
{
    const zero_base *b = (const zero_base *)self;
    return sharding_one_range(b->host, b->api, b->ranges, b->world, rank, ranges, n_ranges);
}

/* A stage owns one range: owned_grads of any other index is a caller's bug. */
static inline loom_status zero_check_range_index(const zero_base *b, size_t range_index)
{
    return range_index == 0 ? LOOM_OK : b->api->fail(b->host, LOOM_E_INVALID, "no owned range %zu", range_index);
}

/* into[i] += piece[i] over n elements of dtype. 16-bit values add in fp32 and round once
 * (the host's kernels, the same rounding as the communicator's), as a 16-bit gradient
 * accumulated by the model would; adding a reduced piece to an owned gradient that is still
 * zero gives the piece's bits back (except -0, which becomes +0 as in fp32), so with one
 * micro-batch the result is the communicator's sum unchanged. */
static inline void zero_accumulate(const loom_kernels_api *k, void *into_, const void *piece_, int64_t n,
                                   uint32_t dtype)
{
    if (dtype == LOOM_DTYPE_F32) {
        float *into = into_;
        const float *piece = piece_;
        for (int64_t i = 0; i < n; i++) into[i] += piece[i];
        return;
    }
    float wide[2048];
    char *into = into_;
    const char *piece = piece_;
    for (int64_t i = 0; i < n; i += 2048) {
        const int64_t m = n - i < 2048 ? n - i : 2048;
        k->convert(wide, LOOM_DTYPE_F32, piece + (size_t)i * 2, dtype, m);
        k->accumulate_f32(into + (size_t)i * 2, dtype, wide, m);
    }
}

#endif
