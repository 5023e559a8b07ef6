/*
 * warmup_lr.c - DeepSpeed WarmupLR (deepspeed/runtime/lr_schedules.py), docs/semantics/schedulers.md#warmup-lr.
 * Keys are DeepSpeed's "scheduler.params" names. i = t (see ds_common.h for the mapping and
 * DeepSpeed's own one-step lag); N = max(2, warmup_num_steps) as DeepSpeed HEAD clamps it
 * (v0.3.10 divided by log(1) = 0 when N == 1).
 *
 *     gamma(t) = t < N ? (warmup_type == "log" ? log(t + 1) / log(N) : t / N) : 1
 *     lr(t)    = warmup_min_lr + (warmup_max_lr - warmup_min_lr) * gamma(t),  momentum = NaN
 *
 * Differences from DeepSpeed, all refusals at create(): warmup_num_steps < 0 (0, which HF's
 * mapping of a run without warmup passes, is clamped to 2 like 1), warmup_max_lr < warmup_min_lr, a negative or
 * non-finite lr, and an unknown warmup_type (HEAD warns and falls back to "log"). warmup_max_lr defaults to 0.001 as in
 * v0.3.10; HEAD's default None (the optimizer's lr) is the ds_config translator's business.
 */
#include <loom/plugin.h>

#include "ds_common.h"

static void warmup_lr_eval(const loom_scheduler *self, int64_t t, double *lr, double *momentum)
{
    double gamma;
    if (!ds_warmup_gamma(self, t, &gamma))
        gamma = 1.0;
    *lr = self->min_lr + (self->max_lr - self->min_lr) * gamma;
    *momentum = NAN;
}

static loom_status warmup_lr_create(loom_host *host, const loom_host_api *api,
                                    const loom_config *config, const loom_schedule_setup *setup,
                                    loom_scheduler **out)
{
    return ds_create(host, api, config, setup, warmup_lr_eval, ds_warmup_configure, out);
}

static const loom_scheduler_vtable warmup_lr_vtable = DS_SCHEDULER_VTABLE(warmup_lr_create);

static const loom_param_spec warmup_lr_params[] = {
    {.key = "warmup_min_lr", .type = LOOM_PARAM_FLOAT, .default_value = "0.0", .doc = "learning rate at step 0"},
    {.key = "warmup_max_lr",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.001",
     .doc = "learning rate from step warmup_num_steps on"},
    DS_WARMUP_SHAPE_SPECS,
    {.key = NULL},
};

static const loom_plugin_desc warmup_lr_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "warmup_lr",
    .version = "1.0.0",
    .summary = "DeepSpeed WarmupLR: log or linear warmup from warmup_min_lr to warmup_max_lr, "
               "then constant",
    .vtable = &warmup_lr_vtable,
    .params = warmup_lr_params,
};

LOOM_PLUGIN_EXPORT(&warmup_lr_desc)
