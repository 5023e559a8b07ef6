/*
 * grad_rows.c - the rows part of a two-part gradient (docs/architecture.md#two-part-gradients).
 *
 * A tied token embedding gets its gradient from the LM head at the start of backward and from
 * the looked-up rows at the very end. With the rows part, the model releases the head's dense
 * part at once (the sharding plugin reduces it behind the rest of backward) and hands the few
 * rows the batch touched to the host here. The host sums them over the micro-batches of the
 * step (in micro-batch order), and after finish_grads reduces them over the ranks: the union of
 * the ranks' rows (an all-reduce of a 0/1 mask), then one all-reduce of those rows packed
 * together, in param_dtype, in the communicator's canonical rank order. Each owned gradient
 * element of a row then gets `+= reduced row`: the same operations whatever the sharding
 * plugin, so ddp, zero1, zero2 and sharded_ddp still end with the same bits.
 *
 * Buffers grow to the largest step seen and are kept; nothing is allocated in a steady state.
 */
#include "grad_rows.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "lk_cpu.h"
#include "trainer_internal.h"

struct loom_grad_rows {
    int64_t begin, row_size; /* the range's layout (row_size 0: never used)           */
    int64_t n, cap;          /* rows accumulated this step (sorted) and room for them  */
    int64_t *rows;
    unsigned char *values;    /* n x row_size elements of param_dtype                   */
    int64_t part_n, part_cap; /* the part lent to the model                             */
    int64_t *part_rows;
    unsigned char *part_values;
    int held;
    int64_t spare_cap; /* merge / union scratch, swapped with rows/values        */
    int64_t *spare_rows;
    unsigned char *spare_values;
    float *mask, *wide; /* the union mask; one row widened to f32                 */
    int64_t mask_len;
    int report;          /* LOOM_GRAD_ROWS=report: time the tail, log it at the end */
    double tail_seconds; /* reduce and add, over the steps                         */
    int64_t steps, rows_reduced;
};

void loom_grad_rows_free(loom_grad_rows *g)
{
    if (!g) return;
    if (g->report && g->steps > 0)
        loom_log(LOOM_LOG_INFO, "grad rows: %lld steps, %.0f rows reduced and added in %.2f ms/step after backward",
                 (long long)g->steps, (double)g->rows_reduced / (double)g->steps,
                 1e3 * g->tail_seconds / (double)g->steps);
    free(g->rows);
    free(g->values);
    free(g->part_rows);
    free(g->part_values);
    free(g->spare_rows);
    free(g->spare_values);
    free(g->mask);
    free(g->wide);
    free(g);
}

/* LOOM_GRAD_ROWS=off withholds it, for comparisons (bench/ddp_step's "before"); =report logs
 * the time the rows take after backward at the end of the run. */
int loom_grad_rows_offered(const loom_trainer *t)
{
    const char *env = getenv("LOOM_GRAD_ROWS");
    /* The rows part lives in host memory (the model writes it with its kernels): a device run
     * keeps the one-part gradient until the rows have a device buffer. */
    return t->world_size > 1 && t->device == LOOM_DEVICE_CPU && !(env && strcmp(env, "off") == 0);
}

/* Room for n rows in (*rows, *values), keeping what is there. */
static loom_status reserve(int64_t **rows, unsigned char **values, int64_t *cap, int64_t n, size_t row_bytes)
{
    if (n <= *cap) return LOOM_OK;
    int64_t want = *cap * 2 > n ? *cap * 2 : n;
    int64_t *r = realloc(*rows, (size_t)want * sizeof *r);
    if (r) *rows = r;
    unsigned char *v = r ? realloc(*values, (size_t)want * row_bytes + 1) : NULL;
    if (!v) return loom_error(LOOM_E_NOMEM, "out of memory for %lld gradient rows", (long long)n);
    *values = v;
    *cap = want;
    return LOOM_OK;
}

loom_status loom_grad_rows_acquire(void *context, int64_t begin, int64_t row_size, int64_t n_rows, const int64_t *rows,
                                   void **memory)
{
    loom_trainer *t = context;
    *memory = NULL;
    if (!t->grad_rows) {
        if (!(t->grad_rows = calloc(1, sizeof *t->grad_rows))) return loom_error(LOOM_E_NOMEM, "out of memory");
        const char *env = getenv("LOOM_GRAD_ROWS");
        t->grad_rows->report = env && strcmp(env, "report") == 0;
    }
    loom_grad_rows *g = t->grad_rows;
    if (g->held) return loom_error(LOOM_E_INVALID, "acquire_rows: the previous rows part was not released");
    if (begin < 0 || row_size < 1 || n_rows < 0 || (n_rows > 0 && !rows))
        return loom_error(LOOM_E_INVALID, "acquire_rows: begin %lld, row_size %lld, %lld rows", (long long)begin,
                          (long long)row_size, (long long)n_rows);
    if (g->row_size && (g->begin != begin || g->row_size != row_size))
        return loom_error(LOOM_E_INVALID, "acquire_rows: rows of [%lld, +%lld) after rows of [%lld, +%lld) in one run",
                          (long long)begin, (long long)row_size, (long long)g->begin, (long long)g->row_size);
    for (int64_t i = 0; i < n_rows; i++)
        if (rows[i] < 0 || (i > 0 && rows[i] <= rows[i - 1]) || begin + (rows[i] + 1) * row_size > t->total_numel)
            return loom_error(LOOM_E_INVALID,
                              "acquire_rows: row %lld (at %lld) is not increasing or lies outside the %lld parameters",
                              (long long)rows[i], (long long)i, (long long)t->total_numel);
    const size_t row_bytes = (size_t)row_size * t->param_size;
    loom_status st = reserve(&g->part_rows, &g->part_values, &g->part_cap, n_rows, row_bytes);
    if (st != LOOM_OK) return st;
    g->begin = begin;
    g->row_size = row_size;
    g->part_n = n_rows;
    if (n_rows) memcpy(g->part_rows, rows, (size_t)n_rows * sizeof *rows);
    memset(g->part_values, 0, (size_t)n_rows * row_bytes);
    g->held = 1;
    *memory = g->part_values;
    return LOOM_OK;
}

/* dst += src over one row of param_dtype elements (16-bit: in f32, rounded once). */
static void add_row(const loom_trainer *t, float *wide, void *dst, const void *src, int64_t n)
{
    if (t->param_dtype == LOOM_DTYPE_F32) {
        float *d = dst;
        const float *s = src;
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
        return;
    }
    lk_convert(wide, LOOM_DTYPE_F32, src, t->param_dtype, n);
    lk_accumulate_f32(dst, t->param_dtype, wide, n);
}

static void swap_spare(loom_grad_rows *g)
{
    int64_t *r = g->rows, c = g->cap;
    unsigned char *v = g->values;
    g->rows = g->spare_rows, g->values = g->spare_values, g->cap = g->spare_cap;
    g->spare_rows = r, g->spare_values = v, g->spare_cap = c;
}

static loom_status wide_row(loom_grad_rows *g)
{
    if (g->wide) return LOOM_OK;
    g->wide = malloc((size_t)g->row_size * sizeof *g->wide);
    return g->wide ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory");
}

/* The micro-batch's part joins the step's rows: a sorted merge, shared rows added (the earlier
 * micro-batches' sum first). */
loom_status loom_grad_rows_release(void *context, int64_t begin)
{
    loom_trainer *t = context;
    loom_grad_rows *g = t->grad_rows;
    if (!g || !g->held || g->begin != begin)
        return loom_error(LOOM_E_INVALID, "release_rows at %lld, which holds no rows part", (long long)begin);
    g->held = 0;
    const size_t row_bytes = (size_t)g->row_size * t->param_size;
    loom_status st = reserve(&g->spare_rows, &g->spare_values, &g->spare_cap, g->n + g->part_n, row_bytes);
    if (st == LOOM_OK) st = wide_row(g);
    if (st != LOOM_OK) return st;
    int64_t a = 0, b = 0, k = 0;
    while (a < g->n || b < g->part_n) {
        const int from_part = a == g->n || (b < g->part_n && g->part_rows[b] < g->rows[a]);
        const int both = !from_part && b < g->part_n && g->part_rows[b] == g->rows[a];
        unsigned char *out = g->spare_values + (size_t)k * row_bytes;
        if (from_part) {
            g->spare_rows[k] = g->part_rows[b];
            memcpy(out, g->part_values + (size_t)b++ * row_bytes, row_bytes);
        } else {
            g->spare_rows[k] = g->rows[a];
            memcpy(out, g->values + (size_t)a++ * row_bytes, row_bytes);
            if (both) add_row(t, g->wide, out, g->part_values + (size_t)b++ * row_bytes, g->row_size);
        }
        k++;
    }
    swap_spare(g);
    g->n = k;
    return LOOM_OK;
}

/* Every rank's rows: the union by a 0/1 mask summed over the ranks, then this rank's rows
 * placed in it (zeros elsewhere) and the packed rows all-reduced. */
static loom_status reduce_rows(loom_trainer *t, loom_grad_rows *g)
{
    const loom_comm_vtable *cv = t->comm.vtable;
    const int64_t len = (t->total_numel - g->begin) / g->row_size;
    if (g->mask_len < len) {
        free(g->mask);
        if (!(g->mask = malloc((size_t)len * sizeof *g->mask))) return loom_error(LOOM_E_NOMEM, "out of memory");
        g->mask_len = len;
    }
    memset(g->mask, 0, (size_t)len * sizeof *g->mask);
    for (int64_t i = 0; i < g->n; i++)
        g->mask[g->rows[i]] = 1.0f;
    loom_status st = cv->all_reduce(t->comm.instance, g->mask, (size_t)len, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL);
    if (st != LOOM_OK) return st;
    int64_t u = 0;
    for (int64_t r = 0; r < len; r++)
        u += g->mask[r] > 0;
    const size_t row_bytes = (size_t)g->row_size * t->param_size;
    if ((st = reserve(&g->spare_rows, &g->spare_values, &g->spare_cap, u, row_bytes)) != LOOM_OK) return st;
    int64_t k = 0, a = 0;
    for (int64_t r = 0; r < len; r++) {
        if (!(g->mask[r] > 0)) continue;
        unsigned char *out = g->spare_values + (size_t)k * row_bytes;
        g->spare_rows[k++] = r;
        if (a < g->n && g->rows[a] == r)
            memcpy(out, g->values + (size_t)a++ * row_bytes, row_bytes);
        else
            memset(out, 0, row_bytes);
    }
    swap_spare(g);
    g->n = u;
    return u ? cv->all_reduce(t->comm.instance, g->values, (size_t)(u * g->row_size), t->param_dtype, LOOM_REDUCE_SUM,
                              NULL)
             : LOOM_OK;
}

loom_status loom_grad_rows_finish(loom_trainer *t, int reduce, void *const *owned_grads)
{
    loom_grad_rows *g = t->grad_rows;
    if (!g || !g->row_size) return LOOM_OK; /* the model never used the rows part */
    if (g->held) return loom_error(LOOM_E_INVALID, "a rows part was acquired and never released");
    const double start = g->report ? loom_now_seconds() : 0;
    loom_status st = reduce && t->world_size > 1 ? reduce_rows(t, g) : LOOM_OK;
    if (st == LOOM_OK) st = wide_row(g);
    const size_t row_bytes = (size_t)g->row_size * t->param_size;
    for (int64_t i = 0; st == LOOM_OK && i < g->n; i++) {
        const int64_t b = g->begin + g->rows[i] * g->row_size, e = b + g->row_size;
        for (size_t r = 0; r < t->n_owned; r++) {
            const int64_t lo = b > t->owned[r].begin ? b : t->owned[r].begin;
            const int64_t hi = e < t->owned[r].end ? e : t->owned[r].end;
            if (lo >= hi) continue;
            add_row(t, g->wide, (unsigned char *)owned_grads[r] + (size_t)(lo - t->owned[r].begin) * t->param_size,
                    g->values + (size_t)i * row_bytes + (size_t)(lo - b) * t->param_size, hi - lo);
        }
    }
    if (g->report) g->tail_seconds += loom_now_seconds() - start, g->steps++, g->rows_reduced += g->n;
    g->n = 0;
    return st;
}
