/*
 * doctor.h - what `loom doctor` inspects on the machine (docs/gpu.md#loom-doctor): the CUDA
 * toolkits installed, the host compiler a CUDA build would use, the NVIDIA driver and the
 * CUDA libraries the cuda plugin needs. Nothing here links CUDA: files are read, the driver
 * and the libraries are opened with dlopen and closed again.
 */
#ifndef LOOM_TOOLS_DOCTOR_H
#define LOOM_TOOLS_DOCTOR_H

#include <stddef.h>

#define DOCTOR_MAX_TOOLKITS 16

typedef struct doctor_toolkit {
    char root[4096];    /* real path of the toolkit folder                               */
    char found_as[256]; /* how it was found: "CUDA_HOME", "PATH", "/usr/local/cuda-13.0" */
    int version;        /* CUDART_VERSION (1000 * major + 10 * minor); 0 = unknown        */
    int has_nvcc;       /* bin/nvcc is executable                                        */
    int max_gcc;        /* the newest gcc major its host_config.h accepts; 0 = unknown   */
} doctor_toolkit;

/* Every toolkit folder found, without repeats (by real path): $CUDA_HOME, $CUDA_PATH, the
 * folder above each nvcc on $PATH, /usr/local/cuda, /usr/local/cuda-*, /opt/cuda. Returns
 * the count; *build is the index of the toolkit a CUDA build would use ($CUDACXX's, else
 * PATH's nvcc, else /usr/local/cuda's, as CMake looks for nvcc), or -1. */
int doctor_find_toolkits(doctor_toolkit *out, int max, int *build);

/* The major version of the host C++ compiler nvcc would call (g++ on PATH, or
 * $CUDAHOSTCXX), with its version string in text; 0 when none runs. */
int doctor_host_compiler(char *text, size_t size);

/* The CUDA version the installed driver supports (cuDriverGetVersion through libcuda.so.1),
 * or 0 with why set (no kernel module, library missing, ...). */
int doctor_driver_version(char *why, size_t size);

/* "13.0" for 13000. */
void doctor_version_text(int version, char *buf, size_t size);

#endif
