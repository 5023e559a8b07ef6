/* test_checkpoint_files.c - checkpoint folders (core/io/checkpoint_dir.c) and optimizer state
 * shards of any cut (core/io/checkpoint_shards.c), on files written here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_dir.h"
#include "checkpoint_shards.h"
#include "error.h"
#include "fileutil.h"
#include "safetensors.h"
#include "../test_util.h"

static char root[256];

static void path_of(char *out, const char *a, const char *b)
{
    CHECK(loom_path_join(out, 4096, a, b) == LOOM_OK);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[4096];
    path_of(p, dir, name);
    CHECK(loom_write_file_atomic(p, text, strlen(text)) == LOOM_OK);
}

static int exists(const char *dir, const char *name)
{
    char p[4096];
    struct stat sb;
    path_of(p, dir, name);
    return stat(p, &sb) == 0;
}

/* A vector entry "name" of n floats starting at value first. */
static loom_st_tensor vec(const char *name, float *buf, int64_t n, float first)
{
    for (int64_t i = 0; i < n; i++)
        buf[i] = first + (float)i;
    loom_st_tensor t = {.name = name, .dtype = LOOM_DTYPE_F32, .ndim = 1, .data = buf, .nbytes = (uint64_t)n * 4};
    t.shape[0] = n;
    return t;
}

static void test_shards(void)
{
    char dir[4096], p[4096];
    path_of(dir, root, "shards");
    CHECK(loom_mkdir_p(dir) == LOOM_OK);
    /* Tensor "h.0.w" (10 elements) cut 4 + 6 over two ranks; "b" (3) whole on rank 1. The values
     * are the element's index in its tensor (+100 for exp_avg_sq), so any gather is checkable. */
    float a[4], b[6], c[3], d[4], e[6], f[3];
    loom_st_tensor rank0[] = {vec("h.0.w.exp_avg@0", a, 4, 0), vec("h.0.w.exp_avg_sq@0", d, 4, 100)};
    loom_st_tensor rank1[] = {vec("h.0.w.exp_avg@4", b, 6, 4), vec("h.0.w.exp_avg_sq@4", e, 6, 104),
                              vec("b.exp_avg", c, 3, 0), vec("b.exp_avg_sq", f, 3, 100)};
    const char *meta[] = {"optimizer", "adamw"};
    path_of(p, dir, "optimizer.rank-0-of-2.safetensors");
    CHECK(loom_safetensors_write(p, rank0, 2, meta, 1) == LOOM_OK);
    path_of(p, dir, "optimizer.rank-1-of-2.safetensors");
    CHECK(loom_safetensors_write(p, rank1, 4, meta, 1) == LOOM_OK);

    loom_shard_set *s = NULL;
    CHECK(loom_shard_set_open(dir, &s) == LOOM_OK);
    if (!s) return;
    CHECK(strcmp(loom_shard_set_optimizer(s), "adamw") == 0);
    CHECK(loom_shard_set_world(s) == 2);
    int none = -1;
    CHECK(loom_shard_set_missing(s, &none) == 0 && none == -1);
    CHECK(!loom_shard_set_has_state(s, "fp32_master"));
    /* Re-cut as 1, 3 and 4 ranks would: every range reads back the element indices. */
    const int64_t cuts[][2] = {{0, 10}, {0, 3}, {3, 4}, {7, 3}, {2, 3}, {5, 5}};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        float out[10];
        memset(out, 0xff, sizeof out);
        CHECK(loom_shard_set_read(s, "h.0.w", "exp_avg", cuts[k][0], cuts[k][1], out) == LOOM_OK);
        for (int64_t i = 0; i < cuts[k][1]; i++)
            CHECK(out[i] == (float)(cuts[k][0] + i));
        CHECK(loom_shard_set_read(s, "h.0.w", "exp_avg_sq", cuts[k][0], cuts[k][1], out) == LOOM_OK);
        for (int64_t i = 0; i < cuts[k][1]; i++)
            CHECK(out[i] == (float)(100 + cuts[k][0] + i));
    }
    float out[10];
    CHECK(loom_shard_set_read(s, "b", "exp_avg", 0, 3, out) == LOOM_OK && out[2] == 2.0f);
    /* Past the end, an unknown state or tensor: named. */
    CHECK(loom_shard_set_read(s, "b", "exp_avg", 1, 3, out) == LOOM_E_FORMAT);
    CHECK(strstr(loom_error_message(), "b.exp_avg") != NULL);
    CHECK(loom_shard_set_read(s, "h.0.w", "momentum", 0, 10, out) == LOOM_E_FORMAT);
    CHECK(loom_shard_set_read(s, "h.1.w", "exp_avg", 0, 1, out) == LOOM_E_FORMAT);
    loom_shard_set_close(s);

    /* A rank's file missing: the set is refused, naming it. */
    path_of(p, dir, "optimizer.rank-0-of-2.safetensors");
    CHECK(unlink(p) == 0);
    s = NULL;
    CHECK(loom_shard_set_open(dir, &s) == LOOM_E_FORMAT && !s);
    CHECK(strstr(loom_error_message(), "optimizer.rank-0-of-2.safetensors is missing") != NULL);
    /* One node's --save_on_each_node folder (rank 1's shard only): opened, rank 1's own elements
     * read back, rank 0's are not found, and the set says which file it lacks. */
    CHECK(loom_shard_set_open_partial(dir, &s) == LOOM_OK && s);
    if (s) {
        int first = -1;
        CHECK(loom_shard_set_missing(s, &first) == 1 && first == 0);
        CHECK(strcmp(loom_shard_set_optimizer(s), "adamw") == 0 && loom_shard_set_world(s) == 2);
        CHECK(loom_shard_set_read(s, "h.0.w", "exp_avg", 4, 6, out) == LOOM_OK && out[0] == 4.0f && out[5] == 9.0f);
        CHECK(loom_shard_set_read(s, "h.0.w", "exp_avg", 0, 10, out) == LOOM_E_FORMAT);
        CHECK(strstr(loom_error_message(), "6 of 10 found") != NULL);
        loom_shard_set_close(s);
        s = NULL;
    }
    /* A name that is not <tensor>.<state>[@offset]. */
    loom_st_tensor bad[] = {vec("nodot", a, 4, 0)};
    CHECK(loom_safetensors_write(p, bad, 1, meta, 1) == LOOM_OK);
    CHECK(loom_shard_set_open(dir, &s) == LOOM_E_FORMAT && !s);
    CHECK(strstr(loom_error_message(), "nodot") != NULL);
    /* Pieces that overlap would let a gap count as found; an offset whose end overflows an
     * int64 (found by fuzz_optimizer_shards) is refused before any read adds to it. */
    loom_st_tensor overlap[] = {vec("w.m@0", a, 4, 0), vec("w.m@2", a, 4, 0)};
    CHECK(loom_safetensors_write(p, overlap, 2, meta, 1) == LOOM_OK);
    CHECK(loom_shard_set_open(dir, &s) == LOOM_E_FORMAT && !s);
    CHECK(strstr(loom_error_message(), "overlapping pieces") != NULL);
    loom_st_tensor far[] = {vec("w.m@9223372036854775807", a, 4, 0)};
    CHECK(loom_safetensors_write(p, far, 1, meta, 1) == LOOM_OK);
    CHECK(loom_shard_set_open(dir, &s) == LOOM_E_FORMAT && !s);
    CHECK(strstr(loom_error_message(), "past the largest index") != NULL);
}

static void test_manifest(void)
{
    char dir[4096], p[4096];
    path_of(dir, root, "checkpoint-5");
    CHECK(loom_mkdir_p(dir) == LOOM_OK);
    write_text(dir, "a.json", "{\"x\": 1}\n");
    write_text(dir, "b.bin", "0123456789");
    CHECK(loom_checkpoint_verify(dir) == LOOM_E_NOT_FOUND); /* not sealed yet */
    CHECK(strstr(loom_error_message(), "incomplete checkpoint") != NULL);
    CHECK(loom_checkpoint_write_manifest(dir) == LOOM_OK);
    CHECK(loom_checkpoint_verify(dir) == LOOM_OK);
    /* The manifest holds the SHA-256 a separate tool computes: "0123456789". */
    char *text = NULL;
    size_t len = 0;
    path_of(p, dir, LOOM_CHECKPOINT_MANIFEST);
    CHECK(loom_read_file(p, &text, &len) == LOOM_OK);
    CHECK(text && strstr(text, "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882") != NULL);
    free(text);
    write_text(dir, "b.bin", "0123456780"); /* same size, altered */
    CHECK(loom_checkpoint_verify(dir) == LOOM_E_FORMAT);
    CHECK(strstr(loom_error_message(), "b.bin") && strstr(loom_error_message(), "altered"));
    write_text(dir, "b.bin", "012345678"); /* truncated */
    CHECK(loom_checkpoint_verify(dir) == LOOM_E_FORMAT);
    CHECK(strstr(loom_error_message(), "b.bin") && strstr(loom_error_message(), "truncated"));
    path_of(p, dir, "a.json");
    CHECK(unlink(p) == 0);
    CHECK(loom_checkpoint_verify(dir) == LOOM_E_FORMAT);
    CHECK(strstr(loom_error_message(), "a.json") && strstr(loom_error_message(), "missing"));
}

static void test_install_and_leftovers(void)
{
    char out[4096], final_dir[4096], tmp[4096], latest[4096];
    path_of(out, root, "run");
    path_of(final_dir, out, "checkpoint-2");
    path_of(tmp, out, "checkpoint-2.tmp");
    CHECK(loom_mkdir_p(final_dir) == LOOM_OK && loom_mkdir_p(tmp) == LOOM_OK);
    write_text(final_dir, "old", "1");
    CHECK(loom_checkpoint_write_manifest(final_dir) == LOOM_OK);
    write_text(tmp, "new", "2");
    CHECK(loom_checkpoint_write_manifest(tmp) == LOOM_OK);
    CHECK(loom_checkpoint_install(tmp, final_dir) == LOOM_OK);
    CHECK(exists(final_dir, "new") && !exists(final_dir, "old"));
    CHECK(!exists(out, "checkpoint-2.tmp"));
    /* A newer checkpoint that was never sealed and a leftover .tmp: latest skips the first,
     * the cleanup removes the second. */
    char newer[4096], left[4096];
    path_of(newer, out, "checkpoint-4");
    path_of(left, out, "checkpoint-6.tmp");
    CHECK(loom_mkdir_p(newer) == LOOM_OK && loom_mkdir_p(left) == LOOM_OK);
    write_text(newer, "model", "x");
    CHECK(loom_checkpoint_latest(out, latest, sizeof latest) == LOOM_OK);
    CHECK(strcmp(latest, final_dir) == 0);
    int removed = -1;
    CHECK(loom_checkpoint_remove_leftovers(out, &removed) == LOOM_OK && removed == 1);
    CHECK(!exists(out, "checkpoint-6.tmp") && exists(out, "checkpoint-4") && exists(out, "checkpoint-2"));
    char empty[4096];
    path_of(empty, root, "nothing");
    CHECK(loom_mkdir_p(empty) == LOOM_OK);
    CHECK(loom_checkpoint_latest(empty, latest, sizeof latest) == LOOM_E_NOT_FOUND);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/loom-ckpt-test-%d", (int)getpid());
    test_shards();
    test_manifest();
    test_install_and_leftovers();
    loom_remove_tree(root);
    return test_finish("test_checkpoint_files");
}
