/*
 * cuda_kernels.c (bench_cuda_kernels) - sgemm throughput, CUDA (cuBLAS) against the CPU (OpenBLAS), at the
 * shapes of a GPT-2 small layer over 4 sequences of 64 tokens (256 rows):
 *
 *   IC x OC x tokens   layer
 *   768 x 2304 x 256   attention QKV projection
 *   768 x  768 x 256   attention output projection
 *  3072 x  768 x 256   MLP down projection
 *
 * Each shape is timed as the three products of a linear layer: forward (out = inp W^T, "NT"),
 * dinp (dout W, "NN") and dweight (dout^T inp, "TN"), the way lk_linear_* call sgemm.
 * 2 M N K flops per product. GPU time is measured with CUDA events around many back-to-back
 * calls (steady state, no host sync per call); CPU time with a monotonic clock, the CPU using
 * every core OpenBLAS is given. Exits 77 when there is no GPU.
 *
 *   bench_cuda_kernels [min_seconds_per_measurement (default 0.3)]
 */
#include <time.h>

#include "gpu_test.h"

typedef struct {
    const char *layer;
    int64_t IC, OC, T;
} shape_t;

typedef struct {
    const char *name;
    int ta, tb;
} product_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The product's M, N, K and operand strides for a linear layer of the shape. */
static void product_dims(const product_t *p, const shape_t *s, int64_t *M, int64_t *N, int64_t *K)
{
    if (!p->ta && p->tb)
        *M = s->T, *N = s->OC, *K = s->IC; /* forward  */
    else if (!p->ta && !p->tb)
        *M = s->T, *N = s->IC, *K = s->OC; /* dinp     */
    else
        *M = s->OC, *N = s->IC, *K = s->T; /* dweight  */
}

typedef void (*sgemm_fn)(int32_t, int32_t, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                         int64_t, float, float *, int64_t);

static void run(sgemm_fn f, const product_t *p, int64_t M, int64_t N, int64_t K, const float *A, const float *B,
                float *C)
{
    const int64_t lda = p->ta ? M : K, ldb = p->tb ? K : N;
    f(p->ta, p->tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
}

static double bench_cpu(const product_t *p, int64_t M, int64_t N, int64_t K, double min_s)
{
    float *A = gt_rand(M * K, -1.0f, 1.0f), *B = gt_rand(K * N, -1.0f, 1.0f);
    float *C = gt_host((size_t)(M * N) * sizeof *C);
    run(lk_sgemm, p, M, N, K, A, B, C); /* warm up: thread pool, caches */
    int iters = 0;
    const double t0 = now_s();
    double t;
    do {
        run(lk_sgemm, p, M, N, K, A, B, C);
        iters++;
    } while ((t = now_s() - t0) < min_s);
    free(A), free(B), free(C);
    return 2.0 * (double)M * (double)N * (double)K * iters / t * 1e-9;
}

static double bench_gpu(const product_t *p, int64_t M, int64_t N, int64_t K, double min_s)
{
    float *hA = gt_rand(M * K, -1.0f, 1.0f), *hB = gt_rand(K * N, -1.0f, 1.0f);
    float *A = gt_device_f(hA, M * K), *B = gt_device_f(hB, K * N), *C = gt_device_f(NULL, M * N);
    cudaEvent_t start, stop;
    gt_cuda(cudaEventCreate(&start), "cudaEventCreate");
    gt_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    for (int i = 0; i < 5; i++)
        run(lk_sgemm_cuda, p, M, N, K, A, B, C); /* handle, heuristics */
    gt_cuda(cudaDeviceSynchronize(), "warm-up");
    /* Calibrate a batch size that takes about min_s, then time one batch. */
    int iters = 10;
    float ms = 0.0f;
    for (;;) {
        gt_cuda(cudaEventRecord(start, 0), "cudaEventRecord");
        for (int i = 0; i < iters; i++)
            run(lk_sgemm_cuda, p, M, N, K, A, B, C);
        gt_cuda(cudaEventRecord(stop, 0), "cudaEventRecord");
        gt_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        gt_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        if (ms * 1e-3 >= min_s || iters >= (1 << 20)) break;
        iters *= ms > 0.0f && min_s / (ms * 1e-3) < 8.0 ? 2 : 8;
    }
    const char *err = lk_cuda_last_error();
    if (err) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    cudaEventDestroy(start), cudaEventDestroy(stop);
    cudaFree(A), cudaFree(B), cudaFree(C);
    free(hA), free(hB);
    return 2.0 * (double)M * (double)N * (double)K * iters / (ms * 1e-3) * 1e-9;
}

int main(int argc, char **argv)
{
    const double min_s = argc > 1 ? atof(argv[1]) : 0.3;
    if (!(min_s > 0.0)) {
        fprintf(stderr, "usage: bench_cuda_kernels [min_seconds_per_measurement > 0]\n");
        return 2;
    }
    gt_require_gpu("bench_cuda_kernels");
    struct cudaDeviceProp prop;
    int dev = 0;
    gt_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    gt_cuda(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");

    static const shape_t shapes[] = {
        {"attn qkv", 768, 2304, 4 * 64},
        {"attn proj", 768, 768, 256},
        {"mlp proj", 3072, 768, 256},
    };
    static const product_t products[] = {{"fwd NT", 0, 1}, {"dinp NN", 0, 0}, {"dweight TN", 1, 0}};

    printf("sgemm, fp32: CUDA on %s (sm_%d%d) vs CPU (OpenBLAS)\n", prop.name, prop.major, prop.minor);
    printf("%-10s %-18s %-11s %-16s %12s %12s %9s\n", "layer", "IC x OC x tokens", "product", "M x N x K",
           "CPU GFLOP/s", "GPU GFLOP/s", "GPU/CPU");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        for (size_t p = 0; p < sizeof products / sizeof *products; p++) {
            int64_t M, N, K;
            product_dims(&products[p], &shapes[s], &M, &N, &K);
            const double cpu = bench_cpu(&products[p], M, N, K, min_s);
            const double gpu = bench_gpu(&products[p], M, N, K, min_s);
            char shape[32], mnk[32];
            snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)shapes[s].IC, (long long)shapes[s].OC,
                     (long long)shapes[s].T);
            snprintf(mnk, sizeof mnk, "%lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
            printf("%-10s %-18s %-11s %-16s %12.1f %12.1f %8.1fx\n", shapes[s].layer, shape, products[p].name, mnk, cpu,
                   gpu, gpu / cpu);
            fflush(stdout);
        }
    }
    return 0;
}
