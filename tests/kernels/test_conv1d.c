/* test_conv1d.c - HF Conv1D (weight [IC, OC]) against a double-precision reference and finite
 * differences, with and without bias, accumulation and NULL gradient outputs. */
#include "kernel_test.h"
#include "lk_cpu.h"

static void ref_forward(double *out, const float *x, const float *w, const float *bias, int64_t N,
                        int64_t IC, int64_t OC)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < IC; i++) s += (double)x[n * IC + i] * w[i * OC + o];
            out[n * OC + o] = s;
        }
}

static void ref_backward(double *dx, double *dw, double *db, const float *g, const float *x,
                         const float *w, int64_t N, int64_t IC, int64_t OC)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            const double gv = g[n * OC + o];
            db[o] += gv;
            for (int64_t i = 0; i < IC; i++) {
                dx[n * IC + i] += gv * w[i * OC + o];
                dw[i * OC + o] += gv * x[n * IC + i];
            }
        }
}

static void test_reference(int64_t N, int64_t IC, int64_t OC, int with_bias)
{
    float *x = test_alloc(N * IC), *w = test_alloc(IC * OC), *b = test_alloc(OC);
    float *out = test_alloc(N * OC), *g = test_alloc(N * OC);
    float *dx = test_alloc(N * IC), *dw = test_alloc(IC * OC), *db = test_alloc(OC);
    double *rout = malloc((size_t)(N * OC) * sizeof *rout);
    test_fill(x, N * IC, -1.0f, 1.0f);
    test_fill(w, IC * OC, -1.0f, 1.0f);
    test_fill(b, OC, -1.0f, 1.0f);
    test_fill(g, N * OC, -1.0f, 1.0f);
    test_fill(dx, N * IC, -1.0f, 1.0f);
    test_fill(dw, IC * OC, -1.0f, 1.0f);
    test_fill(db, OC, -1.0f, 1.0f);
    for (int64_t i = 0; i < N * OC; i++) out[i] = NAN; /* the forward overwrites, never reads */
    const float *bias = with_bias ? b : NULL;
    lk_conv1d_forward(out, x, w, bias, N, IC, OC);
    ref_forward(rout, x, w, bias, N, IC, OC);
    /* Sums of IC products of magnitude <= 1: float rounding grows like sqrt(IC). */
    const double tol = 1e-6 * (double)IC;
    CHECK(test_mismatches(out, rout, N * OC, tol, 1e-5) == 0);

    double *rdx = test_dalloc_from(dx, N * IC), *rdw = test_dalloc_from(dw, IC * OC), *rdb = test_dalloc_from(db, OC);
    lk_conv1d_backward(dx, dw, db, g, x, w, N, IC, OC);
    ref_backward(rdx, rdw, rdb, g, x, w, N, IC, OC);
    CHECK(test_mismatches(dx, rdx, N * IC, 1e-6 * (double)OC, 1e-5) == 0);
    CHECK(test_mismatches(dw, rdw, IC * OC, 1e-6 * (double)N, 1e-5) == 0);
    CHECK(test_mismatches(db, rdb, OC, 1e-6 * (double)N, 1e-5) == 0);
    free(x), free(w), free(b), free(out), free(g), free(dx), free(dw), free(db), free(rout);
    free(rdx), free(rdw), free(rdb);
}

/* Finite differences of sum(out * w) for inp, weight and bias. */
static void test_fd(void)
{
    enum { N = 5, IC = 12, OC = 7 };
    float x[N * IC], w[IC * OC], b[OC], out[N * OC], obj[N * OC];
    float dx[N * IC], dw[IC * OC], db[OC], dx0[N * IC], dw0[IC * OC], db0[OC];
    test_fill(x, N * IC, -1.0f, 1.0f);
    test_fill(w, IC * OC, -1.0f, 1.0f);
    test_fill(b, OC, -1.0f, 1.0f);
    test_fill(obj, N * OC, -1.0f, 1.0f);
    test_fill(dx0, N * IC, -1.0f, 1.0f);
    test_fill(dw0, IC * OC, -1.0f, 1.0f);
    test_fill(db0, OC, -1.0f, 1.0f);
    memcpy(dx, dx0, sizeof dx), memcpy(dw, dw0, sizeof dw), memcpy(db, db0, sizeof db);
    lk_conv1d_backward(dx, dw, db, obj, x, w, N, IC, OC);
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db}, *grads0[3] = {dx0, dw0, db0};
    const int64_t sizes[3] = {N * IC, IC * OC, OC};
    for (int p = 0; p < 3; p++) {
        for (int64_t i = 0; i < sizes[p]; i++) {
            const float v0 = params[p][i];
            params[p][i] = v0 + FD_EPS;
            lk_conv1d_forward(out, x, w, b, N, IC, OC);
            const double lp = test_dot(out, obj, N * OC);
            params[p][i] = v0 - FD_EPS;
            lk_conv1d_forward(out, x, w, b, N, IC, OC);
            const double lm = test_dot(out, obj, N * OC);
            params[p][i] = v0;
            CHECK_CLOSE(grads[p][i] - grads0[p][i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL,
                        FD_RTOL);
        }
    }
}

static void test_null(void)
{
    enum { N = 4, IC = 6, OC = 5 };
    float x[N * IC], w[IC * OC], g[N * OC];
    float dx[N * IC] = {0}, dw[IC * OC] = {0}, db[OC] = {0};
    float dx2[N * IC] = {0}, dw2[IC * OC] = {0}, db2[OC] = {0};
    test_fill(x, N * IC, -1.0f, 1.0f);
    test_fill(w, IC * OC, -1.0f, 1.0f);
    test_fill(g, N * OC, -1.0f, 1.0f);
    lk_conv1d_backward(dx, dw, db, g, x, w, N, IC, OC);
    lk_conv1d_backward(dx2, NULL, NULL, g, x, w, N, IC, OC);
    lk_conv1d_backward(NULL, dw2, NULL, g, x, w, N, IC, OC);
    lk_conv1d_backward(NULL, NULL, db2, g, x, w, N, IC, OC);
    lk_conv1d_backward(NULL, NULL, NULL, g, x, w, N, IC, OC);
    CHECK(memcmp(dx, dx2, sizeof dx) == 0);
    CHECK(memcmp(dw, dw2, sizeof dw) == 0);
    CHECK(memcmp(db, db2, sizeof db) == 0);
}

int main(void)
{
    test_reference(10, 12, 36, 1);
    test_reference(10, 12, 36, 0);
    test_reference(37, 29, 71, 1);
    test_reference(1, 1, 1, 1);
    test_reference(64, 96, 384, 1); /* threaded bias sum, OpenBLAS's blocked paths */
    test_fd();
    test_null();
    return test_finish("test_conv1d");
}
