/*
 * attention_tile_mm.h - the small dense products of the tiled attention (attention_flash.c).
 */
#ifndef LK_ATTENTION_TILE_MM_H
#define LK_ATTENTION_TILE_MM_H

#include <stdint.h>

/* C[M, N] = alpha * A B, or C += alpha * A B when accumulate. B is row-major [K, N] with row
 * stride ldb; A's element (m, k) is at A[m * sam + k * sak], so A may be read transposed. Each
 * element's sum runs over k in order, so a given machine gives the same bits whatever calls
 * it, in whatever order. Picks an AVX-512 micro-kernel when the CPU has one, else an AVX2 + FMA
 * one (checked at run time), a portable loop otherwise. */
void lk_tile_mm(float *C, int64_t ldc, const float *A, int64_t sam, int64_t sak, const float *B, int64_t ldb, int64_t M,
                int64_t N, int64_t K, float alpha, int accumulate);

#endif
