/*
 * args_internal.h - the argument table as data, shared by the files that implement args.h
 * (args.c parses the command line, args_file.c reads --config, args_resolve.c applies HF's
 * derived defaults and checks, args_json.c writes the result). Core-internal.
 */
#ifndef LOOM_CORE_ARGS_INTERNAL_H
#define LOOM_CORE_ARGS_INTERNAL_H

#include <stddef.h>

#include "args.h"

/* The kinds of args.h's field types, as values (LOOM_ARG_BOOL & co. are taken: they are the
 * field types while the struct is expanded). */
typedef enum loom__arg_kind {
    LOOM__K_BOOL,
    LOOM__K_OPT_BOOL,
    LOOM__K_INT,
    LOOM__K_OPT_INT,
    LOOM__K_FLOAT,
    LOOM__K_STEPS,
    LOOM__K_OPT_STEPS,
    LOOM__K_STRING,
    LOOM__K_LIST
} loom__arg_kind;

typedef struct loom__arg_desc {
    loom__arg_kind kind;
    const char *name;
    const char *default_text;
    int status;
    const char *note;
    const char *doc;
    size_t offset; /* of the field in loom_args */
} loom__arg_desc;

extern const loom__arg_desc loom__arg_table[LOOM__ARG_COUNT];

/* Where each value came from while parsing: LOOM__SRC_CLI, the config file's path (owned by
 * args->config), or NULL (default). Error messages name it; the command line replaces a
 * list the file gave instead of appending to it (cli_list_started). */
extern const char LOOM__SRC_CLI[];
typedef struct loom__arg_origin {
    const char *source[LOOM__ARG_COUNT];
    unsigned char cli_list_started[LOOM__ARG_COUNT];
} loom__arg_origin;

/* " on the command line" / " in <path>" / "" (a default), for error messages. */
const char *loom__where(const char *source, char *buf, size_t size);

/* The row named `name` exactly, or NULL. */
const loom__arg_desc *loom__arg_find(const char *name);

/* The field of a row. */
void *loom__arg_field(loom_args *args, const loom__arg_desc *d);
const void *loom__arg_cfield(const loom_args *args, const loom__arg_desc *d);

/* Text -> value parsers. Return 0 on success, -1 when `text` is not (completely) one. */
int loom__parse_bool(const char *text, int32_t *out); /* true/false/yes/no/1/0/t/f/y/n, any case */
int loom__parse_int(const char *text, int64_t *out);
int loom__parse_float(const char *text, double *out); /* finite only */

/* Set a scalar field (not LIST) from command-line text, naming the flag and the source on a
 * bad value. OPT_* also take "none". */
loom_status loom__arg_set_text(loom_args *args, const loom__arg_desc *d, const char *text, const char *source);

/* Replace a STRING field (NULL = None). */
loom_status loom__arg_set_string(char **field, const char *value);

/* Append to / empty a list. */
loom_status loom__list_append(loom_string_list *list, const char *item);
void loom__list_clear(loom_string_list *list);

/* Record an unknown flag; a later value for the same key replaces the earlier one (the
 * command line after the file, the last of repeated flags). */
loom_status loom__args_add_unknown(loom_args *args, const char *key, const char *value, const char *source);

/* Reset a field to its table default (frees what it held). */
loom_status loom__arg_set_default(loom_args *args, const loom__arg_desc *d);

/* 1 when the field holds its table default. */
int loom__arg_is_default(const loom_args *args, const loom__arg_desc *d);

/* The value as command-line text ("true", "5e-05", "a b" for lists, "none"), malloc'd; NULL
 * when out of memory. Secrets (*_token) come back as "<HUB_TOKEN>"-style placeholders. */
char *loom__arg_format(const loom_args *args, const loom__arg_desc *d);

/* 1 for STRING rows HF takes as a dict (lr_scheduler_kwargs, fsdp_config, deepspeed...). */
int loom__arg_is_dict(const loom__arg_desc *d);

/* 1 for rows whose value is a secret and must never be written out. */
int loom__arg_is_secret(const loom__arg_desc *d);

/* Python's repr() of a float (shortest round-trip, "3.0", "5e-05", "1e+16") into buf. */
void loom__format_double(double v, char *buf, size_t size);

/* A STEPS value as text: a whole number as an integer ("500", as HF keeps the int it makes of
 * one), a ratio as Python's repr ("0.25"), None as "none". JSON takes the same text but null. */
void loom__format_steps(double v, char *buf, size_t size);

struct cJSON;

/* Parse `len` bytes of `text` (NUL-terminated after them) as exactly one JSON value: a NUL
 * byte inside, trailing text or a second value is LOOM_E_FORMAT naming `where` and the byte
 * offset or line:column. The caller deletes *root (args_file.c). */
loom_status loom__json_parse_strict(const char *where, const char *text, size_t len, struct cJSON **root);

/* Read the regular file `path` (at most max_bytes) and parse it with loom__json_parse_strict;
 * a file that cannot be read is LOOM_E_IO with `flag` ("--config") in front. The one reader
 * of --config and --deepspeed files, so both refuse the same input the same way. */
loom_status loom__json_read_file(const char *flag, const char *path, size_t max_bytes, struct cJSON **root);

/* Read the --config file at `path` into args (args_file.c). */
loom_status loom__args_load_file(loom_args *args, const char *path, loom__arg_origin *origin);

/* 1 when a --deepspeed value is a JSON object itself, not a path: HF's TrainingArguments takes
 * a dict for deepspeed (a --config's "deepspeed": {...}, or text starting with '{'). */
int loom__ds_is_inline(const char *value);

/* What messages call a --deepspeed value: the path, or "--deepspeed (inline dict)". */
const char *loom__ds_label(const char *value);

/* The --deepspeed config as JSON, from the file or the inline dict (args_deepspeed.c). */
loom_status loom__ds_read_json(const char *value, struct cJSON **root);

/* --deepspeed FILE: the file's values for the arguments it maps replace their defaults;
 * a given argument that disagrees is an error (args_deepspeed.c). A file that cannot be read
 * or parsed is left for loom_ds_config_load to report. */
loom_status loom__args_adopt_deepspeed(loom_args *args, loom__arg_origin *origin);

/* HF's later arguments' checks and aliases, called by loom__args_resolve (args_later.c). */
loom_status loom__args_resolve_later(loom_args *args, loom__arg_origin *origin);

/* An option list of space-separated words (args_words.c): whether it holds `word`; and a check
 * that each word is one of `known` ("FLAG WHERE: 'x' is not one of: ..."), giving how many
 * words there are and how many of them are among the first n_strategies of `known`. */
int loom__words_has(const char *list, const char *word);
loom_status loom__words_check(const char *flag, const char *text, const char *const *known, size_t n_known,
                              size_t n_strategies, const char *where, int *words, int *strategies);

/* --fsdp and --fsdp_config: their checks, HF's, and what maps onto loom's (args_fsdp.c). */
loom_status loom__args_resolve_fsdp(loom_args *args, loom__arg_origin *origin);

/* --fp16 with the apex backend (--half_precision_backend apex, or its deprecated name
 * --fp16_backend apex, which is all DeepSpeed's adoption has set before resolving). */
int loom__args_fp16_apex(const loom_args *a);

/* HF's AcceleratorConfig().to_dict(): what training_args.json holds when --accelerator_config is
 * not given (HF writes the dict whenever accelerate is installed, as the Trainer needs it). */
#define LOOM__ACCELERATOR_CONFIG_DEFAULT                                                                               \
    "{\"split_batches\":false,\"dispatch_batches\":null,\"even_batches\":true,\"use_seedable_sampler\":true,"          \
    "\"non_blocking\":false,\"gradient_accumulation_kwargs\":null}"

/* HF's __post_init__: derived defaults, aliases, checks (args_resolve.c). */
loom_status loom__args_resolve(loom_args *args, loom__arg_origin *origin);

#endif
