/*
 * test_ddp_shared.c - ddp's gradients in the communicator's shared memory (comm.h alloc_shared,
 * ABI 1.6), in one process against fake communicators:
 *   - a 1.6 communicator that lends memory: ddp's gradients are that memory (grad_acquire points
 *     into it), the memory report counts the peers' blocks, destroy gives it back once;
 *   - one that lends nothing (NULL): ddp allocates its own, as before;
 *   - --ddp.shared_gradients false: alloc_shared is never called;
 *   - one whose alloc_shared fails (a peer gone): creation fails with its status, no crash;
 *   - a 1.5 communicator (a 104-byte vtable) whose bytes past its end hold an alloc_shared that
 *     must not be called: ddp reads the member through LOOM_HAS and allocates its own.
 * The real collectives between processes are in tests/comm/test_comm_gloo.c and
 * tests/cli/test_cli_distributed.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <loom/comm.h>
#include <loom/sharding.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"
#include "test_util.h"

#define TOTAL 1000
static const int64_t offsets[] = {0, 600, TOTAL};

static unsigned char lent[TOTAL * sizeof(float)] __attribute__((aligned(64)));
static int lend = 1, allocs, frees, wrong_calls;

static loom_status fake_alloc_shared(loom_comm *self, size_t bytes, void **memory)
{
    (void)self;
    allocs++;
    if (bytes != sizeof lent) wrong_calls++;
    *memory = lend ? lent : NULL;
    return LOOM_OK;
}

static loom_status fake_free_shared(loom_comm *self, void *memory)
{
    (void)self;
    frees++;
    if (memory != lent) wrong_calls++;
    return LOOM_OK;
}

/* A peer gone during creation: the collective fails. */
static loom_status failing_alloc_shared(loom_comm *self, size_t bytes, void **memory)
{
    (void)self, (void)bytes, (void)memory;
    allocs++;
    return LOOM_E_TIMEOUT;
}

static loom_status never_alloc_shared(loom_comm *self, size_t bytes, void **memory)
{
    (void)self, (void)bytes, (void)memory;
    wrong_calls++;
    return LOOM_E_INTERNAL;
}

/* A 1.6 vtable with only the members ddp's creation and destruction reach. */
static loom_comm_vtable fake_vtable(void)
{
    loom_comm_vtable v;
    memset(&v, 0, sizeof v);
    v.abi_major = LOOM_ABI_MAJOR;
    v.abi_minor = 6;
    v.struct_size = sizeof v;
    v.alloc_shared = fake_alloc_shared;
    v.free_shared = fake_free_shared;
    return v;
}

/* Create ddp (rank 0 of 2) over `cv`, check where its gradients are, destroy it. expect_lent
 * -1: creation must fail with the communicator's status, cleanly. */
static void run(const char *what, const loom_comm_vtable *cv, const char *shared_gradients, int expect_lent)
{
    const loom_plugin *plugin = NULL;
    CHECK(loom_plugin_load("ddp", LOOM_KIND_SHARDING, &plugin) == LOOM_OK);
    if (!plugin) return;
    const loom_sharding_vtable *sv = plugin->desc->vtable;
    loom_host *host = loom_host_create("ddp");
    loom_config *config = loom_config_from_spec(plugin->desc);
    if (shared_gradients) CHECK(loom_config_set(config, "shared_gradients", shared_gradients) == LOOM_OK);
    static float params[TOTAL];
    loom_sharding_setup setup = {
        LOOM_HEADER_INIT(loom_sharding_setup),
        .rank = 0,
        .world_size = 2,
        .total_numel = TOTAL,
        .n_tensors = 2,
        .tensor_offsets = offsets,
        .params = params,
        .param_dtype = LOOM_DTYPE_F32,
        .device = LOOM_DEVICE_CPU,
        .comm = (loom_comm *)&setup, /* never dereferenced by the fakes */
        .comm_vtable = cv,
        .gradient_accumulation_steps = 1,
        .optimizer_flags = 0,
        .max_grad_elements = TOTAL,
    };
    loom_sharding *sharding = NULL;
    const int frees_before = frees;
    const loom_status st = sv->create(host, loom_host_api_table(), config, &setup, &sharding);
    if (expect_lent < 0) {
        CHECK(st == LOOM_E_TIMEOUT && sharding == NULL);
        CHECK(frees == frees_before);
        loom_config_free(config);
        loom_host_destroy(host);
        return;
    }
    CHECK(st == LOOM_OK);
    if (sharding) {
        void *memory = NULL;
        CHECK(sv->grad_acquire(sharding, 600, TOTAL, &memory) == LOOM_OK);
        const int inside = memory == (void *)(lent + 600 * sizeof(float));
        if (inside != expect_lent)
            fprintf(stderr, "%s: gradients %s the lent memory\n", what, inside ? "in" : "not in");
        CHECK(inside == expect_lent);
        loom_sharding_memory m = {LOOM_HEADER_INIT(loom_sharding_memory)};
        CHECK(sv->memory(sharding, &m) == LOOM_OK);
        CHECK(m.gradient_bytes == TOTAL * sizeof(float));
        /* lent: this rank's block of the peer's copy; else the communicator's receive bucket */
        CHECK(m.bucket_bytes == (expect_lent ? TOTAL * sizeof(float) / 2 : TOTAL * sizeof(float)));
        sv->destroy(sharding);
    }
    CHECK(frees - frees_before == expect_lent); /* given back exactly when it was taken */
    loom_config_free(config);
    loom_host_destroy(host);
}

int main(void)
{
    CHECK(loom_loader_init(NULL, 0) == LOOM_OK);
    loom_comm_vtable v16 = fake_vtable();

    run("1.6, lends", &v16, NULL, 1);
    CHECK(allocs == 1);

    lend = 0;
    run("1.6, lends nothing", &v16, NULL, 0);
    CHECK(allocs == 2);

    lend = 1;
    run("1.6, shared_gradients false", &v16, "false", 0);
    CHECK(allocs == 2);

    loom_comm_vtable failing = fake_vtable();
    failing.alloc_shared = failing_alloc_shared;
    run("1.6, alloc_shared fails", &failing, NULL, -1);
    CHECK(allocs == 3);

    /* A 1.5 plugin's vtable ends before alloc_shared; what lies past it is not a member. */
    loom_comm_vtable v15 = fake_vtable();
    v15.abi_minor = 5;
    v15.struct_size = (uint32_t)offsetof(loom_comm_vtable, alloc_shared);
    v15.alloc_shared = never_alloc_shared;
    run("1.5 vtable", &v15, NULL, 0);
    CHECK(allocs == 3);

    CHECK(wrong_calls == 0);
    return test_finish("test_ddp_shared");
}
