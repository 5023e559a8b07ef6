/*
 * cosine_with_restarts.c - HF get_cosine_with_hard_restarts_schedule_with_warmup
 * (transformers/optimization.py), docs/semantics/schedulers.md#cosine-with-restarts. W = setup->warmup_steps,
 * T = setup->total_steps, c = num_cycles (default 1).
 *
 *     t < W:  f(t) = t / max(1, W)
 *     else:   p = (t - W) / max(1, T - W)
 *             f(t) = p >= 1 ? 0 : max(0, 0.5 * (1 + cos(pi * ((c * p) % 1))))
 *     lr(t) = base_lr * f(t)
 * % is Python's float modulo (result >= 0 for a positive divisor): x - floor(x).
 */
#include <loom/plugin.h>

#include "sched_common.h"

static double cosine_with_restarts_factor(const loom_scheduler *self, int64_t t)
{
    double f;
    if (sched_warmup(self, t, &f))
        return f;
    double p = (double)(t - self->warmup) / sched_decay_steps(self);
    if (p >= 1.0)
        return 0.0;
    double x = self->num_cycles * p;
    return fmax(0.0, 0.5 * (1.0 + cos(M_PI * (x - floor(x)))));
}

static loom_status cosine_with_restarts_create(loom_host *host, const loom_host_api *api,
                                               const loom_config *config, const loom_schedule_setup *setup,
                                               loom_scheduler **out)
{
    return sched_create(host, api, config, setup, cosine_with_restarts_factor, sched_read_num_cycles, out);
}

static const loom_scheduler_vtable cosine_with_restarts_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = cosine_with_restarts_create,
    .destroy = sched_destroy,
    .value = sched_value,
};

static const loom_param_spec cosine_with_restarts_params[] = {
    {.key = "num_cycles", .type = LOOM_PARAM_FLOAT, .default_value = "1",
     .doc = "number of hard restarts: cosine decays from 1 to 0 after the warmup"},
    {.key = NULL},
};

static const loom_plugin_desc cosine_with_restarts_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "cosine_with_restarts",
    .version = "1.0.0",
    .summary = "HF cosine_with_restarts: linear warmup, then num_cycles hard-restarted cosine decays",
    .vtable = &cosine_with_restarts_vtable,
    .params = cosine_with_restarts_params,
};

LOOM_PLUGIN_EXPORT(&cosine_with_restarts_desc)
