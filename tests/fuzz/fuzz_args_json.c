/* fuzz_args_json.c - a --config file of training arguments (core/config/args_file.c), resolved as
 * `loom train --config FILE` would, then written back as JSON (core/config/args_json.c). */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    loom_args args;
    if (fuzz_parse_args("--config", "args.json", data, size, &args, path, sizeof path) == LOOM_OK &&
        loom_args_write_json(&args, fuzz_sink()) != LOOM_OK)
        abort();
    loom_error_clear();
    loom_args_free(&args);
    return 0;
}
