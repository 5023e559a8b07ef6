/* json_util.c - see json_util.h. */
#include "json_util.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

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
