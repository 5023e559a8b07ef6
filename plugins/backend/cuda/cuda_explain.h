/*
 * cuda_explain.h - why a CUDA backend cannot run here, in one line, from what the probe saw.
 * Pure: no CUDA headers, so the CPU test suite checks every sentence (tests/backend).
 */
#ifndef LOOM_CUDA_EXPLAIN_H
#define LOOM_CUDA_EXPLAIN_H

#include <stddef.h>

typedef struct cuda_probe_facts {
    int driver_found;           /* libcuda.so.1 opened                                        */
    const char *driver_error;   /* dlerror() when not                                         */
    int driver_version;         /* cuDriverGetVersion (1000 * major + 10 * minor), 0 unknown  */
    int runtime_version;        /* CUDART_VERSION the plugin was built with                   */
    int count_error;            /* cudaGetDeviceCount's cudaError_t (0 = success)              */
    const char *count_error_text; /* cudaGetErrorString of it                                  */
    int device_count;
    const char *visible_devices;  /* $CUDA_VISIBLE_DEVICES or NULL                             */
} cuda_probe_facts;

/* NULL when a device is usable, else writes the reason into buf and returns buf. */
const char *cuda_explain(const cuda_probe_facts *facts, char *buf, size_t size);

#endif
