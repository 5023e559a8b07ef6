/*
 * sampler_sequential.c - the sequential training order (see sampler_sequential.h).
 *
 * BatchSamplerShard's filling, read as one stream: the examples 0..n-1, then its
 * initial_data from its start (the examples of the first `world` batches, repeated until there
 * are world x batch of them). Batch b of the stream is positions b * batch .. b * batch + batch
 * - 1, and rank r reads stream batches r, r + world, ...
 */
#include "sampler_sequential.h"

static int64_t world_of(const loom_dataloader *dl)
{
    return dl->world_size > 0 ? dl->world_size : 1;
}

/* Batches each rank reads (BatchSamplerShard.__len__ with even_batches). */
static int64_t batches_per_rank(const loom_dataloader *dl)
{
    const int64_t n = dl->dataset->n_examples, bs = dl->batch_size, world = world_of(dl);
    const int64_t batches = dl->drop_last ? n / bs : (n + bs - 1) / bs;
    return dl->drop_last ? batches / world : (batches + world - 1) / world;
}

int64_t loom_sequential_per_rank(const loom_dataloader *dl)
{
    /* One process: no sharding, so no filling either (accelerate leaves the loader as it is). */
    if (world_of(dl) == 1) return dl->dataset->n_examples;
    return batches_per_rank(dl) * dl->batch_size;
}

void loom_sequential_order(const loom_dataloader *dl, int64_t *order)
{
    const int64_t n = dl->dataset->n_examples, bs = dl->batch_size, world = world_of(dl);
    if (world == 1) {
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        return;
    }
    /* initial_data is the first min(world * batch, n) examples over and over. */
    const int64_t head = n < world * bs ? n : world * bs;
    const int64_t batches = batches_per_rank(dl);
    for (int64_t k = 0; k < batches; k++) {
        const int64_t start = (k * world + dl->rank) * bs;
        for (int64_t j = 0; j < bs; j++) {
            const int64_t p = start + j;
            order[k * bs + j] = p < n ? p : (p - n) % head;
        }
    }
}
