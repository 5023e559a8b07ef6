/* test_attention_dropout.c - the tiled attention with dropout (ABI 1.4,
 * attention_flash_forward_dropout / _backward_dropout): the output against causal attention
 * computed here in double with the mask drawn from loom_dropout_keep at each probability's
 * [B, NH, T, T] index and kept values scaled by 1 / (1 - p); the backward against central
 * finite differences of sum(dout * out) with the mask fixed (the same seed); dropout 0 equal
 * bit for bit to the 1.3 kernels; the statistics of the mask (the fraction dropped, and the
 * scale: with v = 1 every output is sum_s P z, whose mean is 1); a tile size that does not
 * divide T (built again with 5 x 7 tiles as test_attention_dropout_tiles). */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <loom/kernels.h>

static void reference(double *out, const float *qkv, int64_t B, int64_t T, int64_t C, int64_t NH, float p,
                      uint64_t seed)
{
    const int64_t hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs), keep = p > 0 ? 1.0 / (1.0 - (double)p) : 1.0;
    double *s = malloc((size_t)T * sizeof *s);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * C + h * hs;
                double max = -INFINITY, sum = 0.0;
                for (int64_t u = 0; u <= t; u++) {
                    const float *k = qkv + (b * T + u) * 3 * C + C + h * hs;
                    double d = 0.0;
                    for (int64_t i = 0; i < hs; i++) d += (double)q[i] * k[i];
                    s[u] = d * scale;
                    max = fmax(max, s[u]);
                }
                for (int64_t u = 0; u <= t; u++) sum += s[u] = exp(s[u] - max);
                for (int64_t i = 0; i < hs; i++) {
                    double acc = 0.0;
                    for (int64_t u = 0; u <= t; u++) {
                        const uint64_t e = (uint64_t)(((b * NH + h) * T + t) * T + u);
                        const double z = loom_dropout_keep(seed, e, p) ? keep : 0.0;
                        acc += s[u] / sum * z * qkv[(b * T + u) * 3 * C + 2 * C + h * hs + i];
                    }
                    out[(b * T + t) * C + h * hs + i] = acc;
                }
            }
    free(s);
}

static void test_forward(int64_t B, int64_t T, int64_t C, int64_t NH, float p)
{
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C;
    float *qkv = test_alloc(nqkv), *out = test_alloc(nout), *lse = test_alloc(B * NH * T);
    float *lse0 = test_alloc(B * NH * T), *out0 = test_alloc(nout);
    test_fill(qkv, nqkv, -1.5f, 1.5f);
    double *want = malloc((size_t)nout * sizeof *want);
    const uint64_t seed = 0x5eed + (uint64_t)T;
    reference(want, qkv, B, T, C, NH, p, seed);
    lk_attention_flash_forward_dropout(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH, p, seed);
    CHECK(test_mismatches(out, want, nout, 1e-5, 1e-4) == 0);
    /* lse is the undropped softmax's: the plain kernel's, bit for bit. */
    lk_attention_flash_forward(out0, lse0, qkv, LOOM_DTYPE_F32, B, T, C, NH);
    CHECK(memcmp(lse, lse0, sizeof(float) * (size_t)(B * NH * T)) == 0);
    /* Dropout 0 is the 1.3 kernel. */
    lk_attention_flash_forward_dropout(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH, 0.0f, seed);
    CHECK(memcmp(out, out0, sizeof(float) * (size_t)nout) == 0);
    free(qkv), free(out), free(lse), free(lse0), free(out0), free(want);
}

static double objective(const float *qkv, const float *dout, float *out, float *lse, int64_t B, int64_t T, int64_t C,
                        int64_t NH, float p, uint64_t seed)
{
    lk_attention_flash_forward_dropout(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH, p, seed);
    double s = 0.0;
    for (int64_t i = 0; i < B * T * C; i++) s += (double)dout[i] * out[i];
    return s;
}

/* The gradient of sum(dout * out) with the mask fixed, against central differences; dqkv
 * accumulates. */
static void test_backward(int64_t B, int64_t T, int64_t C, int64_t NH, float p)
{
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C;
    const uint64_t seed = 77;
    float *qkv = test_alloc(nqkv), *dout = test_alloc(nout), *out = test_alloc(nout), *lse = test_alloc(B * NH * T);
    float *d = test_alloc(nqkv), *tmp = test_alloc(nout), *tl = test_alloc(B * NH * T);
    test_fill(qkv, nqkv, -1.0f, 1.0f);
    test_fill(dout, nout, -1.0f, 1.0f);
    lk_attention_flash_forward_dropout(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH, p, seed);
    for (int64_t i = 0; i < nqkv; i++) d[i] = 0.5f;
    lk_attention_flash_backward_dropout(d, dout, qkv, LOOM_DTYPE_F32, out, lse, B, T, C, NH, p, seed);
    int bad = 0;
    for (int64_t i = 0; i < nqkv; i++) {
        const float x0 = qkv[i];
        qkv[i] = x0 + FD_EPS;
        const double lp = objective(qkv, dout, tmp, tl, B, T, C, NH, p, seed);
        qkv[i] = x0 - FD_EPS;
        const double lm = objective(qkv, dout, tmp, tl, B, T, C, NH, p, seed);
        qkv[i] = x0;
        const double fd = (lp - lm) / (2.0 * (double)FD_EPS), got = d[i] - 0.5;
        if (!(fabs(got - fd) <= FD_ATOL + FD_RTOL * fabs(fd))) {
            if (bad < 3) fprintf(stderr, "  dqkv[%lld] %.6g, finite differences %.6g\n", (long long)i, got, fd);
            bad++;
        }
    }
    CHECK(bad == 0);
    /* Dropout 0 is the 1.3 backward. */
    float *d0 = test_alloc(nqkv), *d1 = test_alloc(nqkv);
    lk_attention_flash_forward(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH);
    memset(d0, 0, sizeof(float) * (size_t)nqkv);
    memset(d1, 0, sizeof(float) * (size_t)nqkv);
    lk_attention_flash_backward(d0, dout, qkv, LOOM_DTYPE_F32, out, lse, B, T, C, NH);
    lk_attention_flash_backward_dropout(d1, dout, qkv, LOOM_DTYPE_F32, out, lse, B, T, C, NH, 0.0f, seed);
    CHECK(memcmp(d0, d1, sizeof(float) * (size_t)nqkv) == 0);
    free(qkv), free(dout), free(out), free(lse), free(d), free(tmp), free(tl), free(d0), free(d1);
}

/* The mask drops a fraction p (within 5 standard deviations), and kept values are scaled so
 * that an output is unbiased: with v = 1 each output is sum_s P_s z_s, mean 1. */
static void test_statistics(float p)
{
    const int64_t n = 1 << 20;
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) dropped += !loom_dropout_keep(12345, (uint64_t)i, p);
    const double sd = sqrt((double)n * p * (1.0 - p));
    CHECK(fabs((double)dropped - (double)n * p) <= 5.0 * sd);

    enum { B = 4, T = 96, C = 16, NH = 2 };
    float *qkv = test_alloc(B * T * 3 * C), *out = test_alloc(B * T * C), *lse = test_alloc(B * NH * T);
    test_fill(qkv, B * T * 3 * C, -0.5f, 0.5f);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t c = 0; c < C; c++) qkv[r * 3 * C + 2 * C + c] = 1.0f;
    lk_attention_flash_forward_dropout(out, lse, qkv, LOOM_DTYPE_F32, B, T, C, NH, p, 99);
    double mean = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            mean += out[(b * T + t) * C] + out[(b * T + t) * C + C / 2]; /* one per head */
    mean /= (double)(2 * B * T);
    CHECK(fabs(mean - 1.0) < 0.03);
    free(qkv), free(out), free(lse);
}

int main(void)
{
    test_forward(2, 5, 8, 2, 0.1f);
    test_forward(2, 37, 16, 2, 0.3f); /* several tiles, T not a multiple of the tile */
    test_forward(1, 130, 8, 1, 0.5f);
    test_backward(1, 6, 8, 2, 0.2f);
    test_backward(2, 11, 4, 1, 0.5f);
    test_statistics(0.1f);
    test_statistics(0.4f);
    return test_finish("test_attention_dropout");
}
