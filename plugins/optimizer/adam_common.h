/*
 * adam_common.h - configuration, creation and hyper-parameters shared by the Adam family
 * (adam, adamw, adamw_hf; onebit_adam uses the hyper-parameters and the moments' coefficients).
 * Each plugin file computes its own coefficients; the three update loops are the kernel table's
 * adam_update (ABI 1.5), whose CPU loops the plugins also run themselves on a host that lends
 * none (kernels/step_loops/lk_step_loops.h).
 *
 * Weight decay: the host resolves weight decay per span; the plugin reads span->weight_decay.
 * The plugin's own "weight_decay" key is only the value the host reads back (get_hparam) to
 * fill the spans of the decay group, so it is never multiplied in a second time.
 */
#ifndef LOOM_PLUGINS_ADAM_COMMON_H
#define LOOM_PLUGINS_ADAM_COMMON_H

#include "optim_common.h"

#include <stdlib.h>
#include <string.h>

#define ADAM_STATE_SLOTS 2 /* exp_avg (m), exp_avg_sq (v), torch's names */

static const char *const adam_state_names[ADAM_STATE_SLOTS] = {"exp_avg", "exp_avg_sq"};

/* The keys every member of the family accepts, with torch's / TrainingArguments' defaults. */
#define ADAM_PARAM_SPECS                                                                      \
    {.key = "beta1", .type = LOOM_PARAM_FLOAT, .default_value = "0.9",                        \
     .doc = "decay rate of the first moment (--adam_beta1)"},                                 \
    {.key = "beta2", .type = LOOM_PARAM_FLOAT, .default_value = "0.999",                      \
     .doc = "decay rate of the second moment (--adam_beta2)"},                                \
    {.key = "eps", .type = LOOM_PARAM_FLOAT, .default_value = "1e-8",                         \
     .doc = "added to the denominator for stability (--adam_epsilon)"},                       \
    {.key = "weight_decay", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",                 \
     .doc = "weight decay of the decay group; the host copies it into each span"}

/* The hyper-parameters every member reads, onebit_adam too. */
typedef struct adam_hparams {
    double beta1, beta2, eps, weight_decay;
} adam_hparams;

/* The instance of adam, adamw and adamw_hf (onebit_adam has its own, around an adam_hparams). */
struct loom_optimizer {
    loom_host *host;
    const loom_host_api *api;
    adam_hparams hp;
    int32_t correct_bias; /* adamw_hf only; 1 elsewhere */
    int threads;          /* OpenMP threads for large spans */
};

/* Read and validate beta1, beta2, eps and weight_decay (torch's checks: 0 <= beta < 1,
 * eps >= 0, wd >= 0). */
static inline loom_status adam_read_hparams(loom_host *host, const loom_host_api *api, const loom_config *config,
                                            adam_hparams *hp)
{
    loom_status st;
    if ((st = loom_cfg_need_f64(host, api, config, "beta1", &hp->beta1)) ||
        (st = loom_cfg_need_f64(host, api, config, "beta2", &hp->beta2)) ||
        (st = loom_cfg_need_f64(host, api, config, "eps", &hp->eps)) ||
        (st = loom_cfg_need_f64(host, api, config, "weight_decay", &hp->weight_decay)))
        return st;
    if (!(hp->beta1 >= 0 && hp->beta1 < 1))
        return api->fail(host, LOOM_E_INVALID, "beta1 = %g: must be in [0, 1)", hp->beta1);
    if (!(hp->beta2 >= 0 && hp->beta2 < 1))
        return api->fail(host, LOOM_E_INVALID, "beta2 = %g: must be in [0, 1)", hp->beta2);
    if (!(hp->eps >= 0 && isfinite(hp->eps)))
        return api->fail(host, LOOM_E_INVALID, "eps = %g: must be finite and >= 0", hp->eps);
    if (!(hp->weight_decay >= 0 && isfinite(hp->weight_decay)))
        return api->fail(host, LOOM_E_INVALID, "weight_decay = %g: must be finite and >= 0", hp->weight_decay);
    return LOOM_OK;
}

/* with_correct_bias: also read "correct_bias" (adamw_hf). */
static inline loom_status adam_create(loom_host *host, const loom_host_api *api,
                                      const loom_config *config, int with_correct_bias,
                                      loom_optimizer **out)
{
    if (!out)
        return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    loom_optimizer o = {.host = host, .api = api, .correct_bias = 1,
                        .threads = optim_threads(host, api)};
    loom_status st;
    if ((st = adam_read_hparams(host, api, config, &o.hp))) return st;
    if (with_correct_bias && (st = loom_cfg_need_bool(host, api, config, "correct_bias", &o.correct_bias))) return st;
    loom_optimizer *self = malloc(sizeof *self);
    if (!self)
        return api->fail(host, LOOM_E_NOMEM, "out of memory");
    *self = o;
    *out = self;
    return LOOM_OK;
}

static inline void adam_destroy(loom_optimizer *self)
{
    free(self);
}

/* get_hparam's answer for the keys of adam_hparams; LOOM_E_NOT_FOUND for any other name. */
static inline loom_status adam_hparam(const adam_hparams *hp, const char *name, double *out)
{
    if (!strcmp(name, "beta1"))
        *out = hp->beta1;
    else if (!strcmp(name, "beta2"))
        *out = hp->beta2;
    else if (!strcmp(name, "eps"))
        *out = hp->eps;
    else if (!strcmp(name, "weight_decay"))
        *out = hp->weight_decay;
    else
        return LOOM_E_NOT_FOUND;
    return LOOM_OK;
}

static inline loom_status adam_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (!self || !name || !out) return LOOM_E_INVALID;
    return adam_hparam(&self->hp, name, out);
}

/* What every member's step computes the same way: the checks of the step and its spans, and
 * the moments' coefficients (each member adds its own step size and decay). */
typedef struct adam_moments {
    int threads;
    float grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
    double b1, t; /* beta1 of this step and the step count, for the step size */
} adam_moments;

/* beta1 of a step is the scheduler's momentum when it sets one (OneCycle), checked like the
 * configured value. `slots`: the state slots each span must have (onebit_adam has three). */
static inline loom_status adam_moments_begin(loom_host *host, const loom_host_api *api, const adam_hparams *hp,
                                             int threads, const loom_span *spans, size_t n_spans,
                                             const loom_optimizer_step *step, uint32_t slots, adam_moments *c)
{
    loom_status st = optim_check_step(host, api, spans, n_spans, step);
    if (st) return st;
    const double b1 = optim_momentum(step, hp->beta1);
    if (!(b1 >= 0 && b1 < 1))
        return api->fail(host, LOOM_E_INVALID, "scheduler momentum %g: beta1 must be in [0, 1)", b1);
    if ((st = optim_check_spans(host, api, spans, n_spans, slots))) return st;
    *c = (adam_moments){
        .threads = threads,
        .grad_scale = (float)step->grad_scale,
        .beta1 = (float)b1,
        .one_minus_beta1 = (float)(1.0 - b1),
        .beta2 = (float)hp->beta2,
        .one_minus_beta2 = (float)(1.0 - hp->beta2),
        .eps = (float)hp->eps,
        .b1 = b1,
        .t = (double)step->step,
    };
    return LOOM_OK;
}

/* A member's step begins here: the shared checks and coefficients, into the ABI 1.5 kernel
 * arguments (each member then adds its step size and bias correction). *b1 and *t: beta1 of
 * this step and the step count, for the step size. */
static inline loom_status adam_begin_step(const loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                          const loom_optimizer_step *step, uint32_t rule, loom_adam_args *a,
                                          double *b1, double *t)
{
    adam_moments c = {0};
    loom_status st = adam_moments_begin(self->host, self->api, &self->hp, self->threads, spans, n_spans, step,
                                        ADAM_STATE_SLOTS, &c);
    if (st) return st;
    *a = (loom_adam_args){
        LOOM_HEADER_INIT(loom_adam_args),
        .rule = rule,
        .grad_scale = c.grad_scale,
        .beta1 = c.beta1,
        .one_minus_beta1 = c.one_minus_beta1,
        .beta2 = c.beta2,
        .one_minus_beta2 = c.one_minus_beta2,
        .eps = c.eps,
        .bias2_sqrt = 1.0f,
        .lr = step->lr,
    };
    *b1 = c.b1;
    *t = c.t;
    return LOOM_OK;
}

/* The update itself: the host's kernel for the device the spans live on when it lends one
 * (loom_optimizer_step.kernels, ABI 1.5: a CUDA step runs on the GPU), else the same loops
 * here (kernels/step_loops/lk_step_loops.h): equal bits on the CPU either way.
 * docs/architecture.md#device-step. */
static inline void adam_update(const loom_optimizer *self, const loom_span *spans, size_t n_spans,
                               const loom_optimizer_step *step, const loom_adam_args *a)
{
    const loom_kernels_api *k = LOOM_HAS_FIELD(step, loom_optimizer_step, kernels) ? step->kernels : NULL;
    if (k && LOOM_HAS(k, loom_kernels_api, adam_update))
        k->adam_update(spans, n_spans, a);
    else
        lk_adam_spans(spans, n_spans, a, self->threads);
}

/* The vtable of a member: its create, step and get_hparam around the shared state and destroy. */
#define ADAM_VTABLE(create_fn, step_fn, get_hparam_fn)                                                                 \
    {                                                                                                                  \
        LOOM_HEADER_INIT(loom_optimizer_vtable),                                                                       \
            .state_slots = ADAM_STATE_SLOTS, .flags = LOOM_OPTIMIZER_ELEMENTWISE, .state_names = adam_state_names,     \
            .create = create_fn, .destroy = adam_destroy, .step = step_fn, .get_hparam = get_hparam_fn,                \
    }

#endif
