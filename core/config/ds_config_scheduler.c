/* ds_config_scheduler.c - the scheduler section: WarmupLR, WarmupDecayLR, OneCycle and
 * LRRangeTest onto loom's scheduler plugins; "auto" step counts wait for the run's length;
 * without the section, HF's linear / constant_with_warmup map onto DeepSpeed's. */
#include <cjson/cJSON.h>
#include <string.h>

#include "ds_config_internal.h"
#include "error.h"

/* One DeepSpeed scheduler parameter: name and type. */
typedef struct sched_param {
    const char *key;
    ds_kind k;
} sched_param;

static const sched_param warmup_params[] = {{"warmup_min_lr", K_NUM},
                                            {"warmup_max_lr", K_NUM},
                                            {"warmup_num_steps", K_INT},
                                            {"warmup_type", K_STR},
                                            {"total_num_steps", K_INT}};
static const sched_param one_cycle_params[] = {{"cycle_min_lr", K_NUM},
                                               {"cycle_max_lr", K_NUM},
                                               {"decay_lr_rate", K_NUM},
                                               {"cycle_first_step_size", K_INT},
                                               {"cycle_second_step_size", K_INT},
                                               {"cycle_first_stair_count", K_INT},
                                               {"cycle_second_stair_count", K_INT},
                                               {"decay_step_size", K_INT},
                                               {"cycle_momentum", K_BOOL},
                                               {"cycle_min_mom", K_NUM},
                                               {"cycle_max_mom", K_NUM},
                                               {"decay_mom_rate", K_NUM}};
static const sched_param range_test_params[] = {{"lr_range_test_min_lr", K_NUM},
                                                {"lr_range_test_step_size", K_INT},
                                                {"lr_range_test_step_rate", K_NUM},
                                                {"lr_range_test_staircase", K_BOOL}};

/* The warmup length the command line asks for, or -1 while it waits for T. */
static int64_t args_warmup_steps(const loom_args *a)
{
    if (a->warmup_steps >= 1) return loom_args_steps(a->warmup_steps, 0);
    if (a->warmup_steps > 0 || a->warmup_ratio > 0) return -1; /* a ratio: v5's warmup_steps or v4's */
    return 0;
}

static loom_status map_scheduler_from_args(ds_ctx *c)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    const char *hf = a->lr_scheduler_type ? a->lr_scheduler_type : "linear";
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    const char *type;
    if (strcmp(hf, "linear") == 0) {
        type = "WarmupDecayLR";
        ch->plugin = "warmup_decay_lr";
    } else if (strcmp(hf, "constant_with_warmup") == 0) {
        type = "WarmupLR";
        ch->plugin = "warmup_lr";
    } else {
        return LOOM_OK; /* loom's own HF scheduler plugin stays (HF v4.3 raised ValueError) */
    }
    cfg->scheduler.from_args = 1;
    if (!(cfg->scheduler.type = loom__ds_dup_text(type))) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st;
    int64_t w = args_warmup_steps(a);
    if ((st = loom__ds_add_double(ch, "warmup_min_lr", 0.0)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "warmup_max_lr", a->learning_rate)) != LOOM_OK)
        return st;
    if (w >= 0)
        st = loom__ds_add_int(ch, "warmup_num_steps", w);
    else
        st = loom__ds_add_entry(ch, "warmup_num_steps", NULL), cfg->scheduler.warmup_steps_pending = 1;
    if (st != LOOM_OK) return st;
    if (ch->plugin[7] == 'd') { /* warmup_decay_lr */
        cfg->scheduler.total_steps_pending = 1;
        if ((st = loom__ds_add_entry(ch, "total_num_steps", NULL)) != LOOM_OK) return st;
    }
    return LOOM_OK;
}

/* scheduler.type -> the plugin and the parameters it takes (WarmupLR: all of warmup_params
 * but total_num_steps). */
static loom_status scheduler_table_for(const ds_ctx *c, const char *type, const sched_param **table, size_t *n)
{
    loom_ds_plugin_choice *ch = &c->cfg->scheduler_choice;
    if (strcmp(type, "WarmupLR") == 0) {
        ch->plugin = "warmup_lr", *table = warmup_params, *n = COUNT(warmup_params) - 1;
    } else if (strcmp(type, "WarmupDecayLR") == 0) {
        ch->plugin = "warmup_decay_lr", *table = warmup_params, *n = COUNT(warmup_params);
    } else if (strcmp(type, "OneCycle") == 0) {
        ch->plugin = "one_cycle", *table = one_cycle_params, *n = COUNT(one_cycle_params);
    } else if (strcmp(type, "LRRangeTest") == 0) {
        ch->plugin = "lr_range_test", *table = range_test_params, *n = COUNT(range_test_params);
    } else {
        const char *names[] = {"WarmupLR", "WarmupDecayLR", "OneCycle", "LRRangeTest"};
        const char *closest = loom_closest_name(type, names, COUNT(names));
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: scheduler.type \"%s\" is not supported%s%s%s (supported: WarmupLR, WarmupDecayLR, "
                          "OneCycle, LRRangeTest)",
                          c->file, type, closest ? "; did you mean \"" : "", closest ? closest : "",
                          closest ? "\"?" : "");
    }
    return LOOM_OK;
}

/* warmup_num_steps: a number must agree with --warmup_steps; "auto" takes it, or waits for the
 * run's length when --warmup_ratio decides it. */
static loom_status map_warmup_num_steps(ds_ctx *c, const char *key, const ds_value *v)
{
    loom_ds_config *cfg = c->cfg;
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    int64_t w = args_warmup_steps(c->args);
    if (!v->is_auto) {
        if (w >= 0 && v->i != w)
            return loom__ds_mismatch_int(c, "scheduler.params.warmup_num_steps", v->i, "warmup_steps", w);
        cfg->scheduler.warmup_num_steps_explicit = v->i;
        return loom__ds_add_int(ch, key, v->i);
    }
    if (w >= 0) return loom__ds_add_int(ch, key, w);
    cfg->scheduler.warmup_steps_pending = 1;
    return loom__ds_add_entry(ch, key, NULL);
}

/* One present parameter onto the plugin's entry: the learning rates and step counts merge with
 * the command line, the rest pass through as written. */
static loom_status map_scheduler_param(ds_ctx *c, const sched_param *param, const ds_value *v)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    const char *key = param->key, *pp = "scheduler.params.";
    loom_status st;
    if (param->k == K_INT && (st = loom__ds_need_min_int(c, pp, key, v, 0)) != LOOM_OK) return st;
    if (!strcmp(key, "warmup_type") && strcmp(v->s, "log") && strcmp(v->s, "linear"))
        return loom_error(LOOM_E_INVALID, "%s: scheduler.params.warmup_type \"%s\": expected \"log\" or \"linear\"",
                          c->file, v->s);
    if (!strcmp(key, "warmup_min_lr")) return loom__ds_add_double(ch, key, v->is_auto ? 0.0 : v->d);
    if (!strcmp(key, "warmup_max_lr")) {
        if (!v->is_auto && v->d != a->learning_rate)
            return loom__ds_mismatch_double(c, "scheduler.params.warmup_max_lr", v->d, "learning_rate",
                                            a->learning_rate);
        return loom__ds_add_double(ch, key, a->learning_rate);
    }
    if (!strcmp(key, "warmup_num_steps")) return map_warmup_num_steps(c, key, v);
    if (!strcmp(key, "total_num_steps")) {
        if (v->is_auto) {
            cfg->scheduler.total_steps_pending = 1;
            return loom__ds_add_entry(ch, key, NULL);
        }
        cfg->scheduler.total_num_steps_explicit = v->i;
        return loom__ds_add_int(ch, key, v->i);
    }
    if (param->k == K_NUM) return loom__ds_add_double(ch, key, v->d);
    if (param->k == K_INT) return loom__ds_add_int(ch, key, v->i);
    if (param->k == K_BOOL) return loom__ds_add_bool(ch, key, v->b);
    return loom__ds_add_entry(ch, key, v->s);
}

loom_status loom__ds_parse_scheduler(ds_ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    cfg->scheduler.total_num_steps_explicit = -1;
    cfg->scheduler.warmup_num_steps_explicit = -1;
    cfg->scheduler.warmup_ratio = a->warmup_ratio;
    cfg->scheduler.warmup_steps = a->warmup_steps;
    ds_value sec;
    loom_status st = loom__ds_get(c, root, "", "scheduler", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    if (!sec.present) return map_scheduler_from_args(c);

    ds_value type, params;
    if ((st = loom__ds_get_typed_section(c, sec.json, "scheduler.", &type, &params)) != LOOM_OK) return st;
    if (!type.present)
        return loom_error(LOOM_E_INVALID,
                          "%s: scheduler.type is missing (WarmupLR, WarmupDecayLR, OneCycle or LRRangeTest)", c->file);
    cfg->scheduler.present = 1;
    if (!(cfg->scheduler.type = loom__ds_dup_text(type.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
    const sched_param *table = NULL;
    size_t n = 0;
    if ((st = scheduler_table_for(c, type.s, &table, &n)) != LOOM_OK) return st;
    const char *keys[16];
    for (size_t i = 0; i < n; i++)
        keys[i] = table[i].key;
    const cJSON *pj = params.json;
    const char *pp = "scheduler.params.";
    if (pj && (st = loom__ds_check_keys(c, pj, pp, keys, n)) != LOOM_OK) return st;

    for (size_t i = 0; i < n; i++) {
        const char *key = table[i].key;
        int autoable = !strcmp(key, "warmup_min_lr") || !strcmp(key, "warmup_max_lr") ||
                       !strcmp(key, "warmup_num_steps") || !strcmp(key, "total_num_steps");
        const cJSON *raw = pj ? cJSON_GetObjectItemCaseSensitive(pj, key) : NULL;
        if (raw && cJSON_IsNull(raw) &&
            (!strcmp(key, "cycle_second_step_size") || !strcmp(key, "cycle_second_stair_count")))
            continue; /* None: DeepSpeed uses the first's value */
        ds_value v;
        if ((st = loom__ds_get(c, pj, pp, key, table[i].k, autoable, &v)) != LOOM_OK) return st;
        if (!v.present) {
            if (!strcmp(key, "total_num_steps"))
                return loom_error(
                    LOOM_E_INVALID,
                    "%s: scheduler.params.total_num_steps is required for WarmupDecayLR (a number or \"auto\")",
                    c->file);
            continue;
        }
        if ((st = map_scheduler_param(c, &table[i], &v)) != LOOM_OK) return st;
    }
    return LOOM_OK;
}
