/*
 * test_adam.c - the adam plugin, loaded through the core loader, against torch.optim.Adam's
 * rule with L2 weight decay (docs/semantics/optimizers.md#adam-torch) evaluated here in double precision, and against
 * hand arithmetic.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct adam_hp {
    double beta1, beta2, eps;
} adam_hp;

/* torch.optim.Adam, one element: g += wd*p, then the Adam moments and update. */
static void ref_adam(const void *hparams, const loom_optimizer_step *step, double wd, double g,
                     double *p, double *state)
{
    const adam_hp *hp = hparams;
    double b1 = isnan(step->momentum) ? hp->beta1 : step->momentum, b2 = hp->beta2;
    double t = (double)step->step, lr = step->lr;
    double *m = &state[0], *v = &state[1];
    g += wd * *p;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double denom = sqrt(*v) / sqrt(1 - pow(b2, t)) + hp->eps;
    *p -= lr / (1 - pow(b1, t)) * *m / denom;
}

/* p = 1, g = 0.5, lr = 0.1, wd = 0.01, defaults (b1 0.9, b2 0.999, eps 1e-8), by hand:
 *   g = 0.5 + 0.01*1                           = 0.51      (L2: decay enters the gradient)
 *   m = 0.1 * 0.51                             = 0.051
 *   v = 0.001 * 0.51^2 = 0.001 * 0.2601        = 0.0002601
 *   denom = sqrt(0.0002601)/sqrt(0.001) + 1e-8 = 0.016127616/0.031622777 + 1e-8 = 0.51000001
 *   p -= (0.1/0.1) * 0.051/0.51000001          = 0.099999998
 *   p = 0.900000002   (no separate decay term: AdamW would give 0.899000002) */
static void test_hand_step(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adam", NULL) == LOOM_OK);
    float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
    float *st[2] = {&m, &v};
    loom_span s = optim_span("w", &p, &g, st, 2, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(m, 0.051, 1e-9, 1e-6);
    CHECK_CLOSE(v, 0.0002601, 1e-12, 1e-6);
    CHECK_CLOSE(p, 0.900000002, 1e-7, 1e-6);
    optim_close(&f);
}

static void test_against_reference(int64_t n_decay)
{
    static const char *const kv[] = {"beta1", "0.85", "beta2", "0.98", "eps", "1e-7",
                                     "weight_decay", "0.2", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "adam", kv) == LOOM_OK);
    CHECK(optim_hparam_is(&f, "beta1", 0.85));
    CHECK(optim_hparam_is(&f, "beta2", 0.98));
    CHECK(optim_hparam_is(&f, "eps", 1e-7));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.2));
    adam_hp hp = {0.85, 0.98, 1e-7};
    loom_optimizer_step steps[3] = {
        optim_step_args(1, 1e-2, 1.0, NAN),
        optim_step_args(2, 3e-2, 0.4, 0.7),
        optim_step_args(3, 1e-2, 1.0, NAN),
    };
    optim_compare_args a = {
        .ref = ref_adam, .hparams = &hp, .steps = steps, .n_steps = 3,
        .n_decay = n_decay, .n_nodecay = 3, .wd = 0.05, .rtol = 2e-5, .atol = 2e-6,
    };
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

static void test_rejections(void)
{
    optim_fixture f;
    static const char *const bad_eps[] = {"eps", "-1e-8", NULL};
    CHECK(optim_open(&f, "adam", bad_eps) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "eps") != NULL);
    optim_close(&f);
    static const char *const bad_wd[] = {"weight_decay", "-0.1", NULL};
    CHECK(optim_open(&f, "adam", bad_wd) == LOOM_E_INVALID);
    optim_close(&f);
    CHECK(optim_open(&f, "adam", NULL) == LOOM_OK);
    CHECK(loom_config_set(f.config, "correct_bias", "true") != LOOM_OK); /* adamw_hf's key */
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adam", NULL) == LOOM_OK);
    CHECK(strcmp(f.plugin->desc->name, "adam") == 0);
    CHECK(f.vt->state_slots == 2);
    CHECK(optim_hparam_is(&f, "beta2", 0.999));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.0));
    optim_close(&f);

    test_hand_step();
    test_against_reference(5);
    test_against_reference((1 << 15) + 17);
    test_rejections();
    CHECK(optim_threads_agree("adam", NULL)); /* one parallel region cut across spans */
    return test_finish("test_adam");
}
