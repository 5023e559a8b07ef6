/*
 * command_consolidate.c - `loom consolidate CHECKPOINT OUTPUT_DIR`: DeepSpeed's zero_to_fp32.py.
 * A checkpoint of a mixed-precision run holds its model in 16 bits and the f32 master weights in
 * the optimizer state files, one per rank under ZeRO; this joins the master weights into one f32
 * model.safetensors (a run without master weights has its f32 model already: it is copied) with
 * config.json and the tokenizer files, a folder an f32 loom run or HF's from_pretrained loads.
 * The checkpoint is checked against its manifest first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/kernels.h>

#include "checkpoint_dir.h"
#include "checkpoint_shards.h"
#include "commands.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "safetensors.h"

static void print_help(void)
{
    printf("usage: loom consolidate CHECKPOINT OUTPUT_DIR\n\n"
           "Join a checkpoint's f32 master weights (per-rank shards under ZeRO or sharded\n"
           "DDP) into one f32 model.safetensors in OUTPUT_DIR, with config.json and the\n"
           "tokenizer files: what DeepSpeed's zero_to_fp32.py does. A run without master\n"
           "weights (fp32) has its model copied. The checkpoint is checked against its\n"
           "manifest first.\n");
}

static loom_status copy_if_present(const char *from_dir, const char *to_dir, const char *name)
{
    char from[4096], to[4096];
    loom_status st = loom_path_join(from, sizeof from, from_dir, name);
    if (st == LOOM_OK) st = loom_path_join(to, sizeof to, to_dir, name);
    if (st != LOOM_OK) return st;
    char *data = NULL;
    size_t len = 0;
    if ((st = loom_read_file(from, &data, &len)) == LOOM_E_NOT_FOUND) {
        loom_error_clear();
        return LOOM_OK;
    }
    if (st == LOOM_OK) st = loom_write_file_atomic(to, data, len);
    free(data);
    return st;
}

static loom_status consolidate(const char *checkpoint, const char *output_dir, size_t *n_tensors, int *from_master)
{
    loom_status st = loom_checkpoint_verify(checkpoint);
    if (st != LOOM_OK) return st;
    char path[4096];
    if ((st = loom_path_join(path, sizeof path, checkpoint, "model.safetensors")) != LOOM_OK) return st;
    loom_safetensors *model = NULL;
    if ((st = loom_safetensors_open(path, &model)) != LOOM_OK) return st;
    loom_shard_set *shards = NULL;
    if (loom_shard_set_open(checkpoint, &shards) != LOOM_OK) loom_error_clear(); /* no states: the model is all */
    *from_master = shards && loom_shard_set_has_state(shards, "fp32_master");
    loom_host *host = loom_host_create("loom");
    const loom_kernels_api *k = host ? loom_host_api_table()->service(host, LOOM_KERNELS_CPU_SERVICE, 0) : NULL;
    size_t n = loom_safetensors_count(model);
    loom_st_tensor *out = calloc(n ? n : 1, sizeof *out);
    float **data = calloc(n ? n : 1, sizeof *data);
    if (!k || !out || !data) st = loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n && st == LOOM_OK; i++) {
        loom_st_tensor t;
        if ((st = loom_safetensors_tensor(model, i, &t)) != LOOM_OK) break;
        int64_t numel = 1;
        for (uint32_t d = 0; d < t.ndim; d++) numel *= t.shape[d];
        if (!loom_dtype_is_param(t.dtype)) {
            st = loom_error(LOOM_E_FORMAT, "%s: tensor '%s' is not f32, f16 or bf16", path, t.name);
            break;
        }
        if (!(data[i] = malloc((size_t)numel * sizeof(float) + 1))) {
            st = loom_error(LOOM_E_NOMEM, "out of memory");
            break;
        }
        if (*from_master) st = loom_shard_set_read(shards, t.name, "fp32_master", 0, numel, data[i]);
        else if (t.dtype == LOOM_DTYPE_F32) memcpy(data[i], t.data, (size_t)numel * sizeof(float));
        else k->convert(data[i], LOOM_DTYPE_F32, t.data, t.dtype, numel);
        out[i] = t;
        out[i].dtype = LOOM_DTYPE_F32;
        out[i].data = data[i];
        out[i].nbytes = (uint64_t)numel * sizeof(float);
    }
    if (st == LOOM_OK) st = loom_mkdir_p(output_dir);
    const char *metadata[] = {"format", "pt"};
    if (st == LOOM_OK) st = loom_path_join(path, sizeof path, output_dir, "model.safetensors");
    if (st == LOOM_OK) st = loom_safetensors_write(path, out, n, metadata, 1);
    static const char *const extras[] = {"config.json", "vocab.json", "merges.txt"};
    for (size_t i = 0; i < 3 && st == LOOM_OK; i++) st = copy_if_present(checkpoint, output_dir, extras[i]);
    for (size_t i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(out);
    loom_host_destroy(host);
    loom_shard_set_close(shards);
    loom_safetensors_close(model);
    *n_tensors = n;
    return st;
}

int loom_command_consolidate(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            return 0;
        }
    if (argc != 2 || argv[0][0] == '-' || argv[1][0] == '-')
        return loom_command_fail(loom_error(LOOM_E_INVALID, "usage: loom consolidate CHECKPOINT OUTPUT_DIR"));
    size_t n = 0;
    int from_master = 0;
    loom_status st = consolidate(argv[0], argv[1], &n, &from_master);
    if (st != LOOM_OK) return loom_command_fail(st);
    printf("loom: wrote %s/model.safetensors: %zu f32 tensors from %s's %s\n", argv[1], n, argv[0],
           from_master ? "f32 master weights" : "model");
    return 0;
}
