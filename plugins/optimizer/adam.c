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
 */
#include <loom/plugin.h>

#include "adam_common.h"

typedef struct adam_coef {
    float grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2;
    float step_size, bias2_sqrt, eps;
} adam_coef;

static void adam_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const adam_coef c = *(const adam_coef *)coef;
    const float weight_decay = (float)s->weight_decay;
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin, *restrict v = s->state[1] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.grad_scale + weight_decay * p[i];
        float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= c.step_size * (mi / (sqrtf(vi) / c.bias2_sqrt + c.eps));
    }
}

static loom_status adam_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                             const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    double b1;
    if (st || (st = adam_step_beta1(self, step, &b1)) ||
        (st = optim_check_spans(self->host, self->api, spans, n_spans, ADAM_STATE_SLOTS)))
        return st;
    double t = (double)step->step;
    adam_coef c = {
        .grad_scale = (float)step->grad_scale,
        .beta1 = (float)b1,
        .one_minus_beta1 = (float)(1.0 - b1),
        .beta2 = (float)self->beta2,
        .one_minus_beta2 = (float)(1.0 - self->beta2),
        .step_size = (float)(step->lr / (1.0 - pow(b1, t))),
        .bias2_sqrt = (float)sqrt(1.0 - pow(self->beta2, t)),
        .eps = (float)self->eps,
    };
    optim_for_spans(spans, n_spans, self->threads, adam_piece, &c);
    return LOOM_OK;
}

static loom_status adam_plugin_create(loom_host *host, const loom_host_api *api,
                                      const loom_config *config, loom_optimizer **out)
{
    return adam_create(host, api, config, 0, out);
}

static const loom_optimizer_vtable adam_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = ADAM_STATE_SLOTS,
    .flags = 0,
    .state_names = adam_state_names,
    .create = adam_plugin_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .get_hparam = adam_get_hparam,
};

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
