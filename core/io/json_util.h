/*
 * json_util.h - the JSON helpers the configuration readers and writers share (--config,
 * --deepspeed, training_args.json, the merged ds_config.json): one message format for a parse
 * error, one name per JSON type, one string escaping, one shortest number form. Internal to
 * libloom (loom__ prefix: not exported, not installed).
 */
#ifndef LOOM_CORE_JSON_UTIL_H
#define LOOM_CORE_JSON_UTIL_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdio.h>

struct cJSON;

/* "a string", "a number", "a boolean", "null", "an array", "an object": for "expected X, got Y". */
const char *loom__json_type_name(const struct cJSON *v);

/* Records "PATH:LINE:COLUMN: malformed JSON" for a parse that stopped at `at` (cJSON's end
 * pointer into `text`; NULL: 1:1) and returns LOOM_E_FORMAT. */
loom_status loom__json_malformed(const char *path, const char *text, const char *at);

/* Writes s as a JSON string the way Python's json.dumps does (ensure_ascii=False): '"' and
 * '\\' escaped, \n \r \t \b \f by name, other control characters as \u00XX, UTF-8 as is. */
void loom__json_write_string(FILE *out, const char *s);

/* The shortest "%.*g" text (6 to 17 digits) that reads back as the same double: "0.9", not
 * "0.90000000000000002". Used for values handed on as text (plugin config, messages). */
void loom__format_shortest(char *buf, size_t size, double v);

/* Sorts the keys of every object in `node`, nested ones too, as Python's json.dumps(sort_keys=True)
 * (byte order of UTF-8 keys is Python's code point order). LOOM_E_NOMEM leaves `node` whole,
 * partly sorted. */
loom_status loom__json_sort_keys(struct cJSON *node);

/* One line [start, end) of a JSON-lines file (line `line` of `file_text`, read from `path`)
 * read as json.loads reads it, where cJSON alone is laxer: the line must be one JSON object and
 * nothing after it; a byte that is not UTF-8, a NUL byte, an escaped NUL (cJSON ends the C string
 * there, silently dropping the rest of the text) and a key given twice (json.loads keeps the
 * last, cJSON the first) are refused. Errors are LOOM_E_FORMAT "PATH:LINE[:COLUMN]: what";
 * `shape` completes "not a JSON object (SHAPE)". On success *out is the object (the caller's
 * to cJSON_Delete). */
loom_status loom__json_object_line(const char *path, const char *file_text, int64_t line, const char *start,
                                   const char *end, const char *shape, struct cJSON **out);

/* Offset of the first byte of text[0, len) that breaks UTF-8 (overlong forms, surrogates and
 * code points past U+10FFFF count as breaking it), or len when there is none. JSON text is
 * UTF-8: Python's json.load refuses a file with such a byte. */
size_t loom__utf8_invalid_at(const char *text, size_t len);

/* 0 when no object in `value` (recursively) has a key twice; else -1 with the dotted path of
 * the first duplicate in buf (cJSON keeps duplicates, json.load keeps the last silently). */
int loom__json_find_duplicate(const struct cJSON *value, char *buf, size_t size);

#endif
