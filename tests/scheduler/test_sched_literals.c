/*
 * test_sched_literals.c - the HF schedule plugins against values worked out by hand (base
 * learning rate 1e-3 throughout). Complements test_sched_formulas, which re-evaluates the
 * formulas: a shared misreading of docs/semantics/schedulers.md would pass there but not here.
 */
#include "sched_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct literal {
    int64_t t;
    double lr;
} literal;

static void check_literals(const char *name, const char *const *kv, int64_t T, int64_t W,
                           const literal *want, size_t n)
{
    sched_fixture f;
    CHECK(sched_open(&f, name, kv, 1e-3, T, W) == LOOM_OK);
    for (size_t i = 0; f.sched && i < n; i++) {
        double momentum = 0;
        double lr = sched_lr(&f, want[i].t, &momentum);
        CHECK_CLOSE(lr, want[i].lr, 1e-15, 1e-9);
        CHECK(isnan(momentum));
        if (!(fabs(lr - want[i].lr) <= 1e-15 + 1e-9 * fabs(want[i].lr)))
            fprintf(stderr, "  %s t=%lld\n", name, (long long)want[i].t);
    }
    sched_close(&f);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

int main(void)
{
    /* constant ignores the warmup, as HF's get_constant_schedule does. */
    static const literal constant[] = {{0, 1e-3}, {3, 1e-3}, {10000, 1e-3}};
    check_literals("constant", NULL, 100, 10, constant, N(constant));

    /* W = 4: t/4 during warmup, then flat. */
    static const literal cww[] = {{0, 0}, {1, 0.25e-3}, {3, 0.75e-3}, {4, 1e-3}, {1000, 1e-3}};
    check_literals("constant_with_warmup", NULL, 100, 4, cww, N(cww));

    /* W = 10, T = 100: t=5 -> 5/10; t=55 -> (100-55)/90 = 0.5; t=91 -> 9/90 = 0.1;
     * 0 at and after T. */
    static const literal linear[] = {{0, 0},        {5, 0.5e-3},  {10, 1e-3}, {55, 0.5e-3},
                                     {91, 0.1e-3},  {100, 0},     {105, 0}};
    check_literals("linear", NULL, 100, 10, linear, N(linear));

    /* W = 10, T = 110, num_cycles 0.5: p = (t-10)/100, f = 0.5*(1 + cos(pi*p)).
     * t=35: p=0.25, 0.5*(1 + 0.70710678) = 0.85355339; t=60: p=0.5, 0.5;
     * t=85: p=0.75, 0.5*(1 - 0.70710678) = 0.14644661; t=110: p=1, 0;
     * t=130: p=1.2, 0.5*(1 + cos(1.2 pi)) = 0.5*(1 - 0.80901699) = 0.09549150 (HF rises
     * again past T). */
    static const literal cosine[] = {{5, 0.5e-3},           {35, 0.85355339059e-3},
                                     {60, 0.5e-3},          {85, 0.14644660941e-3},
                                     {110, 0},              {130, 0.09549150281e-3}};
    check_literals("cosine", NULL, 110, 10, cosine, N(cosine));

    /* W = 0, T = 100, num_cycles 2: x = 2*t/100, f = 0.5*(1 + cos(pi * (x mod 1))).
     * t=25: x=0.5 -> 0.5; t=50: x=1 -> restart, 1; t=60: x=1.2 -> 0.5*(1 + cos(0.2 pi)) =
     * 0.90450850; t=75: 0.5; t=99: x=1.98 -> 0.5*(1 + cos(0.98 pi)) = 0.00098664; t=100: 0. */
    static const char *const two[] = {"num_cycles", "2", NULL};
    static const literal restarts[] = {{0, 1e-3},   {25, 0.5e-3}, {50, 1e-3},
                                       {60, 0.90450849719e-3},    {75, 0.5e-3},
                                       {99, 0.00098663578586e-3}, {100, 0}, {150, 0}};
    check_literals("cosine_with_restarts", two, 100, 0, restarts, N(restarts));

    /* lr_end 1e-4, power 2, W = 0, T = 10: lr = 9e-4 * (1 - t/10)^2 + 1e-4.
     * t=5: 9e-4*0.25 + 1e-4 = 3.25e-4; t=8: 9e-4*0.04 + 1e-4 = 1.36e-4; lr_end from T on. */
    static const char *const poly2[] = {"lr_end", "1e-4", "power", "2", NULL};
    static const literal poly[] = {{0, 1e-3}, {5, 3.25e-4}, {8, 1.36e-4}, {10, 1e-4}, {20, 1e-4}};
    check_literals("polynomial", poly2, 10, 0, poly, N(poly));

    /* Defaults (lr_end 1e-7, power 1), W = 2, T = 12: t=1 -> 0.5e-3 (warmup);
     * t=7: (1e-3 - 1e-7)*0.5 + 1e-7 = 5.0005e-4. */
    static const literal poly_default[] = {{1, 0.5e-3}, {2, 1e-3}, {7, 5.0005e-4}, {13, 1e-7}};
    check_literals("polynomial", NULL, 12, 2, poly_default, N(poly_default));

    /* T == W = 5: HF divides by T - W = 0 at t = T; loom takes max(1, T - W) like HF's other
     * schedules: f(5) = 1, then lr_end. */
    static const literal poly_tw[] = {{4, 0.8e-3}, {5, 1e-3}, {6, 1e-7}};
    check_literals("polynomial", NULL, 5, 5, poly_tw, N(poly_tw));
    /* inverse_sqrt, W = 4 (timescale 4): t=2 -> 2/4; from t=4 on sqrt(4 / t): t=16 -> 0.5,
     * t=100 -> 0.2. W = 0 (timescale 10000): t=0 -> 1, t=30000 -> 1/sqrt(4) = 0.5. */
    static const literal isqrt[] = {{2, 0.5e-3}, {4, 1e-3}, {16, 0.5e-3}, {100, 0.2e-3}};
    check_literals("inverse_sqrt", NULL, 100, 4, isqrt, N(isqrt));
    static const literal isqrt0[] = {{0, 1e-3}, {30000, 0.5e-3}};
    check_literals("inverse_sqrt", NULL, 100, 0, isqrt0, N(isqrt0));

    /* cosine_with_min_lr, W = 10, T = 110, min_lr_rate 0.1: t=5 -> 0.5 (warmup);
     * t=60: p = 0.5, 0.5 * 0.9 + 0.1 = 0.55; t=110: p = 1 -> 0.1. min_lr 2e-4 is the rate 0.2:
     * t=60 -> 0.5 * 0.8 + 0.2 = 0.6. */
    static const char *const rate01[] = {"min_lr_rate", "0.1", NULL};
    static const literal cmin[] = {{5, 0.5e-3}, {10, 1e-3}, {60, 0.55e-3}, {110, 0.1e-3}};
    check_literals("cosine_with_min_lr", rate01, 110, 10, cmin, N(cmin));
    static const char *const lr2e4[] = {"min_lr", "2e-4", NULL};
    static const literal cmin_lr[] = {{60, 0.6e-3}, {110, 0.2e-3}};
    check_literals("cosine_with_min_lr", lr2e4, 110, 10, cmin_lr, N(cmin_lr));

    /* cosine_warmup_with_min_lr, W = 4, T = 104, min_lr_rate 0: (t + 1)/4 in the warmup, so
     * t=0 -> 0.25, t=3 -> 1; then p = (t - 3)/100: t=53 -> 0.5, t=103 -> 0 (one step before T).
     * warmup_lr_rate 0.1: 0.1 + 0.9 t/3: t=0 -> 0.1, t=1 -> 0.4, t=3 -> 1. */
    static const char *const rate0[] = {"min_lr_rate", "0", NULL};
    static const literal cwmin[] = {{0, 0.25e-3}, {3, 1e-3}, {53, 0.5e-3}, {103, 0}};
    check_literals("cosine_warmup_with_min_lr", rate0, 104, 4, cwmin, N(cwmin));
    static const char *const wrate[] = {"min_lr_rate", "0", "warmup_lr_rate", "0.1", NULL};
    static const literal cwmin_w[] = {{0, 0.1e-3}, {1, 0.4e-3}, {3, 1e-3}};
    check_literals("cosine_warmup_with_min_lr", wrate, 104, 4, cwmin_w, N(cwmin_w));

    /* warmup_stable_decay, W = 10, T = 100, 20 decay steps, so 70 stable: t=5 -> 0.5; t=50 -> 1;
     * cosine decay from t=80: t=80 -> 1, t=90 -> 0.5; t=100 -> min_lr_ratio 0. */
    static const char *const d20[] = {"num_decay_steps", "20", NULL};
    static const literal wsd[] = {{5, 0.5e-3}, {50, 1e-3}, {79, 1e-3}, {80, 1e-3}, {90, 0.5e-3}, {100, 0}};
    check_literals("warmup_stable_decay", d20, 100, 10, wsd, N(wsd));
    /* min_lr_ratio 0.1, cosine warmup: t=5 -> 0.5 * 0.9 + 0.1 = 0.55; 1-sqrt decay: t=85,
     * p = 0.25 -> (1 - 0.5) * 0.9 + 0.1 = 0.55; 0.1 from t=100 on. */
    static const char *const shaped[] = {"num_decay_steps", "20",           "warmup_type", "cosine", "decay_type",
                                         "1-sqrt",          "min_lr_ratio", "0.1",         NULL};
    static const literal wsd_shaped[] = {{0, 0.1e-3}, {5, 0.55e-3}, {85, 0.55e-3}, {100, 0.1e-3}, {200, 0.1e-3}};
    check_literals("warmup_stable_decay", shaped, 100, 10, wsd_shaped, N(wsd_shaped));
    /* num_stable_steps 10 wins over T: the decay runs from t=20 to 40; linear: t=30 -> 0.5. */
    static const char *const stable10[] = {"num_decay_steps", "20", "num_stable_steps", "10", "decay_type",
                                           "linear",          NULL};
    static const literal wsd_stable[] = {{19, 1e-3}, {20, 1e-3}, {30, 0.5e-3}, {40, 0}, {100, 0}};
    check_literals("warmup_stable_decay", stable10, 100, 10, wsd_stable, N(wsd_stable));
    return test_finish("test_sched_literals");
}
