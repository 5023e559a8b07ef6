/* args_resolve.c - what HF's TrainingArguments.__post_init__ does once every value is in:
 * refuse what loom cannot do yet, warn about what it ignores, apply aliases and derived
 * defaults, and check values, each error naming the argument, the value and its source. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args_internal.h"
#include "json_util.h"
#include "optim_names.h"
#include "error.h"

#define COUNT(a) (sizeof(a) / sizeof *(a))
#define ROW(name) (&loom__arg_table[LOOM__ARG_##name])
#define SOURCE(name) (origin->source[LOOM__ARG_##name])

static const char *const strategies[] = {"no", "steps", "epoch"};
static const char *const schedulers[] = {"linear",
                                         "cosine",
                                         "cosine_with_restarts",
                                         "polynomial",
                                         "constant",
                                         "constant_with_warmup",
                                         "inverse_sqrt",
                                         "cosine_with_min_lr",
                                         "cosine_warmup_with_min_lr",
                                         "warmup_stable_decay",
                                         "reduce_lr_on_plateau"};
/* HF integrations with no loom equivalent: ignored with a warning rather than refused, so a
 * script written for HF runs unchanged. */
static const char *const integrations_absent[] = {"azure_ml", "comet_ml",   "mlflow",  "wandb", "neptune", "clearml",
                                                  "dagshub",  "codecarbon", "dvclive", "flyte", "swanlab", "trackio"};

static int member(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(s, set[i]) == 0) return 1;
    return 0;
}

/* "a, b, c" into buf. */
static const char *joined(const char *const *set, size_t n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", set[i]);
    return buf;
}

static loom_status check_status(const loom_args *args, const loom__arg_origin *origin)
{
    char where[512];
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++) {
        const loom__arg_desc *d = &loom__arg_table[i];
        if (d->status == LOOM_ARG_SUPPORTED || loom__arg_is_default(args, d)) continue;
        if (d->status == LOOM_ARG_NOT_YET)
            return loom_error(LOOM_E_UNSUPPORTED, "--%s is not supported yet (%s); given%s", d->name, d->note,
                              loom__where(origin->source[i], where, sizeof where));
        if (*d->note)
            fprintf(stderr, "loom: warning: --%s has no effect here (%s)\n", d->name, d->note);
        else
            fprintf(stderr, "loom: warning: --%s has no effect here\n", d->name);
    }
    static const char *const integrations_present[] = {"tensorboard", "html", "all", "none"};
    for (size_t i = 0; i < args->report_to.count; i++)
        if (!member(args->report_to.items[i], integrations_absent, COUNT(integrations_absent)) &&
            !member(args->report_to.items[i], integrations_present, COUNT(integrations_present)))
            return loom_error(LOOM_E_INVALID,
                              "--report_to %s: unknown integration (tensorboard, html, all, none, or one of HF's)",
                              args->report_to.items[i]);
    for (size_t i = 0; i < args->report_to.count; i++)
        if (member(args->report_to.items[i], integrations_absent, COUNT(integrations_absent)))
            fprintf(stderr,
                    "loom: warning: --report_to %s has no effect here (loom reports to tensorboard and html)\n",
                    args->report_to.items[i]);
    return LOOM_OK;
}

static loom_status check_enum(const loom__arg_desc *d, const char *value, const char *source, const char *const *ok,
                              size_t n_ok, const char *const *later, size_t n_later)
{
    if (member(value, ok, n_ok)) return LOOM_OK;
    char where[512], list[512];
    if (member(value, later, n_later))
        return loom_error(LOOM_E_UNSUPPORTED, "--%s %s%s is not supported yet (supported: %s)", d->name, value,
                          loom__where(source, where, sizeof where), joined(ok, n_ok, list, sizeof list));
    return loom_error(LOOM_E_INVALID, "--%s '%s'%s is not one of: %s", d->name, value ? value : "none",
                      loom__where(source, where, sizeof where), joined(ok, n_ok, list, sizeof list));
}

/* lr_scheduler_kwargs is a dict in HF; on the command line it is JSON text. Keep it as
 * compact JSON of an object so consumers parse one form. */
static loom_status normalise_kwargs(loom_args *args, const loom__arg_origin *origin)
{
    char where[512], dup[512];
    const char *text = args->lr_scheduler_kwargs ? args->lr_scheduler_kwargs : "{}";
    cJSON *v = cJSON_Parse(text);
    loom_status st = LOOM_OK;
    if (!cJSON_IsObject(v))
        st = loom_error(LOOM_E_INVALID,
                        "--lr_scheduler_kwargs '%s'%s: expected a JSON object such as '{\"num_cycles\": 2}'", text,
                        loom__where(SOURCE(lr_scheduler_kwargs), where, sizeof where));
    else if (loom__json_find_duplicate(v, dup, sizeof dup) < 0)
        st = loom_error(LOOM_E_INVALID, "--lr_scheduler_kwargs%s: duplicate key '%s'",
                        loom__where(SOURCE(lr_scheduler_kwargs), where, sizeof where), dup);
    char *compact = st == LOOM_OK ? cJSON_PrintUnformatted(v) : NULL;
    if (st == LOOM_OK && !compact) st = loom_error(LOOM_E_NOMEM, "out of memory");
    if (st == LOOM_OK) st = loom__arg_set_string(&args->lr_scheduler_kwargs, compact);
    cJSON_free(compact);
    cJSON_Delete(v);
    return st;
}

static loom_status apply_aliases(loom_args *args, loom__arg_origin *origin)
{
    char where[512];
    loom_status st;
    if (args->eval_strategy) {
        if ((st = check_enum(ROW(eval_strategy), args->eval_strategy, SOURCE(eval_strategy), strategies,
                             COUNT(strategies), NULL, 0)) != LOOM_OK)
            return st;
        /* One argument under two names: the command line beats the file; two different
         * values from the same place are a contradiction. */
        const char *alias_src = SOURCE(eval_strategy), *main_src = SOURCE(evaluation_strategy);
        int alias_cli = alias_src == LOOM__SRC_CLI, main_cli = main_src == LOOM__SRC_CLI;
        int differ = !args->evaluation_strategy || strcmp(args->eval_strategy, args->evaluation_strategy) != 0;
        if (main_src && differ && alias_cli == main_cli)
            return loom_error(LOOM_E_INVALID,
                              "--eval_strategy %s and --evaluation_strategy %s disagree%s (they are "
                              "one argument under two names)",
                              args->eval_strategy, args->evaluation_strategy ? args->evaluation_strategy : "none",
                              loom__where(alias_src, where, sizeof where));
        if (!main_src || alias_cli || !main_cli) {
            if ((st = loom__arg_set_string(&args->evaluation_strategy, args->eval_strategy)) != LOOM_OK) return st;
            SOURCE(evaluation_strategy) = alias_src;
        }
    }
    if (args->adafactor) {
        if ((st = loom__arg_set_string(&args->optim, "adafactor")) != LOOM_OK) return st;
        SOURCE(optim) = SOURCE(adafactor);
    }
    if (args->optim && strcmp(args->optim, "adamw") == 0 &&
        (st = loom__arg_set_string(&args->optim, "adamw_torch")) != LOOM_OK)
        return st;

    struct {
        int64_t *from, *to;
        const char *from_name, *to_name;
        int from_index, to_index;
    } gpu[] = {
        {&args->per_gpu_train_batch_size, &args->per_device_train_batch_size, "per_gpu_train_batch_size",
         "per_device_train_batch_size", LOOM__ARG_per_gpu_train_batch_size, LOOM__ARG_per_device_train_batch_size},
        {&args->per_gpu_eval_batch_size, &args->per_device_eval_batch_size, "per_gpu_eval_batch_size",
         "per_device_eval_batch_size", LOOM__ARG_per_gpu_eval_batch_size, LOOM__ARG_per_device_eval_batch_size},
    };
    for (size_t i = 0; i < COUNT(gpu); i++) {
        if (*gpu[i].from == LOOM_ARG_NONE_INT) continue;
        if (*gpu[i].from < 1)
            return loom_error(LOOM_E_INVALID, "--%s %lld%s: must be >= 1", gpu[i].from_name, (long long)*gpu[i].from,
                              loom__where(origin->source[gpu[i].from_index], where, sizeof where));
        fprintf(stderr, "loom: warning: --%s is deprecated; it overrides --%s, use that instead\n", gpu[i].from_name,
                gpu[i].to_name);
        *gpu[i].to = *gpu[i].from;
        origin->source[gpu[i].to_index] = origin->source[gpu[i].from_index];
    }
    return LOOM_OK;
}

/* v5's __post_init__: a bool include_num_input_tokens_seen is "all" or "no" (true/false... as
 * text, the way loom reads a bool). */
static loom_status tokens_seen_mode(loom_args *args)
{
    int32_t on;
    const char *text = args->include_num_input_tokens_seen;
    if (!text || loom__parse_bool(text, &on) != 0) return LOOM_OK;
    return loom__arg_set_string(&args->include_num_input_tokens_seen, on ? "all" : "no");
}

static loom_status check_enums(const loom_args *args, const loom__arg_origin *origin)
{
    static const char *const best[] = {"best"};
    static const char *const opt_levels[] = {"O0", "O1", "O2", "O3"};
    static const char *const log_levels[] = {"passive", "debug", "info", "warning", "error", "critical"};
    static const char *const token_modes[] = {"all", "non_padding", "no"};
    loom_status st;
    if ((st = check_enum(ROW(include_num_input_tokens_seen), args->include_num_input_tokens_seen,
                         SOURCE(include_num_input_tokens_seen), token_modes, COUNT(token_modes), NULL, 0)) != LOOM_OK)
        return st;
    if ((st = check_enum(ROW(log_level), args->log_level, SOURCE(log_level), log_levels, COUNT(log_levels), NULL, 0)) !=
            LOOM_OK ||
        (st = check_enum(ROW(log_level_replica), args->log_level_replica, SOURCE(log_level_replica), log_levels,
                         COUNT(log_levels), NULL, 0)) != LOOM_OK)
        return st;
    if ((st = check_enum(ROW(fp16_opt_level), args->fp16_opt_level, SOURCE(fp16_opt_level), opt_levels,
                         COUNT(opt_levels), NULL, 0)) != LOOM_OK)
        return st;
    if (args->sortish_sampler && args->group_by_length) {
        char where[512];
        return loom_error(LOOM_E_INVALID, "--sortish_sampler and --group_by_length are both set%s: pick one order",
                          loom__where(SOURCE(group_by_length), where, sizeof where));
    }
    if (args->fp16 && args->bf16) {
        char where[512];
        return loom_error(LOOM_E_INVALID, "--fp16 and --bf16 are both set%s: pick one precision",
                          loom__where(SOURCE(bf16), where, sizeof where));
    }
    if ((st = check_enum(ROW(evaluation_strategy), args->evaluation_strategy, SOURCE(evaluation_strategy), strategies,
                         COUNT(strategies), NULL, 0)) != LOOM_OK ||
        (st = check_enum(ROW(logging_strategy), args->logging_strategy, SOURCE(logging_strategy), strategies,
                         COUNT(strategies), NULL, 0)) != LOOM_OK ||
        (st = check_enum(ROW(save_strategy), args->save_strategy, SOURCE(save_strategy), strategies, COUNT(strategies),
                         best, COUNT(best))) != LOOM_OK ||
        (st = check_enum(ROW(lr_scheduler_type), args->lr_scheduler_type, SOURCE(lr_scheduler_type), schedulers,
                         COUNT(schedulers), NULL, 0)) != LOOM_OK)
        return st;
    /* HF's __post_init__: the schedule steps with the evaluation, so there must be one. */
    if (strcmp(args->lr_scheduler_type, "reduce_lr_on_plateau") == 0 && strcmp(args->evaluation_strategy, "no") == 0) {
        char where[512];
        return loom_error(LOOM_E_INVALID,
                          "--lr_scheduler_type reduce_lr_on_plateau%s requires an eval strategy (--eval_strategy steps "
                          "or epoch)",
                          loom__where(SOURCE(lr_scheduler_type), where, sizeof where));
    }
    char where[512];
    return loom__optim_check(args->optim, loom__where(SOURCE(optim), where, sizeof where));
}

/* HF: a LOCAL_RANK set by the launcher (torchrun) wins over --local_rank. */
static loom_status local_rank_from_env(loom_args *args)
{
    const char *env = getenv("LOCAL_RANK");
    int64_t rank;
    if (!env || !*env) return LOOM_OK;
    if (loom__parse_int(env, &rank) != 0)
        return loom_error(LOOM_E_INVALID, "LOCAL_RANK='%s' in the environment is not an integer", env);
    if (rank != -1) args->local_rank = rank;
    return LOOM_OK;
}

/* HF expands "~" in output_dir and logging_dir (a JSON file gets no shell expansion). */
static loom_status expand_home(char **path)
{
    const char *home = getenv("HOME");
    if (!*path || !home || !((*path)[0] == '~' && ((*path)[1] == '/' || (*path)[1] == '\0'))) return LOOM_OK;
    size_t n = strlen(home) + strlen(*path);
    char *full = malloc(n);
    if (!full) return loom_error(LOOM_E_NOMEM, "out of memory");
    snprintf(full, n, "%s%s", home, *path + 1);
    free(*path);
    *path = full;
    return LOOM_OK;
}

/* HF's runs/<date>_<host>, placed under output_dir so a run's logs stay with its
 * checkpoints whatever the working folder. */
static loom_status default_logging_dir(loom_args *args)
{
    char host[256] = "localhost", stamp[64];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d_%H-%M-%S", &tm);
    const char *base = args->output_dir && *args->output_dir ? args->output_dir : NULL;
    size_t n = (base ? strlen(base) + 1 : 0) + strlen("runs/") + strlen(stamp) + 1 + strlen(host) + 1;
    char *dir = malloc(n);
    if (!dir) return loom_error(LOOM_E_NOMEM, "out of memory");
    snprintf(dir, n, "%s%sruns/%s_%s", base ? base : "", base ? "/" : "", stamp, host);
    free(args->logging_dir);
    args->logging_dir = dir;
    return LOOM_OK;
}

static loom_status derive(loom_args *args)
{
    loom_status st;
    if ((st = expand_home(&args->output_dir)) != LOOM_OK || (st = expand_home(&args->logging_dir)) != LOOM_OK)
        return st;
    /* An evaluation strategy or --eval_on_start means evaluation data (HF's scripts pass the
     * eval_dataset with do_eval; its Trainer evaluates whatever it is given). */
    if (args->do_eval < 0 && (strcmp(args->evaluation_strategy, "no") != 0 || args->eval_on_start)) args->do_eval = 1;
    if (isnan(args->eval_steps)) args->eval_steps = args->logging_steps;
    /* HF's __post_init__: the best model, and reduce_lr_on_plateau, judge by the loss unless told
     * otherwise, and a metric whose name ends in "loss" is better when lower. */
    int plateau = args->lr_scheduler_type && strcmp(args->lr_scheduler_type, "reduce_lr_on_plateau") == 0;
    if ((args->load_best_model_at_end || plateau) && (!args->metric_for_best_model || !*args->metric_for_best_model) &&
        (st = loom__arg_set_string(&args->metric_for_best_model, "loss")) != LOOM_OK)
        return st;
    if (args->greater_is_better < 0 && args->metric_for_best_model && *args->metric_for_best_model) {
        size_t n = strlen(args->metric_for_best_model);
        args->greater_is_better = !(n >= 4 && strcmp(args->metric_for_best_model + n - 4, "loss") == 0);
    }
    if ((!args->run_name || !*args->run_name) && args->output_dir &&
        (st = loom__arg_set_string(&args->run_name, args->output_dir)) != LOOM_OK)
        return st;
    if (!args->logging_dir || !*args->logging_dir) return default_logging_dir(args);
    return LOOM_OK;
}

/* The largest batch size, accumulation, block or token count accepted (2^24). */
#define COUNT_MAX (INT64_C(1) << 24)
#define COUNT_MAX_TEXT "16777216"

/* One range rule: `ok` false -> "--name value<where>: rule". */
static loom_status require(int ok, const loom_args *args, const loom__arg_origin *origin, int index, const char *rule)
{
    if (ok) return LOOM_OK;
    const loom__arg_desc *d = &loom__arg_table[index];
    char where[512];
    char *value = loom__arg_format(args, d);
    loom_status st = loom_error(LOOM_E_INVALID, "--%s %s%s: %s", d->name,
                                !value   ? "?"
                                : *value ? value
                                         : "''",
                                loom__where(origin->source[index], where, sizeof where), rule);
    free(value);
    return st;
}

/* logging_steps, eval_steps or save_steps (row `index`, value v) as HF's __post_init__ checks
 * them, and only when its strategy (named `strategy`, set to `value`) is "steps": else nothing
 * reads it. Above 0, and a whole number from 1 up, as a value below 1 is a ratio of the run's
 * total steps (resolved when training starts: loom_args_steps). */
static loom_status check_steps(const loom_args *a, const loom__arg_origin *o, int index, double v, const char *strategy,
                               const char *value)
{
    if (strcmp(value, "steps") != 0) return LOOM_OK;
    char rule[128];
    if (!(v > 0)) {
        snprintf(rule, sizeof rule, "must be > 0 when %s is steps", strategy);
        return require(0, a, o, index, rule);
    }
    if (v > 1 && v != floor(v))
        return require(0, a, o, index,
                       "must be an integer if bigger than 1 (below 1 it is a ratio of the run's steps)");
    return require(v < 0x1p63, a, o, index, "must be below 2^63");
}

/* HF: with load_best_model_at_end, every save must come with an evaluation, so save_steps must
 * be a multiple of eval_steps. Two ratios are compared as ratios (to six decimals, as HF's
 * LARGE_MULTIPLIER does); a ratio and a count cannot be, as the ratio's steps are known only
 * once training starts. */
static loom_status check_best_steps(const loom_args *a, const loom__arg_origin *o)
{
    double save = a->save_steps, eval = a->eval_steps;
    if (fmod(save, eval) == 0) return LOOM_OK;
    int index = LOOM__ARG_load_best_model_at_end;
    if (save >= 1 && eval >= 1)
        return require(0, a, o, index, "requires --save_steps to be a round multiple of --eval_steps");
    char rule[512], save_text[64], eval_text[64];
    loom__format_steps(save, save_text, sizeof save_text);
    loom__format_steps(eval, eval_text, sizeof eval_text);
    if (save >= 1 || eval >= 1)
        snprintf(rule, sizeof rule,
                 "requires --save_steps to be a multiple of --eval_steps, which cannot be promised for a ratio "
                 "and a count of steps (--save_steps %s, --eval_steps %s): give both as ratios or both as counts",
                 save_text, eval_text);
    else if (fmod(save * 1e6, eval * 1e6) != 0)
        snprintf(rule, sizeof rule, "requires --save_steps %s to be a multiple of --eval_steps %s", save_text,
                 eval_text);
    else
        return LOOM_OK;
    return require(0, a, o, index, rule);
}

/* The longest --output_dir: 4096-byte path buffers, less room for the longest name loom puts
 * below it (a checkpoint's optimizer shard, a TensorBoard event file with the host's name). */
#define LOOM_OUTPUT_DIR_MAX 3840

static loom_status check_ranges(const loom_args *a, const loom__arg_origin *o)
{
    int steps_eval = strcmp(a->evaluation_strategy, "steps") == 0;
    loom_status st;
#define REQUIRE(cond, name, rule)                                                                                      \
    if ((st = require(cond, a, o, LOOM__ARG_##name, rule)) != LOOM_OK) return st
    /* Counts have upper bounds too, so that products of them (samples per step, total steps,
     * bytes) stay far from overflowing int64 or size_t. */
    REQUIRE(a->per_device_train_batch_size >= 1 && a->per_device_train_batch_size <= COUNT_MAX,
            per_device_train_batch_size, "must be >= 1 and <= " COUNT_MAX_TEXT);
    REQUIRE(a->per_device_eval_batch_size >= 1 && a->per_device_eval_batch_size <= COUNT_MAX,
            per_device_eval_batch_size, "must be >= 1 and <= " COUNT_MAX_TEXT);
    REQUIRE(a->gradient_accumulation_steps >= 1 && a->gradient_accumulation_steps <= COUNT_MAX,
            gradient_accumulation_steps, "must be >= 1 and <= " COUNT_MAX_TEXT);
    REQUIRE(a->block_size >= 0 && a->block_size <= COUNT_MAX, block_size, "must be >= 0 and <= " COUNT_MAX_TEXT);
    /* HF's GenerationConfig.validate: at least one new token and one beam. Checked here, not
     * at the first generated batch, so a run whose generation does not read them refuses them
     * rather than ignoring them. --generation_num_beams and the lengths are checked where beam
     * search reads them (trainer_generate.c); --temperature and --top_p where sampling does
     * (generate.c), as HF only warns about them when decoding greedily. */
    REQUIRE(a->max_new_tokens >= 1 && a->max_new_tokens <= COUNT_MAX, max_new_tokens,
            "must be >= 1 and <= " COUNT_MAX_TEXT);
    REQUIRE(a->num_beams == LOOM_ARG_NONE_INT || (a->num_beams >= 1 && a->num_beams <= COUNT_MAX), num_beams,
            "must be >= 1 (1 = greedy) and <= " COUNT_MAX_TEXT);
    REQUIRE(a->top_k >= 0, top_k, "must be >= 0 (0 = all tokens)");
    REQUIRE(a->ddp_bucket_cap_mb == LOOM_ARG_NONE_INT || (a->ddp_bucket_cap_mb >= 1 && a->ddp_bucket_cap_mb <= 65536),
            ddp_bucket_cap_mb, "must be in [1, 65536] (MB)");
    /* Everything loom writes lies a checkpoint folder and a file name below output_dir, in
     * buffers of 4096 bytes: a longer path would fail at the first save, maybe hours in. */
    if (a->output_dir && strlen(a->output_dir) > LOOM_OUTPUT_DIR_MAX)
        return loom_error(LOOM_E_INVALID,
                          "--output_dir: %zu bytes long; the files loom writes below it need it to be at most %d",
                          strlen(a->output_dir), LOOM_OUTPUT_DIR_MAX);
    REQUIRE(a->learning_rate >= 0, learning_rate, "must be >= 0");
    REQUIRE(a->weight_decay >= 0, weight_decay, "must be >= 0");
    REQUIRE(a->adam_beta1 >= 0 && a->adam_beta1 < 1, adam_beta1, "must be in [0, 1)");
    REQUIRE(a->adam_beta2 >= 0 && a->adam_beta2 < 1, adam_beta2, "must be in [0, 1)");
    /* PyTorch takes 0, and then writes 0 / 0 = NaN into every weight whose gradient is still 0. */
    REQUIRE(a->adam_epsilon > 0, adam_epsilon, "must be > 0 (with 0, a weight whose gradient is 0 becomes NaN)");
    REQUIRE(a->num_train_epochs >= 0 && a->num_train_epochs <= 1e6, num_train_epochs, "must be >= 0 and <= 1e6");
    REQUIRE(a->warmup_ratio >= 0 && a->warmup_ratio <= 1, warmup_ratio, "must be in [0, 1]");
    /* v5 takes any float from 0 up: int() of it from 1, a ratio of the run's steps below 1. */
    REQUIRE(a->warmup_steps >= 0 && a->warmup_steps < 0x1p63, warmup_steps,
            "must be >= 0 (steps, or a ratio of the run's steps in (0, 1)) and below 2^63");
    REQUIRE(a->eval_delay >= 0, eval_delay, "must be >= 0 (steps or epochs before the first evaluation)");
    if ((st = check_steps(a, o, LOOM__ARG_logging_steps, a->logging_steps, "logging_strategy", a->logging_strategy)) !=
        LOOM_OK)
        return st;
    if (steps_eval && a->eval_steps <= 0 && !o->source[LOOM__ARG_eval_steps]) {
        char text[64];
        loom__format_steps(a->logging_steps, text, sizeof text);
        return loom_error(LOOM_E_INVALID,
                          "evaluation_strategy steps needs eval_steps > 0 (it defaults to "
                          "logging_steps, %s here): give --eval_steps",
                          text);
    }
    if ((st = check_steps(a, o, LOOM__ARG_eval_steps, a->eval_steps, "evaluation_strategy", a->evaluation_strategy)) !=
        LOOM_OK)
        return st;
    if ((st = check_steps(a, o, LOOM__ARG_save_steps, a->save_steps, "save_strategy", a->save_strategy)) != LOOM_OK)
        return st;
    REQUIRE(a->save_total_limit == LOOM_ARG_NONE_INT || a->save_total_limit >= 0, save_total_limit, "must be >= 0");
    /* HF's rules for load_best_model_at_end: the best checkpoint must exist when it is chosen. */
    REQUIRE(!a->load_best_model_at_end || strcmp(a->evaluation_strategy, a->save_strategy) == 0, load_best_model_at_end,
            "requires the save and evaluation strategies to match (--save_strategy and --evaluation_strategy)");
    REQUIRE(!a->load_best_model_at_end || strcmp(a->evaluation_strategy, "no") != 0, load_best_model_at_end,
            "requires an evaluation strategy (steps or epoch)");
    if (a->load_best_model_at_end && strcmp(a->save_strategy, "steps") == 0 && (st = check_best_steps(a, o)) != LOOM_OK)
        return st;
    REQUIRE(a->ddp_timeout > 0 && a->ddp_timeout <= 30 * 24 * 3600, ddp_timeout,
            "must be > 0 and <= 2592000 (30 days, in seconds)");
    REQUIRE(a->num_threads >= 0 && a->num_threads <= 4096, num_threads, "must be >= 0 and <= 4096 (0 = automatic)");
    REQUIRE(a->local_rank >= -1, local_rank, "must be >= -1");
    /* An empty value is not "no": HF looks for a checkpoint at "" and fails. It is most often a
     * script's unset variable, and starting afresh would hide that. */
    REQUIRE(!a->resume_from_checkpoint || a->resume_from_checkpoint[0] || !o->source[LOOM__ARG_resume_from_checkpoint],
            resume_from_checkpoint, "is empty: give a checkpoint folder, true (the newest in --output_dir) or false");
#undef REQUIRE
    return LOOM_OK;
}

/* Every text value goes into training_args.json (and paths into trainer_state.json): one byte
 * that is not UTF-8 makes those files unreadable to json.load, so it is refused here, before
 * anything is written, rather than found by the first tool that reads them. */
static loom_status not_utf8(const char *flag, const char *text, const char *source)
{
    size_t len = strlen(text), bad = loom__utf8_invalid_at(text, len);
    if (bad == len) return LOOM_OK;
    char where[512];
    return loom_error(LOOM_E_INVALID,
                      "--%s%s: byte 0x%02x at offset %zu is not UTF-8 (loom writes its arguments into "
                      "training_args.json, and JSON text is UTF-8): rename it",
                      flag, loom__where(source, where, sizeof where), (unsigned char)text[bad], bad);
}

static loom_status check_utf8(const loom_args *args, const loom__arg_origin *origin)
{
    loom_status st = LOOM_OK;
    for (size_t i = 0; i < LOOM__ARG_COUNT && st == LOOM_OK; i++) {
        const loom__arg_desc *d = &loom__arg_table[i];
        const void *field = loom__arg_cfield(args, d);
        if (d->kind == LOOM__K_STRING && *(char *const *)field) {
            st = not_utf8(d->name, *(char *const *)field, origin->source[i]);
        } else if (d->kind == LOOM__K_LIST) {
            const loom_string_list *l = field;
            for (size_t k = 0; k < l->count && st == LOOM_OK; k++)
                st = not_utf8(d->name, l->items[k], origin->source[i]);
        }
    }
    for (size_t k = 0; k < args->unknown_keys.count && st == LOOM_OK; k++) {
        const char *key = args->unknown_keys.items[k];
        if ((st = not_utf8(key, key, NULL)) == LOOM_OK) st = not_utf8(key, args->unknown_values.items[k], NULL);
    }
    return st;
}

/* Generation flags a run would ignore, or two spellings of one setting that disagree: refused,
 * so a run never decodes otherwise than asked. The sampling flags belong to predict --generate
 * (text from --prompt); --predict_with_generate decodes by beam search. HF's run_translation
 * takes --num_beams / --max_length over Seq2SeqTrainingArguments' generation_*; loom takes
 * generation_* first (its docs), so both given and different is the one case to refuse. */
/* HF's label_names names the model inputs that are labels. Every dataset loom reads (token
 * shards, pair files, classification files) has one, HF's default name "labels"; scripts that
 * spell it out pass that. Another name would be a column loom cannot find. */
static loom_status check_label_names(const loom_args *a, const loom__arg_origin *o)
{
    for (size_t i = 0; i < a->label_names.count; i++)
        if (strcmp(a->label_names.items[i], "labels") != 0) {
            char rule[320];
            snprintf(rule, sizeof rule,
                     "'%.200s' is not an input of loom's data, whose one label input is 'labels' (the only name "
                     "taken)",
                     a->label_names.items[i]);
            return require(0, a, o, LOOM__ARG_label_names, rule);
        }
    return LOOM_OK;
}

static loom_status check_generation(const loom_args *a, const loom__arg_origin *o)
{
    static const int sampling[] = {LOOM__ARG_max_new_tokens, LOOM__ARG_do_sample, LOOM__ARG_temperature,
                                   LOOM__ARG_top_k, LOOM__ARG_top_p};
    for (size_t i = 0; i < sizeof sampling / sizeof *sampling && !a->generate; i++) {
        const loom__arg_desc *d = &loom__arg_table[sampling[i]];
        char where[512];
        if (o->source[sampling[i]] && !loom__arg_is_default(a, d))
            return loom_error(LOOM_E_INVALID,
                              "--%s%s applies to loom predict --generate (text from --prompt), which this run does "
                              "not do%s",
                              d->name, loom__where(o->source[sampling[i]], where, sizeof where),
                              a->predict_with_generate
                                  ? ": --predict_with_generate decodes by beam search (--generation_num_beams, "
                                    "--generation_max_length)"
                                  : "");
    }
    const int64_t none = LOOM_ARG_NONE_INT;
    if (a->num_beams != none && a->generation_num_beams != none && a->num_beams != a->generation_num_beams)
        return loom_error(LOOM_E_INVALID, "--num_beams %lld and --generation_num_beams %lld disagree: give one",
                          (long long)a->num_beams, (long long)a->generation_num_beams);
    if (a->max_length != none && a->generation_max_length != none && a->max_length != a->generation_max_length)
        return loom_error(LOOM_E_INVALID, "--max_length %lld and --generation_max_length %lld disagree: give one",
                          (long long)a->max_length, (long long)a->generation_max_length);
    return LOOM_OK;
}

loom_status loom__args_resolve(loom_args *args, loom__arg_origin *origin)
{
    loom_status st;
    if ((st = check_status(args, origin)) != LOOM_OK) return st;
    if ((st = check_utf8(args, origin)) != LOOM_OK) return st;
    if ((st = normalise_kwargs(args, origin)) != LOOM_OK) return st;
    if ((st = loom__args_resolve_later(args, origin)) != LOOM_OK) return st;
    if ((st = apply_aliases(args, origin)) != LOOM_OK) return st;
    if ((st = tokens_seen_mode(args)) != LOOM_OK) return st;
    if ((st = check_enums(args, origin)) != LOOM_OK) return st;
    if ((st = local_rank_from_env(args)) != LOOM_OK) return st;
    if ((st = derive(args)) != LOOM_OK) return st;
    if ((st = check_ranges(args, origin)) != LOOM_OK) return st;
    if ((st = check_label_names(args, origin)) != LOOM_OK) return st;
    return check_generation(args, origin);
}
