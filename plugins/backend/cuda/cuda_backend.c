/*
 * cuda_backend.c - the CUDA backend plugin (abi/loom/backend.h): one GPU, its memory, streams,
 * events and copies, and the CUDA kernel table (kernels/cuda).
 *
 * Memory is CUDA managed memory and every kernel of the lent table waits for its work before
 * it returns (LOOM_BACKEND_HOST_ACCESSIBLE). That keeps the parts of the step that still run
 * on the CPU (optimizers, loss scaling, the gradient norm, checkpoints) correct on device
 * memory, at the price of page migrations and lost overlap; docs/gpu.md#what-runs-where says
 * which parts these are and what replaces them.
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/backend.h>
#include <loom/plugin.h>

#include "cuda_probe.h"
#include "lk_cuda.h"

struct loom_backend {
    loom_host *host;
    const loom_host_api *api;
    int device;
    int driver_version;
};

/* Fails with the CUDA error named, as one line. */
static loom_status cuda_failed(loom_backend *self, cudaError_t err, const char *what)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    return self->api->fail(self->host, err == cudaErrorMemoryAllocation ? LOOM_E_NOMEM : LOOM_E_DEVICE,
                           "%s on cuda:%d: %s (%s)", what, self->device, cudaGetErrorString(err),
                           cudaGetErrorName(err));
}

static loom_status cuda_probe_device(loom_host *host, const loom_host_api *api, int32_t *device_count)
{
    char reason[512];
    int count = 0, driver = 0;
    const char *why = cuda_probe(&count, &driver, reason, sizeof reason);
    *device_count = count;
    return why ? api->fail(host, LOOM_E_UNSUPPORTED, "%s", why) : LOOM_OK;
}

static loom_status cuda_create(loom_host *host, const loom_host_api *api, const loom_config *config, int32_t index,
                               loom_backend **out)
{
    (void)config;
    *out = NULL;
    int count = 0, driver = 0;
    char reason[512];
    const char *why = cuda_probe(&count, &driver, reason, sizeof reason);
    if (why) return api->fail(host, LOOM_E_UNSUPPORTED, "%s", why);
    if (index < 0 || index >= count)
        return api->fail(host, LOOM_E_INVALID, "cuda:%d asked for, %d device%s visible", index, count,
                         count == 1 ? "" : "s");
    cudaError_t err = cudaSetDevice(index);
    if (err == cudaSuccess) err = cudaFree(NULL); /* start the context now, not inside step 1 */
    if (err != cudaSuccess)
        return api->fail(host, LOOM_E_DEVICE, "cannot start cuda:%d: %s (%s)", index, cudaGetErrorString(err),
                         cudaGetErrorName(err));
    loom_backend *self = calloc(1, sizeof *self);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    self->device = index;
    self->driver_version = driver;
    *out = self;
    return LOOM_OK;
}

static void cuda_destroy(loom_backend *self)
{
    if (!self) return;
    (void)cudaDeviceSynchronize();
    free(self);
}

static loom_status cuda_device_info(loom_backend *self, loom_device_info *info)
{
    struct cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, self->device);
    if (err != cudaSuccess) return cuda_failed(self, err, "cudaGetDeviceProperties");
    size_t free_bytes = 0, total_bytes = 0;
    if ((err = cudaMemGetInfo(&free_bytes, &total_bytes)) != cudaSuccess)
        return cuda_failed(self, err, "cudaMemGetInfo");
    int runtime = 0;
    (void)cudaRuntimeGetVersion(&runtime);
    size_t len = strnlen(prop.name, sizeof prop.name);
    if (len >= sizeof info->name) len = sizeof info->name - 1;
    memcpy(info->name, prop.name, len);
    info->name[len] = '\0';
    info->total_bytes = total_bytes;
    info->free_bytes = free_bytes;
    info->capability_major = prop.major;
    info->capability_minor = prop.minor;
    info->driver_version = self->driver_version;
    info->runtime_version = runtime;
    info->multiprocessors = prop.multiProcessorCount;
    info->device_index = self->device;
    return LOOM_OK;
}

static void *cuda_alloc(loom_backend *self, size_t bytes)
{
    void *ptr = NULL;
    cudaError_t err = cudaMallocManaged(&ptr, bytes, cudaMemAttachGlobal);
    if (err != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "cudaMallocManaged(%zu bytes)", bytes);
        cuda_failed(self, err, what);
        return NULL;
    }
    /* The device is where it will be read: prefer its memory, migrate there first. */
    struct cudaMemLocation where = {.type = cudaMemLocationTypeDevice, .id = self->device};
    (void)cudaMemAdvise(ptr, bytes, cudaMemAdviseSetPreferredLocation, where);
    (void)cudaGetLastError();
    return ptr;
}

static void cuda_free(loom_backend *self, void *ptr)
{
    (void)self;
    if (ptr) (void)cudaFree(ptr);
}

static void *cuda_alloc_pinned(loom_backend *self, size_t bytes)
{
    void *ptr = NULL;
    cudaError_t err = cudaMallocHost(&ptr, bytes);
    if (err != cudaSuccess) {
        cuda_failed(self, err, "cudaMallocHost");
        return NULL;
    }
    return ptr;
}

static void cuda_free_pinned(loom_backend *self, void *ptr)
{
    (void)self;
    if (ptr) (void)cudaFreeHost(ptr);
}

/* NULL is the compute stream: the legacy default stream the kernels run on. */
static cudaStream_t stream_of(loom_stream *stream) { return stream ? (cudaStream_t)stream : cudaStreamLegacy; }

static loom_status cuda_copy(loom_backend *self, void *dst, const void *src, size_t bytes, uint32_t direction,
                             loom_stream *stream)
{
    enum cudaMemcpyKind kind = direction == LOOM_COPY_HOST_TO_DEVICE   ? cudaMemcpyHostToDevice
                               : direction == LOOM_COPY_DEVICE_TO_HOST ? cudaMemcpyDeviceToHost
                               : direction == LOOM_COPY_DEVICE_TO_DEVICE ? cudaMemcpyDeviceToDevice
                                                                        : cudaMemcpyDefault;
    if (kind == cudaMemcpyDefault)
        return self->api->fail(self->host, LOOM_E_INVALID, "copy direction %u is none of LOOM_COPY_*", direction);
    /* Managed memory makes every direction legal; cudaMemcpyDefault lets the driver pick. */
    cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_of(stream));
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaMemcpyAsync");
}

static loom_status cuda_memset_zero(loom_backend *self, void *dst, size_t bytes, loom_stream *stream)
{
    cudaError_t err = cudaMemsetAsync(dst, 0, bytes, stream_of(stream));
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaMemsetAsync");
}

static loom_status cuda_stream_create(loom_backend *self, loom_stream **out)
{
    cudaStream_t s = NULL;
    cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    *out = (loom_stream *)s;
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaStreamCreateWithFlags");
}

static void cuda_stream_destroy(loom_backend *self, loom_stream *stream)
{
    (void)self;
    if (stream) (void)cudaStreamDestroy((cudaStream_t)stream);
}

static loom_status cuda_stream_synchronize(loom_backend *self, loom_stream *stream)
{
    cudaError_t err = cudaStreamSynchronize(stream_of(stream));
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaStreamSynchronize");
}

static loom_status cuda_event_create(loom_backend *self, loom_event **out)
{
    cudaEvent_t e = NULL;
    cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    *out = (loom_event *)e;
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaEventCreateWithFlags");
}

static void cuda_event_destroy(loom_backend *self, loom_event *event)
{
    (void)self;
    if (event) (void)cudaEventDestroy((cudaEvent_t)event);
}

static loom_status cuda_event_record(loom_backend *self, loom_event *event, loom_stream *stream)
{
    cudaError_t err = cudaEventRecord((cudaEvent_t)event, stream_of(stream));
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaEventRecord");
}

static loom_status cuda_stream_wait_event(loom_backend *self, loom_stream *stream, loom_event *event)
{
    cudaError_t err = cudaStreamWaitEvent(stream_of(stream), (cudaEvent_t)event, 0);
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaStreamWaitEvent");
}

static loom_status cuda_event_synchronize(loom_backend *self, loom_event *event)
{
    cudaError_t err = cudaEventSynchronize((cudaEvent_t)event);
    return err == cudaSuccess ? LOOM_OK : cuda_failed(self, err, "cudaEventSynchronize");
}

static loom_status cuda_synchronize(loom_backend *self)
{
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) return cuda_failed(self, err, "cudaDeviceSynchronize");
    /* A kernel the table ran may have recorded a launch or cuBLAS error on this thread. */
    const char *kernel_error = lk_cuda_last_error();
    if (kernel_error) {
        loom_status st = self->api->fail(self->host, LOOM_E_DEVICE, "cuda:%d: %s", self->device, kernel_error);
        lk_cuda_clear_error();
        return st;
    }
    return LOOM_OK;
}

static const loom_kernels_api *cuda_kernels(loom_backend *self)
{
    (void)self;
    return lk_cuda_synchronous_kernel_table();
}

static const loom_backend_vtable cuda_vtable = {
    LOOM_HEADER_INIT(loom_backend_vtable),
    .device = LOOM_DEVICE_CUDA,
    .flags = LOOM_BACKEND_HOST_ACCESSIBLE,
    .probe = cuda_probe_device,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .device_info = cuda_device_info,
    .alloc = cuda_alloc,
    .free_memory = cuda_free,
    .alloc_pinned = cuda_alloc_pinned,
    .free_pinned = cuda_free_pinned,
    .copy = cuda_copy,
    .memset_zero = cuda_memset_zero,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_synchronize = cuda_stream_synchronize,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .stream_wait_event = cuda_stream_wait_event,
    .event_synchronize = cuda_event_synchronize,
    .synchronize = cuda_synchronize,
    .kernels = cuda_kernels,
};

static const loom_plugin_desc cuda_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_BACKEND,
    .name = "cuda",
    .version = "0.1.0",
    .summary = "NVIDIA GPUs through the CUDA runtime, cuBLAS and loom's CUDA kernels",
    .vtable = &cuda_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&cuda_desc)
