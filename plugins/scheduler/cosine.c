/*
 * cosine.c - HF get_cosine_schedule_with_warmup (transformers/optimization.py),
 * docs/semantics/schedulers.md#cosine. W = setup->warmup_steps, T = setup->total_steps, c = num_cycles (default 0.5:
 * one half cosine from 1 down to 0 over T - W steps).
 *
 *     t < W:  f(t) = t / max(1, W)
 *     else:   p = (t - W) / max(1, T - W);  f(t) = max(0, 0.5 * (1 + cos(pi * c * 2 * p)))
 *     lr(t) = base_lr * f(t)
 * As in HF, nothing clamps p past T: with c = 0.5 the rate rises again after the last step.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double cosine_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f))
        return f;
    return sched_cosine(self->num_cycles, (double)(t - self->warmup) / sched_decay_steps(self), 0.0);
}

static loom_status cosine_create(loom_host *host, const loom_host_api *api,
                                 const loom_config *config, const loom_schedule_setup *setup,
                                 loom_scheduler **out)
{
    return sched_create(host, api, config, setup, cosine_factor, sched_read_num_cycles, out);
}

static const loom_scheduler_vtable cosine_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = cosine_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec cosine_params[] = {
    {.key = "num_cycles", .type = LOOM_PARAM_FLOAT, .default_value = "0.5",
     .doc = "number of cosine waves after the warmup (0.5: decrease from 1 to 0 once)"},
    {.key = NULL},
};

static const loom_plugin_desc cosine_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "cosine",
    .version = "1.0.0",
    .summary = "HF cosine: linear warmup from 0, then cosine decay",
    .vtable = &cosine_vtable,
    .params = cosine_params,
};

LOOM_PLUGIN_EXPORT(&cosine_desc)
