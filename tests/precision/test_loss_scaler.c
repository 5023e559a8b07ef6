/*
 * test_loss_scaler.c - the loss-scale rules of plugins/precision/loss_scaler.c, step by step,
 * against sequences worked out by hand from docs/semantics/precision.md#deepspeed-loss-scaler (DeepSpeed
 * DynamicLossScaler, ZeRO path), docs/semantics/precision.md#apex (apex LossScaler) and
 * docs/semantics/precision.md#grad-scaler (torch GradScaler).
 */
#include <math.h>
#include <string.h>

#include "loss_scaler.h"
#include "test_util.h"

/* Feed steps[i] ('o' overflow, 'c' clean) and compare the scale after every step with
 * want[i]; the first mismatch is printed with its step. Every update must answer LOOM_OK. */
static void run_sequence(const char *what, loss_scaler *s, const char *steps, const double *want)
{
    for (size_t i = 0; steps[i]; i++) {
        loom_status st = ls_update(s, steps[i] == 'o');
        if (st != LOOM_OK || ls_scale(s) != want[i]) {
            fprintf(stderr, "%s: step %zu ('%c'): status %d, scale %.17g, want %.17g\n", what, i, steps[i], (int)st,
                    ls_scale(s), want[i]);
            CHECK(!"sequence diverged");
            return;
        }
    }
    CHECK(1);
}

static void clean_steps(loss_scaler *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        ls_update(s, 0);
}

static double p2(int e)
{
    return ldexp(1.0, e);
}

static void test_deepspeed_hysteresis(void)
{
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    CHECK(c.init_scale == p2(16) && c.window == 1000 && c.hysteresis == 2 && c.min_scale == 1.0);
    CHECK(!c.consecutive_hysteresis);
    c.window = 4;
    loss_scaler s;
    ls_init(&s, &c);
    CHECK(ls_scale(&s) == p2(16) && s.hysteresis_left == 2 && s.last_overflow == -1 && s.iteration == 0);
    /* iter 0..3 clean: (iter - (-1)) % 4 == 0 first at iter 3 = window - 1. Then a burst of
     * three overflows: the first only spends hysteresis (2 -> 1), the next two halve (the
     * hysteresis is not refilled by overflows). Growth again 4 iterations after the last
     * overflow (iter 10), which also refills the hysteresis; one overflow spends it again,
     * a clean step does not refill it (consecutive_hysteresis false), so the next halves. */
    const char *steps = "ccccooocccc"
                        "oco";
    const double want[] = {p2(16), p2(16), p2(16), p2(17), p2(17), p2(16), p2(15),
                           p2(15), p2(15), p2(15), p2(16), p2(16), p2(16), p2(15)};
    run_sequence("deepspeed hysteresis 2", &s, steps, want);
    CHECK(s.iteration == 14 && s.last_overflow == 13 && s.hysteresis_left == 1);

    /* Same with consecutive_hysteresis: the clean step at iter 12 refills it, so the overflow
     * at iter 13 spends hysteresis instead of halving. */
    c.consecutive_hysteresis = 1;
    ls_init(&s, &c);
    const double want_consecutive[] = {p2(16), p2(16), p2(16), p2(17), p2(17), p2(16), p2(15),
                                       p2(15), p2(15), p2(15), p2(16), p2(16), p2(16), p2(16)};
    run_sequence("deepspeed consecutive_hysteresis", &s, steps, want_consecutive);
    CHECK(s.hysteresis_left == 1);
}

static void test_deepspeed_window(void)
{
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    loss_scaler s;
    ls_init(&s, &c);
    clean_steps(&s, 999); /* iterations 0..998 */
    CHECK(ls_scale(&s) == p2(16));
    ls_update(&s, 0); /* iteration 999: (999 + 1) % 1000 == 0 */
    CHECK(ls_scale(&s) == p2(17));
    clean_steps(&s, 999);
    CHECK(ls_scale(&s) == p2(17));
    ls_update(&s, 0); /* iteration 1999 */
    CHECK(ls_scale(&s) == p2(18));
    /* After an overflow at iteration 2000 (hysteresis spent, no halving), growth comes at
     * 2000 + 1000 = 3000: the 1000th clean step after it. */
    ls_update(&s, 1);
    CHECK(ls_scale(&s) == p2(18) && s.last_overflow == 2000);
    clean_steps(&s, 999);
    CHECK(ls_scale(&s) == p2(18));
    ls_update(&s, 0);
    CHECK(ls_scale(&s) == p2(19) && s.iteration == 3001);
}

static void test_deepspeed_min_and_static(void)
{
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    c.init_scale = 4;
    c.hysteresis = 1;
    c.min_scale = 1;
    c.max_overflow_at_min = 0; /* the clamp alone */
    loss_scaler s;
    ls_init(&s, &c);
    const double want[] = {2, 1, 1, 1, 1};
    run_sequence("deepspeed min clamp", &s, "ooooo", want);
    CHECK(ls_at_min(&s));

    /* A min that is not a power of two: max(3/2, 1.25) = 1.5, max(0.75, 1.25) = 1.25. */
    c.init_scale = 3;
    c.min_scale = 1.25;
    ls_init(&s, &c);
    const double want_odd[] = {1.5, 1.25, 1.25};
    run_sequence("deepspeed min 1.25", &s, "ooo", want_odd);

    /* Static: loss_scale > 0 never moves, whatever happens. */
    loss_scaler_config st;
    ls_config_static(&st, 1024);
    st.max_overflow_at_min = 0;
    ls_init(&s, &st);
    const double want_static[] = {1024, 1024, 1024, 1024, 1024};
    run_sequence("static", &s, "ocooc", want_static);
    clean_steps(&s, 5000);
    CHECK(ls_scale(&s) == 1024 && s.iteration == 5005 && s.last_overflow == 3);
}

static void test_deepspeed_v0310_trap(void)
{
    /* ds_config fp16 without any dynamic key: DynamicLossScaler() defaults, 2^32 and no
     * hysteresis, so the first overflow halves at once. */
    loss_scaler_config c;
    ls_config_deepspeed_v0310_no_dynamic_keys(&c);
    CHECK(c.init_scale == p2(32) && c.hysteresis == 1 && c.window == 1000 && c.min_scale == 1.0);
    loss_scaler s;
    ls_init(&s, &c);
    CHECK(ls_scale(&s) == 4294967296.0);
    const double want[] = {p2(31), p2(30), p2(30), p2(29)};
    run_sequence("deepspeed v0.3.10 defaults", &s, "ooco", want);
}

static void test_torch(void)
{
    loss_scaler_config c;
    ls_config_torch(&c);
    CHECK(c.init_scale == 65536.0 && c.growth_factor == 2.0 && c.backoff_factor == 0.5);
    CHECK(c.growth_interval == 2000 && isinf(c.max_scale) && c.min_scale == p2(-24));
    loss_scaler s;
    ls_init(&s, &c);
    clean_steps(&s, 1999);
    CHECK(ls_scale(&s) == p2(16) && s.growth_tracker == 1999);
    ls_update(&s, 0);
    CHECK(ls_scale(&s) == p2(17) && s.growth_tracker == 0);

    /* Interval 3: growth after exactly 3 clean steps; an overflow backs off and resets the
     * tracker, so the 2 clean steps before it do not count. */
    c.growth_interval = 3;
    ls_init(&s, &c);
    const double want[] = {p2(16), p2(16), p2(17), p2(16), p2(16), p2(16), p2(15), p2(15), p2(15), p2(16)};
    run_sequence("torch interval 3", &s,
                 "cccocco"
                 "ccc",
                 want);
    CHECK(s.growth_tracker == 0 && s.last_overflow == 6 && s.iteration == 10);

    /* Growth refused when the fp32 result is not finite: 2^127 * 2 = inf. The tracker still
     * resets, as in _amp_update_scale. */
    c.init_scale = p2(127);
    ls_init(&s, &c);
    const double want_top[] = {p2(127), p2(127), p2(127), p2(127)};
    run_sequence("torch growth to inf", &s, "cccc", want_top);
    CHECK(s.growth_tracker == 1);

    /* The scale is an fp32 tensor in torch: 1 * 0.1 is stored as the float nearest 0.1. */
    c.init_scale = 1.0;
    c.backoff_factor = 0.1;
    ls_init(&s, &c);
    ls_update(&s, 1);
    CHECK(ls_scale(&s) == (double)0.1f);

    /* No minimum of its own: the floor (2^-24 by default) stops the backoff. */
    ls_config_torch(&c);
    c.init_scale = p2(-23);
    c.max_overflow_at_min = 0;
    ls_init(&s, &c);
    const double want_floor[] = {p2(-24), p2(-24), p2(-24)};
    run_sequence("torch floor", &s, "ooo", want_floor);
}

static void test_apex(void)
{
    loss_scaler_config c;
    ls_config_apex(&c);
    CHECK(c.init_scale == p2(16) && c.growth_interval == 2000 && c.max_scale == p2(24));
    c.growth_interval = 2;
    c.max_scale = p2(17);
    loss_scaler s;
    ls_init(&s, &c);
    const double want[] = {p2(16), p2(17), p2(17), p2(17), p2(16), p2(16), p2(17)};
    run_sequence("apex max", &s,
                 "cccco"
                 "cc",
                 want);
    /* The start is min(max, init). */
    c.max_scale = p2(10);
    ls_init(&s, &c);
    CHECK(ls_scale(&s) == p2(10));
}

static void test_stop_rule(void)
{
    /* DeepSpeed at min 1, hysteresis 1, N = 3: the overflows at 4 and 2 halve (not at the
     * minimum yet), then three at 1: the third stops, not the second. */
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    c.init_scale = 4;
    c.hysteresis = 1;
    c.max_overflow_at_min = 3;
    loss_scaler s;
    ls_init(&s, &c);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_scale(&s) == 2);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_scale(&s) == 1);
    CHECK(ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 1) == LOOM_E_STOP);
    char msg[320];
    ls_stop_message(&s, msg, sizeof msg);
    CHECK(strstr(msg, "loss scale stuck at minimum 1 after 3 consecutive overflows") != NULL);
    CHECK(strstr(msg, "cannot go on") != NULL);

    /* A clean step resets the count. */
    ls_init(&s, &c);
    ls_update(&s, 1);
    ls_update(&s, 1);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 0) == LOOM_OK && s.overflows_at_min == 0);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 1) == LOOM_E_STOP);

    /* With hysteresis at the minimum, the overflows that only spend hysteresis count too. */
    c.init_scale = 1;
    c.hysteresis = 2;
    ls_init(&s, &c);
    CHECK(ls_update(&s, 1) == LOOM_OK && s.hysteresis_left == 1);
    CHECK(ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 1) == LOOM_E_STOP);

    /* 0 disables it. */
    c.max_overflow_at_min = 0;
    ls_init(&s, &c);
    int stopped = 0;
    for (int i = 0; i < 100; i++)
        stopped |= ls_update(&s, 1) != LOOM_OK;
    CHECK(!stopped && ls_scale(&s) == 1);

    /* torch at its floor: the default N = 10; 40 halvings from 2^16 reach 2^-24 first. */
    ls_config_torch(&c);
    CHECK(c.max_overflow_at_min == 10);
    ls_init(&s, &c);
    int first_stop = -1;
    for (int i = 0; i < 60 && first_stop < 0; i++)
        if (ls_update(&s, 1) == LOOM_E_STOP) first_stop = i;
    CHECK(first_stop == 40 + 10 - 1);
    CHECK(ls_scale(&s) == p2(-24));

    /* No scaling (bf16): every step is at the minimum. */
    ls_config_none(&c);
    c.max_overflow_at_min = 2;
    ls_init(&s, &c);
    CHECK(ls_scale(&s) == 1.0);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_update(&s, 0) == LOOM_OK && ls_update(&s, 1) == LOOM_OK);
    CHECK(ls_update(&s, 1) == LOOM_E_STOP);
    ls_stop_message(&s, msg, sizeof msg);
    CHECK(strstr(msg, "2 consecutive steps") != NULL);
    CHECK(ls_scale(&s) == 1.0 && s.last_overflow == 3 && s.iteration == 4);

    /* Static: its own minimum as well. */
    ls_config_static(&c, 128);
    c.max_overflow_at_min = 2;
    ls_init(&s, &c);
    CHECK(ls_update(&s, 1) == LOOM_OK && ls_update(&s, 1) == LOOM_E_STOP);
    ls_stop_message(&s, msg, sizeof msg);
    CHECK(strstr(msg, "static loss scale 128") != NULL);
}

static void test_state(void)
{
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    c.window = 4;
    loss_scaler a, b;
    ls_init(&a, &c);
    run_sequence("state warm-up", &a, "cccco", (const double[]){p2(16), p2(16), p2(16), p2(17), p2(17)});
    loom_precision_state st = {LOOM_HEADER_INIT(loom_precision_state)};
    ls_get_state(&a, &st);
    CHECK(st.loss_scale == p2(17) && st.iteration == 5 && st.last_overflow == 4 && st.hysteresis_left == 1);
    CHECK(st.growth_tracker == 0);
    ls_init(&b, &c);
    CHECK(ls_set_state(&b, &st) == NULL);
    loom_precision_state back = {LOOM_HEADER_INIT(loom_precision_state)};
    ls_get_state(&b, &back);
    CHECK(memcmp(&st, &back, sizeof st) == 0);
    /* The restored scaler continues exactly as the original. */
    for (int i = 0; i < 12; i++) {
        int o = i == 2 || i == 7;
        ls_update(&a, o);
        ls_update(&b, o);
        CHECK(ls_scale(&a) == ls_scale(&b) && a.hysteresis_left == b.hysteresis_left);
    }

    /* Arbitrary (valid) values round-trip for every rule. */
    const loom_precision_state any = {LOOM_HEADER_INIT(loom_precision_state),
                                      .loss_scale = 12288.0,
                                      .iteration = 77,
                                      .last_overflow = 70,
                                      .growth_tracker = 6,
                                      .hysteresis_left = 2};
    loss_scaler_config cs[4];
    ls_config_deepspeed(&cs[0]);
    ls_config_torch(&cs[1]);
    ls_config_apex(&cs[2]);
    ls_config_static(&cs[3], 8);
    for (int i = 0; i < 4; i++) {
        ls_init(&b, &cs[i]);
        CHECK(ls_set_state(&b, &any) == NULL);
        ls_get_state(&b, &back);
        CHECK(memcmp(&any, &back, sizeof any) == 0);
    }
    /* No scaling keeps 1.0 but restores the counters. */
    loss_scaler_config none;
    ls_config_none(&none);
    ls_init(&b, &none);
    CHECK(ls_set_state(&b, &any) == NULL);
    ls_get_state(&b, &back);
    CHECK(back.loss_scale == 1.0 && back.iteration == 77 && back.last_overflow == 70);

    /* Bad states are refused and change nothing. */
    ls_init(&b, &cs[0]);
    loom_precision_state bad = any;
    bad.loss_scale = NAN;
    CHECK(ls_set_state(&b, &bad) != NULL);
    bad = any;
    bad.last_overflow = 77;
    CHECK(ls_set_state(&b, &bad) != NULL);
    bad = any;
    bad.hysteresis_left = 0;
    CHECK(ls_set_state(&b, &bad) != NULL);
    CHECK(ls_scale(&b) == p2(16) && b.iteration == 0);
}

static void test_config_errors(void)
{
    loss_scaler_config c;
    ls_config_deepspeed(&c);
    CHECK(ls_config_error(&c) == NULL);
    c.min_scale = 0;
    CHECK(ls_config_error(&c) != NULL);
    ls_config_deepspeed(&c);
    c.hysteresis = 0;
    CHECK(ls_config_error(&c) != NULL);
    ls_config_torch(&c);
    CHECK(ls_config_error(&c) == NULL);
    c.growth_factor = 1.0;
    CHECK(ls_config_error(&c) != NULL);
    ls_config_torch(&c);
    c.backoff_factor = 1.0;
    CHECK(ls_config_error(&c) != NULL);
    ls_config_static(&c, -1);
    CHECK(ls_config_error(&c) != NULL);
    ls_config_none(&c);
    c.max_overflow_at_min = -1;
    CHECK(ls_config_error(&c) != NULL);
}

int main(void)
{
    test_deepspeed_hysteresis();
    test_deepspeed_window();
    test_deepspeed_min_and_static();
    test_deepspeed_v0310_trap();
    test_torch();
    test_apex();
    test_stop_rule();
    test_state();
    test_config_errors();
    return test_finish("test_loss_scaler");
}
