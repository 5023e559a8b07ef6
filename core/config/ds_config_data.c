/* ds_config_data.c - the keys of today's DeepSpeed that name something loom does: the
 * dataloader's last batch and where checkpoints go (each the same as a run argument, with the
 * batch sizes' agreement rule), and the dtypes gradients are reduced and accumulated in (which
 * must be loom's, the parameters' dtype, as DeepSpeed's defaults are). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ds_config_internal.h"
#include "error.h"

/* A boolean key that is a run argument: true/false must agree with it ("auto" takes it). The
 * file's value already replaced the argument's default (args_deepspeed.c), so a disagreement
 * is with a flag the user gave. */
static loom_status merge_bool(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key, int allow_auto,
                              const char *flag, int hf, int *out)
{
    ds_value v;
    loom_status st = loom__ds_get(c, obj, prefix, key, K_BOOL, allow_auto, &v);
    if (st != LOOM_OK) return st;
    if (v.present && !v.is_auto && v.b != hf)
        return loom_error(LOOM_E_INVALID, "%s%s=%s in %s but --%s %s (%smake them agree)", prefix, key,
                          v.b ? "true" : "false", c->file, flag, hf ? "true" : "false",
                          allow_auto ? "use \"auto\" or " : "");
    *out = hf;
    return LOOM_OK;
}

/* checkpoint: use_node_local_storage is --save_on_each_node (HF writes the one from the
 * other); tag validation and the pipeline's parallel write concern checkpoints loom does not
 * write; load_universal asks to resume from DeepSpeed's universal format. */
static loom_status parse_checkpoint(ds_ctx *c, const cJSON *root)
{
    static const ds_key keys[] = {{"tag_validation", K_STR, 0},
                                  {"load_universal", K_BOOL, 0},
                                  {"use_node_local_storage", K_BOOL, 0},
                                  {"parallel_write", K_OBJ, 0}};
    static const ds_key parallel_write_keys[] = {{"pipeline_stage", K_BOOL, 0}};
    const char *p = "checkpoint.";
    ds_value sec, tag;
    loom_status st = loom__ds_get(c, root, "", "checkpoint", K_OBJ, 0, &sec);
    c->cfg->use_node_local_storage = c->args->save_on_each_node;
    if (st != LOOM_OK || !sec.present) return st;
    const cJSON *pw = cJSON_GetObjectItemCaseSensitive(sec.json, "parallel_write");
    if ((st = loom__ds_check_table(c, sec.json, p, keys, COUNT(keys))) != LOOM_OK ||
        (pw && (st = loom__ds_check_table(c, pw, "checkpoint.parallel_write.", parallel_write_keys,
                                          COUNT(parallel_write_keys))) != LOOM_OK) ||
        (st = loom__ds_get(c, sec.json, p, "tag_validation", K_STR, 0, &tag)) != LOOM_OK)
        return st;
    if (tag.present && strcasecmp(tag.s, "ignore") != 0 && strcasecmp(tag.s, "warn") != 0 &&
        strcasecmp(tag.s, "fail") != 0)
        return loom_error(LOOM_E_INVALID, "%s: checkpoint.tag_validation \"%s\": expected Ignore, Warn or Fail",
                          c->file, tag.s);
    if (loom__ds_is_true(sec.json, "load_universal") &&
        (st = loom__ds_note(c,
                            "%s: checkpoint.load_universal true has no effect here (loom resumes from its own "
                            "checkpoints with --resume_from_checkpoint)",
                            c->file)) != LOOM_OK)
        return st;
    return merge_bool(c, sec.json, p, "use_node_local_storage", 0, "save_on_each_node", c->args->save_on_each_node,
                      &c->cfg->use_node_local_storage);
}

/* The dtype loom reduces and accumulates gradients in: the parameters' (the precision plugin the
 * sections chose: fp16 and apex O2/O3 keep fp16 parameters, bf16 bf16 ones). */
static const char *loom_grad_dtype(const loom_ds_config *cfg)
{
    if (cfg->fp16.enabled) return "fp16";
    if (cfg->bf16.enabled) return "bf16";
    if (cfg->amp.enabled && (!strcmp(cfg->amp.opt_level, "O2") || !strcmp(cfg->amp.opt_level, "O3"))) return "fp16";
    return "fp32";
}

/* A dtype key: null (DeepSpeed's default) or fp32 / fp16 / bf16 in any case, as DeepSpeed
 * lower-cases it; `what` is loom's when it must name it, NULL when any is accepted. */
static loom_status check_dtype(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key, const char *what,
                               const char *action)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) return LOOM_OK;
    ds_value v;
    loom_status st = loom__ds_get(c, obj, prefix, key, K_STR, 0, &v);
    if (st != LOOM_OK) return st;
    static const char *const dtypes[] = {"fp32", "fp16", "bf16"};
    const char *dtype = NULL;
    for (size_t i = 0; i < COUNT(dtypes); i++)
        if (!strcasecmp(v.s, dtypes[i])) dtype = dtypes[i];
    if (!dtype)
        return loom_error(LOOM_E_INVALID, "%s: %s%s \"%s\": expected \"fp32\", \"fp16\" or \"bf16\"", c->file, prefix,
                          key, v.s);
    if (what && strcmp(dtype, what) != 0)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: %s%s \"%s\" is not supported: loom %s gradients in the parameters' dtype, %s in this "
                          "run (leave the key out or write \"%s\")",
                          c->file, prefix, key, v.s, action, what, what);
    return LOOM_OK;
}

loom_status loom__ds_parse_data(ds_ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    static const ds_key data_types_keys[] = {{"grad_accum_dtype", K_STR, DS_NULL}};
    ds_value dt;
    loom_status st;
    cfg->grad_dtype = loom_grad_dtype(cfg);
    if ((st = merge_bool(c, root, "", "dataloader_drop_last", 1, "dataloader_drop_last", c->args->dataloader_drop_last,
                         &cfg->dataloader_drop_last)) != LOOM_OK ||
        (st = parse_checkpoint(c, root)) != LOOM_OK ||
        (st = check_dtype(c, root, "", "communication_data_type", cfg->grad_dtype, "reduces")) != LOOM_OK ||
        /* Ulysses sequence parallelism's all-to-all, which loom does not run. */
        (st = check_dtype(c, root, "", "seq_parallel_comm_data_type", NULL, NULL)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "data_types", K_OBJ, 0, &dt)) != LOOM_OK)
        return st;
    if (!dt.present) return LOOM_OK;
    if ((st = loom__ds_check_table(c, dt.json, "data_types.", data_types_keys, COUNT(data_types_keys))) != LOOM_OK)
        return st;
    return check_dtype(c, dt.json, "data_types.", "grad_accum_dtype", cfg->grad_dtype, "accumulates");
}
