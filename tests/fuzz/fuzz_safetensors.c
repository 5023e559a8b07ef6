/* fuzz_safetensors.c - a .safetensors file (core/io/safetensors.c): open, every tensor, lookups. */
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    fuzz_write(NULL, "model.safetensors", data, size, path, sizeof path);
    loom_safetensors *st = NULL;
    if (loom_safetensors_open(path, &st) == LOOM_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < loom_safetensors_count(st); i++) {
            loom_st_tensor t, again;
            if (loom_safetensors_tensor(st, i, &t) != LOOM_OK) abort();
            if (loom_safetensors_find(st, t.name, &again) != LOOM_OK || again.data != t.data) abort();
            /* Touch the first and last byte: the range must lie in the mapping. */
            if (t.nbytes) sink ^= ((const uint8_t *)t.data)[0] ^ ((const uint8_t *)t.data)[t.nbytes - 1];
        }
        (void)loom_safetensors_metadata(st, "format");
        (void)sink;
    }
    loom_error_clear();
    loom_safetensors_close(st);
    return 0;
}
