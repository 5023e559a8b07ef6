/* test_token_shards.c - llm.c token shards: the bytes loom_tokens_write produces, the examples
 * and labels loom_token_dataset_open serves across two shards matched by a glob, and one error
 * per kind of bad shard. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_tokens.h"
#include "dataset.h"
#include "error.h"
#include "fileutil.h"
#include "test_util.h"
#include "tokenizer_test_util.h"

/* Token t of shard s: a pattern that uses the whole uint16 range (values >= 32768 catch a
 * sign-extending widening). */
static uint16_t token_at(int s, int64_t t)
{
    return (uint16_t)((uint64_t)(t * 40503 + s * 7919 + 12345) & 0xFFFF);
}

static void write_shard(const char *path, int s, int64_t n)
{
    uint16_t *tok = malloc((size_t)(n ? n : 1) * sizeof *tok);
    for (int64_t t = 0; t < n; t++)
        tok[t] = token_at(s, t);
    CHECK(loom_tokens_write(path, tok, (uint64_t)n) == LOOM_OK);
    free(tok);
}

static void expect_open_error(const char *pattern, int64_t block_size, loom_status code, const char *needle)
{
    loom_dataset *ds = (loom_dataset *)1;
    CHECK(loom_token_dataset_open(pattern, block_size, &ds) == code);
    CHECK(ds == NULL);
    if (!strstr(loom_error_message(), needle))
        fprintf(stderr, "error \"%s\" does not contain \"%s\"\n", loom_error_message(), needle);
    CHECK(strstr(loom_error_message(), needle) != NULL);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    CHECK(loom_write_file_atomic(path, data, len) == LOOM_OK);
}

int main(void)
{
    char dir[2048], a[4096], b[4096], pattern[4096], path[4096];
    if (!tok_make_temp_dir(dir, sizeof dir)) return 1;
    snprintf(a, sizeof a, "%s/shard_000001.bin", dir);
    snprintf(b, sizeof b, "%s/shard_000000.bin", dir); /* sorts first */
    snprintf(pattern, sizeof pattern, "%s/shard_*.bin", dir);

    /* The file is llm.c's: 256 int32 header, then uint16 tokens, little-endian. */
    const int64_t na = 1000, nb = 517, bs = 64;
    write_shard(a, 1, na);
    write_shard(b, 0, nb);
    {
        size_t len = 0;
        unsigned char *raw = (unsigned char *)tok_read(b, &len);
        CHECK(raw && len == 1024 + 2 * (size_t)nb);
        if (raw && len >= 1024 + 4) {
            CHECK(raw[0] == 0x88 && raw[1] == 0xd8 && raw[2] == 0x34 && raw[3] == 0x01); /* 20240520 */
            CHECK(raw[4] == 1 && raw[5] == 0 && raw[6] == 0 && raw[7] == 0);
            CHECK(raw[8] == (nb & 0xFF) && raw[9] == (nb >> 8) && raw[10] == 0 && raw[11] == 0);
            int zero = 1;
            for (int i = 12; i < 1024; i++)
                zero &= raw[i] == 0;
            CHECK(zero);
            CHECK(raw[1024] == (token_at(0, 0) & 0xFF) && raw[1025] == (token_at(0, 0) >> 8));
            CHECK(raw[1026] == (token_at(0, 1) & 0xFF) && raw[1027] == (token_at(0, 1) >> 8));
        }
        free(raw);
    }

    /* Two shards by glob: (517 - 1) / 64 = 8 examples of shard 0, then (1000 - 1) / 64 = 15. */
    loom_dataset *ds = NULL;
    CHECK(loom_token_dataset_open(pattern, bs, &ds) == LOOM_OK);
    if (!ds) {
        fprintf(stderr, "open failed: %s\n", loom_error_message());
        return test_finish("test_token_shards");
    }
    const int64_t ea = (na - 1) / bs, eb = (nb - 1) / bs;
    CHECK(ds->n_examples == ea + eb);
    CHECK(ds->input_dtype == LOOM_DTYPE_I32);
    CHECK(ds->input_ndim == 1 && ds->input_shape[0] == bs);
    CHECK(ds->labels_per_example == bs);
    CHECK(ds->n_classes == 0 && ds->n_features == 0);
    int64_t n_shards = 0;
    CHECK(loom_token_dataset_tokens(ds, &n_shards) == na + nb && n_shards == 2);

    const int64_t n = ds->n_examples;
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    int32_t *x = malloc((size_t)(n * bs) * sizeof *x), *y = malloc((size_t)(n * bs) * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        idx[i] = n - 1 - i; /* any order */
    int64_t targets = -1;
    CHECK(ds->fill(ds, idx, n, x, y, &targets) == LOOM_OK);
    CHECK(targets == n * bs);
    /* Example e of shard s is tokens [e*bs, e*bs + bs], labels shifted by one; every token of
     * a shard after the first, up to the last whole block, is a target exactly once. */
    int exact = 1, shifted = 1;
    unsigned char *seen_a = calloc((size_t)na, 1), *seen_b = calloc((size_t)nb, 1);
    for (int64_t k = 0; k < n; k++) {
        const int64_t g = idx[k];
        const int s = g < eb ? 0 : 1;
        const int64_t e = s == 0 ? g : g - eb;
        unsigned char *seen = s == 0 ? seen_b : seen_a;
        for (int64_t i = 0; i < bs; i++) {
            const int64_t t = e * bs + i;
            exact &= x[k * bs + i] == (int32_t)token_at(s, t) && y[k * bs + i] == (int32_t)token_at(s, t + 1);
            if (i + 1 < bs) shifted &= y[k * bs + i] == x[k * bs + i + 1];
            seen[t + 1]++;
        }
    }
    CHECK(exact);
    CHECK(shifted);
    int once = 1;
    for (int64_t t = 0; t < nb; t++)
        once &= seen_b[t] == (t >= 1 && t <= eb * bs);
    for (int64_t t = 0; t < na; t++)
        once &= seen_a[t] == (t >= 1 && t <= ea * bs);
    CHECK(once);
    free(seen_a);
    free(seen_b);
    /* A value >= 32768 came through unsigned. */
    int big = 0;
    for (int64_t i = 0; i < n * bs; i++)
        big |= x[i] >= 32768;
    CHECK(big);
    /* Out of range index. */
    int64_t bad = n;
    CHECK(ds->fill(ds, &bad, 1, x, y, &targets) == LOOM_E_INVALID);
    free(idx);
    free(x);
    free(y);

    /* Through the data loader, as the trainer reads it. */
    {
        loom_dataloader dl;
        CHECK(loom_dataloader_init(&dl, ds, 4, 1, 0, 7) == LOOM_OK);
        loom_batch_buffer buf;
        CHECK(loom_batch_buffer_init(&buf, ds, 4) == LOOM_OK);
        CHECK(loom_dataloader_set_epoch(&dl, 0) == LOOM_OK);
        CHECK(loom_dataloader_load(&dl, 0, &buf) == LOOM_OK);
        CHECK(buf.batch.inputs.dtype == LOOM_DTYPE_I32);
        const int32_t *bx = buf.inputs;
        int ok = 1;
        for (int64_t i = 0; i + 1 < bs; i++)
            ok &= buf.labels[i] == bx[i + 1];
        CHECK(ok);
        loom_batch_buffer_free(&buf);
        loom_dataloader_free(&dl);
    }
    ds->destroy(ds);

    /* One file by name. */
    CHECK(loom_token_dataset_open(a, bs, &ds) == LOOM_OK);
    CHECK(ds && ds->n_examples == ea);
    if (ds) ds->destroy(ds);
    /* block_size = n - 1 gives one example; n gives none. */
    CHECK(loom_token_dataset_open(b, nb - 1, &ds) == LOOM_OK);
    CHECK(ds && ds->n_examples == 1);
    if (ds) ds->destroy(ds);
    expect_open_error(b, nb, LOOM_E_FORMAT, "no shard holds block_size + 1 = 518 tokens");
    expect_open_error(b, 0, LOOM_E_INVALID, "block_size must be");

    /* Errors. */
    snprintf(path, sizeof path, "%s/nothing_*.bin", dir);
    expect_open_error(path, bs, LOOM_E_NOT_FOUND, path);
    CHECK(strstr(loom_error_message(), "no file matches") != NULL);
    snprintf(path, sizeof path, "%s/missing.bin", dir);
    expect_open_error(path, bs, LOOM_E_NOT_FOUND, "missing.bin: no such file");

    size_t len = 0;
    unsigned char *raw = (unsigned char *)tok_read(a, &len);
    snprintf(path, sizeof path, "%s/bad.bin", dir);
    if (raw) {
        write_bytes(path, raw, len - 3); /* truncated mid-token */
        expect_open_error(path, bs, LOOM_E_FORMAT, "bad.bin: truncated: header says 1000 tokens, file holds 998");
        write_bytes(path, raw, 1024 + 2 * 10);
        expect_open_error(path, bs, LOOM_E_FORMAT, "truncated: header says 1000 tokens, file holds 10");
        write_bytes(path, raw, 600);
        expect_open_error(path, bs, LOOM_E_FORMAT, "truncated: 600 bytes, shorter than the 1024-byte header");
        unsigned char *more = malloc(len + 2);
        memcpy(more, raw, len);
        more[len] = more[len + 1] = 0;
        write_bytes(path, more, len + 2);
        expect_open_error(path, bs, LOOM_E_FORMAT, "header says 1000 tokens, file holds 1001 (trailing data)");
        free(more);
        raw[0] ^= 1;
        write_bytes(path, raw, len);
        expect_open_error(path, bs, LOOM_E_FORMAT, "bad.bin: not an llm.c token shard (bad magic)");
        raw[0] ^= 1;
        raw[4] = 2;
        write_bytes(path, raw, len);
        expect_open_error(path, bs, LOOM_E_FORMAT, "unsupported llm.c shard version 2");
        free(raw);
    }
    write_bytes(path, "LOOMCLS1", 8);
    expect_open_error(path, bs, LOOM_E_FORMAT, "not an llm.c token shard (bad magic)");
    write_bytes(path, "", 0);
    expect_open_error(path, bs, LOOM_E_FORMAT, "bad.bin: empty file");
    write_shard(path, 0, 0);
    expect_open_error(path, bs, LOOM_E_FORMAT, "bad.bin: empty shard (0 tokens)");
    /* A bad shard among good ones fails the whole pattern, naming the bad file. */
    snprintf(path, sizeof path, "%s/shard_000002.bin", dir);
    write_bytes(path, "garbage!", 8);
    expect_open_error(pattern, bs, LOOM_E_FORMAT, "shard_000002.bin: not an llm.c token shard");

    loom_remove_tree(dir);
    return test_finish("test_token_shards");
}
