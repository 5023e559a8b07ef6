/*
 * gelu_cast.c - GPT-2's MLP GELU in a mixed-precision step, the one-pass kernels of ABI 1.9
 * (gelu_forward_cast, gelu_backward_cast) against the f32 passes they replace, as gpt2.c calls
 * them per block (docs/architecture.md#gelu-cast):
 *
 *   bench_gelu_cast [--rows 4096] [--width 3072] [--dtype bf16|f16|f32] [--reps 20] [--threads N]
 *
 * rows x width is one block's [N, F] (GPT-2 124M at B = 4, T = 1024 by default). Per rep, on
 * buffers far larger than the caches, each side runs what a block does in one step without
 * gradient checkpointing:
 *   forward   twice (the forward, and the backward's recomputation of fch_gelu for c_proj's
 *             weight gradient): f32 passes: widen fch, GELU, narrow; one pass: gelu_forward_cast
 *   backward  once: f32 passes: zero dB, widen fch, gelu_backward, in two halves as gpt2.c does;
 *             one pass: gelu_backward_cast
 * With --dtype f32 the forward has nothing to convert (both sides call gelu_forward) and the
 * backward saves the zeroing only. Both sides produce the same bits (checked every rep; a
 * difference exits 1). Prints one JSON line: the median ms of each side's block, the ratio,
 * and the ms a 12-block step saves.
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_cpu.h"

#include "bench_clock.h"

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    int64_t rows = 4096, width = 3072;
    int reps = 20, threads = 0;
    uint32_t dtype = LOOM_DTYPE_BF16;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows"))
            rows = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--width"))
            width = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype"))
            dtype = !strcmp(argv[i + 1], "f32")    ? LOOM_DTYPE_F32
                    : !strcmp(argv[i + 1], "f16")  ? LOOM_DTYPE_F16
                    : !strcmp(argv[i + 1], "bf16") ? LOOM_DTYPE_BF16
                                                   : 0;
        else {
            fprintf(stderr, "bench_gelu_cast: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (rows < 2 || width < 1 || reps < 1 || reps > 1000 || !dtype) {
        fprintf(stderr, "bench_gelu_cast: bad --rows, --width, --reps or --dtype\n");
        return 2;
    }
    if (threads > 0) omp_set_num_threads(threads);
    const int64_t n = rows * width, half_rows = (rows + 1) / 2;
    const size_t es = loom_dtype_size(dtype);
    /* fch as kept, fch_gelu as the product reads it, dA (d fch_gelu), dB (d fch), the widened
     * buffers of the f32 passes (the model's dA/dB region and the shared half-rows buffer). */
    void *fch = malloc((size_t)n * es), *fch_gelu = malloc((size_t)n * es), *fch_gelu2 = malloc((size_t)n * es);
    float *wide = malloc((size_t)n * sizeof(float)), *act = malloc((size_t)n * sizeof(float));
    float *half = malloc((size_t)(half_rows * width) * sizeof(float));
    float *dA = malloc((size_t)n * sizeof(float)), *dB = malloc((size_t)n * sizeof(float));
    float *dB2 = malloc((size_t)n * sizeof(float));
    if (!fch || !fch_gelu || !fch_gelu2 || !wide || !act || !half || !dA || !dB || !dB2) {
        fprintf(stderr, "bench_gelu_cast: out of memory\n");
        return 1;
    }
    uint64_t z = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        wide[i] = (float)((double)(z >> 40) * 0x1p-24 * 8.0 - 4.0);
        dA[i] = (float)((double)((z >> 16) & 0xffffff) * 0x1p-24 - 0.5);
    }
    lk_convert(fch, dtype, wide, LOOM_DTYPE_F32, n);

    double *t_old = malloc(sizeof(double) * (size_t)reps), *t_new = malloc(sizeof(double) * (size_t)reps);
    int differ = 0;
    for (int r = -1; r < reps; r++) { /* rep -1 warms up */
        double s = bench_now();
        for (int twice = 0; twice < 2; twice++) {
            if (dtype == LOOM_DTYPE_F32) {
                lk_gelu_forward(act, fch, n);
            } else {
                lk_convert(wide, LOOM_DTYPE_F32, fch, dtype, n);
                lk_gelu_forward(act, wide, n);
                lk_convert(fch_gelu, dtype, act, LOOM_DTYPE_F32, n);
            }
        }
        memset(dB, 0, (size_t)n * sizeof *dB);
        if (dtype == LOOM_DTYPE_F32) {
            lk_gelu_backward(dB, fch, dA, n);
        } else {
            for (int64_t r0 = 0; r0 < rows; r0 += half_rows) {
                const int64_t m = (rows - r0 < half_rows ? rows - r0 : half_rows) * width;
                lk_convert(half, LOOM_DTYPE_F32, (const char *)fch + (size_t)(r0 * width) * es, dtype, m);
                lk_gelu_backward(dB + r0 * width, half, dA + r0 * width, m);
            }
        }
        const double mid = bench_now();
        for (int twice = 0; twice < 2; twice++)
            lk_gelu_forward_cast(fch_gelu2, dtype, fch, dtype, n);
        lk_gelu_backward_cast(dB2, fch, dtype, dA, n);
        const double end = bench_now();
        if (r >= 0) {
            t_old[r] = 1e3 * (mid - s);
            t_new[r] = 1e3 * (end - mid);
        }
        const void *f_old = dtype == LOOM_DTYPE_F32 ? (const void *)act : fch_gelu;
        differ += memcmp(f_old, fch_gelu2, (size_t)n * es) != 0 || memcmp(dB, dB2, (size_t)n * sizeof *dB) != 0;
    }
    const double old_ms = median(t_old, reps), new_ms = median(t_new, reps);
    printf("{\"bench\": \"gelu_cast\", \"dtype\": \"%s\", \"rows\": %lld, \"width\": %lld, \"threads\": %d, "
           "\"reps\": %d, \"f32_passes_ms\": %.2f, \"one_pass_ms\": %.2f, \"speedup\": %.2f, "
           "\"saved_ms_per_12_blocks\": %.1f, \"same_bits\": %s}\n",
           loom_dtype_name(dtype), (long long)rows, (long long)width, omp_get_max_threads(), reps, old_ms, new_ms,
           old_ms / new_ms, 12.0 * (old_ms - new_ms), differ ? "false" : "true");
    free(fch), free(fch_gelu), free(fch_gelu2), free(wide), free(act), free(half), free(dA), free(dB), free(dB2);
    free(t_old), free(t_new);
    return differ ? 1 : 0;
}
