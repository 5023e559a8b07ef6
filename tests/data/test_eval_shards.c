/*
 * test_eval_shards.c - the loader's shards (core/data/dataset.c) against the rules written out
 * again: unpadded (evaluation), rank r reads positions r, r + world, ... below n, so the ranks
 * together read each example exactly once; padded (training, DistributedSampler), every rank
 * reads ceil(n / world) examples, the positions past n wrapping to the start. Also the batches
 * each rank loads: full ones and one partial one at the end, none for a rank without examples.
 */
#include <stdint.h>

#include "dataset.h"
#include "test_util.h"

/* Example i has label i: a loaded batch shows which examples it holds. */
static loom_status fill_index(const loom_dataset *self, const int64_t *indices, int64_t n, void *inputs,
                              int32_t *labels, int64_t *n_targets)
{
    (void)self;
    for (int64_t i = 0; i < n; i++) {
        ((float *)inputs)[i] = 0;
        labels[i] = (int32_t)indices[i];
    }
    *n_targets = n;
    return LOOM_OK;
}

/* The examples rank `rank` of `world` reads, as the rules say: into want[], their count back. */
static int64_t expected(int64_t n, int world, int rank, int unpadded, int64_t *want)
{
    const int64_t per_rank = unpadded ? 0 : (n + world - 1) / world;
    int64_t k = 0;
    for (int64_t pos = rank; unpadded ? pos < n : k < per_rank; pos += world)
        want[k++] = pos % n;
    return k;
}

static void check_shards(loom_dataset *ds, int world, int unpadded, int64_t batch)
{
    const int64_t n = ds->n_examples;
    int64_t seen[16] = {0}, want[16];
    for (int rank = 0; rank < world; rank++) {
        loom_dataloader dl;
        CHECK(loom_dataloader_init(&dl, ds, batch, 0, 0, 1) == LOOM_OK);
        dl.world_size = world;
        dl.rank = rank;
        dl.unpadded = unpadded;
        CHECK(loom_dataloader_set_epoch(&dl, 0) == LOOM_OK);
        const int64_t count = expected(n, world, rank, unpadded, want);
        CHECK(dl.order_len == count);
        CHECK(loom_dataloader_len(&dl) == (count + batch - 1) / batch);
        loom_batch_buffer buf;
        CHECK(loom_batch_buffer_init(&buf, ds, batch) == LOOM_OK);
        int64_t k = 0;
        for (int64_t b = 0; b < loom_dataloader_len(&dl); b++) {
            CHECK(loom_dataloader_load(&dl, b, &buf) == LOOM_OK);
            CHECK(buf.batch.batch_size == (count - k < batch ? count - k : batch));
            for (int64_t i = 0; i < buf.batch.batch_size; i++, k++) {
                CHECK(buf.labels[i] == want[k]);
                seen[buf.labels[i]]++;
            }
        }
        CHECK(k == count);
        loom_batch_buffer_free(&buf);
        loom_dataloader_free(&dl);
    }
    if (unpadded)
        for (int64_t i = 0; i < n; i++)
            CHECK(seen[i] == 1);
}

int main(void)
{
    loom_dataset ds = {.input_dtype = LOOM_DTYPE_F32,
                       .input_ndim = 1,
                       .input_shape = {1},
                       .labels_per_example = 1,
                       .fill = fill_index};
    for (int64_t n = 1; n <= 9; n++) {
        ds.n_examples = n;
        for (int world = 1; world <= 8; world++)
            for (int64_t batch = 1; batch <= 3; batch++) {
                check_shards(&ds, world, 1, batch);
                check_shards(&ds, world, 0, batch);
            }
    }
    /* 5 examples on 8 ranks: ranks 5..7 read nothing and run no batch. */
    ds.n_examples = 5;
    loom_dataloader dl;
    CHECK(loom_dataloader_init(&dl, &ds, 2, 0, 0, 1) == LOOM_OK);
    dl.world_size = 8;
    dl.rank = 6;
    dl.unpadded = 1;
    CHECK(loom_dataloader_set_epoch(&dl, 0) == LOOM_OK);
    CHECK(dl.order_len == 0 && loom_dataloader_len(&dl) == 0);
    loom_dataloader_free(&dl);
    return test_finish("test_eval_shards");
}
