/*
 * lamb.c - DeepSpeed's FusedLamb (docs/semantics/optimizers.md#lamb; deepspeed/ops/lamb, csrc/lamb), per tensor:
 *     g = grad * grad_scale
 *     m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
 *     denom = eps_inside_sqrt ? sqrt(v + eps) : sqrt(v) + eps          (UNcorrected v)
 *     u = m / denom + wd * p                                           (UNcorrected m)
 *     coeff = (||p|| != 0 && ||u|| != 0) ? clamp(||p|| / ||u||, min_coeff, max_coeff) : 1
 *     step_size = bias_correction ? lr * sqrt(1 - b2^t) / (1 - b1^t) : lr
 *     p -= step_size * coeff * u
 * ||p|| and ||u|| are norms of WHOLE tensors. Under ZeRO a tensor may be split over ranks, so the
 * rule uses the host's two-phase protocol: partial_stats adds each span's sum of p^2 and u^2
 * (u from the values m and v WILL take, without changing them), the host sums them over ranks,
 * and step reads the totals (loom_optimizer_step.tensor_stats, 2 per tensor).
 * Weight decay: the host resolves it per span; the plugin reads span->weight_decay.
 * State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v).
 */
#include <math.h>
#include <string.h>

#include <loom/optimizer.h>
#include <loom/plugin.h>

#include "optim_common.h"

#define LAMB_STATS 2 /* sum p^2, sum u^2 */

typedef struct lamb {
    loom_host *host;
    const loom_host_api *api;
    double beta1, beta2, eps, weight_decay, max_coeff, min_coeff;
    int32_t bias_correction, eps_inside_sqrt;
    int threads;
} lamb;

static const char *const lamb_state_names[2] = {"exp_avg", "exp_avg_sq"};

static const loom_param_spec lamb_params[] = {
    {.key = "lr",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.001",
     .doc = "accepted for ds_config; the scheduler gives the rate"},
    {.key = "beta1", .type = LOOM_PARAM_FLOAT, .default_value = "0.9", .doc = "first-moment decay"},
    {.key = "beta2", .type = LOOM_PARAM_FLOAT, .default_value = "0.999", .doc = "second-moment decay"},
    {.key = "eps", .type = LOOM_PARAM_FLOAT, .default_value = "1e-08", .doc = "added to the denominator"},
    {.key = "weight_decay",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.0",
     .doc = "inside the update (host resolves per span)"},
    {.key = "max_coeff", .type = LOOM_PARAM_FLOAT, .default_value = "10.0", .doc = "upper clamp of the trust ratio"},
    {.key = "min_coeff", .type = LOOM_PARAM_FLOAT, .default_value = "0.01", .doc = "lower clamp of the trust ratio"},
    {.key = "bias_correction",
     .type = LOOM_PARAM_BOOL,
     .default_value = "true",
     .doc = "scale the step by the Adam corrections"},
    {.key = "eps_inside_sqrt",
     .type = LOOM_PARAM_BOOL,
     .default_value = "false",
     .doc = "sqrt(v + eps) instead of sqrt(v) + eps"},
    {.key = NULL},
};

static loom_status lamb_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_optimizer **out)
{
    lamb *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    loom_status st;
    if ((st = loom_cfg_need_f64(host, api, config, "beta1", &self->beta1)) ||
        (st = loom_cfg_need_f64(host, api, config, "beta2", &self->beta2)) ||
        (st = loom_cfg_need_f64(host, api, config, "eps", &self->eps)) ||
        (st = loom_cfg_need_f64(host, api, config, "weight_decay", &self->weight_decay)) ||
        (st = loom_cfg_need_f64(host, api, config, "max_coeff", &self->max_coeff)) ||
        (st = loom_cfg_need_f64(host, api, config, "min_coeff", &self->min_coeff)) ||
        (st = loom_cfg_need_bool(host, api, config, "bias_correction", &self->bias_correction)) ||
        (st = loom_cfg_need_bool(host, api, config, "eps_inside_sqrt", &self->eps_inside_sqrt))) {
        api->free_memory(host, self);
        return st;
    }
    if (!(self->beta1 >= 0 && self->beta1 < 1) || !(self->beta2 >= 0 && self->beta2 < 1) || !(self->eps >= 0) ||
        !(self->weight_decay >= 0) || !(self->min_coeff >= 0) || !(self->max_coeff >= self->min_coeff)) {
        api->free_memory(host, self);
        return api->fail(host, LOOM_E_INVALID,
                         "betas must be in [0, 1), eps, weight_decay >= 0, 0 <= min_coeff <= max_coeff");
    }
    self->threads = optim_threads(host, api);
    *out = (loom_optimizer *)self;
    return LOOM_OK;
}

static void lamb_destroy(loom_optimizer *self_)
{
    lamb *self = (lamb *)self_;
    if (self) self->api->free_memory(self->host, self);
}

typedef struct lamb_coef {
    float scale, b1, one_minus_b1, b2, one_minus_b2, eps;
    int inside;
} lamb_coef;

static lamb_coef coefficients(const lamb *self, const loom_optimizer_step *step)
{
    double b1 = optim_momentum(step, self->beta1);
    return (lamb_coef){(float)step->grad_scale, (float)b1, (float)(1 - b1), (float)self->beta2,
                       (float)(1 - self->beta2), (float)self->eps, self->eps_inside_sqrt};
}

/* The update direction of element i from the values m and v will take. */
static inline float direction(const lamb_coef c, float p, float g, float m, float v, float wd, float *m_new,
                              float *v_new)
{
    float gi = g * c.scale;
    float mi = c.b1 * m + c.one_minus_b1 * gi;
    float vi = c.b2 * v + c.one_minus_b2 * gi * gi;
    float denom = c.inside ? sqrtf(vi + c.eps) : sqrtf(vi) + c.eps;
    *m_new = mi;
    *v_new = vi;
    return mi / denom + wd * p;
}

static loom_status lamb_partial_stats(loom_optimizer *self_, const loom_span *spans, size_t n_spans,
                                      const loom_optimizer_step *step, double *sums)
{
    lamb *self = (lamb *)self_;
    const lamb_coef c = coefficients(self, step);
    for (size_t k = 0; k < n_spans; k++) {
        const loom_span *s = lk_span_at(spans, k);
        const float *p = s->param, *g = s->grad, *m = s->state[0], *v = s->state[1];
        float wd = (float)s->weight_decay;
        double pp = 0, uu = 0;
#pragma omp parallel for simd reduction(+ : pp, uu) if (parallel : s->numel > LK_STEP_PARALLEL_MIN)                    \
    num_threads(self->threads)
        for (int64_t i = 0; i < s->numel; i++) {
            float mn, vn;
            float u = direction(c, p[i], g[i], m[i], v[i], wd, &mn, &vn);
            pp += (double)p[i] * p[i];
            uu += (double)u * u;
        }
        sums[(size_t)s->tensor_index * LAMB_STATS] += pp;
        sums[(size_t)s->tensor_index * LAMB_STATS + 1] += uu;
    }
    return LOOM_OK;
}

static loom_status lamb_step(loom_optimizer *self_, const loom_span *spans, size_t n_spans,
                             const loom_optimizer_step *step)
{
    lamb *self = (lamb *)self_;
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st || (st = optim_check_spans(self->host, self->api, spans, n_spans, 2))) return st;
    if (!LOOM_HAS_FIELD(step, loom_optimizer_step, n_tensors) || !step->tensor_stats)
        return self->api->fail(self->host, LOOM_E_ABI,
                               "lamb needs whole-tensor statistics from the host (ABI partial_stats)");
    const lamb_coef c = coefficients(self, step);
    double t = (double)step->step, b1 = optim_momentum(step, self->beta1);
    double step_size = self->bias_correction ? step->lr * sqrt(1 - pow(self->beta2, t)) / (1 - pow(b1, t)) : step->lr;
    for (size_t k = 0; k < n_spans; k++) {
        const loom_span *s = lk_span_at(spans, k);
        if (s->tensor_index >= step->n_tensors)
            return self->api->fail(self->host, LOOM_E_INVALID, "span of '%s': tensor index %u out of range", s->name,
                                   s->tensor_index);
        double w_norm = sqrt(step->tensor_stats[(size_t)s->tensor_index * LAMB_STATS]);
        double u_norm = sqrt(step->tensor_stats[(size_t)s->tensor_index * LAMB_STATS + 1]);
        double coeff = 1.0;
        if (w_norm != 0 && u_norm != 0) {
            coeff = w_norm / u_norm;
            coeff = coeff < self->min_coeff ? self->min_coeff : coeff > self->max_coeff ? self->max_coeff : coeff;
        }
        float scale = (float)(step_size * coeff), wd = (float)s->weight_decay;
        float *p = s->param, *m = s->state[0], *v = s->state[1];
        const float *g = s->grad;
#pragma omp parallel for simd if (parallel : s->numel > LK_STEP_PARALLEL_MIN) num_threads(self->threads)
        for (int64_t i = 0; i < s->numel; i++) {
            float mn, vn;
            float u = direction(c, p[i], g[i], m[i], v[i], wd, &mn, &vn);
            m[i] = mn;
            v[i] = vn;
            p[i] -= scale * u;
        }
    }
    return LOOM_OK;
}

static loom_status lamb_get_hparam(loom_optimizer *self_, const char *name, double *out)
{
    lamb *self = (lamb *)self_;
    if (!strcmp(name, "beta1")) return *out = self->beta1, LOOM_OK;
    if (!strcmp(name, "beta2")) return *out = self->beta2, LOOM_OK;
    if (!strcmp(name, "eps")) return *out = self->eps, LOOM_OK;
    if (!strcmp(name, "weight_decay")) return *out = self->weight_decay, LOOM_OK;
    if (!strcmp(name, "max_coeff")) return *out = self->max_coeff, LOOM_OK;
    if (!strcmp(name, "min_coeff")) return *out = self->min_coeff, LOOM_OK;
    return LOOM_E_NOT_FOUND;
}

static const loom_optimizer_vtable lamb_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = 2,
    .flags = LOOM_OPTIMIZER_NEEDS_TENSOR_NORMS,
    .state_names = lamb_state_names,
    .create = lamb_create,
    .destroy = lamb_destroy,
    .step = lamb_step,
    .get_hparam = lamb_get_hparam,
    .tensor_stats = LAMB_STATS,
    .partial_stats = lamb_partial_stats,
};

static const loom_plugin_desc lamb_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "lamb",
    .version = "1.0.0",
    .summary = "DeepSpeed's LAMB: Adam direction with a per-tensor trust ratio (whole tensors across ranks)",
    .vtable = &lamb_vtable,
    .params = lamb_params,
};

LOOM_PLUGIN_EXPORT(&lamb_desc)
