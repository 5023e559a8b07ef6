/* test_attention_flash.c - the tiled attention (attention_flash.c) against the attention that
 * stores its probabilities (attention.c, itself held to a double-precision reference and finite
 * differences in test_attention.c): outputs, the saved log-sum-exp (against log sum exp of the
 * scores in double), and the backward, for several T and head sizes including T that is not a
 * multiple of the tile; bf16 and f16 inputs against the reference on the same values widened;
 * accumulation into dqkv; and one thread against several, bit for bit. Also built with 5 x 7
 * tiles (test_attention_flash_tiles) so that every shape crosses several tile boundaries, and
 * so again with the tile products on their portable loops (test_attention_flash_portable). */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <omp.h>

/* lse[b, h, t] in double from the scores themselves. */
static void ref_lse(double *lse, const float *qkv, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    const int64_t hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * 3 * C + h * hs;
                double max = -INFINITY, sum = 0.0;
                double *s = malloc((size_t)(t + 1) * sizeof *s);
                for (int64_t t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + (b * T + t2) * 3 * C + C + h * hs;
                    double d = 0.0;
                    for (int64_t i = 0; i < hs; i++) d += (double)q[i] * k[i];
                    s[t2] = d * scale;
                    max = fmax(max, s[t2]);
                }
                for (int64_t t2 = 0; t2 <= t; t2++) sum += exp(s[t2] - max);
                lse[(b * NH + h) * T + t] = max + log(sum);
                free(s);
            }
}

/* Flash vs stored-probability attention on qkv (as f32 values) given in `dtype`. */
static void compare(int64_t B, int64_t T, int64_t C, int64_t NH, float amp, uint32_t dtype)
{
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C, nlse = B * NH * T;
    float *qkv = test_alloc(nqkv), *dout = test_alloc(nout);
    test_fill(qkv, nqkv, -amp, amp);
    test_fill(dout, nout, -1.0f, 1.0f);
    void *stored = qkv;
    uint16_t *half = NULL;
    if (dtype != LOOM_DTYPE_F32) { /* round the values once; the reference sees them widened */
        half = malloc((size_t)nqkv * sizeof *half);
        lk_convert(half, dtype, qkv, LOOM_DTYPE_F32, nqkv);
        lk_convert(qkv, LOOM_DTYPE_F32, half, dtype, nqkv);
        stored = half;
    }
    float *rout = test_alloc(nout), *att = test_alloc(B * NH * T * T), *rd = test_alloc(nqkv);
    lk_attention_forward(rout, att, qkv, B, T, C, NH);
    for (int64_t i = 0; i < nqkv; i++) rd[i] = 0.25f;
    lk_attention_backward(rd, dout, qkv, att, B, T, C, NH);

    float *out = test_alloc(nout), *lse = test_alloc(nlse), *d = test_alloc(nqkv);
    double *rl = malloc((size_t)nlse * sizeof *rl);
    lk_attention_flash_forward(out, lse, stored, dtype, B, T, C, NH);
    ref_lse(rl, qkv, B, T, C, NH);
    for (int64_t i = 0; i < nqkv; i++) d[i] = 0.25f; /* accumulated into, not overwritten */
    lk_attention_flash_backward(d, dout, stored, dtype, out, lse, B, T, C, NH);

    const double tol = amp > 1.0f ? 2e-5 * amp * amp : 2e-5;
    int64_t bad_lse = 0;
    for (int64_t i = 0; i < nlse; i++)
        if (!(fabs(lse[i] - rl[i]) <= tol * (1.0 + fabs(rl[i])))) bad_lse++;
    /* On AMX (bf16 q, k, v where the CPU has the tiles) the products read P, dO and dS rounded
     * to bf16, as PyTorch's bf16 attention does: each is off by up to 2^-9 of itself. Measured
     * over the shapes below: relative L2 error 1.2e-3 in out and 2.1e-3 in dqkv at amp 1, 4.3e-3
     * in dqkv at amp 4 (peaked softmax); worst element 1.3e-3 and 4.8e-3 at amp 1. The bounds:
     * relative L2 under 3e-3 (out) and 8e-3 (dqkv), every element within a loose band that only
     * an O(1) fault (a wrong tile, a missed mask) leaves. lse stays the f32 path's, exact. */
    const int amx = dtype == LOOM_DTYPE_BF16 && lk_attention_amx_ready();
    const double out_atol = amx ? 3e-3 * amp : tol, out_rtol = amx ? 2e-2 : 1e-4;
    const double d_atol = amx ? 1e-2 * amp * amp : 10 * tol, d_rtol = amx ? 2e-2 : 1e-3;
    const int64_t bad_out = test_far_off(out, rout, nout, out_atol, out_rtol);
    const int64_t bad_d = test_far_off(d, rd, nqkv, d_atol, d_rtol);
    if (amx) {
        double eo = 0, no = 0, ed = 0, nd = 0, wo = 0, wd = 0;
        for (int64_t i = 0; i < nout; i++)
            eo += pow(out[i] - rout[i], 2), no += pow(rout[i], 2), wo = fmax(wo, fabs(out[i] - rout[i]));
        for (int64_t i = 0; i < nqkv; i++)
            ed += pow(d[i] - rd[i], 2), nd += pow(rd[i] - 0.25, 2), wd = fmax(wd, fabs(d[i] - rd[i]));
        printf("AMX, T=%lld C=%lld NH=%lld: out worst %.2g, relative L2 %.2g; dqkv worst %.2g, relative L2 %.2g\n",
               (long long)T, (long long)C, (long long)NH, wo, sqrt(eo / no), wd, sqrt(ed / nd));
        CHECK(sqrt(eo / no) < 3e-3 && sqrt(ed / nd) < 8e-3);
    }
    if (bad_out || bad_lse || bad_d)
        fprintf(stderr, "B=%lld T=%lld C=%lld NH=%lld amp=%g dtype=%u: %lld out, %lld lse, %lld dqkv off\n",
                (long long)B, (long long)T, (long long)C, (long long)NH, amp, dtype, (long long)bad_out,
                (long long)bad_lse, (long long)bad_d);
    CHECK(bad_out == 0);
    CHECK(bad_lse == 0);
    CHECK(bad_d == 0);
    free(qkv), free(dout), free(half), free(rout), free(att), free(rd), free(out), free(lse), free(d), free(rl);
}

/* One thread and three give the same bits (each head is one thread's, in a fixed order). */
static void threads(void)
{
    const int64_t B = 2, T = 67, C = 32, NH = 4, nqkv = B * T * 3 * C, nout = B * T * C;
    float *qkv = test_alloc(nqkv), *dout = test_alloc(nout);
    test_fill(qkv, nqkv, -1.0f, 1.0f);
    test_fill(dout, nout, -1.0f, 1.0f);
    float *out[2], *lse[2], *d[2];
    for (int i = 0; i < 2; i++) {
        out[i] = test_alloc(nout), lse[i] = test_alloc(B * NH * T), d[i] = test_alloc(nqkv);
        memset(d[i], 0, (size_t)nqkv * sizeof(float));
        omp_set_num_threads(i == 0 ? 1 : 3);
        lk_attention_flash_forward(out[i], lse[i], qkv, LOOM_DTYPE_F32, B, T, C, NH);
        lk_attention_flash_backward(d[i], dout, qkv, LOOM_DTYPE_F32, out[i], lse[i], B, T, C, NH);
    }
    CHECK(memcmp(out[0], out[1], (size_t)nout * sizeof(float)) == 0);
    CHECK(memcmp(lse[0], lse[1], (size_t)(B * NH * T) * sizeof(float)) == 0);
    CHECK(memcmp(d[0], d[1], (size_t)nqkv * sizeof(float)) == 0);
    for (int i = 0; i < 2; i++) free(out[i]), free(lse[i]), free(d[i]);
    free(qkv), free(dout);
}

int main(void)
{
    /* T below, at, just past and well past a 128-row tile; head sizes 8, 16, 64. */
    compare(1, 1, 16, 2, 1.0f, LOOM_DTYPE_F32);
    compare(2, 13, 24, 3, 1.0f, LOOM_DTYPE_F32);
    compare(1, 128, 64, 4, 1.0f, LOOM_DTYPE_F32);
    compare(1, 131, 64, 4, 1.0f, LOOM_DTYPE_F32);
    compare(2, 300, 128, 2, 1.0f, LOOM_DTYPE_F32);
    compare(1, 97, 32, 2, 4.0f, LOOM_DTYPE_F32); /* large scores: the running max moves */
    compare(1, 150, 64, 2, 1.0f, LOOM_DTYPE_BF16);
    /* The AMX path's shapes: T past and short of its 64-row tiles, several batches, head sizes
     * 32 and 64 (a head size that is no multiple of 32 keeps the f32 tiles). */
    printf("AMX attention: %s\n", lk_attention_amx_ready() ? "on (bf16 cases run on the tiles)" : "not available here");
    compare(2, 64, 128, 2, 1.0f, LOOM_DTYPE_BF16);
    compare(1, 200, 64, 2, 1.0f, LOOM_DTYPE_BF16);
    compare(2, 37, 96, 3, 1.0f, LOOM_DTYPE_BF16);
    compare(1, 97, 64, 2, 4.0f, LOOM_DTYPE_BF16);
    compare(1, 30, 48, 2, 1.0f, LOOM_DTYPE_BF16); /* head size 24: the f32 tiles */
    compare(1, 70, 32, 2, 1.0f, LOOM_DTYPE_F16);
    threads();
    return test_finish("test_attention_flash");
}
