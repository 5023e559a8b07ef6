/* args_deepspeed.c - the values a --deepspeed file writes for run arguments. The seed's
 * advice is to "supply most of the configuration inside the file, and just use a few required
 * command line arguments": so a number (or true/false) written in the file replaces the
 * argument's default, and only an argument the user gave (command line or --config) that
 * disagrees with it is an error, showing both. "auto" and absent keys leave the argument alone
 * (loom_ds_config_load then takes the argument's value). This pass is lenient about the file:
 * what it cannot read, parse or type-check is left for loom_ds_config_load, which reports it
 * with the schema's rules. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"
#include "fileutil.h"

typedef struct adopt_ctx {
    loom_args *args;
    loom__arg_origin *origin;
    const char *file;                    /* loom__ds_label(args->deepspeed) */
    const char *key_of[LOOM__ARG_COUNT]; /* the file key a value was adopted from */
} adopt_ctx;

static int given(const adopt_ctx *c, int row)
{
    return c->origin->source[row] != NULL;
}

static void adopted(adopt_ctx *c, int row, const char *key)
{
    c->origin->source[row] = c->file;
    c->key_of[row] = key;
}

/* "<key>=<file value> in <file> but --<flag> <value> on the command line (...)", or, when an
 * earlier key of the same file set the argument, both keys. */
static loom_status disagree(const adopt_ctx *c, const char *key, const char *file_value, int row)
{
    const loom__arg_desc *d = &loom__arg_table[row];
    char *value = loom__arg_format(c->args, d);
    char where[512];
    loom_status st;
    if (c->key_of[row])
        st = loom_error(LOOM_E_INVALID, "%s=%s in %s but %s=%s there: both set --%s (make them agree)", key, file_value,
                        c->file, c->key_of[row], value ? value : "?", d->name);
    else
        st =
            loom_error(LOOM_E_INVALID,
                       "%s=%s in %s but --%s %s%s (write \"auto\" in the file, leave the flag out, or make them agree)",
                       key, file_value, c->file, d->name, value ? value : "?",
                       loom__where(c->origin->source[row], where, sizeof where));
    free(value);
    return st;
}

/* A number in the file for a FLOAT or INT row (an integer one takes integral numbers only). */
static loom_status adopt_number(adopt_ctx *c, const char *key, const cJSON *j, int row)
{
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) return LOOM_OK; /* "auto", absent, mistyped */
    const loom__arg_desc *d = &loom__arg_table[row];
    void *field = loom__arg_field(c->args, d);
    double v = j->valuedouble;
    char text[64];
    if (d->kind == LOOM__K_FLOAT) {
        if (!given(c, row)) {
            *(double *)field = v;
            adopted(c, row, key);
            return LOOM_OK;
        }
        if (*(double *)field == v) return LOOM_OK;
        loom__format_double(v, text, sizeof text);
        return disagree(c, key, text, row);
    }
    if (v != floor(v) || fabs(v) > 9.0e18) return LOOM_OK;
    if (d->kind == LOOM__K_STEPS) {
        double *steps = field;
        if (!given(c, row)) {
            *steps = v;
            adopted(c, row, key);
            return LOOM_OK;
        }
        /* A ratio is compared once the run's length is known (loom_ds_config_resolve_steps). */
        if (*steps == v || (*steps > 0 && *steps < 1)) return LOOM_OK;
        snprintf(text, sizeof text, "%lld", (long long)v);
        return disagree(c, key, text, row);
    }
    if (!given(c, row)) {
        *(int64_t *)field = (int64_t)v;
        adopted(c, row, key);
        return LOOM_OK;
    }
    if (*(int64_t *)field == (int64_t)v) return LOOM_OK;
    snprintf(text, sizeof text, "%lld", (long long)v);
    return disagree(c, key, text, row);
}

/* true/false in the file for a BOOL row whose effective value is `current`. */
static loom_status adopt_bool(adopt_ctx *c, const char *key, const cJSON *j, int row, int current)
{
    if (!cJSON_IsBool(j)) return LOOM_OK;
    int v = cJSON_IsTrue(j);
    if (!given(c, row)) {
        *(int32_t *)loom__arg_field(c->args, &loom__arg_table[row]) = v;
        adopted(c, row, key);
        return LOOM_OK;
    }
    return v == current ? LOOM_OK : disagree(c, key, v ? "true" : "false", row);
}

static loom_status adopt_string(adopt_ctx *c, const char *key, const cJSON *j, int row)
{
    if (!cJSON_IsString(j) || strcmp(j->valuestring, "auto") == 0) return LOOM_OK;
    char **field = loom__arg_field(c->args, &loom__arg_table[row]);
    if (!given(c, row)) {
        adopted(c, row, key);
        return loom__arg_set_string(field, j->valuestring);
    }
    if (*field && strcmp(*field, j->valuestring) == 0) return LOOM_OK;
    return disagree(c, key, j->valuestring, row);
}

static const cJSON *item(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static loom_status adopt_batch(adopt_ctx *c, const cJSON *root)
{
    loom_status st;
    if ((st = adopt_number(c, "train_micro_batch_size_per_gpu", item(root, "train_micro_batch_size_per_gpu"),
                           LOOM__ARG_per_device_train_batch_size)) != LOOM_OK ||
        (st = adopt_number(c, "gradient_accumulation_steps", item(root, "gradient_accumulation_steps"),
                           LOOM__ARG_gradient_accumulation_steps)) != LOOM_OK)
        return st;
    return adopt_number(c, "gradient_clipping", item(root, "gradient_clipping"), LOOM__ARG_max_grad_norm);
}

static loom_status adopt_optimizer(adopt_ctx *c, const cJSON *root)
{
    const cJSON *params = item(item(root, "optimizer"), "params");
    loom_status st;
    if ((st = adopt_number(c, "optimizer.params.lr", item(params, "lr"), LOOM__ARG_learning_rate)) != LOOM_OK ||
        (st = adopt_number(c, "optimizer.params.eps", item(params, "eps"), LOOM__ARG_adam_epsilon)) != LOOM_OK ||
        (st = adopt_number(c, "optimizer.params.weight_decay", item(params, "weight_decay"), LOOM__ARG_weight_decay)) !=
            LOOM_OK)
        return st;
    const cJSON *betas = item(params, "betas");
    if (!cJSON_IsArray(betas) || cJSON_GetArraySize(betas) != 2) return LOOM_OK;
    if ((st = adopt_number(c, "optimizer.params.betas[0]", cJSON_GetArrayItem(betas, 0), LOOM__ARG_adam_beta1)) !=
        LOOM_OK)
        return st;
    return adopt_number(c, "optimizer.params.betas[1]", cJSON_GetArrayItem(betas, 1), LOOM__ARG_adam_beta2);
}

static loom_status adopt_scheduler(adopt_ctx *c, const cJSON *root)
{
    const cJSON *section = item(root, "scheduler"), *type = item(section, "type");
    const cJSON *params = item(section, "params");
    if (!cJSON_IsString(type)) return LOOM_OK;
    int decay = strcmp(type->valuestring, "WarmupDecayLR") == 0;
    if (!decay && strcmp(type->valuestring, "WarmupLR") != 0) return LOOM_OK; /* no argument counterparts */
    loom_status st;
    if ((st = adopt_number(c, "scheduler.params.warmup_max_lr", item(params, "warmup_max_lr"),
                           LOOM__ARG_learning_rate)) != LOOM_OK)
        return st;
    /* A given --warmup_ratio is compared with the file's warmup once the run's length is known
     * (loom_ds_config_resolve_steps); adopting the steps here would silently override it. */
    if (!given(c, LOOM__ARG_warmup_ratio) &&
        (st = adopt_number(c, "scheduler.params.warmup_num_steps", item(params, "warmup_num_steps"),
                           LOOM__ARG_warmup_steps)) != LOOM_OK)
        return st;
    /* The decay's length is the run's length: it replaces the default epochs, not given ones. */
    if (decay && !given(c, LOOM__ARG_num_train_epochs))
        return adopt_number(c, "scheduler.params.total_num_steps", item(params, "total_num_steps"),
                            LOOM__ARG_max_steps);
    return LOOM_OK;
}

/* fp16.enabled is --fp16 with the native backend; amp.enabled is --fp16 --fp16_backend apex;
 * amp.opt_level is --fp16_opt_level; bf16.enabled is --bf16. */
static loom_status adopt_precision(adopt_ctx *c, const cJSON *root)
{
    loom_args *a = c->args;
    loom_status st;
    const cJSON *fp16 = item(item(root, "fp16"), "enabled");
    if (cJSON_IsBool(fp16) &&
        (st = adopt_bool(c, "fp16.enabled", fp16, LOOM__ARG_fp16, a->fp16 && !loom__args_fp16_apex(a))) != LOOM_OK)
        return st;
    const cJSON *amp = item(root, "amp"), *amp_on = item(amp, "enabled");
    if (cJSON_IsBool(amp_on)) {
        int on = cJSON_IsTrue(amp_on);
        if (on && !given(c, LOOM__ARG_fp16_backend)) {
            if ((st = loom__arg_set_string(&a->fp16_backend, "apex")) != LOOM_OK) return st;
            adopted(c, LOOM__ARG_fp16_backend, "amp.enabled");
        }
        if ((st = adopt_bool(c, "amp.enabled", amp_on, LOOM__ARG_fp16, loom__args_fp16_apex(a))) != LOOM_OK) return st;
        if (on && !loom__args_fp16_apex(a)) return disagree(c, "amp.enabled", "true", LOOM__ARG_fp16_backend);
    }
    if ((st = adopt_string(c, "amp.opt_level", item(amp, "opt_level"), LOOM__ARG_fp16_opt_level)) != LOOM_OK) return st;
    const cJSON *bf16 = item(item(root, "bf16"), "enabled");
    if (!item(root, "bf16")) bf16 = item(item(root, "bfloat16"), "enabled"); /* bf16's old name */
    if ((st = adopt_bool(c, "bf16.enabled", bf16, LOOM__ARG_bf16, a->bf16)) != LOOM_OK) return st;
    if (!a->fp16 || !a->bf16 || (!c->key_of[LOOM__ARG_fp16] && !c->key_of[LOOM__ARG_bf16])) return LOOM_OK;
    /* Two precisions, at least one of them from the file: say which keys and flags. */
    char where[512];
    if (c->key_of[LOOM__ARG_fp16] && c->key_of[LOOM__ARG_bf16])
        return loom_error(LOOM_E_INVALID, "%s: bf16.enabled and %s are both true: choose one", c->file,
                          c->key_of[LOOM__ARG_fp16]);
    int from_file = c->key_of[LOOM__ARG_bf16] ? LOOM__ARG_bf16 : LOOM__ARG_fp16;
    int flag = from_file == LOOM__ARG_bf16 ? LOOM__ARG_fp16 : LOOM__ARG_bf16;
    return loom_error(LOOM_E_INVALID, "%s=true in %s but --%s%s: choose one precision", c->key_of[from_file], c->file,
                      loom__arg_table[flag].name, loom__where(c->origin->source[flag], where, sizeof where));
}

/* Today's DeepSpeed keys that are run arguments: dataloader_drop_last, and
 * checkpoint.use_node_local_storage (HF writes it from --save_on_each_node). */
static loom_status adopt_data(adopt_ctx *c, const cJSON *root)
{
    loom_args *a = c->args;
    loom_status st = adopt_bool(c, "dataloader_drop_last", item(root, "dataloader_drop_last"),
                                LOOM__ARG_dataloader_drop_last, a->dataloader_drop_last);
    if (st != LOOM_OK) return st;
    return adopt_bool(c, "checkpoint.use_node_local_storage", item(item(root, "checkpoint"), "use_node_local_storage"),
                      LOOM__ARG_save_on_each_node, a->save_on_each_node);
}

int loom__ds_is_inline(const char *value)
{
    while (*value == ' ' || *value == '\t' || *value == '\n' || *value == '\r')
        value++;
    return *value == '{';
}

const char *loom__ds_label(const char *value)
{
    return loom__ds_is_inline(value) ? "--deepspeed (inline dict)" : value;
}

loom_status loom__ds_read_json(const char *value, cJSON **root)
{
    if (loom__ds_is_inline(value)) return loom__json_parse_strict(loom__ds_label(value), value, strlen(value), root);
    return loom__json_read_file("--deepspeed", value, LOOM_READ_FILE_MAX, root);
}

loom_status loom__args_adopt_deepspeed(loom_args *args, loom__arg_origin *origin)
{
    cJSON *root = NULL;
    if (loom__ds_read_json(args->deepspeed, &root) != LOOM_OK) {
        loom_error_clear(); /* reported by loom_ds_config_load, with the file's context */
        return LOOM_OK;
    }
    adopt_ctx *c = calloc(1, sizeof *c);
    loom_status st = c ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory");
    if (st == LOOM_OK && cJSON_IsObject(root)) {
        *c = (adopt_ctx){.args = args, .origin = origin, .file = loom__ds_label(args->deepspeed)};
        if ((st = adopt_batch(c, root)) == LOOM_OK && (st = adopt_optimizer(c, root)) == LOOM_OK &&
            (st = adopt_scheduler(c, root)) == LOOM_OK && (st = adopt_precision(c, root)) == LOOM_OK)
            st = adopt_data(c, root);
    }
    free(c);
    cJSON_Delete(root);
    return st;
}
