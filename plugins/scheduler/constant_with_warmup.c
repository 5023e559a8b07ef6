/*
 * constant_with_warmup.c - HF get_constant_schedule_with_warmup (transformers/optimization.py),
 * docs/semantics/schedulers.md#constant-with-warmup. W = setup->warmup_steps.
 *
 *     f(t) = t < W ? t / max(1, W) : 1,   lr(t) = base_lr * f(t)
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double constant_with_warmup_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    return sched_warmup(self, t, &f) ? f : 1.0;
}

static loom_status constant_with_warmup_create(loom_host *host, const loom_host_api *api,
                                               const loom_config *config, const loom_schedule_setup *setup,
                                               loom_scheduler **out)
{
    return sched_create(host, api, config, setup, constant_with_warmup_factor, NULL, out);
}

static const loom_scheduler_vtable constant_with_warmup_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = constant_with_warmup_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec constant_with_warmup_params[] = {
    {.key = NULL},
};

static const loom_plugin_desc constant_with_warmup_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "constant_with_warmup",
    .version = "1.0.0",
    .summary = "HF constant_with_warmup: linear warmup from 0, then constant",
    .vtable = &constant_with_warmup_vtable,
    .params = constant_with_warmup_params,
};

LOOM_PLUGIN_EXPORT(&constant_with_warmup_desc)
