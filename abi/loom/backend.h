/*
 * backend.h - a compute device as a plugin (LOOM_KIND_BACKEND, ABI 1.3): device memory,
 * pinned host memory, streams and events, copies, and the device's kernel table.
 *
 * Why a plugin: libloom and the `loom` command never link a device runtime. A CPU build, a
 * machine without a GPU driver and CI load nothing of CUDA; the "cuda" backend (a .so linking
 * the CUDA runtime and the CUDA kernels) is opened only when a GPU is visible or named with
 * --plugin cuda (docs/architecture.md#backends, docs/gpu.md). The CPU needs no backend: the
 * host serves it itself.
 *
 * Life cycle (the host drives it, on the init thread): probe() on the plugin (no instance)
 * says whether the device is usable here and how many there are, or why not in one line;
 * then create() binds one device (the run's LOCAL_RANK picks it), and every other member works
 * on that instance until destroy(). A plugin that fails probe() is never created.
 *
 * Memory: alloc() returns device memory of the instance's device, aligned to at least 256
 * bytes, or NULL. Who allocates frees, through the same instance. A backend whose flags have
 * LOOM_BACKEND_HOST_ACCESSIBLE hands out memory the CPU may read and write after
 * synchronize() (a host-memory test double, managed memory); without it the host never
 * dereferences a device pointer and moves bytes with copy() only.
 *
 * The host's promise to every other plugin (ABI 1.3): it binds a device to plugins (a model's
 * binding, a sharding or precision setup with device != LOOM_DEVICE_CPU) only when the backend
 * has LOOM_BACKEND_HOST_ACCESSIBLE, so a plugin may read and write that memory from the CPU
 * between kernel calls (each kernel of such a backend's table has finished when it returns).
 * A later minor that lifts this says so here and in the binding structs.
 *
 * Ordering: kernels of the table and copies on stream NULL ("the compute stream") run in
 * issue order. Work on another stream is ordered against it only through events. Every
 * member returns without waiting unless its comment says it waits.
 *
 * Errors: members returning loom_status record the reason with the host's fail() (one line,
 * naming the device call that failed) and return LOOM_E_DEVICE, LOOM_E_NOMEM or
 * LOOM_E_UNSUPPORTED. Nothing aborts or exits the process.
 *
 * Threading: probe/create/destroy on the init thread only; everything else one thread per
 * instance unless noted.
 */
#ifndef LOOM_BACKEND_H
#define LOOM_BACKEND_H

#include "loom.h"
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_backend loom_backend; /* one bound device                             */
typedef struct loom_stream loom_stream;   /* an ordered queue of work; NULL = compute stream */
typedef struct loom_event loom_event;     /* a point in a stream another stream can wait on */

/* copy() directions. */
#define LOOM_COPY_HOST_TO_DEVICE 1
#define LOOM_COPY_DEVICE_TO_HOST 2
#define LOOM_COPY_DEVICE_TO_DEVICE 3

/* loom_backend_vtable.flags */
#define LOOM_BACKEND_HOST_ACCESSIBLE 0x1u /* alloc() memory is CPU-addressable after synchronize() */

/* What the start-up log and `loom doctor` print about the bound device. Written by the plugin
 * in device_info() into the caller's struct (owned by the caller); every member Required and
 * since 1.3 (the kind is new in 1.3). Strings are NUL-terminated and truncated to fit.
 * Versions use CUDA's encoding (1000 * major + 10 * minor: 13000 = 13.0); 0 = not applicable. */
typedef struct loom_device_info {
    LOOM_STRUCT_HEADER;
    char name[128];             /* "NVIDIA H100 80GB HBM3"                                   */
    uint64_t total_bytes;       /* device memory                                              */
    uint64_t free_bytes;        /* free when asked                                            */
    int32_t capability_major;   /* compute capability, 9 for sm_90                            */
    int32_t capability_minor;
    int32_t driver_version;     /* the newest toolkit version the driver supports             */
    int32_t runtime_version;    /* the runtime the plugin was built with                      */
    int32_t multiprocessors;
    int32_t device_index;       /* as create() was given it                                   */

    /* ABI 1.13+: append below. */
} loom_device_info;

/* Filled by the plugin (static storage, never freed). Every member since 1.3 (the kind is new
 * in 1.3), Required (never NULL) and, unless its comment says otherwise, one thread per
 * instance. */
typedef struct loom_backend_vtable {
    LOOM_STRUCT_HEADER;
    uint32_t device;  /* the LOOM_DEVICE_* this backend serves (LOOM_DEVICE_CUDA)              */
    uint32_t flags;   /* LOOM_BACKEND_*                                                       */

    /* Required. Is the device usable on this machine? LOOM_OK with *device_count >= 1, or
     * LOOM_E_UNSUPPORTED with a one-line reason recorded through api->fail (no driver, driver
     * older than the runtime, no device visible). Loads nothing it cannot unload, never
     * aborts; may be called again. Init thread only. */
    loom_status (*probe)(loom_host *host, const loom_host_api *api, int32_t *device_count);
    /* Required. Bind device `device_index` (0 <= index < probe's count) and make it current on
     * the calling thread. config is the plugin's section (borrowed for this call). *out is
     * owned by the host until destroy(). Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          int32_t device_index, loom_backend **out);
    /* Required. Waits for all work, frees what the instance still holds. NULL is a no-op.
     * Init thread only. */
    void (*destroy)(loom_backend *self);
    /* Required. Fills *info (the caller sets its header). */
    loom_status (*device_info)(loom_backend *self, loom_device_info *info);

    /* Required. Device memory (see the header comment), or NULL (with fail() recorded). MT-safe. */
    void *(*alloc)(loom_backend *self, size_t bytes);
    /* Required. Frees alloc() memory after the work already issued that uses it. NULL: no-op. MT-safe. */
    void (*free_memory)(loom_backend *self, void *ptr);
    /* Required. Page-locked host memory (copies from it run asynchronously and at full bus
     * speed), or NULL. CPU-addressable. Free with free_pinned. MT-safe. */
    void *(*alloc_pinned)(loom_backend *self, size_t bytes);
    void (*free_pinned)(loom_backend *self, void *ptr);

    /* Required. Copy bytes in direction LOOM_COPY_*, issued on `stream` (NULL = compute
     * stream). Host memory that is not pinned makes the copy wait (host-to-device: until the
     * source is read; device-to-host: until the bytes have landed). */
    loom_status (*copy)(loom_backend *self, void *dst, const void *src, size_t bytes, uint32_t direction,
                        loom_stream *stream);
    /* Required. Zeroes bytes of device memory, issued on `stream`. */
    loom_status (*memset_zero)(loom_backend *self, void *dst, size_t bytes, loom_stream *stream);

    /* Required. Streams and events. A stream or event belongs to its instance. */
    loom_status (*stream_create)(loom_backend *self, loom_stream **out);
    void (*stream_destroy)(loom_backend *self, loom_stream *stream);
    /* Waits until everything issued on `stream` has finished. */
    loom_status (*stream_synchronize)(loom_backend *self, loom_stream *stream);
    loom_status (*event_create)(loom_backend *self, loom_event **out);
    void (*event_destroy)(loom_backend *self, loom_event *event);
    /* Marks the point after everything issued on `stream` so far. */
    loom_status (*event_record)(loom_backend *self, loom_event *event, loom_stream *stream);
    /* Work issued on `stream` after this call starts after `event`'s point. Does not wait. */
    loom_status (*stream_wait_event)(loom_backend *self, loom_stream *stream, loom_event *event);
    /* Waits until `event`'s point is reached. */
    loom_status (*event_synchronize)(loom_backend *self, loom_event *event);
    /* Waits for all work on the device; reports an error a kernel raised since the last call. */
    loom_status (*synchronize)(loom_backend *self);

    /* Required. The device's kernel table (kernels.h; its device member equals `device`),
     * static or living as long as the instance. Its kernels run on the compute stream. */
    const loom_kernels_api *(*kernels)(loom_backend *self);

    /* ABI 1.13+: append below. */
} loom_backend_vtable;

/* ABI 1.4: the bound backend, for plugins that move their own bytes between host and device
 * (zero2's cpu_offload: pinned buffers, a copy stream, events). Obtain it with
 * api->service(host, LOOM_BACKEND_SERVICE, 4): NULL on a CPU run (no backend bound). Lives as
 * long as the run. A plugin may call every member of `vtable` on `instance` except probe,
 * create and destroy, under the threading rules above (one thread per instance: the thread
 * that drives the training step); streams, events and memory it creates it destroys. */
#define LOOM_BACKEND_SERVICE "loom.backend/1"

/* Built by the host, owned by it for the run, read-only to plugins. Both members Required
 * (never NULL) and since 1.4. */
typedef struct loom_backend_service {
    LOOM_STRUCT_HEADER;
    const loom_backend_vtable *vtable; /* the bound backend's                               */
    loom_backend *instance;            /* the bound device                                   */

    /* ABI 1.13+: append below. */
} loom_backend_service;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(offsetof(loom_backend_vtable, probe) == 24, "backend vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_backend_vtable) == 184, "backend vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_device_info) == 184, "loom_device_info layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_backend_service) == 32, "loom_backend_service layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_BACKEND_H */
