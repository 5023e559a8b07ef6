/*
 * plugin_config.h - one plugin's configuration section (the loom_config of loom.h) and the
 * typed getters the host lends to plugins.
 *
 * A section is built from, in increasing priority:
 *   1. the defaults of the plugin's loom_param_spec table;
 *   2. values the core maps from TrainingArguments (for an optimizer: lr, beta1 <- adam_beta1,
 *      beta2, eps <- adam_epsilon, weight_decay; for a scheduler: num_cycles, power...), set
 *      only for keys the plugin declares;
 *   3. the user's flags for this plugin: "--<plugin>.<key> value" (always), or
 *      "--<key> value" when key is declared by this plugin (model flags such as --n_layer),
 *      and in the JSON config file the same names as keys.
 * Every value is checked against the declared type; an undeclared "<plugin>.<key>" is an error
 * naming the key and the plugin and suggesting the closest declared key.
 */
#ifndef LOOM_CORE_PLUGIN_CONFIG_H
#define LOOM_CORE_PLUGIN_CONFIG_H

#include <loom/loom.h>

#include "args.h"

/* A mapped value from step 2: key and value as text, typed by the spec. */
typedef struct loom_config_default {
    const char *key;
    const char *value;
} loom_config_default;

/* Build the section for `desc` (its name and params). `mapped` (n_mapped entries, may be 0)
 * are step 2; unknown flags of `args` that belong to this plugin are step 3 and are marked
 * used in `used` (an array of args->unknown_keys.count flags, 0/1) so the caller can report
 * the ones no plugin took. Returns NULL with loom_error() set on a bad value or key. */
loom_config *loom_config_build(const loom_plugin_desc *desc, const loom_config_default *mapped,
                               size_t n_mapped, const loom_args *args, unsigned char *used);

/* Whether the plugin declares `key` among its parameters. */
int loom_config_declares(const loom_plugin_desc *desc, const char *key);

/* An empty section that answers spec defaults only (for tests and tools). */
loom_config *loom_config_from_spec(const loom_plugin_desc *desc);

/* Set one key to a value given as text (type from the spec). For tests and mapped values.
 * Returns LOOM_E_INVALID for an undeclared key or a value that does not parse. */
loom_status loom_config_set(loom_config *config, const char *key, const char *value);

void loom_config_free(loom_config *config);

/* Print the section's resolved values as "name.key = value" lines. */
void loom_config_print(const loom_config *config, FILE *out);

/* The getters behind loom_host_api's cfg_* members (same contracts as in loom.h). */
int loom_config_f64(const loom_config *cfg, const char *key, double *out);
int loom_config_i64(const loom_config *cfg, const char *key, int64_t *out);
int loom_config_bool(const loom_config *cfg, const char *key, int32_t *out);
int loom_config_str(const loom_config *cfg, const char *key, const char **out);
const char *loom_config_key(const loom_config *cfg, size_t index);
/* The resolved value of key as text into buf: booleans "true"/"false", numbers in their
 * shortest form (so "1e-2" and "0.01" read alike), strings as given. 0 when absent. */
int loom_config_value_text(const loom_config *cfg, const char *key, char *buf, size_t size);

/* The optimizer plugin for HF's --optim name (or a DeepSpeed optimizer already mapped):
 * core/config/optim_names.c's ("adamw_torch_fused" -> "adamw"), NULL -> "adamw"; other names
 * are plugin names already. */
const char *loom__optimizer_plugin_for(const char *optim);

#endif
