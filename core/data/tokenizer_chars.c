/*
 * tokenizer_chars.c - the character / whitespace-token vocabulary (see tokenizer_chars.h).
 */
#include "tokenizer_chars.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"

static const char *const g_special[] = {"<pad>", "</s>", "<unk>"};
#define N_SPECIAL 3

struct loom_chars {
    int split[2];
    char **tokens; /* id -> NUL-terminated spelling */
    int32_t n, cap;
    int32_t *slots; /* open addressing: id + 1, 0 = empty */
    size_t n_slots;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int32_t lookup(const loom_chars *v, const char *s, size_t n)
{
    if (!v->n_slots) return -1;
    for (size_t i = hash_bytes(s, n) & (v->n_slots - 1);; i = (i + 1) & (v->n_slots - 1)) {
        const int32_t id = v->slots[i] - 1;
        if (id < 0) return -1;
        if (strlen(v->tokens[id]) == n && !memcmp(v->tokens[id], s, n)) return id;
    }
}

static loom_status rehash(loom_chars *v, size_t n_slots)
{
    int32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return loom_error(LOOM_E_NOMEM, "out of memory for the vocabulary");
    free(v->slots);
    v->slots = slots;
    v->n_slots = n_slots;
    for (int32_t id = 0; id < v->n; id++) {
        size_t i = hash_bytes(v->tokens[id], strlen(v->tokens[id])) & (n_slots - 1);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = id + 1;
    }
    return LOOM_OK;
}

/* Append a symbol (not already there) as the next id. */
static loom_status append(loom_chars *v, const char *s, size_t n)
{
    if (v->n == v->cap) {
        int32_t cap = v->cap ? 2 * v->cap : 64;
        char **grown = realloc(v->tokens, (size_t)cap * sizeof *grown);
        if (!grown) return loom_error(LOOM_E_NOMEM, "out of memory for the vocabulary");
        v->tokens = grown;
        v->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy) return loom_error(LOOM_E_NOMEM, "out of memory for the vocabulary");
    memcpy(copy, s, n);
    copy[n] = '\0';
    v->tokens[v->n++] = copy;
    if ((size_t)v->n * 2 > v->n_slots) return rehash(v, v->n_slots ? v->n_slots * 2 : 256);
    size_t i = hash_bytes(s, n) & (v->n_slots - 1);
    while (v->slots[i])
        i = (i + 1) & (v->n_slots - 1);
    v->slots[i] = v->n;
    return LOOM_OK;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Length of the UTF-8 character at s[0..n): 1 for a byte that does not start a valid one. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    size_t len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 1;
    if (len > n) return 1;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 1;
    return len;
}

/* The next symbol of text at or after *pos: *start, *size; 0 at the end. */
static int next_symbol(int split, const char *text, size_t len, size_t *pos, size_t *start, size_t *size)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t p = *pos;
    if (split == LOOM_SPLIT_CHAR) {
        if (p >= len) return 0;
        *start = p;
        *size = utf8_length(t + p, len - p);
        *pos = p + *size;
        return 1;
    }
    while (p < len && is_space(t[p]))
        p++;
    if (p >= len) return 0;
    *start = p;
    while (p < len && !is_space(t[p]))
        p++;
    *size = p - *start;
    *pos = p;
    return 1;
}

loom_status loom_chars_new(int source_split, int target_split, loom_chars **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return loom_error(LOOM_E_NOMEM, "out of memory for the vocabulary");
    (*out)->split[LOOM_SIDE_SOURCE] = source_split;
    (*out)->split[LOOM_SIDE_TARGET] = target_split;
    loom_status st = LOOM_OK;
    for (int i = 0; i < N_SPECIAL && st == LOOM_OK; i++)
        st = append(*out, g_special[i], strlen(g_special[i]));
    if (st != LOOM_OK) {
        loom_chars_free(*out);
        *out = NULL;
    }
    return st;
}

loom_status loom_chars_add(loom_chars *v, int side, const char *text, size_t len)
{
    size_t pos = 0, start, size;
    while (next_symbol(v->split[side], text, len, &pos, &start, &size)) {
        const int32_t id = lookup(v, text + start, size);
        if (id >= 0 && id < N_SPECIAL)
            return loom_error(LOOM_E_INVALID, "the token \"%s\" is reserved for the vocabulary's special tokens",
                              g_special[id]);
        loom_status st = id < 0 ? append(v, text + start, size) : LOOM_OK;
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static int by_bytes(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

loom_status loom_chars_finish(loom_chars *v)
{
    qsort(v->tokens + N_SPECIAL, (size_t)(v->n - N_SPECIAL), sizeof *v->tokens, by_bytes);
    return rehash(v, v->n_slots ? v->n_slots : 256);
}

static const char *split_name(int split)
{
    return split == LOOM_SPLIT_SPACE ? "space" : "char";
}

loom_status loom_chars_save(const loom_chars *v, const char *path)
{
    cJSON *root = cJSON_CreateObject(), *tokens = cJSON_CreateArray();
    int ok = root && tokens;
    if (ok) {
        cJSON_AddStringToObject(root, "format", "loom-char-vocab");
        cJSON_AddStringToObject(root, "source_split", split_name(v->split[LOOM_SIDE_SOURCE]));
        cJSON_AddStringToObject(root, "target_split", split_name(v->split[LOOM_SIDE_TARGET]));
        cJSON_AddItemToObject(root, "tokens", tokens);
        tokens = NULL;
        cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "tokens");
        for (int32_t id = 0; ok && id < v->n; id++)
            ok = cJSON_AddItemToArray(list, cJSON_CreateString(v->tokens[id]));
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    cJSON_Delete(tokens);
    if (!text) return loom_error(LOOM_E_NOMEM, "%s: out of memory writing the vocabulary", path);
    const size_t n = strlen(text);
    loom_file_part parts[2] = {{text, n}, {"\n", 1}};
    loom_status st = loom_write_file_atomicv(path, parts, 2);
    cJSON_free(text);
    return st;
}

static int parse_split(const cJSON *obj, const char *key, int *split)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(s)) return 0;
    if (!strcmp(s->valuestring, "char"))
        *split = LOOM_SPLIT_CHAR;
    else if (!strcmp(s->valuestring, "space"))
        *split = LOOM_SPLIT_SPACE;
    else
        return 0;
    return 1;
}

loom_status loom_chars_load(const char *path, loom_chars **out)
{
    *out = NULL;
    char *text = NULL;
    size_t size = 0;
    loom_status st = loom_read_file(path, &text, &size);
    if (st != LOOM_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, size);
    free(text);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    int source = 0, target = 0;
    if (!cJSON_IsString(format) || strcmp(format->valuestring, "loom-char-vocab") ||
        !parse_split(root, "source_split", &source) || !parse_split(root, "target_split", &target) ||
        !cJSON_IsArray(tokens) || cJSON_GetArraySize(tokens) < N_SPECIAL) {
        cJSON_Delete(root);
        return loom_error(LOOM_E_FORMAT,
                          "%s: not a character vocabulary (JSON with \"format\": \"loom-char-vocab\", "
                          "\"source_split\"/\"target_split\": \"char\" or \"space\", and \"tokens\")",
                          path);
    }
    loom_chars *v = calloc(1, sizeof *v);
    if (!v)
        st = loom_error(LOOM_E_NOMEM, "out of memory for the vocabulary");
    else {
        v->split[LOOM_SIDE_SOURCE] = source;
        v->split[LOOM_SIDE_TARGET] = target;
    }
    int32_t id = 0;
    for (const cJSON *t = tokens->child; st == LOOM_OK && t; t = t->next, id++) {
        if (!cJSON_IsString(t) || !*t->valuestring)
            st = loom_error(LOOM_E_FORMAT, "%s: token %d is not a non-empty string", path, id);
        else if (id < N_SPECIAL && strcmp(t->valuestring, g_special[id]))
            st = loom_error(LOOM_E_FORMAT, "%s: token %d must be \"%s\"", path, id, g_special[id]);
        else if (lookup(v, t->valuestring, strlen(t->valuestring)) >= 0)
            st = loom_error(LOOM_E_FORMAT, "%s: token %d (\"%s\") appears twice", path, id, t->valuestring);
        else
            st = append(v, t->valuestring, strlen(t->valuestring));
    }
    cJSON_Delete(root);
    if (st != LOOM_OK) {
        loom_chars_free(v);
        return st;
    }
    *out = v;
    return LOOM_OK;
}

int loom_chars_split(const loom_chars *v, int side)
{
    return v->split[side];
}

int32_t loom_chars_size(const loom_chars *v)
{
    return v->n;
}

const char *loom_chars_token(const loom_chars *v, int32_t id)
{
    return id >= 0 && id < v->n ? v->tokens[id] : NULL;
}

loom_status loom_chars_encode(const loom_chars *v, int side, const char *text, size_t len, int32_t **ids, size_t *n)
{
    *n = 0;
    *ids = malloc((len + 1) * sizeof **ids); /* never more symbols than bytes, and one spare */
    if (!*ids) return loom_error(LOOM_E_NOMEM, "out of memory encoding %zu bytes", len);
    size_t pos = 0, start, size;
    while (next_symbol(v->split[side], text, len, &pos, &start, &size))
        (*ids)[(*n)++] = lookup(v, text + start, size);
    return LOOM_OK;
}

void loom_chars_symbol_at(const loom_chars *v, int side, const char *text, size_t len, size_t i, const char **at,
                          size_t *size)
{
    size_t pos = 0, start = 0, n = 0;
    *at = text;
    *size = 0;
    for (size_t k = 0; next_symbol(v->split[side], text, len, &pos, &start, &n); k++)
        if (k == i) {
            *at = text + start;
            *size = n;
            return;
        }
}

loom_status loom_chars_decode(const loom_chars *v, int side, const int32_t *ids, size_t n, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n)
            return loom_error(LOOM_E_INVALID, "token id %d is outside the vocabulary [0, %d)", ids[i], v->n);
        total += strlen(v->tokens[ids[i]]) + 1;
    }
    char *out = malloc(total);
    if (!out) return loom_error(LOOM_E_NOMEM, "out of memory decoding %zu ids", n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == LOOM_CHARS_PAD || ids[i] == LOOM_CHARS_EOS) continue;
        if (k && v->split[side] == LOOM_SPLIT_SPACE) out[k++] = ' ';
        const size_t m = strlen(v->tokens[ids[i]]);
        memcpy(out + k, v->tokens[ids[i]], m);
        k += m;
    }
    out[k] = '\0';
    *text = out;
    *len = k;
    return LOOM_OK;
}

void loom_chars_free(loom_chars *v)
{
    if (!v) return;
    for (int32_t i = 0; i < v->n; i++)
        free(v->tokens[i]);
    free(v->tokens);
    free(v->slots);
    free(v);
}
