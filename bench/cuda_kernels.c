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
 * every core OpenBLAS is given. Then T5's attention (mha_forward + mha_backward with bias, padding
 * mask, dropout; T5-small's 8 heads of 64) in milliseconds per forward and backward, GPU
 * against CPU, at 8 x 128 and 2 x 512 tokens. Exits 77 when there is no GPU.
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

/* ---- T5's attention: one forward and backward, timed as a whole ---- */

typedef struct {
    int64_t B, NH, T, HS;
    float *q, *k, *v, *bias, *out, *att, *dout, *dq, *dk, *dv, *dbias;
    int32_t *mask;
    int gpu;
} mha_bench;

static void mha_step(const mha_bench *m)
{
    const float p = 0.1f, scale = 1.0f;
    const uint64_t seed = 7;
    if (m->gpu) {
        lk_mha_forward_cuda(m->out, m->att, m->q, m->k, m->v, m->bias, m->mask, m->B, m->NH, m->T, m->T, m->HS, m->T,
                            scale, 0, p, seed);
        lk_mha_backward_cuda(m->dq, m->dk, m->dv, m->dbias, m->dout, m->q, m->k, m->v, m->att, m->B, m->NH, m->T, m->T,
                             m->HS, m->T, scale, p, seed);
    } else {
        lk_mha_forward(m->out, m->att, m->q, m->k, m->v, m->bias, m->mask, m->B, m->NH, m->T, m->T, m->HS, m->T, scale,
                       0, p, seed);
        lk_mha_backward(m->dq, m->dk, m->dv, m->dbias, m->dout, m->q, m->k, m->v, m->att, m->B, m->NH, m->T, m->T,
                        m->HS, m->T, scale, p, seed);
    }
}

/* Buffers of the shape on the host (gpu 0) or the device (gpu 1), from the same values. */
static mha_bench mha_buffers(int64_t B, int64_t NH, int64_t T, int64_t HS, int gpu)
{
    const int64_t nx = B * T * NH * HS, natt = B * NH * T * T, nb = NH * T * T;
    mha_bench m = {B, NH, T, HS, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, gpu};
    float **xs[] = {&m.q, &m.k, &m.v, &m.out, &m.dout, &m.dq, &m.dk, &m.dv};
    gt_rng_state = 11;
    for (size_t i = 0; i < sizeof xs / sizeof *xs; i++) {
        float *h = gt_rand(nx, -1.0f, 1.0f);
        *xs[i] = gpu ? gt_device_f(h, nx) : gt_copy(h, nx);
        free(h);
    }
    float *hb = gt_rand(nb, -1.0f, 1.0f);
    m.bias = gpu ? gt_device_f(hb, nb) : gt_copy(hb, nb);
    m.dbias = gpu ? gt_device_f(hb, nb) : gt_copy(hb, nb);
    m.att = gpu ? gt_device_f(NULL, natt) : gt_host((size_t)natt * sizeof(float));
    int32_t *hm = gt_host((size_t)(B * T) * sizeof *hm);
    for (int64_t i = 0; i < B * T; i++)
        hm[i] = i % T < T - T / 8; /* the last eighth of each row is padding */
    m.mask = gpu ? gt_device(hm, (size_t)(B * T) * sizeof *hm) : hm;
    free(hb);
    if (gpu) free(hm);
    return m;
}

static void mha_free(mha_bench *m)
{
    void *ps[] = {m->q, m->k, m->v, m->out, m->dout, m->dq, m->dk, m->dv, m->bias, m->dbias, m->att, m->mask};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
        if (m->gpu)
            cudaFree(ps[i]);
        else
            free(ps[i]);
    }
}

/* Milliseconds per forward + backward, over at least min_s (GPU: CUDA events, no host sync). */
static double mha_ms(int64_t B, int64_t NH, int64_t T, int64_t HS, int gpu, double min_s)
{
    mha_bench m = mha_buffers(B, NH, T, HS, gpu);
    mha_step(&m); /* warm up: the workspace, the thread pool */
    int iters = 0;
    double ms = 0.0;
    if (gpu) {
        cudaEvent_t start, stop;
        gt_cuda(cudaEventCreate(&start), "cudaEventCreate");
        gt_cuda(cudaEventCreate(&stop), "cudaEventCreate");
        for (iters = 2;; iters *= 2) {
            float t = 0.0f;
            gt_cuda(cudaEventRecord(start, 0), "cudaEventRecord");
            for (int i = 0; i < iters; i++)
                mha_step(&m);
            gt_cuda(cudaEventRecord(stop, 0), "cudaEventRecord");
            gt_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
            gt_cuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
            ms = t;
            if (ms * 1e-3 >= min_s || iters >= (1 << 16)) break;
        }
        cudaEventDestroy(start), cudaEventDestroy(stop);
        const char *err = lk_cuda_last_error();
        if (err) {
            fprintf(stderr, "bench: %s\n", err);
            exit(1);
        }
    } else {
        const double t0 = now_s();
        do {
            mha_step(&m);
            iters++;
        } while ((ms = (now_s() - t0) * 1e3) < min_s * 1e3);
    }
    mha_free(&m);
    return ms / iters;
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

    static const int64_t mha_shapes[][2] = {{8, 128}, {2, 512}}; /* batch, tokens */
    printf("\nT5 attention, fp32 (mha_forward + mha_backward: bias, padding mask, dropout 0.1; 8 heads of 64)\n");
    printf("%-8s %-8s %12s %12s %9s\n", "batch", "tokens", "CPU ms", "GPU ms", "CPU/GPU");
    for (size_t i = 0; i < sizeof mha_shapes / sizeof *mha_shapes; i++) {
        const int64_t B = mha_shapes[i][0], T = mha_shapes[i][1];
        const double cpu = mha_ms(B, 8, T, 64, 0, min_s), gpu = mha_ms(B, 8, T, 64, 1, min_s);
        printf("%-8lld %-8lld %12.3f %12.3f %8.1fx\n", (long long)B, (long long)T, cpu, gpu, cpu / gpu);
        fflush(stdout);
    }
    return 0;
}
