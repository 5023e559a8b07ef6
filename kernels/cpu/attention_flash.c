/*
 * attention_flash.c - causal multi-head attention in tiles (FlashAttention-2's schedule on the
 * CPU): the same function as attention.c, qkv packed [B, T, 3C], but the [T, T] probabilities
 * are never stored. The forward keeps, per query row, a running max m and sum l of the
 * exponentials (the online softmax) and rescales its output accumulator when m grows; it
 * saves only the row's log-sum-exp lse = m + log l. The backward recomputes each tile's
 * probabilities from lse: P = exp(S - lse), exact up to round-off.
 *
 * Memory is O(T) per head: a thread packs its head's q, k, v (and in the backward dout and
 * the dq accumulator) into contiguous [T, hs] f32 panels, widening bf16/f16 inputs there, plus
 * k and v transposed, and works on [BR, BC] score tiles. The tile products are lk_tile_mm
 * (attention_tile_mm.c: AVX-512 or AVX2 register-blocked kernels), not BLAS calls: OpenBLAS entered
 * from inside an OpenMP region contends for its own thread pool (tens of times slower on a
 * loaded machine), and at these sizes its call and packing overhead would be a large share.
 *
 * Determinism: every output element is computed by one thread in a fixed order, so results do
 * not depend on the thread count. The forward splits the work over (b, h, query tile), each
 * tile's rows finishing on one thread. The backward splits over (b, h) pairs: it walks key
 * tiles in the outer loop (dk, dv of a tile finish in a small accumulator) and query tiles
 * inside (dq accumulates in the head's panel), so nothing is shared between threads; splitting
 * it finer would need dq summed across threads, or S and dP computed twice.
 *
 * Backward, per tile (s = 1/sqrt(hs), D_t = dout_t . out_t, which equals sum_t2 P dP):
 *   S = s Q K^T, P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P (dP - D),
 *   dQ += s dS K, dK += s dS^T Q.
 */
/* Let GCC if-convert lk_expf's clamps into vector blends (see attention.c). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "attention_tile_mm.h"
#include "lk_cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Query rows (BR) and key columns (BC) of a tile. At hs = 64 a 64 x 64 tile's operands (q, k
 * and v tiles and the scores, 16 KiB each) stay in L1/L2, and the diagonal tiles, half of
 * whose products the causal mask throws away, are a smaller share than with 128 x 128 (at
 * T = 128, 3 tiles of 4 instead of 1 of 1). The tests build this file with small odd tiles so
 * T is not a multiple of them. */
#ifndef LK_FLASH_BR
#define LK_FLASH_BR 64
#endif
#ifndef LK_FLASH_BC
#define LK_FLASH_BC 64
#endif

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int dtype_ok(uint32_t dtype)
{
    return dtype == LOOM_DTYPE_F32 || dtype == LOOM_DTYPE_BF16 || dtype == LOOM_DTYPE_F16;
}

/* dst[i, t] = src[t, i] for rows t0 <= t < t1 of a [T, hs] panel: the transposed k or v that
 * S = Q K^T and dP = dO V^T read row by row, rows ld floats apart (transposed_ld). Sixteen
 * rows at a time, so each store run fills a cache line of dst: one element per row of dst
 * (rows T floats apart) took a quarter of the whole attention's time at T = 1024. */
static void transpose(float *dst, int64_t ld, const float *src, int64_t t0, int64_t t1, int64_t hs)
{
    for (int64_t tb = t0; tb < t1; tb += 16) {
        const int64_t te = min_i64(tb + 16, t1);
        for (int64_t i = 0; i < hs; i++)
            for (int64_t t = tb; t < te; t++)
                dst[i * ld + t] = src[t * hs + i];
    }
}

/* The row stride of a transposed panel: T rounded up to 16 floats, plus 16. A tile product
 * reads a 16-column strip of it down all hs rows; with rows exactly 4 KiB apart (T = 1024)
 * every row of the strip falls in the same L1 set, 8 ways hold 8 of 64 rows, and the AVX2
 * kernel ran at 68 GFLOP/s a thread instead of 90. One cache line more a row spreads the
 * strip over 64 sets. */
static int64_t transposed_ld(int64_t T)
{
    return (T + 15) / 16 * 16 + 16;
}

/* dst[t, :] = the hs elements at src + (b T + t) ld + off, as f32. */
static void pack(float *dst, const void *src, uint32_t dtype, int64_t T, int64_t ld, int64_t off, int64_t hs)
{
    const size_t es = loom_dtype_size(dtype);
    if (dtype == LOOM_DTYPE_F32) { /* no conversion: skip lk_convert's per-call dispatch */
        for (int64_t t = 0; t < T; t++)
            memcpy(dst + t * hs, (const float *)src + t * ld + off, (size_t)hs * sizeof *dst);
        return;
    }
    if (dtype == LOOM_DTYPE_BF16) { /* the rows are short: inline, no lk_convert dispatch each */
        for (int64_t t = 0; t < T; t++) {
            const uint16_t *s = (const uint16_t *)src + t * ld + off;
            for (int64_t i = 0; i < hs; i++)
                dst[t * hs + i] = lk_bf16_to_f32(s[i]);
        }
        return;
    }
    for (int64_t t = 0; t < T; t++)
        lk_convert(dst + t * hs, LOOM_DTYPE_F32, (const char *)src + (size_t)(t * ld + off) * es, dtype, hs);
}

/* One thread's panels (lk_workspace: a failure ends the run). */
static float *workspace(size_t floats)
{
    return lk_workspace("flash attention", floats * sizeof(float));
}

/* Attention dropout (ABI 1.4): probability e of [B, NH, T, T] is kept, scaled by 1 / (1 - p),
 * when loom_dropout_keep(seed, e, p); the mask is drawn again in the backward, never stored.
 * lse stays the undropped softmax's; p = 0 runs the 1.3 arithmetic unchanged. */
static float drop_factor(uint64_t seed, int64_t b, int64_t h, int64_t NH, int64_t T, int64_t t, int64_t s, float p,
                         float keep_scale)
{
    return loom_dropout_keep(seed, (uint64_t)(((b * NH + h) * T + t) * T + s), p) ? keep_scale : 0.0f;
}

void lk_attention_flash_forward_dropout(float *out, float *lse, const void *qkv, uint32_t dtype, int64_t B, int64_t T,
                                        int64_t C, int64_t NH, float dropout, uint64_t seed)
{
    const float keep_scale = dropout > 0.0f ? 1.0f / (1.0f - dropout) : 1.0f;
    if (!dtype_ok(dtype) || B <= 0 || T <= 0) return;
    /* bf16 q, k, v on AMX tiles where the CPU has them (attention_amx.c). */
    if (dtype == LOOM_DTYPE_BF16 && dropout == 0.0f && lk_attention_amx_forward(out, lse, qkv, B, T, C, NH)) return;
    const int64_t hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t es = loom_dtype_size(dtype);
    const int64_t nq = (T + LK_FLASH_BR - 1) / LK_FLASH_BR, ldt = transposed_ld(T);
#pragma omp parallel if (B * T * T * C >= 2 * LK_OMP_MIN_WORK)
    {
        float *q =
            workspace((size_t)(3 * T * hs + ldt * hs + LK_FLASH_BR * LK_FLASH_BC + LK_FLASH_BR * hs + 2 * LK_FLASH_BR));
        float *k = q + T * hs, *v = k + T * hs, *kt = v + T * hs, *S = kt + ldt * hs,
              *acc = S + LK_FLASH_BR * LK_FLASH_BC;
        float *m = acc + LK_FLASH_BR * hs, *l = m + LK_FLASH_BR;
        int64_t packed_bh = -1, packed = 0; /* k, v, kt hold rows [0, packed) of head packed_bh */
        /* One item per (b, h, query tile), a head's last tiles (the most keys) first, so both
         * threads stay busy to the end whatever B and NH are. A thread keeps its head's k, v
         * panels while its next item is of the same head (the usual case: the items it takes
         * are consecutive or nearly), and extends them when a tile needs more keys. */
#pragma omp for schedule(dynamic)
        for (int64_t w = 0; w < B * NH * nq; w++) {
            const int64_t bh = w / nq, b = bh / NH, h = bh % NH, i0 = (nq - 1 - w % nq) * LK_FLASH_BR;
            const int64_t br = min_i64(LK_FLASH_BR, T - i0), keys = i0 + br;
            const char *base = (const char *)qkv + (size_t)(b * T * C3) * es;
            if (bh != packed_bh) packed_bh = bh, packed = 0;
            if (keys > packed) {
                const char *rows = base + (size_t)(packed * C3) * es;
                pack(k + packed * hs, rows, dtype, keys - packed, C3, C + h * hs, hs);
                pack(v + packed * hs, rows, dtype, keys - packed, C3, 2 * C + h * hs, hs);
                transpose(kt, ldt, k, packed, keys, hs);
                packed = keys;
            }
            pack(q + i0 * hs, base + (size_t)(i0 * C3) * es, dtype, br, C3, h * hs, hs);
            for (int64_t r = 0; r < br; r++)
                m[r] = -INFINITY, l[r] = 0.0f;
            for (int64_t j0 = 0; j0 < keys; j0 += LK_FLASH_BC) {
                const int64_t bc = min_i64(LK_FLASH_BC, keys - j0);
                lk_tile_mm(S, LK_FLASH_BC, q + i0 * hs, hs, 1, kt + j0, ldt, br, bc, hs, scale, 0);
                for (int64_t r = 0; r < br; r++) {
                    float *row = S + r * LK_FLASH_BC, *o = acc + r * hs;
                    const int64_t n = min_i64(bc, i0 + r - j0 + 1); /* causal: keys <= t */
                    if (n <= 0) {                                   /* no key of this tile is visible to row r */
                        for (int64_t c = 0; c < bc; c++)
                            row[c] = 0.0f;
                        continue;
                    }
                    float mx;
                    const float sum = lk_online_softmax_row(row, n, m[r], &mx);
                    for (int64_t c = n; c < bc; c++)
                        row[c] = 0.0f;
                    if (dropout > 0.0f) /* after the sum: l is the undropped softmax's */
                        for (int64_t c = 0; c < n; c++)
                            row[c] *= drop_factor(seed, b, h, NH, T, i0 + r, j0 + c, dropout, keep_scale);
                    lk_online_softmax_rescale(o, hs, &l[r], &m[r], mx, sum, j0 == 0);
                }
                lk_tile_mm(acc, hs, S, LK_FLASH_BC, 1, v + j0 * hs, hs, br, hs, bc, 1.0f, 1);
            }
            for (int64_t r = 0; r < br; r++)
                lk_online_softmax_finish(out + (b * T + i0 + r) * C + h * hs, acc + r * hs, hs, l[r], m[r],
                                         &lse[(b * NH + h) * T + i0 + r]);
        }
        free(q);
    }
}

void lk_attention_flash_forward(float *out, float *lse, const void *qkv, uint32_t dtype, int64_t B, int64_t T,
                                int64_t C, int64_t NH)
{
    lk_attention_flash_forward_dropout(out, lse, qkv, dtype, B, T, C, NH, 0.0f, 0);
}

/* With dropout Z (mask times 1 / (1 - p)): dV += (P Z)^T dO, dP = Z (dO V^T), dS = P (dP - D),
 * D = rowsum(dO O) with O the dropped output (FlashAttention's backward with dropout). */
void lk_attention_flash_backward_dropout(float *dqkv, const float *dout, const void *qkv, uint32_t dtype,
                                         const float *out, const float *lse, int64_t B, int64_t T, int64_t C,
                                         int64_t NH, float dropout, uint64_t seed)
{
    const float keep_scale = dropout > 0.0f ? 1.0f / (1.0f - dropout) : 1.0f;
    if (!dqkv || !dtype_ok(dtype) || B <= 0 || T <= 0) return;
    if (dtype == LOOM_DTYPE_BF16 && dropout == 0.0f &&
        lk_attention_amx_backward(dqkv, dout, qkv, out, lse, B, T, C, NH))
        return;
    const int64_t hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t es = loom_dtype_size(dtype);
    const int64_t ldt = transposed_ld(T);
#pragma omp parallel if (B * T * T * C >= LK_OMP_MIN_WORK)
    {
        float *q =
            workspace((size_t)(5 * T * hs + 2 * ldt * hs + T + 2 * LK_FLASH_BR * LK_FLASH_BC + 2 * LK_FLASH_BC * hs));
        float *k = q + T * hs, *v = k + T * hs, *dO = v + T * hs, *dq = dO + T * hs, *kt = dq + T * hs;
        float *vt = kt + ldt * hs, *D = vt + ldt * hs;
        float *P = D + T, *dS = P + LK_FLASH_BR * LK_FLASH_BC, *dk = dS + LK_FLASH_BR * LK_FLASH_BC;
        float *dv = dk + LK_FLASH_BC * hs;
#pragma omp for collapse(2) schedule(dynamic)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < NH; h++) {
                const char *base = (const char *)qkv + (size_t)(b * T * C3) * es;
                pack(q, base, dtype, T, C3, h * hs, hs);
                pack(k, base, dtype, T, C3, C + h * hs, hs);
                pack(v, base, dtype, T, C3, 2 * C + h * hs, hs);
                pack(dO, dout + b * T * C, LOOM_DTYPE_F32, T, C, h * hs, hs);
                transpose(kt, ldt, k, 0, T, hs);
                transpose(vt, ldt, v, 0, T, hs);
                const float *L = lse + (b * NH + h) * T;
                for (int64_t t = 0; t < T; t++) {
                    const float *o = out + (b * T + t) * C + h * hs, *g = dO + t * hs;
                    float d = 0.0f;
#pragma omp simd reduction(+ : d)
                    for (int64_t i = 0; i < hs; i++)
                        d = fmaf(g[i], o[i], d);
                    D[t] = d;
                }
                for (int64_t i = 0; i < T * hs; i++)
                    dq[i] = 0.0f;
                for (int64_t j0 = 0; j0 < T; j0 += LK_FLASH_BC) {
                    const int64_t bc = min_i64(LK_FLASH_BC, T - j0);
                    for (int64_t i = 0; i < bc * hs; i++)
                        dk[i] = dv[i] = 0.0f;
                    /* Query tiles with a row t >= j0: the one holding j0 and those after. */
                    for (int64_t i0 = j0 / LK_FLASH_BR * LK_FLASH_BR; i0 < T; i0 += LK_FLASH_BR) {
                        const int64_t br = min_i64(LK_FLASH_BR, T - i0);
                        lk_tile_mm(P, LK_FLASH_BC, q + i0 * hs, hs, 1, kt + j0, ldt, br, bc, hs, scale, 0);
                        lk_tile_mm(dS, LK_FLASH_BC, dO + i0 * hs, hs, 1, vt + j0, ldt, br, bc, hs, 1.0f, 0);
                        for (int64_t r = 0; r < br; r++) {
                            float *p = P + r * LK_FLASH_BC, *ds = dS + r * LK_FLASH_BC;
                            const int64_t n = min_i64(bc, i0 + r - j0 + 1);
                            const float lr = L[i0 + r], dr = D[i0 + r];
                            if (dropout > 0.0f) {
                                for (int64_t c = 0; c < bc; c++) {
                                    const float e = c < n ? lk_expf(p[c] - lr) : 0.0f;
                                    const float z =
                                        c < n ? drop_factor(seed, b, h, NH, T, i0 + r, j0 + c, dropout, keep_scale)
                                              : 0.0f;
                                    p[c] = e * z;
                                    ds[c] = e * (ds[c] * z - dr) * scale;
                                }
                                continue;
                            }
#pragma omp simd
                            for (int64_t c = 0; c < bc; c++) {
                                const float e = c < n ? lk_expf(p[c] - lr) : 0.0f;
                                p[c] = e;
                                ds[c] = e * (ds[c] - dr) * scale;
                            }
                        }
                        lk_tile_mm(dv, hs, P, 1, LK_FLASH_BC, dO + i0 * hs, hs, bc, hs, br, 1.0f, 1);
                        lk_tile_mm(dq + i0 * hs, hs, dS, LK_FLASH_BC, 1, k + j0 * hs, hs, br, hs, bc, 1.0f, 1);
                        lk_tile_mm(dk, hs, dS, 1, LK_FLASH_BC, q + i0 * hs, hs, bc, hs, br, 1.0f, 1);
                    }
                    for (int64_t c = 0; c < bc; c++) {
                        float *gk = dqkv + (b * T + j0 + c) * C3 + C + h * hs, *gv = gk + C;
                        const float *sk = dk + c * hs, *sv = dv + c * hs;
#pragma omp simd
                        for (int64_t i = 0; i < hs; i++)
                            gk[i] += sk[i], gv[i] += sv[i];
                    }
                }
                lk_add_panel(dqkv + b * T * C3 + h * hs, C3, dq, T, hs);
            }
        }
        free(q);
    }
}

void lk_attention_flash_backward(float *dqkv, const float *dout, const void *qkv, uint32_t dtype, const float *out,
                                 const float *lse, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    lk_attention_flash_backward_dropout(dqkv, dout, qkv, dtype, out, lse, B, T, C, NH, 0.0f, 0);
}
