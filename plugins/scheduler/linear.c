/*
 * linear.c - HF get_linear_schedule_with_warmup (transformers/optimization.py),
 * docs/semantics/schedulers.md#linear. W = setup->warmup_steps, T = setup->total_steps.
 *
 *     f(t) = t < W ? t / max(1, W) : max(0, (T - t) / max(1, T - W)),   lr(t) = base_lr * f(t)
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double linear_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f))
        return f;
    return fmax(0.0, (double)(self->total - t) / sched_decay_steps(self));
}

static loom_status linear_create(loom_host *host, const loom_host_api *api,
                                 const loom_config *config, const loom_schedule_setup *setup,
                                 loom_scheduler **out)
{
    return sched_create(host, api, config, setup, linear_factor, NULL, out);
}

static const loom_scheduler_vtable linear_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = linear_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec linear_params[] = {
    {.key = NULL},
};

static const loom_plugin_desc linear_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "linear",
    .version = "1.0.0",
    .summary = "HF linear: linear warmup from 0, then linear decay to 0 at the last step",
    .vtable = &linear_vtable,
    .params = linear_params,
};

LOOM_PLUGIN_EXPORT(&linear_desc)
