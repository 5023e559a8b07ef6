/* args_fsdp.c - HF's --fsdp and --fsdp_config (PyTorch FSDP through accelerate), and v4.4-v4.34's
 * --sharded_ddp modes (FairScale), on loom's sharding plugins (docs/semantics/fairscale.md#fsdp).
 *
 * FSDP's strategies differ in what they shard between uses, not in the update, so each is one of
 * loom's strategies: no_shard is DDP (gradients all-reduced, everything replicated),
 * shard_grad_op is ZeRO-2 (gradients reduce-scattered, optimizer states sharded, parameters
 * whole during the step), full_shard is ZeRO-3 (the parameters sharded too, gathered around
 * each use); hybrid_shard_zero2 and hybrid_shard are ZeRO-2 and ZeRO-3 within each node and DDP
 * across nodes, the same updates, which loom shards over every rank. FairScale's modes are the
 * same: simple (OSS + ShardedDDP) is the sharded_ddp plugin, zero_dp_2 (its FSDP without
 * resharding after forward) ZeRO-2, zero_dp_3 ZeRO-3. Offload has no effect with any of them on
 * the CPU, where parameters, gradients and optimizer states are host memory already (zero3
 * runs on the CPU only). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"
#include "json_util.h"

#define COUNT(a) (sizeof(a) / sizeof *(a))
#define SOURCE(name) (origin->source[LOOM__ARG_##name])

static const char *const fsdp_options[] = {"full_shard",         "shard_grad_op", "no_shard", "hybrid_shard",
                                           "hybrid_shard_zero2", "offload",       "auto_wrap"};
static const char *const fairscale_options[] = {"simple", "zero_dp_2", "zero_dp_3", "offload", "auto_wrap"};

static int is_true(const cJSON *v)
{
    return cJSON_IsTrue(v) || (cJSON_IsString(v) && !strcmp(v->valuestring, "true"));
}

/* --fsdp_config's key (prefixes dropped), true or "true"; 0 before the config is read. */
static int config_is_true(const loom_args *a, const char *key)
{
    if (!a->fsdp_config || a->fsdp_config[0] != '{') return 0;
    cJSON *root = cJSON_Parse(a->fsdp_config);
    int on = is_true(cJSON_GetObjectItemCaseSensitive(root, key));
    cJSON_Delete(root);
    return on;
}

const char *loom__fsdp_sharding(const loom_args *a)
{
    if (a->fsdp && *a->fsdp) {
        if (loom__words_has(a->fsdp, "no_shard")) return "ddp";
        /* FSDP2 spells full_shard as reshard_after_forward true: the parameters are sharded
         * again after forward, which is ZeRO-3 whatever --fsdp names. */
        if ((loom__words_has(a->fsdp, "shard_grad_op") || loom__words_has(a->fsdp, "hybrid_shard_zero2")) &&
            !config_is_true(a, "reshard_after_forward"))
            return "zero2";
        return "zero3"; /* full_shard, hybrid_shard, or none named: accelerate's default, full_shard */
    }
    if (a->sharded_ddp && loom__words_has(a->sharded_ddp, "simple")) return "sharded_ddp";
    if (a->sharded_ddp && loom__words_has(a->sharded_ddp, "zero_dp_2")) return "zero2";
    if (a->sharded_ddp && loom__words_has(a->sharded_ddp, "zero_dp_3")) return "zero3";
    return NULL; /* HF: --sharded_ddp auto_wrap alone shards nothing */
}

static void warn_no_effect(const char *flag, const char *options)
{
    if (loom__words_has(options, "offload"))
        fprintf(stderr,
                "loom: warning: %s offload has no effect on the CPU (parameters, gradients and optimizer "
                "states are in host memory already; on a GPU it is refused)\n",
                flag);
    if (loom__words_has(options, "auto_wrap"))
        fprintf(stderr,
                "loom: warning: %s auto_wrap has no effect here (loom shards flat ranges of the parameters, "
                "not modules)\n",
                flag);
}

static loom_status check_options(loom_args *a, const char *where)
{
    /* HF's --fsdp true (a bool in a JSON config) is full_shard; false none. */
    if (!strcmp(a->fsdp, "true") || !strcmp(a->fsdp, "false"))
        return loom__arg_set_string(&a->fsdp, !strcmp(a->fsdp, "true") ? "full_shard" : NULL);
    int n = 0, strategies = 0;
    loom_status st = loom__words_check("--fsdp", a->fsdp, fsdp_options, COUNT(fsdp_options), 5, where, &n, &strategies);
    if (st != LOOM_OK) return st;
    if (n == 0) return loom__arg_set_string(&a->fsdp, NULL);
    /* HF's two checks, in its words. */
    if (n == 1 && loom__words_has(a->fsdp, "offload"))
        return loom_error(LOOM_E_INVALID,
                          "--fsdp offload%s can't work on its own: it needs --fsdp full_shard or --fsdp shard_grad_op "
                          "with it, for example --fsdp \"shard_grad_op offload\"",
                          where);
    if (loom__words_has(a->fsdp, "full_shard") && loom__words_has(a->fsdp, "shard_grad_op"))
        return loom_error(LOOM_E_INVALID, "--fsdp full_shard is not compatible with --fsdp shard_grad_op%s", where);
    if (strategies > 1)
        return loom_error(LOOM_E_INVALID, "--fsdp '%s'%s names more than one sharding strategy", a->fsdp, where);
    return LOOM_OK;
}

/* HF v4.4-v4.34's --sharded_ddp: FairScale's modes (v4.2-v4.3's bool is "simple"). */
static loom_status check_fairscale(loom_args *a, const char *where)
{
    int32_t on;
    if (loom__parse_bool(a->sharded_ddp, &on) == 0) return loom__arg_set_string(&a->sharded_ddp, on ? "simple" : NULL);
    int n = 0, strategies = 0;
    loom_status st = loom__words_check("--sharded_ddp", a->sharded_ddp, fairscale_options, COUNT(fairscale_options), 3,
                                       where, &n, &strategies);
    if (st != LOOM_OK) return st;
    if (n == 0) return loom__arg_set_string(&a->sharded_ddp, NULL);
    /* HF's three checks, in its words. */
    if (n == 1 && loom__words_has(a->sharded_ddp, "offload"))
        return loom_error(LOOM_E_INVALID,
                          "--sharded_ddp offload%s can't work on its own: it needs --sharded_ddp zero_dp_2 or "
                          "--sharded_ddp zero_dp_3 with it, for example --sharded_ddp \"zero_dp_2 offload\"",
                          where);
    if (n > 1 && loom__words_has(a->sharded_ddp, "simple"))
        return loom_error(LOOM_E_INVALID, "--sharded_ddp simple%s is not compatible with any other option", where);
    if (loom__words_has(a->sharded_ddp, "zero_dp_2") && loom__words_has(a->sharded_ddp, "zero_dp_3"))
        return loom_error(LOOM_E_INVALID, "--sharded_ddp zero_dp_2 is not compatible with --sharded_ddp zero_dp_3%s",
                          where);
    warn_no_effect("--sharded_ddp", a->sharded_ddp);
    if (strategies == 0)
        fprintf(stderr,
                "loom: warning: --sharded_ddp '%s'%s names no mode (simple, zero_dp_2, zero_dp_3): the run is not "
                "sharded, as in HF\n",
                a->sharded_ddp, where);
    return LOOM_OK;
}

/* fsdp_config keys that tune how PyTorch wraps, prefetches and loads modules: nothing of the
 * update, and nothing loom has a module for. */
static const char *const no_effect[] = {"min_num_params",
                                        "transformer_layer_cls_to_wrap",
                                        "backward_prefetch",
                                        "forward_prefetch",
                                        "limit_all_gathers",
                                        "use_orig_params",
                                        "sync_module_states",
                                        "cpu_ram_efficient_loading",
                                        "state_dict_type",
                                        "auto_wrap_policy",
                                        "version",
                                        "activation_cpu_offload"};

static loom_status check_key(const loom_args *a, const cJSON *item, const char *name, const char *where)
{
    if (!strncmp(name, "xla", 3)) {
        if (!strcmp(name, "xla_fsdp_settings") || is_true(item))
            return loom_error(LOOM_E_UNSUPPORTED, "--fsdp_config%s: %s: XLA (TPU) FSDP is not supported", where, name);
        return LOOM_OK;
    }
    if (!strcmp(name, "activation_checkpointing")) {
        if (is_true(item) && a->gradient_checkpointing == 1)
            return loom_error(LOOM_E_INVALID,
                              "--fsdp_config%s: activation_checkpointing and --gradient_checkpointing can't both be "
                              "true (HF's rule: keep one)",
                              where);
        return LOOM_OK;
    }
    /* FSDP2's spelling of the strategy, read by loom__fsdp_sharding; offload is checked against
     * the strategy once the whole config is read. */
    if (!strcmp(name, "reshard_after_forward") || !strcmp(name, "offload_params") || !strcmp(name, "cpu_offload"))
        return LOOM_OK;
    for (size_t k = 0; k < COUNT(no_effect); k++)
        if (!strcmp(name, no_effect[k])) return LOOM_OK;
    fprintf(stderr, "loom: warning: --fsdp_config key '%s'%s has no effect here\n", name, where);
    return LOOM_OK;
}

/* *wrap_rules: 1 when the config sets min_num_params, 2 transformer_layer_cls_to_wrap, 3 both;
 * *offload: the offload key (offload_params, or its older name cpu_offload) set true, else NULL. */
static loom_status check_config(loom_args *a, loom__arg_origin *origin, int *wrap_rules, const char **offload)
{
    const char *text = a->fsdp_config;
    if (text && !*text) return loom__arg_set_string(&a->fsdp_config, NULL);
    if (!text) return LOOM_OK;
    char buf[512], dup[512];
    const char *where = loom__where(SOURCE(fsdp_config), buf, sizeof buf);
    if (!a->fsdp)
        fprintf(stderr, "loom: warning: --fsdp_config%s is useful only when --fsdp is given (HF's warning)\n", where);
    cJSON *root = NULL;
    loom_status st = text[0] == '{' ? loom__json_parse_strict("--fsdp_config", text, strlen(text), &root)
                                    : loom__json_read_file("--fsdp_config", text, 1 << 20, &root);
    if (st != LOOM_OK) return st;
    if (!cJSON_IsObject(root))
        st = loom_error(LOOM_E_INVALID, "--fsdp_config%s: expected a JSON object such as '{\"min_num_params\": 0}'",
                        where);
    else if (loom__json_find_duplicate(root, dup, sizeof dup) < 0)
        st = loom_error(LOOM_E_INVALID, "--fsdp_config%s: duplicate key '%s'", where, dup);
    int min_params = 0, layer_cls = 0;
    for (const cJSON *item = root ? root->child : NULL; item && st == LOOM_OK; item = item->next) {
        /* HF drops an "fsdp_" prefix from every key (accelerate's config files write them so). */
        const char *name = strncmp(item->string, "fsdp_", 5) ? item->string : item->string + 5;
        min_params |= !strcmp(name, "min_num_params") && cJSON_IsNumber(item) && item->valuedouble > 0;
        layer_cls |= !strcmp(name, "transformer_layer_cls_to_wrap") && !cJSON_IsNull(item);
        if ((!strcmp(name, "offload_params") || !strcmp(name, "cpu_offload")) && is_true(item))
            *offload = !strcmp(name, "cpu_offload") ? "cpu_offload" : "offload_params";
        st = check_key(a, item, name, where);
    }
    *wrap_rules = min_params + 2 * layer_cls;
    /* HF keeps the dict it read, prefixes dropped: training_args.json writes that, and the
     * trainer reads activation_checkpointing from it (loom__fsdp_activation_checkpointing). */
    for (cJSON *item = root ? root->child : NULL; item && st == LOOM_OK; item = item->next)
        if (!strncmp(item->string, "fsdp_", 5)) memmove(item->string, item->string + 5, strlen(item->string + 5) + 1);
    char *compact = st == LOOM_OK ? cJSON_PrintUnformatted(root) : NULL;
    if (st == LOOM_OK)
        st = compact ? loom__arg_set_string(&a->fsdp_config, compact) : loom_error(LOOM_E_NOMEM, "out of memory");
    cJSON_free(compact);
    cJSON_Delete(root);
    return st;
}

int loom__fsdp_activation_checkpointing(const loom_args *a)
{
    return a->fsdp && config_is_true(a, "activation_checkpointing");
}

/* Offload, from the options or the config: everything is in host memory already on the CPU. */
static loom_status check_offload(const loom_args *a, const char *offload_key)
{
    if (a->fsdp) warn_no_effect("--fsdp", a->fsdp);
    if (offload_key)
        fprintf(stderr,
                "loom: warning: --fsdp_config %s has no effect here (everything is in host memory already on the "
                "CPU)\n",
                offload_key);
    return LOOM_OK;
}

loom_status loom__args_resolve_fsdp(loom_args *a, loom__arg_origin *origin)
{
    char buf[512];
    loom_status st;
    if (a->sharded_ddp && (st = check_fairscale(a, loom__where(SOURCE(sharded_ddp), buf, sizeof buf))) != LOOM_OK)
        return st;
    if (a->sharded_ddp && a->deepspeed && *a->deepspeed)
        return loom_error(LOOM_E_INVALID,
                          "--sharded_ddp%s together with --deepspeed is not possible: deactivate one of those flags "
                          "(HF's rule)",
                          loom__where(SOURCE(sharded_ddp), buf, sizeof buf));
    if (a->fsdp && (st = check_options(a, loom__where(SOURCE(fsdp), buf, sizeof buf))) != LOOM_OK) return st;
    int wrap_rules = 0;
    const char *offload = NULL;
    if ((st = check_config(a, origin, &wrap_rules, &offload)) != LOOM_OK) return st;
    const char *where = loom__where(SOURCE(fsdp), buf, sizeof buf);
    if ((st = check_offload(a, offload)) != LOOM_OK || !a->fsdp) return st;
    /* The deprecated flags add to the config's keys (HF). */
    if (a->fsdp_min_num_params > 0) wrap_rules |= 1;
    if (a->fsdp_transformer_layer_cls_to_wrap && *a->fsdp_transformer_layer_cls_to_wrap) wrap_rules |= 2;
    if (wrap_rules == 3)
        return loom_error(LOOM_E_INVALID,
                          "--fsdp%s: min_num_params and transformer_layer_cls_to_wrap (in --fsdp_config "
                          "or as flags) are mutually exclusive (HF's rule)",
                          where);
    if (a->deepspeed && *a->deepspeed)
        return loom_error(
            LOOM_E_INVALID,
            "--fsdp%s together with --deepspeed is not possible: deactivate one of those flags (HF's rule)", where);
    if (a->sharded_ddp)
        return loom_error(LOOM_E_INVALID,
                          "--fsdp%s together with --sharded_ddp is not possible: deactivate one of those flags (HF's "
                          "rule)",
                          where);
    return LOOM_OK;
}
