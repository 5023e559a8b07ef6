/*
 * test_trainer_best.c - what load_best_model_at_end leaves behind the parameters
 * (core/trainer/trainer_best.c, docs/checkpoints.md#files-on-one-node): after train() the
 * parameters are the best checkpoint's model.safetensors byte for byte, and the copies the
 * optimizer steps follow them, so that a step after it would start from the best step: the f32
 * master weights of a mixed-precision run are the checkpoint's own fp32_master entries, bit for
 * bit (HF under DeepSpeed restores them from the optimizer files), or, from a model-only
 * checkpoint, which holds none, the parameters widened (checked here against a conversion written
 * out again); ZeRO-Offload's host partition holds the parameters' bytes. No command-line run
 * shows these copies (nothing steps after the last step), so the test reads them.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint_shards.h"
#include "data_tokens.h"
#include "error.h"
#include "fileutil.h"
#include "safetensors.h"
#include "test_util.h"
#include "trainer_internal.h"

static char tmp[256], train_path[300], eval_path[300];

/* Pseudo-random token ids (the tests' own generator: Knuth's MMIX constants) for a tiny GPT-2. */
static void write_ids(const char *path, uint64_t n, uint64_t state)
{
    uint16_t *ids = malloc(n * sizeof *ids);
    if (!ids) exit(1);
    for (uint64_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (uint16_t)((state >> 33) % 128);
    }
    if (loom_tokens_write(path, ids, n) != LOOM_OK) exit(1);
    free(ids);
}

static void make_data(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/loom-best-XXXXXX");
    if (!mkdtemp(tmp)) exit(1);
    snprintf(train_path, sizeof train_path, "%s/train.bin", tmp);
    snprintf(eval_path, sizeof eval_path, "%s/validation.bin", tmp);
    write_ids(train_path, 4000, 23);
    write_ids(eval_path, 1000, 71);
}

/* A 16-bit value as f32, written out again: bf16 is the high half of an f32; f16 by its fields. */
static float widen(uint32_t dtype, const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    if (dtype == LOOM_DTYPE_BF16) {
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    if (dtype == LOOM_DTYPE_F32) {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    float magnitude = exponent == 0    ? ldexpf((float)mantissa, -24)
                      : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                       : ldexpf((float)(mantissa | 1024), exponent - 25);
    return sign ? -magnitude : magnitude;
}

/* Train with the best evaluation at the first step (random tokens: the held-out loss rises as the
 * model learns the training ids), then compare what train() left with the best checkpoint. */
static void check_best(const char *name, const char *const *extra, size_t n_extra, int model_only)
{
    char out[300];
    snprintf(out, sizeof out, "%s/%s", tmp, name);
    const char *base[] = {"--output_dir",
                          out,
                          "--train_file",
                          train_path,
                          "--validation_file",
                          eval_path,
                          "--disable_tqdm",
                          "true",
                          "--evaluation_strategy",
                          "steps",
                          "--eval_steps",
                          "1",
                          "--save_steps",
                          "1",
                          "--max_steps",
                          "4",
                          "--learning_rate",
                          "0.01",
                          "--load_best_model_at_end",
                          "true",
                          "--metric_for_best_model",
                          "loss",
                          "--greater_is_better",
                          "false",
                          "--model",
                          "gpt2",
                          "--gpt2.n_layer",
                          "1",
                          "--gpt2.n_head",
                          "2",
                          "--gpt2.n_embd",
                          "32",
                          "--gpt2.vocab_size",
                          "128",
                          "--gpt2.n_positions",
                          "32",
                          "--block_size",
                          "16",
                          "--per_device_train_batch_size",
                          "4"};
    size_t n_base = sizeof base / sizeof *base;
    char *argv[64];
    for (size_t i = 0; i < n_base; i++)
        argv[i] = (char *)base[i];
    for (size_t i = 0; i < n_extra; i++)
        argv[n_base + i] = (char *)extra[i];
    if (model_only) {
        argv[n_base + n_extra++] = "--save_only_model";
        argv[n_base + n_extra++] = "true";
    }
    loom_args args;
    loom_args_init(&args);
    loom_trainer *t = NULL;
    loom_status st = loom_args_parse(&args, (int)(n_base + n_extra), argv);
    args.do_train = 1;
    if (st == LOOM_OK)
        st = loom_trainer_create(&args, &t);
    else
        loom_args_free(&args);
    if (st == LOOM_OK) st = loom_trainer_train(t);
    if (st != LOOM_OK) fprintf(stderr, "%s: %s\n", name, loom_error_message());
    CHECK(st == LOOM_OK);
    if (st != LOOM_OK) {
        loom_trainer_destroy(t);
        return;
    }
    /* The best is not the last step, or the check proves nothing. */
    char best[400];
    snprintf(best, sizeof best, "%s/checkpoint-%lld/model.safetensors", out, (long long)t->best_global_step);
    CHECK(t->best_global_step > 0 && t->best_global_step < t->state.global_step);
    loom_safetensors *file = NULL;
    CHECK(loom_safetensors_open(best, &file) == LOOM_OK);
    for (size_t i = 0; file && i < t->n_tensors; i++) {
        loom_st_tensor tensor;
        const size_t at = (size_t)t->tensor_offsets[i] * t->param_size;
        const size_t bytes = (size_t)(t->tensor_offsets[i + 1] - t->tensor_offsets[i]) * t->param_size;
        CHECK(loom_safetensors_find(file, t->tensors[i].name, &tensor) == LOOM_OK);
        CHECK(tensor.nbytes == bytes && memcmp(tensor.data, (const char *)t->params + at, bytes) == 0);
    }
    loom_safetensors_close(file);
    snprintf(best, sizeof best, "%s/checkpoint-%lld", out, (long long)t->best_global_step);
    loom_shard_set *shards = NULL;
    CHECK(model_only || loom_shard_set_open(best, &shards) == LOOM_OK);
    int masters = 0;
    for (size_t r = 0; r < t->n_owned; r++) {
        const int64_t begin = t->owned[r].begin, n = t->owned[r].end - begin;
        const unsigned char *p = (const unsigned char *)t->params + (size_t)begin * t->param_size;
        if (t->offload_params)
            CHECK(memcmp((const char *)t->offload_params + (size_t)t->offload_owned[r].begin * t->param_size, p,
                         (size_t)n * t->param_size) == 0);
        float *master = NULL;
        CHECK(loom_trainer_master_weights(t, r, &master) == LOOM_OK);
        if (!master) continue;
        masters = 1;
        int64_t differ = 0;
        for (int64_t i = 0; i < n && model_only; i++)
            differ +=
                memcmp(&master[i], &(float){widen(t->param_dtype, p + (size_t)i * t->param_size)}, sizeof(float)) != 0;
        for (size_t s = 0; s < t->n_spans && !model_only; s++) {
            if (t->span_range[s] != r) continue;
            const loom_span *span = &t->spans[s];
            float *saved = malloc((size_t)span->numel * sizeof *saved);
            CHECK(saved &&
                  loom_shard_set_read(shards, span->name, "fp32_master", span->offset, span->numel, saved) == LOOM_OK);
            for (int64_t i = 0; saved && i < span->numel; i++)
                differ += memcmp(&saved[i], &master[t->span_flat_begin[s] - begin + i], sizeof *saved) != 0;
            free(saved);
        }
        if (differ) fprintf(stderr, "%s: %lld master weights of range %zu differ\n", name, (long long)differ, r);
        CHECK(differ == 0);
    }
    CHECK(masters == (t->has_master != 0));
    if (shards) loom_shard_set_close(shards);
    loom_trainer_destroy(t);
}

int main(void)
{
    make_data();
    /* Model-only checkpoints: the masters are the parameters widened. */
    check_best("fp32", NULL, 0, 1);
    const char *bf16[] = {"--bf16", "true"};
    check_best("bf16", bf16, 2, 1);
    const char *fp16[] = {"--fp16", "true"};
    check_best("fp16", fp16, 2, 1);
    const char *offload[] = {"--bf16", "true", "--plugin", "zero2", "--zero2.cpu_offload", "true"};
    check_best("offload", offload, 6, 1);
    /* Full checkpoints: the masters are the checkpoint's own, which the parameters round. */
    check_best("bf16-full", bf16, 2, 0);
    check_best("fp16-full", fp16, 2, 0);
    check_best("offload-full", offload, 6, 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_trainer_best");
}
