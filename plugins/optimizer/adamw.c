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
    double lr; /* for the per-span decay 1 - lr*wd, rounded to float as before */
    float grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2;
    float step_size, bias2_sqrt, eps;
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
        float gi = g[i] * c.grad_scale;
        float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - c.step_size * (mi / (sqrtf(vi) / c.bias2_sqrt + c.eps));
    }
}

static loom_status adamw_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                              const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    double b1;
    if (st || (st = adam_step_beta1(self, step, &b1)) ||
        (st = optim_check_spans(self->host, self->api, spans, n_spans, ADAM_STATE_SLOTS)))
        return st;
    double t = (double)step->step;
    adamw_coef c = {
        .lr = step->lr,
        .grad_scale = (float)step->grad_scale,
        .beta1 = (float)b1,
        .one_minus_beta1 = (float)(1.0 - b1),
        .beta2 = (float)self->beta2,
        .one_minus_beta2 = (float)(1.0 - self->beta2),
        .step_size = (float)(step->lr / (1.0 - pow(b1, t))),
        .bias2_sqrt = (float)sqrt(1.0 - pow(self->beta2, t)),
        .eps = (float)self->eps,
    };
    optim_for_spans(spans, n_spans, self->threads, adamw_piece, &c);
    return LOOM_OK;
}

static loom_status adamw_create(loom_host *host, const loom_host_api *api,
                                const loom_config *config, loom_optimizer **out)
{
    return adam_create(host, api, config, 0, out);
}

static const loom_optimizer_vtable adamw_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = ADAM_STATE_SLOTS,
    .flags = 0,
    .state_names = adam_state_names,
    .create = adamw_create,
    .destroy = adam_destroy,
    .step = adamw_step,
    .get_hparam = adam_get_hparam,
};

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
