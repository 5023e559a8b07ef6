/* test_attention.c - causal multi-head attention against a double-precision reference (out, att
 * with its zero upper triangle, and the analytic backward), finite differences for every qkv
 * element, accumulation, causality in both passes, large scores, and the threaded path
 * against one thread. Also built with LK_ATT_CHUNK=3 (test_attention_chunked), so rows
 * longer than the backward's stack chunk take the two-pass path on sizes a test affords. */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <omp.h>

static void ref_forward(double *out, double *att, const float *qkv, int64_t B, int64_t T,
                        int64_t C, int64_t NH)
{
    const int64_t hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * C + h * hs;
                double *a = att + ((b * NH + h) * T + t) * T;
                double max = -INFINITY, sum = 0.0;
                for (int64_t t2 = 0; t2 < T; t2++) a[t2] = 0.0;
                for (int64_t t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + (b * T + t2) * 3 * C + C + h * hs;
                    double s = 0.0;
                    for (int64_t i = 0; i < hs; i++) s += (double)q[i] * k[i];
                    a[t2] = s * scale;
                    max = fmax(max, a[t2]);
                }
                for (int64_t t2 = 0; t2 <= t; t2++) sum += a[t2] = exp(a[t2] - max);
                for (int64_t t2 = 0; t2 <= t; t2++) a[t2] /= sum;
                for (int64_t i = 0; i < hs; i++) {
                    double o = 0.0;
                    for (int64_t t2 = 0; t2 <= t; t2++)
                        o += a[t2] * qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + i];
                    out[(b * T + t) * C + h * hs + i] = o;
                }
            }
}

/* The analytic backward in double, from the reference's own att. */
static void ref_backward(double *dqkv, const float *dout, const float *qkv, int64_t B, int64_t T,
                         int64_t C, int64_t NH)
{
    const int64_t hs = C / NH, C3 = 3 * C;
    const double scale = 1.0 / sqrt((double)hs);
    double *out = malloc((size_t)(B * T * C) * sizeof *out);
    double *att = malloc((size_t)(B * NH * T * T) * sizeof *att), *datt = malloc((size_t)T * sizeof *datt);
    ref_forward(out, att, qkv, B, T, C, NH);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < T; t++) {
                const double *a = att + ((b * NH + h) * T + t) * T;
                const float *g = dout + (b * T + t) * C + h * hs;
                double s = 0.0;
                for (int64_t t2 = 0; t2 <= t; t2++) {
                    datt[t2] = 0.0;
                    for (int64_t i = 0; i < hs; i++)
                        datt[t2] += (double)g[i] * qkv[(b * T + t2) * C3 + 2 * C + h * hs + i];
                    s += a[t2] * datt[t2];
                }
                for (int64_t t2 = 0; t2 <= t; t2++) {
                    const double dpre = a[t2] * (datt[t2] - s) * scale;
                    for (int64_t i = 0; i < hs; i++) {
                        const int64_t qi = (b * T + t) * C3 + h * hs + i, ki = (b * T + t2) * C3 + C + h * hs + i;
                        dqkv[qi] += dpre * qkv[ki];
                        dqkv[ki] += dpre * qkv[qi];
                        dqkv[ki + C] += a[t2] * g[i];
                    }
                }
            }
    free(out), free(att), free(datt);
}

/* Forward and backward against the reference. amp scales qkv: amp = 30 makes scores of a
 * few hundred, which overflow expf without the max shift. */
static void test_reference(int64_t B, int64_t T, int64_t C, int64_t NH, float amp)
{
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C, natt = B * NH * T * T;
    float *qkv = test_alloc(nqkv), *out = test_alloc(nout), *att = test_alloc(natt);
    float *g = test_alloc(nout), *dqkv = test_alloc(nqkv);
    double *rout = malloc((size_t)nout * sizeof *rout), *ratt = malloc((size_t)natt * sizeof *ratt);
    test_fill(qkv, nqkv, -amp, amp);
    test_fill(g, nout, -1.0f, 1.0f);
    test_fill(dqkv, nqkv, -1.0f, 1.0f); /* non-zero: the backward must accumulate */
    for (int64_t i = 0; i < natt; i++) att[i] = NAN; /* every entry is written, zeros included */
    lk_attention_forward(out, att, qkv, B, T, C, NH);
    ref_forward(rout, ratt, qkv, B, T, C, NH);
    const double tol = amp > 1.0f ? 1e-4 * amp : 1e-5;
    CHECK(test_mismatches(out, rout, nout, tol, 1e-4) == 0);
    CHECK(test_mismatches(att, ratt, natt, tol, 1e-4) == 0);
    int upper = 0;
    for (int64_t r = 0; r < B * NH * T; r++)
        for (int64_t t2 = r % T + 1; t2 < T; t2++) upper += att[r * T + t2] != 0.0f;
    CHECK(upper == 0);

    double *rd = test_dalloc_from(dqkv, nqkv);
    lk_attention_backward(dqkv, g, qkv, att, B, T, C, NH);
    ref_backward(rd, g, qkv, B, T, C, NH);
    CHECK(test_mismatches(dqkv, rd, nqkv, amp > 1.0f ? 1e-3 * amp : 1e-5, 1e-4) == 0);
    free(qkv), free(out), free(att), free(g), free(dqkv), free(rout), free(ratt), free(rd);
}

/* Finite differences of sum(out * w) for every element of qkv. */
static void test_fd(void)
{
    enum { B = 2, T = 5, C = 12, NH = 3, NQKV = B * T * 3 * C, NOUT = B * T * C };
    float qkv[NQKV], out[NOUT], att[B * NH * T * T], w[NOUT], d[NQKV], d0[NQKV];
    test_fill(qkv, NQKV, -1.5f, 1.5f);
    test_fill(w, NOUT, -1.0f, 1.0f);
    test_fill(d0, NQKV, -1.0f, 1.0f);
    memcpy(d, d0, sizeof d);
    lk_attention_forward(out, att, qkv, B, T, C, NH);
    lk_attention_backward(d, w, qkv, att, B, T, C, NH);
    for (int64_t i = 0; i < NQKV; i++) {
        const float x0 = qkv[i];
        qkv[i] = x0 + FD_EPS;
        lk_attention_forward(out, att, qkv, B, T, C, NH);
        const double lp = test_dot(out, w, NOUT);
        qkv[i] = x0 - FD_EPS;
        lk_attention_forward(out, att, qkv, B, T, C, NH);
        const double lm = test_dot(out, w, NOUT);
        qkv[i] = x0;
        CHECK_CLOSE(d[i] - d0[i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL, FD_RTOL);
    }
    /* A NULL dqkv (the only gradient output) is skipped. */
    lk_attention_backward(NULL, w, qkv, att, B, T, C, NH);
}

/* Changing position tf's q, k and v leaves every earlier output and att row bitwise unchanged;
 * a dout that is zero from tf on leaves dqkv at positions >= tf untouched. */
static void test_causality(void)
{
    enum { B = 2, T = 7, C = 12, NH = 3, TF = 4, NQKV = B * T * 3 * C, NOUT = B * T * C };
    float qkv[NQKV], out1[NOUT], out2[NOUT], att1[B * NH * T * T], att2[B * NH * T * T];
    test_fill(qkv, NQKV, -1.0f, 1.0f);
    lk_attention_forward(out1, att1, qkv, B, T, C, NH);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = TF; t < T; t++)
            for (int64_t i = 0; i < 3 * C; i++) qkv[(b * T + t) * 3 * C + i] += 0.75f;
    lk_attention_forward(out2, att2, qkv, B, T, C, NH);
    int changed = 0, later_changed = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < C; i++) {
                const int diff = out1[(b * T + t) * C + i] != out2[(b * T + t) * C + i];
                if (t < TF) changed += diff;
                else later_changed += diff;
            }
    CHECK(changed == 0);
    CHECK(later_changed > 0); /* the perturbation did reach the later positions */
    for (int64_t bh = 0; bh < B * NH; bh++)
        for (int64_t t = 0; t < TF; t++)
            CHECK(memcmp(att1 + (bh * T + t) * T, att2 + (bh * T + t) * T, T * sizeof(float)) == 0);

    float g[NOUT], d[NQKV] = {0};
    test_fill(g, NOUT, -1.0f, 1.0f);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = TF; t < T; t++)
            for (int64_t i = 0; i < C; i++) g[(b * T + t) * C + i] = 0.0f;
    lk_attention_backward(d, g, qkv, att2, B, T, C, NH);
    int leaked = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = TF; t < T; t++)
            for (int64_t i = 0; i < 3 * C; i++) leaked += d[(b * T + t) * 3 * C + i] != 0.0f;
    CHECK(leaked == 0);
}

/* GPT-2 small's head layout on the threaded path: bitwise the same for 1 and 3 threads. */
static void test_threads(void)
{
    const int64_t B = 2, T = 33, C = 768, NH = 12;
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C, natt = B * NH * T * T;
    float *qkv = test_alloc(nqkv), *g = test_alloc(nout), *o[2], *a[2], *d[2];
    test_fill(qkv, nqkv, -1.0f, 1.0f);
    test_fill(g, nout, -1.0f, 1.0f);
    const int saved = omp_get_max_threads();
    for (int i = 0; i < 2; i++) {
        o[i] = test_alloc(nout), a[i] = test_alloc(natt), d[i] = calloc((size_t)nqkv, sizeof(float));
        omp_set_num_threads(i == 0 ? 1 : 3);
        lk_attention_forward(o[i], a[i], qkv, B, T, C, NH);
        lk_attention_backward(d[i], g, qkv, a[i], B, T, C, NH);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(o[0], o[1], (size_t)nout * sizeof(float)) == 0);
    CHECK(memcmp(a[0], a[1], (size_t)natt * sizeof(float)) == 0);
    CHECK(memcmp(d[0], d[1], (size_t)nqkv * sizeof(float)) == 0);
    for (int i = 0; i < 2; i++) free(o[i]), free(a[i]), free(d[i]);
    free(qkv), free(g);
}

int main(void)
{
    test_reference(2, 5, 12, 3, 1.0f);
    test_reference(1, 1, 4, 1, 1.0f);   /* a single position attends only to itself */
    test_reference(2, 17, 20, 4, 1.0f); /* hs = 5: no vector-width multiple */
    test_reference(2, 9, 12, 2, 30.0f); /* scores in the hundreds */
    test_reference(1, 40, 768, 12, 1.0f); /* GPT-2 head size, threaded */
    test_fd();
    test_causality();
    test_threads();
    return test_finish("test_attention");
}
