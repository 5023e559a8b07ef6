/*
 * gloo_comm.cpp - the communicator of a multi-process CPU run: Gloo over TCP, and shared memory
 * between ranks of one machine for the collectives loom's strategies use (gloo_shm.cpp), with
 * buffers every rank maps summed in place (alloc_shared, gloo_shared.cpp).
 *
 * Rendezvous goes through the host's key-value store (LOOM_STORE_SERVICE), adapted to Gloo's
 * Store interface and prefixed per instance; every rank then opens a TCP connection to every
 * other rank (Gloo's full mesh).
 *
 * Reductions are canonical (comm.h): a SUM is ((r0 + r1) + r2) + ... for every element,
 * whatever the world size. An all-reduce is an ordered reduce-scatter - gloo::alltoall hands
 * each rank every rank's copy of its block, which it sums locally in rank order - followed by
 * gloo::allgather. That moves the same bytes as a ring all-reduce, and measured as fast on this
 * machine (docs/benchmarks.md#allreduce), while Gloo's own ring is not reproducible. Small
 * buffers take one gloo::allgather of the whole buffer and a local reduction instead.
 *
 * Threads: Gloo operations on one context must never overlap, so each instance runs its
 * operations one at a time, in submission order, on one worker thread. A blocking call queues
 * behind pending asynchronous ones and waits, so it cannot overtake them; with nothing pending
 * it runs at once on the caller's thread.
 *
 * Failures: every Gloo operation is bounded by the context's timeout. A peer that died closes
 * its sockets and the pending operation fails at once (LOOM_E_COMM); one that stopped
 * answering makes it time out (LOOM_E_TIMEOUT). After any failure the ranks are out of step,
 * so the instance refuses further operations with the first error, and it closes its
 * connections before the failure is reported: Gloo's device thread may still be completing a
 * receive into the caller's buffer, and only a closed pair is sure to touch it no more. A
 * caller that gives up on an operation still running likewise closes them and waits for the
 * operation to end before it returns (and frees its buffers).
 *
 * The ABI boundary: these files are the only C++ in loom (gloo_comm_private.h lists them).
 * Every vtable entry catches every exception; nothing unwinds into the host.
 */
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include <loom/comm.h>
#include <loom/plugin.h>

#include "gloo_comm_internal.h"
#include "gloo_comm_private.h"
#include "gloo_reduce.h"

using namespace loom_gloo;

namespace
{

loom_status check_dtype(loom_comm *self, const char *name, uint32_t dtype)
{
    if (!loom_dtype_size(dtype))
        return self->api->fail(self->host, LOOM_E_INVALID, "%s: unknown dtype %u", name, (unsigned)dtype);
    return LOOM_OK;
}

loom_status check_reduction(loom_comm *self, const char *name, uint32_t dtype, uint32_t op)
{
    loom_status status = check_dtype(self, name, dtype);
    if (status != LOOM_OK) return status;
    if (!loom_gloo::op_supported(dtype, op))
        return self->api->fail(self->host, LOOM_E_UNSUPPORTED, "%s: reduction op %u is not sum, max or min", name,
                               (unsigned)op);
    return LOOM_OK;
}

loom_status check_pointers(loom_comm *self, const char *name, size_t count, const void *a, const void *b)
{
    if (count && (!a || !b)) return self->api->fail(self->host, LOOM_E_INVALID, "%s: NULL buffer", name);
    return LOOM_OK;
}

loom_status check_root(loom_comm *self, const char *name, int32_t root)
{
    if (root < 0 || root >= self->world)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s: root %d is not a rank of 0..%d", name, (int)root,
                               self->world - 1);
    return LOOM_OK;
}

loom_status gloo_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                        const loom_comm_setup *setup, loom_comm **out)
{
    if (!out) return LOOM_E_INVALID;
    *out = nullptr;
    try {
        return create_instance(host, api, config, setup, out);
    } catch (...) {
        std::string message;
        const loom_status status = classify(nullptr, "gloo create", message);
        if (message.empty()) return status;
        try {
            return api->fail(host, status, "%s", message.c_str());
        } catch (...) {
            return status;
        }
    }
}

void gloo_destroy(loom_comm *self)
{
    if (!self) return;
    try {
        SigpipeBlocked no_sigpipe;
        {
            std::lock_guard<std::mutex> lock(self->mutex);
            self->stopping = true;
            for (const std::shared_ptr<Job> &job : self->queue) {
                job->status = LOOM_E_COMM;
                job->message = job->what + " abandoned: the communicator was destroyed";
                job->done = true;
            }
            self->queue.clear();
        }
        self->cv.notify_all();
        if (self->worker.joinable()) self->worker.join(); /* a running operation ends within its timeout */
        shared_free_all(self);
        shm_detach(self);
        self->context.reset();
        self->device.reset();
        self->store.reset();
        self->base_store.reset();
        self->api->free_memory(self->host, self->scratch);
        self->scratch = nullptr;
        delete self;
    } catch (...) {
        /* Nothing may unwind into the host: leak the instance rather than crash. */
        if (self->worker.joinable()) self->worker.detach();
    }
}

loom_status gloo_all_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                            loom_comm_request **request)
{
    return guarded(self, "all_reduce", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "all_reduce", dtype, op);
        if (status == LOOM_OK) status = check_pointers(self, "all_reduce", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        if (const SharedBuffer *in = shared_find(self, data, count * loom_dtype_size(dtype))) {
            const SharedBuffer b = *in; /* free_shared may not run before the job ends (comm.h) */
            const size_t offset = (size_t)(data - (b.base + (size_t)self->rank * b.stride));
            return submit(self,
                          make_job(describe("all_reduce", op, count, dtype), 2,
                                   [=](loom_comm *c) { shared_all_reduce(c, b, offset, count, dtype, op); }),
                          request);
        }
        return submit(self,
                      make_job(describe("all_reduce", op, count, dtype), all_reduce_phases(self, count, dtype),
                               [=](loom_comm *c) { run_all_reduce(c, data, count, dtype, op); }),
                      request);
    });
}

loom_status gloo_reduce_scatter(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                uint32_t op, loom_comm_request **request)
{
    return guarded(self, "reduce_scatter", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "reduce_scatter", dtype, op);
        if (status == LOOM_OK) status = check_pointers(self, "reduce_scatter", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("reduce_scatter", op, count, dtype), 1,
                               [=](loom_comm *c) { run_reduce_scatter(c, from, to, count, dtype, op); }),
                      request);
    });
}

loom_status gloo_all_gather(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                            loom_comm_request **request)
{
    return guarded(self, "all_gather", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "all_gather", dtype);
        if (status == LOOM_OK) status = check_pointers(self, "all_gather", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("all_gather", 0, count, dtype), single_phases(self, count, dtype),
                               [=](loom_comm *c) { run_all_gather(c, from, to, count, dtype); }),
                      request);
    });
}

loom_status gloo_broadcast(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                           loom_comm_request **request)
{
    return guarded(self, "broadcast", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "broadcast", dtype);
        if (status == LOOM_OK) status = check_root(self, "broadcast", root);
        if (status == LOOM_OK) status = check_pointers(self, "broadcast", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        return submit(self,
                      make_job(describe("broadcast", 0, count, dtype), single_phases(self, count, dtype),
                               [=](loom_comm *c) { run_broadcast(c, data, count, dtype, root); }),
                      request);
    });
}

loom_status gloo_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op, int32_t root,
                        loom_comm_request **request)
{
    return guarded(self, "reduce", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "reduce", dtype, op);
        if (status == LOOM_OK) status = check_root(self, "reduce", root);
        if (status == LOOM_OK) status = check_pointers(self, "reduce", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        return submit(self,
                      make_job(describe("reduce", op, count, dtype), reduce_phases(self, count, dtype),
                               [=](loom_comm *c) { run_reduce(c, data, count, dtype, op, root); }),
                      request);
    });
}

loom_status gloo_all_to_all(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                            loom_comm_request **request)
{
    return guarded(self, "all_to_all", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "all_to_all", dtype);
        if (status == LOOM_OK) status = check_pointers(self, "all_to_all", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("all_to_all", 0, count, dtype), 1,
                               [=](loom_comm *c) { run_all_to_all(c, from, to, count, dtype); }),
                      request);
    });
}

loom_status gloo_barrier(loom_comm *self)
{
    return guarded(self, "barrier", [&]() -> loom_status {
        return submit(self, make_job("barrier", 1, [](loom_comm *c) { run_barrier(c); }), nullptr);
    });
}

loom_status gloo_alloc_shared(loom_comm *self, size_t bytes, void **memory)
{
    return guarded(self, "alloc_shared", [&]() -> loom_status {
        if (!memory) return self->api->fail(self->host, LOOM_E_INVALID, "alloc_shared: memory is NULL");
        *memory = nullptr;
        if (!self->shm || bytes == 0) return LOOM_OK; /* every rank knows this alike: nothing to agree on */
        /* A job, so that it waits behind the pending collectives and has the context alone; the
         * result is shared with it in case a timed-out wait returns before the job ends. */
        auto got = std::make_shared<void *>(nullptr);
        const loom_status status = submit(self,
                                          make_job("alloc_shared(" + std::to_string(bytes) + " bytes)", 3,
                                                   [got, bytes](loom_comm *c) { *got = shared_alloc(c, bytes); }),
                                          nullptr);
        if (status == LOOM_OK) *memory = *got;
        return status;
    });
}

loom_status gloo_free_shared(loom_comm *self, void *memory)
{
    if (!memory) return LOOM_OK;
    return guarded(self, "free_shared", [&]() -> loom_status {
        if (!shared_free(self, memory))
            return self->api->fail(self->host, LOOM_E_INVALID, "free_shared: %p is not memory of alloc_shared", memory);
        return LOOM_OK;
    });
}

loom_status gloo_wait(loom_comm *self, loom_comm_request *request)
{
    if (!request) return LOOM_OK; /* an operation with nothing to move hands out no request */
    return guarded(self, "wait", [&]() -> loom_status {
        std::unique_ptr<loom_comm_request> owned(request);
        return wait_job(self, owned->job);
    });
}

const loom_comm_vtable gloo_vtable = {
    LOOM_HEADER_INIT(loom_comm_vtable),
    .flags = LOOM_COMM_ORDERED_SUM,
    .reserved1 = 0,
    .create = gloo_create,
    .destroy = gloo_destroy,
    .all_reduce = gloo_all_reduce,
    .reduce_scatter = gloo_reduce_scatter,
    .all_gather = gloo_all_gather,
    .broadcast = gloo_broadcast,
    .reduce = gloo_reduce,
    .all_to_all = gloo_all_to_all,
    .barrier = gloo_barrier,
    .wait = gloo_wait,
    .alloc_shared = gloo_alloc_shared,
    .free_shared = gloo_free_shared,
};

const loom_param_spec gloo_params[] = {
    {.key = "hostname",
     .type = LOOM_PARAM_STRING,
     .reserved0 = 0,
     .default_value = "",
     .doc = "address this rank listens on for its peers; empty = the local address that reaches MASTER_ADDR"},
    {.key = "timeout_seconds",
     .type = LOOM_PARAM_FLOAT,
     .reserved0 = 0,
     .default_value = "0",
     .doc = "timeout of the rendezvous and of every collective, seconds; 0 = --ddp_timeout"},
    {.key = "shm",
     .type = LOOM_PARAM_BOOL,
     .reserved0 = 0,
     .default_value = "true",
     .doc = "all_reduce through shared memory when every rank is on this machine (false: over TCP)"},
    {.key = nullptr, .type = 0, .reserved0 = 0, .default_value = nullptr, .doc = nullptr},
};

const loom_plugin_desc gloo_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_COMM,
    .reserved1 = 0,
    .name = "gloo",
    .version = "1.0.0",
    .summary = "collectives between processes over TCP (Gloo), shared memory on one machine; sums in canonical rank "
               "order",
    .vtable = &gloo_vtable,
    .params = gloo_params,
};
} // namespace

namespace loom_gloo
{

const loom_plugin_desc *descriptor()
{
    return &gloo_desc;
}

std::shared_ptr<gloo::Context> context_of(loom_comm *comm)
{
    return comm ? comm->context : nullptr;
}

} // namespace loom_gloo

LOOM_PLUGIN_EXPORT(&gloo_desc)
