/*
 * launch_gpus.h - which GPUs `loom launch` starts ranks on (DeepSpeed's launcher rules):
 * the visible devices (CUDA_VISIBLE_DEVICES when set, else every /dev/nvidiaN), narrowed by
 * --include or --exclude ("localhost:0,2", hosts joined with '@') and cut to --num_gpus.
 */
#ifndef LOOM_TOOLS_LAUNCH_GPUS_H
#define LOOM_TOOLS_LAUNCH_GPUS_H

#include <stddef.h>

#define LAUNCH_MAX_GPUS 64

/* Test-only: the number of GPUs the launcher believes this node has, instead of counting
 * /dev/nvidiaN (tests/launch/test_launch.py). */
#define LAUNCH_GPU_COUNT_ENV "LOOM_TEST_LAUNCH_GPUS"

typedef struct launch_gpus {
    int count;                          /* devices chosen; one rank each                  */
    char ids[LAUNCH_MAX_GPUS][48];      /* as CUDA_VISIBLE_DEVICES names them              */
    char visible[LAUNCH_MAX_GPUS * 49]; /* the chosen ids joined with ',': each rank's CUDA_VISIBLE_DEVICES */
} launch_gpus;

/* GPUs on this node: the test override, else /dev/nvidiaN device files (no CUDA linked). */
int launch_gpu_count(void);

/* Choose the GPUs. include/exclude: NULL or a spec; num_gpus: 0 = all that remain. Returns 1,
 * or 0 after writing a one-line reason to err. */
int launch_gpus_select(int node_gpus, const char *include, const char *exclude, long num_gpus, launch_gpus *out,
                       char *err, size_t err_size);

#endif
