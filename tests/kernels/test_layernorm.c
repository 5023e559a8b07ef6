/* test_layernorm.c - layer normalisation against a double-precision reference (values, mean,
 * rstd, and the analytic backward), finite differences for every input, accumulation, NULL
 * gradient outputs, a large mean (cancellation), and the threaded path against one thread. */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <omp.h>

#define EPS 1e-5f

static void ref_forward(double *out, double *mean, double *rstd, const float *x, const float *w,
                        const float *bias, int64_t N, int64_t C)
{
    for (int64_t n = 0; n < N; n++) {
        double m = 0.0, v = 0.0;
        for (int64_t c = 0; c < C; c++) m += x[n * C + c];
        m /= (double)C;
        for (int64_t c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        v /= (double)C;
        const double s = 1.0 / sqrt(v + (double)EPS);
        for (int64_t c = 0; c < C; c++) out[n * C + c] = (x[n * C + c] - m) * s * w[c] + bias[c];
        mean[n] = m, rstd[n] = s;
    }
}

/* The textbook backward in double, from the reference statistics. */
static void ref_backward(double *dx, double *dw, double *db, const float *g, const float *x,
                         const float *w, int64_t N, int64_t C)
{
    double *out = malloc((size_t)(N * C) * sizeof *out), *mean = malloc((size_t)N * sizeof *mean);
    double *rstd = malloc((size_t)N * sizeof *rstd);
    float *zeros = calloc((size_t)C, sizeof *zeros);
    ref_forward(out, mean, rstd, x, w, zeros, N, C);
    for (int64_t n = 0; n < N; n++) {
        double a = 0.0, bsum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            const double norm = (x[n * C + c] - mean[n]) * rstd[n], dn = (double)g[n * C + c] * w[c];
            a += dn, bsum += dn * norm;
            dw[c] += (double)g[n * C + c] * norm;
            db[c] += g[n * C + c];
        }
        a /= (double)C, bsum /= (double)C;
        for (int64_t c = 0; c < C; c++) {
            const double norm = (x[n * C + c] - mean[n]) * rstd[n], dn = (double)g[n * C + c] * w[c];
            dx[n * C + c] += (dn - a - norm * bsum) * rstd[n];
        }
    }
    free(out), free(mean), free(rstd), free(zeros);
}

/* Forward and backward against the reference; offset shifts every input (a large mean). */
static void test_reference(int64_t N, int64_t C, float offset)
{
    float *x = test_alloc(N * C), *w = test_alloc(C), *b = test_alloc(C), *out = test_alloc(N * C);
    float *mean = test_alloc(N), *rstd = test_alloc(N), *g = test_alloc(N * C);
    float *dx = test_alloc(N * C), *dw = test_alloc(C), *db = test_alloc(C);
    double *rout = malloc((size_t)(N * C) * sizeof *rout), *rm = malloc((size_t)N * sizeof *rm);
    double *rs = malloc((size_t)N * sizeof *rs);
    test_fill(x, N * C, offset - 2.0f, offset + 2.0f);
    test_fill(w, C, 0.5f, 1.5f);
    test_fill(b, C, -0.5f, 0.5f);
    test_fill(g, N * C, -1.0f, 1.0f);
    test_fill(dx, N * C, -1.0f, 1.0f);
    test_fill(dw, C, -1.0f, 1.0f);
    test_fill(db, C, -1.0f, 1.0f);
    lk_layernorm_forward(out, mean, rstd, x, w, b, N, C, EPS);
    ref_forward(rout, rm, rs, x, w, b, N, C);
    /* The mean is a float: (x - mean) carries up to half an ulp of |mean| (3e-5 at 1000),
     * times rstd, however the mean was summed. */
    const double floor = 2e-5 + 6e-8 * (double)fabsf(offset) * 1.8;
    CHECK(test_mismatches(out, rout, N * C, floor, 1e-5) == 0);
    CHECK(test_mismatches(mean, rm, N, 1e-6, 1e-6) == 0);
    CHECK(test_mismatches(rstd, rs, N, 0.0, 1e-4) == 0);

    double *rdx = test_dalloc_from(dx, N * C), *rdw = test_dalloc_from(dw, C), *rdb = test_dalloc_from(db, C);
    lk_layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C);
    ref_backward(rdx, rdw, rdb, g, x, w, N, C);
    /* dinp subtracts nearly equal terms; its error scales with rstd. */
    CHECK(test_mismatches(dx, rdx, N * C, 1e-4, 1e-4) == 0);
    CHECK(test_mismatches(dw, rdw, C, 1e-4 * (double)N / 16.0, 1e-4) == 0);
    CHECK(test_mismatches(db, rdb, C, 1e-4 * (double)N / 16.0, 1e-4) == 0);
    free(x), free(w), free(b), free(out), free(mean), free(rstd), free(g), free(dx), free(dw);
    free(db), free(rout), free(rm), free(rs), free(rdx), free(rdw), free(rdb);
}

/* Finite differences of sum(out * w) for inp, weight and bias, from non-zero gradients. */
static void test_fd(void)
{
    enum { N = 7, C = 12 };
    float x[N * C], w[C], b[C], out[N * C], mean[N], rstd[N], obj[N * C];
    float dx[N * C], dw[C], db[C], dx0[N * C], dw0[C], db0[C];
    test_fill(x, N * C, -2.0f, 2.0f);
    test_fill(w, C, 0.5f, 1.5f);
    test_fill(b, C, -0.5f, 0.5f);
    test_fill(obj, N * C, -1.0f, 1.0f);
    test_fill(dx0, N * C, -1.0f, 1.0f);
    test_fill(dw0, C, -1.0f, 1.0f);
    test_fill(db0, C, -1.0f, 1.0f);
    memcpy(dx, dx0, sizeof dx), memcpy(dw, dw0, sizeof dw), memcpy(db, db0, sizeof db);
    lk_layernorm_forward(out, mean, rstd, x, w, b, N, C, EPS);
    lk_layernorm_backward(dx, dw, db, obj, x, w, mean, rstd, N, C);
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db}, *grads0[3] = {dx0, dw0, db0};
    const int64_t sizes[3] = {N * C, C, C};
    for (int p = 0; p < 3; p++) {
        for (int64_t i = 0; i < sizes[p]; i++) {
            const float v0 = params[p][i];
            params[p][i] = v0 + FD_EPS;
            lk_layernorm_forward(out, mean, rstd, x, w, b, N, C, EPS);
            const double lp = test_dot(out, obj, N * C);
            params[p][i] = v0 - FD_EPS;
            lk_layernorm_forward(out, mean, rstd, x, w, b, N, C, EPS);
            const double lm = test_dot(out, obj, N * C);
            params[p][i] = v0;
            CHECK_CLOSE(grads[p][i] - grads0[p][i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL,
                        FD_RTOL);
        }
    }
}

/* Each gradient output may be NULL; the others come out the same as with all three. */
static void test_null(void)
{
    enum { N = 5, C = 9 };
    float x[N * C], w[C], b[C], out[N * C], mean[N], rstd[N], g[N * C];
    float dx[N * C] = {0}, dw[C] = {0}, db[C] = {0}, dx2[N * C] = {0}, dw2[C] = {0}, db2[C] = {0};
    test_fill(x, N * C, -2.0f, 2.0f);
    test_fill(w, C, 0.5f, 1.5f);
    test_fill(b, C, -0.5f, 0.5f);
    test_fill(g, N * C, -1.0f, 1.0f);
    lk_layernorm_forward(out, mean, rstd, x, w, b, N, C, EPS);
    float out2[N * C];
    lk_layernorm_forward(out2, NULL, NULL, x, w, b, N, C, EPS); /* nothing saved: same output */
    CHECK(memcmp(out, out2, sizeof out) == 0);
    lk_layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C);
    lk_layernorm_backward(dx2, NULL, NULL, g, x, w, mean, rstd, N, C);
    lk_layernorm_backward(NULL, dw2, NULL, g, x, w, mean, rstd, N, C);
    lk_layernorm_backward(NULL, NULL, db2, g, x, w, mean, rstd, N, C);
    lk_layernorm_backward(NULL, NULL, NULL, g, x, w, mean, rstd, N, C);
    CHECK(memcmp(dx, dx2, sizeof dx) == 0);
    CHECK(memcmp(dw, dw2, sizeof dw) == 0);
    CHECK(memcmp(db, db2, sizeof db) == 0);
}

/* GPT-2 shapes on the threaded path: bitwise the same for 1 and 3 threads. */
static void test_threads(void)
{
    const int64_t N = 256, C = 768;
    float *x = test_alloc(N * C), *w = test_alloc(C), *b = test_alloc(C), *g = test_alloc(N * C);
    float *o[2], *m[2], *r[2], *dx[2], *dw[2], *db[2];
    test_fill(x, N * C, -2.0f, 2.0f);
    test_fill(w, C, 0.5f, 1.5f);
    test_fill(b, C, -0.5f, 0.5f);
    test_fill(g, N * C, -1.0f, 1.0f);
    const int saved = omp_get_max_threads();
    for (int i = 0; i < 2; i++) {
        o[i] = test_alloc(N * C), m[i] = test_alloc(N), r[i] = test_alloc(N);
        dx[i] = calloc((size_t)(N * C), sizeof(float)), dw[i] = calloc((size_t)C, sizeof(float));
        db[i] = calloc((size_t)C, sizeof(float));
        omp_set_num_threads(i == 0 ? 1 : 3);
        lk_layernorm_forward(o[i], m[i], r[i], x, w, b, N, C, EPS);
        lk_layernorm_backward(dx[i], dw[i], db[i], g, x, w, m[i], r[i], N, C);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(o[0], o[1], (size_t)(N * C) * sizeof(float)) == 0);
    CHECK(memcmp(dx[0], dx[1], (size_t)(N * C) * sizeof(float)) == 0);
    CHECK(memcmp(dw[0], dw[1], (size_t)C * sizeof(float)) == 0);
    CHECK(memcmp(db[0], db[1], (size_t)C * sizeof(float)) == 0);
    for (int i = 0; i < 2; i++) free(o[i]), free(m[i]), free(r[i]), free(dx[i]), free(dw[i]), free(db[i]);
    free(x), free(w), free(b), free(g);
}

int main(void)
{
    test_reference(10, 12, 0.0f);
    test_reference(33, 67, 0.0f);
    test_reference(5, 768, 1000.0f); /* |mean| >> std: E[x^2] - mean^2 would cancel */
    test_reference(256, 768, 0.0f);  /* threaded */
    test_fd();
    test_null();
    test_threads();
    return test_finish("test_layernorm");
}
