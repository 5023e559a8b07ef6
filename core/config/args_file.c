/* args_file.c - --config FILE.json: a JSON object of the same names as the flags. Stricter
 * than Python's json module on purpose: a duplicate key (which json.load silently resolves
 * to the last one) is an error, and so is a value of the wrong type. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"
#include "fileutil.h"
#include "json_util.h"

/* A --config file is a few KiB of JSON; this bounds what a wrong path (/dev/zero, a huge file)
 * can cost. FIFOs and devices are refused by loom_read_file_max. */
#define CONFIG_MAX_BYTES (16u << 20)

loom_status loom__json_parse_strict(const char *where, const char *text, size_t len, cJSON **root)
{
    *root = NULL;
    /* cJSON stops at a NUL as at the end of the text: whatever follows would be dropped unseen. */
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return loom_error(LOOM_E_FORMAT, "%s: a NUL byte at byte offset %zu (JSON is text; is this the right file?)",
                          where, (size_t)(nul - text));
    /* cJSON takes any byte in a string; json.load (and every other reader of the files loom
     * writes from these values) refuses what is not UTF-8. */
    size_t bad = loom__utf8_invalid_at(text, len);
    if (bad < len)
        return loom_error(LOOM_E_FORMAT, "%s: byte 0x%02x at byte offset %zu is not UTF-8 (JSON text is UTF-8)", where,
                          (unsigned char)text[bad], bad);
    /* Require the end of the text after the value: trailing garbage or a second object is
     * refused, as Python's json.load does ("Extra data"). */
    const char *end = NULL;
    *root = cJSON_ParseWithOpts(text, &end, 1);
    return *root ? LOOM_OK : loom__json_malformed(where, text, end);
}

loom_status loom__json_read_file(const char *flag, const char *path, size_t max_bytes, cJSON **root)
{
    *root = NULL;
    char *text = NULL;
    size_t len = 0;
    loom_status st = loom_read_file_max(path, max_bytes, &text, &len);
    if (st != LOOM_OK) return loom_error_context(st == LOOM_E_NOT_FOUND ? LOOM_E_IO : st, "%s", flag);
    st = loom__json_parse_strict(path, text, len, root);
    free(text);
    return st;
}

static loom_status wrong_type(const loom__arg_desc *d, const char *path, const char *expected, const cJSON *v)
{
    return loom_error(LOOM_E_INVALID, "%s in %s: expected %s, got %s", d->name, path, expected,
                      loom__json_type_name(v));
}

/* A JSON number that is an integer an int64 holds exactly (not the None sentinel). */
static int json_integer(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (x != floor(x) || !(x > -9.2233720368547758e18 && x < 9.2233720368547758e18)) return -1;
    *out = (int64_t)x;
    return 0;
}

static loom_status set_list(loom_string_list *list, const loom__arg_desc *d, const cJSON *v, const char *path)
{
    loom__list_clear(list);
    if (cJSON_IsNull(v)) return LOOM_OK;
    /* HF turns report_to: "wandb" into ["wandb"]; do the same for every list. */
    if (cJSON_IsString(v)) return loom__list_append(list, v->valuestring);
    if (!cJSON_IsArray(v)) return wrong_type(d, path, "an array of strings", v);
    for (const cJSON *item = v->child; item; item = item->next) {
        if (!cJSON_IsString(item)) return wrong_type(d, path, "an array of strings", item);
        loom_status st = loom__list_append(list, item->valuestring);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

/* HF's Optional floats whose None loom's table spells as the number that means the same
 * (neftune_noise_alpha 0.0: off; v5's warmup_ratio 0.0: no ratio): HF's own training_args.json
 * writes null for them. */
static int float_none_is_default(const loom__arg_desc *d)
{
    return strcmp(d->name, "neftune_noise_alpha") == 0 || strcmp(d->name, "warmup_ratio") == 0;
}

/* HF's training_args.json writes debug as the list of its options (args_json.c): joined with
 * spaces it is the text HF's command line takes. */
static loom_status set_words(void *field, const loom__arg_desc *d, const cJSON *v, const char *path)
{
    size_t len = 1;
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!cJSON_IsString(c)) return wrong_type(d, path, "a string or a list of strings", v);
        len += strlen(c->valuestring) + 1;
    }
    char *text = calloc(1, len);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (const cJSON *c = v->child; c; c = c->next) {
        if (*text) strcat(text, " ");
        strcat(text, c->valuestring);
    }
    loom_status st = loom__arg_set_string(field, *text ? text : NULL);
    free(text);
    return st;
}

static loom_status set_from_json(loom_args *args, const loom__arg_desc *d, const cJSON *v, const char *path)
{
    void *field = loom__arg_field(args, d);
    int optional = d->kind == LOOM__K_OPT_BOOL || d->kind == LOOM__K_OPT_INT || d->kind == LOOM__K_OPT_STEPS;
    switch (d->kind) {
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL:
        if (optional && cJSON_IsNull(v))
            *(int32_t *)field = -1;
        else if (cJSON_IsBool(v))
            *(int32_t *)field = cJSON_IsTrue(v);
        else
            return wrong_type(d, path, optional ? "true, false or null" : "true or false", v);
        return LOOM_OK;
    case LOOM__K_INT:
    case LOOM__K_OPT_INT: {
        int64_t x;
        if (optional && cJSON_IsNull(v))
            *(int64_t *)field = LOOM_ARG_NONE_INT;
        else if (json_integer(v, &x) == 0)
            *(int64_t *)field = x;
        else if (cJSON_IsNumber(v))
            return loom_error(LOOM_E_INVALID, "%s in %s: expected an integer, got %.17g", d->name, path,
                              v->valuedouble);
        else
            return wrong_type(d, path, optional ? "an integer or null" : "an integer", v);
        return LOOM_OK;
    }
    case LOOM__K_FLOAT:
        if (cJSON_IsNull(v) && float_none_is_default(d)) return loom__arg_set_default(args, d);
        if (!cJSON_IsNumber(v)) return wrong_type(d, path, "a number", v);
        if (!isfinite(v->valuedouble))
            return loom_error(LOOM_E_INVALID, "%s in %s: expected a finite number", d->name, path);
        *(double *)field = v->valuedouble;
        return LOOM_OK;
    case LOOM__K_STEPS:
    case LOOM__K_OPT_STEPS:
        if (optional && cJSON_IsNull(v)) {
            *(double *)field = LOOM_ARG_NONE_STEPS;
            return LOOM_OK;
        }
        if (!cJSON_IsNumber(v)) return wrong_type(d, path, optional ? "a number or null" : "a number", v);
        if (!isfinite(v->valuedouble))
            return loom_error(LOOM_E_INVALID, "%s in %s: expected a finite number", d->name, path);
        *(double *)field = v->valuedouble;
        return LOOM_OK;
    case LOOM__K_STRING: {
        if (cJSON_IsNull(v)) return loom__arg_set_string(field, NULL);
        /* "" where HF's dataclass default is "" (mp_parameters) is that default: None to loom. */
        if (cJSON_IsString(v))
            return loom__arg_set_string(field, *v->valuestring || *d->default_text ? v->valuestring : NULL);
        /* debug, fsdp and sharded_ddp: HF's __post_init__ makes lists of their options. */
        const int words = d == &loom__arg_table[LOOM__ARG_debug] || d == &loom__arg_table[LOOM__ARG_fsdp] ||
                          d == &loom__arg_table[LOOM__ARG_sharded_ddp];
        if (cJSON_IsArray(v) && words) return set_words(field, d, v, path);
        if (cJSON_IsBool(v) && d == &loom__arg_table[LOOM__ARG_fsdp]) /* HF: True is full_shard */
            return loom__arg_set_string(field, cJSON_IsTrue(v) ? "full_shard" : NULL);
        if (cJSON_IsBool(v) && d == &loom__arg_table[LOOM__ARG_sharded_ddp]) /* v4.2's bool; True is simple */
            return loom__arg_set_string(field, cJSON_IsTrue(v) ? "simple" : NULL);
        if (cJSON_IsBool(v) && d == &loom__arg_table[LOOM__ARG_include_num_input_tokens_seen])
            return loom__arg_set_string(field, cJSON_IsTrue(v) ? "all" : "no"); /* v4's file */
        if (!cJSON_IsObject(v) || !loom__arg_is_dict(d))
            return wrong_type(d, path, loom__arg_is_dict(d) ? "a string or an object" : "a string", v);
        char *compact = cJSON_PrintUnformatted(v);
        if (!compact) return loom_error(LOOM_E_NOMEM, "out of memory");
        loom_status st = loom__arg_set_string(field, compact);
        cJSON_free(compact);
        return st;
    }
    case LOOM__K_LIST:
        return set_list(field, d, v, path);
    }
    return LOOM_OK;
}

/* An unknown key keeps its value as text for the plugins: a string as is, anything else
 * printed compactly. An object is a section: {"adamw": {"beta1": 0.9}} is "adamw.beta1". */
static loom_status add_unknown(loom_args *args, const char *key, const cJSON *v, const char *path)
{
    if (cJSON_IsObject(v)) {
        for (const cJSON *c = v->child; c; c = c->next) {
            size_t n = strlen(key) + strlen(c->string) + 2;
            char *sub = malloc(n);
            if (!sub) return loom_error(LOOM_E_NOMEM, "out of memory");
            snprintf(sub, n, "%s.%s", key, c->string);
            loom_status st = add_unknown(args, sub, c, path);
            free(sub);
            if (st != LOOM_OK) return st;
        }
        return LOOM_OK;
    }
    if (cJSON_IsString(v)) return loom__args_add_unknown(args, key, v->valuestring, path);
    char *text = cJSON_PrintUnformatted(v);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = loom__args_add_unknown(args, key, text, path);
    cJSON_free(text);
    return st;
}

loom_status loom__args_load_file(loom_args *args, const char *path, loom__arg_origin *origin)
{
    cJSON *root = NULL;
    loom_status st = loom__json_read_file("--config", path, CONFIG_MAX_BYTES, &root);
    if (st != LOOM_OK) return st;
    char dup[512];
    if (!cJSON_IsObject(root)) {
        st = loom_error(LOOM_E_FORMAT, "%s: expected a JSON object of arguments, got %s", path,
                        loom__json_type_name(root));
    } else if (loom__json_find_duplicate(root, dup, sizeof dup) < 0) {
        st = loom_error(LOOM_E_INVALID, "duplicate key '%s' in %s", dup, path);
    }
    /* A run's own training_args.json (it has "plugin_flags") is accepted as it is: its
     * "config" only records the file that run read, whose values it already holds, and its
     * plugin_flags are the plugin keys that run was given. */
    const cJSON *plugin_flags = st == LOOM_OK ? cJSON_GetObjectItemCaseSensitive(root, "plugin_flags") : NULL;
    int run_record = cJSON_IsObject(plugin_flags);
    for (const cJSON *c = root->child; st == LOOM_OK && c; c = c->next) {
        const loom__arg_desc *d = loom__arg_find(c->string);
        if (run_record && c == plugin_flags) {
            for (const cJSON *f = c->child; st == LOOM_OK && f; f = f->next) st = add_unknown(args, f->string, f, path);
        } else if (d && d - loom__arg_table == LOOM__ARG_config) {
            if (!run_record)
                st = loom_error(LOOM_E_INVALID, "config in %s: a config file cannot name another one", path);
        } else if (d) {
            st = set_from_json(args, d, c, path);
            origin->source[d - loom__arg_table] = path;
        } else {
            st = add_unknown(args, c->string, c, path);
        }
    }
    cJSON_Delete(root);
    return st;
}
