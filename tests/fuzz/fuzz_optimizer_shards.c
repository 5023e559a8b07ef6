/* fuzz_optimizer_shards.c - the optimizer state files of a checkpoint (core/io/checkpoint_shards.c).
 * The first input byte picks the layout: optimizer.safetensors alone, or the rank files of a
 * world of 1 to 3 (optimizer.rank-R-of-W.safetensors); the rest is the files' contents,
 * separated by FUZZ_SEPARATOR. Every entry of a set that opens is read back, whole and in
 * pieces. */
#include "checkpoint_shards.h"
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read every entry's tensor/state through the set, as a resume does for its spans. */
static void read_all(const loom_shard_set *set, const char *file)
{
    loom_safetensors *st = NULL;
    if (loom_safetensors_open(file, &st) != LOOM_OK) return;
    for (size_t i = 0; i < loom_safetensors_count(st); i++) {
        loom_st_tensor t;
        if (loom_safetensors_tensor(st, i, &t) != LOOM_OK) abort();
        char name[256];
        snprintf(name, sizeof name, "%s", t.name);
        char *at = strchr(name, '@');
        if (at) *at = 0;
        char *dot = strrchr(name, '.');
        if (!dot) continue;
        *dot = 0;
        float buf[64];
        for (int64_t off = 0; off < 3; off++)
            for (int64_t numel = 0; numel <= 64; numel += 21)
                (void)loom_shard_set_read(set, name, dot + 1, off, numel, buf);
        (void)loom_shard_set_has_state(set, dot + 1);
    }
    loom_safetensors_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int world = data[0] % 4; /* 0: optimizer.safetensors */
    fuzz_part parts[3];
    size_t n = fuzz_split(data + 1, size - 1, parts, world ? (size_t)world : 1);
    char dir[256], path[400], name[64];
    fuzz_fresh_dir("checkpoint", dir, sizeof dir);
    for (size_t i = 0; i < n; i++) {
        if (world) snprintf(name, sizeof name, "optimizer.rank-%zu-of-%d.safetensors", i, world);
        else snprintf(name, sizeof name, "optimizer.safetensors");
        fuzz_write(dir, name, parts[i].data, parts[i].size, path, sizeof path);
    }
    loom_shard_set *set = NULL;
    if (loom_shard_set_open(dir, &set) == LOOM_OK) {
        (void)loom_shard_set_optimizer(set);
        if (loom_shard_set_world(set) < 1) abort();
        for (size_t i = 0; i < n; i++) {
            if (world) snprintf(name, sizeof name, "optimizer.rank-%zu-of-%d.safetensors", i, world);
            else snprintf(name, sizeof name, "optimizer.safetensors");
            snprintf(path, sizeof path, "%s/%s", dir, name);
            read_all(set, path);
        }
        loom_shard_set_close(set);
    }
    loom_error_clear();
    return 0;
}
