/*
 * sched_common.h - what the HF schedules of this folder share: the instance, setup validation,
 * typed config reads and the linear warmup.
 *
 * HF's schedules are LambdaLR multipliers (transformers/optimization.py): the learning rate at
 * scheduler step t is base_lr * f(t). Each plugin file supplies f; value() multiplies.
 * Header-only (static functions) because each schedule is its own MODULE.
 */
#ifndef LOOM_PLUGINS_SCHED_COMMON_H
#define LOOM_PLUGINS_SCHED_COMMON_H

#include <loom/plugin.h>
#include <loom/scheduler.h>

#include "sched_value.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef M_PI /* POSIX, not ISO C */
#define M_PI 3.14159265358979323846
#endif

struct loom_scheduler {
    loom_host *host;
    const loom_host_api *api;
    double base_lr;
    int64_t total;  /* T: optimizer steps of the run                                       */
    int64_t warmup; /* W                                                                    */
    double num_cycles, lr_end, power; /* only the keys the schedule declares are read      */
    double (*factor)(const struct loom_scheduler *self, int64_t t);
};

typedef double (*sched_factor_fn)(const loom_scheduler *self, int64_t t);
/* Reads and checks the schedule's own keys into self; NULL for a schedule without keys. */
typedef loom_status (*sched_configure_fn)(loom_scheduler *self, const loom_config *config);

static inline void sched_destroy(loom_scheduler *self)
{
    free(self);
}

/* Check the setup, fill a new instance and let `configure` read the schedule's own keys. */
static inline loom_status sched_create(loom_host *host, const loom_host_api *api,
                                       const loom_config *config,
                                       const loom_schedule_setup *setup, sched_factor_fn factor,
                                       sched_configure_fn configure, loom_scheduler **out)
{
    if (!out)
        return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    if (!setup || !LOOM_HAS_FIELD(setup, loom_schedule_setup, warmup_steps))
        return api->fail(host, LOOM_E_ABI, "schedule setup missing or too small");
    if (!(isfinite(setup->base_lr) && setup->base_lr >= 0))
        return api->fail(host, LOOM_E_INVALID, "learning rate %g: must be finite and >= 0",
                         setup->base_lr);
    if (setup->total_steps < 0)
        return api->fail(host, LOOM_E_INVALID, "total_steps = %lld: must be >= 0",
                         (long long)setup->total_steps);
    if (setup->warmup_steps < 0)
        return api->fail(host, LOOM_E_INVALID, "warmup_steps = %lld: must be >= 0",
                         (long long)setup->warmup_steps);
    loom_scheduler *self = calloc(1, sizeof *self);
    if (!self)
        return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    self->base_lr = setup->base_lr;
    self->total = setup->total_steps;
    self->warmup = setup->warmup_steps;
    self->factor = factor;
    loom_status st = configure ? configure(self, config) : LOOM_OK;
    if (st) {
        sched_destroy(self);
        return st;
    }
    *out = self;
    return LOOM_OK;
}

/* True while t is in the warmup; *f is then t / max(1, W), HF's linear ramp from 0. */
static inline int sched_warmup(const loom_scheduler *self, int64_t t, double *f)
{
    if (t >= self->warmup)
        return 0;
    *f = (double)t / (double)(self->warmup > 1 ? self->warmup : 1);
    return 1;
}

/* max(1, T - W) as a double: the decay length HF divides by. */
static inline double sched_decay_steps(const loom_scheduler *self)
{
    int64_t d = self->total - self->warmup;
    return (double)(d > 1 ? d : 1);
}

static inline loom_status sched_value(const loom_scheduler *self, int64_t t,
                                      loom_schedule_value *out)
{
    if (!self || !out)
        return LOOM_E_INVALID;
    loom_status st = sched_check_value(self->host, self->api, t, out);
    if (st != LOOM_OK) return st;
    out->lr = self->base_lr * self->factor(self, t);
    out->momentum = NAN;
    return LOOM_OK;
}

#endif
