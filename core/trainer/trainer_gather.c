/*
 * trainer_gather.c - every rank's predictions of an evaluation or prediction pass, in the order
 * of the data, on every rank: HF's nested_concat of the gathered arrays, truncated to the
 * dataset's length. The pass's loader is unpadded (core/data/dataset.h): row i of rank r is
 * position i * world + r of the loader's order and every position is read once, so the rows
 * interleave and nothing needs cutting. The comm plugin's all_gather takes the same count from
 * every rank, so each rank's rows travel padded to the largest rank's.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "trainer_internal.h"

/* What each rank holds, gathered first: the columns of one rank's row of counts. */
enum { ROWS, GENERATED, STRIDE, TEXT_BYTES, N_COUNTS };

/* counts[r * N_COUNTS + column] * unit bytes from every rank r (this rank's at `local`), each
 * padded to the largest: *all receives world blocks of *block bytes, in rank order. */
static loom_status gather_bytes(loom_trainer *t, const void *local, const int64_t *counts, int column, int64_t unit,
                                char **all, int64_t *block)
{
    int64_t m = 0;
    for (int32_t r = 0; r < t->world_size; r++)
        if (counts[r * N_COUNTS + column] * unit > m) m = counts[r * N_COUNTS + column] * unit;
    char *send = calloc((size_t)m + 1, 1), *recv = malloc((size_t)(m * t->world_size) + 1);
    loom_status st = LOOM_OK;
    if (!send || !recv)
        st = loom_error(LOOM_E_NOMEM, "out of memory gathering %lld bytes of predictions from %d ranks", (long long)m,
                        (int)t->world_size);
    const int64_t mine = counts[t->rank * N_COUNTS + column] * unit;
    if (st == LOOM_OK && mine > 0) memcpy(send, local, (size_t)mine);
    const loom_comm_vtable *cv = t->comm.vtable;
    if (st == LOOM_OK) st = cv->all_gather(t->comm.instance, send, recv, (size_t)m, LOOM_DTYPE_U8, NULL);
    free(send);
    if (st != LOOM_OK) {
        free(recv);
        return st;
    }
    *all = recv;
    *block = m;
    return LOOM_OK;
}

/* Position of row i of rank r among `total` rows, or -1 when the ranks' counts do not tile. */
static int64_t position(const loom_trainer *t, int32_t r, int64_t i, int64_t total)
{
    const int64_t pos = i * t->world_size + r;
    return pos < total ? pos : -1;
}

static loom_status untiled(int32_t r, int64_t i)
{
    return loom_error(LOOM_E_INTERNAL, "gathering predictions: row %lld of rank %d has no place", (long long)i, (int)r);
}

/* Every rank's rows of row_bytes (this rank's at `rows`) in the loader's order, into *gathered
 * (malloc'd); counts[r * N_COUNTS + column] is rank r's number of rows, *total all of them. */
static loom_status gather_rows(loom_trainer *t, const void *rows, size_t row_bytes, const int64_t *counts, int column,
                               void **gathered, int64_t *total)
{
    int64_t n = 0;
    for (int32_t r = 0; r < t->world_size; r++)
        n += counts[r * N_COUNTS + column];
    char *all = NULL, *out = NULL;
    int64_t block = 0;
    loom_status st = gather_bytes(t, rows, counts, column, (int64_t)row_bytes, &all, &block);
    if (st == LOOM_OK && !(out = malloc((size_t)n * row_bytes + 1)))
        st = loom_error(LOOM_E_NOMEM, "out of memory for %lld gathered predictions", (long long)n);
    for (int32_t r = 0; r < t->world_size && st == LOOM_OK; r++)
        for (int64_t i = 0; i < counts[r * N_COUNTS + column] && st == LOOM_OK; i++) {
            const int64_t pos = position(t, r, i, n);
            if (pos < 0)
                st = untiled(r, i);
            else
                memcpy(out + pos * (int64_t)row_bytes, all + r * block + i * (int64_t)row_bytes, row_bytes);
        }
    free(all);
    if (st != LOOM_OK) {
        free(out);
        return st;
    }
    *gathered = out;
    *total = n;
    return LOOM_OK;
}

/* The generated texts travel as one block of NUL-terminated strings per rank. */
static loom_status gather_texts(loom_trainer *t, loom_predictions *p, const int64_t *counts, int64_t total)
{
    char *mine = malloc((size_t)counts[t->rank * N_COUNTS + TEXT_BYTES] + 1), *w = mine;
    char **texts = calloc((size_t)total + 1, sizeof *texts);
    loom_status st = mine && texts ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory gathering texts");
    for (int64_t i = 0; i < p->n_generated && st == LOOM_OK; i++) {
        const size_t len = strlen(p->generated_texts[i]) + 1;
        memcpy(w, p->generated_texts[i], len);
        w += len;
    }
    char *all = NULL;
    int64_t block = 0;
    if (st == LOOM_OK) st = gather_bytes(t, mine, counts, TEXT_BYTES, 1, &all, &block);
    for (int32_t r = 0; r < t->world_size && st == LOOM_OK; r++) {
        const char *c = all + r * block;
        for (int64_t i = 0; i < counts[r * N_COUNTS + GENERATED] && st == LOOM_OK; i++) {
            const int64_t pos = position(t, r, i, total);
            if (pos < 0)
                st = untiled(r, i);
            else if (!(texts[pos] = strdup(c)))
                st = loom_error(LOOM_E_NOMEM, "out of memory gathering texts");
            c += strlen(c) + 1;
        }
    }
    free(all);
    free(mine);
    if (st != LOOM_OK) {
        for (int64_t i = 0; texts && i < total; i++)
            free(texts[i]);
        free(texts);
        return st;
    }
    for (int64_t i = 0; i < p->n_generated; i++)
        free(p->generated_texts[i]);
    free(p->generated_texts);
    p->generated_texts = texts;
    return LOOM_OK;
}

static loom_status gather_generated(loom_trainer *t, loom_predictions *p, const int64_t *counts)
{
    /* A rank that generated nothing has no stride: the others agree on theirs. */
    int64_t stride = 0, total = 0;
    for (int32_t r = 0; r < t->world_size; r++)
        if (counts[r * N_COUNTS + STRIDE] > stride) stride = counts[r * N_COUNTS + STRIDE];
    void *ids = NULL, *lengths = NULL;
    loom_status st =
        gather_rows(t, p->generated, (size_t)stride * sizeof *p->generated, counts, GENERATED, &ids, &total);
    if (st == LOOM_OK)
        st = gather_rows(t, p->generated_lengths, sizeof *p->generated_lengths, counts, GENERATED, &lengths, &total);
    if (st == LOOM_OK) st = gather_texts(t, p, counts, total);
    if (st != LOOM_OK) {
        free(ids);
        free(lengths);
        return st;
    }
    free(p->generated);
    free(p->generated_lengths);
    p->generated = ids;
    p->generated_lengths = lengths;
    p->n_generated = total;
    p->generated_stride = stride;
    return LOOM_OK;
}

static loom_status gather_outputs(loom_trainer *t, loom_predictions *p, const int64_t *counts)
{
    void *outputs = NULL, *labels = NULL;
    int64_t total = 0;
    loom_status st =
        gather_rows(t, p->outputs, (size_t)p->row_size * sizeof *p->outputs, counts, ROWS, &outputs, &total);
    if (st == LOOM_OK) st = gather_rows(t, p->labels, sizeof *p->labels, counts, ROWS, &labels, &total);
    if (st != LOOM_OK) {
        free(outputs);
        free(labels);
        return st;
    }
    free(p->outputs);
    free(p->labels);
    p->outputs = outputs;
    p->labels = labels;
    p->n_rows = total;
    return LOOM_OK;
}

loom_status loom_trainer_gather_predictions(loom_trainer *t, loom_predictions *outputs, loom_predictions *generated)
{
    if (t->world_size <= 1 || (!outputs && !generated)) return LOOM_OK;
    int64_t mine[N_COUNTS] = {0};
    if (outputs) mine[ROWS] = outputs->n_rows;
    if (generated) {
        mine[GENERATED] = generated->n_generated;
        mine[STRIDE] = generated->generated_stride;
        for (int64_t i = 0; i < generated->n_generated; i++)
            mine[TEXT_BYTES] += (int64_t)strlen(generated->generated_texts[i]) + 1;
    }
    int64_t *counts = malloc((size_t)(t->world_size * N_COUNTS) * sizeof *counts);
    if (!counts) return loom_error(LOOM_E_NOMEM, "out of memory gathering predictions");
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->all_gather(t->comm.instance, mine, counts, N_COUNTS, LOOM_DTYPE_I64, NULL);
    if (st == LOOM_OK && outputs) st = gather_outputs(t, outputs, counts);
    if (st == LOOM_OK && generated) st = gather_generated(t, generated, counts);
    free(counts);
    return st;
}
