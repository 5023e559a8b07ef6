/*
 * keyed_rule.h - what the element-wise rules whose configuration is a table of floating-point
 * keys (and at most one boolean) share: their instance, create, destroy, get_hparam and vtable
 * (adagrad, rmsprop, lion). Each plugin keeps its key table, its loop and its step().
 *
 * Header-only, like optim_common.h: each optimizer is its own MODULE.
 */
#ifndef LOOM_PLUGINS_KEYED_RULE_H
#define LOOM_PLUGINS_KEYED_RULE_H

#include "optim_common.h"

#include <stdlib.h>
#include <string.h>

#define KEYED_MAX_KEYS 8

/* A floating-point key with torch's range check: the value must be finite, >= min and < below
 * (INFINITY: no upper bound). */
typedef struct optim_key {
    const char *key;
    double min, below;
} optim_key;

struct loom_optimizer {
    loom_host *host;
    const loom_host_api *api;
    const optim_key *keys; /* the plugin's table, static */
    size_t n_keys;
    double hp[KEYED_MAX_KEYS]; /* hp[i] is keys[i]'s value */
    const char *flag_key;      /* the boolean key, or NULL */
    int32_t flag;
    int threads;
};

/* Reads keys[0..n) (and flag_key when not NULL) from the plugin's section, checked. */
static inline loom_status keyed_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                       const optim_key *keys, size_t n, const char *flag_key, loom_optimizer **out)
{
    if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    if (n > KEYED_MAX_KEYS) return api->fail(host, LOOM_E_INTERNAL, "%zu keys: at most %d", n, KEYED_MAX_KEYS);
    loom_optimizer o = {
        .host = host, .api = api, .keys = keys, .n_keys = n, .flag_key = flag_key, .threads = optim_threads(host, api)};
    for (size_t i = 0; i < n; i++) {
        const optim_key *k = &keys[i];
        loom_status st = loom_cfg_need_f64(host, api, config, k->key, &o.hp[i]);
        if (st) return st;
        if (isfinite(o.hp[i]) && o.hp[i] >= k->min && o.hp[i] < k->below) continue;
        if (isinf(k->below))
            return api->fail(host, LOOM_E_INVALID, "%s = %g: must be finite and >= %g", k->key, o.hp[i], k->min);
        return api->fail(host, LOOM_E_INVALID, "%s = %g: must be in [%g, %g)", k->key, o.hp[i], k->min, k->below);
    }
    loom_status st = flag_key ? loom_cfg_need_bool(host, api, config, flag_key, &o.flag) : LOOM_OK;
    if (st) return st;
    loom_optimizer *self = malloc(sizeof *self);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    *self = o;
    *out = self;
    return LOOM_OK;
}

static inline void keyed_destroy(loom_optimizer *self)
{
    free(self);
}

/* Every key of the table and the boolean (as 0 or 1); LOOM_E_NOT_FOUND for any other name. */
static inline loom_status keyed_get_hparam(loom_optimizer *self, const char *name, double *out)
{
    if (!self || !name || !out) return LOOM_E_INVALID;
    if (self->flag_key && !strcmp(name, self->flag_key)) {
        *out = self->flag ? 1.0 : 0.0;
        return LOOM_OK;
    }
    for (size_t i = 0; i < self->n_keys; i++)
        if (!strcmp(name, self->keys[i].key)) {
            *out = self->hp[i];
            return LOOM_OK;
        }
    return LOOM_E_NOT_FOUND;
}

/* The vtable of such a rule: element-wise, its slots, create and step around the shared rest. */
#define KEYED_VTABLE(slots, names, create_fn, step_fn)                                                                 \
    {                                                                                                                  \
        LOOM_HEADER_INIT(loom_optimizer_vtable),                                                                       \
            .state_slots = (slots), .flags = LOOM_OPTIMIZER_ELEMENTWISE, .state_names = (names),                       \
            .create = (create_fn), .destroy = keyed_destroy, .step = (step_fn), .get_hparam = keyed_get_hparam,        \
    }

#endif
