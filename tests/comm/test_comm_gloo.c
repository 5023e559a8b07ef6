/*
 * test_comm_gloo.c - the gloo communicator between real processes on 127.0.0.1.
 *
 * The parent picks an ephemeral port and forks N = 2, 3, 4 rank processes; each loads the
 * plugin through the core loader, joins the rendezvous store (rank 0 serves it), creates the
 * communicator and checks every collective against the value it computes itself:
 *   - all_reduce SUM bitwise equal to the rank-order sum of non-associative values, for
 *     count < world, uneven and even counts, small (allgather) and large (alltoall) paths;
 *     MAX/MIN; f64, i32, i64 (wrap-around), u8, f16 and bf16 (fp32 accumulation, one rounding);
 *   - reduce_scatter, all_gather (also in place), broadcast from root 1, reduce to root 2,
 *     all_to_all, barrier, and three asynchronous all_reduces waited in order with a blocking
 *     one issued between them.
 * Then the failures, 3 ranks each: rank 2 exits before an all_reduce (ranks 0 and 1 must get
 * LOOM_E_COMM or LOOM_E_TIMEOUT within the 3 s timeout and refuse the next operation at once);
 * rank 2 dies in the middle of a 64 MB all_reduce (an error within the timeout, no SIGPIPE
 * death); rank 2 reaches the store but never creates its communicator (the others' create
 * fails with LOOM_E_TIMEOUT after the 2 s timeout).
 * Same-machine ranks reduce through shared memory (gloo_shm.cpp) unless LOOM_GLOO_SHM=off: the
 * collective checks run both ways (each rank checks from /proc/self/maps that it mapped the
 * segment, or did not), so both paths give the canonical bits; the failures run both ways too,
 * and through shared memory ranks that issue different counts fail at once. alloc_shared (ABI
 * 1.6) lends memory only through shared memory, and an all_reduce of a range of it (in place)
 * gives the bits of private memory and touches nothing else; ranks reducing it at different
 * offsets fail at once. As root, a /dev/shm too small for the segment (a private mount) must
 * leave the ranks on TCP, every check passing (and alloc_shared lending nothing).
 * In-process: a one-rank communicator without a store, and the error without a store.
 * Every process has a hard alarm(), so a hang fails the test instead of blocking ctest.
 */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <loom/comm.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"
#include "store.h"
#include "test_util.h"
#include "test_ranks.h"

static const loom_comm_vtable *vt;
static const loom_plugin *plugin;

/* ---------------------------------------------------------------------------------------- */
/* Values and their expected reductions                                                      */

/* 1e8, -1e8 and a small term in turn: associated another way, the small term is absorbed by
 * 1e8 (whose ulp is 8) or survives, so only the rank-order sum matches bitwise. */
static float f32_value(int r, size_t i)
{
    switch ((r + i) % 3) {
    case 0:
        return 1e8f;
    case 1:
        return -1e8f;
    default:
        return 1.0f + (float)((i + (size_t)r) % 13) * 0.25f;
    }
}

static double f64_value(int r, size_t i)
{
    switch ((r + 2 * i) % 3) {
    case 0:
        return 1e17;
    case 1:
        return 1.0 + (double)(i % 11) * 0.125;
    default:
        return -1e17;
    }
}

/* near the top of the range, so the sums wrap around (as two's complement, computed unsigned) */
static uint32_t i32_value(int r, size_t i)
{
    return (uint32_t)INT32_MAX - (uint32_t)(i % 1000) + (uint32_t)r;
}
static uint64_t i64_value(int r, size_t i)
{
    return (uint64_t)INT64_MAX - (uint64_t)i + (uint64_t)r * 3;
}

static float mixed_value(int r, size_t i)
{
    return (float)((r * 7919 + (long)i * 104729) % 1001) - 500.0f;
}

static float round_to_bits(float x, int significant_bits)
{
    if (x == 0.0f) return x;
    int e;
    frexpf(x, &e);
    const float ulp = ldexpf(1.0f, e - significant_bits);
    return nearbyintf(x / ulp) * ulp;
}

/* exact encodings of normal values (the test only uses exactly representable ones) */
static uint16_t half_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const int32_t exponent = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
    return (uint16_t)(sign | ((uint32_t)exponent << 10) | ((u >> 13) & 0x3ffu));
}

static float half_value(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t u = sign;
    if (exponent) u |= ((exponent - 15 + 127) << 23) | ((uint32_t)(h & 0x3ffu) << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

static float bf16_value(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f16/bf16: rank 0 holds a large value, the others small ones that a 16-bit running sum would
 * round away but an fp32 sum keeps. */
static float small_float_value(int r, size_t i, float big)
{
    return r == 0 ? big + (float)(2 * (i % 8)) : 1.0f + 0.5f * (float)((i + (size_t)r) % 3);
}

/* ---------------------------------------------------------------------------------------- */
/* The checks one rank runs                                                                  */

typedef struct rank_ctx {
    int rank, world;
    loom_comm *comm;
} rank_ctx;

static void check_all_reduce_f32(rank_ctx *c, size_t count)
{
    float *buf = test_xmalloc(count * sizeof *buf);
    for (size_t i = 0; i < count; i++)
        buf[i] = f32_value(c->rank, i);
    OK(vt->all_reduce(c->comm, buf, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    size_t wrong = 0, reorder_differs = 0;
    for (size_t i = 0; i < count; i++) {
        float want = f32_value(0, i);
        for (int r = 1; r < c->world; r++)
            want += f32_value(r, i);
        /* the same terms associated the other way: r0 + (r1 + (r2 + ...)) */
        float right = f32_value(c->world - 1, i);
        for (int r = c->world - 2; r >= 0; r--)
            right = f32_value(r, i) + right;
        if (memcmp(&buf[i], &want, sizeof want) != 0) {
            if (wrong++ < 3)
                fprintf(stderr, "[rank %d] all_reduce f32 count %zu: [%zu] = %.9g, want %.9g\n", c->rank, count, i,
                        (double)buf[i], (double)want);
        }
        if (right != want) reorder_differs++;
    }
    RCHECK(wrong == 0);
    /* the values are chosen so that the order matters (with 3+ ranks) */
    if (c->world >= 3 && count >= 8) RCHECK(reorder_differs > 0);
    free(buf);
}

static void check_max_min(rank_ctx *c, size_t count)
{
    float *mx = test_xmalloc(count * sizeof *mx), *mn = test_xmalloc(count * sizeof *mn);
    for (size_t i = 0; i < count; i++)
        mx[i] = mn[i] = mixed_value(c->rank, i);
    OK(vt->all_reduce(c->comm, mx, count, LOOM_DTYPE_F32, LOOM_REDUCE_MAX, NULL));
    OK(vt->all_reduce(c->comm, mn, count, LOOM_DTYPE_F32, LOOM_REDUCE_MIN, NULL));
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++) {
        float hi = mixed_value(0, i), lo = hi;
        for (int r = 1; r < c->world; r++) {
            hi = fmaxf(hi, mixed_value(r, i));
            lo = fminf(lo, mixed_value(r, i));
        }
        if (mx[i] != hi || mn[i] != lo) wrong++;
    }
    RCHECK(wrong == 0);
    free(mx);
    free(mn);
}

static void check_other_dtypes(rank_ctx *c, size_t count)
{
    const int w = c->world, me = c->rank;
    double *d = test_xmalloc(count * sizeof *d);
    int32_t *i32 = test_xmalloc(count * sizeof *i32);
    int64_t *i64 = test_xmalloc(count * sizeof *i64);
    uint8_t *u8 = test_xmalloc(count);
    uint16_t *h = test_xmalloc(count * 2), *b = test_xmalloc(count * 2), *hmax = test_xmalloc(count * 2);
    for (size_t i = 0; i < count; i++) {
        d[i] = f64_value(me, i);
        i32[i] = (int32_t)i32_value(me, i);
        i64[i] = (int64_t)i64_value(me, i);
        u8[i] = (uint8_t)(me * 100 + i);
        h[i] = half_bits(small_float_value(me, i, 2048.0f));
        b[i] = bf16_bits(small_float_value(me, i, 256.0f));
        hmax[i] = half_bits(mixed_value(me, i));
    }
    OK(vt->all_reduce(c->comm, d, count, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, i32, count, LOOM_DTYPE_I32, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, i64, count, LOOM_DTYPE_I64, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, u8, count, LOOM_DTYPE_U8, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, h, count, LOOM_DTYPE_F16, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, b, count, LOOM_DTYPE_BF16, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, hmax, count, LOOM_DTYPE_F16, LOOM_REDUCE_MAX, NULL));
    size_t wrong[7] = {0};
    for (size_t i = 0; i < count; i++) {
        double wd = f64_value(0, i);
        uint32_t w32 = 0;
        uint64_t w64 = 0;
        uint8_t w8 = 0;
        float wh = 0.0f, wb = 0.0f, whmax = mixed_value(0, i);
        for (int r = 0; r < w; r++) {
            if (r > 0) wd += f64_value(r, i);
            w32 += i32_value(r, i);
            w64 += i64_value(r, i);
            w8 = (uint8_t)(w8 + (uint8_t)(r * 100 + i));
            wh += small_float_value(r, i, 2048.0f);
            wb += small_float_value(r, i, 256.0f);
            whmax = fmaxf(whmax, mixed_value(r, i));
        }
        if (memcmp(&d[i], &wd, sizeof wd) != 0) wrong[0]++;
        if ((uint32_t)i32[i] != w32) wrong[1]++;
        if ((uint64_t)i64[i] != w64) wrong[2]++;
        if (u8[i] != w8) wrong[3]++;
        if (half_value(h[i]) != round_to_bits(wh, 11)) {
            if (wrong[4]++ < 3)
                fprintf(stderr, "[rank %d] f16 [%zu] = %g want %g\n", me, i, (double)half_value(h[i]),
                        (double)round_to_bits(wh, 11));
        }
        if (bf16_value(b[i]) != round_to_bits(wb, 8)) wrong[5]++;
        if (half_value(hmax[i]) != whmax) wrong[6]++;
    }
    for (int k = 0; k < 7; k++) {
        if (wrong[k]) fprintf(stderr, "[rank %d] dtype case %d: %zu wrong of %zu\n", me, k, wrong[k], count);
        RCHECK(wrong[k] == 0);
    }
    free(d), free(i32), free(i64), free(u8), free(h), free(b), free(hmax);
}

static void check_reduce_scatter(rank_ctx *c, size_t count)
{
    const int w = c->world;
    float *send = test_xmalloc((size_t)w * count * sizeof *send), *recv = test_xmalloc(count * sizeof *recv);
    for (size_t j = 0; j < (size_t)w * count; j++)
        send[j] = f32_value(c->rank, j);
    OK(vt->reduce_scatter(c->comm, send, recv, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++) {
        const size_t j = (size_t)c->rank * count + i;
        float want = f32_value(0, j);
        for (int r = 1; r < w; r++)
            want += f32_value(r, j);
        if (memcmp(&recv[i], &want, sizeof want) != 0) wrong++;
    }
    RCHECK(wrong == 0);
    free(send);
    free(recv);
}

static void check_all_gather(rank_ctx *c, size_t count)
{
    const int w = c->world;
    int32_t *send = test_xmalloc(count * sizeof *send), *recv = test_xmalloc((size_t)w * count * sizeof *recv);
    for (size_t i = 0; i < count; i++)
        send[i] = c->rank * 1000003 + (int32_t)i;
    OK(vt->all_gather(c->comm, send, recv, count, LOOM_DTYPE_I32, NULL));
    size_t wrong = 0;
    for (int r = 0; r < w; r++)
        for (size_t i = 0; i < count; i++)
            if (recv[(size_t)r * count + i] != r * 1000003 + (int32_t)i) wrong++;
    RCHECK(wrong == 0);
    /* in place: the send block is this rank's slot of recv */
    memset(recv, 0, (size_t)w * count * sizeof *recv);
    memcpy(recv + (size_t)c->rank * count, send, count * sizeof *send);
    OK(vt->all_gather(c->comm, recv + (size_t)c->rank * count, recv, count, LOOM_DTYPE_I32, NULL));
    wrong = 0;
    for (int r = 0; r < w; r++)
        for (size_t i = 0; i < count; i++)
            if (recv[(size_t)r * count + i] != r * 1000003 + (int32_t)i) wrong++;
    RCHECK(wrong == 0);
    free(send);
    free(recv);
}

static void check_broadcast(rank_ctx *c, size_t count, int root)
{
    double *buf = test_xmalloc(count * sizeof *buf);
    for (size_t i = 0; i < count; i++)
        buf[i] = c->rank * 1e6 + (double)i;
    OK(vt->broadcast(c->comm, buf, count, LOOM_DTYPE_F64, root, NULL));
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++)
        if (buf[i] != root * 1e6 + (double)i) wrong++;
    RCHECK(wrong == 0);
    free(buf);
}

static void check_reduce(rank_ctx *c, size_t count, int root)
{
    float *buf = test_xmalloc(count * sizeof *buf);
    for (size_t i = 0; i < count; i++)
        buf[i] = f32_value(c->rank, i + 1);
    OK(vt->reduce(c->comm, buf, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, root, NULL));
    if (c->rank == root) {
        size_t wrong = 0;
        for (size_t i = 0; i < count; i++) {
            float want = f32_value(0, i + 1);
            for (int r = 1; r < c->world; r++)
                want += f32_value(r, i + 1);
            if (memcmp(&buf[i], &want, sizeof want) != 0) wrong++;
        }
        RCHECK(wrong == 0);
    }
    free(buf);
}

static void check_all_to_all(rank_ctx *c, size_t count)
{
    const int w = c->world;
    int64_t *send = test_xmalloc((size_t)w * count * sizeof *send),
            *recv = test_xmalloc((size_t)w * count * sizeof *recv);
    for (int r = 0; r < w; r++)
        for (size_t i = 0; i < count; i++)
            send[(size_t)r * count + i] = c->rank * 1000000 + r * 10000 + (int64_t)i;
    OK(vt->all_to_all(c->comm, send, recv, count, LOOM_DTYPE_I64, NULL));
    size_t wrong = 0;
    for (int r = 0; r < w; r++)
        for (size_t i = 0; i < count; i++)
            if (recv[(size_t)r * count + i] != r * 1000000 + c->rank * 10000 + (int64_t)i) wrong++;
    RCHECK(wrong == 0);
    free(send);
    free(recv);
}

static int f32_matches_sum(const float *buf, size_t count, int world, size_t shift)
{
    for (size_t i = 0; i < count; i++) {
        float want = f32_value(0, i + shift);
        for (int r = 1; r < world; r++)
            want += f32_value(r, i + shift);
        if (memcmp(&buf[i], &want, sizeof want) != 0) return 0;
    }
    return 1;
}

/* Whether this process maps the gloo plugin's shared-memory segment. */
static int maps_shm_segment(void);
static int shm_expected(void);

/* alloc_shared (ABI 1.6): memory every rank maps when the ranks share the segment, NULL
 * otherwise. An all_reduce of a range of it runs in place and must give the bits the same
 * all_reduce gives on private memory, touch nothing outside the range, and leave every dtype's
 * sums in rank order. */
static void check_shared(rank_ctx *c)
{
    RCHECK(LOOM_HAS(vt, loom_comm_vtable, alloc_shared) && vt->free_shared);
    /* more than one slot piece (8 MiB) of f32, at an offset, an odd count */
    const size_t w = (size_t)c->world, count = w * 700000 + 7, at = 1001, total = at + count + 13;
    void *memory = (void *)&count;
    OK(vt->alloc_shared(c->comm, total * sizeof(float), &memory));
    RCHECK((memory != NULL) == shm_expected());
    OK(vt->free_shared(c->comm, NULL));
    if (!memory) return;
    RCHECK(((uintptr_t)memory & 63) == 0);
    float *buf = memory, *own = test_xmalloc(count * sizeof *own);
    size_t nonzero = 0;
    for (size_t i = 0; i < total; i++)
        nonzero += buf[i] != 0.0f;
    RCHECK(nonzero == 0); /* zeroed */
    for (size_t i = 0; i < total; i++)
        buf[i] = 1000.0f + (float)c->rank; /* outside the range: must stay this rank's own */
    for (size_t i = 0; i < count; i++)
        buf[at + i] = own[i] = f32_value(c->rank, i);
    loom_comm_request *req = NULL;
    OK(vt->all_reduce(c->comm, buf + at, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req));
    OK(vt->wait(c->comm, req));
    OK(vt->all_reduce(c->comm, own, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    RCHECK(memcmp(buf + at, own, count * sizeof *own) == 0);
    size_t touched = 0;
    for (size_t i = 0; i < at; i++)
        touched += buf[i] != 1000.0f + (float)c->rank;
    for (size_t i = at + count; i < total; i++)
        touched += buf[i] != 1000.0f + (float)c->rank;
    RCHECK(touched == 0);
    /* bf16 sums in f32, rounded once; max keeps the first of equal values */
    uint16_t *b16 = memory, *own16 = (uint16_t *)own;
    const size_t n16 = w * 5000 + 3;
    for (size_t i = 0; i < n16; i++)
        b16[i + 1] = own16[i] = bf16_bits(small_float_value(c->rank, i, 256.0f));
    OK(vt->all_reduce(c->comm, b16 + 1, n16, LOOM_DTYPE_BF16, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c->comm, own16, n16, LOOM_DTYPE_BF16, LOOM_REDUCE_SUM, NULL));
    RCHECK(memcmp(b16 + 1, own16, n16 * sizeof *own16) == 0);
    for (size_t i = 0; i < n16; i++)
        b16[i + 1] = own16[i] = bf16_bits((float)((i + (size_t)c->rank) % 5));
    OK(vt->all_reduce(c->comm, b16 + 1, n16, LOOM_DTYPE_BF16, LOOM_REDUCE_MAX, NULL));
    OK(vt->all_reduce(c->comm, own16, n16, LOOM_DTYPE_BF16, LOOM_REDUCE_MAX, NULL));
    RCHECK(memcmp(b16 + 1, own16, n16 * sizeof *own16) == 0);
    OK(vt->free_shared(c->comm, memory));
    RCHECK(vt->free_shared(c->comm, own) == LOOM_E_INVALID);
    RCHECK(strstr(loom_error_message(), "not memory of alloc_shared") != NULL);
    free(own);
}

static void check_async(rank_ctx *c)
{
    const size_t counts[4] = {200003, 17, (size_t)c->world * 50000, 3001};
    float *bufs[4];
    for (int k = 0; k < 4; k++) {
        bufs[k] = test_xmalloc(counts[k] * sizeof(float));
        for (size_t i = 0; i < counts[k]; i++)
            bufs[k][i] = f32_value(c->rank, i + (size_t)k);
    }
    loom_comm_request *req[3] = {NULL, NULL, NULL};
    OK(vt->all_reduce(c->comm, bufs[0], counts[0], LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[0]));
    OK(vt->all_reduce(c->comm, bufs[1], counts[1], LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[1]));
    OK(vt->all_reduce(c->comm, bufs[2], counts[2], LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[2]));
    RCHECK(req[0] && req[1] && req[2]);
    /* a blocking call queues behind them, so it cannot overtake */
    OK(vt->all_reduce(c->comm, bufs[3], counts[3], LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    RCHECK(f32_matches_sum(bufs[3], counts[3], c->world, 3));
    for (int k = 0; k < 3; k++) {
        OK(vt->wait(c->comm, req[k]));
        RCHECK(f32_matches_sum(bufs[k], counts[k], c->world, (size_t)k));
    }
    /* nothing to move: no request, and wait(NULL) is fine */
    loom_comm_request *none = (loom_comm_request *)1;
    OK(vt->all_reduce(c->comm, bufs[0], 0, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &none));
    RCHECK(none == NULL);
    OK(vt->wait(c->comm, none));
    for (int k = 0; k < 4; k++)
        free(bufs[k]);
}

static void check_argument_errors(rank_ctx *c)
{
    float x = 1.0f;
    RCHECK(vt->all_reduce(c->comm, &x, 1, 99, LOOM_REDUCE_SUM, NULL) == LOOM_E_INVALID);
    RCHECK(strstr(loom_error_message(), "dtype") != NULL);
    RCHECK(vt->all_reduce(c->comm, &x, 1, LOOM_DTYPE_F32, 42, NULL) == LOOM_E_UNSUPPORTED);
    RCHECK(vt->broadcast(c->comm, &x, 1, LOOM_DTYPE_F32, c->world, NULL) == LOOM_E_INVALID);
    RCHECK(vt->reduce(c->comm, &x, 1, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, -1, NULL) == LOOM_E_INVALID);
}

/* ---------------------------------------------------------------------------------------- */
/* Rank processes                                                                            */

typedef struct joined {
    loom_store_server *server;
    loom_store_client *client;
    loom_host *host;
    loom_config *config;
} joined;

/* Rendezvous through the store, then create the communicator (unless comm is NULL). */
static loom_status join(int rank, int world, int port, double timeout, joined *j, loom_comm **comm)
{
    memset(j, 0, sizeof *j);
    loom_status st = loom_store_rendezvous(rank, world, "127.0.0.1", port, 10.0, &j->server, &j->client);
    if (st != LOOM_OK) return st;
    loom_host_set_store(j->client);
    j->host = loom_host_create("gloo");
    j->config = loom_config_from_spec(plugin->desc);
    char text[32];
    snprintf(text, sizeof text, "%g", timeout);
    if (j->config) loom_config_set(j->config, "timeout_seconds", text);
    if (j->config && rank == 1) loom_config_set(j->config, "hostname", "127.0.0.1"); /* given, not derived */
    if (!comm) return LOOM_OK;
    loom_comm_setup setup = {
        LOOM_HEADER_INIT(loom_comm_setup),
        .rank = rank,
        .world_size = world,
        .local_rank = rank,
        .local_world_size = world,
        .master_addr = "127.0.0.1",
        .master_port = port,
        .device = LOOM_DEVICE_CPU,
        .timeout_seconds = 60.0,
    };
    return vt->create(j->host, loom_host_api_table(), j->config, &setup, comm);
}

/* Every rank main's start: a hard 30 s alarm, then join() creating the communicator; on failure
 * a line on stderr and 0. */
static int join_or_say(int rank, int world, int port, double timeout, joined *j, loom_comm **comm)
{
    alarm(30);
    if (join(rank, world, port, timeout, j, comm) == LOOM_OK) return 1;
    fprintf(stderr, "[rank %d] join: %s\n", rank, loom_error_message());
    return 0;
}

static void leave(joined *j)
{
    loom_host_set_store(NULL);
    loom_store_close(j->client);
    loom_store_server_stop(j->server);
    loom_config_free(j->config);
    loom_host_destroy(j->host);
}

/* Whether this process maps the gloo plugin's shared-memory segment. */
static int maps_shm_segment(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return -1;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, maps))
        if (strstr(line, "/dev/shm/loom-gloo-")) found = 1;
    fclose(maps);
    return found;
}

static int shm_expected(void)
{
    const char *env = getenv("LOOM_GLOO_SHM");
    return !(env && strcmp(env, "off") == 0) && !getenv("TEST_SMALL_DEV_SHM");
}

static int rank_main(int rank, int world, int port)
{
    joined j;
    rank_ctx c = {.rank = rank, .world = world, .comm = NULL};
    if (!join_or_say(rank, world, port, 10.0, &j, &c.comm)) return 1;
    RCHECK(maps_shm_segment() == shm_expected());
    const size_t w = (size_t)world;
    const size_t counts[] = {1, w - 1, 7, 1000, w * 40000, w * 40000 + 1, w * 40000 + w - 1};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
        if (counts[k]) check_all_reduce_f32(&c, counts[k]);
    check_max_min(&c, 5);
    check_max_min(&c, w * 40000 + 3);
    check_other_dtypes(&c, 1001);
    check_other_dtypes(&c, w * 70000 + 1);
    check_reduce_scatter(&c, 5);
    check_reduce_scatter(&c, 100001);
    check_all_gather(&c, 3);
    check_all_gather(&c, 50001);
    check_broadcast(&c, 9, 1);
    check_broadcast(&c, 300001, 1);
    const int reduce_root = world > 2 ? 2 : 1;
    check_reduce(&c, 11, reduce_root);
    check_reduce(&c, w * 40000 + 1, reduce_root);
    check_all_to_all(&c, 4);
    check_all_to_all(&c, 30001);
    check_async(&c);
    check_shared(&c);
    check_argument_errors(&c);
    OK(vt->barrier(c.comm));
    vt->destroy(c.comm);
    leave(&j);
    return test_failures ? 1 : 0;
}

/* 3 ranks; rank 2 leaves without a word; 0 and 1 must fail fast, not hang. */
static int failure_rank_main(int rank, int world, int port)
{
    joined j;
    loom_comm *comm = NULL;
    if (!join_or_say(rank, world, port, 3.0, &j, &comm)) return 1;
    float buf[1000];
    for (int i = 0; i < 1000; i++)
        buf[i] = (float)i;
    OK(vt->all_reduce(comm, buf, 1000, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL)); /* everyone is there */
    OK(vt->barrier(comm));
    if (rank == 2) _exit(0); /* dies: no destroy, no goodbye */
    usleep(200 * 1000);      /* let it go */

    float big[100000];
    for (int i = 0; i < 100000; i++)
        big[i] = 1.0f;
    const double t0 = test_now_seconds();
    loom_status st = vt->all_reduce(comm, big, 100000, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL);
    const double elapsed = test_now_seconds() - t0;
    fprintf(stderr, "[rank %d] all_reduce with a dead peer: status %d after %.2f s: %s\n", rank, st, elapsed,
            loom_error_message());
    RCHECK(st == LOOM_E_COMM || st == LOOM_E_TIMEOUT);
    RCHECK(elapsed < 3.0 + 1.5);
    RCHECK(strstr(loom_error_message(), "all_reduce") != NULL);
    RCHECK(strstr(loom_error_message(), "peer rank may have died") != NULL ||
           strstr(loom_error_message(), "timed out"));
    /* the communicator is out of step now: the next operation reports the first failure at once */
    const double t1 = test_now_seconds();
    loom_comm_request *req = NULL;
    st = vt->all_reduce(comm, big, 10, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req);
    if (st == LOOM_OK) st = vt->wait(comm, req);
    RCHECK(st == LOOM_E_COMM || st == LOOM_E_TIMEOUT);
    RCHECK(strstr(loom_error_message(), "failed earlier") != NULL);
    RCHECK(vt->barrier(comm) != LOOM_OK);
    RCHECK(test_now_seconds() - t1 < 0.5);
    const double t2 = test_now_seconds();
    vt->destroy(comm);
    RCHECK(test_now_seconds() - t2 < 2.0);
    leave(&j);
    return test_failures ? 1 : 0;
}

static void *die_soon(void *arg)
{
    usleep((useconds_t)(intptr_t)arg);
    _exit(0);
    return NULL;
}

/* 3 ranks, 2 s timeout; rank 2 dies in the middle of a 64 MB all_reduce, while its peers are
 * writing to it: they must get an error within the timeout, not be killed by SIGPIPE (the test
 * leaves SIGPIPE's default action). Gloo fails a pending receive from a closed connection at
 * once, but a pending send only at its timeout. Through shared memory one such all_reduce can
 * take less than the 30 ms before rank 2 dies, so the ranks run them back to back until one
 * fails: rank 2 then always dies inside one, however fast they are. */
static int midway_rank_main(int rank, int world, int port)
{
    /* Room for one whole 64 MB transfer over TCP under ThreadSanitizer on a loaded machine (a
     * 2 s timeout failed the first, healthy, transfer there); the rank's alarm is 30 s. */
    const double timeout = 6.0;
    joined j;
    loom_comm *comm = NULL;
    if (!join_or_say(rank, world, port, timeout, &j, &comm)) return 1;
    const size_t n = 16u << 20;
    float *big = test_xmalloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++)
        big[i] = 1.0f;
    OK(vt->barrier(comm));
    /* One whole transfer first, timed: the bound below counts the longest that succeeded, and
     * the one rank 2 dies in may be the first after its killer starts. */
    double elapsed = 0.0, longest = test_now_seconds();
    OK(vt->all_reduce(comm, big, n, LOOM_DTYPE_F32, LOOM_REDUCE_MAX, NULL));
    longest = test_now_seconds() - longest;
    if (rank == 2) {
        pthread_t killer;
        pthread_create(&killer, NULL, die_soon, (void *)(intptr_t)30000);
    }
    loom_status st = LOOM_OK;
    int calls = 0;
    while (st == LOOM_OK && calls < 1000) {
        const double t0 = test_now_seconds();
        st = vt->all_reduce(comm, big, n, LOOM_DTYPE_F32, LOOM_REDUCE_MAX, NULL);
        elapsed = test_now_seconds() - t0;
        if (st == LOOM_OK && elapsed > longest) longest = elapsed;
        calls++;
    }
    if (rank == 2) _exit(0); /* the killer thread never ran: nothing was tested on this run */
    fprintf(stderr, "[rank %d] 64 MB all_reduce %d, peer died midway: status %d after %.2f s: %s\n", rank, calls, st,
            elapsed, st ? loom_error_message() : "");
    RCHECK(st == LOOM_E_COMM || st == LOOM_E_TIMEOUT);
    /* The death is seen within the timeout after the transfer under way would have ended: a
     * 64 MB transfer takes a second or more under ThreadSanitizer (3.6 s seen against a flat
     * 3.5 s bound), so the bound counts the longest call that succeeded. A hang is minutes. */
    RCHECK(elapsed < timeout + 1.5 + longest);
    vt->destroy(comm);
    free(big);
    leave(&j);
    return test_failures ? 1 : 0;
}

/* An f32 all_reduce the ranks issue differently: it must fail at once with a message that says
 * so, not sum mismatched buffers or wait for the (5 s) timeout. */
static void check_mismatch_fails(int rank, loom_comm *comm, float *buf, size_t count, const char *what)
{
    const double t0 = test_now_seconds();
    loom_status st = vt->all_reduce(comm, buf, count, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL);
    fprintf(stderr, "[rank %d] %s: status %d after %.2f s: %s\n", rank, what, st, test_now_seconds() - t0,
            loom_error_message());
    RCHECK(st == LOOM_E_COMM);
    RCHECK(test_now_seconds() - t0 < 2.0);
    RCHECK(strstr(loom_error_message(), "different collectives or counts") != NULL);
}

/* 2 ranks through shared memory issue all_reduces of different counts. */
static int mismatch_rank_main(int rank, int world, int port)
{
    joined j;
    loom_comm *comm = NULL;
    if (!join_or_say(rank, world, port, 5.0, &j, &comm)) return 1;
    RCHECK(maps_shm_segment() == 1);
    float buf[1001] = {0};
    check_mismatch_fails(rank, comm, buf, rank == 0 ? 1000 : 1001, "mismatched all_reduce");
    vt->destroy(comm);
    leave(&j);
    return test_failures ? 1 : 0;
}

/* 2 ranks all_reduce one shared buffer at different offsets: as for different counts, they
 * must not sum each other's unrelated ranges. */
static int shared_mismatch_rank_main(int rank, int world, int port)
{
    joined j;
    loom_comm *comm = NULL;
    if (!join_or_say(rank, world, port, 5.0, &j, &comm)) return 1;
    void *memory = NULL;
    OK(vt->alloc_shared(comm, 4096, &memory));
    RCHECK(memory != NULL);
    if (memory)
        check_mismatch_fails(rank, comm, (float *)memory + (rank == 0 ? 0 : 16), 100,
                             "shared all_reduce at different offsets");
    vt->destroy(comm); /* unmaps the buffer too */
    leave(&j);
    return test_failures ? 1 : 0;
}

/* 3 ranks reach the store but rank 2 never creates its communicator: 0 and 1 must fail the
 * rendezvous with LOOM_E_TIMEOUT after the 2 s timeout, not wait forever. */
static int absent_rank_main(int rank, int world, int port)
{
    alarm(30);
    joined j;
    loom_comm *comm = NULL;
    const double t0 = test_now_seconds();
    loom_status st = join(rank, world, port, 2.0, &j, rank == 2 ? NULL : &comm);
    if (rank == 2) {
        usleep(3500 * 1000); /* stays connected to the store, creates nothing */
        leave(&j);
        return st == LOOM_OK ? 0 : 1;
    }
    const double elapsed = test_now_seconds() - t0;
    fprintf(stderr, "[rank %d] create without rank 2: status %d after %.2f s: %s\n", rank, st, elapsed,
            loom_error_message());
    RCHECK(st == LOOM_E_TIMEOUT);
    RCHECK(comm == NULL);
    RCHECK(elapsed > 1.5 && elapsed < 2.0 + 1.5);
    leave(&j);
    return test_failures ? 1 : 0;
}


/* In-process: one rank needs no store; more ranks without one is an error that says what to do. */
static void check_single_process(void)
{
    test_rank = 0;
    loom_host *host = loom_host_create("gloo");
    loom_config *config = loom_config_from_spec(plugin->desc);
    loom_comm_setup setup = {
        LOOM_HEADER_INIT(loom_comm_setup),
        .rank = 0,
        .world_size = 1,
        .master_addr = NULL,
        .device = LOOM_DEVICE_CPU,
        .timeout_seconds = 5.0,
    };
    loom_comm *comm = NULL;
    OK(vt->create(host, loom_host_api_table(), config, &setup, &comm));
    if (comm) {
        float x[5] = {1, 2, 3, 4, 5}, y[5] = {0};
        OK(vt->all_reduce(comm, x, 5, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
        CHECK(x[0] == 1 && x[4] == 5);
        OK(vt->all_gather(comm, x, y, 5, LOOM_DTYPE_F32, NULL));
        CHECK(y[0] == 1 && y[4] == 5);
        OK(vt->reduce_scatter(comm, x, y, 5, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
        CHECK(y[2] == 3);
        OK(vt->barrier(comm));
        vt->destroy(comm);
    }

    setup.world_size = 2;
    setup.master_addr = "127.0.0.1";
    setup.master_port = 1;
    comm = (loom_comm *)1;
    CHECK(vt->create(host, loom_host_api_table(), config, &setup, &comm) == LOOM_E_INVALID);
    CHECK(comm == NULL);
    CHECK(strstr(loom_error_message(), "rendezvous store") != NULL);
    CHECK(strstr(loom_error_message(), "loom launch") != NULL);

    setup.device = LOOM_DEVICE_CUDA;
    CHECK(vt->create(host, loom_host_api_table(), config, &setup, &comm) == LOOM_E_UNSUPPORTED);
    loom_config_free(config);
    loom_host_destroy(host);
}

/* As root: the collectives with a /dev/shm of 1 MiB (a private mount namespace), too small for
 * the segment. The ranks must agree on TCP and pass every check, not die of SIGBUS. Returns 1 on
 * success, 0 on failure, -1 when it cannot be set up (not root, no namespaces). */
static int run_with_small_dev_shm(void)
{
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0)
            _exit(77);
        setenv("TEST_SMALL_DEV_SHM", "1", 1);
        const int ok = test_run_ranks("collectives, /dev/shm too small", 2, rank_main);
        fflush(NULL);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 0;
    return WEXITSTATUS(status) == 77 ? -1 : WEXITSTATUS(status) == 0;
}

int main(void)
{
    alarm(150);               /* the whole test; each rank has its own 30 s */
    signal(SIGPIPE, SIG_DFL); /* the plugin must survive dead peers without the process ignoring SIGPIPE */
    if (loom_loader_init(NULL, 0) != LOOM_OK || loom_plugin_load("gloo", LOOM_KIND_COMM, &plugin) != LOOM_OK) {
        fprintf(stderr, "cannot load the gloo plugin: %s\n", loom_error_message());
        return 1;
    }
    vt = plugin->desc->vtable;
    CHECK(vt->flags & LOOM_COMM_ORDERED_SUM);

    /* fork before this process starts any thread of its own */
    CHECK(test_run_ranks("collectives", 2, rank_main));
    CHECK(test_run_ranks("collectives", 3, rank_main));
    CHECK(test_run_ranks("collectives", 4, rank_main));
    CHECK(test_run_ranks("rank 2 dies", 3, failure_rank_main));
    CHECK(test_run_ranks("rank 2 dies mid-transfer", 3, midway_rank_main));
    CHECK(test_run_ranks("rank 2 never creates", 3, absent_rank_main));
    CHECK(test_run_ranks("different counts through shared memory", 2, mismatch_rank_main));
    CHECK(test_run_ranks("one shared buffer at different offsets", 2, shared_mismatch_rank_main));
    /* the same over TCP (the ranks inherit the environment) */
    setenv("LOOM_GLOO_SHM", "off", 1);
    CHECK(test_run_ranks("collectives over TCP", 2, rank_main));
    CHECK(test_run_ranks("collectives over TCP", 3, rank_main));
    CHECK(test_run_ranks("rank 2 dies, TCP", 3, failure_rank_main));
    CHECK(test_run_ranks("rank 2 dies mid-transfer, TCP", 3, midway_rank_main));
    unsetenv("LOOM_GLOO_SHM");
    const int small = run_with_small_dev_shm();
    if (small < 0)
        fprintf(stderr, "collectives with a small /dev/shm: not run (needs root and mount namespaces)\n");
    else
        CHECK(small == 1);
    check_single_process();
    return test_finish("test_comm_gloo");
}
