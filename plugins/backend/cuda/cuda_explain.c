/*
 * cuda_explain.c - the refusal sentences of the CUDA backend (see cuda_explain.h): each names
 * what is missing and what to do.
 */
#include "cuda_explain.h"

#include <stdio.h>

const char *cuda_explain(const cuda_probe_facts *f, char *buf, size_t size)
{
    if (!f->driver_found) {
        snprintf(buf, size, "no NVIDIA driver: libcuda.so.1 cannot be opened (%s); install the driver, or train on the "
                            "CPU with --no_cuda",
                 f->driver_error && *f->driver_error ? f->driver_error : "not found");
        return buf;
    }
    /* CUDA's minor-version compatibility: a driver of the runtime's major runs it; an older
     * major cannot. */
    if (f->driver_version > 0 && f->runtime_version > 0 && f->driver_version / 1000 < f->runtime_version / 1000) {
        snprintf(buf, size,
                 "the NVIDIA driver supports CUDA %d.%d, older than the CUDA %d.%d loom's cuda plugin was built "
                 "with: update the driver, or rebuild loom with a CUDA %d toolkit",
                 f->driver_version / 1000, f->driver_version % 1000 / 10, f->runtime_version / 1000,
                 f->runtime_version % 1000 / 10, f->driver_version / 1000);
        return buf;
    }
    if (f->count_error != 0 || f->device_count < 1) {
        const char *visible = f->visible_devices;
        if (visible)
            snprintf(buf, size, "no GPU visible (CUDA_VISIBLE_DEVICES='%s'%s%s)", visible, f->count_error ? ": " : "",
                     f->count_error && f->count_error_text ? f->count_error_text : "");
        else
            snprintf(buf, size, "no GPU visible%s%s%s", f->count_error ? " (" : "",
                     f->count_error && f->count_error_text ? f->count_error_text : "", f->count_error ? ")" : "");
        return buf;
    }
    return NULL;
}
