/*
 * args.h - the resolved run arguments: HF TrainingArguments' names and defaults, plus loom's
 * own (model, plugins, data files), from the command line and/or a JSON file.
 *
 * The table lives in training_args.def; each row becomes one field of loom_args named exactly
 * as HF names the argument. Parsing rules (HF's HfArgumentParser, as practitioners use it):
 *   --name value, --name=value; a bool flag alone (--do_train) means true, and
 *   --name true/false/1/0/yes/no also work; list arguments (report_to, plugin) take one or
 *   more values up to the next --flag, and repeat.
 *   --config FILE.json reads a JSON object of the same names; the command line wins.
 *   JSON keys are case-sensitive; a duplicate key is an error; a value of the wrong type is
 *   an error naming the key, the file and the expected type.
 * An argument that is neither in the table nor a key of a loaded plugin is an error that names
 * it and suggests the closest valid name (plugin keys are checked later, see plugin_config.h;
 * the parser keeps unknown flags for that step).
 */
#ifndef LOOM_CORE_ARGS_H
#define LOOM_CORE_ARGS_H

#include "error.h" /* LOOM_API */

#include <loom/loom.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* Sentinel of an optional integer that is None. */
#define LOOM_ARG_NONE_INT INT64_MIN
/* Sentinel of an optional step count that is None (test it with isnan). */
#define LOOM_ARG_NONE_STEPS NAN

/* Argument kinds (first column of training_args.def). Field types:
 *   BOOL -> int32_t 0/1; OPT_BOOL -> int32_t -1 (None)/0/1; INT -> int64_t;
 *   OPT_INT -> int64_t, LOOM_ARG_NONE_INT for None; FLOAT -> double;
 *   STEPS -> double: a number of optimizer steps, or below 1 a ratio of the run's total steps
 *   (HF's float logging_steps, eval_steps, save_steps; loom_args_steps resolves it);
 *   OPT_STEPS -> the same, LOOM_ARG_NONE_STEPS for None;
 *   STRING -> char * (owned, NULL for None); LIST -> loom_string_list. */
typedef struct loom_string_list {
    char **items; /* owned */
    size_t count;
} loom_string_list;

/* LOOM__ARG_<name>: a row's index in training_args.def; LOOM__ARG_COUNT rows. */
enum {
#define LOOM_ARG(kind, name, default_text, status, note, doc) LOOM__ARG_##name,
#include "training_args.def"
#undef LOOM_ARG
    LOOM__ARG_COUNT
};

/* Where a resolved value came from (loom_args.origin[row]): its default (HF's, or one HF
 * derives, such as eval_steps from logging_steps), the command line, the --config file, or
 * the --deepspeed file (a value written there wins over a default; see deepspeed_config.h). */
typedef enum loom_arg_origin {
    LOOM_ARG_FROM_DEFAULT = 0,
    LOOM_ARG_FROM_COMMAND_LINE,
    LOOM_ARG_FROM_CONFIG_FILE,
    LOOM_ARG_FROM_DEEPSPEED_FILE,
    /* --resume_from_checkpoint only: `loom train` found a checkpoint in --output_dir (HF's
     * example scripts' get_last_checkpoint) or restarts a job (loom launch --max_restarts). */
    LOOM_ARG_FROM_OUTPUT_DIR
} loom_arg_origin;

/* What becomes of a non-default value (third-to-last column of training_args.def). */
#define LOOM_ARG_SUPPORTED 0 /* implemented                                                 */
#define LOOM_ARG_NOT_YET 1   /* accepted; a non-default value is an error "not supported
                                yet (<note>)" so a run never silently differs from HF's      */
#define LOOM_ARG_NO_EFFECT 2 /* accepted; meaningless here (TPU, hub, pin_memory...): a
                                non-default value prints one warning and is ignored          */

typedef struct loom_args {
#define LOOM_ARG_BOOL int32_t
#define LOOM_ARG_OPT_BOOL int32_t
#define LOOM_ARG_INT int64_t
#define LOOM_ARG_OPT_INT int64_t
#define LOOM_ARG_FLOAT double
#define LOOM_ARG_STEPS double
#define LOOM_ARG_OPT_STEPS double
#define LOOM_ARG_STRING char *
#define LOOM_ARG_LIST loom_string_list
#define LOOM_ARG(kind, name, default_text, status, note, doc) LOOM_ARG_##kind name;
#include "training_args.def"
#undef LOOM_ARG

    /* Flags the table does not know, kept in order for the plugins' sections:
     * unknown_keys[i] ("adamw.beta1", "n_layer") = unknown_values[i] (the text as given on
     * the command line, or the JSON value printed compactly). Owned. */
    loom_string_list unknown_keys;
    loom_string_list unknown_values;
    /* Where each unknown key came from ("command line" or the JSON file path). Owned. */
    loom_string_list unknown_sources;
    /* Where each argument's value came from (loom_arg_origin), set by loom_args_parse. A
     * value is "given" when it is not LOOM_ARG_FROM_DEFAULT. */
    unsigned char origin[LOOM__ARG_COUNT];
} loom_args;

/* Defaults for every field (HF's). */
LOOM_API void loom_args_init(loom_args *args);
LOOM_API void loom_args_free(loom_args *args);

/* Parse argv[0..argc) (the arguments after the sub-command) into args, reading --config
 * first so the command line wins. Applies HF's derived defaults after parsing (do_eval when
 * evaluation_strategy != "no", eval_steps = logging_steps when None, run_name = output_dir,
 * logging_dir = runs/<date>_<host>, eval_strategy alias, per_gpu_* aliases) and validates
 * values (enums such as evaluation_strategy and lr_scheduler_type, ranges such as
 * gradient_accumulation_steps >= 1). Rejects a non-default LOOM_ARG_NOT_YET argument and warns
 * (once, to stderr) about a non-default LOOM_ARG_NO_EFFECT one.
 * On error returns a status and sets loom_error() to one line naming the argument and where
 * it came from. */
LOOM_API loom_status loom_args_parse(loom_args *args, int argc, char **argv);

/* A STEPS argument in optimizer steps, for a run of max_steps of them: a ratio in (0, 1) is HF's
 * ceil(max_steps x ratio) (TrainerState.compute_steps, at the start of training), any other
 * value the count it is (docs/semantics/trainer.md#strategies). */
LOOM_API int64_t loom_args_steps(double steps, int64_t max_steps);

/* The run's warmup in optimizer steps, for a run of total_steps of them: v5's float warmup_steps
 * (>= 1 its int(), in (0, 1) a ratio, rounded up), else v4's ceil(total x warmup_ratio)
 * (docs/semantics/schedulers.md#warmup). */
LOOM_API int64_t loom_args_warmup_steps(const loom_args *args, int64_t total_steps);

/* Write the resolved arguments as a JSON object (keys sorted, indent 2, HF's
 * to_json_string style) to `out`. Unknown keys are included under "plugin_flags". */
LOOM_API loom_status loom_args_write_json(const loom_args *args, FILE *out);

/* One "--name value" line per argument that differs from its default, for the resolved-
 * configuration log at start. */
LOOM_API void loom_args_print_nondefault(const loom_args *args, FILE *out);

/* The resolved configuration with provenance: one line per argument,
 * "  --name value    (command line | <config path> | <deepspeed path> | default)", the ones
 * given (or taken from a file) first, then every default unless `given_only`. */
LOOM_API void loom_args_print_resolved(const loom_args *args, FILE *out, int given_only);

/* "command line", the --config path, the --deepspeed path, or "default", for one row. */
LOOM_API const char *loom_args_origin_text(const loom_args *args, size_t row);

/* Python's str(round(v, digits)) (HF rounds logged metrics so: 0.6931, 3.0, 1e-05). */
LOOM_API void loom_format_rounded(double v, int digits, char *buf, size_t size);

/* The closest of `candidates` (n of them) to `word` by edit distance, or NULL if none is
 * within a sensible distance (<= max(2, strlen/3)). */
LOOM_API const char *loom_closest_name(const char *word, const char *const *candidates, size_t n);

/* The sharding plugin resolved --fsdp or --sharded_ddp options (and --fsdp_config's
 * reshard_after_forward) map onto ("zero3", "zero2", "ddp" or "sharded_ddp"), NULL when neither
 * asks for one (args_fsdp.c). Inside libloom only. */
const char *loom__fsdp_sharding(const loom_args *args);
/* --fsdp_config's activation_checkpointing: FSDP's recompute of each block in backward, which
 * is loom's --gradient_checkpointing (args_fsdp.c). Inside libloom only. */
int loom__fsdp_activation_checkpointing(const loom_args *args);

#endif
