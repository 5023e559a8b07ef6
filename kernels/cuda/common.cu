/*
 * common.cu - device discovery, the per-thread error slot, and the per-thread, per-device
 * cuBLAS handles and scratch buffers.
 *
 * The thread-local state is plain data, and handles are released at thread exit by a pthread
 * key destructor rather than a C++ thread_local destructor, whose order relative to the CUDA
 * runtime's own teardown we do not control. The main thread's handles and buffers are left to
 * process exit, where the driver reclaims them. (The library still needs libstdc++ at link
 * time, for nvcc's launch stubs; CMake links its users with the C++ driver for that.)
 */
#include "common.cuh"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

/* Devices per process we keep a handle for; a device index past it is reported as an error
 * rather than silently sharing a handle bound to another device. */
#define LK_CUDA_MAX_DEVICES 64

struct lk_cuda_device_state {
    cublasHandle_t cublas;
    void *workspace;
    size_t workspace_bytes;
};

struct lk_cuda_thread_state {
    int has_error;
    char error[512];
    int key_set; /* the pthread key below points at this thread's devices[] */
    lk_cuda_device_state devices[LK_CUDA_MAX_DEVICES];
};

static thread_local lk_cuda_thread_state lk_tls;

static pthread_key_t lk_handles_key;
static pthread_once_t lk_handles_once = PTHREAD_ONCE_INIT;
static int lk_handles_key_ok;

/* Runs at exit of a thread that created a handle or a buffer. Each is released with its own
 * device current, as cuBLAS requires; failures are ignored (nothing can report them here). */
static void lk_release_handles(void *p)
{
    lk_cuda_device_state *devices = (lk_cuda_device_state *)p;
    int saved = -1;
    if (cudaGetDevice(&saved) != cudaSuccess) saved = -1;
    for (int d = 0; d < LK_CUDA_MAX_DEVICES; d++) {
        lk_cuda_device_state *ds = &devices[d];
        if (!ds->cublas && !ds->workspace) continue;
        if (cudaSetDevice(d) == cudaSuccess) {
            if (ds->cublas) cublasDestroy(ds->cublas);
            if (ds->workspace) cudaFree(ds->workspace);
        }
        ds->cublas = NULL;
        ds->workspace = NULL;
        ds->workspace_bytes = 0;
    }
    if (saved >= 0) cudaSetDevice(saved);
    (void)cudaGetLastError();
}

static void lk_make_handles_key(void)
{
    lk_handles_key_ok = pthread_key_create(&lk_handles_key, lk_release_handles) == 0;
}

void lk_cuda_record(const char *fn, const char *fmt, ...)
{
    int n = snprintf(lk_tls.error, sizeof lk_tls.error, "%s: ", fn);
    if (n < 0 || (size_t)n >= sizeof lk_tls.error) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lk_tls.error + n, sizeof lk_tls.error - (size_t)n, fmt, ap);
    va_end(ap);
    lk_tls.has_error = 1;
}

int lk_cuda_ok(cudaError_t err, const char *fn)
{
    if (err == cudaSuccess) return 1;
    lk_cuda_record(fn, "CUDA %s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    return 0;
}

int lk_cuda_launched(const char *fn)
{
    return lk_cuda_ok(cudaGetLastError(), fn);
}

int lk_cublas_ok(cublasStatus_t st, const char *fn)
{
    if (st == CUBLAS_STATUS_SUCCESS) return 1;
    lk_cuda_record(fn, "cuBLAS %s: %s", cublasGetStatusName(st), cublasGetStatusString(st));
    return 0;
}

/* This thread's state for the current device, or NULL (recorded) when there is none. */
static lk_cuda_device_state *lk_device_state(const char *fn)
{
    int dev = 0;
    if (!lk_cuda_ok(cudaGetDevice(&dev), fn)) return NULL;
    if (dev < 0 || dev >= LK_CUDA_MAX_DEVICES) {
        lk_cuda_record(fn, "device %d is past the %d this library keeps state for", dev, LK_CUDA_MAX_DEVICES);
        return NULL;
    }
    if (!lk_tls.key_set) {
        pthread_once(&lk_handles_once, lk_make_handles_key);
        if (lk_handles_key_ok && pthread_setspecific(lk_handles_key, lk_tls.devices) == 0) lk_tls.key_set = 1;
    }
    return &lk_tls.devices[dev];
}

cublasHandle_t lk_cuda_cublas(const char *fn)
{
    lk_cuda_device_state *ds = lk_device_state(fn);
    if (!ds) return NULL;
    if (ds->cublas) return ds->cublas;
    cublasHandle_t h = NULL;
    if (!lk_cublas_ok(cublasCreate(&h), fn)) return NULL;
    /* Plain fp32 products: the default math mode never rounds sgemm inputs to TF32 (that takes
     * CUBLAS_TF32_TENSOR_OP_MATH), so results match the CPU reference to fp32 rounding. Set
     * explicitly so that nothing inherited changes it; PEDANTIC would be slower for nothing. */
    if (!lk_cublas_ok(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), fn) || !lk_cublas_ok(cublasSetStream(h, 0), fn)) {
        cublasDestroy(h);
        return NULL;
    }
    ds->cublas = h;
    return h;
}

void *lk_cuda_workspace(size_t bytes, const char *fn)
{
    lk_cuda_device_state *ds = lk_device_state(fn);
    if (!ds) return NULL;
    if (ds->workspace_bytes >= bytes && ds->workspace) return ds->workspace;
    /* Grow geometrically so a slowly rising size does not reallocate every call. cudaFree
     * waits for the device, so work still reading the old buffer finishes first. */
    size_t want = ds->workspace_bytes * 2 > bytes ? ds->workspace_bytes * 2 : bytes;
    if (ds->workspace) cudaFree(ds->workspace);
    ds->workspace = NULL;
    ds->workspace_bytes = 0;
    void *p = NULL;
    if (!lk_cuda_ok(cudaMalloc(&p, want), fn)) return NULL;
    ds->workspace = p;
    ds->workspace_bytes = want;
    return p;
}

extern "C" int lk_cuda_available(void)
{
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    /* No driver, or no device, is not an error of ours: clear it so that it does not show up
     * as the "last error" of some unrelated later CUDA call. */
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count > 0;
}

extern "C" const char *lk_cuda_last_error(void)
{
    return lk_tls.has_error ? lk_tls.error : NULL;
}

extern "C" void lk_cuda_clear_error(void)
{
    lk_tls.has_error = 0;
    lk_tls.error[0] = '\0';
}

extern "C" int lk_cuda_synchronize(void)
{
    const int ok = lk_cuda_ok(cudaDeviceSynchronize(), "lk_cuda_synchronize");
    return ok && !lk_tls.has_error ? 0 : -1;
}
