/*
 * adafactor.c - HF transformers.optimization.Adafactor (Shazeer & Stern, 2018),
 * docs/semantics/optimizers.md#adafactor. `--adafactor` / `--optim adafactor` select it.
 *
 * Per tensor, t = step->step, g = grad * grad_scale, eps1, eps2 = HF's eps = (1e-30, 1e-3):
 *     rms(x) = ||x||_2 / sqrt(numel(x))
 *     lr = relative_step ? min(warmup_init ? 1e-6 t : 1e-2, 1 / sqrt(t)) : step->lr
 *     if scale_parameter: lr *= max(eps2, rms(p))              (p before this step's update)
 *     beta2t = 1 - t^decay_rate
 *     factored (ndim >= 2, shape [..., R, C]):
 *         row = beta2t row + (1 - beta2t) mean over C of (g^2 + eps1)      [..., R]
 *         col = beta2t col + (1 - beta2t) mean over R of (g^2 + eps1)      [..., C]
 *         u = g / sqrt(row / mean over R of row) / sqrt(col)
 *     else:
 *         v = beta2t v + (1 - beta2t) (g^2 + eps1);  u = g / sqrt(v)
 *     u = lr u / max(1, rms(u) / clip_threshold)
 *     if beta1 is set: m = beta1 m + (1 - beta1) u;  u = m
 *     if wd != 0: p -= wd lr p                                  (lr with the parameter scale)
 *     p -= u
 * Source: transformers/optimization.py, class Adafactor (step, _get_lr, _approx_sq_grad).
 * torch computes in float32; here the reductions (rms, means) run in double.
 *
 * rms(p), rms(u) and the row/column means need the whole tensor: the plugin sets
 * LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS, and every sharding strategy hands it whole tensors
 * (none/ddp own everything, sharded_ddp partitions by tensor, zero1/zero2 then cut their
 * partitions at tensor boundaries only: plugins/sharding/zero_whole.h).
 *
 * State slots (zeroed by the host, saved in checkpoints): 0 = exp_avg (used with beta1 only),
 * 1 = exp_avg_sq (1-D tensors) or, for factored tensors, exp_avg_sq_row in its first numel / C
 * elements, 2 = exp_avg_sq_col in its first numel / R elements. The unused rest of each slot
 * is memory HF does not spend (docs/semantics/optimizers.md#adafactor).
 */
#include <loom/plugin.h>

#include "optim_common.h"

#include <stdlib.h>
#include <string.h>

#define ADAFACTOR_SLOTS 3

struct loom_optimizer {
    loom_host *host;
    const loom_host_api *api;
    double eps1, eps2, clip_threshold, decay_rate, beta1, weight_decay;
    int32_t use_first_moment, scale_parameter, relative_step, warmup_init;
};

static const char *const adafactor_state_names[ADAFACTOR_SLOTS] = {"exp_avg", "exp_avg_sq", "exp_avg_sq_col"};

static double rms(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return n > 0 ? sqrt(s / (double)n) : 0.0;
}

/* The second-moment update of one tensor and the sum of squares of the (unscaled) update u,
 * which pass 2 recomputes from the updated statistics instead of storing it. */
typedef struct af_shape {
    int64_t lead, R, C; /* factored: [lead, R, C]; not factored: R = 1, C = numel */
    int factored;
} af_shape;

static float af_u(const af_shape *sh, const float *row, const float *col, const double *row_mean, const float *v,
                  float g, int64_t b, int64_t r, int64_t c, int64_t i)
{
    if (!sh->factored) return g / sqrtf(v[i]);
    const float r_factor = 1.0f / sqrtf((float)(row[b * sh->R + r] / row_mean[b]));
    const float c_factor = 1.0f / sqrtf(col[b * sh->C + c]);
    return g * r_factor * c_factor;
}

static loom_status adafactor_tensor(loom_optimizer *self, const loom_span *s, const loom_optimizer_step *step)
{
    const int64_t n = s->numel;
    const double t = (double)step->step;
    const float gs = (float)step->grad_scale;
    af_shape sh = {1, 1, n, 0};
    if (s->ndim >= 2) {
        sh.factored = 1;
        sh.R = s->shape[s->ndim - 2];
        sh.C = s->shape[s->ndim - 1];
        sh.lead = sh.R * sh.C > 0 ? n / (sh.R * sh.C) : 0;
    }
    double lr = step->lr;
    if (self->relative_step) {
        const double min_step = self->warmup_init ? 1e-6 * t : 1e-2;
        lr = fmin(min_step, 1.0 / sqrt(t));
    }
    if (self->scale_parameter) lr *= fmax(self->eps2, rms(s->param, n));
    const double beta2t = 1.0 - pow(t, self->decay_rate);
    const float eps1 = (float)self->eps1;
    float *v = s->state[1], *row = s->state[1], *col = s->state[2];

    double *row_mean = NULL;
    if (sh.factored) {
        row_mean = malloc((size_t)(sh.lead > 0 ? sh.lead : 1) * sizeof *row_mean);
        if (!row_mean) return self->api->fail(self->host, LOOM_E_NOMEM, "adafactor: out of memory");
        for (int64_t b = 0; b < sh.lead; b++) {
            const float *gb = s->grad + b * sh.R * sh.C;
            for (int64_t r = 0; r < sh.R; r++) {
                double sum = 0.0;
                for (int64_t c = 0; c < sh.C; c++) {
                    const float g = gb[r * sh.C + c] * gs;
                    sum += (double)(g * g + eps1);
                }
                float *x = &row[b * sh.R + r];
                *x = (float)(beta2t * *x + (1.0 - beta2t) * (sum / (double)sh.C));
            }
            for (int64_t c = 0; c < sh.C; c++) {
                double sum = 0.0;
                for (int64_t r = 0; r < sh.R; r++) {
                    const float g = gb[r * sh.C + c] * gs;
                    sum += (double)(g * g + eps1);
                }
                float *x = &col[b * sh.C + c];
                *x = (float)(beta2t * *x + (1.0 - beta2t) * (sum / (double)sh.R));
            }
            double m = 0.0;
            for (int64_t r = 0; r < sh.R; r++) m += row[b * sh.R + r];
            row_mean[b] = m / (double)sh.R;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const float g = s->grad[i] * gs;
            v[i] = (float)(beta2t * v[i] + (1.0 - beta2t) * (double)(g * g + eps1));
        }
    }
    /* rms(u), then the update with u recomputed. */
    double sq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t b = i / (sh.R * sh.C), r = (i / sh.C) % sh.R, c = i % sh.C;
        const double u = af_u(&sh, row, col, row_mean, v, s->grad[i] * gs, b, r, c, i);
        sq += u * u;
    }
    const double rms_u = n > 0 ? sqrt(sq / (double)n) : 0.0;
    const float scale = (float)(lr / fmax(1.0, rms_u / self->clip_threshold));
    const float b1 = (float)self->beta1, decay = (float)(-s->weight_decay * lr);
    float *m = s->state[0];
    for (int64_t i = 0; i < n; i++) {
        const int64_t b = i / (sh.R * sh.C), r = (i / sh.C) % sh.R, c = i % sh.C;
        float u = af_u(&sh, row, col, row_mean, v, s->grad[i] * gs, b, r, c, i) * scale;
        if (self->use_first_moment) {
            m[i] = b1 * m[i] + (1.0f - b1) * u;
            u = m[i];
        }
        float p = s->param[i];
        if (s->weight_decay != 0.0) p += decay * p;
        s->param[i] = p - u;
    }
    free(row_mean);
    return LOOM_OK;
}

static loom_status adafactor_step(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                  const loom_optimizer_step *step)
{
    loom_status st = optim_check_step(self->host, self->api, spans, n_spans, step);
    if (st || (st = optim_check_spans(self->host, self->api, spans, n_spans, ADAFACTOR_SLOTS))) return st;
    for (size_t i = 0; i < n_spans; i++) {
        const loom_span *s = lk_span_at(spans, i);
        if (s->offset != 0 || s->numel != s->tensor_numel)
            return self->api->fail(self->host, LOOM_E_UNSUPPORTED,
                                   "adafactor needs whole tensors: '%s' came as elements [%lld, %lld) of %lld", s->name,
                                   (long long)s->offset, (long long)(s->offset + s->numel),
                                   (long long)s->tensor_numel);
    }
    for (size_t i = 0; i < n_spans && !st; i++) st = adafactor_tensor(self, lk_span_at(spans, i), step);
    return st;
}

static loom_status adafactor_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                    loom_optimizer **out)
{
    if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    loom_optimizer o = {.host = host, .api = api, .eps1 = 1e-30, .eps2 = 1e-3, .clip_threshold = 1.0,
                        .decay_rate = -0.8};
    loom_status st;
    if ((st = loom_cfg_opt_f64(host, api, config, "eps1", &o.eps1)) ||
        (st = loom_cfg_opt_f64(host, api, config, "eps2", &o.eps2)) ||
        (st = loom_cfg_opt_f64(host, api, config, "clip_threshold", &o.clip_threshold)) ||
        (st = loom_cfg_opt_f64(host, api, config, "decay_rate", &o.decay_rate)) ||
        (st = loom_cfg_opt_f64(host, api, config, "weight_decay", &o.weight_decay)) ||
        (st = loom_cfg_need_bool(host, api, config, "scale_parameter", &o.scale_parameter)) ||
        (st = loom_cfg_need_bool(host, api, config, "relative_step", &o.relative_step)) ||
        (st = loom_cfg_need_bool(host, api, config, "warmup_init", &o.warmup_init)))
        return st;
    /* beta1 unset is HF's None: no first moment. */
    const int b1 = api->cfg_f64(config, "beta1", &o.beta1);
    if (b1 == LOOM_CFG_WRONG_TYPE) return api->fail(host, LOOM_E_INVALID, "beta1 must be a number (or unset: None)");
    o.use_first_moment = b1 == LOOM_CFG_PRESENT;
    if (o.use_first_moment && !(o.beta1 >= 0.0 && o.beta1 < 1.0))
        return api->fail(host, LOOM_E_INVALID, "beta1 = %g: must be in [0, 1) or unset (None)", o.beta1);
    if (!(o.eps1 >= 0.0 && isfinite(o.eps1)) || !(o.eps2 >= 0.0 && isfinite(o.eps2)))
        return api->fail(host, LOOM_E_INVALID, "eps1 = %g, eps2 = %g: must be finite and >= 0", o.eps1, o.eps2);
    if (!(o.clip_threshold > 0.0))
        return api->fail(host, LOOM_E_INVALID, "clip_threshold = %g: must be > 0", o.clip_threshold);
    if (!(o.decay_rate <= 0.0 && isfinite(o.decay_rate)))
        return api->fail(host, LOOM_E_INVALID, "decay_rate = %g: must be finite and <= 0 (HF: -0.8)", o.decay_rate);
    if (!(o.weight_decay >= 0.0 && isfinite(o.weight_decay)))
        return api->fail(host, LOOM_E_INVALID, "weight_decay = %g: must be finite and >= 0", o.weight_decay);
    if (o.warmup_init && !o.relative_step)
        return api->fail(host, LOOM_E_INVALID, "warmup_init requires relative_step (HF refuses it too)");
    loom_optimizer *self = malloc(sizeof *self);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    *self = o;
    *out = self;
    return LOOM_OK;
}

static void adafactor_destroy(loom_optimizer *self) { free(self); }

static loom_status adafactor_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (!self || !name || !out) return LOOM_E_INVALID;
    const struct {
        const char *name;
        double value;
    } table[] = {
        {"eps1", self->eps1},
        {"eps2", self->eps2},
        {"clip_threshold", self->clip_threshold},
        {"decay_rate", self->decay_rate},
        {"beta1", self->use_first_moment ? self->beta1 : NAN},
        {"weight_decay", self->weight_decay},
        {"scale_parameter", self->scale_parameter ? 1.0 : 0.0},
        {"relative_step", self->relative_step ? 1.0 : 0.0},
        {"warmup_init", self->warmup_init ? 1.0 : 0.0},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (!strcmp(name, table[i].name)) {
            *out = table[i].value;
            return LOOM_OK;
        }
    return LOOM_E_NOT_FOUND;
}

static const loom_optimizer_vtable adafactor_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = ADAFACTOR_SLOTS,
    .flags = LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS,
    .state_names = adafactor_state_names,
    .create = adafactor_create,
    .destroy = adafactor_destroy,
    .step = adafactor_step,
    .get_hparam = adafactor_get_hparam,
};

/* Defaults are what HF's Trainer builds for --adafactor (scale_parameter and relative_step
 * False, the learning rate from --learning_rate and the scheduler); the Adafactor class's own
 * defaults (both True) are one flag away. */
static const loom_param_spec adafactor_params[] = {
    {.key = "eps1", .type = LOOM_PARAM_FLOAT, .default_value = "1e-30",
     .doc = "HF eps[0]: added to the squared gradient"},
    {.key = "eps2", .type = LOOM_PARAM_FLOAT, .default_value = "1e-3",
     .doc = "HF eps[1]: the smallest parameter scale (scale_parameter)"},
    {.key = "clip_threshold", .type = LOOM_PARAM_FLOAT, .default_value = "1.0",
     .doc = "the update's RMS is clipped to this"},
    {.key = "decay_rate", .type = LOOM_PARAM_FLOAT, .default_value = "-0.8",
     .doc = "second-moment decay: beta2 at step t is 1 - t^decay_rate"},
    {.key = "beta1", .type = LOOM_PARAM_FLOAT, .default_value = NULL,
     .doc = "first-moment coefficient; unset (HF's None): no first moment"},
    {.key = "weight_decay", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "decay of the decay group (times the step's lr); the host copies it into each span"},
    {.key = "scale_parameter", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "multiply the learning rate by max(eps2, RMS of the parameter) (HF's class default: true)"},
    {.key = "relative_step", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "ignore the scheduler's lr: min(1e-2, 1/sqrt(t)) (HF's class default: true)"},
    {.key = "warmup_init", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "with relative_step: min(1e-6 t, 1/sqrt(t))"},
    {.key = NULL},
};

static const loom_plugin_desc adafactor_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "adafactor",
    .version = "1.0.0",
    .summary = "HF transformers Adafactor: factored second moment, update clipping, relative step",
    .vtable = &adafactor_vtable,
    .params = adafactor_params,
};

LOOM_PLUGIN_EXPORT(&adafactor_desc)
