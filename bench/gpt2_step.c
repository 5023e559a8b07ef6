/*
 * gpt2_step.c - one GPT-2 training step (forward + backward + AdamW) through the real trainer,
 * timed step by step: the loom side of bench/gpt2_step.
 *
 *   bench_gpt2_step --config gpt2|gpt2-mini|gpt2-nano --B 4 --T 64 --threads 2 --warmup 3 --steps 10
 *                   [--precision fp32|bf16|fp16]
 *
 * A step is measured from the start of one step's forward to the start of the next (so it
 * includes backward, clipping off, the AdamW update and loading the batch), over random tokens
 * (a new batch every step), as the PyTorch side does. Prints one JSON line.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data_tokens.h"
#include "error.h"
#include "trainer.h"

#include "bench_clock.h"

typedef struct bench_config {
    const char *name;
    int layers, heads, embd, vocab, positions;
} bench_config;

static const bench_config configs[] = {
    {"gpt2", 12, 12, 768, 50257, 1024},
    {"gpt2-mini", 4, 4, 256, 50257, 256},
    {"gpt2-nano", 2, 2, 64, 512, 64},
};

static double *step_starts;
static int64_t n_starts, max_starts;
static loom_status (*default_training_step)(loom_trainer *, const loom_batch *, float, double *);

static loom_status timed_training_step(loom_trainer *t, const loom_batch *batch, float seed, double *loss_sum)
{
    if (n_starts < max_starts) step_starts[n_starts++] = bench_now();
    return default_training_step(t, batch, seed, loss_sum);
}

int main(int argc, char **argv)
{
    const char *config_name = "gpt2-mini";
    const char *precision = "fp32";
    int B = 8, T = 64, threads = 2, warmup = 3, steps = 10, overlap_report = 0, checkpointing = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) config_name = argv[i + 1];
        else if (!strcmp(argv[i], "--B")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--T")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ddp_overlap_report")) overlap_report = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--precision")) precision = argv[i + 1];
        else if (!strcmp(argv[i], "--gradient_checkpointing"))
            checkpointing = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_gpt2_step: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    const bench_config *cfg = NULL;
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++)
        if (!strcmp(configs[i].name, config_name)) cfg = &configs[i];
    int known_precision = !strcmp(precision, "fp32") || !strcmp(precision, "bf16") || !strcmp(precision, "fp16");
    if (!cfg || B < 1 || T < 1 || T > cfg->positions || steps < 1 || warmup < 0 || !known_precision) {
        fprintf(stderr, "bench_gpt2_step: bad configuration\n");
        return 2;
    }

    /* Random tokens, enough for every step to get a fresh batch. The ranks of a run must name the
     * same file (they check that they train on the same data), so its name is a function of its
     * bytes: each rank writes its own copy and renames it into place, and whichever rename comes
     * last leaves the same bytes. */
    uint64_t n_tokens = (uint64_t)(warmup + steps + 1) * (uint64_t)B * (uint64_t)T + 1;
    char dir[96], shard[256], tmp[300], out[256];
    snprintf(dir, sizeof dir, "/tmp/loom-bench-%u", (unsigned)getuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return 1;
    snprintf(shard, sizeof shard, "%s/random-%d-%llu.bin", dir, cfg->vocab, (unsigned long long)n_tokens);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", shard, (int)getpid());
    snprintf(out, sizeof out, "%s/out-%s", dir, getenv("MASTER_PORT") ? getenv("MASTER_PORT") : "1");
    uint16_t *tokens = malloc(n_tokens * sizeof *tokens);
    uint64_t state = 1234;
    for (uint64_t i = 0; i < n_tokens; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (uint16_t)((state >> 33) % (uint64_t)cfg->vocab);
    }
    loom_status st = loom_tokens_write(tmp, tokens, n_tokens);
    free(tokens);
    if (st == LOOM_OK && rename(tmp, shard) != 0) return 1;

    char text[12][32];
    snprintf(text[0], 32, "%d", cfg->layers);
    snprintf(text[1], 32, "%d", cfg->heads);
    snprintf(text[2], 32, "%d", cfg->embd);
    snprintf(text[3], 32, "%d", cfg->vocab);
    snprintf(text[4], 32, "%d", cfg->positions);
    snprintf(text[5], 32, "%d", T);
    snprintf(text[6], 32, "%d", B);
    snprintf(text[7], 32, "%d", warmup + steps);
    snprintf(text[8], 32, "%d", threads);
    char *args_v[] = {"--output_dir", out, "--overwrite_output_dir", "--model", "gpt2", "--gpt2.n_layer", text[0],
                      "--gpt2.n_head", text[1], "--gpt2.n_embd", text[2], "--gpt2.vocab_size", text[3],
                      "--gpt2.n_positions", text[4], "--train_file", shard, "--block_size", text[5],
                      "--per_device_train_batch_size", text[6], "--per_device_eval_batch_size", text[6],
                      "--max_steps", text[7], "--num_threads", text[8], "--logging_steps", "1000000",
                      "--save_strategy", "no", "--disable_tqdm", "--learning_rate", "1e-4",
                      "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--dataloader_drop_last"};
    int args_c = (int)(sizeof args_v / sizeof *args_v);
    char *with_report[sizeof args_v / sizeof *args_v + 12];
    memcpy(with_report, args_v, sizeof args_v);
    if (overlap_report) {
        with_report[args_c++] = "--ddp.report_overlap";
        with_report[args_c++] = "true";
    }
    if (strcmp(precision, "fp32") != 0) with_report[args_c++] = strcmp(precision, "bf16") == 0 ? "--bf16" : "--fp16";
    if (checkpointing) with_report[args_c++] = "--gradient_checkpointing";
    /* bench/sharding_step picks the strategy through the environment (loom launch passes it). */
    if (getenv("LOOM_BENCH_PLUGIN")) {
        with_report[args_c++] = "--plugin";
        with_report[args_c++] = getenv("LOOM_BENCH_PLUGIN");
    }
    /* bench/sharding_step reads each rank's memory budget, printed at debug level. */
    if (getenv("LOOM_BENCH_LOG_LEVEL")) {
        with_report[args_c++] = "--log_level";
        with_report[args_c++] = getenv("LOOM_BENCH_LOG_LEVEL");
    }
    /* bench/ddp_step sets the DDP bucket size the same way. */
    if (getenv("LOOM_BENCH_BUCKET_MB")) {
        with_report[args_c++] = "--ddp_bucket_cap_mb";
        with_report[args_c++] = getenv("LOOM_BENCH_BUCKET_MB");
    }
    /* ... and ddp's gradients in the communicator's shared memory or not (0: not). */
    if (getenv("LOOM_BENCH_SHARED_GRADIENTS")) {
        with_report[args_c++] = "--ddp.shared_gradients";
        with_report[args_c++] = strcmp(getenv("LOOM_BENCH_SHARED_GRADIENTS"), "0") == 0 ? "false" : "true";
    }
    loom_args args;
    loom_args_init(&args);
    if (st == LOOM_OK) st = loom_args_parse(&args, args_c, with_report);
    args.do_train = 1;
    loom_trainer *t = NULL;
    if (st == LOOM_OK) st = loom_trainer_create(&args, &t);
    max_starts = warmup + steps + 1;
    step_starts = calloc((size_t)max_starts, sizeof *step_starts);
    if (st == LOOM_OK) {
        default_training_step = t->hooks.training_step;
        t->hooks.training_step = timed_training_step;
        st = loom_trainer_train(t);
    }
    double end = bench_now();
    if (st != LOOM_OK) {
        fprintf(stderr, "bench_gpt2_step: error: %s\n", loom_error_message());
        return 1;
    }
    if (n_starts < max_starts) step_starts[n_starts++] = end;
    int64_t measured = n_starts - 1 - warmup;
    double *times = malloc((size_t)(measured > 0 ? measured : 1) * sizeof *times);
    for (int64_t i = 0; i < measured; i++) times[i] = step_starts[warmup + i + 1] - step_starts[warmup + i];
    qsort(times, (size_t)measured, sizeof *times, bench_compare_doubles);
    double median = measured % 2 ? times[measured / 2] : 0.5 * (times[measured / 2 - 1] + times[measured / 2]);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    /* Model FLOPs per token, nanoGPT/llm.c's convention: 6 N (N without wpe) + 12 L C T. */
    double n_params = (double)t->total_numel, n_mm = n_params - (double)cfg->positions * cfg->embd;
    double flops_token = 6 * n_mm + 12.0 * cfg->layers * cfg->embd * T;
    double tokens_step = (double)B * T;
    printf("{\"side\": \"loom\", \"precision\": \"%s\", \"config\": \"%s\", \"n_params\": %.0f, \"B\": %d, \"T\": %d, "
           "\"threads\": %d, "
           "\"steps\": %lld, \"ms_min\": %.2f, \"ms_median\": %.2f, \"ms_max\": %.2f, \"tok_per_s_median\": %.1f, "
           "\"model_gflops_per_s_median\": %.1f, \"peak_rss_mb\": %.1f, \"OPENBLAS_CORETYPE\": \"%s\"}\n",
           precision, cfg->name, n_params, B, T, threads, (long long)measured, 1e3 * times[0], 1e3 * median,
           1e3 * times[measured - 1], tokens_step / median, flops_token * tokens_step / median * 1e-9,
           (double)usage.ru_maxrss / 1024.0, getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "");
    loom_trainer_destroy(t);
    free(times);
    free(step_starts);
    /* The token file stays for the next run of the same shapes (a rank of this run may still
     * read it); the output folder goes. */
    char cleanup[600];
    snprintf(cleanup, sizeof cleanup, "rm -rf '%s'", out);
    if (system(cleanup) != 0) fprintf(stderr, "bench_gpt2_step: could not remove %s\n", out);
    return 0;
}
