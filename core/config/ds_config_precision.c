/* ds_config_precision.c - the fp16, amp and bf16 sections (which precision plugin runs is
 * decided from them in the trainer), and the combinations DeepSpeed refuses. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "ds_config_internal.h"
#include "error.h"

/* auto_cast casts a model's floating-point inputs to fp16, which loom's amp does anyway (it
 * computes in fp16 whatever the inputs' type), so it is accepted either way. */
static const char *const fp16_keys[] = {"enabled",
                                        "loss_scale",
                                        "initial_scale_power",
                                        "loss_scale_window",
                                        "hysteresis",
                                        "min_loss_scale",
                                        "consecutive_hysteresis",
                                        "auto_cast",
                                        "fp16_master_weights_and_grads"};
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

/* fp16: DeepSpeed's dynamic loss scaler; the keys written are remembered (explicit_mask) so the
 * merged JSON and the amp plugin tell them from defaults. Absent: HF injects --fp16. */
static loom_status parse_fp16(ds_ctx *c, const ds_value *f)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    loom_status st;
    cfg->fp16.present = f->present;
    cfg->fp16.enabled = a->fp16 && !loom__args_fp16_apex(a); /* absent: HF injects --fp16 */
    cfg->fp16.loss_scale = 0;
    cfg->fp16.initial_scale_power = 32;
    cfg->fp16.loss_scale_window = 1000;
    cfg->fp16.hysteresis = 2;
    cfg->fp16.min_loss_scale = 1;
    if (f->present) {
        const char *p = "fp16.";
        const cJSON *j = f->json;
        ds_value en, ls, isp, lsw, hy, mls, ch, ac, mw;
        if ((st = loom__ds_check_keys(c, j, p, fp16_keys, COUNT(fp16_keys))) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "enabled", K_BOOL, 1, &en)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "loss_scale", K_NUM, 0, &ls)) != LOOM_OK ||
            (st = loom__ds_need_nonneg(c, p, "loss_scale", &ls)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "initial_scale_power", K_INT, 0, &isp)) != LOOM_OK ||
            (st = loom__ds_need_min_int(c, p, "initial_scale_power", &isp, 0)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "loss_scale_window", K_INT, 0, &lsw)) != LOOM_OK ||
            (st = loom__ds_need_min_int(c, p, "loss_scale_window", &lsw, 1)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "hysteresis", K_INT, 0, &hy)) != LOOM_OK ||
            (st = loom__ds_need_min_int(c, p, "hysteresis", &hy, 1)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "min_loss_scale", K_NUM, 0, &mls)) != LOOM_OK ||
            (st = loom__ds_need_nonneg(c, p, "min_loss_scale", &mls)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "consecutive_hysteresis", K_BOOL, 0, &ch)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "auto_cast", K_BOOL, 0, &ac)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "fp16_master_weights_and_grads", K_BOOL, 0, &mw)) != LOOM_OK)
            return st;
        if (isp.present && isp.i > 127)
            return loom_error(LOOM_E_INVALID,
                              "%s: fp16.initial_scale_power %lld: 2^power does not fit a float (max 127)", c->file,
                              (long long)isp.i);
        cfg->fp16.enabled = en.present ? (en.is_auto ? a->fp16 && !loom__args_fp16_apex(a) : en.b) : 0;
        if (cfg->fp16.enabled && mw.present && mw.b)
            return loom_error(LOOM_E_UNSUPPORTED,
                              "%s: fp16.fp16_master_weights_and_grads true is not supported (loom updates fp32 master "
                              "weights from fp32 gradients)",
                              c->file);
        if (ls.present) cfg->fp16.loss_scale = ls.d;
        if (isp.present)
            cfg->fp16.initial_scale_power = (int)isp.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_INITIAL_SCALE_POWER;
        if (lsw.present) cfg->fp16.loss_scale_window = lsw.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_LOSS_SCALE_WINDOW;
        if (hy.present) cfg->fp16.hysteresis = (int)hy.i, cfg->fp16.explicit_mask |= LOOM_DS_FP16_HYSTERESIS;
        if (mls.present) cfg->fp16.min_loss_scale = mls.d, cfg->fp16.explicit_mask |= LOOM_DS_FP16_MIN_LOSS_SCALE;
        cfg->fp16.consecutive_hysteresis_present = ch.present;
        cfg->fp16.consecutive_hysteresis = ch.present && ch.b;
    }
    return LOOM_OK;
}

/* amp: apex at opt_level; the other keys pass through to the apex plugin as written. */
static loom_status parse_amp(ds_ctx *c, const ds_value *am)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    loom_status st;
    cfg->amp.present = am->present;
    cfg->amp.enabled = loom__args_fp16_apex(a);
    if (!(cfg->amp.opt_level = loom__ds_dup_text(a->fp16_opt_level && *a->fp16_opt_level ? a->fp16_opt_level : "O1")))
        return loom_error(LOOM_E_NOMEM, "out of memory");
    if (am->present) {
        const char *p = "amp.";
        const cJSON *j = am->json;
        ds_value en, ol;
        if ((st = loom__ds_check_keys(c, j, p, amp_keys, COUNT(amp_keys))) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "enabled", K_BOOL, 1, &en)) != LOOM_OK ||
            (st = loom__ds_get(c, j, p, "opt_level", K_STR, 0, &ol)) != LOOM_OK)
            return st;
        cfg->amp.enabled = en.present ? (en.is_auto ? loom__args_fp16_apex(a) : en.b) : 0;
        if (ol.present && strcmp(ol.s, "auto") != 0) {
            if (strlen(ol.s) != 2 || ol.s[0] != 'O' || ol.s[1] < '0' || ol.s[1] > '3')
                return loom_error(LOOM_E_INVALID, "%s: amp.opt_level \"%s\": expected O0, O1, O2, O3 or \"auto\"",
                                  c->file, ol.s);
            free(cfg->amp.opt_level);
            if (!(cfg->amp.opt_level = loom__ds_dup_text(ol.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
        }
        for (const cJSON *k = j->child; k; k = k->next) {
            if (!strcmp(k->string, "enabled") || !strcmp(k->string, "opt_level")) continue;
            if (loom__ds_is_auto(k))
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
    return LOOM_OK;
}

/* bf16 (or its old name bfloat16): on or off ("auto": --bf16). immediate_grad_update says when
 * DeepSpeed's bf16 optimizer adds each micro-batch's gradients into its fp32 ones (in the
 * backward hooks or after backward): the same sums, so it is accepted either way. */
static loom_status parse_bf16(ds_ctx *c, const ds_value *bf, const char *name)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    loom_status st;
    cfg->bf16.present = bf->present;
    cfg->bf16.enabled = a->bf16;
    if (bf->present) {
        static const ds_key bf16_keys[] = {{"enabled", K_BOOL, DS_AUTO}, {"immediate_grad_update", K_BOOL, 0}};
        char p[16];
        snprintf(p, sizeof p, "%s.", name);
        ds_value en;
        if ((st = loom__ds_check_table(c, bf->json, p, bf16_keys, COUNT(bf16_keys))) != LOOM_OK ||
            (st = loom__ds_get(c, bf->json, p, "enabled", K_BOOL, 1, &en)) != LOOM_OK)
            return st;
        cfg->bf16.enabled = en.present ? (en.is_auto ? a->bf16 : en.b) : 0;
    }
    return LOOM_OK;
}

/* The combinations DeepSpeed refuses. */
static loom_status check_precision_combinations(const ds_ctx *c)
{
    const loom_ds_config *cfg = c->cfg;
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

loom_status loom__ds_parse_precision(ds_ctx *c, const cJSON *root)
{
    loom_status st;
    ds_value f, am, bf, old;
    if ((st = loom__ds_get(c, root, "", "fp16", K_OBJ, 0, &f)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "amp", K_OBJ, 0, &am)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "bf16", K_OBJ, 0, &bf)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "bfloat16", K_OBJ, 0, &old)) != LOOM_OK)
        return st;
    if (bf.present && old.present)
        return loom_error(LOOM_E_INVALID, "%s: bf16 and bfloat16 are one section (bfloat16 is its old name): give one",
                          c->file);
    if ((st = parse_fp16(c, &f)) != LOOM_OK || (st = parse_amp(c, &am)) != LOOM_OK ||
        (st = parse_bf16(c, old.present ? &old : &bf, old.present ? "bfloat16" : "bf16")) != LOOM_OK)
        return st;
    return check_precision_combinations(c);
}
