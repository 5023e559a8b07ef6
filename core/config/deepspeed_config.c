/* deepspeed_config.c - ds_config.json: strict schema walk, "auto" and command-line merging,
 * the mapping onto loom's sharding/optimizer/scheduler plugins, and the merged JSON. The rules
 * are documented in deepspeed_config.h. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deepspeed_config.h"
#include "error.h"
#include "fileutil.h"
#include "json_util.h"
#include "plugin_config.h"

#define COUNT(a) (sizeof(a) / sizeof *(a))

typedef struct ctx {
    const char *file;
    const loom_args *args;
    loom_ds_config *cfg;
} ctx;

/* ---- small helpers ---------------------------------------------------------------------- */

static char *dup_text(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int is_auto(const cJSON *v)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0;
}

/* Append an entry; value NULL marks it pending. The value text is copied. */
static loom_status add_entry(loom_ds_plugin_choice *c, const char *key, const char *value)
{
    if (c->n_entries == LOOM_DS_MAX_ENTRIES) return loom_error(LOOM_E_INTERNAL, "too many DeepSpeed entries");
    char *v = NULL;
    if (value && !(v = dup_text(value))) return loom_error(LOOM_E_NOMEM, "out of memory");
    c->entries[c->n_entries].key = key;
    c->entries[c->n_entries].value = v;
    c->n_entries++;
    return LOOM_OK;
}

static loom_status add_double(loom_ds_plugin_choice *c, const char *key, double v)
{
    char buf[64];
    loom__format_shortest(buf, sizeof buf, v);
    return add_entry(c, key, buf);
}

static loom_status add_int(loom_ds_plugin_choice *c, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    return add_entry(c, key, buf);
}

static loom_status add_bool(loom_ds_plugin_choice *c, const char *key, int v)
{
    return add_entry(c, key, v ? "true" : "false");
}

static void choice_free(loom_ds_plugin_choice *c)
{
    for (size_t i = 0; i < c->n_entries; i++)
        free((char *)(uintptr_t)c->entries[i].value);
    memset(c, 0, sizeof *c);
}

static loom_config_default *find_entry(loom_ds_plugin_choice *c, const char *key)
{
    for (size_t i = 0; i < c->n_entries; i++)
        if (strcmp(c->entries[i].key, key) == 0) return &c->entries[i];
    return NULL;
}

/* ---- schema walk -------------------------------------------------------------------------- */

/* Duplicates and unknown keys of one object; prefix is "" or "section." */
static loom_status check_keys(const ctx *c, const cJSON *obj, const char *prefix, const char *const *allowed, size_t n)
{
    for (const cJSON *a = obj->child; a; a = a->next) {
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return loom_error(LOOM_E_INVALID, "%s: duplicate key '%s%s'", c->file, prefix, a->string);
        int known = 0;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(a->string, allowed[i]) == 0;
        if (known) continue;
        const char *closest = loom_closest_name(a->string, allowed, n);
        if (closest)
            return loom_error(LOOM_E_INVALID, "%s: unknown key '%s%s'; did you mean '%s%s'?", c->file, prefix,
                              a->string, prefix, closest);
        char list[1024] = "";
        size_t len = 0;
        for (size_t i = 0; i < n && len + 1 < sizeof list; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", allowed[i]);
        return loom_error(LOOM_E_INVALID, "%s: unknown key '%s%s' (valid keys%s%.*s: %s)", c->file, prefix, a->string,
                          *prefix ? " of " : "", *prefix ? (int)strlen(prefix) - 1 : 0, prefix, list);
    }
    return LOOM_OK;
}

typedef enum { K_INT, K_NUM, K_BOOL, K_STR, K_OBJ } kind;

typedef struct value {
    int present, is_auto;
    int64_t i;
    double d;
    int b;
    const char *s;
    const cJSON *json;
} value;

static const char *kind_name(kind k)
{
    switch (k) {
    case K_INT:
        return "an integer";
    case K_NUM:
        return "a number";
    case K_BOOL:
        return "true or false";
    case K_STR:
        return "a string";
    default:
        return "an object";
    }
}

/* Read obj[key] as `k`; "auto" only when allow_auto. A missing key leaves v->present 0. */
static loom_status get(const ctx *c, const cJSON *obj, const char *prefix, const char *key, kind k, int allow_auto,
                       value *v)
{
    memset(v, 0, sizeof *v);
    const cJSON *j = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!j) return LOOM_OK;
    v->present = 1;
    v->json = j;
    if (is_auto(j) && k != K_STR) {
        if (!allow_auto)
            return loom_error(LOOM_E_INVALID,
                              "%s: %s%s: \"auto\" is not allowed here (no command-line counterpart); expected %s",
                              c->file, prefix, key, kind_name(k));
        v->is_auto = 1;
        return LOOM_OK;
    }
    int ok = 0;
    switch (k) {
    case K_INT:
        ok = cJSON_IsNumber(j) && isfinite(j->valuedouble) && floor(j->valuedouble) == j->valuedouble &&
             fabs(j->valuedouble) < 9.0e18;
        if (ok) v->i = (int64_t)j->valuedouble;
        break;
    case K_NUM:
        ok = cJSON_IsNumber(j) && isfinite(j->valuedouble);
        if (ok) v->d = j->valuedouble;
        break;
    case K_BOOL:
        ok = cJSON_IsBool(j);
        if (ok) v->b = cJSON_IsTrue(j);
        break;
    case K_STR:
        ok = cJSON_IsString(j);
        if (ok) v->s = j->valuestring;
        break;
    case K_OBJ:
        ok = cJSON_IsObject(j);
        break;
    }
    if (ok) return LOOM_OK;
    char shown[64] = "";
    if (cJSON_IsNumber(j))
        loom__format_shortest(shown, sizeof shown, j->valuedouble);
    else if (cJSON_IsString(j))
        snprintf(shown, sizeof shown, "\"%.40s\"", j->valuestring);
    return loom_error(LOOM_E_INVALID, "%s: %s%s: expected %s%s, got %s%s%s", c->file, prefix, key, kind_name(k),
                      allow_auto ? " or \"auto\"" : "", loom__json_type_name(j), *shown ? " " : "", shown);
}

static loom_status need_min_int(const ctx *c, const char *prefix, const char *key, const value *v, int64_t min)
{
    if (v->present && !v->is_auto && v->i < min)
        return loom_error(LOOM_E_INVALID, "%s: %s%s: must be >= %lld, got %lld", c->file, prefix, key, (long long)min,
                          (long long)v->i);
    return LOOM_OK;
}

static loom_status need_nonneg(const ctx *c, const char *prefix, const char *key, const value *v)
{
    if (v->present && !v->is_auto && v->d < 0)
        return loom_error(LOOM_E_INVALID, "%s: %s%s: must be >= 0, got %g", c->file, prefix, key, v->d);
    return LOOM_OK;
}

static loom_status mismatch_int(const ctx *c, const char *key, int64_t ds, const char *flag, int64_t hf)
{
    return loom_error(LOOM_E_INVALID, "%s=%lld in %s but --%s %lld (use \"auto\" or make them agree)", key,
                      (long long)ds, c->file, flag, (long long)hf);
}

static loom_status mismatch_double(const ctx *c, const char *key, double ds, const char *flag, double hf)
{
    char a[64], b[64];
    loom__format_shortest(a, sizeof a, ds);
    loom__format_shortest(b, sizeof b, hf);
    return loom_error(LOOM_E_INVALID, "%s=%s in %s but --%s %s (use \"auto\" or make them agree)", key, a, c->file,
                      flag, b);
}

/* A float value: "auto" -> hf; a number must equal hf; absent -> absent_value. */
static loom_status merge_double(const ctx *c, const cJSON *obj, const char *prefix, const char *key, const char *flag,
                                double hf, double absent_value, double *out)
{
    value v;
    loom_status st = get(c, obj, prefix, key, K_NUM, 1, &v);
    if (st != LOOM_OK) return st;
    if (!v.present) {
        *out = absent_value;
    } else if (v.is_auto) {
        *out = hf;
    } else {
        if (v.d != hf) {
            char full[128];
            snprintf(full, sizeof full, "%s%s", prefix, key);
            return mismatch_double(c, full, v.d, flag, hf);
        }
        *out = v.d;
    }
    return LOOM_OK;
}

/* ---- sections ----------------------------------------------------------------------------- */

static loom_status parse_batch(ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    value micro, ga, total, clip;
    loom_status st;
    if ((st = get(c, root, "", "train_micro_batch_size_per_gpu", K_INT, 1, &micro)) != LOOM_OK ||
        (st = need_min_int(c, "", "train_micro_batch_size_per_gpu", &micro, 1)) != LOOM_OK ||
        (st = get(c, root, "", "gradient_accumulation_steps", K_INT, 1, &ga)) != LOOM_OK ||
        (st = need_min_int(c, "", "gradient_accumulation_steps", &ga, 1)) != LOOM_OK ||
        (st = get(c, root, "", "train_batch_size", K_INT, 1, &total)) != LOOM_OK ||
        (st = need_min_int(c, "", "train_batch_size", &total, 1)) != LOOM_OK ||
        (st = get(c, root, "", "gradient_clipping", K_NUM, 1, &clip)) != LOOM_OK ||
        (st = need_nonneg(c, "", "gradient_clipping", &clip)) != LOOM_OK)
        return st;
    if (micro.present && !micro.is_auto && micro.i != a->per_device_train_batch_size)
        return mismatch_int(c, "train_micro_batch_size_per_gpu", micro.i, "per_device_train_batch_size",
                            a->per_device_train_batch_size);
    if (ga.present && !ga.is_auto && ga.i != a->gradient_accumulation_steps)
        return mismatch_int(c, "gradient_accumulation_steps", ga.i, "gradient_accumulation_steps",
                            a->gradient_accumulation_steps);
    cfg->train_micro_batch_size_per_gpu = a->per_device_train_batch_size;
    cfg->gradient_accumulation_steps = a->gradient_accumulation_steps;
    cfg->train_batch_size = a->per_device_train_batch_size * a->gradient_accumulation_steps * cfg->world_size;
    if (total.present && !total.is_auto && total.i != cfg->train_batch_size)
        return loom_error(LOOM_E_INVALID,
                          "train_batch_size=%lld in %s but --per_device_train_batch_size %lld x "
                          "--gradient_accumulation_steps %lld x world size %d = %lld (use \"auto\" or make them agree)",
                          (long long)total.i, c->file, (long long)a->per_device_train_batch_size,
                          (long long)a->gradient_accumulation_steps, cfg->world_size, (long long)cfg->train_batch_size);
    if (clip.present && !clip.is_auto && clip.d != a->max_grad_norm)
        return mismatch_double(c, "gradient_clipping", clip.d, "max_grad_norm", a->max_grad_norm);
    cfg->gradient_clipping = a->max_grad_norm;

    value spp, wcb, untested, prescale, predivide;
    if ((st = get(c, root, "", "steps_per_print", K_INT, 0, &spp)) != LOOM_OK ||
        (st = need_min_int(c, "", "steps_per_print", &spp, 1)) != LOOM_OK ||
        (st = get(c, root, "", "wall_clock_breakdown", K_BOOL, 0, &wcb)) != LOOM_OK ||
        (st = get(c, root, "", "zero_allow_untested_optimizer", K_BOOL, 0, &untested)) != LOOM_OK ||
        (st = get(c, root, "", "prescale_gradients", K_BOOL, 0, &prescale)) != LOOM_OK ||
        (st = get(c, root, "", "gradient_predivide_factor", K_NUM, 0, &predivide)) != LOOM_OK)
        return st;
    cfg->steps_per_print = spp.present ? spp.i : 10;
    cfg->wall_clock_breakdown = wcb.present ? wcb.b : 0;
    cfg->zero_allow_untested_optimizer = untested.present ? untested.b : 0;
    if (prescale.present && prescale.b)
        return loom_error(
            LOOM_E_UNSUPPORTED,
            "%s: prescale_gradients true is not supported (loom averages gradients once, after the reduction)",
            c->file);
    if (predivide.present && predivide.d != 1.0)
        return loom_error(LOOM_E_UNSUPPORTED, "%s: gradient_predivide_factor %g is not supported (only 1.0)", c->file,
                          predivide.d);
    cfg->prescale_gradients = 0;
    cfg->gradient_predivide_factor = 1.0;
    return LOOM_OK;
}

static const char *const zero_keys[] = {"stage",
                                        "allgather_partitions",
                                        "allgather_bucket_size",
                                        "reduce_scatter",
                                        "reduce_bucket_size",
                                        "overlap_comm",
                                        "contiguous_gradients",
                                        "cpu_offload",
                                        "load_from_fp32_weights",
                                        "elastic_checkpoint",
                                        "offload_optimizer"};
static const char *const offload_keys[] = {"device", "pin_memory"};

static loom_status parse_zero(ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const char *p = "zero_optimization.";
    value sec;
    loom_status st = get(c, root, "", "zero_optimization", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    const cJSON *z = sec.json;
    cfg->zero.present = sec.present;
    if (z && (st = check_keys(c, z, p, zero_keys, COUNT(zero_keys))) != LOOM_OK) return st;

    value stage, agp, agb, rs, rb, oc, cg, off, lf, ec, oo;
    if ((st = get(c, z, p, "stage", K_INT, 0, &stage)) != LOOM_OK ||
        (st = get(c, z, p, "allgather_partitions", K_BOOL, 0, &agp)) != LOOM_OK ||
        (st = get(c, z, p, "allgather_bucket_size", K_INT, 0, &agb)) != LOOM_OK ||
        (st = need_min_int(c, p, "allgather_bucket_size", &agb, 1)) != LOOM_OK ||
        (st = get(c, z, p, "reduce_scatter", K_BOOL, 0, &rs)) != LOOM_OK ||
        (st = get(c, z, p, "reduce_bucket_size", K_INT, 0, &rb)) != LOOM_OK ||
        (st = need_min_int(c, p, "reduce_bucket_size", &rb, 1)) != LOOM_OK ||
        (st = get(c, z, p, "overlap_comm", K_BOOL, 0, &oc)) != LOOM_OK ||
        (st = get(c, z, p, "contiguous_gradients", K_BOOL, 0, &cg)) != LOOM_OK ||
        (st = get(c, z, p, "cpu_offload", K_BOOL, 0, &off)) != LOOM_OK ||
        (st = get(c, z, p, "load_from_fp32_weights", K_BOOL, 0, &lf)) != LOOM_OK ||
        (st = get(c, z, p, "elastic_checkpoint", K_BOOL, 0, &ec)) != LOOM_OK ||
        (st = get(c, z, p, "offload_optimizer", K_OBJ, 0, &oo)) != LOOM_OK)
        return st;
    int s = stage.present ? (int)stage.i : 0;
    if (stage.present && stage.i == 3)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: zero_optimization.stage 3: ZeRO-3 is not supported (use stage 0, 1 or 2)", c->file);
    if (stage.present && (stage.i < 0 || stage.i > 2))
        return loom_error(LOOM_E_INVALID, "%s: zero_optimization.stage: expected 0, 1 or 2, got %lld", c->file,
                          (long long)stage.i);
    cfg->zero.stage = s;
    cfg->zero.allgather_partitions = agp.present ? agp.b : 1;
    cfg->zero.allgather_bucket_size = agb.present ? agb.i : 500000000;
    cfg->zero.reduce_scatter = rs.present ? rs.b : 1;
    cfg->zero.reduce_bucket_size = rb.present ? rb.i : 500000000;
    cfg->zero.overlap_comm = oc.present ? oc.b : 0;
    cfg->zero.contiguous_gradients = cg.present ? cg.b : 0;
    cfg->zero.cpu_offload = off.present ? off.b : 0;
    cfg->zero.load_from_fp32_weights = lf.present ? lf.b : 1;
    cfg->zero.elastic_checkpoint = ec.present ? ec.b : 1;

    if (oo.present) {
        const char *op = "zero_optimization.offload_optimizer.";
        value dev, pin;
        if ((st = check_keys(c, oo.json, op, offload_keys, COUNT(offload_keys))) != LOOM_OK ||
            (st = get(c, oo.json, op, "device", K_STR, 0, &dev)) != LOOM_OK ||
            (st = get(c, oo.json, op, "pin_memory", K_BOOL, 0, &pin)) != LOOM_OK)
            return st;
        int cpu = 0;
        if (dev.present) {
            if (strcmp(dev.s, "cpu") == 0)
                cpu = 1;
            else if (strcmp(dev.s, "none") != 0)
                return loom_error(
                    strcmp(dev.s, "nvme") == 0 ? LOOM_E_UNSUPPORTED : LOOM_E_INVALID,
                    "%s: zero_optimization.offload_optimizer.device \"%s\": supported devices are \"cpu\" and \"none\"",
                    c->file, dev.s);
        }
        if (off.present && off.b != cpu)
            return loom_error(LOOM_E_INVALID,
                              "%s: zero_optimization.cpu_offload %s disagrees with offload_optimizer.device \"%s\"",
                              c->file, off.b ? "true" : "false", dev.present ? dev.s : "none");
        cfg->zero.offload_optimizer_present = 1;
        cfg->zero.offload_pin_memory = pin.present ? pin.b : 0;
        cfg->zero.cpu_offload = cpu;
    }
    if (s == 1 && !cfg->zero.reduce_scatter)
        return loom_error(LOOM_E_INVALID,
                          "%s: zero_optimization.reduce_scatter false with stage 1: ZeRO-1 requires reduce_scatter "
                          "true (DeepSpeed asserts it)",
                          c->file);
    if (cfg->zero.cpu_offload && s != 2)
        return loom_error(
            LOOM_E_INVALID,
            "%s: zero_optimization: CPU offload (cpu_offload / offload_optimizer) requires stage 2, got stage %d",
            c->file, s);

    loom_ds_plugin_choice *ch = &cfg->sharding;
    ch->plugin = s == 0 ? "ddp" : s == 1 ? "zero1" : "zero2";
    if (s == 0) return LOOM_OK;
    if ((st = add_bool(ch, "allgather_partitions", cfg->zero.allgather_partitions)) != LOOM_OK ||
        (st = add_int(ch, "allgather_bucket_size", cfg->zero.allgather_bucket_size)) != LOOM_OK ||
        (st = add_bool(ch, "reduce_scatter", cfg->zero.reduce_scatter)) != LOOM_OK ||
        (st = add_int(ch, "reduce_bucket_size", cfg->zero.reduce_bucket_size)) != LOOM_OK ||
        (st = add_bool(ch, "overlap_comm", cfg->zero.overlap_comm)) != LOOM_OK ||
        (st = add_bool(ch, "contiguous_gradients", cfg->zero.contiguous_gradients || cfg->zero.cpu_offload)) !=
            LOOM_OK ||
        (st = add_bool(ch, "cpu_offload", cfg->zero.cpu_offload)) != LOOM_OK ||
        (st = add_bool(ch, "load_from_fp32_weights", cfg->zero.load_from_fp32_weights)) != LOOM_OK ||
        (st = add_bool(ch, "elastic_checkpoint", cfg->zero.elastic_checkpoint)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

static loom_status add_common_optimizer_entries(loom_ds_config *cfg)
{
    loom_ds_plugin_choice *ch = &cfg->optimizer_choice;
    loom_status st;
    if ((st = add_double(ch, "lr", cfg->optimizer.lr)) != LOOM_OK ||
        (st = add_double(ch, "beta1", cfg->optimizer.beta1)) != LOOM_OK ||
        (st = add_double(ch, "beta2", cfg->optimizer.beta2)) != LOOM_OK ||
        (st = add_double(ch, "eps", cfg->optimizer.eps)) != LOOM_OK ||
        (st = add_double(ch, "weight_decay", cfg->optimizer.weight_decay)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

static loom_status parse_optimizer(ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    value sec;
    loom_status st = get(c, root, "", "optimizer", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    cfg->optimizer.adam_w_mode = 1;
    cfg->optimizer.max_coeff = 10.0;
    cfg->optimizer.min_coeff = 0.01;
    cfg->optimizer.bias_correction = 1;
    cfg->optimizer.freeze_step = 100000;
    if (!(cfg->optimizer.comm_backend_name = dup_text("nccl"))) return loom_error(LOOM_E_NOMEM, "out of memory");
    if (!sec.present) {
        /* HF injects the Trainer's optimizer with the command line's hyper-parameters. */
        cfg->optimizer.lr = a->learning_rate;
        cfg->optimizer.beta1 = a->adam_beta1;
        cfg->optimizer.beta2 = a->adam_beta2;
        cfg->optimizer.eps = a->adam_epsilon;
        cfg->optimizer.weight_decay = a->weight_decay;
        cfg->optimizer_choice.plugin = loom__optimizer_plugin_for(a->optim);
        return add_common_optimizer_entries(cfg);
    }
    static const char *const section_keys[] = {"type", "params"};
    const char *p = "optimizer.";
    value type, params;
    if ((st = check_keys(c, sec.json, p, section_keys, COUNT(section_keys))) != LOOM_OK ||
        (st = get(c, sec.json, p, "type", K_STR, 0, &type)) != LOOM_OK ||
        (st = get(c, sec.json, p, "params", K_OBJ, 0, &params)) != LOOM_OK)
        return st;
    if (!type.present)
        return loom_error(LOOM_E_INVALID, "%s: optimizer.type is missing (Adam, AdamW, Lamb or OneBitAdam)", c->file);
    cfg->optimizer.present = 1;
    if (!(cfg->optimizer.type = dup_text(type.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
    enum { ADAM, ADAMW, LAMB, ONEBIT } t;
    if (strcasecmp(type.s, "adam") == 0)
        t = ADAM;
    else if (strcasecmp(type.s, "adamw") == 0)
        t = ADAMW;
    else if (strcasecmp(type.s, "lamb") == 0)
        t = LAMB;
    else if (strcasecmp(type.s, "onebitadam") == 0)
        t = ONEBIT;
    else
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: optimizer.type \"%s\" is not supported (supported: Adam, AdamW, Lamb, OneBitAdam)",
                          c->file, type.s);

    const cJSON *pj = params.json;
    const char *pp = "optimizer.params.";
    if (pj && cJSON_GetObjectItemCaseSensitive(pj, "max_grad_norm"))
        return loom_error(
            LOOM_E_INVALID,
            "%s: optimizer.params.max_grad_norm is not accepted (DeepSpeed rejects it): use gradient_clipping",
            c->file);
    static const char *const adam_keys[] = {"lr", "betas", "eps", "weight_decay", "torch_adam", "adam_w_mode"};
    static const char *const lamb_keys[] = {"lr",        "betas",          "eps", "weight_decay", "max_coeff",
                                            "min_coeff", "bias_correction"};
    static const char *const onebit_keys[] = {
        "lr", "betas", "eps", "weight_decay", "freeze_step", "cuda_aware", "comm_backend_name"};
    if (pj) {
        if (t == ADAM || t == ADAMW)
            st = check_keys(c, pj, pp, adam_keys, COUNT(adam_keys));
        else if (t == LAMB)
            st = check_keys(c, pj, pp, lamb_keys, COUNT(lamb_keys));
        else
            st = check_keys(c, pj, pp, onebit_keys, COUNT(onebit_keys));
        if (st != LOOM_OK) return st;
    }
    /* Absent keys take DeepSpeed's defaults (lr 1e-3), as DeepSpeed does with the section. */
    if ((st = merge_double(c, pj, pp, "lr", "learning_rate", a->learning_rate, 1e-3, &cfg->optimizer.lr)) != LOOM_OK ||
        (st = merge_double(c, pj, pp, "eps", "adam_epsilon", a->adam_epsilon, 1e-8, &cfg->optimizer.eps)) != LOOM_OK ||
        (st = merge_double(c, pj, pp, "weight_decay", "weight_decay", a->weight_decay, 0.0,
                           &cfg->optimizer.weight_decay)) != LOOM_OK)
        return st;
    cfg->optimizer.beta1 = 0.9;
    cfg->optimizer.beta2 = 0.999;
    const cJSON *betas = pj ? cJSON_GetObjectItemCaseSensitive(pj, "betas") : NULL;
    if (betas && is_auto(betas)) {
        cfg->optimizer.beta1 = a->adam_beta1;
        cfg->optimizer.beta2 = a->adam_beta2;
    } else if (betas) {
        if (!cJSON_IsArray(betas) || cJSON_GetArraySize(betas) != 2)
            return loom_error(LOOM_E_INVALID, "%s: optimizer.params.betas: expected [beta1, beta2] or \"auto\", got %s",
                              c->file,
                              cJSON_IsArray(betas) ? "an array of another length" : loom__json_type_name(betas));
        double hf[2] = {a->adam_beta1, a->adam_beta2}, *dst[2] = {&cfg->optimizer.beta1, &cfg->optimizer.beta2};
        const char *flags[2] = {"adam_beta1", "adam_beta2"};
        for (int i = 0; i < 2; i++) {
            const cJSON *b = cJSON_GetArrayItem(betas, i);
            char key[48];
            snprintf(key, sizeof key, "optimizer.params.betas[%d]", i);
            if (is_auto(b)) {
                *dst[i] = hf[i];
            } else if (!cJSON_IsNumber(b)) {
                return loom_error(LOOM_E_INVALID, "%s: %s: expected a number or \"auto\", got %s", c->file, key,
                                  loom__json_type_name(b));
            } else if (b->valuedouble != hf[i]) {
                return mismatch_double(c, key, b->valuedouble, flags[i], hf[i]);
            } else {
                *dst[i] = b->valuedouble;
            }
        }
    }

    value v;
    loom_ds_plugin_choice *ch = &cfg->optimizer_choice;
    if (t == ADAM || t == ADAMW) {
        if ((st = get(c, pj, pp, "torch_adam", K_BOOL, 0, &v)) != LOOM_OK) return st;
        cfg->optimizer.torch_adam = v.present && v.b;
        if ((st = get(c, pj, pp, "adam_w_mode", K_BOOL, 0, &v)) != LOOM_OK) return st;
        cfg->optimizer.adam_w_mode = v.present ? v.b : 1;
        if (t == ADAMW && !cfg->optimizer.adam_w_mode)
            return loom_error(
                LOOM_E_INVALID,
                "%s: optimizer.params.adam_w_mode false contradicts type AdamW (use type Adam for L2 weight decay)",
                c->file);
        ch->plugin = cfg->optimizer.adam_w_mode ? "adamw" : "adam";
        return add_common_optimizer_entries(cfg);
    }
    if (t == LAMB) {
        value mx, mn, bc;
        if ((st = get(c, pj, pp, "max_coeff", K_NUM, 0, &mx)) != LOOM_OK ||
            (st = get(c, pj, pp, "min_coeff", K_NUM, 0, &mn)) != LOOM_OK ||
            (st = get(c, pj, pp, "bias_correction", K_BOOL, 0, &bc)) != LOOM_OK)
            return st;
        if (mx.present) cfg->optimizer.max_coeff = mx.d;
        if (mn.present) cfg->optimizer.min_coeff = mn.d;
        if (bc.present) cfg->optimizer.bias_correction = bc.b;
        if (cfg->optimizer.min_coeff > cfg->optimizer.max_coeff)
            return loom_error(LOOM_E_INVALID, "%s: optimizer.params.min_coeff %g is above max_coeff %g", c->file,
                              cfg->optimizer.min_coeff, cfg->optimizer.max_coeff);
        ch->plugin = "lamb";
        if ((st = add_common_optimizer_entries(cfg)) != LOOM_OK ||
            (st = add_double(ch, "max_coeff", cfg->optimizer.max_coeff)) != LOOM_OK ||
            (st = add_double(ch, "min_coeff", cfg->optimizer.min_coeff)) != LOOM_OK ||
            (st = add_bool(ch, "bias_correction", cfg->optimizer.bias_correction)) != LOOM_OK)
            return st;
        return LOOM_OK;
    }
    value fs, ca, cb;
    if ((st = get(c, pj, pp, "freeze_step", K_INT, 0, &fs)) != LOOM_OK ||
        (st = need_min_int(c, pp, "freeze_step", &fs, 0)) != LOOM_OK ||
        (st = get(c, pj, pp, "cuda_aware", K_BOOL, 0, &ca)) != LOOM_OK ||
        (st = get(c, pj, pp, "comm_backend_name", K_STR, 0, &cb)) != LOOM_OK)
        return st;
    if (fs.present) cfg->optimizer.freeze_step = fs.i;
    if (ca.present) cfg->optimizer.cuda_aware = ca.b;
    if (cb.present) {
        if (strcmp(cb.s, "nccl") != 0 && strcmp(cb.s, "mpi") != 0)
            return loom_error(LOOM_E_INVALID,
                              "%s: optimizer.params.comm_backend_name \"%s\": expected \"nccl\" or \"mpi\"", c->file,
                              cb.s);
        free(cfg->optimizer.comm_backend_name);
        if (!(cfg->optimizer.comm_backend_name = dup_text(cb.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    ch->plugin = "onebit_adam";
    if ((st = add_common_optimizer_entries(cfg)) != LOOM_OK ||
        (st = add_int(ch, "freeze_step", cfg->optimizer.freeze_step)) != LOOM_OK ||
        (st = add_bool(ch, "cuda_aware", cfg->optimizer.cuda_aware)) != LOOM_OK ||
        (st = add_entry(ch, "comm_backend_name", cfg->optimizer.comm_backend_name)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

/* One DeepSpeed scheduler parameter: name and type. */
typedef struct sched_param {
    const char *key;
    kind k;
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
    if (a->warmup_steps > 0 || a->warmup_ratio <= 0) return a->warmup_steps;
    return -1;
}

static loom_status map_scheduler_from_args(ctx *c)
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
    if (!(cfg->scheduler.type = dup_text(type))) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st;
    int64_t w = args_warmup_steps(a);
    if ((st = add_double(ch, "warmup_min_lr", 0.0)) != LOOM_OK ||
        (st = add_double(ch, "warmup_max_lr", a->learning_rate)) != LOOM_OK)
        return st;
    if (w >= 0)
        st = add_int(ch, "warmup_num_steps", w);
    else
        st = add_entry(ch, "warmup_num_steps", NULL), cfg->scheduler.warmup_steps_pending = 1;
    if (st != LOOM_OK) return st;
    if (ch->plugin[7] == 'd') { /* warmup_decay_lr */
        cfg->scheduler.total_steps_pending = 1;
        if ((st = add_entry(ch, "total_num_steps", NULL)) != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static loom_status parse_scheduler(ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    cfg->scheduler.total_num_steps_explicit = -1;
    cfg->scheduler.warmup_num_steps_explicit = -1;
    cfg->scheduler.warmup_ratio = a->warmup_ratio;
    cfg->scheduler.warmup_steps = a->warmup_steps;
    value sec;
    loom_status st = get(c, root, "", "scheduler", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    if (!sec.present) return map_scheduler_from_args(c);

    static const char *const section_keys[] = {"type", "params"};
    const char *p = "scheduler.";
    value type, params;
    if ((st = check_keys(c, sec.json, p, section_keys, COUNT(section_keys))) != LOOM_OK ||
        (st = get(c, sec.json, p, "type", K_STR, 0, &type)) != LOOM_OK ||
        (st = get(c, sec.json, p, "params", K_OBJ, 0, &params)) != LOOM_OK)
        return st;
    if (!type.present)
        return loom_error(LOOM_E_INVALID,
                          "%s: scheduler.type is missing (WarmupLR, WarmupDecayLR, OneCycle or LRRangeTest)", c->file);
    cfg->scheduler.present = 1;
    if (!(cfg->scheduler.type = dup_text(type.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    const sched_param *table;
    size_t n;
    if (strcmp(type.s, "WarmupLR") == 0) {
        ch->plugin = "warmup_lr", table = warmup_params, n = COUNT(warmup_params) - 1;
    } else if (strcmp(type.s, "WarmupDecayLR") == 0) {
        ch->plugin = "warmup_decay_lr", table = warmup_params, n = COUNT(warmup_params);
    } else if (strcmp(type.s, "OneCycle") == 0) {
        ch->plugin = "one_cycle", table = one_cycle_params, n = COUNT(one_cycle_params);
    } else if (strcmp(type.s, "LRRangeTest") == 0) {
        ch->plugin = "lr_range_test", table = range_test_params, n = COUNT(range_test_params);
    } else {
        const char *names[] = {"WarmupLR", "WarmupDecayLR", "OneCycle", "LRRangeTest"};
        const char *closest = loom_closest_name(type.s, names, COUNT(names));
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: scheduler.type \"%s\" is not supported%s%s%s (supported: WarmupLR, WarmupDecayLR, "
                          "OneCycle, LRRangeTest)",
                          c->file, type.s, closest ? "; did you mean \"" : "", closest ? closest : "",
                          closest ? "\"?" : "");
    }
    const char *keys[16];
    for (size_t i = 0; i < n; i++)
        keys[i] = table[i].key;
    const cJSON *pj = params.json;
    const char *pp = "scheduler.params.";
    if (pj && (st = check_keys(c, pj, pp, keys, n)) != LOOM_OK) return st;

    for (size_t i = 0; i < n; i++) {
        const char *key = table[i].key;
        int autoable = !strcmp(key, "warmup_min_lr") || !strcmp(key, "warmup_max_lr") ||
                       !strcmp(key, "warmup_num_steps") || !strcmp(key, "total_num_steps");
        const cJSON *raw = pj ? cJSON_GetObjectItemCaseSensitive(pj, key) : NULL;
        if (raw && cJSON_IsNull(raw) &&
            (!strcmp(key, "cycle_second_step_size") || !strcmp(key, "cycle_second_stair_count")))
            continue; /* None: DeepSpeed uses the first's value */
        value v;
        if ((st = get(c, pj, pp, key, table[i].k, autoable, &v)) != LOOM_OK) return st;
        if (!v.present) {
            if (!strcmp(key, "total_num_steps"))
                return loom_error(
                    LOOM_E_INVALID,
                    "%s: scheduler.params.total_num_steps is required for WarmupDecayLR (a number or \"auto\")",
                    c->file);
            continue;
        }
        if (table[i].k == K_INT && (st = need_min_int(c, pp, key, &v, 0)) != LOOM_OK) return st;
        if (!strcmp(key, "warmup_type") && strcmp(v.s, "log") && strcmp(v.s, "linear"))
            return loom_error(LOOM_E_INVALID, "%s: scheduler.params.warmup_type \"%s\": expected \"log\" or \"linear\"",
                              c->file, v.s);
        if (!strcmp(key, "warmup_min_lr")) {
            st = add_double(ch, key, v.is_auto ? 0.0 : v.d);
        } else if (!strcmp(key, "warmup_max_lr")) {
            if (!v.is_auto && v.d != a->learning_rate)
                return mismatch_double(c, "scheduler.params.warmup_max_lr", v.d, "learning_rate", a->learning_rate);
            st = add_double(ch, key, a->learning_rate);
        } else if (!strcmp(key, "warmup_num_steps")) {
            int64_t w = args_warmup_steps(a);
            if (!v.is_auto) {
                if (w >= 0 && v.i != w)
                    return mismatch_int(c, "scheduler.params.warmup_num_steps", v.i, "warmup_steps", w);
                cfg->scheduler.warmup_num_steps_explicit = v.i;
                st = add_int(ch, key, v.i);
            } else if (w >= 0) {
                st = add_int(ch, key, w);
            } else {
                cfg->scheduler.warmup_steps_pending = 1;
                st = add_entry(ch, key, NULL);
            }
        } else if (!strcmp(key, "total_num_steps")) {
            if (v.is_auto) {
                cfg->scheduler.total_steps_pending = 1;
                st = add_entry(ch, key, NULL);
            } else {
                cfg->scheduler.total_num_steps_explicit = v.i;
                st = add_int(ch, key, v.i);
            }
        } else if (table[i].k == K_NUM) {
            st = add_double(ch, key, v.d);
        } else if (table[i].k == K_INT) {
            st = add_int(ch, key, v.i);
        } else if (table[i].k == K_BOOL) {
            st = add_bool(ch, key, v.b);
        } else {
            st = add_entry(ch, key, v.s);
        }
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static const char *const fp16_keys[] = {"enabled",    "loss_scale",     "initial_scale_power",   "loss_scale_window",
                                        "hysteresis", "min_loss_scale", "consecutive_hysteresis"};
static const char *const amp_keys[] = {"enabled",
                                       "opt_level",
                                       "cast_model_type",
                                       "patch_torch_functions",
                                       "keep_batchnorm_fp32",
                                       "master_weights",
                                       "loss_scale",
                                       "cast_model_outputs",
                                       "num_losses",
                                       "verbosity",
                                       "min_loss_scale",
                                       "max_loss_scale"};

static int args_fp16_apex(const loom_args *a)
{
    return a->fp16 && a->fp16_backend && strcmp(a->fp16_backend, "apex") == 0;
}

static loom_status parse_precision(ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    loom_status st;
    value f, am, bf;
    if ((st = get(c, root, "", "fp16", K_OBJ, 0, &f)) != LOOM_OK ||
        (st = get(c, root, "", "amp", K_OBJ, 0, &am)) != LOOM_OK ||
        (st = get(c, root, "", "bf16", K_OBJ, 0, &bf)) != LOOM_OK)
        return st;

    /* fp16 */
    cfg->fp16.present = f.present;
    cfg->fp16.enabled = a->fp16 && !args_fp16_apex(a); /* absent: HF injects --fp16 */
    cfg->fp16.loss_scale = 0;
    cfg->fp16.initial_scale_power = 32;
    cfg->fp16.loss_scale_window = 1000;
    cfg->fp16.hysteresis = 2;
    cfg->fp16.min_loss_scale = 1;
    if (f.present) {
        const char *p = "fp16.";
        const cJSON *j = f.json;
        value en, ls, isp, lsw, hy, mls, ch;
        if ((st = check_keys(c, j, p, fp16_keys, COUNT(fp16_keys))) != LOOM_OK ||
            (st = get(c, j, p, "enabled", K_BOOL, 1, &en)) != LOOM_OK ||
            (st = get(c, j, p, "loss_scale", K_NUM, 0, &ls)) != LOOM_OK ||
            (st = need_nonneg(c, p, "loss_scale", &ls)) != LOOM_OK ||
            (st = get(c, j, p, "initial_scale_power", K_INT, 0, &isp)) != LOOM_OK ||
            (st = need_min_int(c, p, "initial_scale_power", &isp, 0)) != LOOM_OK ||
            (st = get(c, j, p, "loss_scale_window", K_INT, 0, &lsw)) != LOOM_OK ||
            (st = need_min_int(c, p, "loss_scale_window", &lsw, 1)) != LOOM_OK ||
            (st = get(c, j, p, "hysteresis", K_INT, 0, &hy)) != LOOM_OK ||
            (st = need_min_int(c, p, "hysteresis", &hy, 1)) != LOOM_OK ||
            (st = get(c, j, p, "min_loss_scale", K_NUM, 0, &mls)) != LOOM_OK ||
            (st = need_nonneg(c, p, "min_loss_scale", &mls)) != LOOM_OK ||
            (st = get(c, j, p, "consecutive_hysteresis", K_BOOL, 0, &ch)) != LOOM_OK)
            return st;
        if (isp.present && isp.i > 127)
            return loom_error(LOOM_E_INVALID,
                              "%s: fp16.initial_scale_power %lld: 2^power does not fit a float (max 127)", c->file,
                              (long long)isp.i);
        cfg->fp16.enabled = en.present ? (en.is_auto ? a->fp16 && !args_fp16_apex(a) : en.b) : 0;
        if (ls.present) cfg->fp16.loss_scale = ls.d;
        if (isp.present)
            cfg->fp16.initial_scale_power = (int)isp.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_INITIAL_SCALE_POWER;
        if (lsw.present) cfg->fp16.loss_scale_window = lsw.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_LOSS_SCALE_WINDOW;
        if (hy.present) cfg->fp16.hysteresis = (int)hy.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_HYSTERESIS;
        if (mls.present) cfg->fp16.min_loss_scale = mls.d, cfg->fp16.explicit_mask |= LOOM_DS_FP16_MIN_LOSS_SCALE;
        cfg->fp16.consecutive_hysteresis_present = ch.present;
        cfg->fp16.consecutive_hysteresis = ch.present && ch.b;
    }

    /* amp */
    cfg->amp.present = am.present;
    cfg->amp.enabled = args_fp16_apex(a);
    if (!(cfg->amp.opt_level = dup_text(a->fp16_opt_level && *a->fp16_opt_level ? a->fp16_opt_level : "O1")))
        return loom_error(LOOM_E_NOMEM, "out of memory");
    if (am.present) {
        const char *p = "amp.";
        const cJSON *j = am.json;
        value en, ol;
        if ((st = check_keys(c, j, p, amp_keys, COUNT(amp_keys))) != LOOM_OK ||
            (st = get(c, j, p, "enabled", K_BOOL, 1, &en)) != LOOM_OK ||
            (st = get(c, j, p, "opt_level", K_STR, 0, &ol)) != LOOM_OK)
            return st;
        cfg->amp.enabled = en.present ? (en.is_auto ? args_fp16_apex(a) : en.b) : 0;
        if (ol.present && strcmp(ol.s, "auto") != 0) {
            if (strlen(ol.s) != 2 || ol.s[0] != 'O' || ol.s[1] < '0' || ol.s[1] > '3')
                return loom_error(LOOM_E_INVALID, "%s: amp.opt_level \"%s\": expected O0, O1, O2, O3 or \"auto\"",
                                  c->file, ol.s);
            free(cfg->amp.opt_level);
            if (!(cfg->amp.opt_level = dup_text(ol.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
        }
        for (const cJSON *k = j->child; k; k = k->next) {
            if (!strcmp(k->string, "enabled") || !strcmp(k->string, "opt_level")) continue;
            if (is_auto(k))
                return loom_error(LOOM_E_INVALID,
                                  "%s: amp.%s: \"auto\" is not allowed here (no command-line counterpart)", c->file,
                                  k->string);
            const char *key = NULL;
            for (size_t i = 0; i < COUNT(amp_keys); i++)
                if (!strcmp(amp_keys[i], k->string)) key = amp_keys[i];
            char *text = cJSON_PrintUnformatted(k);
            if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
            cfg->amp.passthrough_keys[cfg->amp.n_passthrough] = key;
            cfg->amp.passthrough_values[cfg->amp.n_passthrough++] = text;
        }
    }

    /* bf16 */
    cfg->bf16.present = bf.present;
    cfg->bf16.enabled = a->bf16;
    if (bf.present) {
        static const char *const bf16_keys[] = {"enabled"};
        value en;
        if ((st = check_keys(c, bf.json, "bf16.", bf16_keys, 1)) != LOOM_OK ||
            (st = get(c, bf.json, "bf16.", "enabled", K_BOOL, 1, &en)) != LOOM_OK)
            return st;
        cfg->bf16.enabled = en.present ? (en.is_auto ? a->bf16 : en.b) : 0;
    }

    if (cfg->fp16.enabled && cfg->amp.enabled)
        return loom_error(LOOM_E_INVALID,
                          "%s: fp16.enabled and amp.enabled are both true: choose one (DeepSpeed asserts it)", c->file);
    if (cfg->bf16.enabled && (cfg->fp16.enabled || cfg->amp.enabled))
        return loom_error(LOOM_E_INVALID, "%s: bf16.enabled and %s.enabled are both true: choose one", c->file,
                          cfg->fp16.enabled ? "fp16" : "amp");
    if (cfg->amp.enabled && cfg->zero.stage > 0)
        return loom_error(
            LOOM_E_INVALID,
            "%s: amp (apex) cannot be combined with ZeRO stage %d (DeepSpeed asserts it); use fp16 instead", c->file,
            cfg->zero.stage);
    if (cfg->optimizer_choice.plugin && !strcmp(cfg->optimizer_choice.plugin, "lamb") && cfg->fp16.enabled &&
        cfg->fp16.loss_scale > 0)
        return loom_error(LOOM_E_INVALID,
                          "%s: Lamb needs dynamic loss scaling: fp16.loss_scale must be 0 (DeepSpeed asserts it)",
                          c->file);
    return LOOM_OK;
}

/* ---- load / free / resolve ---------------------------------------------------------------- */

static const char *const top_keys[] = {"train_batch_size",
                                       "train_micro_batch_size_per_gpu",
                                       "gradient_accumulation_steps",
                                       "gradient_clipping",
                                       "steps_per_print",
                                       "wall_clock_breakdown",
                                       "zero_allow_untested_optimizer",
                                       "prescale_gradients",
                                       "gradient_predivide_factor",
                                       "zero_optimization",
                                       "optimizer",
                                       "scheduler",
                                       "fp16",
                                       "amp",
                                       "bf16"};

void loom_ds_config_free(loom_ds_config *cfg)
{
    if (!cfg) return;
    free(cfg->path);
    choice_free(&cfg->sharding);
    choice_free(&cfg->optimizer_choice);
    choice_free(&cfg->scheduler_choice);
    free(cfg->optimizer.type);
    free(cfg->optimizer.comm_backend_name);
    free(cfg->scheduler.type);
    free(cfg->amp.opt_level);
    for (size_t i = 0; i < cfg->amp.n_passthrough; i++)
        free(cfg->amp.passthrough_values[i]);
    memset(cfg, 0, sizeof *cfg);
}

loom_status loom_ds_config_load(const char *path, const loom_args *args, int world_size, loom_ds_config *out)
{
    memset(out, 0, sizeof *out);
    if (!path || !*path) return loom_error(LOOM_E_INVALID, "--deepspeed: no config file given");
    if (world_size < 1) return loom_error(LOOM_E_INVALID, "%s: world size %d must be >= 1", path, world_size);
    char *text = NULL;
    size_t len = 0;
    loom_status st = loom_read_file(path, &text, &len);
    if (st != LOOM_OK) return loom_error_context(st, "--deepspeed");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        st = loom__json_malformed(path, text, end);
        free(text);
        return st;
    }
    free(text);
    ctx c = {path, args, out};
    if (!cJSON_IsObject(root)) {
        st = loom_error(LOOM_E_FORMAT, "%s: expected a JSON object (a DeepSpeed config), got %s", path,
                        loom__json_type_name(root));
        goto done;
    }
    out->world_size = world_size;
    if (!(out->path = dup_text(path))) {
        st = loom_error(LOOM_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = check_keys(&c, root, "", top_keys, COUNT(top_keys))) != LOOM_OK ||
        (st = parse_batch(&c, root)) != LOOM_OK || (st = parse_zero(&c, root)) != LOOM_OK ||
        (st = parse_optimizer(&c, root)) != LOOM_OK || (st = parse_scheduler(&c, root)) != LOOM_OK ||
        (st = parse_precision(&c, root)) != LOOM_OK)
        goto done;
done:
    cJSON_Delete(root);
    if (st != LOOM_OK) loom_ds_config_free(out);
    return st;
}

loom_status loom_ds_config_resolve_steps(loom_ds_config *cfg, int64_t total_steps)
{
    if (total_steps <= 0)
        return loom_error(LOOM_E_INVALID, "%s: total optimizer steps %lld must be > 0", cfg->path,
                          (long long)total_steps);
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    if (cfg->scheduler.total_num_steps_explicit >= 0 && cfg->scheduler.total_num_steps_explicit != total_steps)
        return loom_error(LOOM_E_INVALID,
                          "scheduler.params.total_num_steps=%lld in %s but the run has %lld optimizer steps (use "
                          "\"auto\" or make them agree)",
                          (long long)cfg->scheduler.total_num_steps_explicit, cfg->path, (long long)total_steps);
    int64_t warmup = cfg->scheduler.warmup_steps > 0 ? cfg->scheduler.warmup_steps
                                                     : (int64_t)ceil(cfg->scheduler.warmup_ratio * (double)total_steps);
    if (cfg->scheduler.warmup_num_steps_explicit >= 0 && cfg->scheduler.warmup_num_steps_explicit != warmup)
        return loom_error(LOOM_E_INVALID,
                          "scheduler.params.warmup_num_steps=%lld in %s but --warmup_ratio %g gives %lld steps (use "
                          "\"auto\" or make them agree)",
                          (long long)cfg->scheduler.warmup_num_steps_explicit, cfg->path, cfg->scheduler.warmup_ratio,
                          (long long)warmup);
    char buf[32];
    loom_config_default *e;
    if (cfg->scheduler.total_steps_pending && (e = find_entry(ch, "total_num_steps"))) {
        snprintf(buf, sizeof buf, "%lld", (long long)total_steps);
        char *v = dup_text(buf);
        if (!v) return loom_error(LOOM_E_NOMEM, "out of memory");
        free((char *)(uintptr_t)e->value);
        e->value = v;
        cfg->scheduler.total_steps_pending = 0;
    }
    if (cfg->scheduler.warmup_steps_pending && (e = find_entry(ch, "warmup_num_steps"))) {
        snprintf(buf, sizeof buf, "%lld", (long long)warmup);
        char *v = dup_text(buf);
        if (!v) return loom_error(LOOM_E_NOMEM, "out of memory");
        free((char *)(uintptr_t)e->value);
        e->value = v;
        cfg->scheduler.warmup_steps_pending = 0;
    }
    return LOOM_OK;
}

/* ---- merged JSON -------------------------------------------------------------------------- */

/* A number or bool as text -> JSON; anything else is a string. */
static cJSON *entry_json(const char *text)
{
    if (!text) return cJSON_CreateNull();
    if (!strcmp(text, "true")) return cJSON_CreateTrue();
    if (!strcmp(text, "false")) return cJSON_CreateFalse();
    char *end = NULL;
    double d = strtod(text, &end);
    if (end != text && *end == '\0') return cJSON_CreateNumber(d);
    return cJSON_CreateString(text);
}

static void write_value(FILE *out, const cJSON *v, int depth)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        int object = cJSON_IsObject(v);
        if (!v->child) {
            fputs(object ? "{}" : "[]", out);
            return;
        }
        /* Short arrays of scalars (betas) on one line. */
        if (!object) {
            fputc('[', out);
            for (const cJSON *c = v->child; c; c = c->next) {
                if (c != v->child) fputs(", ", out);
                write_value(out, c, depth + 1);
            }
            fputc(']', out);
            return;
        }
        fputc('{', out);
        for (const cJSON *c = v->child; c; c = c->next) {
            fprintf(out, "%s\n%*s", c == v->child ? "" : ",", 2 * (depth + 1), "");
            loom__json_write_string(out, c->string);
            fputs(": ", out);
            write_value(out, c, depth + 1);
        }
        fprintf(out, "\n%*s}", 2 * depth, "");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        char buf[64];
        if (floor(d) == d && fabs(d) < 1e15)
            snprintf(buf, sizeof buf, "%lld", (long long)d);
        else
            loom__format_shortest(buf, sizeof buf, d);
        fputs(buf, out);
    } else if (cJSON_IsString(v)) {
        loom__json_write_string(out, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        fputs(cJSON_IsTrue(v) ? "true" : "false", out);
    } else {
        fputs("null", out);
    }
}

static cJSON *build_json(const loom_ds_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddNumberToObject(root, "train_batch_size", (double)cfg->train_batch_size);
    cJSON_AddNumberToObject(root, "train_micro_batch_size_per_gpu", (double)cfg->train_micro_batch_size_per_gpu);
    cJSON_AddNumberToObject(root, "gradient_accumulation_steps", (double)cfg->gradient_accumulation_steps);
    cJSON_AddNumberToObject(root, "gradient_clipping", cfg->gradient_clipping);
    cJSON_AddNumberToObject(root, "steps_per_print", (double)cfg->steps_per_print);
    cJSON_AddBoolToObject(root, "wall_clock_breakdown", cfg->wall_clock_breakdown);
    cJSON_AddBoolToObject(root, "zero_allow_untested_optimizer",
                          cfg->zero_allow_untested_optimizer || !cfg->optimizer.present);

    cJSON *z = cJSON_AddObjectToObject(root, "zero_optimization");
    if (z) {
        cJSON_AddNumberToObject(z, "stage", cfg->zero.stage);
        cJSON_AddBoolToObject(z, "allgather_partitions", cfg->zero.allgather_partitions);
        cJSON_AddNumberToObject(z, "allgather_bucket_size", (double)cfg->zero.allgather_bucket_size);
        cJSON_AddBoolToObject(z, "reduce_scatter", cfg->zero.reduce_scatter);
        cJSON_AddNumberToObject(z, "reduce_bucket_size", (double)cfg->zero.reduce_bucket_size);
        cJSON_AddBoolToObject(z, "overlap_comm", cfg->zero.overlap_comm);
        cJSON_AddBoolToObject(z, "contiguous_gradients", cfg->zero.contiguous_gradients);
        cJSON_AddBoolToObject(z, "cpu_offload", cfg->zero.cpu_offload);
        cJSON_AddBoolToObject(z, "load_from_fp32_weights", cfg->zero.load_from_fp32_weights);
        cJSON_AddBoolToObject(z, "elastic_checkpoint", cfg->zero.elastic_checkpoint);
        if (cfg->zero.offload_optimizer_present) {
            cJSON *o = cJSON_AddObjectToObject(z, "offload_optimizer");
            if (o) {
                cJSON_AddStringToObject(o, "device", cfg->zero.cpu_offload ? "cpu" : "none");
                cJSON_AddBoolToObject(o, "pin_memory", cfg->zero.offload_pin_memory);
            }
        }
    }

    const char *plugin = cfg->optimizer_choice.plugin ? cfg->optimizer_choice.plugin : "adamw";
    const char *type = cfg->optimizer.type;
    if (!type) {
        type = !strcmp(plugin, "adam")                                   ? "Adam"
               : !strcmp(plugin, "adamw") || !strcmp(plugin, "adamw_hf") ? "AdamW"
               : !strcmp(plugin, "sgd")                                  ? "SGD"
                                                                         : plugin;
    }
    cJSON *o = cJSON_AddObjectToObject(root, "optimizer");
    cJSON *op = o ? (cJSON_AddStringToObject(o, "type", type), cJSON_AddObjectToObject(o, "params")) : NULL;
    if (op) {
        cJSON_AddNumberToObject(op, "lr", cfg->optimizer.lr);
        if (strcmp(plugin, "sgd") != 0) {
            double b[2] = {cfg->optimizer.beta1, cfg->optimizer.beta2};
            cJSON_AddItemToObject(op, "betas", cJSON_CreateDoubleArray(b, 2));
            cJSON_AddNumberToObject(op, "eps", cfg->optimizer.eps);
        }
        cJSON_AddNumberToObject(op, "weight_decay", cfg->optimizer.weight_decay);
        if (!strcmp(plugin, "adam") || !strcmp(plugin, "adamw")) {
            if (cfg->optimizer.torch_adam) cJSON_AddTrueToObject(op, "torch_adam");
            if (!strcasecmp(type, "adam")) cJSON_AddBoolToObject(op, "adam_w_mode", !strcmp(plugin, "adamw"));
        } else if (!strcmp(plugin, "lamb")) {
            cJSON_AddNumberToObject(op, "max_coeff", cfg->optimizer.max_coeff);
            cJSON_AddNumberToObject(op, "min_coeff", cfg->optimizer.min_coeff);
            cJSON_AddBoolToObject(op, "bias_correction", cfg->optimizer.bias_correction);
        } else if (!strcmp(plugin, "onebit_adam")) {
            cJSON_AddNumberToObject(op, "freeze_step", (double)cfg->optimizer.freeze_step);
            cJSON_AddBoolToObject(op, "cuda_aware", cfg->optimizer.cuda_aware);
            cJSON_AddStringToObject(op, "comm_backend_name", cfg->optimizer.comm_backend_name);
        }
    }

    if (cfg->scheduler_choice.plugin) {
        cJSON *s = cJSON_AddObjectToObject(root, "scheduler");
        cJSON *sp =
            s ? (cJSON_AddStringToObject(s, "type", cfg->scheduler.type), cJSON_AddObjectToObject(s, "params")) : NULL;
        for (size_t i = 0; sp && i < cfg->scheduler_choice.n_entries; i++)
            cJSON_AddItemToObject(sp, cfg->scheduler_choice.entries[i].key,
                                  entry_json(cfg->scheduler_choice.entries[i].value));
    }

    cJSON *f = cJSON_AddObjectToObject(root, "fp16");
    if (f) {
        cJSON_AddBoolToObject(f, "enabled", cfg->fp16.enabled);
        if (cfg->fp16.present) cJSON_AddNumberToObject(f, "loss_scale", cfg->fp16.loss_scale);
        unsigned m = cfg->fp16.explicit_mask;
        if (m & LOOM_DS_FP16_INITIAL_SCALE_POWER)
            cJSON_AddNumberToObject(f, "initial_scale_power", cfg->fp16.initial_scale_power);
        if (m & LOOM_DS_FP16_LOSS_SCALE_WINDOW)
            cJSON_AddNumberToObject(f, "loss_scale_window", (double)cfg->fp16.loss_scale_window);
        if (m & LOOM_DS_FP16_HYSTERESIS) cJSON_AddNumberToObject(f, "hysteresis", cfg->fp16.hysteresis);
        if (m & LOOM_DS_FP16_MIN_LOSS_SCALE) cJSON_AddNumberToObject(f, "min_loss_scale", cfg->fp16.min_loss_scale);
        if (cfg->fp16.consecutive_hysteresis_present)
            cJSON_AddBoolToObject(f, "consecutive_hysteresis", cfg->fp16.consecutive_hysteresis);
    }
    if (cfg->amp.present || cfg->amp.enabled) {
        cJSON *a = cJSON_AddObjectToObject(root, "amp");
        if (a) {
            cJSON_AddBoolToObject(a, "enabled", cfg->amp.enabled);
            cJSON_AddStringToObject(a, "opt_level", cfg->amp.opt_level);
            for (size_t i = 0; i < cfg->amp.n_passthrough; i++)
                cJSON_AddItemToObject(a, cfg->amp.passthrough_keys[i], cJSON_Parse(cfg->amp.passthrough_values[i]));
        }
    }
    if (cfg->bf16.present || cfg->bf16.enabled) {
        cJSON *b = cJSON_AddObjectToObject(root, "bf16");
        if (b) cJSON_AddBoolToObject(b, "enabled", cfg->bf16.enabled);
    }
    return root;
}

loom_status loom_ds_config_write_json(const loom_ds_config *cfg, FILE *out)
{
    cJSON *root = build_json(cfg);
    if (!root) return loom_error(LOOM_E_NOMEM, "out of memory");
    write_value(out, root, 0);
    fputc('\n', out);
    cJSON_Delete(root);
    if (ferror(out)) return loom_error(LOOM_E_IO, "cannot write the merged DeepSpeed config");
    return LOOM_OK;
}
