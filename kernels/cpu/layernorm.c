/*
 * layernorm.c - layer normalisation over the last dimension, as in GPT-2:
 *   norm = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps) (biased variance),
 *   out  = norm * weight + bias.
 *
 * Forward: one thread per row; the row (C floats) stays in L1 across its three short passes
 * (mean, variance about the mean, normalise), so each row is read from memory once. The
 * variance is taken about the mean (the corrected two-pass algorithm) rather than as
 * E[x^2] - mean^2, which cancels catastrophically when |mean| >> std.
 *
 * Backward, with dnorm = dout * weight:
 *   dinp    += (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) * rstd
 *   dweight += sum_rows dout * norm,  dbias += sum_rows dout.
 * dinp is per row (threads over rows); dweight and dbias are sums over rows, so a second
 * pass splits the columns into bands, one thread per band summing its rows in order: no
 * races, no per-thread partial buffers, and the same result for any thread count.
 */
#include "lk_cpu.h"

#include <math.h>

/* Columns per band in the dweight/dbias pass: 2 x 64 accumulators fit in registers
 * (AVX-512: 8 vectors), and 64 floats are whole cache lines. */
#define LK_LN_BAND 64

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

void lk_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int64_t N, int64_t C, float eps)
{
    const float inv_c = 1.0f / (float)C;
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < C; c++) sum += x[c];
        const float m0 = sum * inv_c;
        /* Corrected two-pass: the deviations' own sum (exactly 0 in exact arithmetic) is the
         * float rounding error of m0; adding it back makes the mean accurate to about an ulp
         * of the deviations rather than of the sum, which matters when |mean| >> std. */
        float dsum = 0.0f, var = 0.0f;
#pragma omp simd reduction(+ : dsum, var)
        for (int64_t c = 0; c < C; c++) {
            const float d = x[c] - m0;
            dsum += d;
            var += d * d;
        }
        const float m = m0 + dsum * inv_c;
        var = (var - dsum * dsum * inv_c) * inv_c;
        const float s = 1.0f / sqrtf(var + eps);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

void lk_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int64_t N, int64_t C)
{
    const float inv_c = 1.0f / (float)C;
    if (dinp) {
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *g = dout + n * C;
            float *d = dinp + n * C;
            const float m = mean[n], s = rstd[n];
            float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
#pragma omp simd reduction(+ : dnorm_sum, dnorm_norm_sum)
            for (int64_t c = 0; c < C; c++) {
                const float dnorm = g[c] * weight[c];
                dnorm_sum += dnorm;
                dnorm_norm_sum += dnorm * (x[c] - m) * s;
            }
            const float dnorm_mean = dnorm_sum * inv_c, dnorm_norm_mean = dnorm_norm_sum * inv_c;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                const float norm = (x[c] - m) * s;
                d[c] += (g[c] * weight[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
    }
    if (dweight || dbias) {
        const int64_t bands = (C + LK_LN_BAND - 1) / LK_LN_BAND;
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
        for (int64_t band = 0; band < bands; band++) {
            const int64_t c0 = band * LK_LN_BAND, width = min_i64(LK_LN_BAND, C - c0);
            float dw[LK_LN_BAND] = {0}, db[LK_LN_BAND] = {0};
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + n * C + c0, *g = dout + n * C + c0;
                const float m = mean[n], s = rstd[n];
#pragma omp simd
                for (int64_t j = 0; j < width; j++) {
                    dw[j] += g[j] * (x[j] - m) * s;
                    db[j] += g[j];
                }
            }
            if (dweight)
                for (int64_t j = 0; j < width; j++) dweight[c0 + j] += dw[j];
            if (dbias)
                for (int64_t j = 0; j < width; j++) dbias[c0 + j] += db[j];
        }
    }
}
