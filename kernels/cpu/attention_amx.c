/*
 * attention_amx.c - the tiled attention (attention_flash.c) with bf16 q, k, v on AMX tiles.
 *
 * Why: in a bf16 run the products of the model run on oneDNN, which uses the AMX tiles where
 * the CPU has them, while the attention's tile products ran at the f32 FMA rate and took 28% of
 * GPT-2's step at B = 4, T = 1024 (docs/benchmarks.md#gpt2-long-xeon). AVX512_BF16 dot products
 * are no help there (half the f32 rate on such a CPU); TDPBF16PS is.
 *
 * The schedule is attention_flash.c's, on fixed 64 x 64 tiles: the forward splits over (b, h,
 * query tile), the backward over (b, h) with key tiles outside and query tiles inside, so every
 * output element is one thread's, in a fixed order, whatever the thread count. The softmax,
 * its statistics, D = rowsum(dO O) and dS are f32 as there; what changes is the products'
 * operands, which are bf16: q, k and v as stored, and P, dO and dS rounded to bf16 (as PyTorch's
 * bf16 attention rounds its probabilities and gradients), with f32 accumulation.
 *
 * Operands: A is row-major bf16 [M, K]; B is in the tiles' pair layout, row p holding the
 * elements of rows 2p and 2p + 1 interleaved ([K/2, N] words). Each head's k and v are packed
 * once in the layouts the products read; M, N and K are multiples of 32, padded with zeros
 * past T (the causal mask already zeroes every padded key, and padded query rows are written
 * as zeros).
 *
 * AMX needs the OS to grant the tile state (arch_prctl ARCH_REQ_XCOMP_PERM) and each thread to
 * load a tile configuration. LOOM_ATTENTION_AMX=0 in the environment (read once) keeps the f32
 * tiles, to compare the two.
 */
#include "lk_cpu.h"
#include "cpu_features.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AMX_TILE 64 /* query rows and key columns of a tile */

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(LK_ATTENTION_NO_AMX)
#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_state = -1; /* -1: not asked yet, 0: not used, 1: ready */
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void)
{
    const char *env = getenv("LOOM_ATTENTION_AMX");
    amx_state = !(env && strcmp(env, "0") == 0) && lk_cpu_has_amx_bf16() &&
                syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int lk_attention_amx_ready(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_state == 1;
}

/* Palette 1, eight tiles of 16 rows x 64 bytes: 0-3 a 32 x 32 block of C (f32), 4-5 two
 * 16-row strips of A, 6-7 two 16-column strips of B. Per thread. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

__attribute__((target("amx-tile"))) static void amx_begin(void)
{
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    _tile_loadconfig(&c);
}

__attribute__((target("amx-tile"))) static void amx_end(void)
{
    _tile_release();
}

/* C[M, N] (f32, row stride ldc) = A B, or C += A B when accumulate. A: bf16 [M, K], row
 * stride lda elements. B: the pair layout, [K/2, N] 32-bit words, row stride ldb words.
 * M, N and K are multiples of 32. */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_mm(float *C, int64_t ldc, const uint16_t *A, int64_t lda,
                                                                const uint32_t *B, int64_t ldb, int64_t M, int64_t N,
                                                                int64_t K, int accumulate)
{
    const size_t sc = (size_t)ldc * sizeof(float), sa = (size_t)lda * sizeof(uint16_t),
                 sb = (size_t)ldb * sizeof(uint32_t);
    for (int64_t m0 = 0; m0 < M; m0 += 32) {
        for (int64_t n0 = 0; n0 < N; n0 += 32) {
            float *c = C + m0 * ldc + n0;
            if (accumulate) {
                _tile_loadd(0, c, sc);
                _tile_loadd(1, c + 16, sc);
                _tile_loadd(2, c + 16 * ldc, sc);
                _tile_loadd(3, c + 16 * ldc + 16, sc);
            } else {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            }
            for (int64_t k0 = 0; k0 < K; k0 += 32) {
                _tile_loadd(4, A + m0 * lda + k0, sa);
                _tile_loadd(5, A + (m0 + 16) * lda + k0, sa);
                _tile_loadd(6, B + (k0 / 2) * ldb + n0, sb);
                _tile_loadd(7, B + (k0 / 2) * ldb + n0 + 16, sb);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, c, sc);
            _tile_stored(1, c + 16, sc);
            _tile_stored(2, c + 16 * ldc, sc);
            _tile_stored(3, c + 16 * ldc + 16, sc);
        }
    }
}

static int64_t round_up(int64_t n, int64_t m)
{
    return (n + m - 1) / m * m;
}

/* rows[t, :] = the hs bf16 elements at src + t ld + off, t < T; zeros up to Tp. */
static void pack_rows(uint16_t *rows, const uint16_t *src, int64_t T, int64_t Tp, int64_t ld, int64_t off, int64_t hs)
{
    for (int64_t t = 0; t < T; t++)
        memcpy(rows + t * hs, src + t * ld + off, (size_t)hs * sizeof *rows);
    memset(rows + T * hs, 0, (size_t)((Tp - T) * hs) * sizeof *rows);
}

/* The same from f32, rounded to bf16 (hs a multiple of 32). */
static void pack_rows_f32(uint16_t *rows, const float *src, int64_t T, int64_t Tp, int64_t ld, int64_t off, int64_t hs)
{
    for (int64_t t = 0; t < T; t++)
        lk_convert(rows + t * hs, LOOM_DTYPE_BF16, src + t * ld + off, LOOM_DTYPE_F32, hs);
    memset(rows + T * hs, 0, (size_t)((Tp - T) * hs) * sizeof *rows);
}

/* dst[i, t] = rows[t, i]: [Tp, hs] -> [hs, Tp], the left operand of dV^T = dO^T P and
 * dK^T = Q^T dS. Sixteen rows at a time, so each run of stores fills a cache line. */
static void transpose16(uint16_t *dst, const uint16_t *rows, int64_t Tp, int64_t hs)
{
    for (int64_t tb = 0; tb < Tp; tb += 16)
        for (int64_t i = 0; i < hs; i++)
            for (int64_t t = tb; t < tb + 16; t++)
                dst[i * Tp + t] = rows[t * hs + i];
}

/* B for X^T as the right operand (S = Q K^T, dP = dO V^T): word p of row t of X ([Tp, hs] bf16,
 * read as [Tp, hs/2] words) becomes word t of row p ([hs/2, Tp]). */
static void pack_transposed(uint32_t *dst, const uint16_t *rows, int64_t Tp, int64_t hs)
{
    const uint32_t *w = (const uint32_t *)(const void *)rows;
    const int64_t hw = hs / 2;
    for (int64_t tb = 0; tb < Tp; tb += 16)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t t = tb; t < tb + 16; t++)
                dst[p * Tp + t] = w[t * hw + p];
}

/* B for X as the right operand (O += P V, dQ += dS K, dV^T += dO^T P, dK^T += Q^T dS): rows
 * 2p and 2p + 1 of X ([Tp, hs] bf16) interleaved into row p ([Tp/2, hs] words). */
static void pack_pairs(uint32_t *dst, const uint16_t *rows, int64_t Tp, int64_t hs)
{
    for (int64_t p = 0; p < Tp / 2; p++) {
        const uint16_t *even = rows + 2 * p * hs, *odd = even + hs;
        uint32_t *d = dst + p * hs;
#pragma omp simd
        for (int64_t i = 0; i < hs; i++)
            d[i] = (uint32_t)even[i] | (uint32_t)odd[i] << 16;
    }
}

static void *workspace(size_t bytes)
{
    return lk_workspace("AMX attention", bytes);
}

int lk_attention_amx_forward(float *out, float *lse, const uint16_t *qkv, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    const int64_t hs = C / NH;
    if (B <= 0 || T <= 0 || hs % 32 || !lk_attention_amx_ready()) return 0;
    const int64_t C3 = 3 * C, Tp = round_up(T, AMX_TILE), nq = Tp / AMX_TILE;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if (B * T * T * C >= 2 * LK_OMP_MIN_WORK)
    {
        amx_begin();
        /* Per thread: the head's k^T and v in the products' layouts, a query tile, its scores,
         * probabilities and output accumulator, and the running max and sum of its rows. */
        uint16_t *rows = workspace((size_t)(Tp * hs) * 2 + (size_t)(AMX_TILE * hs) * 2);
        uint16_t *q = rows + Tp * hs;
        uint32_t *kt = workspace((size_t)(Tp * hs) * 2), *vp = workspace((size_t)(Tp * hs) * 2);
        float *S = workspace(sizeof(float) * (size_t)(AMX_TILE * AMX_TILE + AMX_TILE * hs + 2 * AMX_TILE));
        float *acc = S + AMX_TILE * AMX_TILE, *m = acc + AMX_TILE * hs, *l = m + AMX_TILE;
        uint16_t *P = workspace((size_t)(AMX_TILE * AMX_TILE) * 2);
        int64_t packed_bh = -1;
#pragma omp for schedule(dynamic)
        for (int64_t w = 0; w < B * NH * nq; w++) {
            const int64_t bh = w / nq, b = bh / NH, h = bh % NH, i0 = (nq - 1 - w % nq) * AMX_TILE;
            const int64_t br = min_i64(AMX_TILE, T - i0), keys = i0 + br;
            const uint16_t *base = qkv + b * T * C3;
            if (bh != packed_bh) { /* this head's k^T and v, once per run of its tiles */
                pack_rows(rows, base, T, Tp, C3, C + h * hs, hs);
                pack_transposed(kt, rows, Tp, hs);
                pack_rows(rows, base, T, Tp, C3, 2 * C + h * hs, hs);
                pack_pairs(vp, rows, Tp, hs);
                packed_bh = bh;
            }
            pack_rows(q, base + i0 * C3, br, AMX_TILE, C3, h * hs, hs);
            for (int64_t r = 0; r < AMX_TILE; r++)
                m[r] = -INFINITY, l[r] = 0.0f;
            for (int64_t j0 = 0; j0 < keys; j0 += AMX_TILE) {
                const int64_t bc = min_i64(AMX_TILE, keys - j0);
                amx_mm(S, AMX_TILE, q, hs, kt + j0, Tp, AMX_TILE, AMX_TILE, hs, 0);
                for (int64_t r = 0; r < AMX_TILE; r++) {
                    float *row = S + r * AMX_TILE, *o = acc + r * hs;
                    const int64_t n = r < br ? min_i64(bc, i0 + r - j0 + 1) : 0; /* causal: keys <= t */
                    if (n <= 0) { /* no key of this tile is visible to row r (or a padded row) */
                        memset(row, 0, AMX_TILE * sizeof *row);
                        if (j0 == 0) memset(o, 0, (size_t)hs * sizeof *o);
                        continue;
                    }
                    for (int64_t c = 0; c < n; c++)
                        row[c] *= scale; /* the f32 tiles' alpha */
                    float mx;
                    const float sum = lk_online_softmax_row(row, n, m[r], &mx);
                    for (int64_t c = n; c < AMX_TILE; c++)
                        row[c] = 0.0f;
                    lk_online_softmax_rescale(o, hs, &l[r], &m[r], mx, sum, j0 == 0);
                }
                lk_convert(P, LOOM_DTYPE_BF16, S, LOOM_DTYPE_F32, AMX_TILE * AMX_TILE); /* the tile's P */
                amx_mm(acc, hs, P, AMX_TILE, vp + (j0 / 2) * hs, hs, AMX_TILE, hs, AMX_TILE, 1);
            }
            for (int64_t r = 0; r < br; r++)
                lk_online_softmax_finish(out + (b * T + i0 + r) * C + h * hs, acc + r * hs, hs, l[r], m[r],
                                         &lse[(b * NH + h) * T + i0 + r]);
        }
        free(rows), free(kt), free(vp), free(S), free(P);
        amx_end();
    }
    return 1;
}

/* Backward per (b, h), key tiles outside and query tiles inside, as attention_flash.c. The
 * products that would read P or dS transposed (dV = P^T dO, dK = dS^T Q) are computed
 * transposed instead, dV^T = dO^T P and dK^T = Q^T dS, so that P and dS enter as the right
 * operand, in the pair layout along the query rows, which is two rows interleaved: no tile is
 * ever transposed, only q and dO once per head. */
int lk_attention_amx_backward(float *dqkv, const float *dout, const uint16_t *qkv, const float *out, const float *lse,
                              int64_t B, int64_t T, int64_t C, int64_t NH)
{
    const int64_t hs = C / NH;
    if (B <= 0 || T <= 0 || hs % 32 || !lk_attention_amx_ready()) return 0;
    const int64_t C3 = 3 * C, Tp = round_up(T, AMX_TILE), X = AMX_TILE;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel if (B * T * T * C >= LK_OMP_MIN_WORK)
    {
        amx_begin();
        const size_t panel = (size_t)(Tp * hs) * 2; /* bytes of one [Tp, hs] bf16 panel */
        uint16_t *q = workspace(panel), *dO = workspace(panel), *rows = workspace(panel), *qT = workspace(panel),
                 *dOT = workspace(panel);
        uint32_t *kt = workspace(panel), *vt = workspace(panel), *kp = workspace(panel);
        float *dq = workspace(sizeof(float) * (size_t)(Tp * hs + Tp + 2 * X * X + 2 * X * hs));
        float *D = dq + Tp * hs, *Pf = D + Tp, *dS = Pf + X * X, *dkT = dS + X * X, *dvT = dkT + X * hs;
        uint16_t *Pb = workspace((size_t)(2 * X * X) * 2), *dSb = Pb + X * X;
        uint32_t *Pp = workspace((size_t)(2 * X * X) * 2), *dSp = Pp + X * X / 2;
#pragma omp for collapse(2) schedule(dynamic)
        for (int64_t b = 0; b < B; b++) {
            for (int64_t h = 0; h < NH; h++) {
                const uint16_t *base = qkv + b * T * C3;
                pack_rows(rows, base, T, Tp, C3, C + h * hs, hs); /* k */
                pack_transposed(kt, rows, Tp, hs);
                pack_pairs(kp, rows, Tp, hs);
                pack_rows(rows, base, T, Tp, C3, 2 * C + h * hs, hs); /* v */
                pack_transposed(vt, rows, Tp, hs);
                pack_rows(q, base, T, Tp, C3, h * hs, hs);
                transpose16(qT, q, Tp, hs);
                pack_rows_f32(dO, dout + b * T * C, T, Tp, C, h * hs, hs);
                transpose16(dOT, dO, Tp, hs);
                const float *L = lse + (b * NH + h) * T;
                for (int64_t t = 0; t < T; t++) {
                    const float *o = out + (b * T + t) * C + h * hs, *g = dout + (b * T + t) * C + h * hs;
                    float d = 0.0f;
#pragma omp simd reduction(+ : d)
                    for (int64_t i = 0; i < hs; i++)
                        d = fmaf(g[i], o[i], d);
                    D[t] = d;
                }
                memset(dq, 0, sizeof(float) * (size_t)(Tp * hs));
                for (int64_t j0 = 0; j0 < T; j0 += X) {
                    const int64_t bc = min_i64(X, T - j0);
                    memset(dkT, 0, sizeof(float) * (size_t)(2 * X * hs));
                    for (int64_t i0 = j0; i0 < T; i0 += X) {
                        const int64_t br = min_i64(X, T - i0);
                        amx_mm(Pf, X, q + i0 * hs, hs, kt + j0, Tp, X, X, hs, 0);
                        amx_mm(dS, X, dO + i0 * hs, hs, vt + j0, Tp, X, X, hs, 0);
                        for (int64_t r = 0; r < X; r++) {
                            float *p = Pf + r * X, *ds = dS + r * X;
                            const int64_t n = r < br ? min_i64(bc, i0 + r - j0 + 1) : 0;
                            const float lr = r < br ? L[i0 + r] : 0.0f, dr = r < br ? D[i0 + r] : 0.0f;
#pragma omp simd
                            for (int64_t c = 0; c < X; c++) {
                                const float e = c < n ? lk_expf(p[c] * scale - lr) : 0.0f;
                                p[c] = e;
                                ds[c] = e * (ds[c] - dr) * scale;
                            }
                        }
                        /* P and dS: adjacent in both buffers */
                        lk_convert(Pb, LOOM_DTYPE_BF16, Pf, LOOM_DTYPE_F32, 2 * X * X);
                        pack_pairs(Pp, Pb, X, X);
                        pack_pairs(dSp, dSb, X, X);
                        amx_mm(dvT, X, dOT + i0, Tp, Pp, X, hs, X, X, 1);
                        amx_mm(dkT, X, qT + i0, Tp, dSp, X, hs, X, X, 1);
                        amx_mm(dq + i0 * hs, hs, dSb, X, kp + (j0 / 2) * hs, hs, X, hs, X, 1);
                    }
                    for (int64_t c = 0; c < bc; c++) {
                        float *gk = dqkv + (b * T + j0 + c) * C3 + C + h * hs, *gv = gk + C;
                        for (int64_t i = 0; i < hs; i++)
                            gk[i] += dkT[i * X + c], gv[i] += dvT[i * X + c];
                    }
                }
                lk_add_panel(dqkv + b * T * C3 + h * hs, C3, dq, T, hs);
            }
        }
        free(q), free(dO), free(rows), free(qT), free(dOT), free(kt), free(vt), free(kp), free(dq), free(Pb), free(Pp);
        amx_end();
    }
    return 1;
}

#else
int lk_attention_amx_ready(void)
{
    return 0;
}
int lk_attention_amx_forward(float *out, float *lse, const uint16_t *qkv, int64_t B, int64_t T, int64_t C, int64_t NH)
{
    (void)out, (void)lse, (void)qkv, (void)B, (void)T, (void)C, (void)NH;
    return 0;
}
int lk_attention_amx_backward(float *dqkv, const float *dout, const uint16_t *qkv, const float *out, const float *lse,
                              int64_t B, int64_t T, int64_t C, int64_t NH)
{
    (void)dqkv, (void)dout, (void)qkv, (void)out, (void)lse, (void)B, (void)T, (void)C, (void)NH;
    return 0;
}
#endif
