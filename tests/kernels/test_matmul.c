/* test_matmul.c - lk_sgemm against a naive triple loop (all four transpose combinations, odd
 * sizes, padded strides), the linear layer against a naive loop and finite differences.
 * Also built with LK_SGEMM_CHUNK=3 (test_matmul_chunked) to exercise the block split. */
#include "kernel_test.h"
#include "lk_cpu.h"
#include "test_util.h"

#include <math.h>
#include <string.h>

static void naive_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const double a = ta ? A[k * lda + i] : A[i * lda + k];
                const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            const double c0 = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * s + c0);
        }
    }
}

static void test_sgemm(int64_t M, int64_t N, int64_t K, float alpha, float beta)
{
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            /* Padded strides: a kernel that assumes lda == row width reads the wrong rows. */
            const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
            const int64_t arows = ta ? K : M, brows = tb ? N : K;
            float *A = test_alloc(arows * lda), *B = test_alloc(brows * ldb);
            float *C = test_alloc(M * ldc), *R = test_alloc(M * ldc);
            test_fill(A, arows * lda, -1.0f, 1.0f);
            test_fill(B, brows * ldb, -1.0f, 1.0f);
            test_fill(C, M * ldc, -1.0f, 1.0f);
            if (beta == 0.0f) {
                /* beta == 0 must not read C (BLAS semantics): garbage there stays out. */
                for (int64_t i = 0; i < M * ldc; i++) C[i] = NAN;
            }
            memcpy(R, C, (size_t)(M * ldc) * sizeof *C);
            lk_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            naive_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
            int bad = 0;
            for (int64_t i = 0; i < M; i++) {
                for (int64_t j = 0; j < N; j++) {
                    const float c = C[i * ldc + j], r = R[i * ldc + j];
                    if (!(fabsf(c - r) <= 1e-4f + 1e-4f * fabsf(r))) {
                        if (bad++ < 3)
                            fprintf(stderr, "sgemm ta=%d tb=%d M=%ld N=%ld K=%ld [%ld,%ld]: %g vs %g\n",
                                    ta, tb, (long)M, (long)N, (long)K, (long)i, (long)j, c, r);
                    }
                }
                /* The padding column of C is not part of the product and must be untouched. */
                if (beta != 0.0f) CHECK(C[i * ldc + N] == R[i * ldc + N]);
            }
            CHECK(bad == 0);
            free(A), free(B), free(C), free(R);
        }
    }
}

static void test_sgemm_edges(void)
{
    /* K == 0: C = beta * C; with beta == 0, zeros even over NaN. */
    float C[6] = {1, 2, 3, 4, 5, 6};
    lk_sgemm(0, 0, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 2.0f, C, 3);
    CHECK(C[0] == 2.0f && C[5] == 12.0f);
    for (int i = 0; i < 6; i++) C[i] = NAN;
    lk_sgemm(1, 1, 2, 3, 0, 1.0f, NULL, 2, NULL, 1, 0.0f, C, 3);
    for (int i = 0; i < 6; i++) CHECK(C[i] == 0.0f);
    /* M == 0 or N == 0: nothing is touched. */
    C[0] = 7.0f;
    lk_sgemm(0, 0, 0, 3, 4, 1.0f, NULL, 4, NULL, 3, 0.0f, C, 3);
    lk_sgemm(0, 0, 2, 0, 4, 1.0f, NULL, 4, NULL, 1, 0.0f, C, 1);
    CHECK(C[0] == 7.0f);
}

static void naive_linear(float *out, const float *inp, const float *w, const float *bias,
                         int64_t B, int64_t IC, int64_t OC)
{
    for (int64_t b = 0; b < B; b++) {
        for (int64_t o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < IC; i++) s += (double)inp[b * IC + i] * w[o * IC + i];
            out[b * OC + o] = (float)s;
        }
    }
}

static void test_linear_forward(int64_t B, int64_t IC, int64_t OC)
{
    float *inp = test_alloc(B * IC), *w = test_alloc(OC * IC), *bias = test_alloc(OC);
    float *out = test_alloc(B * OC), *ref = test_alloc(B * OC);
    test_fill(inp, B * IC, -1.0f, 1.0f);
    test_fill(w, OC * IC, -1.0f, 1.0f);
    test_fill(bias, OC, -1.0f, 1.0f);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (int64_t i = 0; i < B * OC; i++) out[i] = NAN; /* out is write-only */
        lk_linear_forward(out, inp, w, with_bias ? bias : NULL, B, IC, OC);
        naive_linear(ref, inp, w, with_bias ? bias : NULL, B, IC, OC);
        int bad = 0;
        for (int64_t i = 0; i < B * OC; i++) bad += !(fabsf(out[i] - ref[i]) <= 1e-4f + 1e-4f * fabsf(ref[i]));
        CHECK(bad == 0);
    }
    free(inp), free(w), free(bias), free(out), free(ref);
}

/* Objective sum(linear(inp, w, bias) * g) for the finite differences. */
static double linear_objective(const float *inp, const float *w, const float *bias, const float *g,
                               float *out, int64_t B, int64_t IC, int64_t OC)
{
    lk_linear_forward(out, inp, w, bias, B, IC, OC);
    return test_dot(out, g, B * OC);
}

/* d(objective)/d(x[i]) by central differences, x being one of the inputs. */
static double fd(float *x, int64_t i, const float *inp, const float *w, const float *bias,
                 const float *g, float *out, int64_t B, int64_t IC, int64_t OC)
{
    const float x0 = x[i];
    x[i] = x0 + FD_EPS;
    const double lp = linear_objective(inp, w, bias, g, out, B, IC, OC);
    x[i] = x0 - FD_EPS;
    const double lm = linear_objective(inp, w, bias, g, out, B, IC, OC);
    x[i] = x0;
    return (lp - lm) / (2.0 * (double)FD_EPS);
}

static void test_linear_backward(int64_t B, int64_t IC, int64_t OC)
{
    float *inp = test_alloc(B * IC), *w = test_alloc(OC * IC), *bias = test_alloc(OC);
    float *g = test_alloc(B * OC), *out = test_alloc(B * OC);
    float *dinp = test_alloc(B * IC), *dw = test_alloc(OC * IC), *db = test_alloc(OC);
    float *dinp0 = test_alloc(B * IC), *dw0 = test_alloc(OC * IC), *db0 = test_alloc(OC);
    test_fill(inp, B * IC, -1.0f, 1.0f);
    test_fill(w, OC * IC, -1.0f, 1.0f);
    test_fill(bias, OC, -1.0f, 1.0f);
    test_fill(g, B * OC, -1.0f, 1.0f);
    /* Non-zero starting gradients: backward must add to them, not overwrite. */
    test_fill(dinp0, B * IC, -1.0f, 1.0f);
    test_fill(dw0, OC * IC, -1.0f, 1.0f);
    test_fill(db0, OC, -1.0f, 1.0f);
    memcpy(dinp, dinp0, (size_t)(B * IC) * sizeof *dinp);
    memcpy(dw, dw0, (size_t)(OC * IC) * sizeof *dw);
    memcpy(db, db0, (size_t)OC * sizeof *db);

    lk_linear_backward(dinp, dw, db, g, inp, w, B, IC, OC);
    for (int64_t i = 0; i < B * IC; i++)
        CHECK_CLOSE(dinp[i] - dinp0[i], fd(inp, i, inp, w, bias, g, out, B, IC, OC), FD_ATOL, FD_RTOL);
    for (int64_t i = 0; i < OC * IC; i++)
        CHECK_CLOSE(dw[i] - dw0[i], fd(w, i, inp, w, bias, g, out, B, IC, OC), FD_ATOL, FD_RTOL);
    for (int64_t i = 0; i < OC; i++)
        CHECK_CLOSE(db[i] - db0[i], fd(bias, i, inp, w, bias, g, out, B, IC, OC), FD_ATOL, FD_RTOL);

    /* A second call adds the same gradient again. */
    float *dinp1 = test_alloc(B * IC), *dw1 = test_alloc(OC * IC), *db1 = test_alloc(OC);
    memcpy(dinp1, dinp, (size_t)(B * IC) * sizeof *dinp);
    memcpy(dw1, dw, (size_t)(OC * IC) * sizeof *dw);
    memcpy(db1, db, (size_t)OC * sizeof *db);
    lk_linear_backward(dinp, dw, db, g, inp, w, B, IC, OC);
    for (int64_t i = 0; i < B * IC; i++) CHECK_CLOSE(dinp[i] - dinp1[i], dinp1[i] - dinp0[i], 1e-5, 1e-4);
    for (int64_t i = 0; i < OC * IC; i++) CHECK_CLOSE(dw[i] - dw1[i], dw1[i] - dw0[i], 1e-5, 1e-4);
    for (int64_t i = 0; i < OC; i++) CHECK_CLOSE(db[i] - db1[i], db1[i] - db0[i], 1e-5, 1e-4);

    /* NULL gradient outputs are skipped; the others still accumulate. */
    memcpy(db, db0, (size_t)OC * sizeof *db);
    lk_linear_backward(NULL, NULL, db, g, inp, w, B, IC, OC);
    for (int64_t i = 0; i < OC; i++) CHECK_CLOSE(db[i], db1[i], 1e-6, 1e-6);
    memcpy(dw, dw0, (size_t)(OC * IC) * sizeof *dw);
    lk_linear_backward(NULL, dw, NULL, g, inp, w, B, IC, OC);
    for (int64_t i = 0; i < OC * IC; i++) CHECK_CLOSE(dw[i], dw1[i], 1e-6, 1e-6);

    free(inp), free(w), free(bias), free(g), free(out), free(dinp), free(dw), free(db);
    free(dinp0), free(dw0), free(db0), free(dinp1), free(dw1), free(db1);
}

/* Big enough for the threaded bias sum, with a column count that leaves a partial block. */
static void test_linear_bias_sum_large(void)
{
    const int64_t B = 300, IC = 3, OC = 130;
    float *inp = test_alloc(B * IC), *w = test_alloc(OC * IC), *g = test_alloc(B * OC);
    float *db = test_alloc(OC);
    test_fill(inp, B * IC, -1.0f, 1.0f);
    test_fill(w, OC * IC, -1.0f, 1.0f);
    test_fill(g, B * OC, -1.0f, 1.0f);
    for (int64_t o = 0; o < OC; o++) db[o] = 0.5f;
    lk_linear_backward(NULL, NULL, db, g, inp, w, B, IC, OC);
    for (int64_t o = 0; o < OC; o++) {
        double s = 0.5;
        for (int64_t b = 0; b < B; b++) s += g[b * OC + o];
        CHECK_CLOSE(db[o], s, 1e-4, 1e-5);
    }
    free(inp), free(w), free(g), free(db);
}

int main(void)
{
    test_sgemm(7, 5, 3, 1.0f, 0.0f);
    test_sgemm(13, 17, 11, 0.7f, -1.3f);
    test_sgemm(1, 9, 4, -2.0f, 1.0f);
    test_sgemm(33, 2, 65, 1.5f, 0.0f);
    test_sgemm_edges();
    test_linear_forward(4, 5, 3);
    test_linear_forward(37, 19, 70);
    test_linear_backward(4, 5, 3);
    test_linear_backward(3, 7, 11);
    test_linear_bias_sum_large();
    return test_finish("test_matmul");
}
