/*
 * attention_tile_mm.c - lk_tile_mm (attention_tile_mm.h): the tile products of the tiled
 * attention, 64 x 64 x 64 at GPT-2's sizes. Three kernels, picked at run time: AVX-512, AVX2
 * with FMA (6 x 16 blocks), and a portable loop. These are too small for a BLAS call
 * to pay for its argument checks and packing, and OpenBLAS must not be entered from inside the
 * attention's OpenMP region (its own thread pool then contends with ours). The AVX-512 kernel
 * keeps a 4 x 64 block of C in sixteen zmm registers while k runs, reading B a row of 64 at a
 * time and broadcasting A's four elements: 16 FMAs per 8 loads. Panels of 64 columns of B
 * (K x 64 floats, 16 KiB at K = 64) are walked by all rows of A before the next, so they stay
 * in L1.
 */
#include "attention_tile_mm.h"

#include <math.h>
#include <string.h>

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Four rows of C by LK_MM_NB columns at a time in an on-stack block the compiler vectorises;
 * for CPUs without AVX-512 (and builds for other architectures). */
#define LK_MM_NB 32
static void tile_mm_portable(float *C, int64_t ldc, const float *A, int64_t sam, int64_t sak, const float *Bm,
                             int64_t ldb, int64_t M, int64_t N, int64_t K, float alpha, int accumulate)
{
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mb = min_i64(4, M - m0);
        const float *a0 = A + m0 * sam, *a1 = a0 + (mb > 1 ? sam : 0), *a2 = a0 + (mb > 2 ? 2 * sam : 0),
                    *a3 = a0 + (mb > 3 ? 3 * sam : 0);
        for (int64_t n0 = 0; n0 < N; n0 += LK_MM_NB) {
            const int64_t nb = min_i64(LK_MM_NB, N - n0);
            float acc[4][LK_MM_NB];
            memset(acc, 0, sizeof acc);
            if (nb == LK_MM_NB) { /* a constant trip count the compiler vectorises fully */
                for (int64_t k = 0; k < K; k++) {
                    const float *b = Bm + k * ldb + n0;
                    const float x0 = a0[k * sak], x1 = a1[k * sak], x2 = a2[k * sak], x3 = a3[k * sak];
#pragma omp simd
                    for (int64_t n = 0; n < LK_MM_NB; n++) {
                        acc[0][n] = fmaf(x0, b[n], acc[0][n]);
                        acc[1][n] = fmaf(x1, b[n], acc[1][n]);
                        acc[2][n] = fmaf(x2, b[n], acc[2][n]);
                        acc[3][n] = fmaf(x3, b[n], acc[3][n]);
                    }
                }
            } else {
                for (int64_t k = 0; k < K; k++) {
                    const float *b = Bm + k * ldb + n0;
                    const float x0 = a0[k * sak], x1 = a1[k * sak], x2 = a2[k * sak], x3 = a3[k * sak];
                    for (int64_t n = 0; n < nb; n++) {
                        acc[0][n] = fmaf(x0, b[n], acc[0][n]);
                        acc[1][n] = fmaf(x1, b[n], acc[1][n]);
                        acc[2][n] = fmaf(x2, b[n], acc[2][n]);
                        acc[3][n] = fmaf(x3, b[n], acc[3][n]);
                    }
                }
            }
            for (int64_t j = 0; j < mb; j++) {
                float *c = C + (m0 + j) * ldc + n0;
                if (accumulate)
                    for (int64_t n = 0; n < nb; n++)
                        c[n] = fmaf(alpha, acc[j][n], c[n]);
                else
                    for (int64_t n = 0; n < nb; n++)
                        c[n] = alpha * acc[j][n];
            }
        }
    }
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(LK_TILE_MM_PORTABLE_ONLY)
#include <immintrin.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(LK_TILE_MM_PORTABLE_ONLY) &&           \
    !defined(LK_TILE_MM_AVX2_ONLY)
#define LK_TILE_MM_AVX512 1

/* One 4 x (16 NV) block of C; NV is a constant at every call, so acc stays in registers. Rows
 * past mb read row 0 again and are not stored; columns past nb are masked off. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
block_avx512(float *C, int64_t ldc, const float *a0, int64_t sam, int64_t sak, const float *b, int64_t ldb, int64_t mb,
             const __mmask16 *mask, int64_t K, float alpha, int accumulate, const int NV)
{
    const float *a1 = a0 + (mb > 1 ? sam : 0), *a2 = a0 + (mb > 2 ? 2 * sam : 0), *a3 = a0 + (mb > 3 ? 3 * sam : 0);
    __m512 acc[4][4];
    for (int v = 0; v < NV; v++)
        acc[0][v] = acc[1][v] = acc[2][v] = acc[3][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++, b += ldb) {
        __m512 bv[4];
        for (int v = 0; v < NV; v++)
            bv[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
        const int64_t o = k * sak;
        const __m512 x0 = _mm512_set1_ps(a0[o]), x1 = _mm512_set1_ps(a1[o]), x2 = _mm512_set1_ps(a2[o]),
                     x3 = _mm512_set1_ps(a3[o]);
        for (int v = 0; v < NV; v++) {
            acc[0][v] = _mm512_fmadd_ps(x0, bv[v], acc[0][v]);
            acc[1][v] = _mm512_fmadd_ps(x1, bv[v], acc[1][v]);
            acc[2][v] = _mm512_fmadd_ps(x2, bv[v], acc[2][v]);
            acc[3][v] = _mm512_fmadd_ps(x3, bv[v], acc[3][v]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
    for (int j = 0; j < 4; j++) {
        if (j >= mb) break;
        float *c = C + j * ldc;
        for (int v = 0; v < NV; v++) {
            const __m512 r = accumulate ? _mm512_fmadd_ps(al, acc[j][v], _mm512_maskz_loadu_ps(mask[v], c + 16 * v))
                                        : _mm512_mul_ps(al, acc[j][v]);
            _mm512_mask_storeu_ps(c + 16 * v, mask[v], r);
        }
    }
}

__attribute__((target("avx512f,fma"))) static void tile_mm_avx512(float *C, int64_t ldc, const float *A, int64_t sam,
                                                                  int64_t sak, const float *Bm, int64_t ldb, int64_t M,
                                                                  int64_t N, int64_t K, float alpha, int accumulate)
{
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
        const int64_t nb = min_i64(64, N - n0), nv = (nb + 15) / 16;
        __mmask16 mask[4];
        for (int v = 0; v < 4; v++) {
            const int64_t r = nb - 16 * v;
            mask[v] = r >= 16 ? (__mmask16)0xffff : r <= 0 ? (__mmask16)0 : (__mmask16)((1u << r) - 1u);
        }
        for (int64_t m0 = 0; m0 < M; m0 += 4) {
            const int64_t mb = min_i64(4, M - m0);
            float *c = C + m0 * ldc + n0;
            const float *a = A + m0 * sam, *b = Bm + n0;
            switch (nv) {
            case 4:
                block_avx512(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 4);
                break;
            case 3:
                block_avx512(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 3);
                break;
            case 2:
                block_avx512(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 2);
                break;
            default:
                block_avx512(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 1);
                break;
            }
        }
    }
}
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(LK_TILE_MM_PORTABLE_ONLY)
#define LK_TILE_MM_AVX2 1

/* One 6 x (8 NV) block of C for CPUs with AVX2 but not AVX-512: twelve ymm accumulators, two
 * of B and one broadcast fill the sixteen registers (the classic 6 x 16 shape). FULL: all 8 NV
 * columns are there (plain loads); otherwise masked. Rows past mb read row 0 again and are not
 * stored. The same fused multiply-adds in the same k order as the other kernels: the same bits. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
block_avx2(float *C, int64_t ldc, const float *a0, int64_t sam, int64_t sak, const float *b, int64_t ldb, int64_t mb,
           const __m256i *mask, int64_t K, float alpha, int accumulate, const int NV, const int FULL)
{
    const float *a[6];
    for (int j = 0; j < 6; j++)
        a[j] = a0 + (mb > j ? j * sam : 0);
    __m256 acc[6][2];
    for (int j = 0; j < 6; j++)
        for (int v = 0; v < NV; v++)
            acc[j][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++, b += ldb) {
        __m256 bv[2];
        for (int v = 0; v < NV; v++)
            bv[v] = FULL ? _mm256_loadu_ps(b + 8 * v) : _mm256_maskload_ps(b + 8 * v, mask[v]);
        const int64_t o = k * sak;
        for (int j = 0; j < 6; j++) {
            const __m256 x = _mm256_broadcast_ss(a[j] + o);
            for (int v = 0; v < NV; v++)
                acc[j][v] = _mm256_fmadd_ps(x, bv[v], acc[j][v]);
        }
    }
    const __m256 al = _mm256_set1_ps(alpha);
    for (int j = 0; j < 6 && j < mb; j++) {
        float *c = C + j * ldc;
        for (int v = 0; v < NV; v++) {
            if (FULL) {
                const __m256 r = accumulate ? _mm256_fmadd_ps(al, acc[j][v], _mm256_loadu_ps(c + 8 * v))
                                            : _mm256_mul_ps(al, acc[j][v]);
                _mm256_storeu_ps(c + 8 * v, r);
            } else {
                const __m256 r = accumulate ? _mm256_fmadd_ps(al, acc[j][v], _mm256_maskload_ps(c + 8 * v, mask[v]))
                                            : _mm256_mul_ps(al, acc[j][v]);
                _mm256_maskstore_ps(c + 8 * v, mask[v], r);
            }
        }
    }
}

/* Panels of 16 columns of B (K x 16 floats, 4 KiB at K = 64) walked by all rows of A. */
__attribute__((target("avx2,fma"))) static void tile_mm_avx2(float *C, int64_t ldc, const float *A, int64_t sam,
                                                             int64_t sak, const float *Bm, int64_t ldb, int64_t M,
                                                             int64_t N, int64_t K, float alpha, int accumulate)
{
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        const int64_t nb = min_i64(16, N - n0);
        __m256i mask[2];
        for (int v = 0; v < 2; v++) {
            const int64_t r = nb - 8 * v;
            const int32_t k = (int32_t)(r >= 8 ? 8 : r <= 0 ? 0 : r);
            const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(k), idx);
        }
        for (int64_t m0 = 0; m0 < M; m0 += 6) {
            const int64_t mb = min_i64(6, M - m0);
            float *c = C + m0 * ldc + n0;
            const float *a = A + m0 * sam, *b = Bm + n0;
            if (nb == 16)
                block_avx2(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 2, 1);
            else if (nb > 8)
                block_avx2(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 2, 0);
            else
                block_avx2(c, ldc, a, sam, sak, b, ldb, mb, mask, K, alpha, accumulate, 1, nb == 8);
        }
    }
}
#endif

void lk_tile_mm(float *C, int64_t ldc, const float *A, int64_t sam, int64_t sak, const float *B, int64_t ldb, int64_t M,
                int64_t N, int64_t K, float alpha, int accumulate)
{
#ifdef LK_TILE_MM_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        tile_mm_avx512(C, ldc, A, sam, sak, B, ldb, M, N, K, alpha, accumulate);
        return;
    }
#endif
#ifdef LK_TILE_MM_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        tile_mm_avx2(C, ldc, A, sam, sak, B, ldb, M, N, K, alpha, accumulate);
        return;
    }
#endif
    tile_mm_portable(C, ldc, A, sam, sak, B, ldb, M, N, K, alpha, accumulate);
}
