/*
 * data_seq2seq.c - pair files (JSON lines of input_ids/labels) and their padded batches
 * (see data_seq2seq.h).
 */
#include "data_seq2seq.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"
#include "json_util.h"

typedef struct seq2seq_context {
    int32_t *tokens;   /* every example's source then target, back to back */
    int64_t *offsets;  /* example i: source at offsets[i], target after it */
    int32_t *src_len;
    int32_t *tgt_len;
    int64_t n;
} seq2seq_context;

int loom_seq2seq_sniff(const unsigned char *head, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r') continue;
        return head[i] == '{';
    }
    return 0;
}

static void seq2seq_destroy(loom_dataset *self)
{
    if (!self) return;
    seq2seq_context *c = self->context;
    if (c) {
        free(c->tokens);
        free(c->offsets);
        free(c->src_len);
        free(c->tgt_len);
        free(c);
    }
    free(self);
}

static loom_status seq2seq_collate(const loom_dataset *self, const int64_t *indices, int64_t n,
                                   loom_batch_buffer *buf)
{
    const seq2seq_context *c = self->context;
    int64_t S = 1, T = 1, targets = 0;
    for (int64_t i = 0; i < n; i++) {
        if (indices[i] < 0 || indices[i] >= c->n)
            return loom_error(LOOM_E_INTERNAL, "example %lld outside the dataset", (long long)indices[i]);
        if (c->src_len[indices[i]] > S) S = c->src_len[indices[i]];
        if (c->tgt_len[indices[i]] > T) T = c->tgt_len[indices[i]];
    }
    int32_t *inputs = buf->inputs, *mask = buf->attention_mask, *labels = buf->labels;
    for (int64_t i = 0; i < n; i++) {
        const int64_t e = indices[i], ls = c->src_len[e], lt = c->tgt_len[e];
        const int32_t *src = c->tokens + c->offsets[e], *tgt = src + ls;
        for (int64_t s = 0; s < S; s++) {
            inputs[i * S + s] = s < ls ? src[s] : LOOM_SEQ2SEQ_PAD_ID;
            mask[i * S + s] = s < ls;
        }
        for (int64_t t = 0; t < T; t++) {
            labels[i * T + t] = t < lt ? tgt[t] : -100;
            targets += t < lt && tgt[t] != -100;
        }
    }
    loom_batch *b = &buf->batch;
    b->batch_size = n;
    b->n_targets = targets;
    b->inputs.shape[0] = b->attention_mask.shape[0] = b->labels.shape[0] = n;
    b->inputs.shape[1] = b->attention_mask.shape[1] = S;
    b->labels.shape[1] = T;
    b->labels.ndim = 2;
    return LOOM_OK;
}

/* Append the integer ids of array `key` of `obj` to tokens; *count gets how many. */
static loom_status read_ids(const char *path, int64_t line, const cJSON *obj, const char *key, int allow_ignore,
                            int32_t **tokens, int64_t *len, int64_t *cap, int32_t *count)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!arr &&
        (cJSON_GetObjectItemCaseSensitive(obj, "source") || cJSON_GetObjectItemCaseSensitive(obj, "translation")))
        return loom_error(LOOM_E_FORMAT,
                          "%s:%lld: text pairs, not token ids: tokenize them first (loom tokenize --train_file %s ...)",
                          path, (long long)line, path);
    if (!arr)
        return loom_error(LOOM_E_FORMAT, "%s:%lld: no \"%s\" (a pair file has input_ids and labels)", path,
                          (long long)line, key);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
        return loom_error(LOOM_E_FORMAT, "%s:%lld: \"%s\" must be a non-empty list of token ids", path, (long long)line,
                          key);
    int64_t m = cJSON_GetArraySize(arr);
    if (m > INT32_MAX / 2) return loom_error(LOOM_E_FORMAT, "%s:%lld: \"%s\" is too long", path, (long long)line, key);
    if (*len + m > *cap) {
        int64_t ncap = (*cap + m) * 2;
        int32_t *grown = realloc(*tokens, (size_t)ncap * sizeof **tokens);
        if (!grown) return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
        *tokens = grown;
        *cap = ncap;
    }
    int64_t j = 0;
    for (const cJSON *v = arr->child; v; v = v->next, j++) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
        int ok =
            cJSON_IsNumber(v) && d == (double)(int64_t)d && ((d >= 0 && d <= INT32_MAX) || (allow_ignore && d == -100));
        if (!ok)
            return loom_error(LOOM_E_FORMAT, "%s:%lld: \"%s\"[%lld] is not a token id (an integer in [0, 2^31)%s)",
                              path, (long long)line, key, (long long)j, allow_ignore ? " or -100" : "");
        (*tokens)[(*len)++] = (int32_t)d;
    }
    *count = (int32_t)m;
    return LOOM_OK;
}

loom_status loom_seq2seq_dataset_open(const char *path, loom_dataset **out)
{
    *out = NULL;
    char *text = NULL;
    size_t size = 0;
    loom_status st = loom_read_file(path, &text, &size);
    if (st != LOOM_OK) return st;
    loom_dataset *ds = calloc(1, sizeof *ds);
    seq2seq_context *c = calloc(1, sizeof *c);
    int64_t cap_ex = 0, cap_tok = 0, n_tok = 0;
    if (!ds || !c) st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    if (ds) {
        ds->context = c;
        ds->destroy = seq2seq_destroy;
    }
    int64_t line = 0, max_s = 0, max_t = 0;
    for (char *p = text; st == LOOM_OK && p < text + size;) {
        char *end = memchr(p, '\n', (size_t)(text + size - p));
        if (!end) end = text + size;
        line++;
        char *q = p;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q == end) {
            p = end + 1;
            continue;
        }
        cJSON *obj = NULL;
        st = loom__json_object_line(path, text, line, p, end,
                                    "a pair file is JSON lines of {\"input_ids\": [...], \"labels\": [...]}", &obj);
        if (st != LOOM_OK) break;
        if (c->n == cap_ex) {
            cap_ex = cap_ex ? 2 * cap_ex : 1024;
            int64_t *o = realloc(c->offsets, (size_t)cap_ex * sizeof *o);
            if (o) c->offsets = o;
            int32_t *a = realloc(c->src_len, (size_t)cap_ex * sizeof *a);
            if (a) c->src_len = a;
            int32_t *b = realloc(c->tgt_len, (size_t)cap_ex * sizeof *b);
            if (b) c->tgt_len = b;
            if (!o || !a || !b) st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
        }
        c->offsets[c->n] = n_tok;
        if (st == LOOM_OK)
            st = read_ids(path, line, obj, "input_ids", 0, &c->tokens, &n_tok, &cap_tok, &c->src_len[c->n]);
        if (st == LOOM_OK) st = read_ids(path, line, obj, "labels", 1, &c->tokens, &n_tok, &cap_tok, &c->tgt_len[c->n]);
        cJSON_Delete(obj);
        if (st != LOOM_OK) break;
        if (c->src_len[c->n] > max_s) max_s = c->src_len[c->n];
        if (c->tgt_len[c->n] > max_t) max_t = c->tgt_len[c->n];
        c->n++;
        p = end + 1;
    }
    free(text);
    if (st == LOOM_OK && c->n == 0)
        st = loom_error(LOOM_E_FORMAT, "%s: no example (a pair file has one JSON object per line)", path);
    if (st != LOOM_OK) {
        seq2seq_destroy(ds);
        return st;
    }
    ds->n_examples = c->n;
    ds->input_dtype = LOOM_DTYPE_I32;
    ds->input_ndim = 1;
    ds->input_shape[0] = max_s;
    ds->labels_per_example = max_t;
    ds->collate = seq2seq_collate;
    *out = ds;
    return LOOM_OK;
}

static const seq2seq_context *context_of(const loom_dataset *ds, int64_t i)
{
    if (!ds || ds->collate != seq2seq_collate || i < 0 || i >= ds->n_examples) return NULL;
    return ds->context;
}

int64_t loom_seq2seq_source_length(const loom_dataset *ds, int64_t i)
{
    const seq2seq_context *c = context_of(ds, i);
    return c ? c->src_len[i] : -1;
}

int64_t loom_seq2seq_target_length(const loom_dataset *ds, int64_t i)
{
    const seq2seq_context *c = context_of(ds, i);
    return c ? c->tgt_len[i] : -1;
}
