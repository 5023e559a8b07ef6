/*
 * sgemm_rate.c - this machine's OpenBLAS sgemm rate at the shapes of a GPT-2 training step
 * (forward and both backward products of c_attn, c_proj, c_fc, mlp c_proj and the LM head),
 * the denominator of "the step's matrix products run at X% of sgemm".
 *   bench_sgemm_rate N_EMBD VOCAB TOKENS   -> one JSON line with GFLOP/s per shape and overall
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_clock.h"

/* Median of 5 timed calls after one warm-up, in seconds. */
static double time_gemm(int ta, int tb, int m, int n, int k, float *a, float *b, float *c)
{
    double t[5];
    for (int r = 0; r < 6; r++) {
        double s = bench_now();
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a,
                    ta ? m : k, b, tb ? k : n, 0.0f, c, n);
        if (r) t[r - 1] = bench_now() - s;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    return t[2];
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_sgemm_rate N_EMBD VOCAB TOKENS\n");
        return 2;
    }
    int C = atoi(argv[1]), V = atoi(argv[2]), N = atoi(argv[3]);
    int outs[5] = {3 * C, C, 4 * C, C, V}, ins[5] = {C, C, C, 4 * C, C};
    size_t big = (size_t)(V > 4 * C ? V : 4 * C) * (size_t)(N > C ? N : C) * 4;
    float *a = malloc(big * sizeof *a), *b = malloc(big * sizeof *b), *c = malloc(big * sizeof *c);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < big; i++) a[i] = b[i] = (float)(i % 17) * 0.01f, c[i] = 0;
    double flops = 0, seconds = 0;
    printf("{\"n_embd\": %d, \"vocab\": %d, \"tokens\": %d, \"shapes\": [", C, V, N);
    for (int s = 0; s < 5; s++) {
        int IC = ins[s], OC = outs[s];
        /* forward out[N,OC] = in[N,IC] W[IC,OC]; dW = in^T dout; din = dout W^T */
        double t = time_gemm(0, 0, N, OC, IC, a, b, c) + time_gemm(1, 0, IC, OC, N, a, b, c) +
                   time_gemm(0, 1, N, IC, OC, a, b, c);
        double f = 3.0 * 2.0 * N * (double)IC * OC;
        flops += f;
        seconds += t;
        printf("%s{\"in\": %d, \"out\": %d, \"gflops\": %.1f}", s ? ", " : "", IC, OC, f / t * 1e-9);
    }
    printf("], \"gflops\": %.1f}\n", flops / seconds * 1e-9);
    free(a), free(b), free(c);
    return 0;
}
