/*
 * ds_config_internal.h - what the files of the ds_config.json reader share: the parse context,
 * the typed schema walk, and the plugin entries a section maps onto. One file per section,
 * as DeepSpeed keeps one config module per feature:
 *   deepspeed_config.c     the top level: load (dispatch to the sections), free, resolve steps;
 *   ds_config_schema.c     this header's helpers: keys, types, "auto", command-line agreement;
 *   ds_config_batch.c      batch sizes, gradient clipping and the top-level switches;
 *   ds_config_zero.c       zero_optimization -> ddp / zero1 / zero2;
 *   ds_config_optimizer.c  optimizer -> adam / adamw / lamb / onebit_adam;
 *   ds_config_scheduler.c  scheduler -> warmup_lr / warmup_decay_lr / one_cycle / lr_range_test;
 *   ds_config_precision.c  fp16 / amp / bf16 (and bf16's old name bfloat16);
 *   ds_config_data.c       the keys that map onto run arguments or must name what loom does:
 *                          dataloader_drop_last, checkpoint, communication_data_type,
 *                          data_types, seq_parallel_comm_data_type;
 *   ds_config_extras.c     today's other sections and switches: accepted with no effect (a
 *                          note when they ask for something) or refused when they would
 *                          change the training;
 *   ds_config_json.c       the merged configuration written back as JSON.
 * The rules themselves are documented in deepspeed_config.h.
 */
#ifndef LOOM_DS_CONFIG_INTERNAL_H
#define LOOM_DS_CONFIG_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "deepspeed_config.h"

#define COUNT(a) (sizeof(a) / sizeof *(a))

/* One parse: the file (for messages), the run arguments it merges with, the result. */
typedef struct ds_ctx {
    const char *file;
    const loom_args *args;
    loom_ds_config *cfg;
} ds_ctx;

/* The JSON type a key must have. */
typedef enum { K_INT, K_NUM, K_BOOL, K_STR, K_OBJ } ds_kind;

/* A key as read by loom__ds_get: present or not, "auto" or a value of its kind. */
typedef struct ds_value {
    int present, is_auto;
    int64_t i;
    double d;
    int b;
    const char *s;
    const cJSON *json;
} ds_value;

/* ---- plugin entries (copied text; NULL value = pending until the step count is known) ---- */

char *loom__ds_dup_text(const char *s);
int loom__ds_is_auto(const cJSON *v);
loom_status loom__ds_add_entry(loom_ds_plugin_choice *c, const char *key, const char *value);
loom_status loom__ds_add_double(loom_ds_plugin_choice *c, const char *key, double v);
loom_status loom__ds_add_int(loom_ds_plugin_choice *c, const char *key, int64_t v);
loom_status loom__ds_add_bool(loom_ds_plugin_choice *c, const char *key, int v);

/* ---- schema walk (prefix is "" or "section.") ---- */

/* Duplicates and unknown keys of one object (with the closest valid key). */
loom_status loom__ds_check_keys(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *const *allowed,
                                size_t n);
/* Read obj[key] as `k`; "auto" only when allow_auto. A missing key leaves v->present 0. */
loom_status loom__ds_get(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key, ds_kind k,
                         int allow_auto, ds_value *v);
loom_status loom__ds_need_min_int(const ds_ctx *c, const char *prefix, const char *key, const ds_value *v, int64_t min);
loom_status loom__ds_need_nonneg(const ds_ctx *c, const char *prefix, const char *key, const ds_value *v);
/* The message for a file value that disagrees with the command line's --flag. */
loom_status loom__ds_mismatch_int(const ds_ctx *c, const char *key, int64_t ds, const char *flag, int64_t hf);
loom_status loom__ds_mismatch_double(const ds_ctx *c, const char *key, double ds, const char *flag, double hf);
/* A float value: "auto" -> hf; a number must equal hf; absent -> absent_value. */
loom_status loom__ds_merge_double(const ds_ctx *c, const cJSON *obj, const char *prefix, const char *key,
                                  const char *flag, double hf, double absent_value, double *out);

/* A key loom type-checks but does not act on (a section's tuning knobs, monitors...). */
#define DS_AUTO 1u /* "auto" is allowed */
#define DS_NULL 2u /* null is allowed (DeepSpeed's Optional) */
#define DS_ANY 4u  /* any JSON value: a sub-section DeepSpeed hands on unparsed */
typedef struct ds_key {
    const char *key;
    ds_kind k;
    unsigned flags;
} ds_key;

/* The types of the keys of `keys` present in obj (other keys are not looked at). */
loom_status loom__ds_check_types(const ds_ctx *c, const cJSON *obj, const char *prefix, const ds_key *keys, size_t n);
/* Unknown and duplicate keys against `keys`, then their types. */
loom_status loom__ds_check_table(const ds_ctx *c, const cJSON *obj, const char *prefix, const ds_key *keys, size_t n);
/* obj[key] is true (a missing or non-boolean key is not). */
int loom__ds_is_true(const cJSON *obj, const char *key);
/* A one-line warning for the trainer to print once (a repeated text is kept once). */
loom_status loom__ds_note(ds_ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A {"type": ..., "params": {...}} section (optimizer, scheduler): no other key, type a string,
 * params an object; either may be absent. */
loom_status loom__ds_get_typed_section(const ds_ctx *c, const cJSON *section, const char *prefix, ds_value *type,
                                       ds_value *params);

/* ---- the sections, in the order loom_ds_config_load runs them (precision reads zero's stage
 * and the optimizer's choice, data the precision) ---- */

loom_status loom__ds_parse_batch(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_zero(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_optimizer(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_scheduler(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_precision(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_data(ds_ctx *c, const cJSON *root);
loom_status loom__ds_parse_extras(ds_ctx *c, const cJSON *root);

#endif /* LOOM_DS_CONFIG_INTERNAL_H */
