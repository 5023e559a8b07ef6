/*
 * ds_common.h - what the DeepSpeed schedules of this folder share (warmup_lr, warmup_decay_lr,
 * one_cycle, lr_range_test): the instance, typed and checked config reads, and value().
 *
 * DeepSpeed's schedules (deepspeed/runtime/lr_schedules.py, docs/semantics/schedulers.md#deepspeed-schedules) give the
 * learning rate itself, not a multiplier of --learning_rate: setup->base_lr is not used.
 * Their keys are DeepSpeed's parameter names, so a ds_config.json "scheduler.params" section
 * maps onto them one to one.
 *
 * Step mapping, common to the four files. DeepSpeed keeps last_batch_iteration i (-1 at
 * construction) and the engine calls scheduler.step() (i += 1, then lr = get_lr(i)) after
 * every optimizer step that fp16 did not skip. loom's t counts the same steps, and
 * value(t) = DeepSpeed's get_lr() evaluated at i = t: the formulas below are DeepSpeed's with
 * i replaced by t. Beware that DeepSpeed itself applies get_lr(i = t - 1) to optimizer step
 * t + 1 (its constructor installs the i = -1 value and step() runs after optimizer.step()),
 * so a real DeepSpeed run is one step behind these values; loom follows HF's LambdaLR
 * convention (step t + 1 uses the schedule at t), like its HF schedules.
 *
 * Header-only (static functions) because each schedule is its own MODULE.
 */
#ifndef LOOM_PLUGINS_DS_COMMON_H
#define LOOM_PLUGINS_DS_COMMON_H

#include <loom/plugin.h>
#include <loom/scheduler.h>

#include "sched_value.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct loom_scheduler {
    loom_host *host;
    const loom_host_api *api;
    /* warmup_lr, warmup_decay_lr */
    double min_lr, max_lr;
    int64_t warmup_steps; /* N, clamped to >= 2                                            */
    int log_warmup;       /* warmup_type: 1 "log", 0 "linear"                              */
    int64_t total_steps;  /* warmup_decay_lr's total_num_steps                             */
    /* one_cycle */
    double cycle_min_lr, cycle_max_lr, decay_lr_rate;
    double first_size, second_size; /* doubles, as DeepSpeed stores them (float(...))      */
    int64_t decay_step_size;
    int cycle_momentum;
    double min_mom, max_mom, decay_mom_rate;
    /* lr_range_test */
    double range_min_lr, range_step_rate;
    int64_t range_step_size;
    int staircase;
    /* the schedule: writes *lr and *momentum for scheduler step t >= 0 */
    void (*eval)(const struct loom_scheduler *self, int64_t t, double *lr, double *momentum);
};

typedef void (*ds_eval_fn)(const loom_scheduler *self, int64_t t, double *lr, double *momentum);
/* Reads and checks the schedule's keys into self. */
typedef loom_status (*ds_configure_fn)(loom_scheduler *self, const loom_config *config);

/* A float key that must be finite and >= lo. */
static inline loom_status ds_read_f64(loom_scheduler *self, const loom_config *cfg,
                                      const char *key, double lo, double *out)
{
    loom_status st = loom_cfg_need_f64(self->host, self->api, cfg, key, out);
    if (st)
        return st;
    if (!(isfinite(*out) && *out >= lo))
        return self->api->fail(self->host, LOOM_E_INVALID, "%s = %g: must be finite and >= %g",
                               key, *out, lo);
    return LOOM_OK;
}

/* An integer key that must be >= lo. */
static inline loom_status ds_read_i64(loom_scheduler *self, const loom_config *cfg,
                                      const char *key, int64_t lo, int64_t *out)
{
    loom_status st = loom_cfg_need_i64(self->host, self->api, cfg, key, out);
    if (st)
        return st;
    if (*out < lo)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s = %lld: must be >= %lld", key,
                               (long long)*out, (long long)lo);
    return LOOM_OK;
}

static inline loom_status ds_read_bool(loom_scheduler *self, const loom_config *cfg,
                                       const char *key, int *out)
{
    int32_t b = 0;
    loom_status st = loom_cfg_need_bool(self->host, self->api, cfg, key, &b);
    if (!st)
        *out = b != 0;
    return st;
}

/* hi >= lo, with DeepSpeed's names in the message. */
static inline loom_status ds_check_order(loom_scheduler *self, const char *lo_key, double lo,
                                         const char *hi_key, double hi)
{
    if (hi < lo)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s (%g) must be >= %s (%g)", hi_key,
                               hi, lo_key, lo);
    return LOOM_OK;
}

static inline void ds_destroy(loom_scheduler *self)
{
    free(self);
}

static inline loom_status ds_create(loom_host *host, const loom_host_api *api,
                                    const loom_config *config, const loom_schedule_setup *setup,
                                    ds_eval_fn eval, ds_configure_fn configure,
                                    loom_scheduler **out)
{
    if (!out)
        return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    /* The setup is not read (DeepSpeed's schedules carry their own lr and step counts), but
     * a too-small one still means a host built against another ABI. */
    if (!setup || !LOOM_HAS_FIELD(setup, loom_schedule_setup, warmup_steps))
        return api->fail(host, LOOM_E_ABI, "schedule setup missing or too small");
    loom_scheduler *self = calloc(1, sizeof *self);
    if (!self)
        return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    self->eval = eval;
    loom_status st = configure(self, config);
    if (st) {
        ds_destroy(self);
        return st;
    }
    *out = self;
    return LOOM_OK;
}

static inline loom_status ds_value(const loom_scheduler *self, int64_t t, loom_schedule_value *out)
{
    if (!self || !out)
        return LOOM_E_INVALID;
    loom_status st = sched_check_value(self->host, self->api, t, out);
    if (st != LOOM_OK) return st;
    double lr = 0, mom = NAN;
    self->eval(self, t, &lr, &mom);
    out->lr = lr;
    out->momentum = mom;
    return LOOM_OK;
}

/* ---- WarmupLR / WarmupDecayLR: the shared keys and the warmup gamma ---------------------- */

static inline loom_status ds_warmup_configure(loom_scheduler *self, const loom_config *config)
{
    loom_status st;
    const char *type = NULL;
    int64_t n = 0;
    if ((st = ds_read_f64(self, config, "warmup_min_lr", 0.0, &self->min_lr)) ||
        (st = ds_read_f64(self, config, "warmup_max_lr", 0.0, &self->max_lr)) ||
        (st = ds_check_order(self, "warmup_min_lr", self->min_lr, "warmup_max_lr", self->max_lr)) ||
        /* 0 is what HF's mapping passes for a run without warmup: clamped like 1. */
        (st = ds_read_i64(self, config, "warmup_num_steps", 0, &n)) ||
        (st = loom_cfg_need_str(self->host, self->api, config, "warmup_type", &type)))
        return st;
    if (strcmp(type, "log") == 0)
        self->log_warmup = 1;
    else if (strcmp(type, "linear") == 0)
        self->log_warmup = 0;
    else
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "warmup_type = '%s': must be 'log' or 'linear'", type);
    self->warmup_steps = n < 2 ? 2 : n; /* DeepSpeed HEAD: max(2, warmup_num_steps) */
    return LOOM_OK;
}

/* True while i < N; *gamma is then log(i + 1) / log(N) or i / N. */
static inline int ds_warmup_gamma(const loom_scheduler *self, int64_t i, double *gamma)
{
    if (i >= self->warmup_steps)
        return 0;
    if (self->log_warmup)
        *gamma = (1.0 / log((double)self->warmup_steps)) * log((double)(i + 1));
    else
        *gamma = (double)i / (double)self->warmup_steps;
    return 1;
}

/* The vtable of a DeepSpeed schedule: its create around the shared state, destroy and value. */
#define DS_SCHEDULER_VTABLE(create_fn)                                                                                 \
    {                                                                                                                  \
        LOOM_HEADER_INIT(loom_scheduler_vtable), .create = create_fn, .destroy = ds_destroy, .value = ds_value,        \
    }

/* The warmup keys WarmupLR and WarmupDecayLR share (ds_warmup_configure reads them). */
#define DS_WARMUP_SHAPE_SPECS                                                                                          \
    {.key = "warmup_num_steps",                                                                                        \
     .type = LOOM_PARAM_INT,                                                                                           \
     .default_value = "1000",                                                                                          \
     .doc = "steps of the warmup (>= 0; values below 2 act as 2, as in DeepSpeed)"},                                   \
    {                                                                                                                  \
        .key = "warmup_type", .type = LOOM_PARAM_STRING, .default_value = "log",                                       \
        .doc = "shape of the warmup: log (DeepSpeed's default) or linear"                                              \
    }

#endif
