/*
 * t5_generate.c - decoding speed of the t5 plugin's generation path (ABI 1.4: the encoder once,
 * the decoder over its key/value cache, beams reordered) through the trainer's beam search,
 * greedy and with beams, on a T5-small-shaped model with random weights (docs/benchmarks.md).
 *
 *   bench_t5_generate [--B 16] [--S 64] [--max_length 33] [--beams 1,4] [--threads 2]
 *                     [--reps 2] [--layers 6] [--d_model 512]
 *
 * Random sources of S tokens; generation runs to max_length (the eos of a random model is
 * rare, and rows that end early still count their steps: the batch runs until its last row
 * ends). Prints one JSON line per beam count: the best of `reps` runs, as generated tokens per
 * second (B x the longest generated row / seconds: the positions the batch produced), with the
 * process's CPU seconds beside the wall-clock ones (on a loaded machine the wall clock mostly
 * measures the other jobs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "beam_search.h"
#include "error.h"
#include "trainer.h"

#include "bench_clock.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *arg(int argc, char **argv, const char *name, const char *fallback)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return fallback;
}

int main(int argc, char **argv)
{
    const int64_t B = atoll(arg(argc, argv, "--B", "16")), S = atoll(arg(argc, argv, "--S", "64"));
    const int64_t max_length = atoll(arg(argc, argv, "--max_length", "33"));
    const int reps = atoi(arg(argc, argv, "--reps", "2"));
    const char *beams_list = arg(argc, argv, "--beams", "1,4"), *threads = arg(argc, argv, "--threads", "2");
    const char *layers = arg(argc, argv, "--layers", "6"), *d_model = arg(argc, argv, "--d_model", "512");
    char dir[] = "/tmp/loom-bench-t5gen-XXXXXX";
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    /* A pair file only sizes the binding: B rows, S source and S target tokens. */
    char data[4096], out_dir[4096], batch_size[32], vocab[32] = "32128";
    snprintf(data, sizeof data, "%s/pairs.jsonl", dir);
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    snprintf(batch_size, sizeof batch_size, "%lld", (long long)B);
    FILE *f = fopen(data, "w");
    if (!f) return perror(data), 1;
    uint64_t rng = 12345;
    int32_t *inputs = malloc((size_t)(B * S) * sizeof *inputs);
    for (int64_t b = 0; b < B; b++) {
        fputs("{\"input_ids\": [", f);
        for (int64_t s = 0; s < S; s++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            inputs[b * S + s] = s == S - 1 ? 1 : (int32_t)(2 + (rng >> 33) % 32000);
            fprintf(f, s ? ", %d" : "%d", inputs[b * S + s]);
        }
        fputs("], \"labels\": [", f);
        for (int64_t s = 0; s < S; s++)
            fprintf(f, s ? ", %d" : "%d", 5);
        fputs("]}\n", f);
    }
    fclose(f);
    char *args_v[] = {"--model",
                      "t5",
                      "--validation_file",
                      data,
                      "--output_dir",
                      out_dir,
                      "--per_device_eval_batch_size",
                      batch_size,
                      "--num_threads",
                      (char *)threads,
                      "--num_layers",
                      (char *)layers,
                      "--d_model",
                      (char *)d_model,
                      "--vocab_size",
                      vocab,
                      "--dropout_rate",
                      "0.0",
                      "--disable_tqdm",
                      "true"};
    loom_args args;
    loom_args_init(&args);
    loom_trainer *t = NULL;
    loom_status st = loom_args_parse(&args, (int)(sizeof args_v / sizeof *args_v), args_v);
    if (st == LOOM_OK) st = loom_trainer_create(&args, &t);
    if (st == LOOM_OK) st = loom_trainer_prepare(t);
    if (st != LOOM_OK) {
        fprintf(stderr, "bench_t5_generate: %s\n", loom_error_message());
        return 1;
    }
    loom_batch batch = {LOOM_HEADER_INIT(loom_batch)};
    batch.inputs = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
    batch.inputs.data = inputs;
    batch.inputs.dtype = LOOM_DTYPE_I32;
    batch.inputs.ndim = 2;
    batch.inputs.shape[0] = B, batch.inputs.shape[1] = S;
    batch.batch_size = B;
    int32_t *out = malloc((size_t)(B * max_length) * sizeof *out);
    int64_t *lengths = malloc((size_t)B * sizeof *lengths);
    for (const char *p = beams_list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        const int64_t beams = atoll(p);
        loom_beam_config c = {.num_beams = beams, .max_length = max_length, .length_penalty = 1.0};
        double best = 1e30, best_cpu = 1e30;
        int64_t longest = 0;
        for (int r = 0; r < reps; r++) {
            const double t0 = bench_now(), c0 = cpu_now();
            if ((st = loom_trainer_generate_batch(t, &batch, &c, out, lengths)) != LOOM_OK) {
                fprintf(stderr, "bench_t5_generate: %s\n", loom_error_message());
                return 1;
            }
            const double dt = bench_now() - t0, dc = cpu_now() - c0;
            if (dt < best) best = dt;
            if (dc < best_cpu) best_cpu = dc;
            longest = 0;
            for (int64_t b = 0; b < B; b++)
                if (lengths[b] > longest) longest = lengths[b];
        }
        printf("{\"bench\": \"t5_generate\", \"layers\": %s, \"d_model\": %s, \"B\": %lld, \"S\": %lld, "
               "\"num_beams\": %lld, \"max_length\": %lld, \"threads\": %s, \"seconds\": %.4f, "
               "\"cpu_seconds\": %.4f, \"longest\": %lld, \"tokens_per_s\": %.1f}\n",
               layers, d_model, (long long)B, (long long)S, (long long)beams, (long long)max_length, threads, best,
               best_cpu, (long long)longest, (double)(B * longest) / best);
        fflush(stdout);
    }
    free(out), free(lengths), free(inputs);
    loom_trainer_destroy(t);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
