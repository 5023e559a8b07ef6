/*
 * test_adagrad.c - the adagrad plugin, loaded through the core loader, against torch.optim.
 * Adagrad's rule (docs/semantics/optimizers.md#adagrad) evaluated here in double precision, and
 * against hand arithmetic: the accumulator starts at initial_accumulator_value, lr_decay
 * divides the step's lr, weight decay is L2. PyTorch itself: tests/optimizer/torch_optim_test.py.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct adagrad_hp {
    double lr_decay, init, eps;
} adagrad_hp;

/* torch.optim.Adagrad, one element; state[0] is the sum, torch's initial_accumulator_value
 * before step 1 (the host's slot is zero there, so the reference starts it itself). */
static void ref_adagrad(const void *hparams, const loom_optimizer_step *step, double wd, double g, double *p,
                        double *state)
{
    const adagrad_hp *hp = hparams;
    double *sum = &state[0];
    if (step->step == 1) *sum = hp->init;
    g += wd * *p;
    double clr = step->lr / (1 + (double)(step->step - 1) * hp->lr_decay);
    *sum += g * g;
    *p -= clr * g / (sqrt(*sum) + hp->eps);
}

/* Two steps of p = 1, g = 0.5, lr = 0.1, wd = 0.01, done by hand:
 *   t=1: d = 0.5 + 0.01*1 = 0.51; sum = init + 0.2601; p = 1 - 0.1*0.51/(sqrt(sum) + eps)
 *   t=2: d = 0.5 + 0.01*p; sum += d*d; p -= 0.1/(1 + lr_decay) * d/(sqrt(sum) + eps)
 * With the defaults: p1 = 0.9 (+2e-11 from eps), sum1 = 0.2601; d2 = 0.509, sum2 = 0.519181,
 * p2 = 0.9 - 0.1*0.509/0.72054216 = 0.82935875. With init 0.1 and lr_decay 0.5: sum1 = 0.3601,
 * p1 = 1 - 0.051/0.60008333 = 0.91501180; d2 = 0.50915012, sum2 = 0.61933384,
 * p2 = p1 - (0.1/1.5)*0.50915012/0.78697766 = 0.87188054. */
static void test_hand_steps(const char *const *kv, double p1, double sum1, double p2, double sum2)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adagrad", kv) == LOOM_OK);
    float p = 1.0f, g = 0.5f, sum = 0.0f;
    float *st[1] = {&sum};
    loom_span s = optim_span("w", &p, &g, st, 1, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p1, 1e-7, 1e-6);
    CHECK_CLOSE(sum, sum1, 1e-7, 1e-6);
    step.step = 2;
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p2, 1e-7, 1e-6);
    CHECK_CLOSE(sum, sum2, 1e-7, 1e-6);
    optim_close(&f);
}

static void test_against_reference(const char *lr_decay, const char *init, const char *eps, int64_t n_decay)
{
    const char *kv[] = {"lr_decay", lr_decay, "initial_accumulator_value", init, "eps", eps, "weight_decay",
                        "0.25",     NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "adagrad", kv) == LOOM_OK);
    adagrad_hp hp = {atof(lr_decay), atof(init), atof(eps)};
    CHECK(optim_hparam_is(&f, "lr_decay", hp.lr_decay));
    CHECK(optim_hparam_is(&f, "initial_accumulator_value", hp.init));
    CHECK(optim_hparam_is(&f, "eps", hp.eps));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.25));
    /* A changing lr (the scheduler's) and a clip coefficient; the scheduler's momentum means
     * nothing to Adagrad. The plugin's weight_decay (0.25) must not be applied: the spans carry
     * the host's values (0.01 and 0). */
    const loom_optimizer_step steps[4] = {optim_step_args(1, 0.1, 1.0, NAN), optim_step_args(2, 0.05, 0.5, 0.3),
                                          optim_step_args(3, 0.1, 1.0, NAN), optim_step_args(4, 0.02, 1.0, NAN)};
    optim_compare_args a = {.ref = ref_adagrad,
                            .hparams = &hp,
                            .steps = steps,
                            .n_steps = 4,
                            .n_decay = n_decay,
                            .n_nodecay = 3,
                            .wd = 0.01,
                            .rtol = 1e-5,
                            .atol = 1e-6};
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adagrad", NULL) == LOOM_OK);
    CHECK(f.vt->state_slots == 1);
    CHECK(strcmp(f.vt->state_names[0], "sum") == 0);
    CHECK(f.vt->flags == LOOM_OPTIMIZER_ELEMENTWISE);
    CHECK(optim_hparam_is(&f, "eps", 1e-10)); /* torch's default, not --adam_epsilon's 1e-8 */
    CHECK(optim_hparam_is(&f, "lr_decay", 0.0));
    CHECK(optim_hparam_is(&f, "initial_accumulator_value", 0.0));
    optim_close(&f);

    test_hand_steps(NULL, 0.9, 0.2601, 0.82935875, 0.519181);
    static const char *const decayed[] = {"initial_accumulator_value", "0.1", "lr_decay", "0.5", NULL};
    test_hand_steps(decayed, 0.91501180, 0.3601, 0.87188054, 0.61933384);

    test_against_reference("0", "0", "1e-10", 5);
    test_against_reference("0.1", "0.5", "1e-3", 5);
    test_against_reference("0.01", "0", "1e-10", (1 << 15) + 9);
    CHECK(optim_threads_agree("adagrad", NULL));

    /* torch's checks: every value >= 0; a bad value names its key. */
    static const char *const bad[][3] = {{"lr_decay", "-0.1", NULL},
                                         {"initial_accumulator_value", "-1", NULL},
                                         {"eps", "-1e-10", NULL},
                                         {"weight_decay", "-1", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(optim_open(&f, "adagrad", bad[i]) == LOOM_E_INVALID);
        CHECK(strstr(loom_error_message(), bad[i][0]) != NULL);
        optim_close(&f);
    }
    CHECK(optim_open(&f, "adagrad", NULL) == LOOM_OK);
    CHECK(loom_config_set(f.config, "beta1", "0.9") != LOOM_OK); /* an Adam key */
    optim_close(&f);
    return test_finish("test_adagrad");
}
