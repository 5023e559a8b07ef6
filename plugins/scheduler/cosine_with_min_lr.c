/*
 * cosine_with_min_lr.c - HF get_cosine_with_min_lr_schedule_with_warmup
 * (transformers/optimization.py), docs/semantics/schedulers.md#cosine-with-min-lr.
 * W = setup->warmup_steps, T = setup->total_steps, c = num_cycles (default 0.5), r = min_lr_rate
 * (or min_lr / base_lr; exactly one of the two must be given).
 *
 *     t < W:  f(t) = t / max(1, W)
 *     else:   p = (t - W) / max(1, T - W)
 *             f(t) = max(0, 0.5 * (1 + cos(pi * c * 2 * p)) * (1 - r) + r)
 *     lr(t) = base_lr * f(t)
 * As in HF's cosine, nothing clamps p past T.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double cosine_with_min_lr_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f)) return f;
    return sched_cosine(self->num_cycles, (double)(t - self->warmup) / sched_decay_steps(self), self->min_lr_rate);
}

static loom_status cosine_with_min_lr_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st = sched_read_num_cycles(self, config);
    return st ? st : sched_read_min_lr_rate(self, config);
}

static loom_status cosine_with_min_lr_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                             const loom_schedule_setup *setup, loom_scheduler **out)
{
    return sched_create(host, api, config, setup, cosine_with_min_lr_factor, cosine_with_min_lr_configure, out);
}

static const loom_scheduler_vtable cosine_with_min_lr_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = cosine_with_min_lr_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec cosine_with_min_lr_params[] = {
    {.key = "num_cycles",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.5",
     .doc = "number of cosine waves after the warmup (0.5: decrease once to the minimum)"},
    SCHED_MIN_LR_PARAMS,
    {.key = NULL},
};

static const loom_plugin_desc cosine_with_min_lr_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "cosine_with_min_lr",
    .version = "1.0.0",
    .summary = "HF cosine_with_min_lr: linear warmup from 0, then cosine decay to min_lr",
    .vtable = &cosine_with_min_lr_vtable,
    .params = cosine_with_min_lr_params,
};

LOOM_PLUGIN_EXPORT(&cosine_with_min_lr_desc)
