/*
 * test_sched_newer_formulas.c - the HF schedules added after v4.3 (inverse_sqrt,
 * cosine_with_min_lr, cosine_warmup_with_min_lr, warmup_stable_decay), loaded through the core
 * loader, against transformers' lambdas (optimization.py) written out again here, at every
 * step from 0 to T + 5 for several (W, T) setups, including no warmup, a one-step warmup and a
 * warmup longer than the run. docs/semantics/schedulers.md#hf-schedules
 */
#include "sched_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct case_params {
    const char *kv[11];         /* config pairs for the plugin, NULL-terminated            */
    double num_cycles;          /* the same values for the reference                        */
    double min_lr, min_lr_rate; /* by_min_lr: min_lr was given, else min_lr_rate           */
    int by_min_lr;
    double warmup_lr_rate; /* used when has_warmup_lr_rate (HF: not None)              */
    int has_warmup_lr_rate;
    int64_t decay, stable; /* warmup_stable_decay; stable used when has_stable         */
    int has_stable;
    const char *up, *down; /* warmup_stable_decay's warmup_type, decay_type            */
    double ratio;          /* warmup_stable_decay's min_lr_ratio                       */
} case_params;

static const double pi = 3.14159265358979323846;

/* _get_inverse_sqrt_schedule_lr_lambda with timescale = num_warmup_steps or 10_000. */
static double ref_inverse_sqrt(int64_t t, int64_t W)
{
    if (t < W) return (double)t / (double)(W > 1 ? W : 1);
    double timescale = W ? (double)W : 10000.0;
    double shift = timescale - (double)W;
    return 1.0 / sqrt(((double)t + shift) / timescale);
}

/* _get_cosine_schedule_with_warmup_lr_lambda with min_lr_rate. */
static double ref_cosine_min_lr(int64_t t, int64_t W, int64_t T, double lr, const case_params *c)
{
    double rate = c->by_min_lr ? c->min_lr / lr : c->min_lr_rate;
    if (t < W) return (double)t / (double)(W > 1 ? W : 1);
    double progress = (double)(t - W) / (double)(T - W > 1 ? T - W : 1);
    double factor = 0.5 * (1.0 + cos(pi * c->num_cycles * 2.0 * progress));
    factor = factor * (1 - rate) + rate;
    return factor > 0 ? factor : 0;
}

/* _get_cosine_with_min_lr_schedule_with_warmup_lr_rate_lambda: everything in floats. */
static double ref_cosine_warmup_min_lr(int64_t step, int64_t warmup, int64_t total, double lr, const case_params *c)
{
    double rate = c->by_min_lr ? c->min_lr / lr : c->min_lr_rate;
    double t = (double)step, W = (double)warmup, T = (double)total;
    if (t < W) {
        if (!c->has_warmup_lr_rate) return (t + 1.0) / (W > 1.0 ? W : 1.0);
        return c->warmup_lr_rate + (1.0 - c->warmup_lr_rate) * t / (W - 1 > 1 ? W - 1 : 1);
    }
    double progress = (t - W + 1.0) / (T - W > 1.0 ? T - W : 1.0);
    double factor = 0.5 * (1.0 + cos(pi * c->num_cycles * 2.0 * progress));
    factor = factor * (1 - rate) + rate;
    return factor > 0 ? factor : 0;
}

/* _get_wsd_scheduler_lambda, with get_wsd_schedule's num_stable_steps default. */
static double ref_wsd(int64_t t, int64_t W, int64_t T, const case_params *c)
{
    int64_t D = c->decay, S = c->has_stable ? c->stable : T - W - D;
    double m = c->ratio, factor;
    if (t < W) {
        double progress = (double)t / (double)(W > 1 ? W : 1);
        if (!strcmp(c->up, "linear"))
            factor = progress;
        else if (!strcmp(c->up, "cosine"))
            factor = 0.5 * (1.0 - cos(pi * progress));
        else
            factor = 1.0 - sqrt(1.0 - progress);
        factor = factor * (1.0 - m) + m;
        return factor > 0 ? factor : 0;
    }
    if (t < W + S) return 1.0;
    if (t < W + S + D) {
        double progress = (double)(t - W - S) / (double)(D > 1 ? D : 1);
        if (!strcmp(c->down, "linear"))
            factor = 1.0 - progress;
        else if (!strcmp(c->down, "cosine"))
            factor = 0.5 * (1.0 + cos(pi * c->num_cycles * 2.0 * progress));
        else
            factor = 1.0 - sqrt(progress);
        factor = factor * (1.0 - m) + m;
        return factor > 0 ? factor : 0;
    }
    return m;
}

static double ref_factor(const char *name, int64_t t, int64_t W, int64_t T, double lr, const case_params *c)
{
    if (!strcmp(name, "inverse_sqrt")) return ref_inverse_sqrt(t, W);
    if (!strcmp(name, "cosine_with_min_lr")) return ref_cosine_min_lr(t, W, T, lr, c);
    if (!strcmp(name, "cosine_warmup_with_min_lr")) return ref_cosine_warmup_min_lr(t, W, T, lr, c);
    return ref_wsd(t, W, T, c);
}

static void check_every_step(const char *name, const case_params *c, double base, int64_t W, int64_t T)
{
    sched_fixture f;
    if (sched_open(&f, name, c->kv, base, T, W) != LOOM_OK) {
        CHECK(!"scheduler opens");
        sched_close(&f);
        return;
    }
    int bad = 0;
    for (int64_t t = 0; t <= T + 5; t++) {
        double momentum = 0;
        double lr = sched_lr(&f, t, &momentum);
        double want = base * ref_factor(name, t, W, T, base, c);
        CHECK(isnan(momentum));
        CHECK_CLOSE(lr, want, 1e-15 * base, 1e-12);
        if (!(fabs(lr - want) <= 1e-15 * base + 1e-12 * fabs(want)) && !bad++)
            fprintf(stderr, "  %s %s=%s W=%lld T=%lld t=%lld\n", name, c->kv[0] ? c->kv[0] : "",
                    c->kv[1] ? c->kv[1] : "", (long long)W, (long long)T, (long long)t);
    }
    sched_close(&f);
}

int main(void)
{
    static const struct {
        const char *name;
        case_params params[6];
        size_t n_params;
    } scheds[] = {
        {"inverse_sqrt", {{.kv = {NULL}}}, 1},
        {"cosine_with_min_lr",
         {{.kv = {"min_lr", "1e-4", NULL}, .num_cycles = 0.5, .min_lr = 1e-4, .by_min_lr = 1},
          {.kv = {"min_lr_rate", "0.25", "num_cycles", "1.5", NULL}, .num_cycles = 1.5, .min_lr_rate = 0.25},
          {.kv = {"min_lr_rate", "0", NULL}, .num_cycles = 0.5, .min_lr_rate = 0}},
         3},
        {"cosine_warmup_with_min_lr",
         {{.kv = {"min_lr", "2e-4", NULL}, .num_cycles = 0.5, .min_lr = 2e-4, .by_min_lr = 1},
          {.kv = {"min_lr_rate", "0.1", "warmup_lr_rate", "0.05", NULL},

           .num_cycles = 0.5,
           .min_lr_rate = 0.1,
           .warmup_lr_rate = 0.05,
           .has_warmup_lr_rate = 1},
          {.kv = {"min_lr_rate", "0.5", "num_cycles", "2", NULL}, .num_cycles = 2, .min_lr_rate = 0.5}},
         3},
        {"warmup_stable_decay",
         {{.kv = {"num_decay_steps", "4", NULL}, .decay = 4, .up = "linear", .down = "cosine", .num_cycles = 0.5},
          {.kv = {"num_decay_steps", "6", "warmup_type", "cosine", "decay_type", "linear", "min_lr_ratio", "0.1", NULL},

           .decay = 6,
           .up = "cosine",
           .down = "linear",
           .ratio = 0.1,
           .num_cycles = 0.5},
          {.kv = {"num_decay_steps", "5", "warmup_type", "1-sqrt", "decay_type", "1-sqrt", "min_lr_ratio", "0.2", NULL},

           .decay = 5,
           .up = "1-sqrt",
           .down = "1-sqrt",
           .ratio = 0.2,
           .num_cycles = 0.5},
          {.kv = {"num_decay_steps", "3", "num_stable_steps", "2", "num_cycles", "1", NULL},

           .decay = 3,
           .stable = 2,
           .has_stable = 1,
           .up = "linear",
           .down = "cosine",
           .num_cycles = 1},
          {.kv = {"num_decay_steps", "40", NULL}, .decay = 40, .up = "linear", .down = "cosine", .num_cycles = 0.5}},
         5},
    };
    /* (W, T): the usual shape, no warmup, odd sizes, one step each, warmup longer than the run. */
    static const int64_t setups[][2] = {{10, 100}, {0, 50}, {7, 33}, {1, 2}, {20, 10}};
    for (size_t s = 0; s < sizeof scheds / sizeof scheds[0]; s++)
        for (size_t p = 0; p < scheds[s].n_params; p++)
            for (size_t k = 0; k < sizeof setups / sizeof setups[0]; k++)
                check_every_step(scheds[s].name, &scheds[s].params[p], 1e-3, setups[k][0], setups[k][1]);
    return test_finish("test_sched_newer_formulas");
}
