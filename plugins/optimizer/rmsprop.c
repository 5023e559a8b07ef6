/*
 * rmsprop.c - torch.optim.RMSprop (maximize=False), HF's --optim rmsprop (and rmsprop_bnb,
 * bitsandbytes' 32-bit RMSprop, the same rule at momentum 0), docs/semantics/optimizers.md#rmsprop.
 *
 * Per element, with g = grad * grad_scale, wd = span->weight_decay, lr = step->lr,
 * mu = step->momentum if not NaN else momentum, a = alpha:
 *     g  += wd*p                                       (L2: decay added to the gradient)
 *     sq  = a*sq + (1-a)*g*g
 *     centered:  ga = a*ga + (1-a)*g ;  avg = sqrt(sq - ga*ga) + eps
 *     else:      avg = sqrt(sq) + eps
 *     mu > 0:    buf = mu*buf + g/avg ;  p -= lr*buf
 *     else:      p -= lr * g/avg
 * Source: torch/optim/rmsprop.py, _single_tensor_rmsprop (PyTorch 1.13). torch creates all three
 * buffers as zeros, as the host does, so there is no first-step case.
 *
 * State slots: 0 = square_avg, 1 = momentum_buffer, 2 = grad_avg (torch's names). The slots
 * are fixed per plugin, so all three exist even when momentum is 0 and centered is false
 * (torch then keeps square_avg alone).
 */
#include <loom/plugin.h>

#include "keyed_rule.h"

enum { ALPHA, EPS, WEIGHT_DECAY, MOMENTUM, N_KEYS };

/* torch's checks: every value >= 0. */
static const optim_key rmsprop_keys[N_KEYS] = {
    [ALPHA] = {"alpha", 0, INFINITY},
    [EPS] = {"eps", 0, INFINITY},
    [WEIGHT_DECAY] = {"weight_decay", 0, INFINITY},
    [MOMENTUM] = {"momentum", 0, INFINITY},
};

static const char *const rmsprop_state_names[3] = {"square_avg", "momentum_buffer", "grad_avg"};

typedef struct rmsprop_coef {
    float grad_scale, lr, alpha, one_minus_alpha, eps, momentum;
    int32_t centered;
} rmsprop_coef;

static void rmsprop_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const rmsprop_coef c = *(const rmsprop_coef *)coef;
    const float wd = (float)s->weight_decay;
    float *restrict p = s->param + begin, *restrict sq = s->state[0] + begin;
    float *restrict buf = s->state[1] + begin, *restrict ga = s->state[2] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * c.grad_scale + wd * p[i];
        float sqi = c.alpha * sq[i] + c.one_minus_alpha * (d * d);
        sq[i] = sqi;
        float avg;
        if (c.centered) {
            float gai = c.alpha * ga[i] + c.one_minus_alpha * d;
            ga[i] = gai;
            avg = sqrtf(sqi - gai * gai) + c.eps;
        } else {
            avg = sqrtf(sqi) + c.eps;
        }
        if (c.momentum > 0) {
            float b = c.momentum * buf[i] + d / avg;
            buf[i] = b;
            p[i] -= c.lr * b;
        } else {
            p[i] -= c.lr * (d / avg);
        }
    }
}

static loom_status rmsprop_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st) return st;
    const double mu = optim_momentum(step, self->hp[MOMENTUM]);
    if (!(mu >= 0 && isfinite(mu)))
        return self->api->fail(self->host, LOOM_E_INVALID, "scheduler momentum %g: must be finite and >= 0", mu);
    if ((st = optim_check_spans(self->host, self->api, spans, n_spans, 3))) return st;
    const rmsprop_coef c = {
        .grad_scale = (float)step->grad_scale,
        .lr = (float)step->lr,
        .alpha = (float)self->hp[ALPHA],
        .one_minus_alpha = (float)(1.0 - self->hp[ALPHA]),
        .eps = (float)self->hp[EPS],
        .momentum = (float)mu,
        .centered = self->flag,
    };
    lk_for_spans(spans, n_spans, self->threads, rmsprop_piece, &c);
    return LOOM_OK;
}

static loom_status rmsprop_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  loom_optimizer **out)
{
    return keyed_create(host, api, config, rmsprop_keys, N_KEYS, "centered", out);
}

static const loom_optimizer_vtable rmsprop_vtable = KEYED_VTABLE(3, rmsprop_state_names, rmsprop_create, rmsprop_step);

/* torch's defaults. HF's Trainer passes only lr and the groups' weight decay, so
 * --adam_epsilon does not reach this plugin (core/config/optim_names.c). */
static const loom_param_spec rmsprop_params[] = {
    {.key = "alpha",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.99",
     .doc = "smoothing constant of the squared-gradient average"},
    {.key = "eps",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1e-8",
     .doc = "added to the root of the average for stability (not --adam_epsilon: HF does not pass it)"},
    {.key = "weight_decay",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "L2 penalty of the decay group; the host copies it into each span"},
    {.key = "momentum",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "momentum factor of the buffer of scaled gradients (0: none)"},
    {.key = "centered",
     .type = LOOM_PARAM_BOOL,
     .default_value = "false",
     .doc = "normalise by the variance estimate (subtract the squared mean gradient)"},
    {.key = NULL},
};

static const loom_plugin_desc rmsprop_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "rmsprop",
    .version = "1.0.0",
    .summary = "torch.optim.RMSprop: momentum, centered, L2 weight decay",
    .vtable = &rmsprop_vtable,
    .params = rmsprop_params,
};

LOOM_PLUGIN_EXPORT(&rmsprop_desc)
