/*
 * test_ds_schedules.c - DeepSpeed's schedules as loom plugins (warmup_lr, warmup_decay_lr,
 * one_cycle, lr_range_test), loaded through the core loader, against the formulas of
 * docs/semantics/schedulers.md#deepspeed-schedules (DeepSpeed HEAD, i = t) written out again here in double, over the
 * steps where the schedules change shape; then hand-computed literals and the configs they refuse.
 */
#include "error.h"
#include "host.h"
#include "sched_harness.h"
#include "test_util.h"

#include <stdint.h>
#include <string.h>

#define RTOL 1e-12

/* ---- references ------------------------------------------------------------------------ */

typedef struct warm_case {
    double min, max;
    int64_t n;     /* warmup_num_steps as configured (before DeepSpeed's max(2, .)) */
    int log_type;  /* 1: "log", 0: "linear"                                         */
    int64_t total; /* total_num_steps; < 0 for warmup_lr                           */
} warm_case;

/* WarmupLR / WarmupDecayLR at i = t. */
static double ref_warm(const warm_case *c, int64_t t)
{
    double n = (double)(c->n < 2 ? 2 : c->n), i = (double)t, gamma;
    if (i < n)
        gamma = c->log_type ? log(i + 1.0) / log(n) : i / n;
    else if (c->total < 0)
        gamma = 1.0;
    else
        gamma = fmax(0.0, ((double)c->total - i) / fmax(1.0, (double)c->total - n));
    return c->min + (c->max - c->min) * gamma;
}

typedef struct cycle_case {
    double min_lr, max_lr, lr_rate;
    int64_t s1, s2, decay_size;
    int momentum;
    double min_mom, max_mom, mom_rate;
} cycle_case;

/* OneCycle (HEAD) at i = t, computed on integers: position p = (t + 1) mod (S1 + S2) rises
 * over S1 steps and falls over S2, instead of DeepSpeed's floating frac(). */
static void ref_cycle(const cycle_case *c, int64_t t, double *lr, double *mom)
{
    int64_t s = c->s1 + c->s2;
    if (t < s) {
        int64_t p = (t + 1) % s;
        double scale = p <= c->s1 ? (double)p / (double)c->s1 : (double)(s - p) / (double)c->s2;
        *lr = c->min_lr + (c->max_lr - c->min_lr) * scale;
        *mom = c->max_mom - (c->max_mom - c->min_mom) * scale;
    } else {
        double k = c->decay_size ? (double)(t - s + 1) / (double)c->decay_size : 0.0;
        *lr = (c->decay_size && c->lr_rate != 0) ? c->min_lr / (1.0 + c->lr_rate * k) : c->min_lr;
        *mom = (c->decay_size && c->mom_rate != 0) ? c->max_mom * (1.0 + c->mom_rate * k)
                                                   : c->max_mom;
    }
    if (!c->momentum)
        *mom = NAN;
}

static double ref_range(double min_lr, int64_t size, double rate, int stairs, int64_t t)
{
    double k = stairs ? (double)((t + 1) / size) : (double)(t + 1) / (double)size;
    return min_lr * (1.0 + rate * k);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int open_or_fail(sched_fixture *f, const char *name, const char *const *kv)
{
    if (sched_open(f, name, kv, 1e-3, 100, 0) == LOOM_OK)
        return 1;
    CHECK(!"scheduler opens");
    sched_close(f);
    return 0;
}

/* create() must fail with LOOM_E_INVALID and a message naming `word`. */
static void check_refused(const char *name, const char *const *kv, const char *word)
{
    sched_fixture f;
    loom_status st = sched_open(&f, name, kv, 1e-3, 100, 0);
    CHECK(st == LOOM_E_INVALID);
    CHECK(f.sched == NULL);
    CHECK(strstr(loom_error_message(), word) != NULL);
    if (st != LOOM_E_INVALID || !strstr(loom_error_message(), word))
        fprintf(stderr, "  %s (%s=...): status %d, message '%s'\n", name, kv[0], (int)st,
                loom_error_message());
    sched_close(&f);
}

/* ---- tables against the references ------------------------------------------------------- */

static void check_warm_table(const warm_case *c)
{
    char smin[32], smax[32], sn[32], stotal[32];
    snprintf(smin, sizeof smin, "%.17g", c->min);
    snprintf(smax, sizeof smax, "%.17g", c->max);
    snprintf(sn, sizeof sn, "%lld", (long long)c->n);
    snprintf(stotal, sizeof stotal, "%lld", (long long)c->total);
    const char *kv[] = {"warmup_min_lr", smin,  "warmup_max_lr", smax,
                        "warmup_num_steps", sn, "warmup_type", c->log_type ? "log" : "linear",
                        "total_num_steps", stotal, NULL};
    if (c->total < 0)
        kv[8] = NULL;
    const char *name = c->total < 0 ? "warmup_lr" : "warmup_decay_lr";
    sched_fixture f;
    if (!open_or_fail(&f, name, kv))
        return;
    int64_t n = c->n, T = c->total < 0 ? 3 * c->n : c->total;
    const int64_t ts[] = {0, 1, 2, n / 2, n - 1, n, n + 1, (n + T) / 2, T - 1, T, T + 1, T + 5,
                          10 * T + 3};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        if (ts[k] < 0)
            continue;
        double mom = 0;
        double lr = sched_lr(&f, ts[k], &mom);
        CHECK_CLOSE(lr, ref_warm(c, ts[k]), 1e-300, RTOL);
        CHECK(isnan(mom));
        if (!(fabs(lr - ref_warm(c, ts[k])) <= 1e-300 + RTOL * fabs(ref_warm(c, ts[k]))))
            fprintf(stderr, "  %s N=%lld T=%lld %s: t=%lld\n", name, (long long)n,
                    (long long)c->total, c->log_type ? "log" : "linear", (long long)ts[k]);
    }
    sched_close(&f);
}

static void check_cycle_table(const cycle_case *c, int give_second)
{
    char b[10][32];
    snprintf(b[0], 32, "%.17g", c->min_lr);
    snprintf(b[1], 32, "%.17g", c->max_lr);
    snprintf(b[2], 32, "%.17g", c->lr_rate);
    snprintf(b[3], 32, "%lld", (long long)c->s1);
    snprintf(b[4], 32, "%lld", (long long)c->decay_size);
    snprintf(b[5], 32, "%.17g", c->min_mom);
    snprintf(b[6], 32, "%.17g", c->max_mom);
    snprintf(b[7], 32, "%.17g", c->mom_rate);
    snprintf(b[8], 32, "%lld", (long long)c->s2);
    const char *kv[] = {"cycle_min_lr", b[0], "cycle_max_lr", b[1], "decay_lr_rate", b[2],
                        "cycle_first_step_size", b[3], "decay_step_size", b[4],
                        "cycle_min_mom", b[5], "cycle_max_mom", b[6], "decay_mom_rate", b[7],
                        "cycle_momentum", c->momentum ? "true" : "false",
                        "cycle_second_step_size", b[8], NULL};
    if (!give_second) /* the default: cycle_second_step_size = cycle_first_step_size */
        kv[18] = NULL;
    sched_fixture f;
    if (!open_or_fail(&f, "one_cycle", kv))
        return;
    int64_t s1 = c->s1, s = c->s1 + c->s2;
    const int64_t ts[] = {0, 1, s1 / 2, s1 - 2, s1 - 1, s1, s1 + 1, s1 + c->s2 / 2, s - 2, s - 1,
                          s, s + 1, s + 2, s + c->decay_size, s + 5, 3 * s + 7, 100 * s};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        if (ts[k] < 0)
            continue;
        double mom = 0, rlr, rmom;
        double lr = sched_lr(&f, ts[k], &mom);
        ref_cycle(c, ts[k], &rlr, &rmom);
        CHECK_CLOSE(lr, rlr, 1e-300, RTOL);
        if (c->momentum)
            CHECK_CLOSE(mom, rmom, 1e-300, RTOL);
        else
            CHECK(isnan(mom));
        if (ts[k] >= s) /* HEAD: the decay never raises the lr (v0.3.10's bug) */
            CHECK(lr <= c->min_lr);
    }
    sched_close(&f);
}

static void check_range_table(double min_lr, int64_t size, double rate, int stairs)
{
    char smin[32], ssize[32], srate[32];
    snprintf(smin, sizeof smin, "%.17g", min_lr);
    snprintf(ssize, sizeof ssize, "%lld", (long long)size);
    snprintf(srate, sizeof srate, "%.17g", rate);
    const char *kv[] = {"lr_range_test_min_lr", smin, "lr_range_test_step_size", ssize,
                        "lr_range_test_step_rate", srate, "lr_range_test_staircase",
                        stairs ? "true" : "false", NULL};
    sched_fixture f;
    if (!open_or_fail(&f, "lr_range_test", kv))
        return;
    const int64_t ts[] = {0, 1, size - 2, size - 1, size, size + 1, 2 * size - 1, 7 * size + 3};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        if (ts[k] < 0)
            continue;
        double mom = 0;
        CHECK_CLOSE(sched_lr(&f, ts[k], &mom), ref_range(min_lr, size, rate, stairs, ts[k]),
                    1e-300, RTOL);
        CHECK(isnan(mom));
    }
    sched_close(&f);
}

/* ---- literals ---------------------------------------------------------------------------- */

static void check_literals(void)
{
    sched_fixture f;
    double mom = 0;

    /* WarmupLR, log, N = 10, 0 -> 1e-3: log10(t + 1) * 1e-3 during warmup. */
    static const char *const wl[] = {"warmup_num_steps", "10", NULL};
    if (open_or_fail(&f, "warmup_lr", wl)) {
        CHECK(sched_lr(&f, 0, &mom) == 0.0);
        CHECK(isnan(mom));
        CHECK_CLOSE(sched_lr(&f, 4, NULL), 1e-3 * 0.69897000433601880479, 0, 1e-14); /* log10 5 */
        CHECK_CLOSE(sched_lr(&f, 1, NULL), 1e-3 * 0.30102999566398119521, 0, 1e-14); /* log10 2 */
        CHECK_CLOSE(sched_lr(&f, 9, NULL), 1e-3, 0, 1e-14);
        CHECK(sched_lr(&f, 10, NULL) == 1e-3);
        CHECK(sched_lr(&f, 1000000, NULL) == 1e-3);
        CHECK(sched_lr(&f, 4, NULL) == sched_lr(&f, 4, NULL)); /* pure */
        sched_close(&f);
    }
    /* The defaults: 0 -> 0.001 over 1000 log steps. */
    if (open_or_fail(&f, "warmup_lr", NULL)) {
        CHECK(sched_lr(&f, 0, NULL) == 0.0);
        CHECK_CLOSE(sched_lr(&f, 99, NULL), 1e-3 * 2.0 / 3.0, 0, 1e-14); /* log 100/log 1000 */
        CHECK(sched_lr(&f, 1000, NULL) == 1e-3);
        sched_close(&f);
    }
    /* Linear, N = 10, 1e-4 -> 1e-3. */
    static const char *const wlin[] = {"warmup_type", "linear", "warmup_num_steps", "10",
                                       "warmup_min_lr", "1e-4", NULL};
    if (open_or_fail(&f, "warmup_lr", wlin)) {
        CHECK(sched_lr(&f, 0, NULL) == 1e-4);
        CHECK_CLOSE(sched_lr(&f, 5, NULL), 5.5e-4, 0, 1e-14);
        CHECK_CLOSE(sched_lr(&f, 9, NULL), 9.1e-4, 0, 1e-14);
        CHECK(sched_lr(&f, 10, NULL) == 1e-3);
        sched_close(&f);
    }
    /* N = 1 acts as 2 (DeepSpeed HEAD): log gives min at 0, max at 1; linear half at 1. */
    static const char *const w1log[] = {"warmup_num_steps", "1", NULL};
    if (open_or_fail(&f, "warmup_lr", w1log)) {
        CHECK(sched_lr(&f, 0, NULL) == 0.0);
        CHECK_CLOSE(sched_lr(&f, 1, NULL), 1e-3, 0, 1e-15);
        CHECK(sched_lr(&f, 2, NULL) == 1e-3);
        sched_close(&f);
    }
    static const char *const w1lin[] = {"warmup_num_steps", "1", "warmup_type", "linear", NULL};
    if (open_or_fail(&f, "warmup_lr", w1lin)) {
        CHECK(sched_lr(&f, 1, NULL) == 5e-4);
        CHECK(sched_lr(&f, 2, NULL) == 1e-3);
        sched_close(&f);
    }

    /* WarmupDecayLR, linear, N = 10, T = 110, 0 -> 1e-3 -> 0: HF's linear schedule. */
    static const char *const wd[] = {"warmup_type", "linear", "warmup_num_steps", "10",
                                     "total_num_steps", "110", NULL};
    if (open_or_fail(&f, "warmup_decay_lr", wd)) {
        CHECK(sched_lr(&f, 0, NULL) == 0.0);
        CHECK_CLOSE(sched_lr(&f, 3, NULL), 3e-4, 0, 1e-14);
        CHECK(sched_lr(&f, 10, NULL) == 1e-3);
        CHECK_CLOSE(sched_lr(&f, 60, NULL), 5e-4, 0, 1e-14);
        CHECK_CLOSE(sched_lr(&f, 109, NULL), 1e-5, 0, 1e-12);
        CHECK(sched_lr(&f, 110, NULL) == 0.0);
        CHECK(sched_lr(&f, 115, NULL) == 0.0);
        sched_close(&f);
    }
    /* The decay ends at warmup_min_lr, not 0; total == N has no decay length: max(1, 0). */
    static const char *const wdmin[] = {"warmup_min_lr", "1e-5", "warmup_num_steps", "10",
                                        "total_num_steps", "10", NULL};
    if (open_or_fail(&f, "warmup_decay_lr", wdmin)) {
        CHECK(sched_lr(&f, 0, NULL) == 1e-5);
        CHECK(sched_lr(&f, 10, NULL) == 1e-5);
        CHECK(sched_lr(&f, 50, NULL) == 1e-5);
        sched_close(&f);
    }

    /* OneCycle, 1e-4 .. 1e-3, S1 = 4, S2 = 6, decay every 2 steps, rates 0.5 (lr), 0.01 (mom).
     * t + 1 = 1..4 rises (scale 1/4 .. 1), 5..10 falls (5/6 .. 0), then the decay. */
    static const char *const oc[] = {"cycle_min_lr", "1e-4", "cycle_max_lr", "1e-3",
                                     "cycle_first_step_size", "4", "cycle_second_step_size", "6",
                                     "decay_step_size", "2", "decay_lr_rate", "0.5",
                                     "decay_mom_rate", "0.01", NULL};
    if (open_or_fail(&f, "one_cycle", oc)) {
        CHECK_CLOSE(sched_lr(&f, 0, &mom), 3.25e-4, 0, 1e-12);
        CHECK_CLOSE(mom, 0.875, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 1, &mom), 5.5e-4, 0, 1e-12);
        CHECK_CLOSE(mom, 0.85, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 3, &mom), 1e-3, 0, 1e-12); /* the peak */
        CHECK_CLOSE(mom, 0.8, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 4, &mom), 8.5e-4, 0, 1e-12);
        CHECK_CLOSE(mom, 0.9 - 0.1 * 5.0 / 6.0, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 6, &mom), 5.5e-4, 0, 1e-12); /* t + 1 = 7: scale 1/2 */
        CHECK_CLOSE(mom, 0.85, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 9, &mom), 1e-4, 0, 1e-12); /* end of the cycle */
        CHECK_CLOSE(mom, 0.9, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 10, &mom), 8e-5, 0, 1e-12); /* d = 1: 1e-4 / (1 + 0.5 * 0.5) */
        CHECK_CLOSE(mom, 0.9045, 0, 1e-12);                   /* 0.9 * (1 + 0.01 * 0.5) */
        CHECK_CLOSE(sched_lr(&f, 13, &mom), 5e-5, 0, 1e-12); /* d = 4: 1e-4 / 2 */
        CHECK_CLOSE(mom, 0.918, 0, 1e-12);
        sched_close(&f);
    }
    /* decay_step_size 0 (the default): no decay at all; cycle_momentum false: NaN. */
    static const char *const oc0[] = {"cycle_min_lr", "1e-4", "cycle_max_lr", "1e-3",
                                      "cycle_first_step_size", "5", "decay_lr_rate", "0.5",
                                      "cycle_momentum", "false", NULL};
    if (open_or_fail(&f, "one_cycle", oc0)) {
        CHECK_CLOSE(sched_lr(&f, 4, &mom), 1e-3, 0, 1e-12); /* S2 defaults to S1 = 5 */
        CHECK(isnan(mom));
        CHECK_CLOSE(sched_lr(&f, 6, &mom), 1e-4 + 9e-4 * 0.6, 0, 1e-12);
        CHECK(sched_lr(&f, 10, &mom) == 1e-4);
        CHECK(isnan(mom));
        CHECK(sched_lr(&f, 1000, NULL) == 1e-4);
        sched_close(&f);
    }
    /* Stair counts are accepted and ignored: the same curve. */
    static const char *const ocs[] = {"cycle_min_lr", "1e-4", "cycle_max_lr", "1e-3",
                                      "cycle_first_step_size", "5", "cycle_first_stair_count",
                                      "2", "cycle_second_stair_count", "3", NULL};
    if (open_or_fail(&f, "one_cycle", ocs)) {
        CHECK_CLOSE(sched_lr(&f, 0, &mom), 1e-4 + 9e-4 * 0.2, 0, 1e-12);
        CHECK_CLOSE(mom, 0.88, 0, 1e-12);
        CHECK_CLOSE(sched_lr(&f, 6, NULL), 1e-4 + 9e-4 * 0.6, 0, 1e-12);
        sched_close(&f);
    }

    /* LRRangeTest, 1e-3, size 10, rate 1: (1 + (t + 1) / 10) * 1e-3; staircase floors. */
    static const char *const rt[] = {"lr_range_test_step_size", "10", NULL};
    if (open_or_fail(&f, "lr_range_test", rt)) {
        CHECK_CLOSE(sched_lr(&f, 0, &mom), 1.1e-3, 0, 1e-14);
        CHECK(isnan(mom));
        CHECK_CLOSE(sched_lr(&f, 9, NULL), 2e-3, 0, 1e-14);
        CHECK_CLOSE(sched_lr(&f, 19, NULL), 3e-3, 0, 1e-14);
        sched_close(&f);
    }
    static const char *const rts[] = {"lr_range_test_step_size", "10", "lr_range_test_staircase",
                                      "true", "lr_range_test_step_rate", "0.5", NULL};
    if (open_or_fail(&f, "lr_range_test", rts)) {
        CHECK(sched_lr(&f, 0, NULL) == 1e-3);
        CHECK(sched_lr(&f, 8, NULL) == 1e-3);
        CHECK_CLOSE(sched_lr(&f, 9, NULL), 1.5e-3, 0, 1e-15);
        CHECK_CLOSE(sched_lr(&f, 29, NULL), 2.5e-3, 0, 1e-15);
        sched_close(&f);
    }
    /* The defaults: 1e-3, size 2000, rate 1. */
    if (open_or_fail(&f, "lr_range_test", NULL)) {
        CHECK_CLOSE(sched_lr(&f, 1999, NULL), 2e-3, 0, 1e-15);
        sched_close(&f);
    }
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void check_errors(void)
{
    static const char *const warm[] = {"warmup_lr", "warmup_decay_lr"};
    for (size_t k = 0; k < 2; k++) {
        const char *name = warm[k];
        int decay = k == 1;
#define WKV(...) ((const char *const[]){__VA_ARGS__, decay ? "total_num_steps" : NULL, "5000", NULL})
        check_refused(name, WKV("warmup_type", "cosine"), "warmup_type");
        check_refused(name, WKV("warmup_type", "Log"), "warmup_type");
        check_refused(name, WKV("warmup_num_steps", "-1"), "warmup_num_steps");
        check_refused(name, WKV("warmup_num_steps", "-5"), "warmup_num_steps");
        check_refused(name, WKV("warmup_num_steps", "ten"), "warmup_num_steps");
        check_refused(name, WKV("warmup_min_lr", "-1e-3"), "warmup_min_lr");
        check_refused(name, WKV("warmup_max_lr", "nan"), "warmup_max_lr");
        check_refused(name, WKV("warmup_max_lr", "inf"), "warmup_max_lr");
        check_refused(name, WKV("warmup_min_lr", "1e-2"), "warmup_max_lr"); /* max < min */
        check_refused(name, WKV("num_cycles", "1"), "num_cycles");           /* HF's key */
#undef WKV
    }
    check_refused("warmup_decay_lr", (const char *const[]){"warmup_num_steps", "10", NULL},
                  "total_num_steps"); /* required */
    check_refused("warmup_decay_lr",
                  (const char *const[]){"warmup_num_steps", "10", "total_num_steps", "9", NULL},
                  "total_num_steps");
    check_refused("warmup_decay_lr", (const char *const[]){"total_num_steps", "-1", NULL},
                  "total_num_steps");
    check_refused("warmup_lr", (const char *const[]){"total_num_steps", "100", NULL},
                  "total_num_steps"); /* warmup_lr has no such key */

#define OKV(...) ((const char *const[]){"cycle_min_lr", "1e-4", "cycle_max_lr", "1e-3", __VA_ARGS__, NULL})
    check_refused("one_cycle", (const char *const[]){"cycle_max_lr", "1e-3", NULL},
                  "cycle_min_lr");
    check_refused("one_cycle", (const char *const[]){"cycle_min_lr", "1e-3", NULL},
                  "cycle_max_lr");
    check_refused("one_cycle", OKV("cycle_min_lr", "2e-3"), "cycle_max_lr");
    check_refused("one_cycle", OKV("cycle_min_lr", "-1"), "cycle_min_lr");
    check_refused("one_cycle", OKV("cycle_first_step_size", "0"), "cycle_first_step_size");
    check_refused("one_cycle", OKV("cycle_first_step_size", "-10"), "cycle_first_step_size");
    check_refused("one_cycle", OKV("cycle_second_step_size", "0"), "cycle_second_step_size");
    check_refused("one_cycle", OKV("cycle_second_step_size", "-3"), "cycle_second_step_size");
    check_refused("one_cycle", OKV("cycle_first_stair_count", "-1"), "cycle_first_stair_count");
    check_refused("one_cycle", OKV("cycle_second_stair_count", "-1"), "cycle_second_stair_count");
    check_refused("one_cycle", OKV("decay_step_size", "-1"), "decay_step_size");
    check_refused("one_cycle", OKV("decay_lr_rate", "-0.1"), "decay_lr_rate");
    check_refused("one_cycle", OKV("decay_mom_rate", "-0.1"), "decay_mom_rate");
    check_refused("one_cycle", OKV("cycle_min_mom", "-0.1"), "cycle_min_mom");
    check_refused("one_cycle", OKV("cycle_min_mom", "0.95"), "cycle_max_mom");
    check_refused("one_cycle", OKV("cycle_momentum", "maybe"), "cycle_momentum");
#undef OKV

    check_refused("lr_range_test", (const char *const[]){"lr_range_test_step_size", "0", NULL},
                  "lr_range_test_step_size");
    check_refused("lr_range_test", (const char *const[]){"lr_range_test_min_lr", "-1", NULL},
                  "lr_range_test_min_lr");
    check_refused("lr_range_test", (const char *const[]){"lr_range_test_step_rate", "-1", NULL},
                  "lr_range_test_step_rate");

    /* Every plugin: its kind and name, value(-1) refused, a too-small setup refused. */
    static const char *const all[] = {"warmup_lr", "warmup_decay_lr", "one_cycle",
                                      "lr_range_test"};
    static const char *const need[][5] = {{NULL},
                                          {"total_num_steps", "2000", NULL},
                                          {"cycle_min_lr", "0", "cycle_max_lr", "1", NULL},
                                          {NULL}};
    for (size_t k = 0; k < 4; k++) {
        sched_fixture f;
        if (!open_or_fail(&f, all[k], need[k]))
            continue;
        CHECK(f.plugin->desc->kind == LOOM_KIND_SCHEDULER);
        CHECK(strcmp(f.plugin->desc->name, all[k]) == 0);
        loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value)};
        CHECK(f.vt->value(f.sched, -1, &v) == LOOM_E_INVALID);
        CHECK(f.vt->value(f.sched, 0, &v) == LOOM_OK);
        loom_schedule_setup small = {LOOM_HEADER_INIT(loom_schedule_setup), .base_lr = 1e-3};
        small.struct_size = 16;
        loom_scheduler *s = (loom_scheduler *)&small; /* overwritten with NULL on failure */
        CHECK(f.vt->create(f.host, loom_host_api_table(), f.config, &small, &s) == LOOM_E_ABI);
        CHECK(s == NULL);
        sched_close(&f);
    }
}

int main(void)
{
    /* WarmupLR and WarmupDecayLR over several (N, T), both warmup types. */
    static const warm_case warms[] = {
        {0.0, 1e-3, 10, 1, -1},    {0.0, 1e-3, 10, 0, -1},    {1e-5, 3e-4, 1000, 1, -1},
        {2e-4, 2e-4, 50, 1, -1},   {0.0, 1e-3, 1, 1, -1},     {0.0, 1e-3, 2, 0, -1},
        {0.0, 1e-3, 10, 1, 110},   {0.0, 1e-3, 10, 0, 110},   {1e-5, 1e-3, 10, 1, 110},
        {0.0, 5e-5, 1000, 1, 5000}, {0.0, 1e-3, 7, 0, 8},     {0.0, 1e-3, 7, 1, 7},
        {0.0, 1e-3, 1, 1, 1},      {0.0, 1e-3, 1, 0, 3},      {3e-4, 1e-3, 2, 1, 2},
    };
    for (size_t k = 0; k < sizeof warms / sizeof warms[0]; k++)
        check_warm_table(&warms[k]);

    /* OneCycle: symmetric and asymmetric cycles, with and without decay and momentum. */
    static const cycle_case cycles[] = {
        {1e-4, 1e-3, 0.0, 2000, 2000, 0, 1, 0.8, 0.9, 0.0},
        {1e-4, 1e-3, 0.5, 4, 6, 2, 1, 0.8, 0.9, 0.01},
        {1e-5, 1e-2, 0.1, 7, 3, 5, 1, 0.85, 0.95, 0.0},
        {0.0, 1e-3, 1.0, 1, 1, 1, 0, 0.8, 0.9, 0.0},
        {1e-4, 1e-4, 0.0, 10, 10, 10, 1, 0.9, 0.9, 0.2},
        {2e-4, 3e-3, 2.0, 100, 300, 50, 1, 0.5, 0.99, 0.001},
    };
    for (size_t k = 0; k < sizeof cycles / sizeof cycles[0]; k++) {
        check_cycle_table(&cycles[k], 1);
        if (cycles[k].s1 == cycles[k].s2)
            check_cycle_table(&cycles[k], 0);
    }

    /* LRRangeTest: continuous and staircase. */
    check_range_table(1e-3, 2000, 1.0, 0);
    check_range_table(1e-3, 2000, 1.0, 1);
    check_range_table(1e-5, 7, 0.3, 0);
    check_range_table(1e-5, 7, 0.3, 1);
    check_range_table(2e-4, 1, 5.0, 1);

    check_literals();
    check_errors();
    return test_finish("test_ds_schedules");
}
