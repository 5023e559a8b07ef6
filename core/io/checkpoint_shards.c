/*
 * checkpoint_shards.c - gathering optimizer states from the files of any cut (see the header).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_shards.h"
#include "error.h"
#include "fileutil.h"
#include "safetensors.h"

typedef struct shard_entry {
    char *tensor, *state;
    int64_t offset, numel;
    const char *data;      /* f32, possibly unaligned: read with memcpy */
} shard_entry;

struct loom_shard_set {
    loom_safetensors **files;
    int n_files;           /* = world */
    shard_entry *entries;
    size_t n_entries;
};

static loom_status parse_entries(loom_shard_set *s, loom_safetensors *file)
{
    size_t count = loom_safetensors_count(file);
    shard_entry *grown = realloc(s->entries, (s->n_entries + count + 1) * sizeof *grown);
    if (!grown) return loom_error(LOOM_E_NOMEM, "out of memory");
    s->entries = grown;
    for (size_t i = 0; i < count; i++) {
        loom_st_tensor t;
        loom_status st = loom_safetensors_tensor(file, i, &t);
        if (st != LOOM_OK) return st;
        /* "<tensor>.<state>[@offset]": tensor names have dots, state names have none. */
        const char *at = strchr(t.name, '@');
        size_t head = at ? (size_t)(at - t.name) : strlen(t.name);
        const char *dot = NULL;
        for (const char *p = t.name; p < t.name + head; p++)
            if (*p == '.') dot = p;
        char *end = NULL;
        long long offset = 0;
        if (at) {
            errno = 0;
            offset = strtoll(at + 1, &end, 10);
        }
        if (!dot || dot == t.name || dot + 1 == t.name + head ||
            (at && (errno || *end || offset < 0 || end == at + 1)) || t.dtype != LOOM_DTYPE_F32 || t.ndim != 1)
            return loom_error(LOOM_E_FORMAT, "%s: entry '%s' is not an f32 vector named <tensor>.<state>[@offset]",
                              loom_safetensors_path(file), t.name);
        shard_entry *e = &s->entries[s->n_entries];
        e->tensor = strndup(t.name, (size_t)(dot - t.name));
        e->state = strndup(dot + 1, (size_t)(t.name + head - dot - 1));
        if (!e->tensor || !e->state) {
            free(e->tensor);
            free(e->state);
            return loom_error(LOOM_E_NOMEM, "out of memory");
        }
        e->offset = offset;
        e->numel = t.shape[0];
        if (e->numel > INT64_MAX - e->offset) { /* its elements' indices must fit an int64 */
            loom_status bad = loom_error(LOOM_E_FORMAT, "%s: entry '%s' ends past the largest index",
                                         loom_safetensors_path(file), t.name);
            free(e->tensor);
            free(e->state);
            return bad;
        }
        e->data = t.data;
        s->n_entries++;
    }
    return LOOM_OK;
}

static int compare_entries(const void *pa, const void *pb)
{
    const shard_entry *a = pa, *b = pb;
    int c = strcmp(a->tensor, b->tensor);
    if (!c) c = strcmp(a->state, b->state);
    if (!c) c = (a->offset > b->offset) - (a->offset < b->offset);
    return c;
}

/* Every element has one owner when written, and loom_shard_set_read counts elements to know
 * that all were found: two pieces of one state that overlap (a damaged or forged file) would
 * let a gap pass for found. */
static loom_status check_overlaps(loom_shard_set *s, const char *dir)
{
    qsort(s->entries, s->n_entries, sizeof *s->entries, compare_entries);
    for (size_t i = 1; i < s->n_entries; i++) {
        const shard_entry *a = &s->entries[i - 1], *b = &s->entries[i];
        if (!strcmp(a->tensor, b->tensor) && !strcmp(a->state, b->state) && a->offset + a->numel > b->offset)
            return loom_error(LOOM_E_FORMAT,
                              "%s: optimizer state '%s.%s' has overlapping pieces at elements %lld and %lld", dir,
                              a->tensor, a->state, (long long)a->offset, (long long)b->offset);
    }
    return LOOM_OK;
}

int loom_shard_file_rank(const char *name, int *rank, int *world)
{
    int consumed = 0;
    if (sscanf(name, "optimizer.rank-%d-of-%d.safetensors%n", rank, world, &consumed) != 2) return 0;
    return name[consumed] == '\0' && *world > 0 && *rank >= 0 && *rank < *world;
}

static loom_status open_one(loom_shard_set *s, const char *dir, const char *name, int index)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st == LOOM_OK) st = loom_safetensors_open(path, &s->files[index]);
    if (st == LOOM_OK) st = parse_entries(s, s->files[index]);
    return st;
}

static loom_status open_set(const char *dir, int partial, loom_shard_set **out)
{
    *out = NULL;
    loom_shard_set *s = calloc(1, sizeof *s);
    if (!s) return loom_error(LOOM_E_NOMEM, "out of memory");
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, "optimizer.safetensors");
    FILE *probe = st == LOOM_OK ? fopen(path, "rb") : NULL;
    if (probe) {
        fclose(probe);
        s->n_files = 1;
        s->files = calloc(1, sizeof *s->files);
        st = s->files ? open_one(s, dir, "optimizer.safetensors", 0) : loom_error(LOOM_E_NOMEM, "out of memory");
    } else if (st == LOOM_OK) {
        DIR *d = opendir(dir);
        if (!d) st = loom_error(LOOM_E_IO, "%s: cannot list: %s", dir, strerror(errno));
        struct dirent *e;
        int world = 0;
        while (st == LOOM_OK && (e = readdir(d)) != NULL) {
            int r, w;
            if (!loom_shard_file_rank(e->d_name, &r, &w)) continue;
            if (world == 0) {
                world = w;
                s->files = calloc((size_t)w, sizeof *s->files);
                if (!s->files) st = loom_error(LOOM_E_NOMEM, "out of memory");
                s->n_files = w;
            } else if (w != world) {
                st = loom_error(LOOM_E_FORMAT, "%s: optimizer state files of world sizes %d and %d", dir, world, w);
            }
            if (st == LOOM_OK && !s->files[r]) st = open_one(s, dir, e->d_name, r);
        }
        if (d) closedir(d);
        if (st == LOOM_OK && world == 0)
            st =
                loom_error(LOOM_E_NOT_FOUND,
                           "%s: no optimizer states (optimizer.safetensors or optimizer.rank-R-of-W.safetensors)", dir);
        /* A checkpoint each node saved on its own disk holds its node's shards only: joining all
         * of them needs every node's files in one folder. */
        for (int r = 0; st == LOOM_OK && !partial && r < s->n_files; r++)
            if (!s->files[r])
                st = loom_error(LOOM_E_FORMAT,
                                "%s: optimizer.rank-%d-of-%d.safetensors is missing (a --save_on_each_node "
                                "checkpoint on nodes without a shared filesystem holds only its node's shards: copy "
                                "every node's optimizer.rank-*-of-%d.safetensors into one folder first)",
                                dir, r, s->n_files, s->n_files);
    }
    if (st == LOOM_OK) st = check_overlaps(s, dir);
    if (st != LOOM_OK) {
        loom_shard_set_close(s);
        return st;
    }
    *out = s;
    return LOOM_OK;
}

loom_status loom_shard_set_open(const char *dir, loom_shard_set **out)
{
    return open_set(dir, 0, out);
}

loom_status loom_shard_set_open_partial(const char *dir, loom_shard_set **out)
{
    return open_set(dir, 1, out);
}

int loom_shard_set_missing(const loom_shard_set *s, int *first)
{
    int n = 0;
    for (int r = s->n_files; r-- > 0;)
        if (!s->files[r]) n++, *first = r;
    return n;
}

void loom_shard_set_close(loom_shard_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_entries; i++) {
        free(s->entries[i].tensor);
        free(s->entries[i].state);
    }
    free(s->entries);
    for (int i = 0; i < s->n_files; i++) loom_safetensors_close(s->files[i]);
    free(s->files);
    free(s);
}

const char *loom_shard_set_optimizer(const loom_shard_set *s)
{
    const char *name = NULL;
    for (int i = 0; i < s->n_files && !name; i++) /* a partial set may lack rank 0's file */
        if (s->files[i]) name = loom_safetensors_metadata(s->files[i], "optimizer");
    return name ? name : "";
}

int loom_shard_set_world(const loom_shard_set *s) { return s->n_files; }

int loom_shard_set_has_state(const loom_shard_set *s, const char *state)
{
    for (size_t i = 0; i < s->n_entries; i++)
        if (strcmp(s->entries[i].state, state) == 0) return 1;
    return 0;
}

loom_status loom_shard_set_read(const loom_shard_set *s, const char *tensor, const char *state, int64_t offset,
                                int64_t numel, float *dst)
{
    int64_t covered = 0;
    for (size_t i = 0; i < s->n_entries; i++) {
        const shard_entry *e = &s->entries[i];
        if (strcmp(e->tensor, tensor) != 0 || strcmp(e->state, state) != 0) continue;
        int64_t begin = e->offset > offset ? e->offset : offset;
        int64_t end = e->offset + e->numel < offset + numel ? e->offset + e->numel : offset + numel;
        if (begin >= end) continue;
        memcpy(dst + (begin - offset), e->data + (size_t)(begin - e->offset) * sizeof(float),
               (size_t)(end - begin) * sizeof(float));
        covered += end - begin;
    }
    /* Pieces never overlap (each element has one owner when written), so a full count means
     * every element was found. */
    if (covered != numel)
        return loom_error(LOOM_E_FORMAT,
                          "optimizer state '%s.%s' elements [%lld, %lld): %lld of %lld found in the checkpoint", tensor,
                          state, (long long)offset, (long long)(offset + numel), (long long)covered, (long long)numel);
    return LOOM_OK;
}
