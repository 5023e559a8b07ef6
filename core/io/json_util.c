/* json_util.c - see json_util.h. */
#include "json_util.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

const char *loom__json_type_name(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

loom_status loom__json_malformed(const char *path, const char *text, const char *at)
{
    int line = 1, column = 1;
    for (const char *p = text; at && p < at && *p; p++) {
        if (*p == '\n')
            line++, column = 1;
        else
            column++;
    }
    return loom_error(LOOM_E_FORMAT, "%s:%d:%d: malformed JSON", path, line, column);
}

void loom__json_write_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        case '\b':
            fputs("\\b", out);
            break;
        case '\f':
            fputs("\\f", out);
            break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

int loom__json_find_duplicate(const cJSON *value, char *buf, size_t size)
{
    if (!cJSON_IsObject(value) && !cJSON_IsArray(value)) return 0;
    size_t index = 0;
    for (const cJSON *a = value->child; a; a = a->next, index++) {
        /* cJSON keeps every member, duplicates included, as siblings. */
        for (const cJSON *b = a->next; cJSON_IsObject(value) && b; b = b->next) {
            if (strcmp(a->string, b->string) == 0) {
                snprintf(buf, size, "%s", a->string);
                return -1;
            }
        }
        if (loom__json_find_duplicate(a, buf, size) < 0) {
            char inner[512];
            snprintf(inner, sizeof inner, "%s", buf);
            if (cJSON_IsObject(value))
                snprintf(buf, size, "%s.%s", a->string, inner);
            else
                snprintf(buf, size, "[%zu].%s", index, inner);
            return -1;
        }
    }
    return 0;
}

void loom__format_shortest(char *buf, size_t size, double v)
{
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, size, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

size_t loom__utf8_invalid_at(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t follow;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            follow = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            follow = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            follow = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (len - i <= follow) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= follow; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += follow + 1;
    }
    return len;
}

loom_status loom__json_object_line(const char *path, const char *file_text, int64_t line, const char *start,
                                   const char *end, const char *shape, cJSON **out)
{
    *out = NULL;
    const size_t len = (size_t)(end - start);
    const char *nul = memchr(start, '\0', len);
    const size_t text_len = nul ? (size_t)(nul - start) : len, bad = loom__utf8_invalid_at(start, text_len);
    if (bad < text_len)
        return loom_error(LOOM_E_FORMAT, "%s:%lld:%zu: a byte that is not UTF-8 (JSON text is UTF-8)", path,
                          (long long)line, bad + 1);
    if (nul) return loom_error(LOOM_E_FORMAT, "%s:%lld:%zu: a NUL byte", path, (long long)line, text_len + 1);
    for (size_t i = 0; i + 6 <= len; i++) {
        if (start[i] != '\\') continue;
        if (strncasecmp(start + i + 1, "u0000", 5) == 0)
            return loom_error(LOOM_E_FORMAT, "%s:%lld:%zu: \\u0000 (a NUL character) in a text", path, (long long)line,
                              i + 1);
        i++; /* the escaped character: "\\\\u0000" is a backslash, then text */
    }
    const char *after = NULL;
    cJSON *value = cJSON_ParseWithLengthOpts(start, len, &after, 0);
    if (!value) return loom__json_malformed(path, file_text, cJSON_GetErrorPtr());
    while (after && after < end && (*after == ' ' || *after == '\t' || *after == '\r'))
        after++;
    char dup[256];
    loom_status st = LOOM_OK;
    if (!cJSON_IsObject(value) || after != end)
        st = loom_error(LOOM_E_FORMAT, "%s:%lld: not a JSON object (%s)", path, (long long)line, shape);
    else if (loom__json_find_duplicate(value, dup, sizeof dup) != 0)
        st = loom_error(LOOM_E_FORMAT, "%s:%lld: key \"%s\" given twice", path, (long long)line, dup);
    if (st != LOOM_OK) {
        cJSON_Delete(value);
        return st;
    }
    *out = value;
    return LOOM_OK;
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

loom_status loom__json_sort_keys(cJSON *node)
{
    int n = 0;
    cJSON *item;
    cJSON_ArrayForEach(item, node)
    {
        loom_status st = loom__json_sort_keys(item);
        if (st != LOOM_OK) return st;
        n++;
    }
    if (!cJSON_IsObject(node) || n < 2) return LOOM_OK;
    cJSON **items = malloc((size_t)n * sizeof *items);
    if (!items) return loom_error(LOOM_E_NOMEM, "out of memory");
    int i = 0;
    cJSON_ArrayForEach(item, node) items[i++] = item;
    qsort(items, (size_t)n, sizeof *items, by_key);
    for (i = 0; i < n; i++) {
        /* Detached and appended again in order: cJSON's own list links stay its business. */
        cJSON_DetachItemViaPointer(node, items[i]);
        cJSON_AddItemToArray(node, items[i]);
    }
    free(items);
    return LOOM_OK;
}
