/*
 * bench_clock.h - the benchmarks' clock and the order their medians sort by. Header-only, so
 * that each benchmark stays one source file (some link nothing but OpenBLAS).
 */
#ifndef LOOM_BENCH_CLOCK_H
#define LOOM_BENCH_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* qsort's comparison for doubles, ascending. */
static inline int bench_compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
