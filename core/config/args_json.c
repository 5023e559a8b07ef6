/* args_json.c - the resolved arguments as JSON, laid out like HF's to_json_string()
 * (json.dumps(indent=2, sort_keys=True)): keys sorted at every level, two-space indent,
 * floats as Python's repr, None as null, tokens redacted. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"
#include "json_util.h"

static void newline_indent(FILE *out, int depth)
{
    fprintf(out, "\n%*s", 2 * depth, "");
}

static int compare_members(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A parsed dict value (lr_scheduler_kwargs). cJSON does not keep 2 and 2.0 apart, so an
 * integral number prints as an integer. */
static loom_status write_cjson(FILE *out, const cJSON *v, int depth)
{
    char buf[64];
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        int object = cJSON_IsObject(v);
        size_t n = (size_t)cJSON_GetArraySize(v);
        if (n == 0) {
            fputs(object ? "{}" : "[]", out);
            return LOOM_OK;
        }
        const cJSON **items = malloc(n * sizeof *items);
        if (!items) return loom_error(LOOM_E_NOMEM, "out of memory");
        size_t i = 0;
        for (const cJSON *c = v->child; c; c = c->next)
            items[i++] = c;
        if (object) qsort(items, n, sizeof *items, compare_members);
        fputc(object ? '{' : '[', out);
        loom_status st = LOOM_OK;
        for (i = 0; i < n && st == LOOM_OK; i++) {
            if (i) fputc(',', out);
            newline_indent(out, depth + 1);
            if (object) {
                loom__json_write_string(out, items[i]->string);
                fputs(": ", out);
            }
            st = write_cjson(out, items[i], depth + 1);
        }
        free(items);
        newline_indent(out, depth);
        fputc(object ? '}' : ']', out);
        return st;
    }
    if (cJSON_IsString(v))
        loom__json_write_string(out, v->valuestring);
    else if (cJSON_IsBool(v))
        fputs(cJSON_IsTrue(v) ? "true" : "false", out);
    else if (cJSON_IsNumber(v) && v->valuedouble < 1e16 && v->valuedouble > -1e16 &&
             v->valuedouble == (double)(long long)v->valuedouble)
        fprintf(out, "%lld", (long long)v->valuedouble);
    else if (cJSON_IsNumber(v))
        loom__format_double(v->valuedouble, buf, sizeof buf), fputs(buf, out);
    else
        fputs("null", out);
    return LOOM_OK;
}

static void write_list(FILE *out, const loom_string_list *l)
{
    if (l->count == 0) {
        fputs("[]", out);
        return;
    }
    fputc('[', out);
    for (size_t i = 0; i < l->count; i++) {
        if (i) fputc(',', out);
        newline_indent(out, 2);
        loom__json_write_string(out, l->items[i]);
    }
    newline_indent(out, 1);
    fputc(']', out);
}

/* A string argument that HF turns into a list of its words (Python's str.split()). */
static loom_status write_words(FILE *out, const char *s)
{
    loom_string_list words = {0};
    loom_status st = LOOM_OK;
    for (const char *p = s ? s : ""; st == LOOM_OK && *p;) {
        size_t n = strcspn(p, " \t\n\r\f\v");
        if (n) {
            char *word = strndup(p, n);
            st = word ? loom__list_append(&words, word) : loom_error(LOOM_E_NOMEM, "out of memory");
            free(word);
        }
        p += n;
        p += strspn(p, " \t\n\r\f\v");
    }
    if (st == LOOM_OK) write_list(out, &words);
    loom__list_clear(&words);
    return st;
}

static loom_status write_value(FILE *out, const loom_args *args, const loom__arg_desc *d)
{
    const void *field = loom__arg_cfield(args, d);
    char buf[64];
    switch (d->kind) {
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL: {
        int32_t v = *(const int32_t *)field;
        fputs(v < 0 ? "null" : v ? "true" : "false", out);
        return LOOM_OK;
    }
    case LOOM__K_INT:
    case LOOM__K_OPT_INT: {
        int64_t v = *(const int64_t *)field;
        if (v == LOOM_ARG_NONE_INT)
            fputs("null", out);
        else
            fprintf(out, "%lld", (long long)v);
        return LOOM_OK;
    }
    case LOOM__K_FLOAT:
        loom__format_double(*(const double *)field, buf, sizeof buf);
        fputs(buf, out);
        return LOOM_OK;
    case LOOM__K_STEPS:
    case LOOM__K_OPT_STEPS:
        loom__format_steps(*(const double *)field, buf, sizeof buf);
        fputs(isnan(*(const double *)field) ? "null" : buf, out);
        return LOOM_OK;
    case LOOM__K_STRING: {
        const char *s = *(char *const *)field;
        if (!s && d == &loom__arg_table[LOOM__ARG_accelerator_config]) s = LOOM__ACCELERATOR_CONFIG_DEFAULT;
        /* HF's __post_init__ splits debug into a list of DebugOption (v4 and v5 alike), fsdp into
         * FSDPOptions and v4.4-v4.34's sharded_ddp into ShardedDDPOptions, and keeps
         * mp_parameters' dataclass default "" (docs/semantics/trainer.md#every-hf-argument). */
        if (d == &loom__arg_table[LOOM__ARG_debug] || d == &loom__arg_table[LOOM__ARG_fsdp] ||
            d == &loom__arg_table[LOOM__ARG_sharded_ddp])
            return write_words(out, s);
        if (!s && d == &loom__arg_table[LOOM__ARG_mp_parameters]) s = "";
        if (!s) {
            fputs("null", out);
            return LOOM_OK;
        }
        if (loom__arg_is_secret(d)) {
            char *placeholder = loom__arg_format(args, d);
            if (!placeholder) return loom_error(LOOM_E_NOMEM, "out of memory");
            loom__json_write_string(out, placeholder);
            free(placeholder);
            return LOOM_OK;
        }
        /* A dict given as JSON goes out as the object it is, as HF's to_dict() keeps it. */
        cJSON *dict = loom__arg_is_dict(d) && s[0] == '{' ? cJSON_Parse(s) : NULL;
        loom_status st = LOOM_OK;
        if (cJSON_IsObject(dict))
            st = write_cjson(out, dict, 1);
        else
            loom__json_write_string(out, s);
        cJSON_Delete(dict);
        return st;
    }
    case LOOM__K_LIST:
        write_list(out, field);
        return LOOM_OK;
    }
    return LOOM_OK;
}

/* Unknown flags, sorted by key (each key occurs once: later values replaced earlier ones). */
static loom_status write_plugin_flags(FILE *out, const loom_args *args)
{
    size_t n = args->unknown_keys.count;
    if (n == 0) {
        fputs("{}", out);
        return LOOM_OK;
    }
    size_t *order = malloc(n * sizeof *order);
    if (!order) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of flags */
        for (size_t j = i;
             j > 0 && strcmp(args->unknown_keys.items[order[j - 1]], args->unknown_keys.items[order[j]]) > 0; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    fputc('{', out);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', out);
        newline_indent(out, 2);
        loom__json_write_string(out, args->unknown_keys.items[order[i]]);
        fputs(": ", out);
        loom__json_write_string(out, args->unknown_values.items[order[i]]);
    }
    newline_indent(out, 1);
    fputc('}', out);
    free(order);
    return LOOM_OK;
}

static int compare_rows(const void *a, const void *b)
{
    return strcmp(loom__arg_table[*(const size_t *)a].name, loom__arg_table[*(const size_t *)b].name);
}

loom_status loom_args_write_json(const loom_args *args, FILE *out)
{
    static const char flags_key[] = "plugin_flags";
    size_t order[LOOM__ARG_COUNT];
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++)
        order[i] = i;
    qsort(order, LOOM__ARG_COUNT, sizeof *order, compare_rows);

    loom_status st = LOOM_OK;
    int flags_done = 0;
    fputc('{', out);
    for (size_t k = 0; k <= LOOM__ARG_COUNT && st == LOOM_OK; k++) {
        const loom__arg_desc *d = k < LOOM__ARG_COUNT ? &loom__arg_table[order[k]] : NULL;
        if (!flags_done && (!d || strcmp(flags_key, d->name) < 0)) {
            fputs(k ? ",\n  " : "\n  ", out);
            loom__json_write_string(out, flags_key);
            fputs(": ", out);
            st = write_plugin_flags(out, args);
            flags_done = 1;
        }
        if (!d || st != LOOM_OK) continue;
        fputs(flags_done || k ? ",\n  " : "\n  ", out);
        loom__json_write_string(out, d->name);
        fputs(": ", out);
        st = write_value(out, args, d);
    }
    fputs("\n}\n", out);
    /* The caller names the file (loom_error_context); say why here: ENOSPC, EIO... */
    errno = 0;
    if (st == LOOM_OK && (fflush(out) != 0 || ferror(out)))
        st = loom_error(LOOM_E_IO, "cannot write the arguments as JSON: %s",
                        errno ? strerror(errno) : "write error");
    return st;
}
