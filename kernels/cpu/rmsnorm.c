/*
 * rmsnorm.c - T5's layer norm: scale by the root mean square, no mean subtracted, no bias.
 *   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps).
 *
 * Backward, with dn = dout * weight and norm = x * rstd:
 *   dinp    += (dn - norm * mean(dn * norm)) * rstd
 *   dweight += sum_rows dout * norm
 * dinp runs a thread per row; dweight is a sum over rows, so it runs a thread per band of
 * columns that sums its rows in order (the same result for any thread count, as layernorm.c).
 */
#include "lk_cpu.h"

#define LK_RMS_BAND 64

void lk_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int64_t N,
                        int64_t C, float eps)
{
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
        const float s = 1.0f / sqrtf(ss / (float)C + eps);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
        if (rstd) rstd[n] = s;
    }
}

void lk_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int64_t N, int64_t C)
{
    if (dinp) {
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *g = dout + n * C;
            float *d = dinp + n * C;
            const float s = rstd[n];
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; c++) dot += g[c] * weight[c] * x[c] * s;
            const float m = dot / (float)C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) d[c] += (g[c] * weight[c] - x[c] * s * m) * s;
        }
    }
    if (dweight) {
        const int64_t bands = (C + LK_RMS_BAND - 1) / LK_RMS_BAND;
#pragma omp parallel for if (N * C >= LK_OMP_MIN_WORK)
        for (int64_t band = 0; band < bands; band++) {
            const int64_t c0 = band * LK_RMS_BAND, c1 = c0 + LK_RMS_BAND < C ? c0 + LK_RMS_BAND : C;
            float acc[LK_RMS_BAND] = {0};
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + n * C, *g = dout + n * C;
                const float s = rstd[n];
                for (int64_t c = c0; c < c1; c++) acc[c - c0] += g[c] * x[c] * s;
            }
            for (int64_t c = c0; c < c1; c++) dweight[c] += acc[c - c0];
        }
    }
}
