/*
 * cuda_probe.c - is a CUDA device usable here? The driver (libcuda.so.1) is opened with dlopen
 * rather than linked: the CUDA runtime this plugin links loads it the same way, so a machine
 * without a driver still loads the plugin and gets cuda_explain's sentence, not a loader error.
 */
#include "cuda_probe.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdlib.h>

#include "cuda_explain.h"

const char *cuda_probe(int *device_count, int *driver_version, char *buf, size_t size)
{
    cuda_probe_facts f = {.runtime_version = CUDART_VERSION, .visible_devices = getenv("CUDA_VISIBLE_DEVICES")};
    *device_count = 0;
    *driver_version = 0;
    void *driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    f.driver_found = driver != NULL;
    if (!driver) {
        f.driver_error = dlerror();
        return cuda_explain(&f, buf, size);
    }
    typedef int (*get_version_fn)(int *);
    get_version_fn get_version = (get_version_fn)dlsym(driver, "cuDriverGetVersion");
    if (get_version && get_version(&f.driver_version) != 0) f.driver_version = 0;
    *driver_version = f.driver_version;
    /* Ask the runtime only when the driver can run it: an old driver would make it fail with
     * a less useful message. */
    if (!cuda_explain(&f, buf, size)) {
        cudaError_t err = cudaGetDeviceCount(&f.device_count);
        f.count_error = (int)err;
        f.count_error_text = err != cudaSuccess ? cudaGetErrorString(err) : NULL;
        if (err != cudaSuccess) (void)cudaGetLastError(); /* clear the sticky-free error */
    }
    /* The handle stays open: the runtime holds its own reference and unloading a driver
     * library under a live runtime is never safe. */
    *device_count = f.device_count;
    return cuda_explain(&f, buf, size);
}
