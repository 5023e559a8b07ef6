/*
 * lr_range_test.c - DeepSpeed LRRangeTest (deepspeed/runtime/lr_schedules.py),
 * docs/semantics/schedulers.md#lr-range-test, with DeepSpeed HEAD's (i + 1). Keys are DeepSpeed's "scheduler.params"
 * names. i = t (see ds_common.h for the mapping and DeepSpeed's own one-step lag):
 *
 *     interval(t) = lr_range_test_staircase ? floor((t + 1) / lr_range_test_step_size)
 *                                           : (t + 1) / lr_range_test_step_size
 *     lr(t) = lr_range_test_min_lr * (1 + lr_range_test_step_rate * interval(t)),  momentum = NaN
 *
 * v0.3.10 used i instead of i + 1 (lr(0) = min_lr); HEAD's i + 1 is taken because it is the
 * maintained behaviour, and with DeepSpeed's one-step lag it is what a HEAD run applies. The lr
 * grows without bound: that is the point of a range test. Refused at create():
 * lr_range_test_step_size < 1 (DeepSpeed divides by it), a negative or non-finite min lr or
 * step rate.
 */
#include <loom/plugin.h>

#include "ds_common.h"

static void lr_range_test_eval(const loom_scheduler *self, int64_t t, double *lr,
                               double *momentum)
{
    double interval = (double)(t + 1) / (double)self->range_step_size;
    if (self->staircase)
        interval = floor(interval);
    *lr = self->range_min_lr * (1.0 + self->range_step_rate * interval);
    *momentum = NAN;
}

static loom_status lr_range_test_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st;
    if ((st = ds_read_f64(self, config, "lr_range_test_min_lr", 0.0, &self->range_min_lr)) ||
        (st = ds_read_i64(self, config, "lr_range_test_step_size", 1, &self->range_step_size)) ||
        (st = ds_read_f64(self, config, "lr_range_test_step_rate", 0.0,
                          &self->range_step_rate)) ||
        (st = ds_read_bool(self, config, "lr_range_test_staircase", &self->staircase)))
        return st;
    return LOOM_OK;
}

static loom_status lr_range_test_create(loom_host *host, const loom_host_api *api,
                                        const loom_config *config,
                                        const loom_schedule_setup *setup, loom_scheduler **out)
{
    return ds_create(host, api, config, setup, lr_range_test_eval, lr_range_test_configure, out);
}

static const loom_scheduler_vtable lr_range_test_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = lr_range_test_create,
    .destroy = ds_destroy,
    .value = ds_value,
};

static const loom_param_spec lr_range_test_params[] = {
    {.key = "lr_range_test_min_lr", .type = LOOM_PARAM_FLOAT, .default_value = "1e-3",
     .doc = "lr the test starts from"},
    {.key = "lr_range_test_step_size", .type = LOOM_PARAM_INT, .default_value = "2000",
     .doc = "steps per interval (>= 1)"},
    {.key = "lr_range_test_step_rate", .type = LOOM_PARAM_FLOAT, .default_value = "1.0",
     .doc = "lr grows by min_lr * rate per interval"},
    {.key = "lr_range_test_staircase", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "grow in whole intervals (floor) instead of continuously"},
    {.key = NULL},
};

static const loom_plugin_desc lr_range_test_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "lr_range_test",
    .version = "1.0.0",
    .summary = "DeepSpeed LRRangeTest: lr grows linearly (or in stairs) from lr_range_test_min_lr",
    .vtable = &lr_range_test_vtable,
    .params = lr_range_test_params,
};

LOOM_PLUGIN_EXPORT(&lr_range_test_desc)
