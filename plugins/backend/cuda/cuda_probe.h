/*
 * cuda_probe.h - the CUDA backend's probe (cuda_probe.c).
 */
#ifndef LOOM_CUDA_PROBE_H
#define LOOM_CUDA_PROBE_H

#include <stddef.h>

/* NULL and *device_count >= 1 when a device is usable; else the reason, written into buf.
 * *driver_version: cuDriverGetVersion's answer, 0 without a driver. */
const char *cuda_probe(int *device_count, int *driver_version, char *buf, size_t size);

#endif
