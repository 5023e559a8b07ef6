/*
 * attention.c - causal self-attention alone, forward + backward, at one sequence length: loom's
 * tiled (flash) kernels, or its stored-probabilities kernels, for the peer in
 * bench/torch_attention.py. Prints one JSON line.
 *
 *   bench_attention --T 1024 [--B 1 --C 768 --NH 12 --threads 2 --reps 3 --kernel flash|stored]
 *                   [--dtype fp32|bf16]
 *
 * --dtype bf16 (flash only): qkv stored as bf16, what a bf16 GPT-2 hands the kernel; on a CPU
 * with AMX that runs the tiles of kernels/cpu/attention_amx.c (LOOM_ATTENTION_AMX=0: the f32
 * tiles on the widened values). The side is then "loom-flash-bf16".
 * time: the median of `reps` forward + backward passes after one warm-up. kept_bytes: what the
 * forward keeps for the backward besides its input and output (flash: the rows' log-sum-exp,
 * [B, NH, T]; stored: the probabilities, [B, NH, T, T]). peak_rss_mb: this process's
 * ru_maxrss, all buffers included (qkv, out, dout, dqkv and the kept ones).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <omp.h>

#include "lk_cpu.h"

#include "bench_clock.h"

static float *filled(int64_t n, unsigned seed)
{
    float *p = malloc((size_t)n * sizeof *p);
    if (!p) {
        fprintf(stderr, "bench_attention: out of memory for %lld floats\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = ((float)((seed >> 9) & 0xffff) / 65536.0f - 0.5f);
    }
    return p;
}

int main(int argc, char **argv)
{
    int64_t B = 1, T = 1024, C = 768, NH = 12;
    int threads = 2, reps = 3;
    const char *kernel = "flash", *dtype_name = "fp32";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--B"))
            B = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--T"))
            T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--C"))
            C = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--NH"))
            NH = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kernel"))
            kernel = argv[i + 1];
        else if (!strcmp(argv[i], "--dtype"))
            dtype_name = argv[i + 1];
        else {
            fprintf(stderr, "bench_attention: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    const int flash = !strcmp(kernel, "flash");
    const int bf16 = !strcmp(dtype_name, "bf16");
    if ((!bf16 && strcmp(dtype_name, "fp32")) || (bf16 && !flash)) {
        fprintf(stderr, "bench_attention: --dtype is fp32, or bf16 with --kernel flash, not %s\n", dtype_name);
        return 2;
    }
    if (!flash && strcmp(kernel, "stored")) {
        fprintf(stderr, "bench_attention: --kernel is flash or stored, not %s\n", kernel);
        return 2;
    }
    if (B < 1 || T < 1 || C < 1 || NH < 1 || C % NH || reps < 1 || threads < 1) {
        fprintf(stderr, "bench_attention: B, T, C, NH, reps, threads must be >= 1 and NH must divide C\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const int64_t kept = flash ? B * NH * T : B * NH * T * T;
    float *qkv = filled(B * T * 3 * C, 1), *dout = filled(B * T * C, 2);
    uint16_t *qkv16 = bf16 ? malloc((size_t)(B * T * 3 * C) * sizeof *qkv16) : NULL;
    if (bf16 && !qkv16) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    if (bf16) lk_convert(qkv16, LOOM_DTYPE_BF16, qkv, LOOM_DTYPE_F32, B * T * 3 * C);
    const void *stored = bf16 ? (const void *)qkv16 : (const void *)qkv;
    const uint32_t dtype = bf16 ? LOOM_DTYPE_BF16 : LOOM_DTYPE_F32;
    float *out = calloc((size_t)(B * T * C), sizeof(float)), *dqkv = calloc((size_t)(B * T * 3 * C), sizeof(float));
    float *keep = calloc((size_t)kept, sizeof(float));
    if (!out || !dqkv || !keep) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    double *fwd = malloc((size_t)reps * sizeof *fwd), *bwd = malloc((size_t)reps * sizeof *bwd);
    double check = 0;
    for (int r = -1; r < reps; r++) {
        const double t0 = bench_now();
        if (flash)
            lk_attention_flash_forward(out, keep, stored, dtype, B, T, C, NH);
        else
            lk_attention_forward(out, keep, qkv, B, T, C, NH);
        const double t1 = bench_now();
        memset(dqkv, 0, (size_t)(B * T * 3 * C) * sizeof *dqkv);
        if (flash)
            lk_attention_flash_backward(dqkv, dout, stored, dtype, out, keep, B, T, C, NH);
        else
            lk_attention_backward(dqkv, dout, qkv, keep, B, T, C, NH);
        const double t2 = bench_now();
        if (r >= 0) fwd[r] = t1 - t0, bwd[r] = t2 - t1;
        check = dqkv[(B * T * 3 * C) / 2];
    }
    double total[64];
    const int n = reps < 64 ? reps : 64;
    for (int r = 0; r < n; r++)
        total[r] = fwd[r] + bwd[r];
    qsort(fwd, (size_t)reps, sizeof *fwd, bench_compare_doubles);
    qsort(bwd, (size_t)reps, sizeof *bwd, bench_compare_doubles);
    qsort(total, (size_t)n, sizeof *total, bench_compare_doubles);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"side\": \"loom-%s%s\", \"B\": %lld, \"T\": %lld, \"C\": %lld, \"NH\": %lld, \"threads\": %d, "
           "\"fwd_ms\": %.2f, \"bwd_ms\": %.2f, \"ms_median\": %.2f, \"ms_min\": %.2f, \"ms_max\": %.2f, "
           "\"kept_bytes\": %lld, \"peak_rss_mb\": %.1f, \"check\": %g}\n",
           kernel, bf16 ? "-bf16" : "", (long long)B, (long long)T, (long long)C, (long long)NH, threads,
           1e3 * fwd[reps / 2], 1e3 * bwd[reps / 2], 1e3 * total[n / 2], 1e3 * total[0], 1e3 * total[n - 1],
           (long long)(kept * (int64_t)sizeof(float)), (double)ru.ru_maxrss / 1024.0, check);
    free(qkv), free(qkv16), free(dout), free(out), free(dqkv), free(keep), free(fwd), free(bwd);
    return isfinite(check) ? 0 : 1;
}
