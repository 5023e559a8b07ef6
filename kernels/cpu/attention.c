/*
 * attention.c - causal multi-head self-attention (GPT-2's), qkv packed [B, T, 3C]:
 *   q_t = qkv[b, t, h*hs : (h+1)*hs], k_t at offset C, v_t at offset 2C, hs = C / NH,
 *   att[t, t2] = softmax_{t2 <= t}(q_t . k_t2 / sqrt(hs)),  out_t = sum_{t2 <= t} att[t, t2] v_t2.
 *
 * Work is split over (b, h) pairs: each pair reads and writes only its own head's slices of
 * qkv / dqkv / out / att, so threads never share an output element and the result does not
 * depend on the thread count. Within a pair the loops are hand-written rather than BLAS
 * calls: at GPT-2 sizes (hs = 64, causal T x T blocks) the products are too small for
 * OpenBLAS to pay its call and threading overhead, and OpenBLAS's own thread pool must not
 * be entered from inside an OpenMP region. The inner loops run over hs (contiguous) and are
 * vectorised with omp simd, with explicit fmaf (ISO C mode, -std=c11, turns off GCC's
 * automatic FMA contraction); dot products and axpys go four key positions at a time so the
 * loads of q_t / dout_t / out_t and the cross-lane sums are shared. Only t2 <= t is touched.
 *
 * Backward, per row t (s = 1/sqrt(hs), dpre = gradient of the pre-softmax scores / s):
 *   datt[t2] = dout_t . v_t2
 *   dpre[t2] = att[t2] * (datt[t2] - sum_t2' att[t2'] datt[t2'])
 *   dq_t += s sum_t2 dpre[t2] k_t2,  dk_t2 += s dpre[t2] q_t,  dv_t2 += att[t2] dout_t.
 * datt for a row lives in a stack buffer of LK_ATT_CHUNK floats. Rows longer than that
 * (T > LK_ATT_CHUNK) are done in chunks: a first pass accumulates the row sum, and a second
 * recomputes each chunk's datt before applying it. So the kernel never allocates, and the
 * caller provides no scratch, at the price of one extra dot product per score on rows
 * longer than the chunk.
 */
/* Let GCC if-convert lk_expf's clamps into vector blends: -fno-trapping-math only drops the
 * assumption that FP exceptions trap (they never do here); results are unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "lk_cpu.h"

#include <math.h>

/* Scores per stack chunk in the backward: 1024 floats = 4 KiB, GPT-2's whole context. The
 * tests build this file with a tiny value to exercise the chunked path. */
#ifndef LK_ATT_CHUNK
#define LK_ATT_CHUNK 1024
#endif

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline float dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* res[j] = a . b_j for the four rows b_j = b + j*ldb. Four dot products per pass share the
 * loads of a and pay for their horizontal (cross-lane) sums together: with hs = 64 a lone
 * dot product spends as long reducing its vector as multiplying. */
static inline void dot4(float *res, const float *a, const float *b, int64_t ldb, int64_t n)
{
    const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < n; i++) {
        const float ai = a[i];
        s0 = fmaf(ai, b0[i], s0);
        s1 = fmaf(ai, b1[i], s1);
        s2 = fmaf(ai, b2[i], s2);
        s3 = fmaf(ai, b3[i], s3);
    }
    res[0] = s0, res[1] = s1, res[2] = s2, res[3] = s3;
}

/* res[j] = a . (b + j*ldb) for j < n. */
static void dots(float *res, const float *a, const float *b, int64_t ldb, int64_t n, int64_t hs)
{
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) dot4(res + j, a, b + j * ldb, ldb, hs);
    for (; j < n; j++) res[j] = dot(a, b + j * ldb, hs);
}

void lk_attention_forward(float *out, float *att, const float *qkv, int64_t B, int64_t T,
                          int64_t C, int64_t NH)
{
    const int64_t hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static) if (B * T * T * C >= 2 * LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < NH; h++) {
            const float *q = qkv + b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *a = att + (b * NH + h) * T * T;
            float *o = out + b * T * C + h * hs;
            for (int64_t t = 0; t < T; t++) {
                const int64_t len = t + 1;
                float *row = a + t * T;
                dots(row, q + t * C3, k, C3, len, hs);
                float max = -INFINITY;
#pragma omp simd reduction(max : max)
                for (int64_t t2 = 0; t2 < len; t2++) max = row[t2] > max ? row[t2] : max;
                /* Shifting by the row max keeps every exponent <= 0 (no overflow) and makes
                 * the largest term exactly 1 (the sum cannot underflow). The scale is applied
                 * inside the exponent: max of the scaled scores = scale * max. */
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int64_t t2 = 0; t2 < len; t2++) {
                    const float e = lk_expf((row[t2] - max) * scale);
                    row[t2] = e;
                    sum += e;
                }
                const float inv = 1.0f / sum;
#pragma omp simd
                for (int64_t t2 = 0; t2 < len; t2++) row[t2] *= inv;
                for (int64_t t2 = len; t2 < T; t2++) row[t2] = 0.0f;

                /* out_t = sum_t2 att[t2] v_t2, four rows of v per pass over out_t. */
                float *ot = o + t * C;
                for (int64_t i = 0; i < hs; i++) ot[i] = 0.0f;
                int64_t t2 = 0;
                for (; t2 + 4 <= len; t2 += 4) {
                    const float *v0 = v + t2 * C3, *v1 = v0 + C3, *v2 = v1 + C3, *v3 = v2 + C3;
                    const float a0 = row[t2], a1 = row[t2 + 1], a2 = row[t2 + 2], a3 = row[t2 + 3];
#pragma omp simd
                    for (int64_t i = 0; i < hs; i++)
                        ot[i] = fmaf(a3, v3[i], fmaf(a2, v2[i], fmaf(a1, v1[i], fmaf(a0, v0[i], ot[i]))));
                }
                for (; t2 < len; t2++) {
                    const float a0 = row[t2], *v0 = v + t2 * C3;
#pragma omp simd
                    for (int64_t i = 0; i < hs; i++) ot[i] = fmaf(a0, v0[i], ot[i]);
                }
            }
        }
    }
}

void lk_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           int64_t B, int64_t T, int64_t C, int64_t NH)
{
    if (!dqkv) return; /* the only gradient output */
    const int64_t hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static) if (B * T * T * C >= LK_OMP_MIN_WORK)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < NH; h++) {
            float buf[LK_ATT_CHUNK];
            const float *q = qkv + b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + (b * NH + h) * T * T;
            const float *g = dout + b * T * C + h * hs;
            for (int64_t t = 0; t < T; t++) {
                const float *row = a + t * T, *gt = g + t * C, *qt = q + t * C3;
                float *dqt = dq + t * C3;
                const int64_t len = t + 1;
                /* Pass 1: sum_t2 att * datt, datt[t2] = dout_t . v_t2 (kept in buf when the
                 * row fits one chunk). */
                float s = 0.0f;
                for (int64_t t0 = 0; t0 < len; t0 += LK_ATT_CHUNK) {
                    const int64_t n = min_i64(LK_ATT_CHUNK, len - t0);
                    dots(buf, gt, v + t0 * C3, C3, n, hs);
#pragma omp simd reduction(+ : s)
                    for (int64_t j = 0; j < n; j++) s += row[t0 + j] * buf[j];
                }
                /* Pass 2: buf becomes dpre * scale, then the three products. */
                for (int64_t t0 = 0; t0 < len; t0 += LK_ATT_CHUNK) {
                    const int64_t n = min_i64(LK_ATT_CHUNK, len - t0);
                    if (len > LK_ATT_CHUNK) dots(buf, gt, v + t0 * C3, C3, n, hs);
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) buf[j] = row[t0 + j] * (buf[j] - s) * scale;
                    int64_t j = 0;
                    for (; j + 4 <= n; j += 4) {
                        /* Four key positions per pass: dq_t is loaded and stored once for four
                         * rows of k, and q_t / dout_t once for four rows of dk / dv. */
                        const int64_t t2 = t0 + j;
                        const float d0 = buf[j], d1 = buf[j + 1], d2 = buf[j + 2], d3 = buf[j + 3];
                        const float p0 = row[t2], p1 = row[t2 + 1], p2 = row[t2 + 2], p3 = row[t2 + 3];
                        const float *k0 = k + t2 * C3, *k1 = k0 + C3, *k2 = k1 + C3, *k3 = k2 + C3;
                        float *dk0 = dk + t2 * C3, *dk1 = dk0 + C3, *dk2 = dk1 + C3, *dk3 = dk2 + C3;
                        float *dv0 = dv + t2 * C3, *dv1 = dv0 + C3, *dv2 = dv1 + C3, *dv3 = dv2 + C3;
#pragma omp simd
                        for (int64_t i = 0; i < hs; i++) {
                            const float qi = qt[i], gi = gt[i];
                            dqt[i] = fmaf(d3, k3[i], fmaf(d2, k2[i], fmaf(d1, k1[i], fmaf(d0, k0[i], dqt[i]))));
                            dk0[i] = fmaf(d0, qi, dk0[i]), dk1[i] = fmaf(d1, qi, dk1[i]);
                            dk2[i] = fmaf(d2, qi, dk2[i]), dk3[i] = fmaf(d3, qi, dk3[i]);
                            dv0[i] = fmaf(p0, gi, dv0[i]), dv1[i] = fmaf(p1, gi, dv1[i]);
                            dv2[i] = fmaf(p2, gi, dv2[i]), dv3[i] = fmaf(p3, gi, dv3[i]);
                        }
                    }
                    for (; j < n; j++) {
                        const int64_t t2 = t0 + j;
                        const float d0 = buf[j], p0 = row[t2];
                        const float *k0 = k + t2 * C3;
                        float *dk0 = dk + t2 * C3, *dv0 = dv + t2 * C3;
#pragma omp simd
                        for (int64_t i = 0; i < hs; i++) {
                            dqt[i] = fmaf(d0, k0[i], dqt[i]);
                            dk0[i] = fmaf(d0, qt[i], dk0[i]);
                            dv0[i] = fmaf(p0, gt[i], dv0[i]);
                        }
                    }
                }
            }
        }
    }
}
