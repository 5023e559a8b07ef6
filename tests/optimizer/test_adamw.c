/*
 * test_adamw.c - the adamw plugin, loaded through the core loader, against torch.optim.AdamW's
 * rule (docs/semantics/optimizers.md#adamw-torch) evaluated here in double precision, and against hand arithmetic.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct adam_hp {
    double beta1, beta2, eps;
} adam_hp;

/* torch.optim.AdamW, one element, straight from docs/semantics/optimizers.md#adamw-torch. */
static void ref_adamw(const void *hparams, const loom_optimizer_step *step, double wd, double g,
                      double *p, double *state)
{
    const adam_hp *hp = hparams;
    double b1 = isnan(step->momentum) ? hp->beta1 : step->momentum, b2 = hp->beta2;
    double t = (double)step->step, lr = step->lr;
    double *m = &state[0], *v = &state[1];
    *p *= 1 - lr * wd;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double denom = sqrt(*v) / sqrt(1 - pow(b2, t)) + hp->eps;
    *p -= lr / (1 - pow(b1, t)) * *m / denom;
}

/* One step of p = 1, g = 0.5, lr = 0.1, wd = 0.01 with the defaults (b1 0.9, b2 0.999,
 * eps 1e-8), by hand:
 *   p = 1 * (1 - 0.1*0.01)                 = 0.999
 *   m = 0.1 * 0.5                          = 0.05
 *   v = 0.001 * 0.25                       = 0.00025
 *   denom = sqrt(0.00025)/sqrt(0.001) + 1e-8 = 0.0158113883/0.0316227766 + 1e-8 = 0.50000001
 *   p -= (0.1 / 0.1) * 0.05 / 0.50000001   = 0.099999998
 *   p = 0.999 - 0.099999998                = 0.899000002 */
static void test_hand_step(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adamw", NULL) == LOOM_OK);
    float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
    float *st[2] = {&m, &v};
    loom_span s = optim_span("w", &p, &g, st, 2, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(m, 0.05, 1e-9, 1e-6);
    CHECK_CLOSE(v, 0.00025, 1e-12, 1e-6);
    CHECK_CLOSE(p, 0.899000002, 1e-7, 1e-6);

    /* Scheduler momentum 0.5 replaces beta1 for one step: m = 0.5*0.05 + 0.5*0.5 = 0.275;
     * the next step (NaN) is back to 0.9: m = 0.9*0.275 + 0.1*0.5 = 0.2975. */
    step = optim_step_args(2, 0.1, 1.0, 0.5);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(m, 0.275, 1e-9, 1e-6);
    step = optim_step_args(3, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(m, 0.2975, 1e-9, 1e-6);
    optim_close(&f);
}

/* Three steps on a decay span and a no-decay span, with a changing lr, a clip coefficient and a
 * scheduler momentum. The plugin's own weight_decay (0.3) must not be applied: the spans carry
 * the host's resolved values (0.01 and 0). */
static void test_against_reference(int64_t n_decay, size_t span_pad)
{
    static const char *const kv[] = {"beta1", "0.8", "beta2", "0.99", "eps", "1e-6",
                                     "weight_decay", "0.3", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "adamw", kv) == LOOM_OK);
    CHECK(optim_hparam_is(&f, "beta1", 0.8));
    CHECK(optim_hparam_is(&f, "beta2", 0.99));
    CHECK(optim_hparam_is(&f, "eps", 1e-6));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.3));
    adam_hp hp = {0.8, 0.99, 1e-6};
    loom_optimizer_step steps[3] = {
        optim_step_args(1, 1e-2, 1.0, NAN),
        optim_step_args(2, 2e-2, 0.25, NAN),
        optim_step_args(3, 5e-3, 1.0, 0.6),
    };
    optim_compare_args a = {
        .ref = ref_adamw, .hparams = &hp, .steps = steps, .n_steps = 3,
        .n_decay = n_decay, .n_nodecay = 3, .wd = 0.01, .rtol = 2e-5, .atol = 2e-6,
        .span_pad = span_pad,
    };
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

/* A clip coefficient of 0.5 must act exactly like a gradient halved beforehand. */
static void test_grad_scale(void)
{
    optim_fixture f1, f2;
    CHECK(optim_open(&f1, "adamw", NULL) == LOOM_OK);
    CHECK(optim_open(&f2, "adamw", NULL) == LOOM_OK);
    float p1[4] = {1, -2, 3, 0.5f}, p2[4], g1[4] = {0.5f, 0.25f, -1, 2}, g2[4];
    float m1[4] = {0}, v1[4] = {0}, m2[4] = {0}, v2[4] = {0};
    for (int i = 0; i < 4; i++) {
        p2[i] = p1[i];
        g2[i] = 0.5f * g1[i];
    }
    float *s1[2] = {m1, v1}, *s2[2] = {m2, v2};
    loom_span a = optim_span("w", p1, g1, s1, 2, 4, 0.1);
    loom_span b = optim_span("w", p2, g2, s2, 2, 4, 0.1);
    for (int64_t t = 1; t <= 2; t++) {
        loom_optimizer_step scaled = optim_step_args(t, 0.01, 0.5, NAN);
        loom_optimizer_step plain = optim_step_args(t, 0.01, 1.0, NAN);
        CHECK(f1.vt->step(f1.opt, &a, 1, &scaled) == LOOM_OK);
        CHECK(f2.vt->step(f2.opt, &b, 1, &plain) == LOOM_OK);
    }
    CHECK(memcmp(p1, p2, sizeof p1) == 0 && memcmp(m1, m2, sizeof m1) == 0 &&
          memcmp(v1, v2, sizeof v1) == 0);
    CHECK(p1[0] != 1.0f); /* it did move */
    optim_close(&f1);
    optim_close(&f2);
}

static void test_rejections(void)
{
    optim_fixture f;
    static const char *const bad_beta[] = {"beta1", "1.0", NULL};
    CHECK(optim_open(&f, "adamw", bad_beta) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "beta1") != NULL);
    optim_close(&f);

    CHECK(optim_open(&f, "adamw", NULL) == LOOM_OK);
    CHECK(loom_config_set(f.config, "beta3", "0.5") != LOOM_OK); /* unknown key */
    CHECK(strstr(loom_error_message(), "beta3") != NULL);
    CHECK(loom_config_set(f.config, "beta1", "not-a-number") != LOOM_OK);
    float p = 1, g = 1, m = 0, v = 0;
    float *st[2] = {&m, &v};
    loom_span s = optim_span("w", &p, &g, st, 2, 1, 0.0);
    loom_optimizer_step step0 = optim_step_args(0, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step0) == LOOM_E_INVALID); /* the first update is t = 1 */
    loom_optimizer_step bad_mom = optim_step_args(1, 0.1, 1.0, 1.5);
    CHECK(f.vt->step(f.opt, &s, 1, &bad_mom) == LOOM_E_INVALID);
    s.state[1] = NULL;
    loom_optimizer_step ok = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &ok) == LOOM_E_INVALID);
    CHECK(p == 1.0f && m == 0.0f); /* nothing written on failure */
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adamw", NULL) == LOOM_OK);
    CHECK(f.vt->state_slots == 2);
    CHECK(strcmp(f.vt->state_names[0], "exp_avg") == 0);
    CHECK(strcmp(f.vt->state_names[1], "exp_avg_sq") == 0);
    CHECK(optim_hparam_is(&f, "beta1", 0.9));
    CHECK(optim_hparam_is(&f, "eps", 1e-8));
    optim_close(&f);

    test_hand_step();
    test_against_reference(5, 0);
    test_against_reference(5, 40);                 /* a newer host's larger spans */
    test_against_reference((1 << 16) + 3, 0);      /* the OpenMP path */
    test_grad_scale();
    test_rejections();
    CHECK(optim_threads_agree("adamw", NULL)); /* one parallel region cut across spans */
    return test_finish("test_adamw");
}
