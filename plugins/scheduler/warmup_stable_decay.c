/*
 * warmup_stable_decay.c - HF get_wsd_schedule (transformers/optimization.py),
 * docs/semantics/schedulers.md#warmup-stable-decay. W = setup->warmup_steps, D = num_decay_steps
 * (required), S = num_stable_steps (default T - W - D), m = min_lr_ratio (default 0),
 * c = num_cycles (default 0.5); the curves are warmup_type (linear) and decay_type (cosine).
 *
 *     t < W:          p = t / max(1, W);  f = max(0, up(p) * (1 - m) + m)
 *     t < W + S:      f = 1
 *     t < W + S + D:  p = (t - W - S) / max(1, D);  f = max(0, down(p) * (1 - m) + m)
 *     else:           f = m
 *     up:   linear p | cosine 0.5 * (1 - cos(pi * p)) | 1-sqrt 1 - sqrt(1 - p)
 *     down: linear 1 - p | cosine 0.5 * (1 + cos(pi * c * 2 * p)) | 1-sqrt 1 - sqrt(p)
 *     lr(t) = base_lr * f(t)
 */
#include <loom/plugin.h>

#include "sched_common.h"

#include <string.h>

enum { WSD_LINEAR, WSD_COSINE, WSD_1_SQRT };

static double wsd_lift(double f, double m)
{
    return fmax(0.0, f * (1.0 - m) + m);
}

static double warmup_stable_decay_factor(const loom_scheduler *self, int64_t t)
{
    double m = self->min_lr_rate;
    if (t < self->warmup) {
        double p = (double)t / (double)(self->warmup > 1 ? self->warmup : 1);
        double up = self->warmup_shape == WSD_LINEAR   ? p
                    : self->warmup_shape == WSD_COSINE ? 0.5 * (1.0 - cos(M_PI * p))
                                                       : 1.0 - sqrt(1.0 - p);
        return wsd_lift(up, m);
    }
    if (t < self->warmup + self->stable) return 1.0;
    if (t < self->warmup + self->stable + self->decay) {
        double p = (double)(t - self->warmup - self->stable) / (double)(self->decay > 1 ? self->decay : 1);
        if (self->decay_shape == WSD_COSINE) /* sched_cosine lifts and clamps the same way */
            return sched_cosine(self->num_cycles, p, m);
        return wsd_lift(self->decay_shape == WSD_LINEAR ? 1.0 - p : 1.0 - sqrt(p), m);
    }
    return m;
}

/* HF accepts exactly these three names for each phase. */
static loom_status wsd_shape(loom_scheduler *self, const loom_config *config, const char *key, const char *what,
                             int *out)
{
    const char *name;
    loom_status st = loom_cfg_need_str(self->host, self->api, config, key, &name);
    if (st) return st;
    static const char *const names[] = {"linear", "cosine", "1-sqrt"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = i;
            return LOOM_OK;
        }
    return self->api->fail(self->host, LOOM_E_INVALID, "unknown %s type: %s, expected 'linear', 'cosine' or '1-sqrt'",
                           what, name);
}

static loom_status warmup_stable_decay_configure(loom_scheduler *self, const loom_config *config)
{
    loom_host *host = self->host;
    const loom_host_api *api = self->api;
    loom_status st;
    if ((st = loom_cfg_need_i64(host, api, config, "num_decay_steps", &self->decay)) ||
        (st = wsd_shape(self, config, "warmup_type", "warmup", &self->warmup_shape)) ||
        (st = wsd_shape(self, config, "decay_type", "decay", &self->decay_shape)) ||
        (st = loom_cfg_need_f64(host, api, config, "min_lr_ratio", &self->min_lr_rate)) ||
        (st = sched_read_num_cycles(self, config)))
        return st;
    /* HF takes any int here; a negative phase length is a typo, and loom says so. */
    if (self->decay < 0)
        return api->fail(host, LOOM_E_INVALID, "num_decay_steps = %lld: must be >= 0", (long long)self->decay);
    if (!isfinite(self->min_lr_rate))
        return api->fail(host, LOOM_E_INVALID, "min_lr_ratio = %g: must be finite", self->min_lr_rate);
    /* The Trainer always passes num_training_steps, so HF computes S from T unless S is given,
     * and then warns that S wins. A computed S may be negative: HF keeps it, so does loom. */
    self->stable = self->total - self->warmup - self->decay;
    int got = api->cfg_i64(config, "num_stable_steps", &self->stable);
    if ((st = loom_cfg_result(host, api, "num_stable_steps", got, "an integer", 0))) return st;
    if (got == LOOM_CFG_PRESENT) {
        if (self->stable < 0)
            return api->fail(host, LOOM_E_INVALID, "num_stable_steps = %lld: must be >= 0", (long long)self->stable);
        api->log(host, LOOM_LOG_WARNING,
                 "both num_training_steps (max_steps) and num_stable_steps are specified: num_stable_steps is used");
    }
    return LOOM_OK;
}

static loom_status warmup_stable_decay_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                              const loom_schedule_setup *setup, loom_scheduler **out)
{
    return sched_create(host, api, config, setup, warmup_stable_decay_factor, warmup_stable_decay_configure, out);
}

static const loom_scheduler_vtable warmup_stable_decay_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = warmup_stable_decay_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec warmup_stable_decay_params[] = {
    {.key = "num_decay_steps",
     .type = LOOM_PARAM_INT,
     .default_value = NULL,
     .doc = "steps of the decay phase (required)"},
    {.key = "num_stable_steps",
     .type = LOOM_PARAM_INT,
     .default_value = NULL,
     .doc = "steps at the full rate after the warmup (unset: total - warmup - decay)"},
    {.key = "warmup_type",
     .type = LOOM_PARAM_STRING,
     .default_value = "linear",
     .doc = "warmup curve: linear | cosine | 1-sqrt"},
    {.key = "decay_type",
     .type = LOOM_PARAM_STRING,
     .default_value = "cosine",
     .doc = "decay curve: linear | cosine | 1-sqrt"},
    {.key = "min_lr_ratio",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0",
     .doc = "start of the warmup and end of the decay, as a fraction of --learning_rate"},
    {.key = "num_cycles",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.5",
     .doc = "cosine waves of a cosine decay (0.5: decrease once)"},
    {.key = NULL},
};

static const loom_plugin_desc warmup_stable_decay_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "warmup_stable_decay",
    .version = "1.0.0",
    .summary = "HF warmup_stable_decay: warmup, a stable phase at the full rate, then a decay to min_lr_ratio",
    .vtable = &warmup_stable_decay_vtable,
    .params = warmup_stable_decay_params,
};

LOOM_PLUGIN_EXPORT(&warmup_stable_decay_desc)
