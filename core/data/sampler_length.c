/*
 * sampler_length.c - length-grouped training orders (see sampler_length.h).
 *
 * --group_by_length is HF's get_length_grouped_indices + DistributedLengthGroupedSampler: one
 * permutation of all examples, cut into megabatches of mult * batch_size examples (mult =
 * min(n / (4 * batch_size), 50), at least 1), each sorted by decreasing length; the longest
 * example is swapped to the front of the first megabatch; ranks then take every world-th
 * position of that global order, wrapping around as DistributedSampler pads.
 *
 * --sortish_sampler is the seq2seq examples' sortish_sampler_indices (from fastai) +
 * DistributedSortishSampler: each rank first takes its fixed share (positions rank, rank +
 * world, ... of 0..n-1, wrapping around), then shuffles it, sorts chunks of 50 * batch_size by
 * decreasing length, cuts batches of batch_size, moves the batch with the longest first
 * example to the front and shuffles the batches after it.
 *
 * HF's sorts are Python's sorted(reverse=True), stable: equal lengths keep their shuffled
 * order, so here too. The random draws are loom's (splitmix64 from the seed, the epoch and, for
 * sortish, the rank), not numpy's or torch's.
 */
#include "sampler_length.h"

#include <stdlib.h>

#include "data_seq2seq.h"
#include "error.h"

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t loom_order_state(uint64_t seed, int64_t epoch)
{
    return seed * 0x100000001b3ull ^ (uint64_t)epoch * 0x9e3779b97f4a7c15ull;
}

void loom_shuffle(int64_t *a, int64_t n, uint64_t *state)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64(state) % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

typedef struct keyed {
    int64_t length, position, value;
} keyed;

static int by_length_desc(const void *pa, const void *pb)
{
    const keyed *a = pa, *b = pb;
    if (a->length != b->length) return a->length > b->length ? -1 : 1;
    return (a->position > b->position) - (a->position < b->position);
}

/* Stable sort of values[0..n) by decreasing length[values[i]]; scratch holds n keyed. */
static void sort_desc(int64_t *values, int64_t n, const int64_t *length, keyed *scratch)
{
    for (int64_t i = 0; i < n; i++)
        scratch[i] = (keyed){length[values[i]], i, values[i]};
    qsort(scratch, (size_t)n, sizeof *scratch, by_length_desc);
    for (int64_t i = 0; i < n; i++)
        values[i] = scratch[i].value;
}

static void group_by_length(const loom_dataloader *dl, int64_t epoch, const int64_t *length, int64_t *perm,
                            keyed *scratch, int64_t *order, int64_t per_rank)
{
    const int64_t n = dl->dataset->n_examples, bs = dl->batch_size;
    const int64_t world = dl->world_size > 0 ? dl->world_size : 1;
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    uint64_t state = loom_order_state(dl->seed, epoch);
    loom_shuffle(perm, n, &state);
    int64_t mult = n / (4 * bs);
    if (mult > 50) mult = 50;
    if (mult < 1) mult = 1;
    const int64_t mega = mult * bs;
    int64_t longest = 0;
    for (int64_t s = 0; s < n; s += mega) {
        sort_desc(perm + s, n - s < mega ? n - s : mega, length, scratch);
        if (length[perm[s]] > length[perm[longest]]) longest = s;
    }
    int64_t t = perm[0];
    perm[0] = perm[longest];
    perm[longest] = t;
    for (int64_t i = 0; i < per_rank; i++)
        order[i] = perm[(i * world + dl->rank) % n];
}

static loom_status sortish(const loom_dataloader *dl, int64_t epoch, const int64_t *length, int64_t *idx,
                           keyed *scratch, int64_t *order, int64_t per_rank)
{
    const int64_t n = dl->dataset->n_examples, bs = dl->batch_size;
    const int64_t world = dl->world_size > 0 ? dl->world_size : 1;
    const int64_t n_batches = (per_rank + bs - 1) / bs;
    int64_t *share = malloc((size_t)per_rank * sizeof *share),
            *share_len = malloc((size_t)per_rank * sizeof *share_len);
    int64_t *batches = malloc((size_t)n_batches * sizeof *batches);
    if (!share || !share_len || !batches) {
        free(share);
        free(share_len);
        free(batches);
        return loom_error(LOOM_E_NOMEM, "out of memory for the data order");
    }
    for (int64_t k = 0; k < per_rank; k++) {
        share[k] = (k * world + dl->rank) % n;
        share_len[k] = length[share[k]];
        idx[k] = k;
    }
    uint64_t state = loom_order_state(dl->seed, epoch) + (uint64_t)dl->rank * 0xd1b54a32d192ed03ull;
    loom_shuffle(idx, per_rank, &state);
    for (int64_t s = 0; s < per_rank; s += 50 * bs)
        sort_desc(idx + s, per_rank - s < 50 * bs ? per_rank - s : 50 * bs, share_len, scratch);
    /* Batches are named by their first position in idx; the one whose first (longest) example
     * is longest goes first, the others are shuffled after it. */
    int64_t longest = 0;
    for (int64_t b = 0; b < n_batches; b++) {
        batches[b] = b * bs;
        if (share_len[idx[b * bs]] > share_len[idx[batches[longest]]]) longest = b;
    }
    batches[longest] = 0;
    batches[0] = longest * bs;
    loom_shuffle(batches + 1, n_batches - 1, &state);
    int64_t i = 0;
    for (int64_t b = 0; b < n_batches; b++)
        for (int64_t p = batches[b]; p < batches[b] + bs && p < per_rank; p++)
            order[i++] = share[idx[p]];
    free(share);
    free(share_len);
    free(batches);
    return LOOM_OK;
}

loom_status loom_length_order(const loom_dataloader *dl, int64_t epoch, int64_t *order, int64_t per_rank)
{
    const loom_dataset *ds = dl->dataset;
    const int64_t n = ds->n_examples;
    if (n < 1 || per_rank < 1) return LOOM_OK;
    const int64_t m = n > per_rank ? n : per_rank;
    int64_t *length = malloc((size_t)n * sizeof *length), *scratch_ids = calloc((size_t)m, sizeof *scratch_ids);
    keyed *scratch = malloc((size_t)m * sizeof *scratch);
    loom_status st = LOOM_OK;
    if (!length || !scratch_ids || !scratch) st = loom_error(LOOM_E_NOMEM, "out of memory for the data order");
    for (int64_t i = 0; st == LOOM_OK && i < n; i++) {
        const int64_t len = loom_seq2seq_source_length(ds, i);
        length[i] = len >= 0 ? len : ds->input_shape[0];
    }
    if (st == LOOM_OK && dl->sampler == LOOM_SAMPLER_GROUP_BY_LENGTH)
        group_by_length(dl, epoch, length, scratch_ids, scratch, order, per_rank);
    else if (st == LOOM_OK)
        st = sortish(dl, epoch, length, scratch_ids, scratch, order, per_rank);
    free(length);
    free(scratch_ids);
    free(scratch);
    return st;
}
