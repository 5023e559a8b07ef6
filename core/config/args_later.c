/* args_later.c - HF's later arguments whose checks are more than the table's status column
 * (docs/semantics/trainer.md#every-hf-argument): the half-precision backend and its deprecated
 * name, the data loader's worker options, accelerate's configuration and the two deprecated
 * flags it replaced, v5's sampling strategy, tensor parallelism, HF's other collective
 * backends, the debug options, and Seq2SeqTrainingArguments' generation_config. Each refusal
 * names the argument and where it was given, in one line. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"
#include "generation_config.h"
#include "json_util.h"

#define COUNT(a) (sizeof(a) / sizeof *(a))
#define SOURCE(name) (origin->source[LOOM__ARG_##name])

static int is(const char *s, const char *value)
{
    return s && strcmp(s, value) == 0;
}

static int one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(s, set[i]) == 0) return 1;
    return 0;
}

int loom__args_fp16_apex(const loom_args *a)
{
    /* Before loom__args_resolve (DeepSpeed's adoption) only the deprecated name may hold it. */
    return a->fp16 && (is(a->half_precision_backend, "apex") || is(a->fp16_backend, "apex"));
}

/* HF's choices over its versions: v4.2's fp16_backend took auto, amp, apex; half_precision_backend
 * took cuda_amp and cpu_amp too (cuda_amp was dropped later). All but apex are native AMP, which
 * loom's amp and bf16 plugins are on either device (docs/semantics/precision.md#plugin-choice). */
static const char *const backends[] = {"auto", "apex", "cpu_amp", "cuda_amp", "amp"};

static loom_status check_backend(const char *name, const char *value, const char *source)
{
    if (one_of(value, backends, COUNT(backends))) return LOOM_OK;
    char where[512];
    return loom_error(LOOM_E_INVALID, "--%s '%s'%s is not one of: auto, apex, cpu_amp, cuda_amp, amp", name,
                      value ? value : "none", loom__where(source, where, sizeof where));
}

/* HF before v5: a deprecated --fp16_backend other than auto becomes half_precision_backend.
 * Both given and different is refused, as loom does for every argument under two names. */
static loom_status resolve_precision_backend(loom_args *a, loom__arg_origin *origin)
{
    char where[512];
    loom_status st;
    if ((st = check_backend("fp16_backend", a->fp16_backend, SOURCE(fp16_backend))) != LOOM_OK ||
        (st = check_backend("half_precision_backend", a->half_precision_backend, SOURCE(half_precision_backend))) !=
            LOOM_OK)
        return st;
    if (!is(a->fp16_backend, "auto")) {
        if (!is(a->half_precision_backend, "auto") && !is(a->half_precision_backend, a->fp16_backend))
            return loom_error(LOOM_E_INVALID,
                              "--fp16_backend %s and --half_precision_backend %s disagree%s (the first is the "
                              "deprecated name of the second): give one",
                              a->fp16_backend, a->half_precision_backend,
                              loom__where(SOURCE(fp16_backend), where, sizeof where));
        if ((st = loom__arg_set_string(&a->half_precision_backend, a->fp16_backend)) != LOOM_OK) return st;
        if (!SOURCE(half_precision_backend)) SOURCE(half_precision_backend) = SOURCE(fp16_backend);
    }
    if (a->bf16 && is(a->half_precision_backend, "apex"))
        return loom_error(LOOM_E_INVALID,
                          "--half_precision_backend apex%s: GPU bf16 is not supported by apex (HF's "
                          "rule): drop --bf16, or use --fp16 with apex",
                          loom__where(SOURCE(half_precision_backend), where, sizeof where));
    return LOOM_OK;
}

/* HF's rules for the worker options: PyTorch's DataLoader refuses persistent workers without
 * workers, and HF's __post_init__ a prefetch factor without them; a step count must be > 0. */
static loom_status check_loader(const loom_args *a, const loom__arg_origin *origin)
{
    char where[512];
    if (a->dataloader_num_workers == 0 && a->dataloader_prefetch_factor != LOOM_ARG_NONE_INT)
        return loom_error(LOOM_E_INVALID,
                          "--dataloader_prefetch_factor%s can only be set when data is loaded in a different "
                          "process, i.e. when --dataloader_num_workers > 0",
                          loom__where(SOURCE(dataloader_prefetch_factor), where, sizeof where));
    if (a->dataloader_num_workers == 0 && a->dataloader_persistent_workers)
        return loom_error(LOOM_E_INVALID,
                          "--dataloader_persistent_workers%s needs --dataloader_num_workers > 0 (PyTorch's "
                          "DataLoader refuses persistent workers without workers)",
                          loom__where(SOURCE(dataloader_persistent_workers), where, sizeof where));
    if (a->torch_empty_cache_steps != LOOM_ARG_NONE_INT && a->torch_empty_cache_steps <= 0)
        return loom_error(LOOM_E_INVALID, "--torch_empty_cache_steps %lld%s: must be an integer bigger than 0",
                          (long long)a->torch_empty_cache_steps,
                          loom__where(SOURCE(torch_empty_cache_steps), where, sizeof where));
    return LOOM_OK;
}

/* accelerate's data settings loom can only keep at the value that is its own behaviour: each
 * rank takes whole batches of its share of a seeded order, padded by wrapping around to the
 * start so every rank runs the same steps (docs/semantics/trainer.md#eval-ranks). Another value
 * would change which examples a rank sees. */
typedef struct accel_key {
    const char *name;
    int loom_value; /* the value that is loom's behaviour */
    int null_ok;    /* a JSON null (accelerate's "decide for me") is loom's behaviour too */
    const char *why;
} accel_key;

static const accel_key data_keys[] = {
    {"split_batches", 0, 0, "each rank takes whole batches of per_device_train_batch_size"},
    {"dispatch_batches", 0, 1, "each rank loads its own batches"},
    {"even_batches", 1, 0, "every rank's share is padded by wrapping around to the start of the order"},
    {"use_seedable_sampler", 1, 0, "loom's data order is always seeded (data_seed)"},
};

/* `what`: "--accelerator_config split_batches=true" or "--split_batches true". */
static loom_status refuse_data_key(const char *what, const char *why, const char *where)
{
    return loom_error(LOOM_E_UNSUPPORTED, "%s%s is not supported yet: it changes the data split, and %s", what, where,
                      why);
}

static loom_status check_accel_value(const cJSON *item, const char *where)
{
    const char *key = item->string;
    char flag[] = "--accelerator_config";
    for (size_t i = 0; i < COUNT(data_keys); i++) {
        if (strcmp(key, data_keys[i].name) != 0) continue;
        if (cJSON_IsNull(item) && data_keys[i].null_ok) return LOOM_OK;
        if (!cJSON_IsBool(item))
            return loom_error(LOOM_E_INVALID, "%s%s: '%s' must be true or false", flag, where, key);
        int v = cJSON_IsTrue(item);
        if (v == data_keys[i].loom_value) return LOOM_OK;
        char what[128];
        snprintf(what, sizeof what, "%s %s=%s", flag, key, v ? "true" : "false");
        return refuse_data_key(what, data_keys[i].why, where);
    }
    if (!strcmp(key, "non_blocking") || !strcmp(key, "use_configured_state")) {
        if (!cJSON_IsBool(item))
            return loom_error(LOOM_E_INVALID, "%s%s: '%s' must be true or false", flag, where, key);
        if (cJSON_IsTrue(item) && !strcmp(key, "use_configured_state"))
            return loom_error(LOOM_E_UNSUPPORTED,
                              "%s use_configured_state=true%s: it takes an Accelerator configured before the "
                              "arguments, which a loom run does not have",
                              flag, where);
        if (cJSON_IsTrue(item))
            fprintf(stderr, "loom: warning: --accelerator_config non_blocking has no effect here (it makes PyTorch's "
                            "host-to-device copies asynchronous; loom places its batches itself)\n");
        return LOOM_OK;
    }
    if (!strcmp(key, "gradient_accumulation_kwargs")) {
        if (cJSON_IsNull(item) || (cJSON_IsObject(item) && !item->child)) return LOOM_OK;
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s gradient_accumulation_kwargs%s is not supported yet: loom accumulates "
                          "--gradient_accumulation_steps micro-batches and steps the scheduler once per step",
                          flag, where);
    }
    return loom_error(LOOM_E_INVALID,
                      "%s%s: unknown key '%s' (split_batches, dispatch_batches, even_batches, use_seedable_sampler, "
                      "non_blocking, gradient_accumulation_kwargs, use_configured_state)",
                      flag, where, key);
}

/* HF's AcceleratorConfig as its to_dict() writes it, with what was given over the defaults
 * (use_configured_state is taken out when HF sets the devices up, so it is not written). */
static loom_status write_accel_dict(loom_args *a, const cJSON *given)
{
    cJSON *out = cJSON_Parse(LOOM__ACCELERATOR_CONFIG_DEFAULT);
    if (!out) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (const cJSON *item = given->child; item; item = item->next)
        if (strcmp(item->string, "use_configured_state") != 0)
            cJSON_ReplaceItemInObjectCaseSensitive(out, item->string, cJSON_Duplicate(item, 1));
    /* HF's defaults, as a run's own training_args.json holds them, are the default: None. */
    cJSON *defaults = cJSON_Parse(LOOM__ACCELERATOR_CONFIG_DEFAULT);
    int is_default = cJSON_Compare(out, defaults, 1);
    cJSON_Delete(defaults);
    char *text = is_default ? NULL : cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    if (!is_default && !text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = loom__arg_set_string(&a->accelerator_config, text);
    cJSON_free(text);
    return st;
}

/* HF takes a JSON object (text starting with '{') or the path of a JSON file. */
static loom_status check_accelerator_config(loom_args *a, const loom__arg_origin *origin)
{
    const char *text = a->accelerator_config;
    if (text && !*text) return loom__arg_set_string(&a->accelerator_config, NULL);
    if (!text) return LOOM_OK;
    char buf[512], dup[512];
    const char *where = loom__where(SOURCE(accelerator_config), buf, sizeof buf);
    cJSON *root = NULL;
    loom_status st;
    if (text[0] == '{')
        st = loom__json_parse_strict("--accelerator_config", text, strlen(text), &root);
    else
        st = loom__json_read_file("--accelerator_config", text, 1 << 20, &root);
    if (st != LOOM_OK) return st;
    if (!cJSON_IsObject(root))
        st = loom_error(LOOM_E_INVALID,
                        "--accelerator_config%s: expected a JSON object such as "
                        "'{\"even_batches\": true}'",
                        where);
    else if (loom__json_find_duplicate(root, dup, sizeof dup) < 0)
        st = loom_error(LOOM_E_INVALID, "--accelerator_config%s: duplicate key '%s'", where, dup);
    for (const cJSON *item = root ? root->child : NULL; item && st == LOOM_OK; item = item->next)
        st = check_accel_value(item, where);
    if (st == LOOM_OK) st = write_accel_dict(a, root);
    cJSON_Delete(root);
    return st;
}

/* The flags accelerator_config replaced (HF v4.35-v4.40): the same rule as its keys. */
static loom_status check_deprecated_split(const loom_args *a, const loom__arg_origin *origin)
{
    char where[512];
    if (a->split_batches == 1)
        return refuse_data_key("--split_batches true", data_keys[0].why,
                               loom__where(SOURCE(split_batches), where, sizeof where));
    if (a->dispatch_batches == 1)
        return refuse_data_key("--dispatch_batches true", data_keys[1].why,
                               loom__where(SOURCE(dispatch_batches), where, sizeof where));
    return LOOM_OK;
}

/* v5 folds group_by_length into train_sampling_strategy, next to random and sequential. */
static loom_status resolve_sampling(loom_args *a, loom__arg_origin *origin)
{
    char buf[512];
    const char *s = a->train_sampling_strategy;
    const char *where = loom__where(SOURCE(train_sampling_strategy), buf, sizeof buf);
    if (is(s, "random")) return LOOM_OK;
    if (is(s, "group_by_length")) {
        a->group_by_length = 1;
        if (!SOURCE(group_by_length)) SOURCE(group_by_length) = SOURCE(train_sampling_strategy);
        return LOOM_OK;
    }
    /* Each of these orders replaces the sequential one: taking one silently would train on
     * another order than the command line says. */
    if (is(s, "sequential") && (a->group_by_length || a->sortish_sampler))
        return loom_error(LOOM_E_INVALID,
                          "--train_sampling_strategy sequential%s and --%s are both set: pick one order", where,
                          a->group_by_length ? "group_by_length" : "sortish_sampler");
    if (is(s, "sequential")) return LOOM_OK;
    return loom_error(LOOM_E_INVALID,
                      "--train_sampling_strategy '%s'%s is not one of: random, sequential, "
                      "group_by_length",
                      s ? s : "none", where);
}

static loom_status check_parallel(const loom_args *a, const loom__arg_origin *origin)
{
    char where[512];
    /* HF v4.50-v4.52: "a value greater than 1 activates TP". */
    if (a->tp_size > 1)
        return loom_error(LOOM_E_UNSUPPORTED, "--tp_size %lld%s is not supported yet (tensor parallelism: later)",
                          (long long)a->tp_size, loom__where(SOURCE(tp_size), where, sizeof where));
    if (a->tp_size < 0)
        return loom_error(LOOM_E_INVALID, "--tp_size %lld%s: must be >= 0", (long long)a->tp_size,
                          loom__where(SOURCE(tp_size), where, sizeof where));
    /* HF's other ddp_backend choices name libraries loom has no comm plugin for. */
    static const char *const others[] = {"mpi", "ccl", "xccl", "hccl", "cncl", "mccl"};
    if (one_of(a->ddp_backend, others, COUNT(others)))
        return loom_error(LOOM_E_UNSUPPORTED, "--ddp_backend %s%s is not supported yet (supported: nccl, gloo)",
                          a->ddp_backend, loom__where(SOURCE(ddp_backend), where, sizeof where));
    return LOOM_OK;
}

/* HF's DebugOption list (v4.2: a bool, true for TPU metrics). */
static loom_status check_debug(loom_args *a, const loom__arg_origin *origin)
{
    if (!a->debug) return LOOM_OK;
    char buf[512];
    const char *where = loom__where(SOURCE(debug), buf, sizeof buf);
    int32_t on;
    if (loom__parse_bool(a->debug, &on) == 0) {
        loom_status st = loom__arg_set_string(&a->debug, on ? "tpu_metrics_debug" : NULL);
        if (st != LOOM_OK || !on) return st;
    }
    static const char *const options[] = {"underflow_overflow", "tpu_metrics_debug"};
    int words = 0, unused = 0;
    loom_status st = loom__words_check("--debug", a->debug, options, 2, 0, where, &words, &unused);
    if (st != LOOM_OK) return st;
    if (loom__words_has(a->debug, "underflow_overflow"))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--debug underflow_overflow%s is not supported yet (HF hooks every module's forward to "
                          "find the first inf/nan; loom's models have no such hooks)",
                          where);
    if (loom__words_has(a->debug, "tpu_metrics_debug"))
        fprintf(stderr, "loom: warning: --debug tpu_metrics_debug%s has no effect here (TPU metrics)\n", where);
    return LOOM_OK;
}

loom_status loom__args_resolve_later(loom_args *args, loom__arg_origin *origin)
{
    loom_status st;
    if ((st = resolve_precision_backend(args, origin)) != LOOM_OK) return st;
    if ((st = check_loader(args, origin)) != LOOM_OK) return st;
    if ((st = check_deprecated_split(args, origin)) != LOOM_OK) return st;
    if ((st = check_accelerator_config(args, origin)) != LOOM_OK) return st;
    if ((st = resolve_sampling(args, origin)) != LOOM_OK) return st;
    if ((st = loom__args_resolve_fsdp(args, origin)) != LOOM_OK) return st;
    if ((st = check_debug(args, origin)) != LOOM_OK) return st;
    if ((st = check_parallel(args, origin)) != LOOM_OK) return st;
    /* HF's Seq2SeqTrainer loads and validates it when it is made, whatever the run does next. */
    return loom_generation_config_check(args->generation_config);
}
