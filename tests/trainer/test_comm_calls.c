/* The host's table in front of a comm plugin (core/trainer/comm_calls.c): a failure the plugin
 * left without a message names it and the member; the plugin's own message is kept; and a call
 * never erases an earlier failure's message, since comm calls are made while one is reported. */
#include <string.h>

#include <loom/comm.h>

#include "error.h"
#include "plugin_loader.h"
#include "test_util.h"
#include "trainer_internal.h"

struct loom_comm {
    int destroyed;
};

static loom_status silent(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                          loom_comm_request **request)
{
    (void)self, (void)buffer, (void)count, (void)dtype, (void)op, (void)request;
    return LOOM_E_COMM;
}

static loom_status says_why(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                            loom_comm_request **request)
{
    (void)self, (void)buffer, (void)count, (void)dtype, (void)root, (void)request;
    return loom_error(LOOM_E_TIMEOUT, "fake: rank 3 did not answer");
}

static loom_status fine(loom_comm *self, loom_comm_request *request)
{
    (void)self, (void)request;
    return LOOM_OK;
}

static void destroy(loom_comm *self)
{
    self->destroyed = 1;
}

int main(void)
{
    static const loom_comm_vtable vtable = {
        LOOM_HEADER_INIT(loom_comm_vtable),
        .flags = LOOM_COMM_ORDERED_SUM,
        .destroy = destroy,
        .all_reduce = silent,
        .broadcast = says_why,
        .wait = fine,
    };
    static const loom_plugin_desc desc = {LOOM_HEADER_INIT(loom_plugin_desc), .kind = LOOM_KIND_COMM, .name = "fake",
                                          .vtable = &vtable};
    loom_plugin plugin = {&desc, NULL, NULL};
    struct loom_comm instance = {0};
    loom_plugin_instance slot = {.plugin = &plugin, .instance = &instance, .vtable = &vtable};
    CHECK(loom_trainer_name_comm_calls(&slot) == LOOM_OK);
    const loom_comm_vtable *cv = slot.vtable;
    CHECK(cv != &vtable && slot.instance != &instance);
    CHECK(cv->flags == LOOM_COMM_ORDERED_SUM);
    CHECK(!LOOM_HAS(cv, loom_comm_vtable, alloc_shared) && !cv->free_shared); /* none lent: none offered */
    double x = 1;

    /* Silent: named, even over an older message. */
    loom_error(LOOM_E_IO, "an older message");
    CHECK(cv->all_reduce(slot.instance, &x, 1, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL) == LOOM_E_COMM);
    CHECK(strcmp(loom_error_message(), "comm 'fake': all_reduce failed (communication error) without a message") == 0);

    /* The plugin's own words stay. */
    CHECK(cv->broadcast(slot.instance, &x, 1, LOOM_DTYPE_F64, 0, NULL) == LOOM_E_TIMEOUT);
    CHECK(strcmp(loom_error_message(), "fake: rank 3 did not answer") == 0);

    /* A call that succeeds leaves the failure being reported as it was (ddp waits for every
     * pending request after the first failed, and returns that first status). */
    CHECK(cv->wait(slot.instance, (loom_comm_request *)&x) == LOOM_OK);
    CHECK(strcmp(loom_error_message(), "fake: rank 3 did not answer") == 0);

    cv->destroy(slot.instance);
    CHECK(instance.destroyed);
    return test_finish("test_comm_calls");
}
