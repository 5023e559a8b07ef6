/*
 * constant.c - HF get_constant_schedule (transformers/optimization.py), docs/semantics/schedulers.md#constant.
 *
 *     f(t) = 1,   lr(t) = base_lr * f(t)
 *
 * Like HF, the warmup of the setup is ignored: "constant_with_warmup" is the schedule that
 * uses it.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double constant_factor(const loom_scheduler *self, int64_t t)
{
    (void)self;
    (void)t;
    return 1.0;
}

static loom_status constant_create(loom_host *host, const loom_host_api *api,
                                   const loom_config *config, const loom_schedule_setup *setup,
                                   loom_scheduler **out)
{
    return sched_create(host, api, config, setup, constant_factor, NULL, out);
}

static const loom_scheduler_vtable constant_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = constant_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec constant_params[] = {
    {.key = NULL},
};

static const loom_plugin_desc constant_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "constant",
    .version = "1.0.0",
    .summary = "HF constant: the learning rate never changes",
    .vtable = &constant_vtable,
    .params = constant_params,
};

LOOM_PLUGIN_EXPORT(&constant_desc)
