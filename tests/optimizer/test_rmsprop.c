/*
 * test_rmsprop.c - the rmsprop plugin, loaded through the core loader, against torch.optim.
 * RMSprop's rule (docs/semantics/optimizers.md#rmsprop) evaluated here in double precision, and
 * against hand arithmetic: plain, with momentum, centered, and the scheduler's momentum.
 * PyTorch itself: tests/optimizer/torch_optim_test.py.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct rmsprop_hp {
    double alpha, eps, momentum;
    int centered;
} rmsprop_hp;

/* torch.optim.RMSprop, one element; state: square_avg, momentum_buffer, grad_avg. */
static void ref_rmsprop(const void *hparams, const loom_optimizer_step *step, double wd, double g, double *p,
                        double *state)
{
    const rmsprop_hp *hp = hparams;
    double mu = isnan(step->momentum) ? hp->momentum : step->momentum;
    double *sq = &state[0], *buf = &state[1], *ga = &state[2];
    g += wd * *p;
    *sq = hp->alpha * *sq + (1 - hp->alpha) * g * g;
    double avg;
    if (hp->centered) {
        *ga = hp->alpha * *ga + (1 - hp->alpha) * g;
        avg = sqrt(*sq - *ga * *ga) + hp->eps;
    } else {
        avg = sqrt(*sq) + hp->eps;
    }
    if (mu > 0) {
        *buf = mu * *buf + g / avg;
        *p -= step->lr * *buf;
    } else {
        *p -= step->lr * g / avg;
    }
}

/* Two steps of p = 1, g = 0.5, lr = 0.1, wd = 0.01 (alpha 0.99, eps 1e-8), by hand:
 *   plain:    t=1: d = 0.51, sq = 0.01*0.2601 = 0.002601, p = 1 - 0.1*0.51/0.051 = 0 (+2e-7
 *             from eps); t=2: d = 0.5, sq = 0.99*0.002601 + 0.0025 = 0.00507499,
 *             p = -0.1*0.5/0.07123897 = -0.70186280
 *   momentum 0.9, centered: t=1: ga = 0.0051, avg = sqrt(0.002601 - 0.00002601) = 0.05074446,
 *             buf = 0.51/0.05074446 = 10.05037617, p = 1 - 1.00503762 = -0.00503762;
 *             t=2: d = 0.49994962, sq = 0.00507449, ga = 0.01004850,
 *             buf = 0.9*10.05037617 + d/0.07054117 = 16.13449422, p = -1.61848704 */
static void test_hand_steps(const char *const *kv, double p1, double sq1, double p2, double sq2)
{
    optim_fixture f;
    CHECK(optim_open(&f, "rmsprop", kv) == LOOM_OK);
    float p = 1.0f, g = 0.5f, sq = 0.0f, buf = 0.0f, ga = 0.0f;
    float *st[3] = {&sq, &buf, &ga};
    loom_span s = optim_span("w", &p, &g, st, 3, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p1, 1e-6, 1e-5);
    CHECK_CLOSE(sq, sq1, 1e-9, 1e-5);
    step.step = 2;
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p2, 1e-6, 1e-5);
    CHECK_CLOSE(sq, sq2, 1e-9, 1e-5);
    optim_close(&f);
}

static void test_against_reference(const char *momentum, const char *centered, const loom_optimizer_step *steps,
                                   int64_t n_decay)
{
    const char *kv[] = {"momentum", momentum, "centered",     centered, "alpha", "0.9",
                        "eps",      "1e-6",   "weight_decay", "0.25",   NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "rmsprop", kv) == LOOM_OK);
    rmsprop_hp hp = {0.9, 1e-6, atof(momentum), strcmp(centered, "true") == 0};
    CHECK(optim_hparam_is(&f, "alpha", 0.9));
    CHECK(optim_hparam_is(&f, "eps", 1e-6));
    CHECK(optim_hparam_is(&f, "momentum", hp.momentum));
    CHECK(optim_hparam_is(&f, "centered", hp.centered ? 1.0 : 0.0));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.25));
    optim_compare_args a = {.ref = ref_rmsprop,
                            .hparams = &hp,
                            .steps = steps,
                            .n_steps = 3,
                            .n_decay = n_decay,
                            .n_nodecay = 3,
                            .wd = 0.01,
                            .rtol = 2e-5,
                            .atol = 1e-6};
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "rmsprop", NULL) == LOOM_OK);
    CHECK(f.vt->state_slots == 3);
    CHECK(strcmp(f.vt->state_names[0], "square_avg") == 0);
    CHECK(strcmp(f.vt->state_names[1], "momentum_buffer") == 0);
    CHECK(strcmp(f.vt->state_names[2], "grad_avg") == 0);
    CHECK(optim_hparam_is(&f, "alpha", 0.99)); /* torch's defaults */
    CHECK(optim_hparam_is(&f, "eps", 1e-8));
    CHECK(optim_hparam_is(&f, "momentum", 0.0));
    CHECK(optim_hparam_is(&f, "centered", 0.0));
    optim_close(&f);

    test_hand_steps(NULL, 1.9607839e-07, 0.002601, -0.70186280, 0.00507499);
    static const char *const mc[] = {"momentum", "0.9", "centered", "true", NULL};
    test_hand_steps(mc, -0.00503762, 0.002601, -1.61848704, 0.00507449);

    const loom_optimizer_step plain[3] = {optim_step_args(1, 0.1, 1.0, NAN), optim_step_args(2, 0.05, 0.5, NAN),
                                          optim_step_args(3, 0.1, 1.0, NAN)};
    /* The scheduler's momentum (OneCycle) replaces the configured one for its step. */
    const loom_optimizer_step cycled[3] = {optim_step_args(1, 0.1, 1.0, NAN), optim_step_args(2, 0.05, 0.5, 0.5),
                                           optim_step_args(3, 0.1, 1.0, 0.0)};
    test_against_reference("0", "false", plain, 5);
    test_against_reference("0.9", "false", plain, 5);
    test_against_reference("0", "true", plain, 5);
    test_against_reference("0.8", "true", cycled, 5);
    test_against_reference("0.9", "false", plain, (1 << 15) + 9);
    static const char *const centered_momentum[] = {"momentum", "0.9", "centered", "true", NULL};
    CHECK(optim_threads_agree("rmsprop", centered_momentum));
    CHECK(optim_threads_agree("rmsprop", NULL));

    static const char *const bad[][3] = {
        {"alpha", "-0.5", NULL}, {"eps", "-1", NULL}, {"momentum", "-0.9", NULL}, {"weight_decay", "-1", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(optim_open(&f, "rmsprop", bad[i]) == LOOM_E_INVALID);
        CHECK(strstr(loom_error_message(), bad[i][0]) != NULL);
        optim_close(&f);
    }
    /* A negative scheduler momentum is refused at the step, leaving the values alone. */
    CHECK(optim_open(&f, "rmsprop", NULL) == LOOM_OK);
    float p = 1.0f, g = 0.5f, sq = 0.0f, buf = 0.0f, ga = 0.0f;
    float *st[3] = {&sq, &buf, &ga};
    loom_span s = optim_span("w", &p, &g, st, 3, 1, 0.0);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, -0.5);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_E_INVALID);
    CHECK(p == 1.0f && sq == 0.0f);
    optim_close(&f);
    return test_finish("test_rmsprop");
}
