/* gpu_test.h - what the GPU test and benchmark share: a deterministic RNG, host/device buffer
 * helpers that stop the program on an allocation or copy failure (there is nothing to test
 * past one), and the "is there a GPU" gate that exits 77 (ctest's SKIP_RETURN_CODE). */
#ifndef LOOM_GPU_TEST_H
#define LOOM_GPU_TEST_H

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_cpu.h"
#include "lk_cuda.h"

#define GPU_TEST_SKIP 77

static uint64_t gt_rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t gt_rng_next(void)
{
    uint64_t z = (gt_rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float gt_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(gt_rng_next() >> 40) / (double)(1ull << 24));
}

static inline void *gt_host(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static inline float *gt_rand(int64_t n, float lo, float hi)
{
    float *p = (float *)gt_host((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = gt_uniform(lo, hi);
    return p;
}

static inline float *gt_copy(const float *src, int64_t n)
{
    float *p = (float *)gt_host((size_t)n * sizeof *p);
    memcpy(p, src, (size_t)n * sizeof *p);
    return p;
}

static inline void gt_cuda(cudaError_t err, const char *what)
{
    if (err == cudaSuccess) return;
    fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    exit(1);
}

/* A device copy of n bytes at host (uninitialised when host is NULL). */
static inline void *gt_device(const void *host, size_t bytes)
{
    void *d = NULL;
    gt_cuda(cudaMalloc(&d, bytes ? bytes : 1), "cudaMalloc");
    if (host) gt_cuda(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    return d;
}

static inline float *gt_device_f(const float *host, int64_t n)
{
    return (float *)gt_device(host, (size_t)n * sizeof(float));
}

/* Copies n floats back (waits for the work before it). */
static inline float *gt_fetch(const float *dev, int64_t n)
{
    float *h = (float *)gt_host((size_t)n * sizeof *h);
    gt_cuda(cudaMemcpy(h, dev, (size_t)n * sizeof *h, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return h;
}

/* Exits 77 with the reason when no GPU is usable, so ctest reports the test as skipped. */
static inline void gt_require_gpu(const char *program)
{
    if (lk_cuda_available()) return;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    printf("%s: SKIPPED: no CUDA device is visible (%s%s). Run tests/gpu/run.sh on a GPU "
           "machine.\n",
           program, err == cudaSuccess ? "device count 0" : "cudaGetDeviceCount: ",
           err == cudaSuccess ? "" : cudaGetErrorString(err));
    exit(GPU_TEST_SKIP);
}

#endif
