/*
 * lion.c - Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), HF's
 * --optim lion_32bit (bitsandbytes' 32-bit Lion), docs/semantics/optimizers.md#lion.
 *
 * Per element, with g = grad * grad_scale, wd = span->weight_decay, lr = step->lr,
 * b1 = step->momentum if not NaN else beta1:
 *     p *= 1 - lr*wd                                   (decoupled decay, BEFORE the update)
 *     c  = b1*m + (1-b1)*g
 *     p -= lr * sign(c)                                (sign(0) = 0)
 *     m  = b2*m + (1-b2)*g
 * Source: the paper's Algorithm 2 and bitsandbytes' 8-bit blockwise kernel (csrc/kernels.cu,
 * kOptimizerStatic8bit1StateBlockwise, LION). Its 32-bit kernel folded the decay into the
 * gradient (g += wd*p, inside the sign) up to 0.49.2; loom follows the paper, as bitsandbytes
 * itself does since (docs/semantics/optimizers.md#lion).
 *
 * State slot: 0 = exp_avg (m), zeroed by the host as bitsandbytes zeroes its state1.
 */
#include <loom/plugin.h>

#include "keyed_rule.h"

enum { BETA1, BETA2, WEIGHT_DECAY, N_KEYS };

/* bitsandbytes' checks: 0 <= beta < 1, weight_decay >= 0. */
static const optim_key lion_keys[N_KEYS] = {
    [BETA1] = {"beta1", 0, 1},
    [BETA2] = {"beta2", 0, 1},
    [WEIGHT_DECAY] = {"weight_decay", 0, INFINITY},
};

static const char *const lion_state_names[1] = {"exp_avg"};

typedef struct lion_coef {
    double lr; /* the decay factor 1 - lr*wd is formed per span in double, as AdamW's */
    float grad_scale, step, beta1, one_minus_beta1, beta2, one_minus_beta2;
} lion_coef;

static void lion_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const lion_coef c = *(const lion_coef *)coef;
    const float decay = (float)(1.0 - c.lr * s->weight_decay);
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.grad_scale;
        float ci = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float sign = (float)((ci > 0.0f) - (ci < 0.0f));
        p[i] = p[i] * decay - c.step * sign;
        m[i] = c.beta2 * m[i] + c.one_minus_beta2 * gi;
    }
}

static loom_status lion_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                             const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st) return st;
    const double b1 = optim_momentum(step, self->hp[BETA1]);
    if (!(b1 >= 0 && b1 < 1))
        return self->api->fail(self->host, LOOM_E_INVALID, "scheduler momentum %g: beta1 must be in [0, 1)", b1);
    if ((st = optim_check_spans(self->host, self->api, spans, n_spans, 1))) return st;
    const lion_coef c = {
        .lr = step->lr,
        .grad_scale = (float)step->grad_scale,
        .step = (float)step->lr,
        .beta1 = (float)b1,
        .one_minus_beta1 = (float)(1.0 - b1),
        .beta2 = (float)self->hp[BETA2],
        .one_minus_beta2 = (float)(1.0 - self->hp[BETA2]),
    };
    lk_for_spans(spans, n_spans, self->threads, lion_piece, &c);
    return LOOM_OK;
}

static loom_status lion_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_optimizer **out)
{
    return keyed_create(host, api, config, lion_keys, N_KEYS, NULL, out);
}

static const loom_optimizer_vtable lion_vtable = KEYED_VTABLE(1, lion_state_names, lion_create, lion_step);

/* bitsandbytes.optim.Lion's defaults. HF's Trainer passes betas = (--adam_beta1, --adam_beta2),
 * so a `loom train` run has beta2 0.999 unless --adam_beta2 says otherwise, as in HF. */
static const loom_param_spec lion_params[] = {
    {.key = "beta1",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.9",
     .doc = "interpolation of momentum and gradient inside the sign (--adam_beta1)"},
    {.key = "beta2",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.99",
     .doc = "decay rate of the momentum (--adam_beta2, 0.999 by default in loom train)"},
    {.key = "weight_decay",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "decoupled weight decay of the decay group; the host copies it into each span"},
    {.key = NULL},
};

static const loom_plugin_desc lion_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "lion",
    .version = "1.0.0",
    .summary = "Lion (bitsandbytes' 32-bit Lion): sign of interpolated momentum, decoupled weight decay",
    .vtable = &lion_vtable,
    .params = lion_params,
};

LOOM_PLUGIN_EXPORT(&lion_desc)
