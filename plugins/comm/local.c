/*
 * local.c - the communicator of a one-process run. Every collective over one rank is the
 * identity (or a copy between its send and receive buffers), done at once; a request is never
 * handed out, so wait() has nothing to do.
 */
#include <string.h>

#include <loom/comm.h>
#include <loom/plugin.h>

typedef struct local_comm {
    loom_host *host;
    const loom_host_api *api;
} local_comm;


static void local_destroy(loom_comm *self_)
{
    local_comm *self = (local_comm *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static loom_status local_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                const loom_comm_setup *setup, loom_comm **out)
{
    (void)config;
    *out = NULL;
    if (setup->world_size != 1 || setup->rank != 0)
        return api->fail(host, LOOM_E_INVALID,
                         "the local communicator serves one process, but this is rank %d of %d: use --plugin gloo",
                         setup->rank, setup->world_size);
    local_comm *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    *out = (loom_comm *)self;
    return LOOM_OK;
}

static loom_status check_dtype(local_comm *self, uint32_t dtype)
{
    if (!loom_dtype_size(dtype)) return self->api->fail(self->host, LOOM_E_INVALID, "unknown dtype %u", dtype);
    return LOOM_OK;
}

static loom_status copy_once(local_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                             loom_comm_request **request)
{
    loom_status st = check_dtype(self, dtype);
    if (st != LOOM_OK) return st;
    if (send != recv && count) memmove(recv, send, count * loom_dtype_size(dtype));
    if (request) *request = NULL;
    return LOOM_OK;
}

static loom_status local_all_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                                    loom_comm_request **request)
{
    (void)op;
    return copy_once((local_comm *)self, buffer, buffer, count, dtype, request);
}

static loom_status local_reduce_scatter(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                        uint32_t op, loom_comm_request **request)
{
    (void)op;
    return copy_once((local_comm *)self, send, recv, count, dtype, request);
}

static loom_status local_all_gather(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                    loom_comm_request **request)
{
    return copy_once((local_comm *)self, send, recv, count, dtype, request);
}

static loom_status local_broadcast(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                                   loom_comm_request **request)
{
    if (root != 0)
        return ((local_comm *)self)->api->fail(((local_comm *)self)->host, LOOM_E_INVALID, "no rank %d", root);
    return copy_once((local_comm *)self, buffer, buffer, count, dtype, request);
}

static loom_status local_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op, int32_t root,
                                loom_comm_request **request)
{
    (void)op;
    return local_broadcast(self, buffer, count, dtype, root, request);
}

static loom_status local_all_to_all(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                    loom_comm_request **request)
{
    return copy_once((local_comm *)self, send, recv, count, dtype, request);
}

static loom_status local_barrier(loom_comm *self)
{
    (void)self;
    return LOOM_OK;
}

static loom_status local_wait(loom_comm *self, loom_comm_request *request)
{
    (void)self, (void)request;
    return LOOM_OK;
}

static const loom_comm_vtable local_vtable = {
    LOOM_HEADER_INIT(loom_comm_vtable),
    .flags = LOOM_COMM_ORDERED_SUM,
    .create = local_create,
    .destroy = local_destroy,
    .all_reduce = local_all_reduce,
    .reduce_scatter = local_reduce_scatter,
    .all_gather = local_all_gather,
    .broadcast = local_broadcast,
    .reduce = local_reduce,
    .all_to_all = local_all_to_all,
    .barrier = local_barrier,
    .wait = local_wait,
};

static const loom_plugin_desc local_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_COMM,
    .name = "local",
    .version = "1.0.0",
    .summary = "one process: every collective is the identity",
    .vtable = &local_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&local_desc)
