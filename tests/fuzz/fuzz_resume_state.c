/* fuzz_resume_state.c - a checkpoint's JSON state files (core/io/resume_state.c): the input's
 * parts, separated by FUZZ_SEPARATOR, are trainer_state.json, scheduler.json, scaler.json,
 * loss_tracker.json and rng_state.json; a missing part is a missing file. */
#include "fuzz_util.h"
#include "resume_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"trainer_state.json", "scheduler.json", "scaler.json", "loss_tracker.json",
                                        "rng_state.json"};
    fuzz_part parts[5];
    size_t n = fuzz_split(data, size, parts, 5);
    char dir[256], path[300];
    fuzz_fresh_dir("checkpoint", dir, sizeof dir);
    for (size_t i = 0; i < n; i++) fuzz_write(dir, names[i], parts[i].data, parts[i].size, path, sizeof path);
    loom_resume_state rs;
    if (loom_resume_state_read(dir, &rs) == LOOM_OK && !cJSON_IsArray(rs.log_history)) abort();
    loom_error_clear();
    loom_resume_state_free(&rs);
    int64_t seed = 0;
    (void)loom_resume_read_seed(dir, &seed);
    loom_error_clear();
    return 0;
}
