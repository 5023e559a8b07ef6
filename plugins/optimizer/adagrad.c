/*
 * adagrad.c - torch.optim.Adagrad (dense gradients, maximize=False), HF's --optim adagrad,
 * docs/semantics/optimizers.md#adagrad.
 *
 * Per element, with g = grad * grad_scale, t = step->step (1 for the first update),
 * wd = span->weight_decay, lr = step->lr:
 *     g   += wd*p                                      (L2: decay added to the gradient)
 *     clr  = lr / (1 + (t-1)*lr_decay)
 *     sum += g*g                                       (sum starts at initial_accumulator_value)
 *     p   -= clr * g / (sqrt(sum) + eps)
 * Source: torch/optim/adagrad.py, _single_tensor_adagrad (PyTorch 1.13).
 *
 * torch fills "sum" with initial_accumulator_value when it creates the state; the host zeroes
 * the slot instead, so step 1 adds the value in (sum = init + g*g). A resumed run restores the
 * slot and never sees step 1 again.
 * State slot: 0 = sum (torch's name).
 */
#include <loom/plugin.h>

#include "keyed_rule.h"

enum { LR_DECAY, WEIGHT_DECAY, INIT_ACC, EPS, N_KEYS };

/* torch's checks: every value >= 0. */
static const optim_key adagrad_keys[N_KEYS] = {
    [LR_DECAY] = {"lr_decay", 0, INFINITY},
    [WEIGHT_DECAY] = {"weight_decay", 0, INFINITY},
    [INIT_ACC] = {"initial_accumulator_value", 0, INFINITY},
    [EPS] = {"eps", 0, INFINITY},
};

static const char *const adagrad_state_names[1] = {"sum"};

typedef struct adagrad_coef {
    float grad_scale, clr, eps, init; /* init: added to the sum at step 1 only, else 0 */
} adagrad_coef;

static void adagrad_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const adagrad_coef c = *(const adagrad_coef *)coef;
    const float wd = (float)s->weight_decay;
    float *restrict p = s->param + begin, *restrict sum = s->state[0] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * c.grad_scale + wd * p[i];
        float acc = (sum[i] + c.init) + d * d;
        sum[i] = acc;
        p[i] -= c.clr * (d / (sqrtf(acc) + c.eps));
    }
}

static loom_status adagrad_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st || (st = optim_check_spans(self->host, self->api, spans, n_spans, 1))) return st;
    const adagrad_coef c = {
        .grad_scale = (float)step->grad_scale,
        .clr = (float)(step->lr / (1.0 + (double)(step->step - 1) * self->hp[LR_DECAY])),
        .eps = (float)self->hp[EPS],
        .init = step->step == 1 ? (float)self->hp[INIT_ACC] : 0.0f,
    };
    lk_for_spans(spans, n_spans, self->threads, adagrad_piece, &c);
    return LOOM_OK;
}

static loom_status adagrad_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  loom_optimizer **out)
{
    return keyed_create(host, api, config, adagrad_keys, N_KEYS, NULL, out);
}

static const loom_optimizer_vtable adagrad_vtable = KEYED_VTABLE(1, adagrad_state_names, adagrad_create, adagrad_step);

/* torch's defaults. HF's Trainer passes only lr and the groups' weight decay, so neither
 * --adam_epsilon nor the betas reach this plugin (core/config/optim_names.c). */
static const loom_param_spec adagrad_params[] = {
    {.key = "lr_decay",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "the step's lr is divided by 1 + (t-1)*lr_decay"},
    {.key = "weight_decay",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "L2 penalty of the decay group; the host copies it into each span"},
    {.key = "initial_accumulator_value",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "starting value of the sum of squared gradients"},
    {.key = "eps",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1e-10",
     .doc = "added to sqrt(sum) for stability (not --adam_epsilon: HF does not pass it)"},
    {.key = NULL},
};

static const loom_plugin_desc adagrad_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "adagrad",
    .version = "1.0.0",
    .summary = "torch.optim.Adagrad: per-element lr from the sum of squared gradients, L2 weight decay",
    .vtable = &adagrad_vtable,
    .params = adagrad_params,
};

LOOM_PLUGIN_EXPORT(&adagrad_desc)
