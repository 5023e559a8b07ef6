/* kernel_test.h - what the kernel tests share: a deterministic RNG for test data and the
 * finite-difference step and tolerances every *_backward check uses. */
#ifndef LOOM_KERNEL_TEST_H
#define LOOM_KERNEL_TEST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* Central differences in float: eps 1e-3 keeps the truncation error (~eps^2) and the float
 * rounding of the objective (~1e-7 * |objective| / eps) both well under the tolerance. */
#define FD_EPS 1e-3f
#define FD_RTOL 1e-2
#define FD_ATOL 2e-3

static uint64_t test_rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t test_rng_next(void)
{
    uint64_t z = (test_rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float test_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(test_rng_next() >> 40) / (double)(1ull << 24));
}

static inline void test_fill(float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++) x[i] = test_uniform(lo, hi);
}

static inline float *test_alloc(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (!p) abort();
    return p;
}

/* A double copy of n floats, for a reference computed in double. */
static inline double *test_dalloc_from(const float *x, int64_t n)
{
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (!d) abort();
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* How many of got[i] miss want[i] by more than atol + rtol |want[i]|; the first three are
 * printed. */
static inline int test_mismatches(const float *got, const double *want, int64_t n, double atol, double rtol)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
            if (bad++ < 3) fprintf(stderr, "  [%ld] %.9g vs %.9g\n", (long)i, got[i], want[i]);
        }
    }
    return bad;
}

/* The same against a float reference (another kernel's result). */
static inline int64_t test_far_off(const float *got, const float *want, int64_t n, double atol, double rtol)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - (double)want[i]) <= atol + rtol * fabs((double)want[i]))) {
            if (bad < 3) fprintf(stderr, "  [%lld] %.9g vs %.9g\n", (long long)i, got[i], want[i]);
            bad++;
        }
    return bad;
}

/* Objective sum(out * w) in double, so the finite difference sees the float outputs'
 * changes and not the rounding of a float sum. */
static inline double test_dot(const float *out, const float *w, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)out[i] * (double)w[i];
    return s;
}

typedef void (*test_unary_fwd)(float *out, const float *inp, int64_t n);
typedef void (*test_unary_bwd)(float *dinp, const float *inp, const float *dout, int64_t n);

/* Check an elementwise backward against central differences of sum(fwd(x) * w), starting
 * from non-zero dinp so that overwriting instead of accumulating fails. Returns the number of
 * mismatches (each also counted as a failed CHECK). */
static inline int test_unary_backward(test_unary_fwd fwd, test_unary_bwd bwd, const float *x,
                                      int64_t n)
{
    float *xs = test_alloc(n), *w = test_alloc(n), *out = test_alloc(n);
    float *d = test_alloc(n), *d0 = test_alloc(n);
    memcpy(xs, x, (size_t)n * sizeof *x);
    test_fill(w, n, -1.0f, 1.0f);
    test_fill(d0, n, -1.0f, 1.0f);
    memcpy(d, d0, (size_t)n * sizeof *d);
    bwd(d, xs, w, n);
    const int before = test_failures;
    for (int64_t i = 0; i < n; i++) {
        const float x0 = xs[i];
        xs[i] = x0 + FD_EPS;
        fwd(out, xs, n);
        const double lp = test_dot(out, w, n);
        xs[i] = x0 - FD_EPS;
        fwd(out, xs, n);
        const double lm = test_dot(out, w, n);
        xs[i] = x0;
        CHECK_CLOSE(d[i] - d0[i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL, FD_RTOL);
    }
    free(xs), free(w), free(out), free(d), free(d0);
    return test_failures - before;
}

#endif
