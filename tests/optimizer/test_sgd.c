/*
 * test_sgd.c - the sgd plugin, loaded through the core loader, against torch.optim.SGD's rule
 * evaluated here in double precision, and against hand arithmetic: the buffer starts as the
 * first gradient (no dampening at step 1), Nesterov, plain SGD leaving the buffer alone.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <string.h>

typedef struct sgd_hp {
    double momentum, dampening;
    int nesterov;
} sgd_hp;

/* torch.optim.SGD, one element; state[0] is the buffer, "absent" before step 1. */
static void ref_sgd(const void *hparams, const loom_optimizer_step *step, double wd, double g,
                    double *p, double *state)
{
    const sgd_hp *hp = hparams;
    double mu = isnan(step->momentum) ? hp->momentum : step->momentum;
    double d = g + wd * *p;
    if (mu != 0) {
        double *buf = &state[0];
        if (step->step == 1)
            *buf = d;
        else
            *buf = mu * *buf + (1 - hp->dampening) * d;
        d = hp->nesterov ? d + mu * *buf : *buf;
    }
    *p -= step->lr * d;
}

/* Two steps of p = 1, g = 0.5, lr = 0.1, wd = 0.01, done by hand. */
static void test_hand_steps(const char *const *kv, double p1, double buf1, double p2,
                            double buf2)
{
    optim_fixture f;
    CHECK(optim_open(&f, "sgd", kv) == LOOM_OK);
    float p = 1.0f, g = 0.5f, buf = 0.0f;
    float *st[1] = {&buf};
    loom_span s = optim_span("w", &p, &g, st, 1, 1, 0.01);
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p1, 1e-7, 1e-6);
    CHECK_CLOSE(buf, buf1, 1e-7, 1e-6);
    step.step = 2;
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_OK);
    CHECK_CLOSE(p, p2, 1e-7, 1e-6);
    CHECK_CLOSE(buf, buf2, 1e-7, 1e-6);
    optim_close(&f);
}

static void test_against_reference(const char *momentum, const char *dampening,
                                   const char *nesterov, const loom_optimizer_step *steps,
                                   int64_t n_decay)
{
    const char *kv[] = {"momentum", momentum, "dampening", dampening, "nesterov", nesterov,
                        "weight_decay", "0.25", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "sgd", kv) == LOOM_OK);
    sgd_hp hp = {atof(momentum), atof(dampening), strcmp(nesterov, "true") == 0};
    CHECK(optim_hparam_is(&f, "momentum", hp.momentum));
    CHECK(optim_hparam_is(&f, "dampening", hp.dampening));
    CHECK(optim_hparam_is(&f, "nesterov", hp.nesterov ? 1.0 : 0.0));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.25));
    optim_compare_args a = {
        .ref = ref_sgd, .hparams = &hp, .steps = steps, .n_steps = 3,
        .n_decay = n_decay, .n_nodecay = 3, .wd = 0.01, .rtol = 1e-5, .atol = 1e-6,
    };
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

int main(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "sgd", NULL) == LOOM_OK);
    CHECK(f.vt->state_slots == 1);
    CHECK(strcmp(f.vt->state_names[0], "momentum_buffer") == 0);
    CHECK(optim_hparam_is(&f, "momentum", 0.0));
    CHECK(optim_hparam_is(&f, "nesterov", 0.0));
    optim_close(&f);

    /* Nesterov, momentum 0.9:
     *   t=1: d = 0.5 + 0.01*1 = 0.51; buf = d = 0.51; d = 0.51 + 0.9*0.51 = 0.969
     *        p = 1 - 0.1*0.969 = 0.9031
     *   t=2: d = 0.5 + 0.01*0.9031 = 0.509031; buf = 0.9*0.51 + 0.509031 = 0.968031
     *        d = 0.509031 + 0.9*0.968031 = 1.3802589; p = 0.9031 - 0.13802589 = 0.76507411 */
    static const char *const nesterov[] = {"momentum", "0.9", "nesterov", "true", NULL};
    test_hand_steps(nesterov, 0.9031, 0.51, 0.76507411, 0.968031);
    /* Momentum 0.9, dampening 0.5 (torch skips the dampening when it creates the buffer):
     *   t=1: d = 0.51; buf = 0.51 (not 0.255); p = 1 - 0.051 = 0.949
     *   t=2: d = 0.5 + 0.00949 = 0.50949; buf = 0.9*0.51 + 0.5*0.50949 = 0.713745
     *        p = 0.949 - 0.0713745 = 0.8776255 */
    static const char *const damped[] = {"momentum", "0.9", "dampening", "0.5", NULL};
    test_hand_steps(damped, 0.949, 0.51, 0.8776255, 0.713745);
    /* Plain SGD: p = 1 - 0.1*0.51 = 0.949, then 0.949 - 0.1*(0.5 + 0.00949) = 0.898051;
     * the buffer is never touched. */
    test_hand_steps(NULL, 0.949, 0.0, 0.898051, 0.0);

    const loom_optimizer_step plain[3] = {optim_step_args(1, 0.1, 1.0, NAN),
                                          optim_step_args(2, 0.05, 0.5, NAN),
                                          optim_step_args(3, 0.1, 1.0, NAN)};
    const loom_optimizer_step override[3] = {optim_step_args(1, 0.1, 1.0, NAN),
                                             optim_step_args(2, 0.05, 0.5, 0.5),
                                             optim_step_args(3, 0.1, 1.0, NAN)};
    test_against_reference("0", "0", "false", plain, 5);
    test_against_reference("0.9", "0", "false", plain, 5);
    test_against_reference("0.9", "0.3", "false", override, 5);
    test_against_reference("0.8", "0", "true", override, 5);
    test_against_reference("0.8", "0", "true", plain, (1 << 15) + 9);

    /* torch's checks: Nesterov needs momentum and no dampening. */
    static const char *const no_mom[] = {"nesterov", "true", NULL};
    CHECK(optim_open(&f, "sgd", no_mom) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "nesterov") != NULL);
    optim_close(&f);
    static const char *const nest_damp[] = {"momentum", "0.9", "nesterov", "true", "dampening",
                                            "0.1", NULL};
    CHECK(optim_open(&f, "sgd", nest_damp) == LOOM_E_INVALID);
    optim_close(&f);
    static const char *const neg[] = {"momentum", "-0.5", NULL};
    CHECK(optim_open(&f, "sgd", neg) == LOOM_E_INVALID);
    optim_close(&f);
    CHECK(optim_open(&f, "sgd", NULL) == LOOM_OK);
    CHECK(loom_config_set(f.config, "beta1", "0.9") != LOOM_OK); /* an Adam key */
    CHECK(strstr(loom_error_message(), "beta1") != NULL);
    optim_close(&f);
    return test_finish("test_sgd");
}
