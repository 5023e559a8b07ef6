/*
 * adam.c - torch.optim.Adam (amsgrad=False), weight decay as L2, docs/semantics/optimizers.md#adam-torch.
 *
 * Per element, with g = grad * grad_scale, t = step->step (1 for the first update),
 * wd = span->weight_decay, lr = step->lr, b1 = step->momentum if not NaN else beta1:
 *     g += wd*p                                        (L2: decay goes through the moments)
 *     m  = b1*m + (1-b1)*g
 *     v  = b2*v + (1-b2)*g*g
 *     p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * Source: torch/optim/adam.py, _single_tensor_adam.
 *
 * Weight decay: the host resolves weight decay per span; the plugin reads span->weight_decay.
 * State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v), zeroed by the host.
 * The loop: kernels.h adam_update, LOOM_ADAM_RULE_ADAM (kernels/step_loops/lk_step_loops.h).
 */
#include <loom/plugin.h>

#include "adam_common.h"

static loom_status adam_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                             const loom_optimizer_step *step)
{
    loom_adam_args a;
    double b1, t;
    loom_status st = adam_begin_step(self, spans, n_spans, step, LOOM_ADAM_RULE_ADAM, &a, &b1, &t);
    if (st) return st;
    a.step_size = (float)(step->lr / (1.0 - pow(b1, t)));
    a.bias2_sqrt = (float)sqrt(1.0 - pow(self->hp.beta2, t));
    adam_update(self, spans, n_spans, step, &a);
    return LOOM_OK;
}

static loom_status adam_plugin_create(loom_host *host, const loom_host_api *api,
                                      const loom_config *config, loom_optimizer **out)
{
    return adam_create(host, api, config, 0, out);
}

static const loom_optimizer_vtable adam_vtable = ADAM_VTABLE(adam_plugin_create, adam_step, adam_get_hparam);

static const loom_param_spec adam_params[] = {
    ADAM_PARAM_SPECS,
    {.key = NULL},
};

static const loom_plugin_desc adam_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "adam",
    .version = "1.0.0",
    .summary = "torch.optim.Adam: weight decay as L2 added to the gradient",
    .vtable = &adam_vtable,
    .params = adam_params,
};

LOOM_PLUGIN_EXPORT(&adam_desc)
