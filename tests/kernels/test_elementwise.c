/* test_elementwise.c - add (including out aliasing either input) and accumulate, on small and
 * threaded sizes. */
#include "kernel_test.h"
#include "lk_cpu.h"

static void test_add(int64_t n)
{
    float *a = test_alloc(n), *b = test_alloc(n), *out = test_alloc(n), *x = test_alloc(n);
    test_fill(a, n, -1.0f, 1.0f);
    test_fill(b, n, -1.0f, 1.0f);
    lk_add(out, a, b, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += out[i] != a[i] + b[i];
    CHECK(bad == 0);
    /* out == a, then out == b, then all three the same. */
    memcpy(x, a, (size_t)n * sizeof *x);
    lk_add(x, x, b, n);
    CHECK(memcmp(x, out, (size_t)n * sizeof *x) == 0);
    memcpy(x, b, (size_t)n * sizeof *x);
    lk_add(x, a, x, n);
    CHECK(memcmp(x, out, (size_t)n * sizeof *x) == 0);
    memcpy(x, a, (size_t)n * sizeof *x);
    lk_add(x, x, x, n);
    bad = 0;
    for (int64_t i = 0; i < n; i++) bad += x[i] != 2.0f * a[i];
    CHECK(bad == 0);
    free(a), free(b), free(out), free(x);
}

static void test_accumulate(int64_t n)
{
    float *d = test_alloc(n), *d0 = test_alloc(n), *s = test_alloc(n);
    test_fill(d0, n, -1.0f, 1.0f);
    test_fill(s, n, -1.0f, 1.0f);
    memcpy(d, d0, (size_t)n * sizeof *d);
    lk_accumulate(d, s, n);
    lk_accumulate(d, s, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += d[i] != (d0[i] + s[i]) + s[i];
    CHECK(bad == 0);
    free(d), free(d0), free(s);
}

int main(void)
{
    const int64_t sizes[4] = {1, 17, 1000, 256 * 768 + 3};
    for (int i = 0; i < 4; i++) {
        test_add(sizes[i]);
        test_accumulate(sizes[i]);
    }
    lk_add(NULL, NULL, NULL, 0); /* empty: touches nothing */
    lk_accumulate(NULL, NULL, 0);
    return test_finish("test_elementwise");
}
