/* fuzz_classification.c - a LOOMCLS1 classification file (core/data/data_classification.c). */
#include <math.h>

#include "data_classification.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    fuzz_write(NULL, "data.bin", data, size, path, sizeof path);
    loom_classification_data d;
    if (loom_classification_load(path, &d) == LOOM_OK) {
        /* What load() promises the trainer. */
        for (uint64_t i = 0; i < d.n_samples; i++) {
            if (d.labels[i] < 0 || (uint32_t)d.labels[i] >= d.n_classes) abort();
            for (uint32_t f = 0; f < d.n_features; f++)
                if (!isfinite(d.features[i * d.n_features + f])) abort();
        }
    }
    loom_error_clear();
    loom_classification_free(&d);
    return 0;
}
