/* test_tokenize_command.c - `loom tokenize` as a user runs it: Moby Dick into train.bin and
 * validation.bin (the last fraction of the tokens, <|endoftext|> appended), --print and
 * --decode, and the argument errors. Needs scripts/fetch-data.sh (exit 77 without it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "data_tokens.h"
#include "error.h"
#include "test_util.h"
#include "tokenizer_bpe.h"
#include "tokenizer_test_util.h"

static char loom_bin[4096];

/* Run `loom ARGS` (a shell fragment), capture stdout+stderr into out; return the exit code. */
static int run(const char *args, char *out, size_t size)
{
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", loom_bin, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t k = fread(out, 1, size - 1, p);
    out[k] = '\0';
    const int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The tokens of an llm.c shard (checked by hand, not through the code under test). */
static uint16_t *read_shard(const char *path, size_t *n)
{
    size_t len = 0;
    unsigned char *raw = (unsigned char *)tok_read(path, &len);
    *n = 0;
    if (!raw || len < 1024) return NULL;
    const uint32_t count = raw[8] | raw[9] << 8 | raw[10] << 16 | (uint32_t)raw[11] << 24;
    CHECK(len == 1024 + 2 * (size_t)count);
    uint16_t *t = malloc(((size_t)count + 1) * sizeof *t);
    for (size_t i = 0; i < count; i++)
        t[i] = (uint16_t)(raw[1024 + 2 * i] | raw[1025 + 2 * i] << 8);
    free(raw);
    *n = count;
    return t;
}

int main(void)
{
    char data[2048], dir[2048], args[16384], path[4200];
    if (!tok_find_data(data, sizeof data)) return TOK_SKIP;
    const char *build = getenv("LOOM_BUILD_DIR");
#ifdef LOOM_TEST_BUILD_DIR
    if (!build || !*build) build = LOOM_TEST_BUILD_DIR;
#endif
    snprintf(loom_bin, sizeof loom_bin, "%s/bin/loom", build && *build ? build : ".");
    if (!tok_is_file(loom_bin)) {
        fprintf(stderr, "%s is not built\n", loom_bin);
        return 1;
    }
    if (!tok_make_temp_dir(dir, sizeof dir)) return 1;
    const size_t out_size = 1 << 16;
    char *out = malloc(out_size);

    snprintf(args, sizeof args,
             "tokenize --input '%s/moby-dick.txt' --vocab_dir '%s/gpt2' --output_dir '%s/out' "
             "--validation_fraction 0.1 --append_eot",
             data, data, dir);
    CHECK(run(args, out, out_size) == 0);
    printf("%s", out);
    CHECK(strstr(out, "tokens") && strstr(out, "train.bin") && strstr(out, "validation.bin"));

    /* The shards are the book's encoding + <|endoftext|>, split 90/10 at a token boundary. */
    loom_bpe *bpe = NULL;
    snprintf(path, sizeof path, "%s/gpt2", data);
    CHECK(loom_bpe_load_dir(path, &bpe) == LOOM_OK);
    snprintf(path, sizeof path, "%s/moby-dick.txt", data);
    size_t len = 0, n = 0, n_train = 0, n_val = 0;
    char *book = tok_read(path, &len);
    int32_t *ids = NULL;
    CHECK(bpe && book && loom_bpe_encode(bpe, book, len, &ids, &n) == LOOM_OK);
    snprintf(path, sizeof path, "%s/out/train.bin", dir);
    uint16_t *train = read_shard(path, &n_train);
    snprintf(path, sizeof path, "%s/out/validation.bin", dir);
    uint16_t *val = read_shard(path, &n_val);
    const size_t total = n + 1;
    CHECK(n_train + n_val == total);
    CHECK(n_val == (size_t)(0.1 * (double)total));
    int same = train && val && n_train + n_val == total;
    for (size_t i = 0; same && i < n; i++)
        same = (i < n_train ? train[i] : val[i - n_train]) == ids[i];
    CHECK(same);
    CHECK(val && n_val && val[n_val - 1] == 50256);
    printf("moby-dick.txt: %zu tokens + <|endoftext|>: train %zu, validation %zu\n", n, n_train, n_val);
    free(train);
    free(val);
    free(ids);
    free(book);
    loom_bpe_free(bpe);

    /* The shards open as a dataset. */
    loom_dataset *ds = NULL;
    snprintf(path, sizeof path, "%s/out/*.bin", dir);
    CHECK(loom_token_dataset_open(path, 1024, &ds) == LOOM_OK);
    CHECK(ds && ds->n_examples == (int64_t)((n_train - 1) / 1024 + (n_val - 1) / 1024));
    if (ds) ds->destroy(ds);

    /* --print and --decode. */
    snprintf(args, sizeof args, "tokenize --vocab_dir '%s/gpt2' --print --text 'Hello world'", data);
    CHECK(run(args, out, out_size) == 0);
    CHECK(!strcmp(out, "15496 995\n"));
    snprintf(args, sizeof args, "tokenize --vocab_dir '%s/gpt2' --decode '15496 995 0'", data);
    CHECK(run(args, out, out_size) == 0);
    CHECK(!strcmp(out, "Hello world!\n"));
    snprintf(args, sizeof args, "tokenize --vocab_dir '%s/gpt2' --decode '1 99999'", data);
    CHECK(run(args, out, out_size) == 2);
    CHECK(strstr(out, "loom: error:") && strstr(out, "99999"));

    /* Errors: exit 2 and a message naming what is wrong. */
    snprintf(args, sizeof args, "tokenize --input '%s/none.txt' --vocab_dir '%s/gpt2' --output_dir '%s/o'", dir, data,
             dir);
    CHECK(run(args, out, out_size) == 2);
    CHECK(strstr(out, "none.txt") != NULL);
    snprintf(args, sizeof args, "tokenize --input x --vocab_dir '%s' --output_dir '%s/o'", dir, dir);
    CHECK(run(args, out, out_size) == 2);
    CHECK(strstr(out, "no GPT-2 vocabulary") != NULL);
    snprintf(args, sizeof args, "tokenize --input x --vocab_dir '%s/gpt2' --validation_fraction 1.5", data);
    CHECK(run(args, out, out_size) == 2);
    CHECK(strstr(out, "--validation_fraction") != NULL);
    snprintf(args, sizeof args, "tokenize --input x --vocab_dir '%s/gpt2'", data);
    CHECK(run(args, out, out_size) == 2);
    CHECK(strstr(out, "--output_dir is required") != NULL);

    free(out);
    loom_remove_tree(dir);
    return test_finish("test_tokenize_command");
}
