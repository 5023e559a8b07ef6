/*
 * test_sharding_dtypes.c - the sharding plugins (ddp, zero1, zero2, zero3, sharded_ddp) with f32,
 * f16 and bf16 parameters and gradients, between real rank processes over the gloo communicator.
 *
 * The parent forks 2 and then 3 ranks on 127.0.0.1. Each rank plays the model: for every
 * plugin and dtype it acquires the gradients of each tensor, last to first as backward does,
 * writes its own values, releases them, and then checks
 *   - the owned gradients after finish_grads against a sum this test computes itself: in fp32,
 *     in rank order, rounded once to the dtype (what comm.h's canonical order and the gloo
 *     plugin promise); the values are chosen so that a 16-bit running sum would differ;
 *   - that ddp, zero1, zero2 (with and without overlap_comm, reduce or all-reduce) and
 *     sharded_ddp give the very same bits on every owned element;
 *   - a second step after zero_grads, and gradient accumulation over two micro-batches (the
 *     test accumulates like a model: fp32 add, one rounding; zero2 reduces every micro-batch);
 *   - publish_params: every rank writes only its owned ranges (garbage elsewhere), and after
 *     the publish every rank holds the owners' bits everywhere;
 *   - the memory report: gradient and bucket bytes scale with the element size;
 *   - zero2 with cpu_offload (ZeRO-Offload's bookkeeping on a CPU run): host_params starts as
 *     the owned range of params, owned_grads() is a host copy holding the same bits as
 *     without offload, a piece the last micro-batch did not release still reaches the copy,
 *     publish_params() takes the owned values from the host copy, and host_bytes counts both
 *     copies;
 *   - zero1 and zero2 for an optimizer that needs whole tensors (LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS):
 *     the partitions are runs of whole tensors of uneven lengths (worked out by hand below), and
 *     the reductions, the all-gather (never in place) and offload give the same bits as above;
 *   - zero3 (gradients as zero2's, the same bits): publish_params leaves every rank's params as
 *     they are; a range acquired tensor by tensor (param_acquire) then holds the owners' bits
 *     on every rank, and after param_release the pages of the ranges a rank does not own read
 *     as zeros while its own range keeps its values; an overlapping acquire and the release of
 *     a range never acquired are refused; the memory report's param_bytes is the partition plus
 *     the largest gradient range, and cpu_offload is refused;
 *   - an unsupported dtype is refused with a message naming it.
 * Every process has a hard alarm(), so a hang fails the test instead of blocking ctest.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/comm.h>
#include <loom/optimizer.h>
#include <loom/sharding.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"
#include "store.h"
#include "test_util.h"
#include "test_ranks.h"


/* A flat buffer of 5 tensors, one of them a single element; zero1/zero2 cut it at multiples of
 * 16384 elements, so tensors straddle partitions and the last partition is short (2 ranks) or
 * the partitions are uneven (3 ranks). */
#define TOTAL 40000
#define N_TENSORS 5
static const int64_t offsets[N_TENSORS + 1] = {0, 1000, 17000, 17001, 30000, TOTAL};
#define LARGEST_TENSOR 16000
#define GATHER_BUCKET 5000 /* elements: several all-gather pieces, the last one padded */
#define ZERO_ALIGN 16384
/* The whole-tensor partitions (tensor sizes 1000, 16000, 1, 12999, 10000), the longest as short
 * as contiguous runs allow: 2 ranks [0, 17001) [17001, 40000); 3 ranks [0, 17000) [17000, 30000)
 * [30000, 40000). */
static const int64_t whole_cuts[4][4] = {{0}, {0}, {0, 17001, TOTAL}, {0, 17000, 30000, TOTAL}};

/* ---------------------------------------------------------------------------------------- */
/* Values, encodings and the expected sums (independent of the plugins' own conversions)     */


static const char *dtype_label(uint32_t dtype)
{
    return dtype == LOOM_DTYPE_F32 ? "f32" : dtype == LOOM_DTYPE_F16 ? "f16" : "bf16";
}

/* Round a finite normal-range value to `bits` significant bits, to nearest even. */
static float round_to_bits(float x, int bits)
{
    if (x == 0.0f) return x;
    int e;
    frexpf(x, &e);
    const float ulp = ldexpf(1.0f, e - bits);
    return nearbyintf(x / ulp) * ulp;
}

static float round_to_dtype(float x, uint32_t dtype)
{
    return dtype == LOOM_DTYPE_F32 ? x : round_to_bits(x, dtype == LOOM_DTYPE_F16 ? 11 : 8);
}

/* Exact encodings of values already representable in the dtype (normal range or zero). */
static void store_value(void *buffer, int64_t i, float x, uint32_t dtype)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t h;
    if (dtype == LOOM_DTYPE_F32) {
        memcpy((uint8_t *)buffer + 4 * i, &x, 4);
        return;
    }
    if (dtype == LOOM_DTYPE_BF16) {
        h = (uint16_t)(u >> 16);
    } else if ((u & 0x7fffffffu) == 0) {
        h = (uint16_t)((u >> 16) & 0x8000u);
    } else {
        const int32_t exponent = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
        h = (uint16_t)(((u >> 16) & 0x8000u) | ((uint32_t)exponent << 10) | ((u >> 13) & 0x3ffu));
    }
    memcpy((uint8_t *)buffer + 2 * i, &h, 2);
}

/* Rank 0 holds a large value, the others small ones that a 16-bit (or, for f32, an f32 sum in
 * another order) running sum would round differently from the rank-order fp32 sum. */
static float grad_value(uint32_t dtype, int rank, int64_t i, int salt)
{
    /* ulp 2 at big in each dtype: big + 2k is exact, the small terms are half an ulp or more */
    const float big = dtype == LOOM_DTYPE_F32 ? 16777216.0f : dtype == LOOM_DTYPE_F16 ? 2048.0f : 256.0f;
    /* signs mixed so that micro-batches sometimes add up and sometimes cancel */
    const float sign = (((i / 7) ^ ((int64_t)salt * (i / 3))) & 1) ? -1.0f : 1.0f;
    if (rank == 0) return sign * (big + 2.0f * (float)((i + salt) % 8));
    return 1.0f + 0.5f * (float)((i + rank + salt) % 3);
}

/* What one rank holds after the micro-batches `salts` of a step, accumulated like a model:
 * fp32 add, one rounding per micro-batch. */
static float local_accumulated(uint32_t dtype, int rank, int64_t i, const int *salts, int n_salts)
{
    float acc = 0.0f;
    for (int m = 0; m < n_salts; m++)
        acc = round_to_dtype(acc + grad_value(dtype, rank, i, salts[m]), dtype);
    return acc;
}

/* ddp, zero1, sharded_ddp: ranks summed (fp32, rank order, one rounding) after accumulation. */
static float expected_reduce_last(uint32_t dtype, int world, int64_t i, const int *salts, int n_salts)
{
    float sum = local_accumulated(dtype, 0, i, salts, n_salts);
    for (int r = 1; r < world; r++)
        sum += local_accumulated(dtype, r, i, salts, n_salts);
    return round_to_dtype(sum, dtype);
}

/* zero2: every micro-batch reduced over the ranks, then added to the partition (one rounding). */
static float expected_reduce_each(uint32_t dtype, int world, int64_t i, const int *salts, int n_salts)
{
    float acc = 0.0f;
    for (int m = 0; m < n_salts; m++)
        acc = round_to_dtype(acc + expected_reduce_last(dtype, world, i, salts + m, 1), dtype);
    return acc;
}

/* Zero or at least 1/64 in magnitude: normal in every dtype. */
static float param_value(uint32_t dtype, int64_t i)
{
    return round_to_dtype((float)(i % 997 - 498) / 64.0f, dtype);
}

/* ---------------------------------------------------------------------------------------- */
/* One plugin configuration on one rank                                                     */

typedef struct variant {
    const char *plugin;
    const char *keys[3], *values[3];
    int reduces_each_micro; /* zero2: the accumulation is summed over ranks per micro-batch */
    int in_place;           /* params has room for world P: the all-gather runs inside it  */
    int whole;              /* the optimizer needs whole tensors                            */
} variant;

static const variant variants[] = {
    {"ddp", {NULL}, {NULL}, 0, 0, 0},
    {"zero1", {"allgather_bucket_size"}, {"5000"}, 0, 0, 0},
    {"zero2", {"allgather_bucket_size"}, {"5000"}, 1, 0, 0},
    {"zero2", {"allgather_bucket_size", "overlap_comm"}, {"5000", "true"}, 1, 0, 0},
    {"zero2", {"allgather_bucket_size", "reduce_scatter"}, {"5000", "false"}, 1, 0, 0},
    {"sharded_ddp", {NULL}, {NULL}, 0, 0, 0},
    {"zero1", {NULL}, {NULL}, 0, 1, 0},
    {"zero2", {"overlap_comm"}, {"true"}, 1, 1, 0},
    {"zero2", {"allgather_bucket_size", "cpu_offload"}, {"5000", "true"}, 1, 0, 0},
    {"zero2", {"overlap_comm", "cpu_offload"}, {"true", "true"}, 1, 1, 0},
    {"zero1", {"allgather_bucket_size"}, {"5000"}, 0, 0, 1},
    {"zero1", {NULL}, {NULL}, 0, 1, 1}, /* room in params, but uneven partitions gather apart */
    {"zero2", {"allgather_bucket_size", "overlap_comm"}, {"5000", "true"}, 1, 0, 1},
    {"zero2", {"reduce_scatter"}, {"false"}, 1, 1, 1},
    {"zero2", {"allgather_bucket_size", "cpu_offload"}, {"5000", "true"}, 1, 0, 1},
    {"zero3", {NULL}, {NULL}, 1, 0, 0},
    {"zero3", {"overlap_comm"}, {"true"}, 1, 1, 0},
    {"zero3", {"reduce_scatter"}, {"false"}, 1, 0, 1},
};
/* Room for world x P elements at any world size here (P <= 32768 for 2 ranks). */
#define CAPACITY 65536
#define N_VARIANTS (sizeof variants / sizeof variants[0])

typedef struct rank_ctx {
    int rank, world;
    loom_comm *comm;
    const loom_comm_vtable *cv;
} rank_ctx;

typedef struct instance {
    const loom_plugin *plugin;
    const loom_sharding_vtable *sv;
    loom_host *host;
    loom_config *config;
    loom_sharding *sharding;
} instance;

static loom_status create_instance(rank_ctx *c, const variant *v, uint32_t dtype, void *params, instance *in)
{
    memset(in, 0, sizeof *in);
    loom_status st = loom_plugin_load(v->plugin, LOOM_KIND_SHARDING, &in->plugin);
    if (st != LOOM_OK) return st;
    in->sv = in->plugin->desc->vtable;
    in->host = loom_host_create(v->plugin);
    in->config = loom_config_from_spec(in->plugin->desc);
    if (!in->host || !in->config) return LOOM_E_NOMEM;
    for (int k = 0; k < 3 && v->keys[k]; k++)
        if ((st = loom_config_set(in->config, v->keys[k], v->values[k])) != LOOM_OK) return st;
    loom_sharding_setup setup = {
        LOOM_HEADER_INIT(loom_sharding_setup),
        .rank = c->rank,
        .world_size = c->world,
        .total_numel = TOTAL,
        .n_tensors = N_TENSORS,
        .tensor_offsets = offsets,
        .params = params,
        .param_dtype = dtype,
        .device = LOOM_DEVICE_CPU,
        .comm = c->comm,
        .comm_vtable = c->cv,
        .gradient_accumulation_steps = 2,
        .optimizer_flags = v->whole ? LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS : 0,
        .max_grad_elements = LARGEST_TENSOR,
        .params_capacity = v->in_place ? CAPACITY : 0,
    };
    return in->sv->create(in->host, loom_host_api_table(), in->config, &setup, &in->sharding);
}

static void destroy_instance(instance *in)
{
    if (in->sv) in->sv->destroy(in->sharding);
    loom_config_free(in->config);
    loom_host_destroy(in->host);
}

/* One micro-batch of "backward": tensors last to first (but `skip`, -1 for none), each
 * acquired, added to (fp32 add, one rounding, as a model accumulating in its dtype), released. */
static void backward_but(rank_ctx *c, instance *in, uint32_t dtype, int salt, int micro, int last, int skip)
{
    OK(in->sv->begin_micro_batch(in->sharding, micro, last));
    for (int t = N_TENSORS - 1; t >= 0; t--) {
        if (t == skip) continue;
        void *memory = NULL;
        OK(in->sv->grad_acquire(in->sharding, offsets[t], offsets[t + 1], &memory));
        if (!memory) return;
        for (int64_t i = offsets[t]; i < offsets[t + 1]; i++) {
            const int64_t k = i - offsets[t];
            float held;
            if (dtype == LOOM_DTYPE_F32) {
                memcpy(&held, (uint8_t *)memory + 4 * k, 4);
            } else {
                uint16_t h;
                memcpy(&h, (uint8_t *)memory + 2 * k, 2);
                uint32_t u;
                if (dtype == LOOM_DTYPE_BF16) {
                    u = (uint32_t)h << 16;
                } else {
                    /* the test's values stay normal or zero */
                    const uint32_t e = (h >> 10) & 0x1fu;
                    u = ((uint32_t)(h & 0x8000u) << 16) |
                        (e ? ((e - 15 + 127) << 23) | ((uint32_t)(h & 0x3ffu) << 13) : 0);
                }
                memcpy(&held, &u, 4);
            }
            store_value(memory, k, round_to_dtype(held + grad_value(dtype, c->rank, i, salt), dtype), dtype);
        }
        OK(in->sv->grad_release(in->sharding, offsets[t], offsets[t + 1]));
    }
}

static void backward(rank_ctx *c, instance *in, uint32_t dtype, int salt, int micro, int last)
{
    backward_but(c, in, dtype, salt, micro, last, -1);
}

/* cpu_offload's host copy of the owned parameters, or NULL. */
static uint8_t *host_params(instance *in)
{
    void *memory = NULL;
    if (LOOM_HAS(in->sv, loom_sharding_vtable, host_params)) OK(in->sv->host_params(in->sharding, &memory));
    return memory;
}

/* Compare every owned element with the expectation, and keep the bits in `seen` (TOTAL
 * elements) for the cross-plugin comparison. Returns the number of owned elements. */
static int64_t check_owned(rank_ctx *c, instance *in, const variant *v, uint32_t dtype, const int *salts, int n_salts,
                           uint8_t *seen)
{
    const size_t es = loom_dtype_size(dtype);
    const loom_range *ranges = NULL;
    size_t n_ranges = 0;
    OK(in->sv->owned_ranges(in->sharding, c->rank, &ranges, &n_ranges));
    uint8_t *want = test_xmalloc(es);
    int64_t owned = 0, wrong = 0;
    for (size_t k = 0; k < n_ranges; k++) {
        void *memory = NULL;
        OK(in->sv->owned_grads(in->sharding, k, &memory));
        if (!memory) continue;
        for (int64_t i = ranges[k].begin; i < ranges[k].end; i++) {
            const float x = v->reduces_each_micro ? expected_reduce_each(dtype, c->world, i, salts, n_salts)
                                                  : expected_reduce_last(dtype, c->world, i, salts, n_salts);
            store_value(want, 0, x, dtype);
            const uint8_t *got = (const uint8_t *)memory + (size_t)(i - ranges[k].begin) * es;
            if (memcmp(got, want, es) != 0 && wrong++ < 3)
                fprintf(stderr, "[rank %d] %s %s salts %d..: grad[%lld] wrong (want %g)\n", c->rank, v->plugin,
                        dtype_label(dtype), salts[0], (long long)i, (double)x);
            memcpy(seen + (size_t)i * es, got, es);
            owned++;
        }
    }
    RCHECK(wrong == 0);
    free(want);
    return owned;
}

/* Owners write the parameters, others garbage; after the publish every rank holds the owners'. */
static void check_publish(rank_ctx *c, instance *in, uint32_t dtype, uint8_t *params)
{
    const size_t es = loom_dtype_size(dtype);
    const loom_range *ranges = NULL;
    size_t n_ranges = 0;
    OK(in->sv->owned_ranges(in->sharding, c->rank, &ranges, &n_ranges));
    for (int64_t i = 0; i < TOTAL; i++)
        store_value(params, i, -(float)(c->rank + 1) * 3.0f, dtype);
    /* Under offload the step writes the host copy; params' owned range keeps garbage. */
    uint8_t *host = host_params(in);
    int64_t at = 0;
    for (size_t k = 0; k < n_ranges; k++)
        for (int64_t i = ranges[k].begin; i < ranges[k].end; i++, at++)
            store_value(host ? host : params, host ? at : i, param_value(dtype, i), dtype);
    OK(in->sv->publish_params(in->sharding));
    uint8_t *want = test_xmalloc((size_t)TOTAL * es);
    for (int64_t i = 0; i < TOTAL; i++)
        store_value(want, i, param_value(dtype, i), dtype);
    if (LOOM_HAS(in->sv, loom_sharding_vtable, param_acquire)) {
        /* zero3: nothing is gathered after the update; each use gathers its range. */
        const int64_t own_begin = n_ranges ? ranges[0].begin : 0, own_end = n_ranges ? ranges[0].end : 0;
        for (int t = 0; t < N_TENSORS; t++) {
            OK(in->sv->param_acquire(in->sharding, offsets[t], offsets[t + 1]));
            RCHECK(memcmp(params + (size_t)offsets[t] * es, want + (size_t)offsets[t] * es,
                          (size_t)(offsets[t + 1] - offsets[t]) * es) == 0);
            if (t == 1) { /* held: an overlapping acquire is a caller's bug */
                RCHECK(in->sv->param_acquire(in->sharding, offsets[1] + 1, offsets[2] + 1) == LOOM_E_INVALID);
                RCHECK(strstr(loom_error_message(), "overlaps") != NULL);
            }
            OK(in->sv->param_release(in->sharding, offsets[t], offsets[t + 1]));
        }
        RCHECK(in->sv->param_release(in->sharding, offsets[0], offsets[1]) == LOOM_E_INVALID);
        OK(in->sv->param_acquire(in->sharding, 0, TOTAL));
        RCHECK(memcmp(params, want, (size_t)TOTAL * es) == 0);
        OK(in->sv->param_release(in->sharding, 0, TOTAL));
        /* Released: this rank's own range stays, the others' whole pages are given back. */
        RCHECK(memcmp(params + (size_t)own_begin * es, want + (size_t)own_begin * es,
                      (size_t)(own_end - own_begin) * es) == 0);
        const long page = sysconf(_SC_PAGESIZE);
        int64_t zeros = 0, stale = 0;
        for (int64_t i = 0; i < TOTAL; i++) {
            if (i >= own_begin && i < own_end) continue;
            const uintptr_t element = (uintptr_t)(params + (size_t)i * es);
            const uintptr_t first = element / (uintptr_t)page * (uintptr_t)page;
            const uintptr_t start = (uintptr_t)(params + (size_t)(i < own_begin ? 0 : own_end) * es);
            const uintptr_t stop = (uintptr_t)(params + (size_t)(i < own_begin ? own_begin : TOTAL) * es);
            if (first < start || first + (uintptr_t)page > stop) continue; /* a page shared with a kept range */
            uint8_t zero[4] = {0};
            if (memcmp(params + (size_t)i * es, zero, es) == 0)
                zeros++;
            else
                stale++;
        }
        RCHECK(stale == 0);
        RCHECK(zeros > 0);
        free(want);
        return;
    }
    RCHECK(memcmp(params, want, (size_t)TOTAL * es) == 0);
    free(want);
}

/* The report scales with the element size; bucket sizes stay element counts. */
static void check_memory(rank_ctx *c, instance *in, const variant *v, uint32_t dtype)
{
    const char *plugin = v->plugin;
    const uint64_t es = loom_dtype_size(dtype), world = (uint64_t)c->world;
    const uint64_t even = (TOTAL + world - 1) / world;
    uint64_t P = (even + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN, begin = (uint64_t)c->rank * P;
    uint64_t mine = begin < TOTAL ? (TOTAL - begin < P ? TOTAL - begin : P) : 0;
    if (v->whole) {
        const int64_t *cut = whole_cuts[c->world];
        P = 0;
        for (int r = 0; r < c->world; r++)
            if ((uint64_t)(cut[r + 1] - cut[r]) > P) P = (uint64_t)(cut[r + 1] - cut[r]);
        mine = (uint64_t)(cut[c->rank + 1] - cut[c->rank]);
    }
    const int bucket = v->keys[0] && strcmp(v->keys[0], "allgather_bucket_size") == 0;
    /* in place (even partitions only): no buffers */
    const uint64_t gather = v->in_place && !v->whole ? 0 : bucket && GATHER_BUCKET < P ? GATHER_BUCKET : P;
    loom_sharding_memory m = {LOOM_HEADER_INIT(loom_sharding_memory)};
    OK(in->sv->memory(in->sharding, &m));
    if (strcmp(plugin, "ddp") == 0) {
        RCHECK(m.gradient_bytes == TOTAL * es);
        /* The communicator's receive room: a bucket (25 MB) > TOTAL. Between ranks of one machine
         * the gradients are the gloo plugin's shared memory instead (ABI 1.6), and this rank
         * touches its block of each peer's copy. */
        const char *shm = getenv("LOOM_GLOO_SHM");
        const int shared = c->world > 1 && !(shm && strcmp(shm, "off") == 0);
        RCHECK(m.bucket_bytes == (shared ? TOTAL * es / world * (world - 1) : TOTAL * es));
    } else if (strcmp(plugin, "sharded_ddp") == 0) {
        RCHECK(m.gradient_bytes == TOTAL * es);
        RCHECK(m.bucket_bytes == 0);
    } else if (strcmp(plugin, "zero1") == 0) {
        RCHECK(m.gradient_bytes == P * world * es);
        RCHECK(m.bucket_bytes == gather * (world + 1) * es); /* owned gradients: its block of the buffer */
    } else if (strcmp(plugin, "zero3") == 0) {               /* no gather buffers: it gathers on use */
        RCHECK(m.gradient_bytes == P * es);
        RCHECK(m.bucket_bytes == LARGEST_TENSOR * es);
        RCHECK(m.param_bytes == (P + LARGEST_TENSOR < TOTAL ? P + LARGEST_TENSOR : TOTAL) * es);
    } else {
        RCHECK(m.gradient_bytes == P * es);
        RCHECK(m.bucket_bytes == (LARGEST_TENSOR + gather * (world + 1)) * es);
        RCHECK(m.param_bytes == 0);
    }
    /* cpu_offload: the host copies of this rank's parameters and gradients. */
    RCHECK(m.host_bytes == (host_params(in) ? 2 * mine * es : 0));
}

static void run_variant(rank_ctx *c, const variant *v, uint32_t dtype, uint8_t *seen_one, uint8_t *seen_acc, int first)
{
    const size_t es = loom_dtype_size(dtype);
    uint8_t *params = test_xmalloc((size_t)CAPACITY * es);
    memset(params, 0, (size_t)CAPACITY * es);
    for (int64_t i = 0; i < TOTAL; i++)
        store_value(params, i, param_value(dtype, i), dtype);
    uint8_t *seen = test_xmalloc((size_t)TOTAL * es);
    instance in;
    loom_status st = create_instance(c, v, dtype, params, &in);
    if (st != LOOM_OK) {
        fprintf(stderr, "[rank %d] create %s %s: %s\n", c->rank, v->plugin, dtype_label(dtype), loom_error_message());
        RCHECK(st == LOOM_OK);
        destroy_instance(&in);
        free(params), free(seen);
        return;
    }
    check_memory(c, &in, v, dtype);
    const loom_range *ranges = NULL;
    size_t n_ranges = 0;
    OK(in.sv->owned_ranges(in.sharding, c->rank, &ranges, &n_ranges));
    if (v->whole) /* this rank's run of whole tensors */
        RCHECK(n_ranges == 1 && ranges[0].begin == whole_cuts[c->world][c->rank] &&
               ranges[0].end == whole_cuts[c->world][c->rank + 1]);
    uint8_t *host = host_params(&in);
    if (host && n_ranges) /* the host copy starts as the owned range of params */
        RCHECK(memcmp(host, params + (size_t)ranges[0].begin * es,
                      (size_t)(ranges[0].end - ranges[0].begin) * es) == 0);

    /* Step 1: one micro-batch. */
    const int one[1] = {0};
    backward(c, &in, dtype, 0, 0, 1);
    OK(in.sv->finish_grads(in.sharding));
    int64_t owned = check_owned(c, &in, v, dtype, one, 1, seen);
    /* The same bits as every plugin checked before (ddp first) on the elements this one owns. */
    for (size_t k = 0; k < n_ranges && !first; k++)
        RCHECK(memcmp(seen + (size_t)ranges[k].begin * es, seen_one + (size_t)ranges[k].begin * es,
                      (size_t)(ranges[k].end - ranges[k].begin) * es) == 0);
    if (first) memcpy(seen_one, seen, (size_t)TOTAL * es);
    check_publish(c, &in, dtype, params);

    /* Step 2, after zero_grads: two micro-batches. */
    OK(in.sv->zero_grads(in.sharding));
    const int two[2] = {1, 2};
    backward(c, &in, dtype, two[0], 0, 0);
    backward(c, &in, dtype, two[1], 1, 1);
    OK(in.sv->finish_grads(in.sharding));
    RCHECK(check_owned(c, &in, v, dtype, two, 2, seen) == owned);
    if (!v->reduces_each_micro) {
        for (size_t k = 0; k < n_ranges && !first; k++)
            RCHECK(memcmp(seen + (size_t)ranges[k].begin * es, seen_acc + (size_t)ranges[k].begin * es,
                          (size_t)(ranges[k].end - ranges[k].begin) * es) == 0);
        if (first) memcpy(seen_acc, seen, (size_t)TOTAL * es);
    }
    check_publish(c, &in, dtype, params);

    /* zero2, step 3: the last micro-batch leaves tensor 1 out; its elements hold what the first
     * micro-batch summed, and that must reach the owned gradients (offload: its host copy). */
    if (v->reduces_each_micro) {
        OK(in.sv->zero_grads(in.sharding));
        backward(c, &in, dtype, 3, 0, 0);
        backward_but(c, &in, dtype, 4, 1, 1, 1);
        OK(in.sv->finish_grads(in.sharding));
        void *memory = NULL;
        OK(in.sv->owned_grads(in.sharding, 0, &memory));
        uint8_t *want = test_xmalloc(es);
        int64_t wrong = 0;
        const int both[2] = {3, 4};
        for (size_t k = 0; k < n_ranges && memory; k++)
            for (int64_t i = ranges[k].begin; i < ranges[k].end; i++) {
                const int skipped = i >= offsets[1] && i < offsets[2];
                store_value(want, 0, expected_reduce_each(dtype, c->world, i, both, skipped ? 1 : 2), dtype);
                wrong += memcmp((uint8_t *)memory + (size_t)(i - ranges[k].begin) * es, want, es) != 0;
            }
        RCHECK(wrong == 0);
        free(want);
    }

    /* Every element is owned by exactly one rank (ddp: by all). */
    int64_t total_owned = owned;
    OK(c->cv->all_reduce(c->comm, &total_owned, 1, LOOM_DTYPE_I64, LOOM_REDUCE_SUM, NULL));
    RCHECK(total_owned == (strcmp(v->plugin, "ddp") == 0 ? (int64_t)c->world * TOTAL : TOTAL));
    destroy_instance(&in);
    free(params), free(seen);
}

/* The values really do need the canonical order: a 16-bit running sum gets some of them wrong. */
static void check_values_discriminate(int world)
{
    const uint32_t dtypes[] = {LOOM_DTYPE_F16, LOOM_DTYPE_BF16};
    for (size_t d = 0; d < 2; d++) {
        int64_t differs = 0;
        for (int64_t i = 0; i < TOTAL; i++) {
            float running = grad_value(dtypes[d], 0, i, 0);
            for (int r = 1; r < world; r++)
                running = round_to_dtype(running + grad_value(dtypes[d], r, i, 0), dtypes[d]);
            if (running != expected_reduce_last(dtypes[d], world, i, (const int[]){0}, 1)) differs++;
        }
        RCHECK(world < 3 || differs > 0);
        /* and zero2's order under accumulation rounds differently from ddp's somewhere */
        const int two[2] = {1, 2};
        int64_t orders_differ = 0;
        for (int64_t i = 0; i < TOTAL; i++)
            if (expected_reduce_each(dtypes[d], world, i, two, 2) != expected_reduce_last(dtypes[d], world, i, two, 2))
                orders_differ++;
        RCHECK(orders_differ > 0);
    }
}

static void check_refusals(rank_ctx *c)
{
    const char *plugins[] = {"none", "ddp", "zero1", "zero2", "zero3", "sharded_ddp"};
    uint8_t params[8];
    for (size_t p = 0; p < sizeof plugins / sizeof plugins[0]; p++) {
        const variant v = {plugins[p], {NULL}, {NULL}, 0, 0, 0};
        instance in;
        rank_ctx one = *c;
        if (strcmp(plugins[p], "none") == 0) one.world = 1, one.rank = 0; /* none refuses worlds > 1 first */
        loom_status st = create_instance(&one, &v, LOOM_DTYPE_F64, params, &in);
        RCHECK(st == LOOM_E_UNSUPPORTED);
        RCHECK(in.sharding == NULL);
        RCHECK(strstr(loom_error_message(), "f64") != NULL);
        RCHECK(strstr(loom_error_message(), plugins[p]) != NULL);
        destroy_instance(&in);
    }
    /* zero3 has no offload. */
    const variant offload = {"zero3", {"cpu_offload"}, {"true"}, 1, 0, 0};
    instance in;
    uint8_t *room = test_xmalloc((size_t)CAPACITY * 4);
    RCHECK(create_instance(c, &offload, LOOM_DTYPE_F32, room, &in) == LOOM_E_UNSUPPORTED);
    RCHECK(strstr(loom_error_message(), "cpu_offload") != NULL);
    destroy_instance(&in);
    free(room);
}

/* ---------------------------------------------------------------------------------------- */
/* Rank processes                                                                            */

static int rank_main(int rank, int world, int port)
{
    alarm(60);
    test_gloo g;
    if (!test_gloo_open(&g, rank, world, port)) return 1;
    rank_ctx c = {.rank = rank, .world = world, .comm = g.comm, .cv = g.cv};
    const uint32_t dtypes[] = {LOOM_DTYPE_F32, LOOM_DTYPE_F16, LOOM_DTYPE_BF16};
    uint8_t *seen_one = test_xmalloc((size_t)TOTAL * 4), *seen_acc = test_xmalloc((size_t)TOTAL * 4);
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++)
        for (size_t k = 0; k < N_VARIANTS; k++)
            run_variant(&c, &variants[k], dtypes[d], seen_one, seen_acc, k == 0);
    check_values_discriminate(world);
    check_refusals(&c);
    free(seen_one), free(seen_acc);
    test_gloo_close(&g);
    return test_failures ? 1 : 0;
}


int main(void)
{
    alarm(120);
    if (loom_loader_init(NULL, 0) != LOOM_OK) {
        fprintf(stderr, "loader: %s\n", loom_error_message());
        return 1;
    }
    /* fork before this process starts any thread of its own */
    CHECK(test_run_ranks("sharding dtypes", 2, rank_main));
    CHECK(test_run_ranks("sharding dtypes", 3, rank_main));
    return test_finish("test_sharding_dtypes");
}
