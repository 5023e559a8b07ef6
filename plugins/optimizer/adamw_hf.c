/*
 * adamw_hf.c - HF transformers.AdamW (v4.2 optimization.py; later deprecated and removed),
 * docs/semantics/optimizers.md#adamw-hf. The Trainer's default optimizer of that era ("adamw_hf").
 *
 * Per element, with g = grad * grad_scale, t = step->step (1 for the first update),
 * wd = span->weight_decay, lr = step->lr, b1 = step->momentum if not NaN else beta1:
 *     m  = b1*m + (1-b1)*g
 *     v  = b2*v + (1-b2)*g*g
 *     step_size = lr;  if correct_bias: step_size *= sqrt(1-b2^t) / (1-b1^t)
 *     p -= step_size * m / (sqrt(v) + eps)             (eps NOT bias-corrected, unlike torch)
 *     p -= lr*wd*p                                     (decay AFTER the update, on the new p)
 * Source: transformers/optimization.py, class AdamW.step (v4.2).
 *
 * Weight decay: the host resolves weight decay per span; the plugin reads span->weight_decay.
 * State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v), zeroed by the host.
 * The loop: kernels.h adam_update, LOOM_ADAM_RULE_HF (kernels/step_loops/lk_step_loops.h).
 */
#include <loom/plugin.h>

#include "adam_common.h"

static loom_status adamw_hf_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                 const loom_optimizer_step *step)
{
    loom_adam_args a;
    double b1, t;
    loom_status st = adam_begin_step(self, spans, n_spans, step, LOOM_ADAM_RULE_HF, &a, &b1, &t);
    if (st) return st;
    double step_size = step->lr;
    if (self->correct_bias) step_size *= sqrt(1.0 - pow(self->hp.beta2, t)) / (1.0 - pow(b1, t));
    a.step_size = (float)step_size;
    adam_update(self, spans, n_spans, step, &a);
    return LOOM_OK;
}

static loom_status adamw_hf_create(loom_host *host, const loom_host_api *api,
                                   const loom_config *config, loom_optimizer **out)
{
    return adam_create(host, api, config, 1, out);
}

static loom_status adamw_hf_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (self && name && out && !strcmp(name, "correct_bias")) {
        *out = self->correct_bias ? 1.0 : 0.0;
        return LOOM_OK;
    }
    return adam_get_hparam(self, name, out);
}

static const loom_optimizer_vtable adamw_hf_vtable = ADAM_VTABLE(adamw_hf_create, adamw_hf_step, adamw_hf_get_hparam);

static const loom_param_spec adamw_hf_params[] = {
    ADAM_PARAM_SPECS,
    {.key = "correct_bias", .type = LOOM_PARAM_BOOL, .default_value = "true",
     .doc = "divide the step by the bias corrections of m and v (BERT's original Adam: false)"},
    {.key = NULL},
};

static const loom_plugin_desc adamw_hf_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "adamw_hf",
    .version = "1.0.0",
    .summary = "HF transformers.AdamW: eps outside the bias correction, decay after the update",
    .vtable = &adamw_hf_vtable,
    .params = adamw_hf_params,
};

LOOM_PLUGIN_EXPORT(&adamw_hf_desc)
