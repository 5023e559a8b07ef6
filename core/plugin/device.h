/*
 * device.h - the run's compute device: the CPU (served by the host itself) or a backend
 * plugin (abi/loom/backend.h) bound to one GPU. Chooses with HF's rules, opens the backend,
 * and routes api->alloc(..., LOOM_DEVICE_CUDA, ...) to it (docs/gpu.md#device-selection).
 *
 * One device per process: the state is process-wide, set on the init thread before any
 * plugin instance exists and closed after the last one is gone.
 */
#ifndef LOOM_CORE_DEVICE_H
#define LOOM_CORE_DEVICE_H

#include <loom/backend.h>
#include <loom/loom.h>

#include "plugin_loader.h"

/* What decides the device. */
typedef struct loom_device_request {
    int no_cuda;             /* --no_cuda / --use_cpu                                         */
    int named;               /* a backend was named with --plugin (it must then be usable)   */
    int local_rank;          /* LOCAL_RANK of a launched run, -1 otherwise                    */
    int local_world_size;    /* processes on this node (1 when not launched)                  */
    loom_status probe;       /* the backend's probe(), LOOM_E_NOT_FOUND when there is none    */
    const char *probe_error; /* its one-line reason when probe != LOOM_OK                     */
    int32_t device_count;    /* devices probe() reported                                      */
    const char *backend_name;
} loom_device_request;

typedef struct loom_device_choice {
    uint32_t device;   /* LOOM_DEVICE_CPU or the backend's device                               */
    int32_t index;     /* which one: LOCAL_RANK under a launcher, else 0                        */
} loom_device_choice;

/* HF's rules, as a pure function: --no_cuda forces the CPU; a usable backend is used; a named
 * one that is not usable is an error that repeats its reason; LOCAL_RANK picks the device
 * (an error when there are fewer devices than LOCAL_RANK needs). Writes loom_error on failure. */
loom_status loom_device_choose(const loom_device_request *req, uint32_t backend_device, loom_device_choice *out);

/* Probe `backend` (NULL: look for the "cuda" plugin, silently taking the CPU when it is not
 * installed or cannot be opened), choose, and bind the device. `config` is the backend's
 * section (may be NULL). On success the device is current for the process. */
loom_status loom_device_open(const loom_plugin *backend, int named, int no_cuda, int local_rank,
                             int local_world_size, const loom_config *config);

/* Waits for the device, frees what the core still holds there, destroys the backend. */
void loom_device_close(void);

/* The bound device: LOOM_DEVICE_CPU (the default) or the backend's. */
uint32_t loom_device_current(void);
int32_t loom_device_index(void);
/* The bound backend (NULL on the CPU). */
const loom_backend_vtable *loom_device_backend(loom_backend **instance);
/* The bound backend as the "loom.backend/1" service lends it to plugins (NULL on the CPU). */
const loom_backend_service *loom_device_service(void);
/* The kernel table of the bound device. */
const loom_kernels_api *loom_device_kernels(void);
/* "cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90, driver 13.0, runtime 13.0)" or "cpu". */
void loom_device_describe(char *buf, size_t size);

/* Device memory, counted (host.c's alloc routes here for a non-CPU device). */
void *loom_device_alloc(size_t bytes, uint32_t device, int32_t index);
/* 1 and frees when ptr came from loom_device_alloc, else 0 (the caller frees host memory). */
int loom_device_free(void *ptr);
uint64_t loom_device_allocated_bytes(void);
uint64_t loom_device_peak_bytes(void);
uint64_t loom_device_allocations(void);

/* Moves bytes between host and the bound device (or host to host on the CPU); waits. */
loom_status loom_device_copy(void *dst, const void *src, size_t bytes, uint32_t direction);
/* Waits for the device (a no-op on the CPU); reports a kernel's error. */
loom_status loom_device_synchronize(void);

#endif
