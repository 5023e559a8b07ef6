/* fuzz_checkpoint.c - a checkpoint folder (core/io/checkpoint_dir.c): the input is name, content,
 * name, content, ... separated by FUZZ_SEPARATOR, written as the folder's files (the manifest
 * is loom_manifest.json); then loom_checkpoint_verify and loom_checkpoint_latest on it. */
#include <ctype.h>

#include "checkpoint_dir.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A plain file name: what a checkpoint can hold, nothing that leaves the folder. */
static int plain_name(const fuzz_part *p, char *out, size_t cap)
{
    if (p->size == 0 || p->size >= cap || p->data[0] == '.') return 0;
    for (size_t i = 0; i < p->size; i++)
        if (!isalnum(p->data[i]) && p->data[i] != '.' && p->data[i] != '_' && p->data[i] != '-') return 0;
    memcpy(out, p->data, p->size);
    out[p->size] = 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_part parts[FUZZ_MAX_PARTS];
    size_t n = fuzz_split(data, size, parts, FUZZ_MAX_PARTS);
    char out[256], dir[300], path[400], name[64];
    fuzz_fresh_dir("out", out, sizeof out);
    snprintf(dir, sizeof dir, "%s/checkpoint-7", out);
    if (loom_mkdir_p(dir) != LOOM_OK) abort();
    for (size_t i = 0; i + 1 < n; i += 2)
        if (plain_name(&parts[i], name, sizeof name))
            fuzz_write(dir, name, parts[i + 1].data, parts[i + 1].size, path, sizeof path);
    loom_status verified = loom_checkpoint_verify(dir);
    loom_error_clear();
    char latest[512];
    loom_status found = loom_checkpoint_latest(out, latest, sizeof latest);
    /* The newest complete checkpoint is this one exactly when it verifies. */
    if ((verified == LOOM_OK) != (found == LOOM_OK)) abort();
    loom_error_clear();
    return 0;
}
