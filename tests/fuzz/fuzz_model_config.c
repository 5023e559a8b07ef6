/* fuzz_model_config.c - config.json of a model folder (core/io/model_config.c). */
#include "fuzz_util.h"
#include "model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[256], path[256];
    fuzz_fresh_dir("model", dir, sizeof dir);
    fuzz_write(dir, "config.json", data, size, path, sizeof path);
    loom_saved_model_config c;
    if (loom_saved_model_config_read(dir, &c) == LOOM_OK) {
        if (!c.model_type) abort();
        for (size_t i = 0; i < c.n; i++)
            if (!c.entries[i].key || !c.entries[i].value) abort();
    }
    loom_error_clear();
    loom_saved_model_config_free(&c);
    return 0;
}
