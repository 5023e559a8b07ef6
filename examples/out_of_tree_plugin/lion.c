/*
 * lion.c - the Lion optimizer (Chen et al. 2023, "Symbolic Discovery of Optimization
 * Algorithms"), as a plugin written against loom's public headers alone.
 *
 *   c = beta1 * m + (1 - beta1) * g
 *   p = p * (1 - lr * wd) - lr * sign(c)
 *   m = beta2 * m + (1 - beta2) * g
 *
 * One state slot (the momentum m). Weight decay comes per span from the host (0 for biases
 * and norm weights).
 */
#include <math.h>
#include <string.h>

#include <loom/optimizer.h>
#include <loom/plugin.h>

typedef struct lion {
    loom_host *host;
    const loom_host_api *api;
    double beta1, beta2, weight_decay;
} lion;

static const loom_param_spec lion_params[] = {
    {"beta1", LOOM_PARAM_FLOAT, 0, "0.9", "interpolation of momentum and gradient for the update"},
    {"beta2", LOOM_PARAM_FLOAT, 0, "0.99", "momentum decay"},
    {"weight_decay", LOOM_PARAM_FLOAT, 0, "0.0", "decoupled weight decay"},
    {NULL, 0, 0, NULL, NULL},
};

static const char *const lion_state_names[] = {"exp_avg"};

static loom_status lion_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_optimizer **out)
{
    lion *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    loom_status st;
    if ((st = loom_cfg_need_f64(host, api, config, "beta1", &self->beta1)) ||
        (st = loom_cfg_need_f64(host, api, config, "beta2", &self->beta2)) ||
        (st = loom_cfg_need_f64(host, api, config, "weight_decay", &self->weight_decay))) {
        api->free_memory(host, self);
        return st;
    }
    if (self->beta1 < 0 || self->beta1 >= 1 || self->beta2 < 0 || self->beta2 >= 1) {
        api->free_memory(host, self);
        return api->fail(host, LOOM_E_INVALID, "betas must be in [0, 1)");
    }
    *out = (loom_optimizer *)self;
    return LOOM_OK;
}

static void lion_destroy(loom_optimizer *self_)
{
    lion *self = (lion *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static loom_status lion_step(loom_optimizer *self_, const loom_span *spans, size_t n_spans,
                             const loom_optimizer_step *step)
{
    lion *self = (lion *)self_;
    double beta1 = isnan(step->momentum) ? self->beta1 : step->momentum;
    float lr = (float)step->lr, scale = (float)step->grad_scale;
    float b1 = (float)beta1, b2 = (float)self->beta2;
    for (size_t s = 0; s < n_spans; s++) {
        float *p = spans[s].param, *m = spans[s].state[0];
        const float *g = spans[s].grad;
        float decay = 1.0f - lr * (float)spans[s].weight_decay;
        for (int64_t i = 0; i < spans[s].numel; i++) {
            float gi = g[i] * scale;
            float c = b1 * m[i] + (1.0f - b1) * gi;
            float sign = (float)((c > 0) - (c < 0));
            p[i] = p[i] * decay - lr * sign;
            m[i] = b2 * m[i] + (1.0f - b2) * gi;
        }
    }
    return LOOM_OK;
}

static loom_status lion_get_hparam(loom_optimizer *self_, const char *name, double *out)
{
    lion *self = (lion *)self_;
    if (!strcmp(name, "beta1")) return *out = self->beta1, LOOM_OK;
    if (!strcmp(name, "beta2")) return *out = self->beta2, LOOM_OK;
    if (!strcmp(name, "weight_decay")) return *out = self->weight_decay, LOOM_OK;
    return LOOM_E_NOT_FOUND;
}

static const loom_optimizer_vtable lion_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = 1,
    .flags = 0,
    .state_names = lion_state_names,
    .create = lion_create,
    .destroy = lion_destroy,
    .step = lion_step,
    .get_hparam = lion_get_hparam,
};

static const loom_plugin_desc lion_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "example_lion",
    .version = "0.1.0",
    .summary = "Lion (sign of interpolated momentum), an out-of-tree example",
    .vtable = &lion_vtable,
    .params = lion_params,
};

LOOM_PLUGIN_EXPORT(&lion_desc)
