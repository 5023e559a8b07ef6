/*
 * adam_common.h - configuration, creation and hyper-parameters shared by the Adam family
 * (adam, adamw, adamw_hf). Each plugin file computes its own coefficients; the three update
 * loops are the kernel table's adam_update (ABI 1.5), whose CPU loops the plugins also run
 * themselves on a host that lends none (kernels/step_loops/lk_step_loops.h).
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

struct loom_optimizer {
    loom_host *host;
    const loom_host_api *api;
    double beta1, beta2, eps, weight_decay;
    int32_t correct_bias; /* adamw_hf only; 1 elsewhere */
    int threads;          /* OpenMP threads for large spans */
};

/* Read and validate the family's keys (torch's checks: 0 <= beta < 1, eps >= 0, wd >= 0).
 * with_correct_bias: also read "correct_bias" (adamw_hf). */
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
    if ((st = loom_cfg_need_f64(host, api, config, "beta1", &o.beta1)) ||
        (st = loom_cfg_need_f64(host, api, config, "beta2", &o.beta2)) ||
        (st = loom_cfg_need_f64(host, api, config, "eps", &o.eps)) ||
        (st = loom_cfg_need_f64(host, api, config, "weight_decay", &o.weight_decay)))
        return st;
    if (with_correct_bias && (st = loom_cfg_need_bool(host, api, config, "correct_bias", &o.correct_bias))) return st;
    if (!(o.beta1 >= 0 && o.beta1 < 1))
        return api->fail(host, LOOM_E_INVALID, "beta1 = %g: must be in [0, 1)", o.beta1);
    if (!(o.beta2 >= 0 && o.beta2 < 1))
        return api->fail(host, LOOM_E_INVALID, "beta2 = %g: must be in [0, 1)", o.beta2);
    if (!(o.eps >= 0 && isfinite(o.eps)))
        return api->fail(host, LOOM_E_INVALID, "eps = %g: must be finite and >= 0", o.eps);
    if (!(o.weight_decay >= 0 && isfinite(o.weight_decay)))
        return api->fail(host, LOOM_E_INVALID, "weight_decay = %g: must be finite and >= 0",
                         o.weight_decay);
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

static inline loom_status adam_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (!self || !name || !out)
        return LOOM_E_INVALID;
    if (!strcmp(name, "beta1"))
        *out = self->beta1;
    else if (!strcmp(name, "beta2"))
        *out = self->beta2;
    else if (!strcmp(name, "eps"))
        *out = self->eps;
    else if (!strcmp(name, "weight_decay"))
        *out = self->weight_decay;
    else
        return LOOM_E_NOT_FOUND;
    return LOOM_OK;
}

/* beta1 of this step: the scheduler's momentum when it sets one (OneCycle), checked like the
 * configured value. */
static inline loom_status adam_step_beta1(const loom_optimizer *self,
                                          const loom_optimizer_step *step, double *beta1)
{
    *beta1 = optim_momentum(step, self->beta1);
    if (!(*beta1 >= 0 && *beta1 < 1))
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "scheduler momentum %g: beta1 must be in [0, 1)", *beta1);
    return LOOM_OK;
}

/* What every member's step computes the same way: the checks of the step and its spans, and
 * the moments' coefficients, into the ABI 1.5 kernel arguments (each member adds its rule, step
 * size and bias correction). *b1 and *t: beta1 of this step (see adam_step_beta1) and the step
 * count, for the step size. */
static inline loom_status adam_begin_step(const loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                          const loom_optimizer_step *step, uint32_t rule, loom_adam_args *a,
                                          double *b1, double *t)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st || (st = adam_step_beta1(self, step, b1)) ||
        (st = optim_check_spans(self->host, self->api, spans, n_spans, ADAM_STATE_SLOTS)))
        return st;
    *a = (loom_adam_args){
        LOOM_HEADER_INIT(loom_adam_args),
        .rule = rule,
        .grad_scale = (float)step->grad_scale,
        .beta1 = (float)*b1,
        .one_minus_beta1 = (float)(1.0 - *b1),
        .beta2 = (float)self->beta2,
        .one_minus_beta2 = (float)(1.0 - self->beta2),
        .eps = (float)self->eps,
        .bias2_sqrt = 1.0f,
        .lr = step->lr,
    };
    *t = (double)step->step;
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
            .state_slots = ADAM_STATE_SLOTS, .flags = 0, .state_names = adam_state_names, .create = create_fn,         \
            .destroy = adam_destroy, .step = step_fn, .get_hparam = get_hparam_fn,                                     \
    }

#endif
