/* test_mha.c - lk_mha_* (T5's attention) against a naive double-precision reference of the
 * kernels.h contract: bias, key mask, causality with Tq < Tk, a KV cache stride, dropout, and
 * head widths on and off the kernel's 64-wide blocks. Also: the same bits on 1 and 2 threads. */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <math.h>
#include <omp.h>

typedef struct {
    int64_t B, NH, Tq, Tk, HS, kv_rows;
    int causal, masked, biased;
    float dropout;
} mha_case;

/* Reference forward and backward for one case, in double. */
static void reference(const mha_case *m, const float *q, const float *k, const float *v, const float *bias,
                      const int32_t *mask, const float *dout, float scale, uint64_t seed, double *out, double *att,
                      double *dq, double *dk, double *dv, double *dbias)
{
    const int64_t C = m->NH * m->HS, Tq = m->Tq, Tk = m->Tk, HS = m->HS;
    const double keep_scale = m->dropout > 0 ? 1.0 / (1.0 - m->dropout) : 1.0;
    for (int64_t b = 0; b < m->B; b++)
        for (int64_t h = 0; h < m->NH; h++)
            for (int64_t i = 0; i < Tq; i++) {
                double *a = att + ((b * m->NH + h) * Tq + i) * Tk, maxv = -INFINITY, sum = 0;
                const uint64_t row = (uint64_t)(((b * m->NH + h) * Tq + i) * Tk);
                int any = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    a[j] = -INFINITY;
                    if ((mask && mask[b * Tk + j] == 0) || (m->causal && j > i + Tk - Tq)) continue;
                    double s = 0;
                    for (int64_t d = 0; d < HS; d++)
                        s += (double)q[(b * Tq + i) * C + h * HS + d] * k[(b * m->kv_rows + j) * C + h * HS + d];
                    a[j] = scale * s + (bias ? bias[(h * Tq + i) * Tk + j] : 0.0);
                    maxv = fmax(maxv, a[j]);
                    any = 1;
                }
                for (int64_t j = 0; j < Tk; j++) {
                    a[j] = any && a[j] != -INFINITY ? exp(a[j] - maxv) : 0.0;
                    sum += a[j];
                }
                for (int64_t j = 0; j < Tk; j++)
                    a[j] = any ? a[j] / sum : 0.0;
                /* forward output, then the backward of this row */
                double datt[256], ds[256], s = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    const double f = loom_dropout_keep(seed, row + (uint64_t)j, m->dropout) ? keep_scale : 0.0;
                    double g = 0;
                    for (int64_t d = 0; d < HS; d++) {
                        const int64_t vi = (b * m->kv_rows + j) * C + h * HS + d, oi = (b * Tq + i) * C + h * HS + d;
                        out[oi] += a[j] * f * v[vi];
                        g += (double)dout[oi] * v[vi];
                        dv[vi] += a[j] * f * dout[oi];
                    }
                    datt[j] = f * g;
                    s += a[j] * datt[j];
                }
                for (int64_t j = 0; j < Tk; j++) {
                    ds[j] = a[j] * (datt[j] - s);
                    dbias[(h * Tq + i) * Tk + j] += ds[j];
                    for (int64_t d = 0; d < HS; d++) {
                        dq[(b * Tq + i) * C + h * HS + d] += scale * ds[j] * k[(b * m->kv_rows + j) * C + h * HS + d];
                        dk[(b * m->kv_rows + j) * C + h * HS + d] += scale * ds[j] * q[(b * Tq + i) * C + h * HS + d];
                    }
                }
            }
}

static int run_case(mha_case m)
{
    const int64_t C = m.NH * m.HS, nq = m.B * m.Tq * C, nkv = m.B * m.kv_rows * C, na = m.B * m.NH * m.Tq * m.Tk;
    const int64_t nb = m.NH * m.Tq * m.Tk;
    const float scale = 0.7f;
    const uint64_t seed = 77;
    float *q = test_alloc(nq), *k = test_alloc(nkv), *v = test_alloc(nkv), *bias = test_alloc(nb);
    float *dout = test_alloc(nq);
    test_fill(q, nq, -1, 1), test_fill(k, nkv, -1, 1), test_fill(v, nkv, -1, 1), test_fill(bias, nb, -1, 1);
    test_fill(dout, nq, -1, 1);
    int32_t *mask = malloc((size_t)(m.B * m.Tk) * sizeof *mask);
    for (int64_t i = 0; i < m.B * m.Tk; i++)
        mask[i] = test_uniform(0, 1) > 0.25f;
    if (m.B > 1)
        for (int64_t j = 0; j < m.Tk; j++)
            mask[m.Tk + j] = 0; /* a batch entry with no key at all */
    const int32_t *mk = m.masked ? mask : NULL;
    const float *bs = m.biased ? bias : NULL;

    double *out = calloc((size_t)nq, sizeof(double)), *att = calloc((size_t)na, sizeof(double));
    double *dq = calloc((size_t)nq, sizeof(double)), *dk = calloc((size_t)nkv, sizeof(double));
    double *dv = calloc((size_t)nkv, sizeof(double)), *db = calloc((size_t)nb, sizeof(double));
    reference(&m, q, k, v, bs, mk, dout, scale, seed, out, att, dq, dk, dv, db);

    int bad = 0;
    float *g[2][6];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        float *o = test_alloc(nq), *a = test_alloc(na);
        float *gq = calloc((size_t)nq, 4), *gk = calloc((size_t)nkv, 4), *gv = calloc((size_t)nkv, 4);
        float *gb = calloc((size_t)nb, 4);
        lk_mha_forward(o, a, q, k, v, bs, mk, m.B, m.NH, m.Tq, m.Tk, m.HS, m.kv_rows, scale, m.causal, m.dropout, seed);
        lk_mha_backward(gq, gk, gv, gb, dout, q, k, v, a, m.B, m.NH, m.Tq, m.Tk, m.HS, m.kv_rows, scale, m.dropout,
                        seed);
        g[t][0] = o, g[t][1] = a, g[t][2] = gq, g[t][3] = gk, g[t][4] = gv, g[t][5] = gb;
    }
    bad += test_mismatches(g[0][0], out, nq, 1e-5, 1e-4);
    bad += test_mismatches(g[0][1], att, na, 1e-6, 1e-4);
    bad += test_mismatches(g[0][2], dq, nq, 1e-5, 1e-4);
    bad += test_mismatches(g[0][3], dk, nkv, 1e-5, 1e-4);
    bad += test_mismatches(g[0][4], dv, nkv, 1e-5, 1e-4);
    if (m.biased) bad += test_mismatches(g[0][5], db, nb, 1e-5, 1e-4);
    const int64_t sizes[6] = {nq, na, nq, nkv, nkv, nb};
    for (int i = 0; i < 6; i++) {
        CHECK(memcmp(g[0][i], g[1][i], (size_t)sizes[i] * sizeof(float)) == 0);
        free(g[0][i]), free(g[1][i]);
    }
    free(q), free(k), free(v), free(bias), free(dout), free(mask);
    free(out), free(att), free(dq), free(dk), free(dv), free(db);
    return bad;
}

int main(void)
{
    const mha_case cases[] = {
        {2, 3, 64, 64, 64, 64, 0, 1, 1, 0.0f},  /* T5's head width, the encoder's shape */
        {2, 2, 64, 64, 64, 64, 1, 0, 1, 0.0f},  /* the decoder's causal self-attention */
        {2, 2, 40, 70, 64, 80, 1, 1, 1, 0.2f},  /* Tq < Tk, a key block and a tail, kv_rows > Tk */
        {3, 2, 9, 130, 72, 130, 0, 1, 0, 0.1f}, /* a head width past the block */
        {2, 3, 17, 19, 24, 23, 1, 1, 1, 0.25f}, /* narrow, everything at once */
        {1, 2, 1, 9, 16, 12, 1, 0, 1, 0.0f},    /* a decoder step over a cache */
        {2, 2, 33, 65, 200, 65, 0, 1, 1, 0.0f}, /* wide heads */
    };
    int bad = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int b = run_case(cases[c]);
        if (b) fprintf(stderr, "mha case %zu: %d mismatches\n", c, b);
        bad += b;
    }
    CHECK(bad == 0);
    return test_finish("test_mha");
}
