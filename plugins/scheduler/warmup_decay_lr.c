/*
 * warmup_decay_lr.c - DeepSpeed WarmupDecayLR (deepspeed/runtime/lr_schedules.py),
 * docs/semantics/schedulers.md#warmup-decay-lr: WarmupLR's warmup, then a linear decay to 0 at total_num_steps. Keys
 * are DeepSpeed's "scheduler.params" names. i = t (see ds_common.h for the mapping and DeepSpeed's
 * own one-step lag); N = max(2, warmup_num_steps) as DeepSpeed HEAD clamps it.
 *
 *     t < N:   gamma(t) = warmup_type == "log" ? log(t + 1) / log(N) : t / N
 *     t >= N:  gamma(t) = max(0, (total_num_steps - t) / max(1, total_num_steps - N))
 *     lr(t) = warmup_min_lr + (warmup_max_lr - warmup_min_lr) * gamma(t),  momentum = NaN
 *
 * So the decay ends at warmup_min_lr, not 0, when warmup_min_lr > 0 (as in DeepSpeed).
 * With warmup_type "linear" and warmup_min_lr 0 this is HF's linear schedule
 * (transformers maps "linear" onto WarmupDecayLR). Refused at create(), beyond WarmupLR's
 * checks: total_num_steps missing (DeepSpeed: a required argument) or smaller than
 * warmup_num_steps (DeepSpeed only warns).
 */
#include <loom/plugin.h>

#include "ds_common.h"

static void warmup_decay_lr_eval(const loom_scheduler *self, int64_t t, double *lr,
                                 double *momentum)
{
    double gamma;
    if (!ds_warmup_gamma(self, t, &gamma)) {
        int64_t decay = self->total_steps - self->warmup_steps;
        gamma = fmax(0.0, (double)(self->total_steps - t) / (double)(decay > 1 ? decay : 1));
    }
    *lr = self->min_lr + (self->max_lr - self->min_lr) * gamma;
    *momentum = NAN;
}

static loom_status warmup_decay_lr_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st;
    int64_t n = 0;
    if ((st = ds_warmup_configure(self, config)) ||
        (st = ds_read_i64(self, config, "total_num_steps", 0, &self->total_steps)))
        return st;
    /* Compared with the value given, before the clamp to 2. */
    self->api->cfg_i64(config, "warmup_num_steps", &n);
    if (self->total_steps < n)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "total_num_steps (%lld) must be >= warmup_num_steps (%lld)",
                               (long long)self->total_steps, (long long)n);
    return LOOM_OK;
}

static loom_status warmup_decay_lr_create(loom_host *host, const loom_host_api *api,
                                          const loom_config *config,
                                          const loom_schedule_setup *setup, loom_scheduler **out)
{
    return ds_create(host, api, config, setup, warmup_decay_lr_eval, warmup_decay_lr_configure,
                     out);
}

static const loom_scheduler_vtable warmup_decay_lr_vtable = DS_SCHEDULER_VTABLE(warmup_decay_lr_create);

static const loom_param_spec warmup_decay_lr_params[] = {
    {.key = "total_num_steps",
     .type = LOOM_PARAM_INT,
     .default_value = NULL,
     .doc = "required: the step at which the lr reaches warmup_min_lr (>= warmup_num_steps)"},
    {.key = "warmup_min_lr",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.0",
     .doc = "learning rate at step 0 and from total_num_steps on"},
    {.key = "warmup_max_lr",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.001",
     .doc = "learning rate at step warmup_num_steps"},
    DS_WARMUP_SHAPE_SPECS,
    {.key = NULL},
};

static const loom_plugin_desc warmup_decay_lr_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "warmup_decay_lr",
    .version = "1.0.0",
    .summary = "DeepSpeed WarmupDecayLR: WarmupLR's warmup, then linear decay to warmup_min_lr "
               "at total_num_steps",
    .vtable = &warmup_decay_lr_vtable,
    .params = warmup_decay_lr_params,
};

LOOM_PLUGIN_EXPORT(&warmup_decay_lr_desc)
