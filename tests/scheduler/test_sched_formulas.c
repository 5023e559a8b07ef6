/*
 * test_sched_formulas.c - every HF schedule plugin, loaded through the core loader, against
 * the formulas of docs/semantics/schedulers.md#hf-schedules written out again here, over the steps where schedules
 * change shape (t = 0, 1, W-1, W, W+1, mid, T-1, T, T+5) for several (W, T) setups.
 */
#include "sched_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct case_params {
    const char *kv[5];                /* config pairs for the plugin, NULL-terminated    */
    double num_cycles, lr_end, power; /* the same values for the reference              */
} case_params;

static double warm(int64_t t, int64_t W)
{
    return (double)t / (double)(W > 1 ? W : 1);
}

/* docs/semantics/schedulers.md#hf-schedules: the LambdaLR multiplier f(t); lr = base_lr * f(t). */
static double ref_factor(const char *name, int64_t t, int64_t W, int64_t T, double lr_init,
                         const case_params *c)
{
    const double pi = 3.14159265358979323846;
    if (!strcmp(name, "constant"))
        return 1.0;
    if (t < W)
        return warm(t, W);
    if (!strcmp(name, "constant_with_warmup"))
        return 1.0;
    double decay = (double)(T - W > 1 ? T - W : 1);
    double p = (double)(t - W) / decay;
    if (!strcmp(name, "linear"))
        return fmax(0.0, (double)(T - t) / decay);
    if (!strcmp(name, "cosine"))
        return fmax(0.0, 0.5 * (1.0 + cos(pi * c->num_cycles * 2.0 * p)));
    if (!strcmp(name, "cosine_with_restarts")) {
        if (p >= 1.0)
            return 0.0;
        double x = c->num_cycles * p, frac = fmod(x, 1.0);
        if (frac < 0) /* Python's % takes the divisor's sign */
            frac += 1.0;
        return fmax(0.0, 0.5 * (1.0 + cos(pi * frac)));
    }
    /* polynomial */
    if (t > T)
        return c->lr_end / lr_init;
    double remaining = 1.0 - (double)(t - W) / (double)(T - W);
    return ((lr_init - c->lr_end) * pow(remaining, c->power) + c->lr_end) / lr_init;
}

static void check_table(const char *name, const case_params *c, double base, int64_t W,
                        int64_t T)
{
    sched_fixture f;
    if (sched_open(&f, name, c->kv, base, T, W) != LOOM_OK) {
        CHECK(!"scheduler opens");
        sched_close(&f);
        return;
    }
    const int64_t ts[] = {0, 1, W - 1, W, W + 1, (W + T) / 2, T - 1, T, T + 5};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t t = ts[i];
        if (t < 0)
            continue;
        double momentum = 0;
        double lr = sched_lr(&f, t, &momentum);
        double want = base * ref_factor(name, t, W, T, base, c);
        CHECK(isnan(momentum));
        CHECK_CLOSE(lr, want, 1e-15 * base, 1e-12);
        if (!(fabs(lr - want) <= 1e-15 * base + 1e-12 * fabs(want)))
            fprintf(stderr, "  %s W=%lld T=%lld t=%lld\n", name, (long long)W, (long long)T,
                    (long long)t);
    }
    sched_close(&f);
}

int main(void)
{
    static const struct {
        const char *name;
        case_params params[2];
        size_t n_params;
    } scheds[] = {
        {"constant", {{.kv = {NULL}}}, 1},
        {"constant_with_warmup", {{.kv = {NULL}}}, 1},
        {"linear", {{.kv = {NULL}}}, 1},
        {"cosine",
         {{.kv = {NULL}, .num_cycles = 0.5},
          {.kv = {"num_cycles", "1.5", NULL}, .num_cycles = 1.5}},
         2},
        {"cosine_with_restarts",
         {{.kv = {NULL}, .num_cycles = 1.0},
          {.kv = {"num_cycles", "3", NULL}, .num_cycles = 3.0}},
         2},
        {"polynomial",
         {{.kv = {NULL}, .lr_end = 1e-7, .power = 1.0},
          {.kv = {"lr_end", "1e-4", "power", "2", NULL}, .lr_end = 1e-4, .power = 2.0}},
         2},
    };
    /* (W, T): the usual shape, no warmup, odd sizes, one step each, warmup longer than the
     * run. T == W is left to test_sched_literals (HF's polynomial divides by zero there). */
    static const int64_t setups[][2] = {{10, 100}, {0, 50}, {7, 33}, {1, 2}, {20, 10}};
    for (size_t s = 0; s < sizeof scheds / sizeof scheds[0]; s++)
        for (size_t p = 0; p < scheds[s].n_params; p++)
            for (size_t k = 0; k < sizeof setups / sizeof setups[0]; k++)
                check_table(scheds[s].name, &scheds[s].params[p], 1e-3, setups[k][0],
                            setups[k][1]);
    return test_finish("test_sched_formulas");
}
