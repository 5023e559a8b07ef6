/*
 * command_consolidate.c - `loom consolidate CHECKPOINT OUTPUT_DIR`: DeepSpeed's zero_to_fp32.py.
 * A checkpoint of a mixed-precision run holds its model in 16 bits and the f32 master weights in
 * the optimizer state files, one per rank under ZeRO; this joins the master weights into one f32
 * model.safetensors (a run without master weights has its f32 model already: it is copied) with
 * config.json and the tokenizer files, a folder an f32 loom run or HF's from_pretrained loads.
 * The checkpoint is checked against its manifest first.
 *
 * OUTPUT_DIR must not be the checkpoint or lie inside it (the checkpoint would be rewritten
 * under its manifest), and must be empty unless --overwrite_output_dir says otherwise, as
 * `loom train` asks: a finished run's model is not replaced by accident.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <loom/kernels.h>

#include "checkpoint_dir.h"
#include "checkpoint_shards.h"
#include "commands.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "safetensors.h"
#include "stale_outputs.h"

#define USAGE "usage: loom consolidate CHECKPOINT OUTPUT_DIR [--overwrite_output_dir]"

static void print_help(void)
{
    printf("%s\n\n"
           "Join a checkpoint's f32 master weights (per-rank shards under ZeRO or sharded\n"
           "DDP) into one f32 model.safetensors in OUTPUT_DIR, with config.json and the\n"
           "tokenizer files: what DeepSpeed's zero_to_fp32.py does. A run without master\n"
           "weights (fp32) has its model copied. The checkpoint is checked against its\n"
           "manifest first.\n\n"
           "OUTPUT_DIR must be new or empty (--overwrite_output_dir: write into it anyway),\n"
           "and never the checkpoint itself or a folder inside it.\n",
           USAGE);
}

/* Whether `real` (a canonical path) or a folder above it is the file `target` is; its
 * prefixes are then exactly its ancestors. Device and inode, so that a link or a bind mount
 * to the same folder is seen through. */
static int is_at_or_below(char *real, const struct stat *target)
{
    for (;;) {
        struct stat sb;
        if (stat(real, &sb) == 0 && sb.st_dev == target->st_dev && sb.st_ino == target->st_ino) return 1;
        char *slash = strrchr(real, '/');
        if (!slash || !strcmp(real, "/")) return 0;
        slash[slash == real ? 1 : 0] = '\0';
    }
}

/* The canonical path of `path` or, for an output folder not made yet, of its nearest existing
 * parent (where it will be made); malloc'd, NULL when none resolves. */
static char *real_existing(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return NULL;
    for (;;) {
        char *real = realpath(buf, NULL);
        if (real) return real;
        char up[4096];
        snprintf(up, sizeof up, "%s", buf);
        const char *parent = dirname(up);
        if (!strcmp(parent, buf)) return NULL;
        snprintf(buf, sizeof buf, "%s", parent);
    }
}

/* Refuse an output folder that is the checkpoint or inside it, even under --overwrite_output_dir:
 * the new files would change what its manifest describes, and it would no longer resume. A
 * folder that holds it (the run's own folder) is only written with --overwrite_output_dir, as
 * any folder with files: the checkpoint below is left as it is. */
static loom_status check_apart(const char *checkpoint, const char *output_dir)
{
    struct stat ck;
    if (stat(checkpoint, &ck) != 0) return LOOM_OK; /* loom_checkpoint_verify names it */
    char *real_out = real_existing(output_dir);
    const int inside = real_out && is_at_or_below(real_out, &ck);
    free(real_out);
    if (inside)
        return loom_error(LOOM_E_INVALID,
                          "output directory %s is the checkpoint %s or a folder inside it: consolidate never writes "
                          "into the checkpoint it reads; choose another OUTPUT_DIR",
                          output_dir, checkpoint);
    return LOOM_OK;
}

/* `loom train`'s rule: a folder with files in it is only written into when asked. */
static loom_status check_empty(const char *output_dir, int overwrite)
{
    int empty = 1;
    loom_status st = loom_dir_is_empty(output_dir, &empty);
    if (st == LOOM_OK && !empty && !overwrite)
        st = loom_error(LOOM_E_INVALID,
                        "output directory (%s) already exists and is not empty: use --overwrite_output_dir to overcome",
                        output_dir);
    return st;
}

/* Copy one of the checkpoint's optional files. One it lacks is removed from to_dir, where an
 * earlier model left it (--overwrite_output_dir): a tokenizer beside a model not its own. */
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
        char why[64];
        snprintf(why, sizeof why, "the checkpoint has no %s", name);
        return loom_remove_stale_output("consolidate", to_dir, name, why);
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
    /* No states at all: the model is all there is. A set with a rank's file missing (a node's
     * own --save_on_each_node folder) is an error: its model is the run's own dtype, and joining
     * the master weights needs every shard. */
    loom_status states = loom_shard_set_open(checkpoint, &shards);
    if (states == LOOM_E_NOT_FOUND)
        loom_error_clear();
    else if (states != LOOM_OK)
        st = states;
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
        for (uint32_t d = 0; d < t.ndim; d++)
            numel *= t.shape[d];
        if (!loom_dtype_is_param(t.dtype)) {
            st = loom_error(LOOM_E_FORMAT, "%s: tensor '%s' is not f32, f16 or bf16", path, t.name);
            break;
        }
        if (!(data[i] = malloc((size_t)numel * sizeof(float) + 1))) {
            st = loom_error(LOOM_E_NOMEM, "out of memory");
            break;
        }
        if (*from_master)
            st = loom_shard_set_read(shards, t.name, "fp32_master", 0, numel, data[i]);
        else if (t.dtype == LOOM_DTYPE_F32)
            memcpy(data[i], t.data, (size_t)numel * sizeof(float));
        else
            k->convert(data[i], LOOM_DTYPE_F32, t.data, t.dtype, numel);
        out[i] = t;
        out[i].dtype = LOOM_DTYPE_F32;
        out[i].data = data[i];
        out[i].nbytes = (uint64_t)numel * sizeof(float);
    }
    if (st == LOOM_OK) st = loom_mkdir_p(output_dir);
    /* Each file is written whole (temp file + rename), the model last: a folder left by an
     * interrupted run has no model.safetensors to load. */
    static const char *const extras[] = {"config.json", "vocab.json", "merges.txt"};
    for (size_t i = 0; i < 3 && st == LOOM_OK; i++)
        st = copy_if_present(checkpoint, output_dir, extras[i]);
    const char *metadata[] = {"format", "pt"};
    if (st == LOOM_OK) st = loom_path_join(path, sizeof path, output_dir, "model.safetensors");
    if (st == LOOM_OK) st = loom_safetensors_write(path, out, n, metadata, 1);
    for (size_t i = 0; data && i < n; i++)
        free(data[i]);
    free(data);
    free(out);
    loom_host_destroy(host);
    loom_shard_set_close(shards);
    loom_safetensors_close(model);
    *n_tensors = n;
    return st;
}

/* CHECKPOINT OUTPUT_DIR and --overwrite_output_dir [true|false], in any order; 0 when the
 * command line is not that. */
static int parse_args(int argc, char **argv, const char **paths, int *overwrite)
{
    int n_paths = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--overwrite_output_dir")) {
            const char *value = i + 1 < argc ? argv[i + 1] : "";
            const int given = !strcasecmp(value, "true") || !strcasecmp(value, "false");
            *overwrite = !given || !strcasecmp(value, "true");
            i += given;
        } else if (argv[i][0] == '-' || n_paths == 2) {
            return 0;
        } else {
            paths[n_paths++] = argv[i];
        }
    }
    return n_paths == 2;
}

int loom_command_consolidate(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            return 0;
        }
    const char *paths[2] = {NULL, NULL};
    int overwrite = 0;
    if (!parse_args(argc, argv, paths, &overwrite)) return loom_command_fail(loom_error(LOOM_E_INVALID, USAGE));
    size_t n = 0;
    int from_master = 0;
    loom_status st = check_apart(paths[0], paths[1]);
    if (st == LOOM_OK) st = check_empty(paths[1], overwrite);
    if (st == LOOM_OK) st = consolidate(paths[0], paths[1], &n, &from_master);
    if (st != LOOM_OK) return loom_command_fail(st);
    printf("loom: wrote %s/model.safetensors: %zu f32 tensors from %s's %s\n", paths[1], n, paths[0],
           from_master ? "f32 master weights" : "model");
    return 0;
}
