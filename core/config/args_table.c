/* args_table.c - the rows of training_args.def as data, and typed access to their fields. */
#include "args_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

const loom__arg_desc loom__arg_table[LOOM__ARG_COUNT] = {
#define LOOM_ARG(kind, name, default_text, status, note, doc)                                                          \
    {LOOM__K_##kind, #name, default_text, status, note, doc, offsetof(loom_args, name)},
#include "training_args.def"
#undef LOOM_ARG
};

const char LOOM__SRC_CLI[] = "command line";

const char *loom__where(const char *source, char *buf, size_t size)
{
    if (!source) return "";
    if (source == LOOM__SRC_CLI || strcmp(source, LOOM__SRC_CLI) == 0) return " on the command line";
    snprintf(buf, size, " in %s", source);
    return buf;
}

const loom__arg_desc *loom__arg_find(const char *name)
{
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++)
        if (strcmp(loom__arg_table[i].name, name) == 0) return &loom__arg_table[i];
    return NULL;
}

void *loom__arg_field(loom_args *args, const loom__arg_desc *d)
{
    return (char *)args + d->offset;
}

const void *loom__arg_cfield(const loom_args *args, const loom__arg_desc *d)
{
    return (const char *)args + d->offset;
}

int loom__parse_bool(const char *text, int32_t *out)
{
    static const char *const yes[] = {"true", "yes", "1", "t", "y"};
    static const char *const no[] = {"false", "no", "0", "f", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (strcasecmp(text, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(text, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

int loom__parse_int(const char *text, int64_t *out)
{
    /* strtoll skips leading blanks and stops at the first bad character; "12x", " 12" and
     * "" must all be rejected, so check both ends. */
    if (!*text || isspace((unsigned char)*text)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

int loom__parse_float(const char *text, double *out)
{
    /* strtod reads hex floats ("0x1p-3"); Python's float(), which parses HF's flags, does not,
     * and neither do loom's integer flags. */
    if (!*text || isspace((unsigned char)*text) || strpbrk(text, "xX")) return -1;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    /* ERANGE on underflow (1e-400 -> 0) is harmless; overflow gives inf, rejected below. */
    if (*end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int is_none(const char *text)
{
    return strcasecmp(text, "none") == 0 || strcmp(text, "null") == 0;
}

loom_status loom__arg_set_string(char **field, const char *value)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value))) return loom_error(LOOM_E_NOMEM, "out of memory");
    free(*field);
    *field = copy;
    return LOOM_OK;
}

loom_status loom__arg_set_text(loom_args *args, const loom__arg_desc *d, const char *text, const char *source)
{
    void *field = loom__arg_field(args, d);
    char where[512];
    const char *expected = NULL;
    switch (d->kind) {
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL: {
        int32_t v;
        if (d->kind == LOOM__K_OPT_BOOL && is_none(text)) {
            *(int32_t *)field = -1;
            return LOOM_OK;
        }
        if (loom__parse_bool(text, &v) == 0) {
            *(int32_t *)field = v;
            return LOOM_OK;
        }
        expected = d->kind == LOOM__K_OPT_BOOL ? "true, false or none" : "true or false";
        break;
    }
    case LOOM__K_INT:
    case LOOM__K_OPT_INT: {
        int64_t v;
        if (d->kind == LOOM__K_OPT_INT && is_none(text)) {
            *(int64_t *)field = LOOM_ARG_NONE_INT;
            return LOOM_OK;
        }
        /* INT64_MIN is the None sentinel, so it cannot be a value. */
        if (loom__parse_int(text, &v) == 0 && v != LOOM_ARG_NONE_INT) {
            *(int64_t *)field = v;
            return LOOM_OK;
        }
        expected = d->kind == LOOM__K_OPT_INT ? "an integer or none" : "an integer";
        break;
    }
    case LOOM__K_FLOAT: {
        double v;
        if (loom__parse_float(text, &v) == 0) {
            *(double *)field = v;
            return LOOM_OK;
        }
        expected = "a finite number";
        break;
    }
    case LOOM__K_STEPS:
    case LOOM__K_OPT_STEPS: {
        double v;
        if (d->kind == LOOM__K_OPT_STEPS && is_none(text)) {
            *(double *)field = LOOM_ARG_NONE_STEPS;
            return LOOM_OK;
        }
        /* Any finite number here; args_resolve.c decides which are steps and which ratios. */
        if (loom__parse_float(text, &v) == 0) {
            *(double *)field = v;
            return LOOM_OK;
        }
        expected = d->kind == LOOM__K_OPT_STEPS ? "a number of steps, a ratio in (0, 1) or none"
                                                : "a number of steps or a ratio in (0, 1)";
        break;
    }
    case LOOM__K_STRING:
        return loom__arg_set_string(field, text);
    case LOOM__K_LIST: {
        loom__list_clear(field);
        return loom__list_append(field, text);
    }
    }
    return loom_error(LOOM_E_INVALID, "--%s: expected %s, got '%s'%s", d->name, expected, text,
                      loom__where(source, where, sizeof where));
}

loom_status loom__list_append(loom_string_list *list, const char *item)
{
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (!grown) return loom_error(LOOM_E_NOMEM, "out of memory");
    list->items = grown;
    if (!(grown[list->count] = strdup(item))) return loom_error(LOOM_E_NOMEM, "out of memory");
    list->count++;
    return LOOM_OK;
}

void loom__list_clear(loom_string_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

loom_status loom__args_add_unknown(loom_args *args, const char *key, const char *value, const char *source)
{
    for (size_t i = 0; i < args->unknown_keys.count; i++) {
        if (strcmp(args->unknown_keys.items[i], key) != 0) continue;
        loom_status st = loom__arg_set_string(&args->unknown_values.items[i], value);
        if (st == LOOM_OK) st = loom__arg_set_string(&args->unknown_sources.items[i], source);
        return st;
    }
    /* The three lists grow together so index i always means one flag: undo a partial add. */
    if (loom__list_append(&args->unknown_keys, key) != LOOM_OK) return LOOM_E_NOMEM;
    if (loom__list_append(&args->unknown_values, value) != LOOM_OK) {
        free(args->unknown_keys.items[--args->unknown_keys.count]);
        return LOOM_E_NOMEM;
    }
    if (loom__list_append(&args->unknown_sources, source) != LOOM_OK) {
        free(args->unknown_keys.items[--args->unknown_keys.count]);
        free(args->unknown_values.items[--args->unknown_values.count]);
        return LOOM_E_NOMEM;
    }
    return LOOM_OK;
}

loom_status loom__arg_set_default(loom_args *args, const loom__arg_desc *d)
{
    void *field = loom__arg_field(args, d);
    const char *text = d->default_text;
    switch (d->kind) {
    case LOOM__K_STRING:
        return loom__arg_set_string(field, *text ? text : NULL);
    case LOOM__K_LIST: {
        /* A non-empty list default is written space-separated. */
        loom__list_clear(field);
        char *copy = strdup(text), *save = NULL;
        if (!copy) return loom_error(LOOM_E_NOMEM, "out of memory");
        loom_status st = LOOM_OK;
        for (char *tok = strtok_r(copy, " ", &save); tok && st == LOOM_OK; tok = strtok_r(NULL, " ", &save))
            st = loom__list_append(field, tok);
        free(copy);
        return st;
    }
    default:
        if (loom__arg_set_text(args, d, text, NULL) != LOOM_OK)
            return loom_error(LOOM_E_INTERNAL, "training_args.def: bad default '%s' for %s", text, d->name);
        return LOOM_OK;
    }
}

int loom__arg_is_default(const loom_args *args, const loom__arg_desc *d)
{
    const void *field = loom__arg_cfield(args, d);
    const char *text = d->default_text;
    switch (d->kind) {
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL: {
        int32_t v = -1;
        if (d->kind == LOOM__K_BOOL || !is_none(text)) loom__parse_bool(text, &v);
        return *(const int32_t *)field == v;
    }
    case LOOM__K_INT:
    case LOOM__K_OPT_INT: {
        int64_t v = LOOM_ARG_NONE_INT;
        if (d->kind == LOOM__K_INT || !is_none(text)) loom__parse_int(text, &v);
        return *(const int64_t *)field == v;
    }
    case LOOM__K_FLOAT: {
        double v = 0;
        loom__parse_float(text, &v);
        return *(const double *)field == v;
    }
    case LOOM__K_STEPS:
    case LOOM__K_OPT_STEPS: {
        double v = LOOM_ARG_NONE_STEPS, x = *(const double *)field;
        if (d->kind == LOOM__K_STEPS || !is_none(text)) loom__parse_float(text, &v);
        return isnan(v) ? isnan(x) : x == v;
    }
    case LOOM__K_STRING: {
        const char *s = *(char *const *)field;
        /* HF's None and, for fields whose dataclass default is "" (debug, mp_parameters, v4's
         * fsdp), "" are both the default. */
        return *text ? s && strcmp(s, text) == 0 : s == NULL || *s == '\0';
    }
    case LOOM__K_LIST: {
        /* Non-empty list defaults do not occur in the table; compare the joined text. */
        const loom_string_list *l = field;
        if (!*text) return l->count == 0;
        char *joined = loom__arg_format(args, d);
        int same = joined && strcmp(joined, text) == 0;
        free(joined);
        return same;
    }
    }
    return 0;
}

int loom__arg_is_dict(const loom__arg_desc *d)
{
    static const char *const dicts[] = {"lr_scheduler_kwargs", "fsdp_config",        "gradient_checkpointing_kwargs",
                                        "deepspeed",           "accelerator_config", "liger_kernel_config",
                                        "parallelism_config",  "generation_config"};
    if (d->kind != LOOM__K_STRING) return 0;
    for (size_t i = 0; i < sizeof dicts / sizeof *dicts; i++)
        if (strcmp(d->name, dicts[i]) == 0) return 1;
    return 0;
}

int loom__arg_is_secret(const loom__arg_desc *d)
{
    size_t n = strlen(d->name);
    return n >= 6 && strcmp(d->name + n - 6, "_token") == 0;
}

/* HF's to_dict() replaces a token by "<HUB_TOKEN>" (the upper-cased name). */
static char *secret_placeholder(const char *name)
{
    size_t n = strlen(name);
    char *s = malloc(n + 3);
    if (!s) return NULL;
    s[0] = '<';
    for (size_t i = 0; i < n; i++)
        s[i + 1] = (char)toupper((unsigned char)name[i]);
    s[n + 1] = '>';
    s[n + 2] = '\0';
    return s;
}

char *loom__arg_format(const loom_args *args, const loom__arg_desc *d)
{
    const void *field = loom__arg_cfield(args, d);
    char buf[64];
    switch (d->kind) {
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL: {
        int32_t v = *(const int32_t *)field;
        return strdup(v < 0 ? "none" : v ? "true" : "false");
    }
    case LOOM__K_INT:
    case LOOM__K_OPT_INT: {
        int64_t v = *(const int64_t *)field;
        if (v == LOOM_ARG_NONE_INT) return strdup("none");
        snprintf(buf, sizeof buf, "%lld", (long long)v);
        return strdup(buf);
    }
    case LOOM__K_FLOAT:
        loom__format_double(*(const double *)field, buf, sizeof buf);
        return strdup(buf);
    case LOOM__K_STEPS:
    case LOOM__K_OPT_STEPS:
        loom__format_steps(*(const double *)field, buf, sizeof buf);
        return strdup(buf);
    case LOOM__K_STRING: {
        const char *s = *(char *const *)field;
        if (s && loom__arg_is_secret(d)) return secret_placeholder(d->name);
        return strdup(s ? s : "none");
    }
    case LOOM__K_LIST: {
        const loom_string_list *l = field;
        size_t n = 1;
        for (size_t i = 0; i < l->count; i++)
            n += strlen(l->items[i]) + 1;
        char *s = malloc(n), *p = s;
        if (!s) return NULL;
        *p = '\0';
        for (size_t i = 0; i < l->count; i++)
            p += sprintf(p, i ? " %s" : "%s", l->items[i]);
        return s;
    }
    }
    return NULL;
}

void loom__format_double(double v, char *buf, size_t size)
{
    if (!isfinite(v)) {
        snprintf(buf, size, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    /* Shortest digits that read back as v (what Python's repr() picks)... */
    char sci[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec, v);
        if (strtod(sci, NULL) == v) break;
    }
    /* ...then Python's layout: sci[] is "[-]d.ddde[+-]XX". */
    const char *p = sci;
    int negative = *p == '-';
    if (negative) p++;
    char digits[24];
    size_t nd = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exponent = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int point = exponent + 1; /* digits before the decimal point */

    char out[64], *o = out;
    if (negative) *o++ = '-';
    if (point > -4 && point <= 16) {
        if (point <= 0) {
            o += sprintf(o, "0.");
            for (int i = 0; i < -point; i++)
                *o++ = '0';
            o += sprintf(o, "%s", digits);
        } else if ((size_t)point >= nd) {
            o += sprintf(o, "%s", digits);
            for (size_t i = nd; i < (size_t)point; i++)
                *o++ = '0';
            o += sprintf(o, ".0");
        } else {
            o += sprintf(o, "%.*s.%s", point, digits, digits + point);
        }
    } else {
        *o++ = digits[0];
        if (nd > 1) o += sprintf(o, ".%s", digits + 1);
        o += sprintf(o, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    }
    *o = '\0';
    snprintf(buf, size, "%s", out);
}

void loom__format_steps(double v, char *buf, size_t size)
{
    if (isnan(v))
        snprintf(buf, size, "none");
    else if (v == floor(v) && fabs(v) < 0x1p63)
        snprintf(buf, size, "%lld", (long long)v);
    else
        loom__format_double(v, buf, size);
}

int64_t loom_args_steps(double steps, int64_t max_steps)
{
    if (!(steps > 0 && steps < 1)) return isfinite(steps) && fabs(steps) < 0x1p63 ? (int64_t)steps : 0;
    /* HF's math.ceil(max_steps * ratio). */
    double n = ceil((double)max_steps * steps);
    return n >= 0x1p63 ? INT64_MAX : (int64_t)n;
}

int64_t loom_args_warmup_steps(const loom_args *args, int64_t total_steps)
{
    /* HF v5's get_warmup_steps: int(warmup_steps) from 1 up, else ceil(total x warmup_steps);
     * v4's deprecated warmup_ratio still decides when warmup_steps is 0. */
    if (args->warmup_steps > 0) return loom_args_steps(args->warmup_steps, total_steps);
    return (int64_t)ceil(args->warmup_ratio * (double)total_steps);
}

void loom_format_rounded(double v, int digits, char *buf, size_t size)
{
    char fixed[400];
    if (isfinite(v) && fabs(v) < 1e16) {
        snprintf(fixed, sizeof fixed, "%.*f", digits, v);
        v = strtod(fixed, NULL);
    }
    loom__format_double(v, buf, size);
}
