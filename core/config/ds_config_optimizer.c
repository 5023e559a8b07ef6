/* ds_config_optimizer.c - the optimizer section: Adam, AdamW, Lamb, OneBitAdam, Adagrad and Lion
 * onto loom's optimizer plugins, their hyper-parameters merged with the command line; without the section,
 * the command line's optimizer (as HF injects it). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ds_config_internal.h"
#include "error.h"
#include "json_util.h"

static loom_status add_common_optimizer_entries(loom_ds_config *cfg)
{
    loom_ds_plugin_choice *ch = &cfg->optimizer_choice;
    loom_status st;
    if ((st = loom__ds_add_double(ch, "lr", cfg->optimizer.lr)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "beta1", cfg->optimizer.beta1)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "beta2", cfg->optimizer.beta2)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "eps", cfg->optimizer.eps)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "weight_decay", cfg->optimizer.weight_decay)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

typedef enum { ADAM, ADAMW, LAMB, ONEBIT, ADAGRAD, LION } optimizer_type;

/* optimizer.type, case-insensitive as DeepSpeed reads it. */
static loom_status optimizer_type_of(const ds_ctx *c, const char *type, optimizer_type *out)
{
    if (strcasecmp(type, "adam") == 0)
        *out = ADAM;
    else if (strcasecmp(type, "adamw") == 0)
        *out = ADAMW;
    else if (strcasecmp(type, "lamb") == 0)
        *out = LAMB;
    else if (strcasecmp(type, "onebitadam") == 0)
        *out = ONEBIT;
    else if (strcasecmp(type, "adagrad") == 0)
        *out = ADAGRAD;
    else if (strcasecmp(type, "lion") == 0)
        *out = LION;
    else
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: optimizer.type \"%s\" is not supported (supported: Adam, AdamW, Lamb, OneBitAdam, "
                          "Adagrad, Lion)",
                          c->file, type);
    return LOOM_OK;
}

/* The keys optimizer.params of this type accepts. */
static loom_status check_params_keys(const ds_ctx *c, const cJSON *pj, optimizer_type t)
{
    static const char *const adam_keys[] = {"lr", "betas", "eps", "weight_decay", "torch_adam", "adam_w_mode"};
    static const char *const lamb_keys[] = {"lr",        "betas",          "eps", "weight_decay", "max_coeff",
                                            "min_coeff", "bias_correction"};
    static const char *const onebit_keys[] = {
        "lr", "betas", "eps", "weight_decay", "freeze_step", "cuda_aware", "comm_backend_name"};
    /* DeepSpeedCPUAdagrad's and FusedLion's / DeepSpeedCPULion's parameters, which both of each
     * pair take (docs/semantics/deepspeed.md). */
    static const char *const adagrad_keys[] = {"lr", "eps", "weight_decay"};
    static const char *const lion_keys[] = {"lr", "betas", "weight_decay"};
    const char *pp = "optimizer.params.";
    if (cJSON_GetObjectItemCaseSensitive(pj, "max_grad_norm"))
        return loom_error(
            LOOM_E_INVALID,
            "%s: optimizer.params.max_grad_norm is not accepted (DeepSpeed rejects it): use gradient_clipping",
            c->file);
    if (t == ADAM || t == ADAMW) return loom__ds_check_keys(c, pj, pp, adam_keys, COUNT(adam_keys));
    if (t == LAMB) return loom__ds_check_keys(c, pj, pp, lamb_keys, COUNT(lamb_keys));
    if (t == ADAGRAD) return loom__ds_check_keys(c, pj, pp, adagrad_keys, COUNT(adagrad_keys));
    if (t == LION) return loom__ds_check_keys(c, pj, pp, lion_keys, COUNT(lion_keys));
    return loom__ds_check_keys(c, pj, pp, onebit_keys, COUNT(onebit_keys));
}

/* betas: [beta1, beta2] (each a number that agrees with --adam_beta1/2, or "auto"), "auto", or
 * absent (DeepSpeed's 0.9, 0.999). */
static loom_status merge_betas(const ds_ctx *c, const cJSON *pj)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    cfg->optimizer.beta1 = 0.9;
    cfg->optimizer.beta2 = 0.999;
    const cJSON *betas = pj ? cJSON_GetObjectItemCaseSensitive(pj, "betas") : NULL;
    if (!betas) return LOOM_OK;
    if (loom__ds_is_auto(betas)) {
        cfg->optimizer.beta1 = a->adam_beta1;
        cfg->optimizer.beta2 = a->adam_beta2;
        return LOOM_OK;
    }
    if (!cJSON_IsArray(betas) || cJSON_GetArraySize(betas) != 2)
        return loom_error(LOOM_E_INVALID, "%s: optimizer.params.betas: expected [beta1, beta2] or \"auto\", got %s",
                          c->file, cJSON_IsArray(betas) ? "an array of another length" : loom__json_type_name(betas));
    double hf[2] = {a->adam_beta1, a->adam_beta2}, *dst[2] = {&cfg->optimizer.beta1, &cfg->optimizer.beta2};
    const char *flags[2] = {"adam_beta1", "adam_beta2"};
    for (int i = 0; i < 2; i++) {
        const cJSON *b = cJSON_GetArrayItem(betas, i);
        char key[48];
        snprintf(key, sizeof key, "optimizer.params.betas[%d]", i);
        if (loom__ds_is_auto(b)) {
            *dst[i] = hf[i];
        } else if (!cJSON_IsNumber(b)) {
            return loom_error(LOOM_E_INVALID, "%s: %s: expected a number or \"auto\", got %s", c->file, key,
                              loom__json_type_name(b));
        } else if (b->valuedouble != hf[i]) {
            return loom__ds_mismatch_double(c, key, b->valuedouble, flags[i], hf[i]);
        } else {
            *dst[i] = b->valuedouble;
        }
    }
    return LOOM_OK;
}

/* Adam / AdamW: adam_w_mode picks loom's adamw or adam (L2 weight decay). */
static loom_status map_adam(const ds_ctx *c, const cJSON *pj, optimizer_type t)
{
    loom_ds_config *cfg = c->cfg;
    const char *pp = "optimizer.params.";
    ds_value v;
    loom_status st;
    if ((st = loom__ds_get(c, pj, pp, "torch_adam", K_BOOL, 0, &v)) != LOOM_OK) return st;
    cfg->optimizer.torch_adam = v.present && v.b;
    if ((st = loom__ds_get(c, pj, pp, "adam_w_mode", K_BOOL, 0, &v)) != LOOM_OK) return st;
    cfg->optimizer.adam_w_mode = v.present ? v.b : 1;
    if (t == ADAMW && !cfg->optimizer.adam_w_mode)
        return loom_error(
            LOOM_E_INVALID,
            "%s: optimizer.params.adam_w_mode false contradicts type AdamW (use type Adam for L2 weight decay)",
            c->file);
    cfg->optimizer_choice.plugin = cfg->optimizer.adam_w_mode ? "adamw" : "adam";
    return add_common_optimizer_entries(cfg);
}

/* Lamb: the trust ratio's clamp and bias correction. */
static loom_status map_lamb(const ds_ctx *c, const cJSON *pj)
{
    loom_ds_config *cfg = c->cfg;
    loom_ds_plugin_choice *ch = &cfg->optimizer_choice;
    const char *pp = "optimizer.params.";
    ds_value mx, mn, bc;
    loom_status st;
    if ((st = loom__ds_get(c, pj, pp, "max_coeff", K_NUM, 0, &mx)) != LOOM_OK ||
        (st = loom__ds_get(c, pj, pp, "min_coeff", K_NUM, 0, &mn)) != LOOM_OK ||
        (st = loom__ds_get(c, pj, pp, "bias_correction", K_BOOL, 0, &bc)) != LOOM_OK)
        return st;
    if (mx.present) cfg->optimizer.max_coeff = mx.d;
    if (mn.present) cfg->optimizer.min_coeff = mn.d;
    if (bc.present) cfg->optimizer.bias_correction = bc.b;
    if (cfg->optimizer.min_coeff > cfg->optimizer.max_coeff)
        return loom_error(LOOM_E_INVALID, "%s: optimizer.params.min_coeff %g is above max_coeff %g", c->file,
                          cfg->optimizer.min_coeff, cfg->optimizer.max_coeff);
    ch->plugin = "lamb";
    if ((st = add_common_optimizer_entries(cfg)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "max_coeff", cfg->optimizer.max_coeff)) != LOOM_OK ||
        (st = loom__ds_add_double(ch, "min_coeff", cfg->optimizer.min_coeff)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "bias_correction", cfg->optimizer.bias_correction)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

/* OneBitAdam: the warm-up length and the communication backend. */
static loom_status map_onebit_adam(const ds_ctx *c, const cJSON *pj)
{
    loom_ds_config *cfg = c->cfg;
    loom_ds_plugin_choice *ch = &cfg->optimizer_choice;
    const char *pp = "optimizer.params.";
    ds_value fs, ca, cb;
    loom_status st;
    if ((st = loom__ds_get(c, pj, pp, "freeze_step", K_INT, 0, &fs)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, pp, "freeze_step", &fs, 0)) != LOOM_OK ||
        (st = loom__ds_get(c, pj, pp, "cuda_aware", K_BOOL, 0, &ca)) != LOOM_OK ||
        (st = loom__ds_get(c, pj, pp, "comm_backend_name", K_STR, 0, &cb)) != LOOM_OK)
        return st;
    if (fs.present) cfg->optimizer.freeze_step = fs.i;
    if (ca.present) cfg->optimizer.cuda_aware = ca.b;
    if (cb.present) {
        if (strcmp(cb.s, "nccl") != 0 && strcmp(cb.s, "mpi") != 0)
            return loom_error(LOOM_E_INVALID,
                              "%s: optimizer.params.comm_backend_name \"%s\": expected \"nccl\" or \"mpi\"", c->file,
                              cb.s);
        free(cfg->optimizer.comm_backend_name);
        if (!(cfg->optimizer.comm_backend_name = loom__ds_dup_text(cb.s)))
            return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    ch->plugin = "onebit_adam";
    if ((st = add_common_optimizer_entries(cfg)) != LOOM_OK ||
        (st = loom__ds_add_int(ch, "freeze_step", cfg->optimizer.freeze_step)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "cuda_aware", cfg->optimizer.cuda_aware)) != LOOM_OK ||
        (st = loom__ds_add_entry(ch, "comm_backend_name", cfg->optimizer.comm_backend_name)) != LOOM_OK)
        return st;
    return LOOM_OK;
}

/* No optimizer section: HF injects the Trainer's optimizer with the command line's
 * hyper-parameters. */
static loom_status optimizer_from_args(loom_ds_config *cfg, const loom_args *a)
{
    cfg->optimizer.lr = a->learning_rate;
    cfg->optimizer.beta1 = a->adam_beta1;
    cfg->optimizer.beta2 = a->adam_beta2;
    cfg->optimizer.eps = a->adam_epsilon;
    cfg->optimizer.weight_decay = a->weight_decay;
    cfg->optimizer_choice.plugin = loom__optimizer_plugin_for(a->optim);
    return add_common_optimizer_entries(cfg);
}

loom_status loom__ds_parse_optimizer(ds_ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    ds_value sec;
    loom_status st = loom__ds_get(c, root, "", "optimizer", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    cfg->optimizer.adam_w_mode = 1;
    cfg->optimizer.max_coeff = 10.0;
    cfg->optimizer.min_coeff = 0.01;
    cfg->optimizer.bias_correction = 1;
    cfg->optimizer.freeze_step = 100000;
    if (!(cfg->optimizer.comm_backend_name = loom__ds_dup_text("nccl")))
        return loom_error(LOOM_E_NOMEM, "out of memory");
    if (!sec.present) return optimizer_from_args(cfg, a);

    ds_value type, params;
    if ((st = loom__ds_get_typed_section(c, sec.json, "optimizer.", &type, &params)) != LOOM_OK) return st;
    if (!type.present)
        return loom_error(LOOM_E_INVALID,
                          "%s: optimizer.type is missing (Adam, AdamW, Lamb, OneBitAdam, Adagrad or Lion)", c->file);
    cfg->optimizer.present = 1;
    if (!(cfg->optimizer.type = loom__ds_dup_text(type.s))) return loom_error(LOOM_E_NOMEM, "out of memory");
    optimizer_type t = ADAM;
    if ((st = optimizer_type_of(c, type.s, &t)) != LOOM_OK) return st;
    const cJSON *pj = params.json;
    const char *pp = "optimizer.params.";
    if (pj && (st = check_params_keys(c, pj, t)) != LOOM_OK) return st;
    /* Absent keys take the defaults of the optimizer DeepSpeed builds (lr 1e-3, eps 1e-8; torch's
     * and DeepSpeedCPUAdagrad's lr 1e-2, eps 1e-10), as DeepSpeed does with the section. */
    double lr_absent = t == ADAGRAD ? 1e-2 : 1e-3, eps_absent = t == ADAGRAD ? 1e-10 : 1e-8;
    if ((st = loom__ds_merge_double(c, pj, pp, "lr", "learning_rate", a->learning_rate, lr_absent,
                                    &cfg->optimizer.lr)) != LOOM_OK ||
        (st = loom__ds_merge_double(c, pj, pp, "eps", "adam_epsilon", a->adam_epsilon, eps_absent,
                                    &cfg->optimizer.eps)) != LOOM_OK ||
        (st = loom__ds_merge_double(c, pj, pp, "weight_decay", "weight_decay", a->weight_decay, 0.0,
                                    &cfg->optimizer.weight_decay)) != LOOM_OK)
        return st;
    if ((st = merge_betas(c, pj)) != LOOM_OK) return st;
    if (t == ADAM || t == ADAMW) return map_adam(c, pj, t);
    if (t == LAMB) return map_lamb(c, pj);
    if (t == ADAGRAD || t == LION) {
        /* The same mathematics as loom's plugins of HF's --optim adagrad and lion_32bit
         * (docs/semantics/optimizers.md); a key the plugin lacks (Lion's eps, Adagrad's betas) is
         * not passed. */
        cfg->optimizer_choice.plugin = t == ADAGRAD ? "adagrad" : "lion";
        return add_common_optimizer_entries(cfg);
    }
    return map_onebit_adam(c, pj);
}
