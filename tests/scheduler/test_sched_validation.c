/*
 * test_sched_validation.c - what the HF schedule plugins refuse: a bad setup, bad or unknown
 * config keys, HF's polynomial rule lr_end < base lr, negative steps, and the ValueErrors of the
 * later schedules (min_lr vs min_lr_rate, warmup_stable_decay's num_decay_steps and curve names).
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

    /* The schedules HF added later, each with the keys it cannot do without. */
    static const char *const min_lr_kv[] = {"min_lr", "1e-5", NULL}, *const decay_kv[] = {"num_decay_steps", "5", NULL};
    static const struct {
        const char *name;
        const char *const *kv;
    } newer[] = {{"inverse_sqrt", NULL},
                 {"cosine_with_min_lr", min_lr_kv},
                 {"cosine_warmup_with_min_lr", min_lr_kv},
                 {"warmup_stable_decay", decay_kv}};
    for (size_t i = 0; i < sizeof newer / sizeof newer[0]; i++) {
        check_refused(newer[i].name, newer[i].kv, 1e-3, -1, 0, LOOM_E_INVALID, "total_steps");
        check_refused(newer[i].name, newer[i].kv, 1e-3, 100, -1, LOOM_E_INVALID, "warmup_steps");
        check_refused(newer[i].name, newer[i].kv, NAN, 100, 0, LOOM_E_INVALID, "learning rate");
        sched_fixture g;
        CHECK(sched_open(&g, newer[i].name, newer[i].kv, 1e-3, 100, 10) == LOOM_OK);
        CHECK(g.sched && strcmp(g.plugin->desc->name, newer[i].name) == 0);
        CHECK(loom_config_set(g.config, "num_cycle", "1") != LOOM_OK);
        loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value)};
        CHECK(g.sched && g.vt->value(g.sched, -1, &v) == LOOM_E_INVALID);
        sched_close(&g);
    }
    /* HF's get_scheduler passes inverse_sqrt no kwargs: timescale is not a key. */
    CHECK(sched_open(&f, "inverse_sqrt", NULL, 1e-3, 100, 0) == LOOM_OK);
    CHECK(loom_config_set(f.config, "timescale", "100") != LOOM_OK);
    sched_close(&f);

    /* HF's ValueErrors of get_cosine_with_min_lr_schedule_with_warmup(_lr_rate). */
    static const char *const both[] = {"min_lr", "1e-5", "min_lr_rate", "0.1", NULL};
    static const char *const rate_kv[] = {"min_lr_rate", "0.1", NULL};
    static const char *const bad_warmup_rate[] = {"min_lr_rate", "0.1", "warmup_lr_rate", "inf", NULL};
    const char *min_lr_scheds[] = {"cosine_with_min_lr", "cosine_warmup_with_min_lr"};
    for (size_t i = 0; i < 2; i++) {
        check_refused(min_lr_scheds[i], both, 1e-3, 100, 0, LOOM_E_INVALID, "only one of min_lr or min_lr_rate");
        check_refused(min_lr_scheds[i], NULL, 1e-3, 100, 0, LOOM_E_INVALID,
                      "one of min_lr or min_lr_rate should be set");
        check_refused(min_lr_scheds[i], min_lr_kv, 0.0, 100, 0, LOOM_E_INVALID, "min_lr");
        CHECK(sched_open(&f, min_lr_scheds[i], rate_kv, 0.0, 100, 0) == LOOM_OK); /* a rate needs no division */
        CHECK(loom_config_set(f.config, "min_lr_ratio", "0.1") != LOOM_OK);       /* warmup_stable_decay's key */
        sched_close(&f);
    }
    check_refused("cosine_warmup_with_min_lr", bad_warmup_rate, 1e-3, 100, 0, LOOM_E_INVALID, "warmup_lr_rate");

    /* get_wsd_schedule: num_decay_steps has no default; the curves are one of three names. */
    static const char *const up_exp[] = {"num_decay_steps", "5", "warmup_type", "exp", NULL};
    static const char *const down_step[] = {"num_decay_steps", "5", "decay_type", "step", NULL};
    static const char *const neg_decay[] = {"num_decay_steps", "-5", NULL};
    static const char *const neg_stable[] = {"num_decay_steps", "5", "num_stable_steps", "-1", NULL};
    check_refused("warmup_stable_decay", NULL, 1e-3, 100, 0, LOOM_E_INVALID, "num_decay_steps");
    check_refused("warmup_stable_decay", up_exp, 1e-3, 100, 0, LOOM_E_INVALID, "unknown warmup type: exp");
    check_refused("warmup_stable_decay", down_step, 1e-3, 100, 0, LOOM_E_INVALID, "unknown decay type: step");
    check_refused("warmup_stable_decay", neg_decay, 1e-3, 100, 0, LOOM_E_INVALID, "num_decay_steps");
    check_refused("warmup_stable_decay", neg_stable, 1e-3, 100, 0, LOOM_E_INVALID, "num_stable_steps");

    /* reduce_lr_on_plateau: torch's ValueErrors, and a saved state it cannot use. */
    static const char *const factor1[] = {"factor", "1.0", NULL}, *const mode_up[] = {"mode", "up", NULL};
    static const char *const rel_x[] = {"threshold_mode", "x", NULL};
    check_refused("reduce_lr_on_plateau", factor1, 1e-3, 100, 0, LOOM_E_INVALID, "factor");
    check_refused("reduce_lr_on_plateau", mode_up, 1e-3, 100, 0, LOOM_E_INVALID, "mode up is unknown");
    check_refused("reduce_lr_on_plateau", rel_x, 1e-3, 100, 0, LOOM_E_INVALID, "threshold mode x is unknown");
    check_refused("reduce_lr_on_plateau", NULL, NAN, 100, 0, LOOM_E_INVALID, "learning rate");
    CHECK(sched_open(&f, "reduce_lr_on_plateau", NULL, 1e-3, 100, 10) == LOOM_OK);
    if (f.sched) {
        loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value)};
        CHECK(f.vt->value(f.sched, -1, &v) == LOOM_E_INVALID);
        CHECK(sched_lr(&f, 0, NULL) == 1e-3); /* no warmup: HF gives this schedule none */
        CHECK(f.vt->load_state(f.sched, "{\"lr\": \"0x1p-10\"}") == LOOM_E_FORMAT);
        CHECK(strstr(loom_error_message(), "best") != NULL);
        CHECK(f.vt->load_state(f.sched, "{\"lr\": \"nan\", \"best\": \"inf\", \"num_bad_epochs\": 0, "
                                        "\"cooldown_counter\": 0, \"last_epoch\": 0}") == LOOM_E_FORMAT);
    }
    sched_close(&f);
    /* The pure schedules observe nothing and keep no state (ABI 1.11 members left NULL). */
    CHECK(sched_open(&f, "cosine", NULL, 1e-3, 100, 0) == LOOM_OK);
    CHECK(!LOOM_HAS(f.vt, loom_scheduler_vtable, observe) && !LOOM_HAS(f.vt, loom_scheduler_vtable, save_state));
    sched_close(&f);

    /* A scheduler is not an optimizer: the loader checks the kind. */
    const loom_plugin *p = NULL;
    CHECK(loom_plugin_load("linear", LOOM_KIND_OPTIMIZER, &p) != LOOM_OK);
    return test_finish("test_sched_validation");
}
