/*
 * gpt2_rows.c - wte's gradient in two parts (loom_grad_sink acquire_rows, ABI 1.4;
 * docs/architecture.md#two-part-gradients). The tied LM head gives wte a dense gradient at the
 * start of backward, the token lookup a sparse one at the very end. Through a two-part sink the
 * head's part is released at once (the sharding plugin reduces it while the blocks' backward
 * runs) and the lookup's part is only the rows of the tokens in the batch: a few hundred rows
 * instead of V, reduced by the host after backward.
 *
 * Each row is accumulated exactly as gpt2_embed_backward does into the dense gradient (the
 * batch's positions in order, from zero), into the row's slot of the host's packed memory.
 */
#include <stdlib.h>
#include <string.h>

#include "gpt2.h"

static int compare_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void gpt2_rows_free(loom_model *self)
{
    self->api->free_memory(self->host, self->emb_rows);
    self->api->free_memory(self->host, self->emb_slot);
    self->emb_rows = NULL;
    self->emb_slot = NULL;
    self->emb_rows_cap = 0;
}

/* Sorted distinct tokens into emb_rows (returns how many) and each position's slot. */
static int64_t distinct_rows(loom_model *self, const int32_t *tokens, int64_t N)
{
    int64_t *rows = self->emb_rows;
    for (int64_t i = 0; i < N; i++)
        rows[i] = tokens[i];
    qsort(rows, (size_t)N, sizeof *rows, compare_i64);
    int64_t n = 0;
    for (int64_t i = 0; i < N; i++)
        if (n == 0 || rows[i] != rows[n - 1]) rows[n++] = rows[i];
    for (int64_t i = 0; i < N; i++) {
        const int64_t *at = bsearch(&(int64_t){tokens[i]}, rows, (size_t)n, sizeof *rows, compare_i64);
        self->emb_slot[i] = (int32_t)(at - rows);
    }
    return n;
}

loom_status gpt2_embed_backward_rows(loom_model *self, const loom_grad_sink *sink, const float *dout,
                                     const int32_t *tokens, int64_t B, int64_t T)
{
    const int64_t N = B * T, C = self->C, wpe_begin = self->V * C, wpe_end = wpe_begin + self->P * C;
    if (N > self->emb_rows_cap) { /* once: the bound batch */
        gpt2_rows_free(self);
        const int64_t cap = N > self->max_batch * self->max_T ? N : self->max_batch * self->max_T;
        self->emb_rows = self->api->alloc(self->host, (size_t)cap * sizeof *self->emb_rows, 0, LOOM_DEVICE_CPU, 0);
        self->emb_slot = self->api->alloc(self->host, (size_t)cap * sizeof *self->emb_slot, 0, LOOM_DEVICE_CPU, 0);
        if (!self->emb_rows || !self->emb_slot) {
            gpt2_rows_free(self);
            return self->api->fail(self->host, LOOM_E_NOMEM, "out of memory for %lld token rows", (long long)cap);
        }
        self->emb_rows_cap = cap;
    }
    const int64_t n = distinct_rows(self, tokens, N);
    void *dwte = NULL, *dwpe = NULL;
    loom_status st = sink->acquire_rows(sink->context, 0, C, n, self->emb_rows, &dwte);
    if (st) return st;
    if ((st = sink->acquire(sink->context, wpe_begin, wpe_end, &dwpe))) return st;
    if (!dwte || !dwpe)
        return self->api->fail(self->host, LOOM_E_INTERNAL, "grad sink gave no memory for the embeddings");
    gpt2_embed_backward(self, dwte, dwpe, dout, self->emb_slot, B, T);
    if ((st = sink->release(sink->context, wpe_begin, wpe_end))) return st;
    return sink->release_rows(sink->context, 0);
}
