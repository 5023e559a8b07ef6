/*
 * cosine_warmup_with_min_lr.c - HF get_cosine_with_min_lr_schedule_with_warmup_lr_rate
 * (transformers/optimization.py), docs/semantics/schedulers.md#cosine-warmup-with-min-lr.
 * W = setup->warmup_steps, T = setup->total_steps, c = num_cycles (default 0.5), r = min_lr_rate
 * (or min_lr / base_lr; exactly one), w = warmup_lr_rate (optional).
 *
 *     t < W:  f(t) = w unset ? (t + 1) / max(1, W) : w + (1 - w) * t / max(1, W - 1)
 *     else:   p = (t - W + 1) / max(1, T - W)
 *             f(t) = max(0, 0.5 * (1 + cos(pi * c * 2 * p)) * (1 - r) + r)
 *     lr(t) = base_lr * f(t)
 * Unlike cosine_with_min_lr, the whole schedule is one step ahead: the warmup never runs at 0
 * and the decay reaches its minimum at t = T - 1.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double cosine_warmup_with_min_lr_factor(const loom_scheduler *self, int64_t t)
{
    double W = (double)self->warmup;
    if (t < self->warmup) {
        if (isnan(self->warmup_lr_rate)) return ((double)t + 1.0) / fmax(1.0, W);
        return self->warmup_lr_rate + (1.0 - self->warmup_lr_rate) * (double)t / fmax(1.0, W - 1.0);
    }
    double p = ((double)t - W + 1.0) / fmax(1.0, (double)self->total - W);
    return sched_cosine(self->num_cycles, p, self->min_lr_rate);
}

static loom_status cosine_warmup_with_min_lr_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st = sched_read_num_cycles(self, config);
    if (st || (st = sched_read_min_lr_rate(self, config))) return st;
    self->warmup_lr_rate = NAN; /* HF's None: the (t + 1) / W ramp */
    int got = self->api->cfg_f64(config, "warmup_lr_rate", &self->warmup_lr_rate);
    if ((st = loom_cfg_result(self->host, self->api, "warmup_lr_rate", got, "a number", 0))) return st;
    if (got == LOOM_CFG_PRESENT && !isfinite(self->warmup_lr_rate))
        return self->api->fail(self->host, LOOM_E_INVALID, "warmup_lr_rate = %g: must be finite", self->warmup_lr_rate);
    return LOOM_OK;
}

static loom_status cosine_warmup_with_min_lr_create(loom_host *host, const loom_host_api *api,
                                                    const loom_config *config, const loom_schedule_setup *setup,
                                                    loom_scheduler **out)
{
    return sched_create(host, api, config, setup, cosine_warmup_with_min_lr_factor, cosine_warmup_with_min_lr_configure,
                        out);
}

static const loom_scheduler_vtable cosine_warmup_with_min_lr_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = cosine_warmup_with_min_lr_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec cosine_warmup_with_min_lr_params[] = {
    {.key = "num_cycles",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.5",
     .doc = "number of cosine waves after the warmup (0.5: decrease once to the minimum)"},
    SCHED_MIN_LR_PARAMS,
    {.key = "warmup_lr_rate",
     .type = LOOM_PARAM_FLOAT,
     .default_value = NULL,
     .doc = "first warmup multiplier, rising linearly to 1 at step W - 1 (unset: (t + 1) / W)"},
    {.key = NULL},
};

static const loom_plugin_desc cosine_warmup_with_min_lr_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "cosine_warmup_with_min_lr",
    .version = "1.0.0",
    .summary = "HF cosine_warmup_with_min_lr: warmup from (t + 1) / W, then cosine decay to min_lr",
    .vtable = &cosine_warmup_with_min_lr_vtable,
    .params = cosine_warmup_with_min_lr_params,
};

LOOM_PLUGIN_EXPORT(&cosine_warmup_with_min_lr_desc)
