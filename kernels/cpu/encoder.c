/*
 * encoder.c - GPT-2's input embedding: token embedding (wte) plus position embedding (wpe).
 *
 * The backward scatters rows of dout into dwte at the token ids, and ids repeat within a
 * batch, so splitting the (b, t) loop across threads would race on dwte's rows. Instead each
 * thread owns a band of columns and walks every (b, t) in order: the writes are disjoint, no
 * atomics are needed, and each element sums its contributions in (b, t) order whatever the
 * thread count.
 */
#include "lk_cpu.h"

#include <string.h>

/* Columns per band in the backward. 64 floats = four cache lines, so two threads never write
 * the same line, and C = 768 still gives 12 bands to share out. */
#define LK_ENC_BAND 64

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

void lk_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                        int64_t B, int64_t T, int64_t C)
{
#pragma omp parallel for collapse(2) if (B * T * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            float *o = out + (b * T + t) * C;
            const float *e = wte + (int64_t)tokens[b * T + t] * C;
            const float *p = wpe + t * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = e[c] + p[c];
        }
    }
}

void lk_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                         int64_t B, int64_t T, int64_t C)
{
    if (dwte) {
        const int64_t bands = (C + LK_ENC_BAND - 1) / LK_ENC_BAND;
#pragma omp parallel for schedule(static) if (B * T * C >= LK_OMP_MIN_WORK)
        for (int64_t band = 0; band < bands; band++) {
            const int64_t c0 = band * LK_ENC_BAND, width = min_i64(LK_ENC_BAND, C - c0);
            for (int64_t bt = 0; bt < B * T; bt++) {
                float *d = dwte + (int64_t)tokens[bt] * C + c0;
                const float *g = dout + bt * C + c0;
#pragma omp simd
                for (int64_t j = 0; j < width; j++) d[j] += g[j];
            }
        }
    }
    if (dwpe) {
        /* Position t collects from every sequence: one thread per row of dwpe, b in order. */
#pragma omp parallel for if (B * T * C >= LK_OMP_MIN_WORK)
        for (int64_t t = 0; t < T; t++) {
            float *d = dwpe + t * C;
            for (int64_t b = 0; b < B; b++) {
                const float *g = dout + (b * T + t) * C;
#pragma omp simd
                for (int64_t c = 0; c < C; c++) d[c] += g[c];
            }
        }
    }
}
