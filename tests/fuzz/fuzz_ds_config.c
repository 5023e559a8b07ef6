/* fuzz_ds_config.c - a DeepSpeed configuration (core/config/args_deepspeed.c, core/config/deepspeed_config.c):
 * parsed with the arguments as `loom train --deepspeed FILE` does, merged for two ranks, its
 * pending steps resolved and written back. */
#include "deepspeed_config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    loom_args args;
    if (fuzz_parse_args("--deepspeed", "ds_config.json", data, size, &args, path, sizeof path) == LOOM_OK) {
        loom_ds_config cfg;
        memset(&cfg, 0, sizeof cfg);
        if (loom_ds_config_load(path, &args, 2, &cfg) == LOOM_OK &&
            loom_ds_config_resolve_steps(&cfg, 1000) == LOOM_OK &&
            loom_ds_config_write_json(&cfg, fuzz_sink()) != LOOM_OK)
            abort();
        loom_ds_config_free(&cfg);
    }
    loom_error_clear();
    loom_args_free(&args);
    return 0;
}
