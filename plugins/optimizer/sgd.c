/*
 * sgd.c - torch.optim.SGD (maximize=False), docs/semantics/optimizers.md#sgd notation.
 *
 * Per element, with g = grad * grad_scale, wd = span->weight_decay, lr = step->lr,
 * mu = step->momentum if not NaN else momentum, damp = dampening:
 *     d = g + wd*p                                     (L2: decay added to the gradient)
 *     if mu == 0:  p -= lr*d
 *     else:
 *         buf = (first step) ? d : mu*buf + (1-damp)*d
 *         d   = nesterov ? d + mu*buf : buf
 *         p  -= lr*d
 * Source: torch/optim/sgd.py, _single_tensor_sgd. torch creates the buffer as a copy of d when
 * it has none, i.e. at the first update; here the host zeroes the buffer and the first update
 * is step->step == 1, where the rule uses buf = 0*buf + 1*d (exactly d).
 * torch rejects nesterov without momentum or with dampening; so does create().
 * One difference remains: if the configured momentum is 0 and a scheduler turns it on after
 * step 1, the (still zero) buffer becomes (1-damp)*d where torch would copy d.
 *
 * Weight decay: the host resolves weight decay per span; the plugin reads span->weight_decay.
 * State slot: 0 = momentum_buffer, zeroed by the host.
 */
#include <loom/plugin.h>

#include "optim_common.h"

#include <stdlib.h>
#include <string.h>

struct loom_optimizer {
    loom_host *host;
    const loom_host_api *api;
    double momentum, dampening, weight_decay;
    int32_t nesterov;
    int threads; /* OpenMP threads for large spans */
};

static const char *const sgd_state_names[1] = {"momentum_buffer"};

typedef struct sgd_coef {
    int threads;
    float grad_scale, weight_decay, lr;
    float keep_buf, take_grad; /* buf = keep_buf*buf + take_grad*d                      */
    float direct, via_buf;     /* p -= lr*(direct*d + via_buf*buf): nesterov (1, mu), else (0, 1) */
} sgd_coef;

static void sgd_plain_span(float *restrict p, const float *restrict g, int64_t n,
                           const sgd_coef c)
{
#pragma omp parallel for simd if (parallel : n > LK_STEP_PARALLEL_MIN) num_threads(c.threads)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * c.grad_scale + c.weight_decay * p[i];
        p[i] -= c.lr * d;
    }
}

static void sgd_momentum_span(float *restrict p, const float *restrict g, float *restrict buf,
                              int64_t n, const sgd_coef c)
{
#pragma omp parallel for simd if (parallel : n > LK_STEP_PARALLEL_MIN) num_threads(c.threads)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * c.grad_scale + c.weight_decay * p[i];
        float b = c.keep_buf * buf[i] + c.take_grad * d;
        buf[i] = b;
        p[i] -= c.lr * (c.direct * d + c.via_buf * b);
    }
}

static loom_status sgd_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                            const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st)
        return st;
    double mu = optim_momentum(step, self->momentum);
    if (!(mu >= 0 && isfinite(mu)))
        return self->api->fail(self->host, LOOM_E_INVALID, "momentum %g: must be finite and >= 0",
                               mu);
    if (self->nesterov && mu == 0)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "nesterov needs a momentum > 0 (the scheduler set 0)");
    if ((st = optim_check_spans(self->host, self->api, spans, n_spans, mu != 0 ? 1 : 0)))
        return st;
    int first = step->step == 1;
    sgd_coef c = {
        .threads = self->threads,
        .grad_scale = (float)step->grad_scale,
        .lr = (float)step->lr,
        .keep_buf = first ? 0.0f : (float)mu,
        .take_grad = first ? 1.0f : (float)(1.0 - self->dampening),
        .direct = self->nesterov ? 1.0f : 0.0f,
        .via_buf = self->nesterov ? (float)mu : 1.0f,
    };
    for (size_t i = 0; i < n_spans; i++) {
        const loom_span *s = lk_span_at(spans, i);
        c.weight_decay = (float)s->weight_decay;
        if (mu == 0)
            sgd_plain_span(s->param, s->grad, s->numel, c);
        else
            sgd_momentum_span(s->param, s->grad, s->state[0], s->numel, c);
    }
    return LOOM_OK;
}

static loom_status sgd_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                              loom_optimizer **out)
{
    if (!out)
        return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    loom_optimizer o = {.host = host, .api = api, .threads = optim_threads(host, api)};
    loom_status st;
    if ((st = loom_cfg_need_f64(host, api, config, "momentum", &o.momentum)) ||
        (st = loom_cfg_need_f64(host, api, config, "dampening", &o.dampening)) ||
        (st = loom_cfg_need_bool(host, api, config, "nesterov", &o.nesterov)) ||
        (st = loom_cfg_need_f64(host, api, config, "weight_decay", &o.weight_decay)))
        return st;
    if (!(o.momentum >= 0 && isfinite(o.momentum)))
        return api->fail(host, LOOM_E_INVALID, "momentum = %g: must be finite and >= 0",
                         o.momentum);
    if (!isfinite(o.dampening))
        return api->fail(host, LOOM_E_INVALID, "dampening = %g: must be finite", o.dampening);
    if (!(o.weight_decay >= 0 && isfinite(o.weight_decay)))
        return api->fail(host, LOOM_E_INVALID, "weight_decay = %g: must be finite and >= 0",
                         o.weight_decay);
    if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
        return api->fail(host, LOOM_E_INVALID,
                         "nesterov momentum requires a momentum > 0 and zero dampening "
                         "(momentum = %g, dampening = %g)", o.momentum, o.dampening);
    loom_optimizer *self = malloc(sizeof *self);
    if (!self)
        return api->fail(host, LOOM_E_NOMEM, "out of memory");
    *self = o;
    *out = self;
    return LOOM_OK;
}

static void sgd_destroy(loom_optimizer *self)
{
    free(self);
}

static loom_status sgd_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (!self || !name || !out)
        return LOOM_E_INVALID;
    if (!strcmp(name, "momentum"))
        *out = self->momentum;
    else if (!strcmp(name, "dampening"))
        *out = self->dampening;
    else if (!strcmp(name, "nesterov"))
        *out = self->nesterov ? 1.0 : 0.0;
    else if (!strcmp(name, "weight_decay"))
        *out = self->weight_decay;
    else
        return LOOM_E_NOT_FOUND;
    return LOOM_OK;
}

static const loom_optimizer_vtable sgd_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = 1,
    .flags = LOOM_OPTIMIZER_ELEMENTWISE,
    .state_names = sgd_state_names,
    .create = sgd_create,
    .destroy = sgd_destroy,
    .step = sgd_step,
    .get_hparam = sgd_get_hparam,
};

static const loom_param_spec sgd_params[] = {
    {.key = "momentum", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "momentum factor (0: plain SGD, the buffer is left untouched)"},
    {.key = "dampening", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "dampening of the gradient in the momentum buffer"},
    {.key = "nesterov", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "Nesterov momentum (needs momentum > 0 and dampening 0)"},
    {.key = "weight_decay", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "L2 penalty of the decay group; the host copies it into each span"},
    {.key = NULL},
};

static const loom_plugin_desc sgd_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "sgd",
    .version = "1.0.0",
    .summary = "torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay",
    .vtable = &sgd_vtable,
    .params = sgd_params,
};

LOOM_PLUGIN_EXPORT(&sgd_desc)
