/*
 * nccl_comm.c - the communicator of a multi-GPU run: NCCL on device buffers
 * (docs/gpu.md#nccl). Everything here is host logic; NCCL and CUDA are reached only through
 * the nccl_ops table (nccl_ops.h), so a test runs this file on a fake.
 *
 * Joining: rank 0 makes NCCL's unique id and publishes it in the host's rendezvous store
 * (LOOM_STORE_SERVICE) under a key per instance; the other ranks read it from there, so NCCL
 * needs no transport of its own for the id. The communicator is created non-blocking, so that
 * a rank that never joins is a timeout here and not a hang inside NCCL.
 *
 * Streams: collectives run on a stream of their own. Each one first makes that stream wait
 * for an event recorded on the compute stream (the gradients a bucket carries were written
 * there), and records a second event when it is done; an asynchronous collective hands that
 * second event out as its request, so backward goes on computing while the bucket travels.
 *
 * Failures: waiting is a loop that asks the event whether the work is done and NCCL whether
 * the communicator has failed (ncclCommGetAsyncError, which reports a peer's death), until
 * the setup's timeout (--ddp_timeout) passes; then the communicator is aborted
 * (ncclCommAbort, which ends the kernels that wait for the lost peer) and the operation fails
 * with LOOM_E_TIMEOUT naming it. After any failure the ranks are out of step: the instance
 * refuses every further operation with its first error, as the gloo communicator does.
 *
 * Host memory: NCCL's kernels read and write device memory only (a pageable host pointer is an
 * illegal address to them), but the trainer reduces a few values of its own in host memory
 * through every comm plugin (the gradient norm's pieces, evaluation sums, agreement flags, the
 * gathered predictions). Such a collective goes through a device buffer of the instance:
 * copied in, run blocking, copied back.
 *
 * Order: NCCL reduces in the order of its ring or tree, not in rank order, so the vtable
 * leaves LOOM_COMM_ORDERED_SUM out (docs/gpu.md#nccl says what that means for parity).
 */
#include "nccl_comm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <loom/plugin.h>

#include "nccl_ops.h"

static unsigned long instance_counter; /* instances are created in the same order on every rank */

typedef enum nccl_state { NCCL_READY, NCCL_FAILED } nccl_state;

struct loom_comm {
    loom_host *host;
    const loom_host_api *api;
    const nccl_ops *ops;
    void *comm;        /* ncclComm_t */
    void *stream;      /* the communication stream */
    void *ready;       /* recorded on the compute stream before each collective */
    void *scratch;     /* 4 device bytes: barrier's all_reduce */
    void *staging;     /* device memory for host buffers (stage_host), grown on demand */
    size_t staging_bytes;
    /* Staging buffers outgrown while asynchronous collectives were in flight: cudaFree waits
     * for the whole device, so freeing one then would hang on a collective stuck on a dead
     * peer instead of letting its wait time out. Freed once nothing is pending, or at destroy. */
    struct retired_buffer *retired;
    int rank, world;
    double timeout;    /* seconds, for init and every wait */
    nccl_state state;
    loom_status failure;   /* the first error, returned again by every later operation */
    char message[512];
    int pending;       /* requests handed out and not yet waited for */
    struct loom_comm_request *outstanding; /* those requests, freed by destroy if never waited for */
};

struct retired_buffer {
    struct retired_buffer *next;
    void *ptr;
};

struct loom_comm_request {
    struct loom_comm_request *prev, *next; /* in loom_comm.outstanding while handed out */
    void *done;         /* recorded on the communication stream after the collective */
    double deadline;
    char what[96];      /* "all_reduce(sum, 1000 x f32)" */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sleep between polls: short at first (a collective often ends within microseconds), then up
 * to a millisecond so a long wait does not burn a core. */
static void backoff(long *ns)
{
    struct timespec ts = {0, *ns};
    nanosleep(&ts, NULL);
    if (*ns < 1000000) *ns *= 2;
}

static loom_status fail(loom_comm *self, loom_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loom_status fail(loom_comm *self, loom_status code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return self->api->fail(self->host, code, "%s", text);
}

/* The instance cannot go on: remember the first error (returned by every later call). */
static loom_status fail_sticky(loom_comm *self, loom_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loom_status fail_sticky(loom_comm *self, loom_status code, const char *fmt, ...)
{
    if (self->state != NCCL_FAILED) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(self->message, sizeof self->message, fmt, ap);
        va_end(ap);
        self->state = NCCL_FAILED;
        self->failure = code;
    }
    return self->api->fail(self->host, self->failure, "%s", self->message);
}

static const char *nccl_text(const loom_comm *self, int result)
{
    const char *detail = self->comm && self->ops->last_error ? self->ops->last_error(self->comm) : NULL;
    if (detail && *detail) return detail;
    const char *s = self->ops->error_string ? self->ops->error_string(result) : NULL;
    return s ? s : "unknown NCCL error";
}

static const char *cuda_text(const loom_comm *self, int error)
{
    const char *s = self->ops->cuda_error_string ? self->ops->cuda_error_string(error) : NULL;
    return s ? s : "unknown CUDA error";
}

/* Abort once: ends NCCL's kernels that wait for a lost peer, so nothing hangs after us. */
static void abort_comm(loom_comm *self)
{
    if (!self->comm) return;
    (void)self->ops->comm_abort(self->comm);
    self->comm = NULL;
}

/* ---- mapping ------------------------------------------------------------------------------ */

static int nccl_dtype(uint32_t dtype)
{
    switch (dtype) {
    case LOOM_DTYPE_F32: return NCCL_OPS_FLOAT32;
    case LOOM_DTYPE_F16: return NCCL_OPS_FLOAT16;
    case LOOM_DTYPE_BF16: return NCCL_OPS_BFLOAT16;
    case LOOM_DTYPE_F64: return NCCL_OPS_FLOAT64;
    case LOOM_DTYPE_I32: return NCCL_OPS_INT32;
    case LOOM_DTYPE_I64: return NCCL_OPS_INT64;
    case LOOM_DTYPE_U8: return NCCL_OPS_UINT8;
    default: return -1; /* u16 has no NCCL type */
    }
}

static int nccl_op(uint32_t op)
{
    switch (op) {
    case LOOM_REDUCE_SUM: return NCCL_OPS_SUM;
    case LOOM_REDUCE_MAX: return NCCL_OPS_MAX;
    case LOOM_REDUCE_MIN: return NCCL_OPS_MIN;
    default: return -1;
    }
}

static const char *op_name(uint32_t op)
{
    return op == LOOM_REDUCE_SUM ? "sum" : op == LOOM_REDUCE_MAX ? "max" : "min";
}

/* ---- waiting -------------------------------------------------------------------------------- */

/* NCCL's asynchronous state once it leaves "in progress", or NCCL_OPS_IN_PROGRESS when the
 * deadline passes first. */
static int poll_state(loom_comm *self, double deadline)
{
    long ns = 20000;
    for (;;) {
        int state = NCCL_OPS_IN_PROGRESS;
        int r = self->ops->comm_get_async_error(self->comm, &state);
        if (r != NCCL_OPS_SUCCESS) return r;
        if (state != NCCL_OPS_IN_PROGRESS || now_seconds() > deadline) return state;
        backoff(&ns);
    }
}

/* Until a non-blocking step (init, an enqueue) has finished; `what` names it for the messages. */
static loom_status settle(loom_comm *self, const char *what)
{
    int state = poll_state(self, now_seconds() + self->timeout);
    if (state == NCCL_OPS_SUCCESS) return LOOM_OK;
    if (state == NCCL_OPS_IN_PROGRESS) {
        abort_comm(self);
        return fail_sticky(self, LOOM_E_TIMEOUT,
                           "%s did not finish within %g s (--ddp_timeout) on rank %d of %d: a rank is dead "
                           "or stuck; the communicator was aborted",
                           what, self->timeout, self->rank, self->world);
    }
    const char *text = nccl_text(self, state);
    abort_comm(self);
    return fail_sticky(self, state == NCCL_OPS_REMOTE_ERROR ? LOOM_E_COMM : LOOM_E_DEVICE,
                       "%s failed on rank %d of %d: %s; the communicator was aborted", what, self->rank,
                       self->world, text);
}

/* Until the request's event is reached, the communicator fails, or the deadline passes. */
static loom_status wait_done(loom_comm *self, loom_comm_request *req)
{
    long ns = 5000;
    for (;;) {
        int q = self->ops->event_query(req->done);
        if (q == 0) return LOOM_OK;
        if (q != NCCL_OPS_NOT_READY) {
            abort_comm(self);
            return fail_sticky(self, LOOM_E_DEVICE, "%s: the device failed on rank %d of %d: %s", req->what,
                               self->rank, self->world, cuda_text(self, q));
        }
        int state = NCCL_OPS_SUCCESS;
        int r = self->ops->comm_get_async_error(self->comm, &state);
        if (r != NCCL_OPS_SUCCESS) state = r;
        if (state != NCCL_OPS_SUCCESS && state != NCCL_OPS_IN_PROGRESS) {
            const char *text = nccl_text(self, state);
            abort_comm(self);
            return fail_sticky(self, LOOM_E_COMM, "%s failed on rank %d of %d: %s; the communicator was aborted",
                               req->what, self->rank, self->world, text);
        }
        if (now_seconds() > req->deadline) {
            abort_comm(self);
            return fail_sticky(self, LOOM_E_TIMEOUT,
                               "%s did not finish within %g s (--ddp_timeout) on rank %d of %d: a peer is dead "
                               "or stuck; the communicator was aborted",
                               req->what, self->timeout, self->rank, self->world);
        }
        backoff(&ns);
    }
}

static void free_request(loom_comm *self, loom_comm_request *req)
{
    if (!req) return;
    if (req->done) (void)self->ops->event_destroy(req->done);
    self->api->free_memory(self->host, req);
}

/* ---- issuing ------------------------------------------------------------------------------ */

static loom_status check_usable(loom_comm *self)
{
    if (self->state == NCCL_FAILED) return self->api->fail(self->host, self->failure, "%s", self->message);
    return LOOM_OK;
}

/* Checks common to every collective; fills call->dtype and call->op. */
static loom_status check_call(loom_comm *self, const char *name, nccl_call *call, uint32_t dtype, int reduction,
                              uint32_t op)
{
    loom_status st = check_usable(self);
    if (st != LOOM_OK) return st;
    call->dtype = nccl_dtype(dtype);
    if (call->dtype < 0)
        return fail(self, LOOM_E_INVALID, "%s: dtype %s (%u) has no NCCL type", name,
                    loom_dtype_name(dtype) ? loom_dtype_name(dtype) : "unknown", dtype);
    if (reduction) {
        call->op = nccl_op(op);
        if (call->op < 0) return fail(self, LOOM_E_INVALID, "%s: unknown reduction %u", name, op);
    }
    if (call->kind == NCCL_KIND_BROADCAST || call->kind == NCCL_KIND_REDUCE) {
        if (call->root < 0 || call->root >= self->world)
            return fail(self, LOOM_E_INVALID, "%s: root %d is not a rank of %d", name, call->root, self->world);
    }
    size_t elem = loom_dtype_size(dtype);
    size_t total = call->count;
    int spread = call->kind == NCCL_KIND_REDUCE_SCATTER || call->kind == NCCL_KIND_ALL_GATHER ||
                 call->kind == NCCL_KIND_ALL_TO_ALL;
    if (spread && total > SIZE_MAX / (size_t)self->world)
        return fail(self, LOOM_E_INVALID, "%s: %zu x %d ranks elements overflow", name, call->count, self->world);
    if (spread) total *= (size_t)self->world;
    if (total > SIZE_MAX / elem) return fail(self, LOOM_E_INVALID, "%s: %zu elements overflow", name, total);
    if (call->count && (!call->recv || !call->send))
        return fail(self, LOOM_E_INVALID, "%s: NULL buffer for %zu elements", name, call->count);
    return LOOM_OK;
}

/* Issue one collective on the communication stream, after the compute stream's work so far;
 * blocking (request NULL) waits for it, else *request gets its event. */
static loom_status run(loom_comm *self, const nccl_call *call, const char *what, loom_comm_request **request)
{
    if (request) *request = NULL;
    loom_comm_request *req = self->api->alloc(self->host, sizeof *req, 0, LOOM_DEVICE_CPU, 0);
    if (!req) return fail(self, LOOM_E_NOMEM, "out of memory");
    memset(req, 0, sizeof *req);
    snprintf(req->what, sizeof req->what, "%s", what);
    int e = self->ops->event_create(&req->done);
    if (e != 0) {
        req->done = NULL;
        free_request(self, req);
        return fail_sticky(self, LOOM_E_DEVICE, "%s: cannot create an event: %s", what, cuda_text(self, e));
    }
    if ((e = self->ops->event_record(self->ready, NULL)) != 0 ||
        (e = self->ops->stream_wait_event(self->stream, self->ready)) != 0) {
        free_request(self, req);
        return fail_sticky(self, LOOM_E_DEVICE, "%s: cannot order it after the compute stream: %s", what,
                           cuda_text(self, e));
    }
    int r = self->ops->issue(self->comm, call, self->stream);
    if (r == NCCL_OPS_IN_PROGRESS) {
        loom_status st = settle(self, what);
        if (st != LOOM_OK) {
            free_request(self, req);
            return st;
        }
    } else if (r != NCCL_OPS_SUCCESS) {
        const char *text = nccl_text(self, r);
        free_request(self, req);
        abort_comm(self);
        return fail_sticky(self, r == NCCL_OPS_REMOTE_ERROR ? LOOM_E_COMM : LOOM_E_DEVICE,
                           "%s failed on rank %d of %d: %s; the communicator was aborted", what, self->rank,
                           self->world, text);
    }
    if ((e = self->ops->event_record(req->done, self->stream)) != 0) {
        free_request(self, req);
        return fail_sticky(self, LOOM_E_DEVICE, "%s: cannot record its event: %s", what, cuda_text(self, e));
    }
    req->deadline = now_seconds() + self->timeout;
    if (request) {
        self->pending++;
        req->next = self->outstanding;
        if (req->next) req->next->prev = req;
        self->outstanding = req;
        *request = req;
        return LOOM_OK;
    }
    loom_status st = wait_done(self, req);
    free_request(self, req);
    return st;
}

/* The bytes a collective reads from send and writes to recv (count is per rank, as NCCL's). */
static void call_bytes(const loom_comm *self, const nccl_call *call, size_t elem, size_t *send, size_t *recv)
{
    size_t one = call->count * elem, all = one * (size_t)self->world; /* check_call ruled out overflow */
    *send = call->kind == NCCL_KIND_REDUCE_SCATTER || call->kind == NCCL_KIND_ALL_TO_ALL ? all : one;
    *recv = call->kind == NCCL_KIND_ALL_GATHER || call->kind == NCCL_KIND_ALL_TO_ALL ? all : one;
}

/* Keeps an outgrown staging buffer until nothing is in flight; 0 when there is no memory to
 * remember it (the caller then frees it at once, as before). */
static int retire(loom_comm *self, void *ptr)
{
    struct retired_buffer *r = self->api->alloc(self->host, sizeof *r, 0, LOOM_DEVICE_CPU, 0);
    if (!r) return 0;
    r->ptr = ptr;
    r->next = self->retired;
    self->retired = r;
    return 1;
}

static void free_retired(loom_comm *self)
{
    while (self->retired) {
        struct retired_buffer *r = self->retired;
        self->retired = r->next;
        (void)self->ops->device_free(r->ptr);
        self->api->free_memory(self->host, r);
    }
}

/* A collective on host memory, through the staging buffer; done when it returns, so an
 * asynchronous caller gets no request (as from a collective of nothing). */
static loom_status stage_host(loom_comm *self, const nccl_call *call, size_t elem, const char *what,
                              loom_comm_request **request)
{
    if (request) *request = NULL;
    size_t send_bytes, recv_bytes;
    call_bytes(self, call, elem, &send_bytes, &recv_bytes);
    /* One buffer only when the collective reads and writes the same bytes: an all_gather or a
     * reduce_scatter handed one address for both still needs room for both sizes. */
    int in_place = call->send == call->recv && send_bytes == recv_bytes;
    size_t need = in_place ? send_bytes : send_bytes + recv_bytes;
    int e;
    if (need > self->staging_bytes) {
        if (self->pending == 0) free_retired(self);
        if (self->staging && (self->pending == 0 || !retire(self, self->staging)))
            (void)self->ops->device_free(self->staging);
        self->staging = NULL;
        self->staging_bytes = 0;
        if ((e = self->ops->device_alloc(&self->staging, need)) != 0) {
            self->staging = NULL;
            return fail(self, LOOM_E_NOMEM, "%s: cannot allocate %zu device bytes to stage host memory: %s", what, need,
                        cuda_text(self, e));
        }
        self->staging_bytes = need;
    }
    nccl_call staged = *call;
    staged.send = self->staging;
    staged.recv = in_place ? self->staging : (char *)self->staging + send_bytes;
    if ((e = self->ops->copy(self->staging, call->send, send_bytes)) != 0)
        return fail_sticky(self, LOOM_E_DEVICE, "%s: cannot copy host memory to the device: %s", what,
                           cuda_text(self, e));
    loom_status st = run(self, &staged, what, NULL);
    if (st != LOOM_OK) return st;
    if ((e = self->ops->copy(call->recv, staged.recv, recv_bytes)) != 0)
        return fail_sticky(self, LOOM_E_DEVICE, "%s: cannot copy the result back to host memory: %s", what,
                           cuda_text(self, e));
    return LOOM_OK;
}

static loom_status submit(loom_comm *self, const nccl_call *call, uint32_t dtype, const char *what,
                          loom_comm_request **request)
{
    /* Every bucket of every step asks: one CUDA query for an in-place collective. */
    if (self->ops->is_host_memory(call->send) || (call->recv != call->send && self->ops->is_host_memory(call->recv)))
        return stage_host(self, call, loom_dtype_size(dtype), what, request);
    return run(self, call, what, request);
}

static loom_status nccl_wait(loom_comm *self, loom_comm_request *req)
{
    if (!req) return LOOM_OK; /* a collective that moved nothing */
    self->pending--;
    if (req->prev)
        req->prev->next = req->next;
    else
        self->outstanding = req->next;
    if (req->next) req->next->prev = req->prev;
    /* After a failure the communicator is gone: the event may never be reached. */
    loom_status st = self->state == NCCL_FAILED ? check_usable(self) : wait_done(self, req);
    free_request(self, req);
    return st;
}

/* A collective of nothing completes at once: NCCL would accept it, but there is nothing to order. */
#define NOTHING_TO_DO(count, request)                                                                          \
    do {                                                                                                       \
        if ((count) == 0) {                                                                                    \
            if (request) *(request) = NULL;                                                                    \
            return LOOM_OK;                                                                                    \
        }                                                                                                      \
    } while (0)

static loom_status nccl_all_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                                   loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_ALL_REDUCE, .send = buffer, .recv = buffer, .count = count};
    loom_status st = check_call(self, "all_reduce", &call, dtype, 1, op);
    if (st != LOOM_OK) return st;
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "all_reduce(%s, %zu x %s)", op_name(op), count, loom_dtype_name(dtype));
    return submit(self, &call, dtype, what, request);
}

static loom_status nccl_reduce_scatter(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                       uint32_t op, loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_REDUCE_SCATTER, .send = send, .recv = recv, .count = count};
    loom_status st = check_call(self, "reduce_scatter", &call, dtype, 1, op);
    if (st != LOOM_OK) return st;
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "reduce_scatter(%s, %zu x %s per rank)", op_name(op), count, loom_dtype_name(dtype));
    return submit(self, &call, dtype, what, request);
}

static loom_status nccl_all_gather(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                   loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_ALL_GATHER, .send = send, .recv = recv, .count = count};
    loom_status st = check_call(self, "all_gather", &call, dtype, 0, 0);
    if (st != LOOM_OK) return st;
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "all_gather(%zu x %s per rank)", count, loom_dtype_name(dtype));
    return submit(self, &call, dtype, what, request);
}

static loom_status nccl_broadcast(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                                  loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_BROADCAST, .send = buffer, .recv = buffer, .count = count, .root = root};
    loom_status st = check_call(self, "broadcast", &call, dtype, 0, 0);
    if (st != LOOM_OK) return st;
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "broadcast(%zu x %s from rank %d)", count, loom_dtype_name(dtype), root);
    return submit(self, &call, dtype, what, request);
}

static loom_status nccl_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op, int32_t root,
                               loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_REDUCE, .send = buffer, .recv = buffer, .count = count, .root = root};
    loom_status st = check_call(self, "reduce", &call, dtype, 1, op);
    if (st != LOOM_OK) return st;
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "reduce(%s, %zu x %s to rank %d)", op_name(op), count, loom_dtype_name(dtype), root);
    return submit(self, &call, dtype, what, request);
}

static loom_status nccl_all_to_all(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                   loom_comm_request **request)
{
    nccl_call call = {.kind = NCCL_KIND_ALL_TO_ALL, .send = send, .recv = recv, .count = count, .nranks = self->world};
    loom_status st = check_call(self, "all_to_all", &call, dtype, 0, 0);
    if (st != LOOM_OK) return st;
    if (send == recv && count)
        return fail(self, LOOM_E_INVALID, "all_to_all: send and recv must be different buffers");
    NOTHING_TO_DO(count, request);
    char what[96];
    snprintf(what, sizeof what, "all_to_all(%zu x %s per rank)", count, loom_dtype_name(dtype));
    return submit(self, &call, dtype, what, request);
}

/* Every rank has reached this point: a one-element all_reduce, waited for, as torch's barrier. */
static loom_status nccl_barrier(loom_comm *self)
{
    loom_status st = check_usable(self);
    if (st != LOOM_OK) return st;
    nccl_call call = {.kind = NCCL_KIND_ALL_REDUCE, .send = self->scratch, .recv = self->scratch, .count = 1,
                      .dtype = NCCL_OPS_FLOAT32, .op = NCCL_OPS_SUM};
    return run(self, &call, "barrier", NULL);
}

/* ---- joining and leaving ------------------------------------------------------------------ */

static void nccl_destroy(loom_comm *self)
{
    if (!self) return;
    if (self->comm) {
        /* A clean leave flushes what was issued; pending requests or a finalize that does not
         * finish in time abort instead, so leaving never hangs. */
        int clean = self->pending == 0 && self->state == NCCL_READY;
        if (clean) {
            int r = self->ops->comm_finalize(self->comm);
            if (r == NCCL_OPS_IN_PROGRESS)
                r = poll_state(self, now_seconds() + (self->timeout < 30 ? self->timeout : 30));
            clean = r == NCCL_OPS_SUCCESS;
        }
        if (clean) {
            (void)self->ops->comm_destroy(self->comm);
            self->comm = NULL;
        } else
            abort_comm(self);
    }
    /* Requests never waited for: the communicator is gone (aborted), their events with it. */
    while (self->outstanding) {
        struct loom_comm_request *req = self->outstanding;
        self->outstanding = req->next;
        free_request(self, req);
    }
    if (self->scratch) (void)self->ops->device_free(self->scratch);
    if (self->staging) (void)self->ops->device_free(self->staging);
    free_retired(self);
    if (self->ready) (void)self->ops->event_destroy(self->ready);
    if (self->stream) (void)self->ops->stream_destroy(self->stream);
    self->api->free_memory(self->host, self);
}

/* The unique id: rank 0 makes it and puts it in the store, the others read it there. */
static loom_status exchange_id(loom_comm *self, unsigned long instance, unsigned char id[NCCL_OPS_ID_BYTES])
{
    char key[96];
    snprintf(key, sizeof key, NCCL_ID_KEY_FORMAT, instance);
    if (self->rank == 0) {
        int r = self->ops->get_unique_id(id);
        if (r != NCCL_OPS_SUCCESS)
            return fail(self, LOOM_E_DEVICE, "ncclGetUniqueId failed: %s", nccl_text(self, r));
    }
    if (self->world == 1) return LOOM_OK;
    const loom_store_api *store = self->api->service(self->host, LOOM_STORE_SERVICE, 0);
    if (!store)
        return fail(self, LOOM_E_INVALID,
                    "rank %d of %d has no rendezvous store to exchange NCCL's unique id: start the ranks with "
                    "loom launch (or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)",
                    self->rank, self->world);
    if (self->rank == 0) return store->set(self->host, key, id, NCCL_OPS_ID_BYTES);
    size_t size = 0;
    loom_status st = store->get(self->host, key, id, NCCL_OPS_ID_BYTES, &size, self->timeout);
    if (st != LOOM_OK) return st; /* the store named the key and its address */
    if (size != NCCL_OPS_ID_BYTES)
        return fail(self, LOOM_E_FORMAT, "the unique id in the store (%s) has %zu bytes, not %d", key, size,
                    NCCL_OPS_ID_BYTES);
    return LOOM_OK;
}

static loom_status nccl_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               const loom_comm_setup *setup, loom_comm **out)
{
    (void)config;
    *out = NULL;
    if (setup->device != LOOM_DEVICE_CUDA)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "--ddp_backend nccl needs the run on a GPU (NCCL moves GPU memory), and this run's buffers "
                         "are in CPU memory: use --ddp_backend gloo");
    if (setup->world_size < 1 || setup->rank < 0 || setup->rank >= setup->world_size)
        return api->fail(host, LOOM_E_INVALID, "rank %d of %d is not a rank", setup->rank, setup->world_size);
    char why[512] = "";
    const nccl_ops *ops = nccl_ops_load(why, sizeof why);
    if (!ops) return api->fail(host, LOOM_E_UNSUPPORTED, "%s", why);

    loom_comm *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->ops = ops;
    self->rank = setup->rank;
    self->world = setup->world_size;
    self->timeout = setup->timeout_seconds > 0 ? setup->timeout_seconds : 1800.0;
    self->state = NCCL_READY;
    unsigned long instance = instance_counter++;

    loom_status st = LOOM_OK;
    int e = ops->stream_create(&self->stream);
    if (e == 0) e = ops->event_create(&self->ready);
    if (e == 0) e = ops->device_alloc(&self->scratch, 4);
    if (e != 0) {
        st = fail(self, LOOM_E_DEVICE, "cannot create its stream, event or scratch: %s", cuda_text(self, e));
        goto out;
    }
    unsigned char id[NCCL_OPS_ID_BYTES] = {0};
    if ((st = exchange_id(self, instance, id)) != LOOM_OK) goto out;
    int r = ops->comm_init_rank(&self->comm, self->world, id, self->rank);
    if (r != NCCL_OPS_SUCCESS && r != NCCL_OPS_IN_PROGRESS) {
        st = fail(self, LOOM_E_DEVICE, "ncclCommInitRankConfig (rank %d of %d) failed: %s", self->rank,
                  self->world, nccl_text(self, r));
        abort_comm(self);
        goto out;
    }
    char what[64];
    snprintf(what, sizeof what, "init (rank %d of %d)", self->rank, self->world);
    st = settle(self, what);
out:
    if (st != LOOM_OK) {
        nccl_destroy(self);
        return st;
    }
    *out = self;
    return LOOM_OK;
}

const loom_comm_vtable nccl_comm_vtable = {
    LOOM_HEADER_INIT(loom_comm_vtable),
    .flags = 0, /* ring/tree order, not rank order: docs/gpu.md#nccl */
    .create = nccl_create,
    .destroy = nccl_destroy,
    .all_reduce = nccl_all_reduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .reduce = nccl_reduce,
    .all_to_all = nccl_all_to_all,
    .barrier = nccl_barrier,
    .wait = nccl_wait,
};
