/*
 * comm_calls.c - loom_trainer_name_comm_calls (trainer_internal.h): every call into the comm
 * plugin goes through one host table, so that a failure the plugin left without a message is
 * one line naming it and the member, as LOOM_PLUGIN_CALL does for the other kinds: "comm 'x':
 * all_reduce failed (internal error) without a message". The trainer's collectives and those
 * of the sharding and optimizer plugins it lends the communicator to (setup->comm_vtable,
 * step->comm_vtable) all hold this table, so none of the call sites changes; before, such a
 * failure said "internal error", or blamed the sharding plugin whose member had called it.
 *
 * Unlike LOOM_PLUGIN_CALL, nothing is cleared before the call: comm calls are made while an
 * earlier failure is still to be reported (ddp and zero2 wait for every pending request after
 * one failed, keeping the first status; the ranks share one rank's failure), and a reset there
 * would erase that failure's message. The error serial tells instead whether the call set a
 * message: one thread-local read per call, no more than the reset it replaces.
 */
#include <stdlib.h>

#include "error.h"
#include "error_serial.h"
#include "trainer_internal.h"

typedef struct named_comm {
    loom_comm_vtable table; /* what every caller holds: the forwarding members below */
    const loom_comm_vtable *plugin;
    loom_comm *instance;
    const loom_plugin_instance *slot; /* names the plugin in a message */
} named_comm;

static loom_status named(const named_comm *n, const char *member, unsigned long serial, loom_status st)
{
    if (st == LOOM_OK || loom_error_serial() != serial) return st;
    loom_error_clear(); /* an older message is not this failure's */
    return loom_trainer_plugin_status(n->slot, member, st);
}

/* The body of a forwarding member: the plugin's own member on its own instance. */
#define FORWARD(member, ...)                                                                                           \
    const named_comm *n = (const named_comm *)self;                                                                    \
    const unsigned long serial = loom_error_serial();                                                                  \
    return named(n, #member, serial, n->plugin->member(n->instance, __VA_ARGS__))

static void named_destroy(loom_comm *self)
{
    named_comm *n = (named_comm *)self;
    if (!n) return;
    n->plugin->destroy(n->instance);
    free(n);
}

static loom_status named_all_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                                    loom_comm_request **request)
{
    FORWARD(all_reduce, buffer, count, dtype, op, request);
}

static loom_status named_reduce_scatter(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                        uint32_t op, loom_comm_request **request)
{
    FORWARD(reduce_scatter, send, recv, count, dtype, op, request);
}

static loom_status named_all_gather(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                    loom_comm_request **request)
{
    FORWARD(all_gather, send, recv, count, dtype, request);
}

static loom_status named_broadcast(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                                   loom_comm_request **request)
{
    FORWARD(broadcast, buffer, count, dtype, root, request);
}

static loom_status named_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op, int32_t root,
                                loom_comm_request **request)
{
    FORWARD(reduce, buffer, count, dtype, op, root, request);
}

static loom_status named_all_to_all(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                    loom_comm_request **request)
{
    FORWARD(all_to_all, send, recv, count, dtype, request);
}

static loom_status named_barrier(loom_comm *self)
{
    const named_comm *n = (const named_comm *)self;
    const unsigned long serial = loom_error_serial();
    return named(n, "barrier", serial, n->plugin->barrier(n->instance));
}

static loom_status named_wait(loom_comm *self, loom_comm_request *request)
{
    FORWARD(wait, request);
}

static loom_status named_alloc_shared(loom_comm *self, size_t bytes, void **memory)
{
    FORWARD(alloc_shared, bytes, memory);
}

static loom_status named_free_shared(loom_comm *self, void *memory)
{
    FORWARD(free_shared, memory);
}

loom_status loom_trainer_name_comm_calls(loom_plugin_instance *slot)
{
    named_comm *n = calloc(1, sizeof *n);
    if (!n) return loom_error(LOOM_E_NOMEM, "out of memory");
    const loom_comm_vtable *plugin = slot->vtable;
    /* create is left NULL: the instance exists, and nothing creates through this table. */
    n->table = (loom_comm_vtable){
        LOOM_HEADER_INIT(loom_comm_vtable),
        .flags = plugin->flags,
        .destroy = named_destroy,
        .all_reduce = named_all_reduce,
        .reduce_scatter = named_reduce_scatter,
        .all_gather = named_all_gather,
        .broadcast = named_broadcast,
        .reduce = named_reduce,
        .all_to_all = named_all_to_all,
        .barrier = named_barrier,
        .wait = named_wait,
    };
    /* Lent memory only where the plugin lends it: callers test these (comm.h). */
    if (LOOM_HAS(plugin, loom_comm_vtable, alloc_shared) && plugin->free_shared) {
        n->table.alloc_shared = named_alloc_shared;
        n->table.free_shared = named_free_shared;
    }
    n->plugin = plugin;
    n->instance = slot->instance;
    n->slot = slot;
    slot->vtable = &n->table;
    slot->instance = n;
    return LOOM_OK;
}
