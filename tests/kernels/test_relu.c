/* test_relu.c - lk_relu_* against the definition and finite differences. */
#include <math.h>

#include "kernel_test.h"
#include "lk_cpu.h"

static void test_forward(int64_t n)
{
    float *x = test_alloc(n), *y = test_alloc(n);
    test_fill(x, n, -2.0f, 2.0f);
    x[0] = 0.0f;
    x[n - 1] = -0.0f;
    x[n / 2] = NAN;
    lk_relu_forward(y, x, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (i != n / 2) bad += y[i] != (x[i] > 0.0f ? x[i] : 0.0f);
    CHECK(bad == 0);
    CHECK(isnan(y[n / 2])); /* PyTorch: relu(nan) = nan, so a NaN weight shows in the loss */
    free(x), free(y);
}

static void test_backward(void)
{
    /* Keep every input further than FD_EPS from the kink at 0. */
    enum { N = 23 };
    float x[N];
    for (int i = 0; i < N; i++) {
        const float u = test_uniform(0.05f, 2.0f);
        x[i] = i % 2 ? u : -u;
    }
    CHECK(test_unary_backward(lk_relu_forward, lk_relu_backward, x, N) == 0);

    /* At exactly 0 the derivative is 0, and a large array takes the threaded path. */
    const int64_t n = 100003;
    float *xs = test_alloc(n), *dout = test_alloc(n), *d = test_alloc(n);
    test_fill(xs, n, -1.0f, 1.0f);
    test_fill(dout, n, -1.0f, 1.0f);
    xs[5] = 0.0f;
    xs[7] = NAN;
    for (int64_t i = 0; i < n; i++) d[i] = 1.0f;
    lk_relu_backward(d, xs, dout, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += d[i] != 1.0f + (xs[i] > 0.0f || i == 7 ? dout[i] : 0.0f);
    CHECK(bad == 0);
    CHECK(d[5] == 1.0f);
    free(xs), free(dout), free(d);
}

int main(void)
{
    test_forward(17);
    test_forward(100003);
    test_backward();
    return test_finish("test_relu");
}
