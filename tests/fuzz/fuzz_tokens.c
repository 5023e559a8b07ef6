/* fuzz_tokens.c - an llm.c token shard (core/data/data_tokens.c): opened as a dataset, the first and
 * last examples read. The first input byte picks the block size. */
#include "data_tokens.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int64_t block = 1 + data[0] % 64;
    char path[256];
    fuzz_write(NULL, "shard.bin", data + 1, size - 1, path, sizeof path);
    loom_dataset *ds = NULL;
    if (loom_token_dataset_open(path, block, &ds) == LOOM_OK) {
        int32_t inputs[2 * 64], labels[2 * 64];
        int64_t idx[2] = {0, ds->n_examples - 1}, targets = 0;
        if (ds->n_examples < 1 || ds->fill(ds, idx, 2, inputs, labels, &targets) != LOOM_OK) abort();
        if (targets > 2 * block) abort();
        ds->destroy(ds);
    }
    loom_error_clear();
    return 0;
}
