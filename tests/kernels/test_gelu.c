/* test_gelu.c - lk_gelu_* against a double-precision reference, finite differences, and the
 * saturated tails where a naive backward turns into NaN. */
#include "kernel_test.h"
#include "lk_cpu.h"

static double gelu_ref(double x)
{
    const double k = sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
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

/* The threaded path gives the same result as the element-at-a-time reference. */
static void test_large(void)
{
    const int64_t n = 70001;
    float *x = test_alloc(n), *dout = test_alloc(n), *d = test_alloc(n), *d1 = test_alloc(1);
    test_fill(x, n, -4.0f, 4.0f);
    test_fill(dout, n, -1.0f, 1.0f);
    for (int64_t i = 0; i < n; i++) d[i] = 0.25f;
    lk_gelu_backward(d, x, dout, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i += 97) {
        d1[0] = 0.25f;
        lk_gelu_backward(d1, x + i, dout + i, 1);
        bad += d1[0] != d[i];
    }
    CHECK(bad == 0);
    free(x), free(dout), free(d), free(d1);
}

int main(void)
{
    test_forward(19);
    test_forward(50000);
    test_backward();
    test_tails();
    test_large();
    return test_finish("test_gelu");
}
