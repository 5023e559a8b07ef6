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
    double min_lr_rate;               /* cosine*_with_min_lr, warmup_stable_decay (min_lr_ratio) */
    double warmup_lr_rate;            /* cosine_warmup_with_min_lr; NaN: HF's None            */
    int64_t stable, decay;            /* warmup_stable_decay: the phases after the warmup     */
    int warmup_shape, decay_shape;    /* warmup_stable_decay: its WSD_* curve of each phase     */
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

/* HF's cosine decay at progress p, lifted so that it ends at min_lr_rate (0 for plain cosine,
 * where it is exactly the old expression: x * (1 - 0) + 0 == x). */
static inline double sched_cosine(double num_cycles, double p, double min_lr_rate)
{
    double f = 0.5 * (1.0 + cos(M_PI * num_cycles * 2.0 * p));
    return fmax(0.0, f * (1.0 - min_lr_rate) + min_lr_rate);
}

/* The num_cycles key of the cosine schedules: it must be a finite number. */
static inline loom_status sched_read_num_cycles(loom_scheduler *self, const loom_config *config)
{
    loom_status st = loom_cfg_need_f64(self->host, self->api, config, "num_cycles", &self->num_cycles);
    if (!st && !isfinite(self->num_cycles))
        st = self->api->fail(self->host, LOOM_E_INVALID, "num_cycles = %g: must be finite", self->num_cycles);
    return st;
}

/* The keys sched_read_min_lr_rate reads, for a plugin's loom_param_spec table. */
#define SCHED_MIN_LR_PARAMS                                                                                            \
    {.key = "min_lr",                                                                                                  \
     .type = LOOM_PARAM_FLOAT,                                                                                         \
     .default_value = NULL,                                                                                            \
     .doc = "learning rate the decay ends at (or min_lr_rate; exactly one)"},                                          \
    {                                                                                                                  \
        .key = "min_lr_rate", .type = LOOM_PARAM_FLOAT, .default_value = NULL,                                         \
        .doc = "min_lr as a fraction of --learning_rate (or min_lr; exactly one)"                                      \
    }

/* min_lr or min_lr_rate, exactly one (HF's get_cosine_with_min_lr_schedule_with_warmup):
 * min_lr becomes the rate min_lr / base_lr. docs/semantics/schedulers.md#cosine-with-min-lr */
static inline loom_status sched_read_min_lr_rate(loom_scheduler *self, const loom_config *config)
{
    loom_host *host = self->host;
    const loom_host_api *api = self->api;
    double min_lr = NAN, rate = NAN;
    int got_lr = api->cfg_f64(config, "min_lr", &min_lr), got_rate = api->cfg_f64(config, "min_lr_rate", &rate);
    loom_status st;
    if ((st = loom_cfg_result(host, api, "min_lr", got_lr, "a number", 0)) ||
        (st = loom_cfg_result(host, api, "min_lr_rate", got_rate, "a number", 0)))
        return st;
    int has_lr = got_lr == LOOM_CFG_PRESENT, has_rate = got_rate == LOOM_CFG_PRESENT;
    if (has_lr && has_rate) return api->fail(host, LOOM_E_INVALID, "only one of min_lr or min_lr_rate should be set");
    if (!has_lr && !has_rate)
        return api->fail(host, LOOM_E_INVALID,
                         "one of min_lr or min_lr_rate should be set through --lr_scheduler_kwargs");
    const char *key = has_lr ? "min_lr" : "min_lr_rate";
    double given = has_lr ? min_lr : rate;
    if (!isfinite(given)) return api->fail(host, LOOM_E_INVALID, "%s = %g: must be finite", key, given);
    if (has_lr) {
        /* HF divides by the optimizer's lr: ZeroDivisionError at 0. */
        if (!(self->base_lr > 0))
            return api->fail(host, LOOM_E_INVALID, "min_lr = %g: needs a learning rate > 0 to divide by", min_lr);
        rate = min_lr / self->base_lr;
    }
    self->min_lr_rate = rate;
    return LOOM_OK;
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
