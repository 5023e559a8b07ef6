/*
 * test_sched_validation.c - what the HF schedule plugins refuse: a bad setup, bad or unknown
 * config keys, HF's polynomial rule lr_end < base lr, negative steps.
 */
#include "error.h"
#include "host.h"
#include "sched_harness.h"
#include "test_util.h"

#include <string.h>

static const char *const all[] = {"constant", "constant_with_warmup", "linear",
                                  "cosine",   "cosine_with_restarts", "polynomial"};

/* create() must fail with `code` and a message containing `word`. */
static void check_refused(const char *name, const char *const *kv, double base, int64_t T,
                          int64_t W, loom_status code, const char *word)
{
    sched_fixture f;
    loom_status st = sched_open(&f, name, kv, base, T, W);
    CHECK(st == code);
    CHECK(f.sched == NULL);
    CHECK(strstr(loom_error_message(), word) != NULL);
    if (st != code || !strstr(loom_error_message(), word))
        fprintf(stderr, "  %s: status %d, message '%s'\n", name, (int)st, loom_error_message());
    sched_close(&f);
}

int main(void)
{
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        check_refused(all[i], NULL, 1e-3, -1, 0, LOOM_E_INVALID, "total_steps");
        check_refused(all[i], NULL, 1e-3, 100, -1, LOOM_E_INVALID, "warmup_steps");
        check_refused(all[i], NULL, NAN, 100, 0, LOOM_E_INVALID, "learning rate");
        check_refused(all[i], NULL, -1e-3, 100, 0, LOOM_E_INVALID, "learning rate");

        sched_fixture f;
        CHECK(sched_open(&f, all[i], NULL, 1e-3, 100, 10) == LOOM_OK);
        CHECK(f.plugin->desc->kind == LOOM_KIND_SCHEDULER);
        CHECK(strcmp(f.plugin->desc->name, all[i]) == 0);
        /* Unknown keys are the config's job; each plugin's spec must make it say no. */
        CHECK(loom_config_set(f.config, "num_cycle", "1") != LOOM_OK);
        CHECK(strstr(loom_error_message(), "num_cycle") != NULL);
        loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value)};
        CHECK(f.vt->value(f.sched, -1, &v) == LOOM_E_INVALID);

        /* A setup built against a header older than the fields we read. */
        loom_schedule_setup small = {LOOM_HEADER_INIT(loom_schedule_setup), .base_lr = 1e-3};
        small.struct_size = 16;
        loom_scheduler *s = (loom_scheduler *)&small; /* overwritten with NULL on failure */
        CHECK(f.vt->create(f.host, loom_host_api_table(), f.config, &small, &s) == LOOM_E_ABI);
        CHECK(s == NULL);
        sched_close(&f);
    }

    /* HF: "lr_end (...) must be smaller than initial lr (...)". */
    check_refused("polynomial", NULL, 1e-7, 100, 0, LOOM_E_INVALID, "lr_end");
    check_refused("polynomial", NULL, 5e-8, 100, 0, LOOM_E_INVALID, "lr_end");
    static const char *const neg_power[] = {"power", "-1", NULL};
    check_refused("polynomial", neg_power, 1e-3, 100, 0, LOOM_E_INVALID, "power");

    sched_fixture f;
    CHECK(sched_open(&f, "cosine", NULL, 1e-3, 100, 0) == LOOM_OK);
    CHECK(loom_config_set(f.config, "num_cycles", "many") != LOOM_OK); /* not a number */
    CHECK(loom_config_set(f.config, "lr_end", "0") != LOOM_OK);        /* polynomial's key */
    sched_close(&f);
    CHECK(sched_open(&f, "linear", NULL, 1e-3, 100, 0) == LOOM_OK);
    CHECK(loom_config_set(f.config, "num_cycles", "1") != LOOM_OK); /* linear has no keys */
    sched_close(&f);

    /* A scheduler is not an optimizer: the loader checks the kind. */
    const loom_plugin *p = NULL;
    CHECK(loom_plugin_load("linear", LOOM_KIND_OPTIMIZER, &p) != LOOM_OK);
    return test_finish("test_sched_validation");
}
