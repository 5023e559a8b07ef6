/*
 * adamw.c - torch.optim.AdamW (PyTorch >= 1.6, amsgrad=False), docs/semantics/optimizers.md#adamw-torch.
 *
 * Per element, with g = grad * grad_scale, t = step->step (1 for the first update),
 * wd = span->weight_decay, lr = step->lr, b1 = step->momentum if not NaN else beta1:
 *     p *= 1 - lr*wd                                   (decoupled decay, BEFORE the update)
 *     m  = b1*m + (1-b1)*g
 *     v  = b2*v + (1-b2)*g*g
 *     p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * Source: torch/optim/adamw.py, _single_tensor_adamw.
 *
 * Weight decay: the host resolves weight decay per span; the plugin reads span->weight_decay.
 * State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v), zeroed by the host.
 */
#include <loom/plugin.h>

#include "adam_common.h"

typedef struct adamw_coef {
    adam_moments base;
    double lr; /* for the per-span decay 1 - lr*wd, rounded to float as before */
    float step_size, bias2_sqrt;
} adamw_coef;

static void adamw_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const adamw_coef c = *(const adamw_coef *)coef;
    const float decay = (float)(1.0 - c.lr * s->weight_decay);
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin, *restrict v = s->state[1] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.base.grad_scale;
        float mi = c.base.beta1 * m[i] + c.base.one_minus_beta1 * gi;
        float vi = c.base.beta2 * v[i] + c.base.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - c.step_size * (mi / (sqrtf(vi) / c.bias2_sqrt + c.base.eps));
    }
}

static loom_status adamw_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                              const loom_optimizer_step *step)
{
    adamw_coef c;
    loom_status st = adam_begin_step(self, spans, n_spans, step, &c.base);
    if (st) return st;
    c.lr = step->lr;
    c.step_size = (float)(step->lr / (1.0 - pow(c.base.b1, c.base.t)));
    c.bias2_sqrt = (float)sqrt(1.0 - pow(self->hp.beta2, c.base.t));
    optim_for_spans(spans, n_spans, self->threads, adamw_piece, &c);
    return LOOM_OK;
}

static loom_status adamw_create(loom_host *host, const loom_host_api *api,
                                const loom_config *config, loom_optimizer **out)
{
    return adam_create(host, api, config, 0, out);
}

static const loom_optimizer_vtable adamw_vtable = ADAM_VTABLE(adamw_create, adamw_step, adam_get_hparam);

static const loom_param_spec adamw_params[] = {
    ADAM_PARAM_SPECS,
    {.key = NULL},
};

static const loom_plugin_desc adamw_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "adamw",
    .version = "1.0.0",
    .summary = "torch.optim.AdamW: Adam with decoupled weight decay",
    .vtable = &adamw_vtable,
    .params = adamw_params,
};

LOOM_PLUGIN_EXPORT(&adamw_desc)
