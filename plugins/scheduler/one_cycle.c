/*
 * one_cycle.c - DeepSpeed OneCycle (deepspeed/runtime/lr_schedules.py), docs/semantics/schedulers.md#one-cycle, with
 * DeepSpeed HEAD's formulas: the cycle position uses i + 1 and the post-cycle decay divides.
 * Keys are DeepSpeed's "scheduler.params" names. i = t (see ds_common.h for the mapping and
 * DeepSpeed's own one-step lag). S1 = cycle_first_step_size, S2 = cycle_second_step_size
 * (default S1), S = S1 + S2, r = S1 / S, all as doubles like DeepSpeed's float(...):
 *
 *     t < S (the cycle):
 *         b = t + 1; cycle = floor(1 + b / S); x = 1 + b / S - cycle
 *         scale = x <= r ? x / r : (x - 1) / (r - 1)
 *         lr = cycle_min_lr + (cycle_max_lr - cycle_min_lr) * scale
 *         momentum = cycle_max_mom - (cycle_max_mom - cycle_min_mom) * scale
 *     t >= S (the decay): d = t - S + 1, interval = d / decay_step_size
 *         lr = cycle_min_lr / (1 + decay_lr_rate * interval)
 *              (just cycle_min_lr when decay_step_size == 0 or decay_lr_rate == 0)
 *         momentum = cycle_max_mom * (1 + decay_mom_rate * interval)
 *              (just cycle_max_mom when decay_step_size == 0 or decay_mom_rate == 0)
 *     cycle_momentum false: momentum = NaN (the optimizer keeps its own beta1).
 *
 * So the lr rises from cycle_min_lr to cycle_max_lr at t = S1 - 1, falls back to cycle_min_lr
 * at t = S - 1, then decays. v0.3.10 differs: it used i for the cycle and multiplied in the
 * decay, so its lr GREW after the cycle (and divided by zero when decay_step_size == 0); loom
 * does not reproduce that bug. Note that the momentum decay multiplies in both versions: a
 * positive decay_mom_rate makes beta1 grow past cycle_max_mom (DeepSpeed's formula, kept).
 *
 * Momentum: value->momentum becomes the optimizer's beta1 for the step. DeepSpeed also writes
 * beta2 = 0.99 into every group (betas = (mom, 0.99)), silently replacing the user's beta2;
 * loom does NOT: beta2 stays what the optimizer was configured with.
 *
 * cycle_first_stair_count / cycle_second_stair_count are accepted (so DeepSpeed configs load)
 * and ignored: DeepSpeed v0.3.10 and its releases store them but never read them, so the
 * schedule is continuous whatever they say, and loom gives the same curve. (Very recent
 * DeepSpeed sources have started to quantise by them; loom follows the released behaviour.)
 *
 * Refused at create(), where DeepSpeed would divide by zero or accept nonsense: a missing
 * cycle_min_lr / cycle_max_lr (DeepSpeed: required arguments), negative or non-finite lrs,
 * momenta or rates, cycle_max_lr < cycle_min_lr, cycle_max_mom < cycle_min_mom, step sizes
 * < 1, negative stair counts or decay_step_size.
 */
#include <loom/plugin.h>

#include "ds_common.h"

static void one_cycle_eval(const loom_scheduler *self, int64_t t, double *lr, double *momentum)
{
    double total = self->first_size + self->second_size;
    double i = (double)t;
    if (i < total) {
        double ratio = self->first_size / total;
        double b = i + 1.0;
        double cycle = floor(1.0 + b / total);
        double x = 1.0 + b / total - cycle;
        double scale = x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
        *lr = self->cycle_min_lr + (self->cycle_max_lr - self->cycle_min_lr) * scale;
        *momentum = self->cycle_momentum
                        ? self->max_mom - (self->max_mom - self->min_mom) * scale
                        : NAN;
        return;
    }
    double interval = 0.0;
    if (self->decay_step_size != 0)
        interval = (i - total + 1.0) / (double)self->decay_step_size;
    *lr = self->cycle_min_lr;
    if (self->decay_step_size != 0 && self->decay_lr_rate != 0.0)
        *lr = self->cycle_min_lr / (1.0 + self->decay_lr_rate * interval);
    if (!self->cycle_momentum) {
        *momentum = NAN;
        return;
    }
    *momentum = self->max_mom;
    if (self->decay_step_size != 0 && self->decay_mom_rate != 0.0)
        *momentum = self->max_mom * (1.0 + self->decay_mom_rate * interval);
}

static loom_status one_cycle_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st;
    int64_t first = 0, second = 0, stairs = 0;
    if ((st = ds_read_f64(self, config, "cycle_min_lr", 0.0, &self->cycle_min_lr)) ||
        (st = ds_read_f64(self, config, "cycle_max_lr", 0.0, &self->cycle_max_lr)) ||
        (st = ds_check_order(self, "cycle_min_lr", self->cycle_min_lr, "cycle_max_lr",
                             self->cycle_max_lr)) ||
        (st = ds_read_f64(self, config, "decay_lr_rate", 0.0, &self->decay_lr_rate)) ||
        (st = ds_read_i64(self, config, "cycle_first_step_size", 1, &first)))
        return st;
    second = first; /* DeepSpeed: None -> cycle_first_step_size */
    if (self->api->cfg_i64(config, "cycle_second_step_size", &second) != LOOM_CFG_ABSENT &&
        (st = ds_read_i64(self, config, "cycle_second_step_size", 1, &second)))
        return st;
    if ((st = ds_read_i64(self, config, "cycle_first_stair_count", 0, &stairs)))
        return st;
    if (self->api->cfg_i64(config, "cycle_second_stair_count", &stairs) != LOOM_CFG_ABSENT &&
        (st = ds_read_i64(self, config, "cycle_second_stair_count", 0, &stairs)))
        return st;
    if ((st = ds_read_i64(self, config, "decay_step_size", 0, &self->decay_step_size)) ||
        (st = ds_read_bool(self, config, "cycle_momentum", &self->cycle_momentum)) ||
        (st = ds_read_f64(self, config, "cycle_min_mom", 0.0, &self->min_mom)) ||
        (st = ds_read_f64(self, config, "cycle_max_mom", 0.0, &self->max_mom)) ||
        (st = ds_check_order(self, "cycle_min_mom", self->min_mom, "cycle_max_mom",
                             self->max_mom)) ||
        (st = ds_read_f64(self, config, "decay_mom_rate", 0.0, &self->decay_mom_rate)))
        return st;
    self->first_size = (double)first;
    self->second_size = (double)second;
    return LOOM_OK;
}

static loom_status one_cycle_create(loom_host *host, const loom_host_api *api,
                                    const loom_config *config, const loom_schedule_setup *setup,
                                    loom_scheduler **out)
{
    return ds_create(host, api, config, setup, one_cycle_eval, one_cycle_configure, out);
}

static const loom_scheduler_vtable one_cycle_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = one_cycle_create,
    .destroy = ds_destroy,
    .value = ds_value,
};

static const loom_param_spec one_cycle_params[] = {
    {.key = "cycle_min_lr", .type = LOOM_PARAM_FLOAT, .default_value = NULL,
     .doc = "required: lr at the start and end of the cycle"},
    {.key = "cycle_max_lr", .type = LOOM_PARAM_FLOAT, .default_value = NULL,
     .doc = "required: lr at the peak of the cycle (>= cycle_min_lr)"},
    {.key = "decay_lr_rate", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "after the cycle: lr = cycle_min_lr / (1 + rate * steps / decay_step_size)"},
    {.key = "cycle_first_step_size", .type = LOOM_PARAM_INT, .default_value = "2000",
     .doc = "steps of the rising half of the cycle"},
    {.key = "cycle_second_step_size", .type = LOOM_PARAM_INT, .default_value = NULL,
     .doc = "steps of the falling half (default: cycle_first_step_size)"},
    {.key = "cycle_first_stair_count", .type = LOOM_PARAM_INT, .default_value = "0",
     .doc = "accepted and ignored, as in DeepSpeed releases"},
    {.key = "cycle_second_stair_count", .type = LOOM_PARAM_INT, .default_value = NULL,
     .doc = "accepted and ignored, as in DeepSpeed releases"},
    {.key = "decay_step_size", .type = LOOM_PARAM_INT, .default_value = "0",
     .doc = "steps per decay interval after the cycle (0: no decay)"},
    {.key = "cycle_momentum", .type = LOOM_PARAM_BOOL, .default_value = "true",
     .doc = "cycle beta1 inversely to the lr (beta2 is left alone, unlike DeepSpeed)"},
    {.key = "cycle_min_mom", .type = LOOM_PARAM_FLOAT, .default_value = "0.8",
     .doc = "beta1 at the lr peak"},
    {.key = "cycle_max_mom", .type = LOOM_PARAM_FLOAT, .default_value = "0.9",
     .doc = "beta1 at the cycle ends (>= cycle_min_mom)"},
    {.key = "decay_mom_rate", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "after the cycle: beta1 = cycle_max_mom * (1 + rate * steps / decay_step_size)"},
    {.key = NULL},
};

static const loom_plugin_desc one_cycle_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "one_cycle",
    .version = "1.0.0",
    .summary = "DeepSpeed OneCycle (HEAD formulas): one triangular lr/momentum cycle, then decay",
    .vtable = &one_cycle_vtable,
    .params = one_cycle_params,
};

LOOM_PLUGIN_EXPORT(&one_cycle_desc)
