/*
 * inverse_sqrt.c - HF get_inverse_sqrt_schedule (transformers/optimization.py),
 * docs/semantics/schedulers.md#inverse-sqrt. W = setup->warmup_steps; the time scale s is W, or
 * 10000 without a warmup (HF's `num_warmup_steps or 10_000`).
 *
 *     t < W:  f(t) = t / max(1, W)
 *     else:   f(t) = 1 / sqrt((t + s - W) / s)
 *     lr(t) = base_lr * f(t)
 * No keys: HF's get_scheduler calls it with num_warmup_steps only and drops
 * lr_scheduler_kwargs, so its timescale argument cannot be set from the Trainer.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double inverse_sqrt_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f)) return f;
    double timescale = self->warmup ? (double)self->warmup : 10000.0;
    return 1.0 / sqrt(((double)t + (timescale - (double)self->warmup)) / timescale);
}

static loom_status inverse_sqrt_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                       const loom_schedule_setup *setup, loom_scheduler **out)
{
    return sched_create(host, api, config, setup, inverse_sqrt_factor, NULL, out);
}

static const loom_scheduler_vtable inverse_sqrt_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = inverse_sqrt_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec inverse_sqrt_params[] = {
    {.key = NULL},
};

static const loom_plugin_desc inverse_sqrt_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "inverse_sqrt",
    .version = "1.0.0",
    .summary = "HF inverse_sqrt: linear warmup from 0, then base_lr / sqrt(t / W)",
    .vtable = &inverse_sqrt_vtable,
    .params = inverse_sqrt_params,
};

LOOM_PLUGIN_EXPORT(&inverse_sqrt_desc)
