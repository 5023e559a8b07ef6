/*
 * polynomial.c - HF get_polynomial_decay_schedule_with_warmup (transformers/optimization.py),
 * docs/semantics/schedulers.md#polynomial. W = setup->warmup_steps, T = setup->total_steps, lr_init = base_lr
 * (HF: optimizer.defaults["lr"]), which must be > lr_end as in HF.
 *
 *     t < W:   f(t) = t / max(1, W)
 *     t > T:   f(t) = lr_end / lr_init
 *     else:    f(t) = ((lr_init - lr_end) * (1 - (t - W) / (T - W)) ^ power + lr_end) / lr_init
 *     lr(t) = base_lr * f(t)
 * One deviation: when T == W, HF divides 0 by 0 at t == T (ZeroDivisionError); here the
 * decay length is max(1, T - W), as in HF's other schedules, which gives f(T) = 1.
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double polynomial_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f))
        return f;
    double lr_init = self->base_lr;
    if (t > self->total)
        return self->lr_end / lr_init;
    double remaining = 1.0 - (double)(t - self->warmup) / sched_decay_steps(self);
    return ((lr_init - self->lr_end) * pow(remaining, self->power) + self->lr_end) / lr_init;
}

static loom_status polynomial_configure(loom_scheduler *self, const loom_config *config)
{
    loom_host *host = self->host;
    const loom_host_api *api = self->api;
    loom_status st;
    if ((st = loom_cfg_need_f64(host, api, config, "lr_end", &self->lr_end)) ||
        (st = loom_cfg_need_f64(host, api, config, "power", &self->power)))
        return st;
    if (!(isfinite(self->lr_end) && self->lr_end >= 0))
        return api->fail(host, LOOM_E_INVALID, "lr_end = %g: must be finite and >= 0",
                         self->lr_end);
    if (!(self->base_lr > self->lr_end))
        return api->fail(host, LOOM_E_INVALID, "lr_end (%g) must be smaller than initial lr (%g)",
                         self->lr_end, self->base_lr);
    /* A negative power would send the rate to infinity at the last step. */
    if (!(isfinite(self->power) && self->power >= 0))
        return api->fail(host, LOOM_E_INVALID, "power = %g: must be finite and >= 0",
                         self->power);
    return LOOM_OK;
}

static loom_status polynomial_create(loom_host *host, const loom_host_api *api,
                                     const loom_config *config, const loom_schedule_setup *setup,
                                     loom_scheduler **out)
{
    return sched_create(host, api, config, setup, polynomial_factor, polynomial_configure, out);
}

static const loom_scheduler_vtable polynomial_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = polynomial_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec polynomial_params[] = {
    {.key = "lr_end", .type = LOOM_PARAM_FLOAT, .default_value = "1e-7",
     .doc = "learning rate at and after the last step"},
    {.key = "power", .type = LOOM_PARAM_FLOAT, .default_value = "1.0",
     .doc = "exponent of the decay (1: linear)"},
    {.key = NULL},
};

static const loom_plugin_desc polynomial_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "polynomial",
    .version = "1.0.0",
    .summary = "HF polynomial: linear warmup, then polynomial decay from the base lr to lr_end",
    .vtable = &polynomial_vtable,
    .params = polynomial_params,
};

LOOM_PLUGIN_EXPORT(&polynomial_desc)
