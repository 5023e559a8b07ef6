/* test_gelu.c - lk_gelu_* against a double-precision reference, finite differences, and the
 * saturated tails where a naive backward turns into NaN. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test.h"
#include "lk_cpu.h"

static double gelu_ref(double x)
{
    const double k = sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
}

/* gelu'(x) in double; sech^2 as 1 / cosh^2, exact enough for |x| <= 10 (|u| <= 44). */
static double gelu_grad_ref(double x)
{
    const double k = sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), c = cosh(u);
    return 0.5 * (1.0 + tanh(u)) + 0.5 * x * k * (1.0 + 3.0 * 0.044715 * x * x) / (c * c);
}

static void test_forward(int64_t n)
{
    float *x = test_alloc(n), *y = test_alloc(n);
    test_fill(x, n, -6.0f, 6.0f);
    lk_gelu_forward(y, x, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double r = gelu_ref(x[i]);
        bad += !(fabs(y[i] - r) <= 1e-6 + 1e-5 * fabs(r));
    }
    CHECK(bad == 0);
    /* Known values (PyTorch gelu(approximate='tanh')). */
    const float pts[3] = {1.0f, -1.0f, 0.0f};
    float out[3];
    lk_gelu_forward(out, pts, 3);
    CHECK_CLOSE(out[0], 0.8411920070648193, 1e-6, 1e-6);
    CHECK_CLOSE(out[1], -0.15880800783634186, 1e-6, 1e-6);
    CHECK(out[2] == 0.0f);
    free(x), free(y);
}

static void test_backward(void)
{
    enum { N = 31 };
    float x[N];
    test_fill(x, N, -5.0f, 5.0f);
    x[0] = 0.0f;
    x[1] = 9.9f; /* just inside the saturation cut */
    x[2] = -9.9f;
    CHECK(test_unary_backward(lk_gelu_forward, lk_gelu_backward, x, N) == 0);
}

/* In the tails the derivative is exactly 1 or 0, finite even when x*x overflows, and
 * continuous across the |x| = 10 cut. */
static void test_tails(void)
{
    const float x[8] = {20.0f, -20.0f, 1e20f, -1e20f, 3e38f, -3e38f, 9.999f, 10.001f};
    const float dout[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    float d[8] = {0}, y[8];
    lk_gelu_backward(d, x, dout, 8);
    lk_gelu_forward(y, x, 8);
    for (int i = 0; i < 8; i++) CHECK(isfinite(d[i]));
    CHECK(d[0] == 1.0f && d[2] == 1.0f && d[4] == 1.0f);
    CHECK(d[1] == 0.0f && d[3] == 0.0f && d[5] == 0.0f);
    CHECK_CLOSE(d[6], d[7], 1e-6, 0);
    CHECK(y[0] == 20.0f && y[2] == 1e20f);
    CHECK(y[1] == 0.0f && y[3] == 0.0f);
}

/* 1e5 evenly spaced points over [-10, 10] (the kernel's tanh is built on lk_expf, not
 * tanhf): forward and derivative within 2e-6 absolute of the double reference. */
static void test_accuracy(void)
{
    enum { N = 100000 };
    float *x = test_alloc(N), *y = test_alloc(N), *d = test_alloc(N), *one = test_alloc(N);
    for (int64_t i = 0; i < N; i++) {
        x[i] = (float)(-10.0 + 20.0 * (double)i / (N - 1));
        one[i] = 1.0f;
        d[i] = 0.0f;
    }
    lk_gelu_forward(y, x, N);
    lk_gelu_backward(d, x, one, N);
    double err_f = 0.0, err_d = 0.0;
    int bad = 0;
    for (int64_t i = 0; i < N; i++) {
        const double ef = fabs(y[i] - gelu_ref(x[i])), ed = fabs(d[i] - gelu_grad_ref(x[i]));
        bad += !(ef <= 2e-6) + !(ed <= 2e-6); /* also catches NaN */
        err_f = ef > err_f ? ef : err_f;
        err_d = ed > err_d ? ed : err_d;
    }
    CHECK(bad == 0);
    printf("gelu on [-10, 10]: max abs error forward %.2e, derivative %.2e\n", err_f, err_d);
    free(x), free(y), free(d), free(one);
}

/* Infinities, NaN and the far tails, repeated through an array long enough that they pass
 * through the vectorised body of the loop as well as its remainder. gelu(+inf) = +inf,
 * gelu(-inf) = 0 with derivatives 1 and 0 (the limits); NaN in, NaN out. Past |x| ~ 10.01
 * saturation is exact: gelu(x) = x or 0, gelu'(x) = 1 or 0. */
static void test_nonfinite(void)
{
    enum { K = 8, N = 8 * K + 5 };
    const float v[K] = {INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX, 10.01f, -10.01f};
    float x[N], y[N], d[N], dout[N];
    for (int i = 0; i < N; i++) {
        x[i] = v[i % K];
        d[i] = 0.5f;
        dout[i] = 2.0f;
    }
    lk_gelu_forward(y, x, N);
    lk_gelu_backward(d, x, dout, N);
    for (int i = 0; i < N; i++) {
        if (isnan(x[i])) {
            CHECK(isnan(y[i]) && isnan(d[i]));
        } else if (x[i] > 0.0f) {
            CHECK(y[i] == x[i]);
            CHECK(d[i] == 2.5f);
        } else {
            CHECK(y[i] == 0.0f);
            CHECK(d[i] == 0.5f);
        }
    }
    /* Exact saturation over the whole far tail, 10.01 <= |x| <= 1e38. */
    enum { M = 4000 };
    float *xs = test_alloc(M), *ys = test_alloc(M), *ds = test_alloc(M), *ones = test_alloc(M);
    for (int i = 0; i < M; i++) {
        const float m = (float)(10.01 * pow(1e37, (double)(i / 2) / (M / 2 - 1)));
        xs[i] = i % 2 ? -m : m;
        ones[i] = 1.0f;
        ds[i] = 0.0f;
    }
    lk_gelu_forward(ys, xs, M);
    lk_gelu_backward(ds, xs, ones, M);
    int bad = 0;
    for (int i = 0; i < M; i++)
        bad += xs[i] > 0.0f ? !(ys[i] == xs[i] && ds[i] == 1.0f) : !(ys[i] == 0.0f && ds[i] == 0.0f);
    CHECK(bad == 0);
    free(xs), free(ys), free(ds), free(ones);
}

/* The threaded path (n >= LK_OMP_MIN_WORK) gives the same bits as one-element calls and stays
 * within the accuracy bound, tails included. */
static void test_large(int64_t n)
{
    float *x = test_alloc(n), *dout = test_alloc(n), *d = test_alloc(n), *y = test_alloc(n);
    float d1[1], y1[1];
    test_fill(x, n, -12.0f, 12.0f);
    test_fill(dout, n, -1.0f, 1.0f);
    for (int64_t i = 0; i < n; i++) d[i] = 0.25f;
    lk_gelu_forward(y, x, n);
    lk_gelu_backward(d, x, dout, n);
    int bad = 0, bad_ref = 0;
    for (int64_t i = 0; i < n; i++) {
        const double r = gelu_ref(x[i]), rd = 0.25 + gelu_grad_ref(x[i]) * dout[i];
        bad_ref += !(fabs(y[i] - r) <= 2e-6) + !(fabs(d[i] - rd) <= 2e-6);
        if (i % 97) continue;
        d1[0] = 0.25f;
        lk_gelu_backward(d1, x + i, dout + i, 1);
        lk_gelu_forward(y1, x + i, 1);
        bad += d1[0] != d[i] || y1[0] != y[i];
    }
    CHECK(bad == 0);
    CHECK(bad_ref == 0);
    free(x), free(dout), free(d), free(y);
}

/* ABI 1.9's one-pass GELU on stored dtypes against what it replaces, bit for bit: convert to
 * f32, gelu_forward, convert to out_dtype; zeroing, convert, gelu_backward. Every dtype pair,
 * lengths around the 512-element blocks and past the threading threshold, infinities, NaN and
 * -0 among the inputs, dinp aliasing dout, and unknown dtypes doing nothing. */
static void test_cast(int64_t n)
{
    static const uint32_t dtypes[3] = {LOOM_DTYPE_F32, LOOM_DTYPE_BF16, LOOM_DTYPE_F16};
    float *x = test_alloc(n), *wide = test_alloc(n), *y = test_alloc(n), *dout = test_alloc(n);
    float *want = test_alloc(n), *got = test_alloc(n);
    unsigned char *in = malloc((size_t)n * 4), *out = malloc((size_t)n * 4), *ref = malloc((size_t)n * 4);
    test_fill(x, n, -14.0f, 14.0f);
    test_fill(dout, n, -1.0f, 1.0f);
    const float special[6] = {INFINITY, -INFINITY, NAN, -0.0f, 70000.0f, -1e-30f};
    for (int64_t i = 0; i < n; i += 37)
        x[i] = special[(i / 37) % 6];
    for (int64_t i = 5; i < n; i += 41)
        dout[i] = i % 2 ? -0.0f : 0.0f;
    int bad_fwd = 0, bad_bwd = 0;
    for (int a = 0; a < 3; a++) {
        const uint32_t it = dtypes[a];
        const size_t is = loom_dtype_size(it);
        lk_convert(in, it, x, LOOM_DTYPE_F32, n);
        lk_convert(wide, LOOM_DTYPE_F32, in, it, n);
        lk_gelu_forward(y, wide, n);
        for (int b = 0; b < 3; b++) {
            const uint32_t ot = dtypes[b];
            const size_t os = loom_dtype_size(ot);
            lk_convert(ref, ot, y, LOOM_DTYPE_F32, n);
            memset(out, 0xA5, (size_t)n * os);
            lk_gelu_forward_cast(out, ot, in, it, n);
            bad_fwd += memcmp(out, ref, (size_t)n * os) != 0;
        }
        /* In place, equal element sizes. */
        memcpy(out, in, (size_t)n * is);
        lk_gelu_forward_cast(out, it, out, it, n);
        lk_convert(ref, it, y, LOOM_DTYPE_F32, n);
        bad_fwd += memcmp(out, ref, (size_t)n * is) != 0;

        memset(want, 0, (size_t)n * sizeof *want);
        lk_gelu_backward(want, wide, dout, n);
        for (int64_t i = 0; i < n; i++)
            got[i] = NAN; /* written, never read */
        lk_gelu_backward_cast(got, in, it, dout, n);
        bad_bwd += memcmp(got, want, (size_t)n * sizeof *got) != 0;
        memcpy(got, dout, (size_t)n * sizeof *got); /* dinp == dout */
        lk_gelu_backward_cast(got, in, it, got, n);
        bad_bwd += memcmp(got, want, (size_t)n * sizeof *got) != 0;
    }
    if (bad_fwd || bad_bwd)
        fprintf(stderr, "gelu cast, n = %lld: %d forward, %d backward differ\n", (long long)n, bad_fwd, bad_bwd);
    CHECK(bad_fwd == 0 && bad_bwd == 0);
    /* An unknown dtype leaves the output as it was. */
    memset(out, 0x5A, 4);
    memcpy(ref, out, 4);
    lk_gelu_forward_cast(out, 77, in, LOOM_DTYPE_BF16, 1);
    lk_gelu_forward_cast(out, LOOM_DTYPE_BF16, in, 77, 1);
    got[0] = 3.0f;
    lk_gelu_backward_cast(got, in, 77, dout, 1);
    CHECK(memcmp(out, ref, 4) == 0 && got[0] == 3.0f);
    free(x), free(wide), free(y), free(dout), free(want), free(got), free(in), free(out), free(ref);
}

int main(void)
{
    test_forward(19);
    test_forward(50000);
    test_backward();
    test_tails();
    test_accuracy();
    test_nonfinite();
    test_large(70001);
    test_large(3 * 1048576 + 7);
    test_cast(1);
    test_cast(511);
    test_cast(1025);
    test_cast(70001);
    return test_finish("test_gelu");
}
