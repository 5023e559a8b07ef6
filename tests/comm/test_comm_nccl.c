/*
 * test_comm_nccl.c - the nccl communicator's host logic (plugins/comm/nccl/nccl_comm.c) on a
 * recorded fake of NCCL and CUDA (fake_nccl.c), without a GPU:
 *   - 2 real processes join the rendezvous store; rank 0's unique id reaches rank 1 through
 *     it (each rank publishes the id its init got and compares with the other's), rank 1 never
 *     makes one, each init is told (world, rank);
 *   - every collective reaches NCCL with the right NCCL dtype/op numbers, counts per rank and
 *     root, on the communication stream, after waiting for an event of the compute stream,
 *     followed by its own event; asynchronous requests; the barrier; no event or stream leaks;
 *   - a rank that never creates its communicator: the other's create fails with LOOM_E_TIMEOUT;
 *   - argument errors (dtype, op, root, NULL, overflow, in-place all_to_all, CPU buffers,
 *     no store with 2 ranks, NCCL missing) are one-line LOOM_E_INVALID/UNSUPPORTED and leave
 *     the communicator usable;
 *   - host memory is staged through a device buffer (NCCL sees only device addresses) and the
 *     result copied back, blocking even when asked asynchronously;
 *   - a frozen peer: the blocking and the asynchronous all_reduce end in LOOM_E_TIMEOUT naming
 *     the operation and --ddp_timeout, the communicator is aborted once, and the next call
 *     fails at once without reaching NCCL; a dead peer (ncclRemoteError) is LOOM_E_COMM; an
 *     init that never settles is LOOM_E_TIMEOUT.
 * Every process has an alarm(): a hang fails the test.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/comm.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"
#include "store.h"
#include "test_util.h"
#include "test_ranks.h"

#include "fake_nccl.h"
#include "nccl_comm.h"

static const loom_comm_vtable *vt = &nccl_comm_vtable;

static loom_comm_setup setup_for(int rank, int world, int port, double timeout)
{
    loom_comm_setup s = {
        LOOM_HEADER_INIT(loom_comm_setup),
        .rank = rank,
        .world_size = world,
        .local_rank = rank,
        .local_world_size = world,
        .master_addr = "127.0.0.1",
        .master_port = port,
        .device = LOOM_DEVICE_CUDA,
        .timeout_seconds = timeout,
    };
    return s;
}

static int has(const char *text) { return strstr(loom_error_message(), text) != NULL; }
static int one_line(void) { return strchr(loom_error_message(), '\n') == NULL && *loom_error_message(); }

/* ---- two processes ------------------------------------------------------------------------ */

typedef struct joined {
    loom_store_server *server;
    loom_store_client *client;
    loom_host *host;
} joined;

static loom_status join(int rank, int world, int port, joined *j)
{
    memset(j, 0, sizeof *j);
    loom_status st = loom_store_rendezvous(rank, world, "127.0.0.1", port, 10.0, &j->server, &j->client);
    if (st != LOOM_OK) return st;
    loom_host_set_store(j->client);
    j->host = loom_host_create("nccl");
    return LOOM_OK;
}

static void leave(joined *j)
{
    loom_host_set_store(NULL);
    loom_store_close(j->client);
    loom_store_server_stop(j->server);
    loom_host_destroy(j->host);
}

/* The recorded call `i` is kind/count/dtype/op/root. */
static int call_is(int i, nccl_op_kind kind, size_t count, int dtype, int op, int root)
{
    if (i >= fake.n_calls) return 0;
    const nccl_call *c = &fake.calls[i];
    return c->kind == kind && c->count == count && c->dtype == dtype && (op < 0 || c->op == op) &&
           (root < 0 || c->root == root) && fake.call_streams[i] == fake.comm_stream;
}

static int rank_main(int rank, int world, int port)
{
    alarm(30);
    fake_reset(FAKE_COMPLETE);
    joined j;
    if (join(rank, world, port, &j) != LOOM_OK) {
        fprintf(stderr, "[rank %d] join: %s\n", rank, loom_error_message());
        return 1;
    }
    const loom_store_api *store = loom_host_api_table()->service(j.host, LOOM_STORE_SERVICE, 0);
    RCHECK(store != NULL);
    loom_comm_setup s = setup_for(rank, world, port, 10.0);
    loom_comm *c = NULL;
    OK(vt->create(j.host, loom_host_api_table(), NULL, &s, &c));
    RCHECK(c != NULL);
    if (!c || !store) return 1;

    /* The id: made once, by rank 0; every init got the same bytes and its own (world, rank). */
    RCHECK(fake.unique_ids == (rank == 0 ? 1 : 0));
    RCHECK(fake.inits == 1 && fake.init_nranks == world && fake.init_rank == rank);
    if (rank == 0) RCHECK(memcmp(fake.init_id, fake.made_id, NCCL_OPS_ID_BYTES) == 0);
    char key[64];
    snprintf(key, sizeof key, "test/init_id/%d", rank);
    OK(store->set(j.host, key, fake.init_id, NCCL_OPS_ID_BYTES));
    for (int r = 0; r < world; r++) {
        unsigned char other[NCCL_OPS_ID_BYTES];
        size_t size = 0;
        snprintf(key, sizeof key, "test/init_id/%d", r);
        OK(store->get(j.host, key, other, sizeof other, &size, 10.0));
        RCHECK(size == NCCL_OPS_ID_BYTES && memcmp(other, fake.init_id, NCCL_OPS_ID_BYTES) == 0);
    }
    static const unsigned char zero[NCCL_OPS_ID_BYTES];
    RCHECK(memcmp(fake.init_id, zero, sizeof zero) != 0);

    /* Every collective, mapped. Buffers are host memory: the fake moves nothing. */
    float buf[64] = {0}, out[128] = {0};
    fake.trace[0] = 0;
    OK(vt->all_reduce(c, buf, 10, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    RCHECK(call_is(0, NCCL_KIND_ALL_REDUCE, 10, 7, 0, -1) && fake.calls[0].send == buf && fake.calls[0].recv == buf);
    /* ordered after the compute stream, its own event after it */
    RCHECK(strcmp(fake.trace, "R(ready,C) W(S,ready) I(S) R(e,S) ") == 0);
    OK(vt->all_reduce(c, buf, 7, LOOM_DTYPE_BF16, LOOM_REDUCE_MAX, NULL));
    RCHECK(call_is(1, NCCL_KIND_ALL_REDUCE, 7, 9, 2, -1));
    OK(vt->all_reduce(c, buf, 5, LOOM_DTYPE_F16, LOOM_REDUCE_MIN, NULL));
    RCHECK(call_is(2, NCCL_KIND_ALL_REDUCE, 5, 6, 3, -1));
    OK(vt->reduce_scatter(c, out, buf, 8, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    RCHECK(call_is(3, NCCL_KIND_REDUCE_SCATTER, 8, 7, 0, -1) && fake.calls[3].send == out && fake.calls[3].recv == buf);
    OK(vt->all_gather(c, buf, out, 9, LOOM_DTYPE_BF16, NULL));
    RCHECK(call_is(4, NCCL_KIND_ALL_GATHER, 9, 9, -1, -1) && fake.calls[4].recv == out);
    OK(vt->broadcast(c, buf, 11, LOOM_DTYPE_F16, 1, NULL));
    RCHECK(call_is(5, NCCL_KIND_BROADCAST, 11, 6, -1, 1));
    OK(vt->reduce(c, buf, 12, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, 1, NULL));
    RCHECK(call_is(6, NCCL_KIND_REDUCE, 12, 7, 0, 1));
    OK(vt->all_to_all(c, buf, out, 3, LOOM_DTYPE_F32, NULL));
    RCHECK(call_is(7, NCCL_KIND_ALL_TO_ALL, 3, 7, -1, -1) && fake.calls[7].nranks == world);
    OK(vt->barrier(c));
    RCHECK(call_is(8, NCCL_KIND_ALL_REDUCE, 1, 7, 0, -1) && fake.calls[8].send != buf);

    /* Asynchronous: three requests, waited in order, a blocking one issued between them. */
    loom_comm_request *req[3] = {NULL, NULL, NULL};
    OK(vt->all_reduce(c, buf, 4, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[0]));
    OK(vt->all_reduce(c, buf + 4, 4, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[1]));
    OK(vt->all_gather(c, buf, out, 2, LOOM_DTYPE_F32, NULL));
    OK(vt->reduce_scatter(c, out, buf, 2, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req[2]));
    RCHECK(req[0] && req[1] && req[2] && req[0] != req[1]);
    for (int k = 0; k < 3; k++) OK(vt->wait(c, req[k]));
    RCHECK(fake.n_calls == 13);

    /* Nothing to move: done at once, NCCL not asked, no request to wait for. */
    loom_comm_request *none = (loom_comm_request *)1;
    OK(vt->all_reduce(c, buf, 0, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &none));
    RCHECK(none == NULL && fake.n_calls == 13);
    OK(vt->wait(c, none));

    vt->destroy(c);
    RCHECK(fake.finalizes == 1 && fake.destroys == 1 && fake.aborts == 0);
    RCHECK(fake.events_created == fake.events_destroyed && fake.streams_created == fake.streams_destroyed);
    RCHECK(fake.allocs == fake.frees);
    /* Rank 0 serves the store: it leaves after every rank has read the ids (the fake's
     * barrier synchronises nothing). */
    snprintf(key, sizeof key, "test/done/%d", rank);
    OK(store->set(j.host, key, "", 0));
    if (rank == 0) {
        char names[TEST_MAX_RANKS][32];
        const char *keys[TEST_MAX_RANKS];
        for (int r = 0; r < world; r++) {
            snprintf(names[r], sizeof names[r], "test/done/%d", r);
            keys[r] = names[r];
        }
        OK(store->wait(j.host, keys, (size_t)world, 10.0));
    }
    leave(&j);
    return test_failures ? 1 : 0;
}

/* Rank 0 joins the store but never creates its communicator: rank 1 never gets the id. */
static int absent_rank_main(int rank, int world, int port)
{
    alarm(30);
    fake_reset(FAKE_COMPLETE);
    joined j;
    if (join(rank, world, port, &j) != LOOM_OK) return 1;
    if (rank == 0) {
        usleep(2500 * 1000); /* serves the store, makes no id */
    } else {
        loom_comm_setup s = setup_for(rank, world, port, 1.0);
        loom_comm *c = (loom_comm *)1;
        RCHECK(vt->create(j.host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_TIMEOUT);
        RCHECK(c == NULL);
        RCHECK(has("loom.nccl/0/unique_id"));
        RCHECK(fake.inits == 0 && fake.events_created == fake.events_destroyed && fake.allocs == fake.frees);
    }
    leave(&j);
    return test_failures ? 1 : 0;
}

/* ---- one process -------------------------------------------------------------------------- */

static loom_comm *open_one(loom_host *host, double timeout)
{
    loom_comm_setup s = setup_for(0, 1, 0, timeout);
    s.master_addr = NULL;
    loom_comm *c = NULL;
    OK(vt->create(host, loom_host_api_table(), NULL, &s, &c));
    return c;
}

static void check_arguments(loom_host *host)
{
    fake_reset(FAKE_COMPLETE);
    loom_comm *c = open_one(host, 5.0);
    CHECK(c != NULL);
    if (!c) return;
    CHECK(fake.unique_ids == 1 && fake.inits == 1); /* one rank: its own id, no store */
    float buf[8] = {0}, out[16] = {0};
    CHECK(vt->all_reduce(c, buf, 8, LOOM_DTYPE_U16, LOOM_REDUCE_SUM, NULL) == LOOM_E_INVALID);
    CHECK(has("u16") && has("all_reduce") && one_line());
    CHECK(vt->all_reduce(c, buf, 8, 99, LOOM_REDUCE_SUM, NULL) == LOOM_E_INVALID);
    CHECK(vt->all_reduce(c, buf, 8, LOOM_DTYPE_F32, 42, NULL) == LOOM_E_INVALID);
    CHECK(has("reduction 42") && one_line());
    CHECK(vt->broadcast(c, buf, 8, LOOM_DTYPE_F32, 1, NULL) == LOOM_E_INVALID);
    CHECK(has("root 1") && has("broadcast"));
    CHECK(vt->reduce(c, buf, 8, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, -1, NULL) == LOOM_E_INVALID);
    CHECK(has("root -1") && has("reduce"));
    CHECK(vt->all_gather(c, NULL, out, 8, LOOM_DTYPE_F32, NULL) == LOOM_E_INVALID);
    CHECK(has("NULL"));
    CHECK(vt->reduce_scatter(c, buf, out, SIZE_MAX / 2, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL) == LOOM_E_INVALID);
    CHECK(has("overflow"));
    CHECK(vt->all_to_all(c, buf, buf, 4, LOOM_DTYPE_F32, NULL) == LOOM_E_INVALID);
    CHECK(fake.n_calls == 0); /* no bad call reached NCCL */
    /* and none of them broke the communicator */
    OK(vt->all_reduce(c, buf, 8, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL));
    OK(vt->all_reduce(c, buf, 2, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    CHECK(call_is(1, NCCL_KIND_ALL_REDUCE, 2, 8, 0, -1));
    OK(vt->all_reduce(c, buf, 2, LOOM_DTYPE_I64, LOOM_REDUCE_MAX, NULL));
    CHECK(call_is(2, NCCL_KIND_ALL_REDUCE, 2, 4, 2, -1));
    vt->destroy(c);

    /* Buffers in CPU memory: gloo's job. */
    loom_comm_setup s = setup_for(0, 1, 0, 5.0);
    s.device = LOOM_DEVICE_CPU;
    c = (loom_comm *)1;
    CHECK(vt->create(host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_UNSUPPORTED);
    CHECK(c == NULL && has("GPU") && has("--ddp_backend gloo") && one_line());
    /* Two ranks and no store to carry the id. */
    fake_reset(FAKE_COMPLETE);
    s = setup_for(0, 2, 1, 5.0);
    CHECK(vt->create(host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_INVALID);
    CHECK(c == NULL && has("rendezvous store") && has("loom launch") && one_line());
    CHECK(fake.events_created == fake.events_destroyed && fake.allocs == fake.frees);
    /* A rank outside the world. */
    s = setup_for(2, 2, 1, 5.0);
    CHECK(vt->create(host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_INVALID);
    /* No NCCL on this machine. */
    fake_reset(FAKE_COMPLETE);
    fake.missing = 1;
    s = setup_for(0, 1, 0, 5.0);
    CHECK(vt->create(host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_UNSUPPORTED);
    CHECK(c == NULL && has("NCCL is not installed") && one_line());
}

/* Host memory (the trainer's own sums and gathers) travels through a device buffer: copied
 * in, reduced, copied back; NCCL never sees the host address. Device memory goes straight. */
static void check_host_memory(loom_host *host)
{
    fake_reset(FAKE_COMPLETE);
    fake.move_data = 1;
    loom_comm *c = open_one(host, 5.0);
    CHECK(c != NULL);
    if (!c) return;
    int allocs = fake.allocs;
    double sums[3] = {1.0, 2.5, -4.0};
    fake_mark_host(sums, sizeof sums);
    fake.trace[0] = 0;
    OK(vt->all_reduce(c, sums, 3, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    CHECK(sums[0] == 2.0 && sums[1] == 3.5 && sums[2] == -3.0); /* the device's result came back */
    CHECK(fake.n_calls == 1 && fake.calls[0].send != sums && fake.calls[0].send == fake.calls[0].recv);
    CHECK(call_is(0, NCCL_KIND_ALL_REDUCE, 3, NCCL_OPS_FLOAT64, NCCL_OPS_SUM, -1));
    CHECK(strstr(fake.trace, "C(H2D) R(ready,C) W(S,ready) I(S) R(e,S) C(D2H)") != NULL);
    CHECK(fake.allocs == allocs + 1);

    /* Asked asynchronously: done on return, no request to wait for. A smaller call reuses the
     * buffer. */
    loom_comm_request *req = (loom_comm_request *)1;
    OK(vt->all_reduce(c, sums, 1, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, &req));
    CHECK(req == NULL && sums[0] == 3.0 && sums[1] == 3.5);
    CHECK(fake.allocs == allocs + 1 && fake.copies == 4);

    /* Separate send and receive buffers, the receive one world_size blocks long, larger than
     * the buffer so far. */
    unsigned char mine[40], all[40] = {0};
    for (int i = 0; i < 40; i++)
        mine[i] = (unsigned char)(7 * i);
    fake_mark_host(mine, sizeof mine);
    fake_mark_host(all, sizeof all);
    OK(vt->all_gather(c, mine, all, 40, LOOM_DTYPE_U8, NULL));
    CHECK(memcmp(all, mine, 40) == 0 && fake.calls[2].send != mine && fake.calls[2].recv != all);
    CHECK(fake.calls[2].send != fake.calls[2].recv && fake.allocs == allocs + 2 && fake.frees == 1);

    /* Device memory (anything not marked host here) reaches NCCL as it is, without copies. */
    double on_device[2] = {5.0, 6.0};
    int copies = fake.copies;
    OK(vt->all_reduce(c, on_device, 2, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    CHECK(fake.calls[3].send == on_device && fake.copies == copies && on_device[0] == 6.0);

    /* Outgrowing the buffer while an asynchronous collective is in flight frees nothing
     * (cudaFree would wait for the device, and so for a collective stuck on a dead peer); the
     * old buffer goes once nothing is pending. */
    loom_comm_request *in_flight = NULL;
    OK(vt->all_reduce(c, on_device, 2, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, &in_flight));
    CHECK(in_flight != NULL);
    int frees = fake.frees;
    double more[12] = {0};
    fake_mark_host(more, sizeof more);
    fake.trace[0] = 0;
    OK(vt->all_reduce(c, more, 12, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    CHECK(more[11] == 1.0 && fake.allocs == allocs + 3 && fake.frees == frees && strchr(fake.trace, 'F') == NULL);
    OK(vt->wait(c, in_flight));
    double most[16] = {0};
    fake_mark_host(most, sizeof most);
    OK(vt->all_reduce(c, most, 16, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL));
    CHECK(most[15] == 1.0 && fake.allocs == allocs + 4 && fake.frees == frees + 2);
    vt->destroy(c);
    CHECK(fake.allocs == fake.frees && fake.events_created == fake.events_destroyed);
}

static void check_failures(loom_host *host)
{
    float buf[1000] = {0};

    /* A frozen peer, blocking: a timeout naming the operation, one abort, then refusals. */
    fake_reset(FAKE_FROZEN);
    loom_comm *c = open_one(host, 0.3);
    CHECK(c != NULL);
    if (c) {
        CHECK(vt->all_reduce(c, buf, 1000, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL) == LOOM_E_TIMEOUT);
        CHECK(has("all_reduce(sum, 1000 x f32)") && has("--ddp_timeout") && has("aborted") && one_line());
        CHECK(fake.aborts == 1);
        int calls = fake.n_calls;
        CHECK(vt->broadcast(c, buf, 4, LOOM_DTYPE_F32, 0, NULL) == LOOM_E_TIMEOUT);
        CHECK(has("all_reduce(sum, 1000 x f32)")); /* the first error, again */
        CHECK(vt->barrier(c) == LOOM_E_TIMEOUT);
        CHECK(fake.n_calls == calls && fake.aborts == 1);
        vt->destroy(c);
        CHECK(fake.destroys == 0 && fake.finalizes == 0 && fake.aborts == 1); /* aborted, not destroyed again */
        CHECK(fake.events_created == fake.events_destroyed && fake.allocs == fake.frees);
    }

    /* Frozen, asynchronous: issuing works, the wait times out. */
    fake_reset(FAKE_FROZEN);
    c = open_one(host, 0.3);
    if (c) {
        loom_comm_request *r = NULL;
        OK(vt->reduce_scatter(c, buf, buf + 500, 500, LOOM_DTYPE_BF16, LOOM_REDUCE_SUM, &r));
        CHECK(r != NULL);
        CHECK(vt->wait(c, r) == LOOM_E_TIMEOUT);
        CHECK(has("reduce_scatter(sum, 500 x bf16 per rank)") && one_line());
        CHECK(fake.aborts == 1);
        vt->destroy(c);
        CHECK(fake.events_created == fake.events_destroyed);
    }

    /* A request left pending at destroy: aborted, not finalized (finalize would wait for it). */
    fake_reset(FAKE_FROZEN);
    c = open_one(host, 30.0);
    if (c) {
        loom_comm_request *r = NULL;
        OK(vt->all_gather(c, buf, buf + 100, 10, LOOM_DTYPE_F16, &r));
        vt->destroy(c);
        CHECK(fake.aborts == 1 && fake.finalizes == 0);
    }

    /* A dead peer: NCCL reports it; the error carries NCCL's detail. */
    fake_reset(FAKE_REMOTE_ERROR);
    c = open_one(host, 30.0);
    if (c) {
        CHECK(vt->all_reduce(c, buf, 16, LOOM_DTYPE_F16, LOOM_REDUCE_SUM, NULL) == LOOM_E_COMM);
        CHECK(has("all_reduce(sum, 16 x f16)") && has("peer rank 1 closed") && one_line());
        CHECK(fake.aborts == 1);
        vt->destroy(c);
    }

    /* A non-blocking enqueue that settles after a few polls is fine. */
    fake_reset(FAKE_ENQUEUE_PENDING);
    c = open_one(host, 5.0);
    if (c) {
        OK(vt->broadcast(c, buf, 3, LOOM_DTYPE_F32, 0, NULL));
        CHECK(fake.pending_polls == 0 && fake.aborts == 0);
        vt->destroy(c);
    }

    /* An init that never settles (a rank did not join). */
    fake_reset(FAKE_INIT_FROZEN);
    loom_comm_setup s = setup_for(0, 1, 0, 0.3);
    c = (loom_comm *)1;
    CHECK(vt->create(host, loom_host_api_table(), NULL, &s, &c) == LOOM_E_TIMEOUT);
    CHECK(c == NULL && has("init (rank 0 of 1)") && has("--ddp_timeout") && one_line());
    CHECK(fake.aborts == 1 && fake.events_created == fake.events_destroyed && fake.allocs == fake.frees);
}

int main(void)
{
    alarm(60);
    CHECK(!(vt->flags & LOOM_COMM_ORDERED_SUM)); /* ring order: says so */
    /* fork before this process starts any thread of its own */
    CHECK(test_run_ranks("id exchange and collectives", 2, rank_main));
    CHECK(test_run_ranks("id exchange and collectives", 3, rank_main));
    CHECK(test_run_ranks("rank 0 never creates", 2, absent_rank_main));
    test_rank = 0;
    loom_host *host = loom_host_create("nccl");
    check_arguments(host);
    check_host_memory(host);
    check_failures(host);
    loom_host_destroy(host);
    return test_finish("test_comm_nccl");
}
