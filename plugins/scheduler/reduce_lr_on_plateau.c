/*
 * reduce_lr_on_plateau.c - HF's reduce_lr_on_plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
 * (torch 1.13) stepped with the evaluation metric, docs/semantics/schedulers.md#reduce-lr-on-plateau.
 * The rate starts at base_lr (no warmup: HF gives this schedule none) and changes only in
 * observe(), once per evaluation:
 *
 *     better = min: m < best * (1 - threshold) (rel) | m < best - threshold (abs)
 *              max: m > best * (threshold + 1) (rel) | m > best + threshold (abs)
 *     better ? (best = m, bad = 0) : bad += 1
 *     cooldown > 0 ? (cooldown -= 1, bad = 0)
 *     bad > patience: new = max(lr * factor, min_lr); lr = (lr - new > eps) ? new : lr;
 *                     cooldown = cooldown_steps; bad = 0
 * A NaN metric is never better, as in torch. The state (lr, best, the counters) goes into
 * scheduler.json through save_state, so a resumed run continues exactly.
 */
#include <loom/plugin.h>
#include <loom/scheduler.h>

#include "sched_value.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loom_scheduler {
    loom_host *host;
    const loom_host_api *api;
    int mode_max, threshold_abs, verbose;
    double factor, threshold, min_lr, eps;
    int64_t patience, cooldown;
    /* What observe() accumulates: torch's group lr, best, num_bad_epochs, cooldown_counter,
     * last_epoch. */
    double lr, best;
    int64_t num_bad_epochs, cooldown_counter, last_epoch;
    char state_text[256];
};

static void plateau_destroy(loom_scheduler *self)
{
    free(self);
}

/* torch's is_better. */
static int plateau_is_better(const loom_scheduler *self, double a)
{
    if (!self->mode_max)
        return self->threshold_abs ? a < self->best - self->threshold : a < self->best * (1.0 - self->threshold);
    return self->threshold_abs ? a > self->best + self->threshold : a > self->best * (self->threshold + 1.0);
}

static loom_status plateau_observe(loom_scheduler *self, double metric)
{
    if (!self) return LOOM_E_INVALID;
    self->last_epoch++;
    if (plateau_is_better(self, metric)) {
        self->best = metric;
        self->num_bad_epochs = 0;
    } else {
        self->num_bad_epochs++;
    }
    if (self->cooldown_counter > 0) {
        self->cooldown_counter--;
        self->num_bad_epochs = 0;
    }
    if (self->num_bad_epochs > self->patience) {
        double old_lr = self->lr, new_lr = fmax(old_lr * self->factor, self->min_lr);
        if (old_lr - new_lr > self->eps) {
            self->lr = new_lr;
            if (self->verbose)
                self->api->log(self->host, LOOM_LOG_INFO, "Epoch %lld: reducing learning rate of group 0 to %.4e.",
                               (long long)self->last_epoch, new_lr);
        }
        self->cooldown_counter = self->cooldown;
        self->num_bad_epochs = 0;
    }
    return LOOM_OK;
}

static loom_status plateau_value(const loom_scheduler *self, int64_t t, loom_schedule_value *out)
{
    if (!self || !out) return LOOM_E_INVALID;
    loom_status st = sched_check_value(self->host, self->api, t, out);
    if (st != LOOM_OK) return st;
    out->lr = self->lr;
    out->momentum = NAN;
    return LOOM_OK;
}

/* Hex floats in strings: exact, and best is +-inf until the first evaluation. */
static loom_status plateau_save_state(loom_scheduler *self, const char **json)
{
    if (!self || !json) return LOOM_E_INVALID;
    snprintf(self->state_text, sizeof self->state_text,
             "{\"lr\": \"%a\", \"best\": \"%a\", \"num_bad_epochs\": %lld, \"cooldown_counter\": %lld, "
             "\"last_epoch\": %lld}",
             self->lr, self->best, (long long)self->num_bad_epochs, (long long)self->cooldown_counter,
             (long long)self->last_epoch);
    *json = self->state_text;
    return LOOM_OK;
}

/* The value of "key" in the flat object save_state writes: a number, or a number in a string. */
static int plateau_member(const char *json, const char *key, double *out)
{
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = strstr(json, quoted);
    if (!p) return 0;
    p += strlen(quoted);
    while (*p == ' ' || *p == ':' || *p == '"')
        p++;
    char *end;
    *out = strtod(p, &end);
    return end != p;
}

static loom_status plateau_load_state(loom_scheduler *self, const char *json)
{
    if (!self || !json) return LOOM_E_INVALID;
    double v[5];
    static const char *const keys[5] = {"lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch"};
    for (int i = 0; i < 5; i++)
        if (!plateau_member(json, keys[i], &v[i]) || isnan(v[i]) || (i != 1 && !isfinite(v[i])))
            return self->api->fail(self->host, LOOM_E_FORMAT, "saved state: '%s' missing or not a number", keys[i]);
    self->lr = v[0];
    self->best = v[1];
    self->num_bad_epochs = (int64_t)v[2];
    self->cooldown_counter = (int64_t)v[3];
    self->last_epoch = (int64_t)v[4];
    return LOOM_OK;
}

/* One of the two names torch accepts for `key`; *second is 1 for the second. */
static loom_status plateau_choice(loom_scheduler *self, const loom_config *config, const char *key, const char *first,
                                  const char *second, const char *what, int *is_second)
{
    const char *name;
    loom_status st = loom_cfg_need_str(self->host, self->api, config, key, &name);
    if (st) return st;
    if (strcmp(name, first) && strcmp(name, second))
        return self->api->fail(self->host, LOOM_E_INVALID, "%s %s is unknown! (%s: '%s' or '%s')", what, name, key,
                               first, second);
    *is_second = strcmp(name, second) == 0;
    return LOOM_OK;
}

static loom_status plateau_configure(loom_scheduler *self, const loom_config *config)
{
    loom_host *host = self->host;
    const loom_host_api *api = self->api;
    loom_status st;
    int32_t verbose = 0;
    if ((st = plateau_choice(self, config, "mode", "min", "max", "mode", &self->mode_max)) ||
        (st = plateau_choice(self, config, "threshold_mode", "rel", "abs", "threshold mode", &self->threshold_abs)) ||
        (st = loom_cfg_need_f64(host, api, config, "factor", &self->factor)) ||
        (st = loom_cfg_need_i64(host, api, config, "patience", &self->patience)) ||
        (st = loom_cfg_need_f64(host, api, config, "threshold", &self->threshold)) ||
        (st = loom_cfg_need_i64(host, api, config, "cooldown", &self->cooldown)) ||
        (st = loom_cfg_need_f64(host, api, config, "min_lr", &self->min_lr)) ||
        (st = loom_cfg_need_f64(host, api, config, "eps", &self->eps)) ||
        (st = loom_cfg_need_bool(host, api, config, "verbose", &verbose)))
        return st;
    self->verbose = verbose != 0;
    if (!(self->factor < 1.0)) return api->fail(host, LOOM_E_INVALID, "factor = %g: should be < 1.0", self->factor);
    /* torch checks nothing else; a value that is not a number would make every rate NaN. */
    const double finite[4] = {self->factor, self->threshold, self->min_lr, self->eps};
    static const char *const names[4] = {"factor", "threshold", "min_lr", "eps"};
    for (int i = 0; i < 4; i++)
        if (!isfinite(finite[i]))
            return api->fail(host, LOOM_E_INVALID, "%s = %g: must be finite", names[i], finite[i]);
    self->best = self->mode_max ? -INFINITY : INFINITY; /* torch's mode_worse */
    return LOOM_OK;
}

static loom_status plateau_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  const loom_schedule_setup *setup, loom_scheduler **out)
{
    if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    if (!setup || !LOOM_HAS_FIELD(setup, loom_schedule_setup, base_lr))
        return api->fail(host, LOOM_E_ABI, "schedule setup missing or too small");
    if (!(isfinite(setup->base_lr) && setup->base_lr >= 0))
        return api->fail(host, LOOM_E_INVALID, "learning rate %g: must be finite and >= 0", setup->base_lr);
    loom_scheduler *self = calloc(1, sizeof *self);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    self->lr = setup->base_lr;
    loom_status st = plateau_configure(self, config);
    if (st) {
        free(self);
        return st;
    }
    *out = self;
    return LOOM_OK;
}

static const loom_scheduler_vtable plateau_vtable = {
    LOOM_HEADER_INIT(loom_scheduler_vtable),
    .create = plateau_create,
    .destroy = plateau_destroy,
    .value = plateau_value,
    .observe = plateau_observe,
    .save_state = plateau_save_state,
    .load_state = plateau_load_state,
};

/* torch 1.13's ReduceLROnPlateau arguments and defaults (min_lr: one value for the one group). */
static const loom_param_spec plateau_params[] = {
    {.key = "mode",
     .type = LOOM_PARAM_STRING,
     .default_value = "min",
     .doc = "min: the metric should fall (a loss); max: it should rise"},
    {.key = "factor", .type = LOOM_PARAM_FLOAT, .default_value = "0.1", .doc = "new lr = lr * factor (< 1)"},
    {.key = "patience",
     .type = LOOM_PARAM_INT,
     .default_value = "10",
     .doc = "evaluations without improvement tolerated before reducing"},
    {.key = "threshold",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1e-4",
     .doc = "how much better counts as an improvement"},
    {.key = "threshold_mode",
     .type = LOOM_PARAM_STRING,
     .default_value = "rel",
     .doc = "rel: relative to the best; abs: absolute"},
    {.key = "cooldown",
     .type = LOOM_PARAM_INT,
     .default_value = "0",
     .doc = "evaluations to wait after a reduction before counting again"},
    {.key = "min_lr", .type = LOOM_PARAM_FLOAT, .default_value = "0", .doc = "the rate never goes below this"},
    {.key = "eps",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1e-8",
     .doc = "a reduction smaller than this is skipped"},
    {.key = "verbose", .type = LOOM_PARAM_BOOL, .default_value = "false", .doc = "log each reduction"},
    {.key = NULL},
};

static const loom_plugin_desc plateau_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_SCHEDULER,
    .name = "reduce_lr_on_plateau",
    .version = "1.0.0",
    .summary = "HF reduce_lr_on_plateau: torch's ReduceLROnPlateau stepped with the eval metric",
    .vtable = &plateau_vtable,
    .params = plateau_params,
};

LOOM_PLUGIN_EXPORT(&plateau_desc)
