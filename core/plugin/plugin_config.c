/*
 * plugin_config.c - a plugin's configuration section: declared keys with typed values, built
 * from spec defaults, values mapped from the run arguments, and the user's own flags.
 */
#include "plugin_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "json_util.h"
#include "optim_names.h"

typedef struct config_entry {
    const loom_param_spec *spec;
    int has_value;
    char *text; /* as given, for printing */
    union {
        int32_t b;
        int64_t i;
        double f;
    } value;
} config_entry;

struct loom_config {
    char *plugin_name;
    size_t n_entries;
    config_entry *entries;  /* spec order */
    size_t *sorted;         /* entry indices sorted by key */
};

static const char *type_name(uint32_t type)
{
    switch (type) {
    case LOOM_PARAM_BOOL: return "a boolean";
    case LOOM_PARAM_INT: return "an integer";
    case LOOM_PARAM_FLOAT: return "a number";
    case LOOM_PARAM_STRING: return "a string";
    default: return "an unknown type";
    }
}

static int parse_bool(const char *text, int32_t *out)
{
    static const char *const truths[] = {"true", "1", "yes", "on"};
    static const char *const lies[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, truths[i]) == 0) return *out = 1, 1;
        if (strcasecmp(text, lies[i]) == 0) return *out = 0, 1;
    }
    return 0;
}

static int parse_int(const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end) {
        /* Accept integral floats such as 1e3, as JSON writers produce them. */
        double d = strtod(text, &end);
        if (end == text || *end || d != (double)(int64_t)d) return 0;
        v = (long long)d;
    }
    *out = v;
    return 1;
}

static int parse_float(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno == ERANGE || end == text || *end) return 0;
    *out = v;
    return 1;
}

static config_entry *find_entry(const loom_config *cfg, const char *key)
{
    if (!cfg || !key) return NULL;
    for (size_t i = 0; i < cfg->n_entries; i++)
        if (strcmp(cfg->entries[i].spec->key, key) == 0) return &cfg->entries[i];
    return NULL;
}

static loom_status entry_set(const loom_config *cfg, config_entry *e, const char *text, const char *source)
{
    int ok = 0;
    switch (e->spec->type) {
    case LOOM_PARAM_BOOL: ok = parse_bool(text, &e->value.b); break;
    case LOOM_PARAM_INT: ok = parse_int(text, &e->value.i); break;
    case LOOM_PARAM_FLOAT: ok = parse_float(text, &e->value.f); break;
    case LOOM_PARAM_STRING: ok = 1; break;
    }
    if (!ok)
        return loom_error(LOOM_E_INVALID, "%s.%s = '%s'%s%s: expected %s", cfg->plugin_name, e->spec->key, text,
                          source ? " from " : "", source ? source : "", type_name(e->spec->type));
    char *copy = strdup(text);
    if (!copy) return loom_error(LOOM_E_NOMEM, "out of memory");
    free(e->text);
    e->text = copy;
    e->has_value = 1;
    return LOOM_OK;
}

static loom_status unknown_key_error(const loom_config *cfg, const char *key, const char *source)
{
    const char *names[256];
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_entries && n < 256; i++) names[n++] = cfg->entries[i].spec->key;
    const char *closest = loom_closest_name(key, names, n);
    if (closest)
        return loom_error(LOOM_E_INVALID, "unknown key '%s' for plugin '%s'%s%s%s; did you mean '%s'?", key,
                          cfg->plugin_name, source ? " (from " : "", source ? source : "", source ? ")" : "", closest);
    return loom_error(
        LOOM_E_INVALID, "unknown key '%s' for plugin '%s'%s%s%s (it accepts %zu keys: see `loom plugins --help %s`)",
        key, cfg->plugin_name, source ? " (from " : "", source ? source : "", source ? ")" : "", n, cfg->plugin_name);
}

static int compare_keys(const void *a, const void *b, void *ctx)
{
    const loom_config *cfg = ctx;
    return strcmp(cfg->entries[*(const size_t *)a].spec->key, cfg->entries[*(const size_t *)b].spec->key);
}

int loom_config_declares(const loom_plugin_desc *desc, const char *key)
{
    for (const loom_param_spec *s = desc ? desc->params : NULL; s && s->key; s++)
        if (strcmp(s->key, key) == 0) return 1;
    return 0;
}

loom_config *loom_config_from_spec(const loom_plugin_desc *desc)
{
    loom_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    cfg->plugin_name = strdup(desc && desc->name ? desc->name : "?");
    size_t n = 0;
    const loom_param_spec *params =
        desc && LOOM_HAS_FIELD(desc, loom_plugin_desc, params) ? desc->params : NULL;
    while (params && params[n].key) n++;
    cfg->n_entries = n;
    cfg->entries = calloc(n ? n : 1, sizeof *cfg->entries);
    cfg->sorted = calloc(n ? n : 1, sizeof *cfg->sorted);
    if (!cfg->plugin_name || !cfg->entries || !cfg->sorted) {
        loom_config_free(cfg);
        loom_error(LOOM_E_NOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        cfg->entries[i].spec = &params[i];
        cfg->sorted[i] = i;
        if (params[i].default_value &&
            entry_set(cfg, &cfg->entries[i], params[i].default_value, "the plugin's default") != LOOM_OK) {
            loom_config_free(cfg);
            return NULL;
        }
    }
    qsort_r(cfg->sorted, n, sizeof *cfg->sorted, compare_keys, cfg);
    return cfg;
}

loom_status loom_config_set(loom_config *cfg, const char *key, const char *value)
{
    config_entry *e = find_entry(cfg, key);
    if (!e) return unknown_key_error(cfg, key, NULL);
    return entry_set(cfg, e, value, NULL);
}

loom_config *loom_config_build(const loom_plugin_desc *desc, const loom_config_default *mapped, size_t n_mapped,
                               const loom_args *args, unsigned char *used)
{
    loom_config *cfg = loom_config_from_spec(desc);
    if (!cfg) return NULL;
    for (size_t i = 0; i < n_mapped; i++) {
        config_entry *e = find_entry(cfg, mapped[i].key);
        if (e && mapped[i].value && entry_set(cfg, e, mapped[i].value, "the run arguments") != LOOM_OK) goto fail;
    }
    size_t name_len = strlen(cfg->plugin_name);
    for (size_t i = 0; args && i < args->unknown_keys.count; i++) {
        const char *key = args->unknown_keys.items[i];
        const char *value = args->unknown_values.items[i];
        const char *source = i < args->unknown_sources.count ? args->unknown_sources.items[i] : NULL;
        const char *local = NULL;
        if (strncmp(key, cfg->plugin_name, name_len) == 0 && key[name_len] == '.') {
            local = key + name_len + 1;
            if (!find_entry(cfg, local)) {
                unknown_key_error(cfg, local, source);
                goto fail;
            }
        } else if (!strchr(key, '.') && find_entry(cfg, key)) {
            local = key;
        }
        if (!local) continue;
        if (entry_set(cfg, find_entry(cfg, local), value, source) != LOOM_OK) goto fail;
        if (used) used[i] = 1;
    }
    return cfg;
fail:
    loom_config_free(cfg);
    return NULL;
}

void loom_config_free(loom_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_entries; i++) free(cfg->entries[i].text);
    free(cfg->entries);
    free(cfg->sorted);
    free(cfg->plugin_name);
    free(cfg);
}

void loom_config_print(const loom_config *cfg, FILE *out)
{
    for (size_t i = 0; cfg && i < cfg->n_entries; i++) {
        const config_entry *e = &cfg->entries[cfg->sorted[i]];
        if (e->has_value) fprintf(out, "  %s.%s = %s\n", cfg->plugin_name, e->spec->key, e->text);
    }
}

static const config_entry *typed_entry(const loom_config *cfg, const char *key, uint32_t type, int *status)
{
    const config_entry *e = find_entry(cfg, key);
    if (!e || !e->has_value) return *status = LOOM_CFG_ABSENT, NULL;
    if (e->spec->type != type && !(type == LOOM_PARAM_FLOAT && e->spec->type == LOOM_PARAM_INT))
        return *status = LOOM_CFG_WRONG_TYPE, NULL;
    *status = LOOM_CFG_PRESENT;
    return e;
}

int loom_config_f64(const loom_config *cfg, const char *key, double *out)
{
    int status;
    const config_entry *e = typed_entry(cfg, key, LOOM_PARAM_FLOAT, &status);
    if (e && out) *out = e->spec->type == LOOM_PARAM_INT ? (double)e->value.i : e->value.f;
    return status;
}

int loom_config_i64(const loom_config *cfg, const char *key, int64_t *out)
{
    int status;
    const config_entry *e = typed_entry(cfg, key, LOOM_PARAM_INT, &status);
    if (e && out) *out = e->value.i;
    return status;
}

int loom_config_bool(const loom_config *cfg, const char *key, int32_t *out)
{
    int status;
    const config_entry *e = typed_entry(cfg, key, LOOM_PARAM_BOOL, &status);
    if (e && out) *out = e->value.b;
    return status;
}

int loom_config_str(const loom_config *cfg, const char *key, const char **out)
{
    int status;
    const config_entry *e = typed_entry(cfg, key, LOOM_PARAM_STRING, &status);
    if (e && out) *out = e->text;
    return status;
}

const char *loom_config_key(const loom_config *cfg, size_t index)
{
    size_t seen = 0;
    for (size_t i = 0; cfg && i < cfg->n_entries; i++) {
        const config_entry *e = &cfg->entries[cfg->sorted[i]];
        if (!e->has_value) continue;
        if (seen++ == index) return e->spec->key;
    }
    return NULL;
}

int loom_config_value_text(const loom_config *cfg, const char *key, char *buf, size_t size)
{
    const config_entry *e = find_entry(cfg, key);
    if (!e || !e->has_value) return 0;
    switch (e->spec->type) {
    case LOOM_PARAM_BOOL:
        snprintf(buf, size, "%s", e->value.b ? "true" : "false");
        break;
    case LOOM_PARAM_INT:
        snprintf(buf, size, "%lld", (long long)e->value.i);
        break;
    case LOOM_PARAM_FLOAT:
        loom__format_shortest(buf, size, e->value.f);
        break;
    default:
        snprintf(buf, size, "%s", e->text ? e->text : "");
        break;
    }
    return 1;
}

const char *loom__optimizer_plugin_for(const char *optim)
{
    if (!optim) return "adamw";
    const char *plugin = loom__optim_plugin(optim);
    return plugin ? plugin : optim;
}
