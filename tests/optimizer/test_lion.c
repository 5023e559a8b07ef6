/*
 * test_lion.c - the lion plugin, loaded through the core loader, against the Lion rule of the
 * paper (docs/semantics/optimizers.md#lion) evaluated here in double precision, and against
 * hand arithmetic: decoupled decay before the signed step, the sign of the interpolation (not
 * of the gradient), sign(0) = 0, the scheduler's momentum as beta1. Against PyTorch ops:
 * tests/optimizer/torch_optim_test.py.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct lion_hp {
    double beta1, beta2;
} lion_hp;

static double sign_of(double x)
{
    return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
}

/* Lion, one element; state[0] is the momentum. */
static void ref_lion(const void *hparams, const loom_optimizer_step *step, double wd, double g, double *p,
                     double *state)
{
    const lion_hp *hp = hparams;
    double b1 = isnan(step->momentum) ? hp->beta1 : step->momentum;
    double *m = &state[0];
    *p *= 1 - step->lr * wd;
    *p -= step->lr * sign_of(b1 * *m + (1 - b1) * g);
    *m = hp->beta2 * *m + (1 - hp->beta2) * g;
}

/* p = 1, lr = 0.1, wd = 0.01, beta1 0.9, beta2 0.99, by hand:
 *   t=1, g = 0.5:  p = 0.999 - 0.1*sign(0.05) = 0.899;      m = 0.005
 *   t=2, g = -0.3: p = 0.899*0.999 - 0.1*sign(0.0045 - 0.03) = 0.998101;  m = 0.00195
 *   t=3, g = 0.01, the scheduler's momentum 0.99 as beta1: c = 0.0019305 + 0.0001 > 0,
 *                  p = 0.998101*0.999 - 0.1 = 0.897102899; m = 0.0020305
 *   t=4, g = -0.2: c = 0.9*0.0020305 - 0.02 < 0: the sign follows g here, m keeps its sign:
 *                  p = 0.897102899*0.999 + 0.1 = 0.996205796; m = 0.000010195
 * and with g = 0 and m = 0 (t=1 of a fresh state) the step moves p by the decay alone. */
static void test_hand_steps(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "lion", NULL) == LOOM_OK);
    float p = 1.0f, g = 0.5f, m = 0.0f;
    float *st[1] = {&m};
    loom_span s = optim_span("w", &p, &g, st, 1, 1, 0.01);
    const struct {
        float g;
        double momentum, p, m;
    } want[4] = {{0.5f, NAN, 0.899, 0.005},
                 {-0.3f, NAN, 0.998101, 0.00195},
                 {0.01f, 0.99, 0.897102899, 0.0020305},
                 {-0.2f, NAN, 0.996205796, 0.000010195}};
    for (int t = 0; t < 4; t++) {
        g = want[t].g;
        loom_optimizer_step step = optim_step_args(t + 1, 0.1, 1.0, want[t].momentum);
        CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
        CHECK_CLOSE(p, want[t].p, 1e-6, 1e-6);
        CHECK_CLOSE(m, want[t].m, 1e-9, 1e-5);
    }
    float q = 2.0f, zero = 0.0f, mz = 0.0f;
    float *stz[1] = {&mz};
    loom_span z = optim_span("z", &q, &zero, stz, 1, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &z, 1, &step) == LOOM_OK);
    CHECK(q == (float)(2.0 * 0.999)); /* sign(0) = 0: no signed step */
    optim_close(&f);
}

static void test_against_reference(const char *beta1, const char *beta2, const loom_optimizer_step *steps,
                                   int64_t n_decay)
{
    const char *kv[] = {"beta1", beta1, "beta2", beta2, "weight_decay", "0.25", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "lion", kv) == LOOM_OK);
    lion_hp hp = {atof(beta1), atof(beta2)};
    CHECK(optim_hparam_is(&f, "beta1", hp.beta1));
    CHECK(optim_hparam_is(&f, "beta2", hp.beta2));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.25));
    /* The sign makes the step discontinuous: the test's gradients keep every interpolation far
     * from 0 relative to float round-off, so the reference and the plugin take the same signs. */
    optim_compare_args a = {.ref = ref_lion,
                            .hparams = &hp,
                            .steps = steps,
                            .n_steps = 4,
                            .n_decay = n_decay,
                            .n_nodecay = 3,
                            .wd = 0.1,
                            .rtol = 1e-5,
                            .atol = 1e-6};
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "lion", NULL) == LOOM_OK);
    CHECK(f.vt->state_slots == 1);
    CHECK(strcmp(f.vt->state_names[0], "exp_avg") == 0);
    CHECK(optim_hparam_is(&f, "beta1", 0.9)); /* bitsandbytes' defaults */
    CHECK(optim_hparam_is(&f, "beta2", 0.99));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.0));
    optim_close(&f);

    test_hand_steps();

    const loom_optimizer_step plain[4] = {optim_step_args(1, 0.1, 1.0, NAN), optim_step_args(2, 0.05, 0.5, NAN),
                                          optim_step_args(3, 0.1, 1.0, NAN), optim_step_args(4, 0.02, 1.0, NAN)};
    const loom_optimizer_step cycled[4] = {optim_step_args(1, 0.1, 1.0, NAN), optim_step_args(2, 0.05, 0.5, 0.5),
                                           optim_step_args(3, 0.1, 1.0, 0.95), optim_step_args(4, 0.02, 1.0, NAN)};
    test_against_reference("0.9", "0.99", plain, 5);
    test_against_reference("0.5", "0.999", plain, 5);
    test_against_reference("0.9", "0.99", cycled, 5);
    test_against_reference("0.9", "0.999", plain, (1 << 15) + 9);
    CHECK(optim_threads_agree("lion", NULL));

    static const char *const bad[][3] = {{"beta1", "1", NULL}, {"beta2", "-0.1", NULL}, {"weight_decay", "-1", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(optim_open(&f, "lion", bad[i]) == LOOM_E_INVALID);
        CHECK(strstr(loom_error_message(), bad[i][0]) != NULL);
        optim_close(&f);
    }
    CHECK(optim_open(&f, "lion", NULL) == LOOM_OK);
    CHECK(loom_config_set(f.config, "eps", "1e-8") != LOOM_OK); /* Lion has no eps */
    optim_close(&f);
    return test_finish("test_lion");
}
