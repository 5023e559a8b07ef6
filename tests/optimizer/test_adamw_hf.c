/*
 * test_adamw_hf.c - the adamw_hf plugin, loaded through the core loader, against HF
 * transformers.AdamW (docs/semantics/optimizers.md#adamw-hf) evaluated here in double precision, and against hand
 * arithmetic that separates it from torch's AdamW (eps placement, decay order).
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct hf_hp {
    double beta1, beta2, eps;
    int correct_bias;
} hf_hp;

/* transformers.AdamW.step, one element. */
static void ref_adamw_hf(const void *hparams, const loom_optimizer_step *step, double wd,
                         double g, double *p, double *state)
{
    const hf_hp *hp = hparams;
    double b1 = isnan(step->momentum) ? hp->beta1 : step->momentum, b2 = hp->beta2;
    double t = (double)step->step, lr = step->lr;
    double *m = &state[0], *v = &state[1];
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double denom = sqrt(*v) + hp->eps;
    double step_size = lr;
    if (hp->correct_bias)
        step_size *= sqrt(1 - pow(b2, t)) / (1 - pow(b1, t));
    *p -= step_size * *m / denom;
    if (wd > 0)
        *p -= lr * wd * *p;
}

/* p = 1, g = 0.5, lr = 0.1, wd = 0.01, b1 0.9, b2 0.999, eps = 1e-3 (large, so its placement
 * shows), by hand:
 *   m = 0.05, v = 0.00025, sqrt(v) = 0.0158113883
 *   denom = 0.0158113883 + 0.001 = 0.0168113883                 (eps not bias-corrected)
 *   correct_bias: step = 0.1 * sqrt(0.001)/0.1 = 0.0316227766
 *     p = 1 - 0.0316227766 * 0.05/0.0168113883 = 1 - 0.0940516513 = 0.9059483487
 *     p -= 0.1*0.01*p  ->  0.9059483487 * 0.999 = 0.9050424004  (decay after, on the new p)
 *   correct_bias = false: step = 0.1
 *     p = 1 - 0.1 * 0.05/0.0168113883 = 1 - 0.2974174358 = 0.7025825642
 *     p *= 0.999  ->  0.7018799817
 * (torch AdamW with the same numbers: denom = 0.5 + 0.001, p = 0.999 - 0.0998004 = 0.8991996.) */
static void test_hand_step(const char *correct_bias, double want)
{
    const char *kv[] = {"eps", "1e-3", "correct_bias", correct_bias, NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "adamw_hf", kv) == LOOM_OK);
    float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
    float *st[2] = {&m, &v};
    loom_span s = optim_span("w", &p, &g, st, 2, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(m, 0.05, 1e-9, 1e-6);
    CHECK_CLOSE(v, 0.00025, 1e-12, 1e-6);
    CHECK_CLOSE(p, want, 1e-7, 1e-6);
    optim_close(&f);
}

static void test_against_reference(int correct_bias, int64_t n_decay)
{
    const char *kv[] = {"beta1", "0.8", "beta2", "0.995", "eps", "1e-6", "weight_decay", "0.5",
                        "correct_bias", correct_bias ? "true" : "false", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "adamw_hf", kv) == LOOM_OK);
    CHECK(optim_hparam_is(&f, "correct_bias", correct_bias ? 1.0 : 0.0));
    CHECK(optim_hparam_is(&f, "beta2", 0.995));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.5));
    hf_hp hp = {0.8, 0.995, 1e-6, correct_bias};
    loom_optimizer_step steps[3] = {
        optim_step_args(1, 1e-2, 0.5, NAN),
        optim_step_args(2, 2e-2, 1.0, 0.95),
        optim_step_args(3, 4e-2, 1.0, NAN),
    };
    optim_compare_args a = {
        .ref = ref_adamw_hf, .hparams = &hp, .steps = steps, .n_steps = 3,
        .n_decay = n_decay, .n_nodecay = 3, .wd = 0.02, .rtol = 2e-5, .atol = 2e-6,
    };
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adamw_hf", NULL) == LOOM_OK);
    CHECK(optim_hparam_is(&f, "correct_bias", 1.0)); /* default true */
    CHECK(optim_hparam_is(&f, "beta1", 0.9));
    CHECK(strcmp(f.vt->state_names[0], "exp_avg") == 0);
    optim_close(&f);

    test_hand_step("true", 0.9050424004);
    test_hand_step("false", 0.7018799817);
    test_against_reference(1, 5);
    test_against_reference(0, 5);
    test_against_reference(1, (1 << 15) + 1);

    static const char *const bad[] = {"correct_bias", "maybe", NULL};
    CHECK(optim_open(&f, "adamw_hf", bad) == LOOM_E_INVALID); /* not a boolean */
    optim_close(&f);
    CHECK(optim_threads_agree("adamw_hf", NULL)); /* one parallel region cut across spans */
    return test_finish("test_adamw_hf");
}
