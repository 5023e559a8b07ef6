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
 */
#include <loom/plugin.h>

#include "adam_common.h"

typedef struct adamw_hf_coef {
    adam_moments base;
    double lr; /* for the per-span decay rate -lr*wd, rounded to float as before */
    float step_size;
} adamw_hf_coef;

static void adamw_hf_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const adamw_hf_coef c = *(const adamw_hf_coef *)coef;
    const float decay_rate = (float)(-c.lr * s->weight_decay);
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
        float pi = p[i] - c.step_size * (mi / (sqrtf(vi) + c.base.eps));
        /* HF writes p.add_(p, alpha=-lr*wd): p + (-lr*wd)*p, kept in that form. */
        p[i] = pi + decay_rate * pi;
    }
}

static loom_status adamw_hf_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                 const loom_optimizer_step *step)
{
    adamw_hf_coef c;
    loom_status st = adam_begin_step(self, spans, n_spans, step, &c.base);
    if (st) return st;
    double step_size = step->lr;
    if (self->correct_bias) step_size *= sqrt(1.0 - pow(self->hp.beta2, c.base.t)) / (1.0 - pow(c.base.b1, c.base.t));
    c.lr = step->lr;
    c.step_size = (float)step_size;
    optim_for_spans(spans, n_spans, self->threads, adamw_hf_piece, &c);
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
