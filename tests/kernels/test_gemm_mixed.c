/* test_gemm_mixed.c - lk_gemm_mixed (and its widening path, lk_gemm_mixed_fp32) against a
 * double-precision product of the same 16-bit-rounded inputs: every dtype pair, all four
 * transposes, odd sizes with padded strides, alpha != 1, beta 0 over a NaN-filled C (which
 * must not be read), beta 1 and 0.5. Registered twice in ctest: as is, and with
 * LOOM_BF16_GEMM=fp32 (then bf16 x bf16 must take the widening path too). */
#include <stdio.h>

#include "kernel_test.h"
#include "lk_cpu.h"

enum { F32 = LOOM_DTYPE_F32, F16 = LOOM_DTYPE_F16, BF16 = LOOM_DTYPE_BF16 };

typedef void (*gemm_fn)(int32_t, int32_t, int64_t, int64_t, int64_t, float, const void *, uint32_t,
                        int64_t, const void *, uint32_t, int64_t, float, float *, int64_t);

/* Whether bf16 x bf16 should be running on oneDNN in this process. */
static int expect_onednn(void)
{
#ifdef LOOM_HAVE_ONEDNN
    const char *force = getenv("LOOM_BF16_GEMM");
    if (force && strcmp(force, "fp32") == 0) return 0;
    return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
    return 0;
#endif
}

static size_t dsize(uint32_t dt) { return dt == F32 ? 4 : 2; }

/* The values an operand holds, widened here without the kernels (bf16: top half of an f32;
 * f16: sign, exponent, significand). */
static double value_at(const void *p, uint32_t dt, int64_t i)
{
    if (dt == F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (dt == BF16) {
        const uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return h & 0x8000 ? -v : v;
}

/* rows x cols with row stride ld, random in [-1, 1), stored as dt; the padding is NaN so a
 * kernel that reads outside the matrix shows it. */
static void *make_operand(uint32_t dt, int64_t rows, int64_t cols, int64_t ld)
{
    const int64_t n = rows * ld;
    float *f = test_alloc(n);
    for (int64_t i = 0; i < n; i++) f[i] = i % ld < cols ? test_uniform(-1.0f, 1.0f) : NAN;
    if (dt == F32) return f;
    void *p = malloc((size_t)(n > 0 ? n : 1) * dsize(dt));
    if (!p) abort();
    lk_convert(p, dt, f, F32, n);
    free(f);
    return p;
}

typedef struct {
    int64_t M, N, K;
} shape;

/* One product checked through fn: ref holds op(A) op(B) in double, mag the same product of
 * absolute values (the scale of the rounding error). */
static int check_one(gemm_fn fn, int ta, int tb, shape s, uint32_t adt, uint32_t bdt,
                     const void *A, int64_t lda, const void *B, int64_t ldb, const double *ref,
                     const double *mag, float alpha, float beta, int64_t ldc, const char *want_path)
{
    float *C = test_alloc(s.M * ldc), *C0 = test_alloc(s.M * ldc);
    for (int64_t i = 0; i < s.M * ldc; i++) {
        const int pad = i % ldc >= s.N;
        C0[i] = pad ? 12345.0f : beta == 0.0f ? NAN : test_uniform(-2.0f, 2.0f);
    }
    memcpy(C, C0, (size_t)(s.M * ldc) * sizeof *C);
    fn(ta, tb, s.M, s.N, s.K, alpha, A, adt, lda, B, bdt, ldb, beta, C, ldc);
    int bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < s.M; i++) {
        for (int64_t j = 0; j < s.N; j++) {
            const double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[i * ldc + j];
            const double want = (double)alpha * ref[i * s.N + j] + c0;
            /* f32 accumulation in any order: K + a few roundings of 2^-24 each, relative to
             * the sum of magnitudes. */
            const double scale = fabs((double)alpha) * mag[i * s.N + j] + fabs(c0);
            const double err = fabs(C[i * ldc + j] - want), tol = (double)(s.K + 4) * 0x1p-23 * scale + 1e-30;
            bad += !(err <= tol);
            worst = err / tol > worst ? err / tol : worst;
        }
        for (int64_t j = s.N; j < ldc; j++) bad += C[i * ldc + j] != 12345.0f;
    }
    const char *path = lk_gemm_mixed_last_path();
    const int path_ok = strncmp(path, want_path, strlen(want_path)) == 0;
    if (bad || !path_ok)
        fprintf(stderr, "%s x %s ta %d tb %d %lldx%lldx%lld alpha %g beta %g: %d bad (worst "
                "error %.2f x tolerance), path %s (want %s)\n", adt == BF16 ? "bf16" : adt == F16 ? "f16" : "f32",
                bdt == BF16 ? "bf16" : bdt == F16 ? "f16" : "f32", ta, tb, (long long)s.M,
                (long long)s.N, (long long)s.K, alpha, beta, bad, worst, path, want_path);
    CHECK(bad == 0);
    CHECK(path_ok);
    free(C), free(C0);
    return bad;
}

/* One dtype pair, transpose pair and layout (rows padded or not: oneDNN picks different
 * kernels for the two) of shape s, under every alpha and beta, through both entry points. */
static void check_case(shape s, uint32_t adt, uint32_t bdt, int ta, int tb, int dense, int onednn)
{
    static const float alphas[] = {1.0f, 0.75f}, betas[] = {0.0f, 1.0f, 0.5f};
    /* As stored: A is M x K (K x M transposed), B is K x N (N x K). */
    const int64_t a_rows = ta ? s.K : s.M, a_cols = ta ? s.M : s.K;
    const int64_t b_rows = tb ? s.N : s.K, b_cols = tb ? s.K : s.N;
    const int64_t lda = a_cols + (dense ? 0 : 3), ldb = b_cols + (dense ? 0 : 5);
    const int64_t ldc = s.N + (dense ? 0 : 2);
    void *A = make_operand(adt, a_rows, a_cols, lda), *B = make_operand(bdt, b_rows, b_cols, ldb);
    double *ref = malloc((size_t)(s.M * s.N) * sizeof *ref);
    double *mag = malloc((size_t)(s.M * s.N) * sizeof *mag);
    if (!ref || !mag) abort();
    for (int64_t i = 0; i < s.M; i++) {
        for (int64_t j = 0; j < s.N; j++) {
            double acc = 0.0, am = 0.0;
            for (int64_t k = 0; k < s.K; k++) {
                const double a = value_at(A, adt, ta ? k * lda + i : i * lda + k);
                const double b = value_at(B, bdt, tb ? j * ldb + k : k * ldb + j);
                acc += a * b;
                am += fabs(a * b);
            }
            ref[i * s.N + j] = acc;
            mag[i * s.N + j] = am;
        }
    }
    const int bf = adt == BF16 && bdt == BF16, wide = adt != F32 || bdt != F32;
    const char *want = bf && onednn ? "onednn:" : wide ? "fp32" : "sgemm";
    for (int ai = 0; ai < 2; ai++) {
        for (int bi = 0; bi < 3; bi++) {
            check_one(lk_gemm_mixed, ta, tb, s, adt, bdt, A, lda, B, ldb, ref, mag, alphas[ai],
                      betas[bi], ldc, want);
            if (bf && ai + bi == 0)
                printf("bf16 x bf16 %lldx%lldx%lld ta %d tb %d %s: %s\n", (long long)s.M,
                       (long long)s.N, (long long)s.K, ta, tb, dense ? "dense" : "padded",
                       lk_gemm_mixed_last_path());
            check_one(lk_gemm_mixed_fp32, ta, tb, s, adt, bdt, A, lda, B, ldb, ref, mag,
                      alphas[ai], betas[bi], ldc, wide ? "fp32" : "sgemm");
        }
    }
    free(A), free(B), free(ref), free(mag);
}

static void test_products(void)
{
    static const shape shapes[] = {{1, 1, 1}, {7, 13, 5}, {64, 96, 256}, {257, 129, 70}, {300, 40, 250}};
    static const uint32_t pairs[][2] = {{BF16, BF16}, {F16, F16}, {F32, F32}, {BF16, F32}, {F16, BF16}};
    const int onednn = expect_onednn();
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t pi = 0; pi < sizeof pairs / sizeof pairs[0]; pi++)
            for (int t = 0; t < 8; t++)
                check_case(shapes[si], pairs[pi][0], pairs[pi][1], t & 1, (t >> 1) & 1, t >> 2, onednn);
}

/* More shapes than the primitive cache holds, twice round: evicted entries are rebuilt and
 * every product stays right. */
static void test_cache_eviction(void)
{
    enum { SHAPES = 70, K = 9, N = 5 };
    float *Af = test_alloc(SHAPES * K), *Bf = test_alloc(K * N), *C = test_alloc(SHAPES * N);
    uint16_t *A = malloc(SHAPES * K * sizeof *A), *B = malloc(K * N * sizeof *B);
    if (!A || !B) abort();
    test_fill(Af, SHAPES * K, -1.0f, 1.0f);
    test_fill(Bf, K * N, -1.0f, 1.0f);
    lk_convert(A, BF16, Af, F32, SHAPES * K);
    lk_convert(B, BF16, Bf, F32, K * N);
    int bad = 0;
    for (int round = 0; round < 2; round++) {
        for (int64_t M = 1; M <= SHAPES; M++) {
            for (int64_t i = 0; i < M * N; i++) C[i] = NAN;
            lk_gemm_mixed(0, 0, M, N, K, 1.0f, A, BF16, K, B, BF16, N, 0.0f, C, N);
            for (int64_t i = 0; i < M; i++) {
                for (int64_t j = 0; j < N; j++) {
                    double acc = 0.0, mag = 0.0;
                    for (int64_t k = 0; k < K; k++) {
                        const double p = value_at(A, BF16, i * K + k) * value_at(B, BF16, k * N + j);
                        acc += p;
                        mag += fabs(p);
                    }
                    bad += !(fabs(C[i * N + j] - acc) <= (K + 4) * 0x1p-23 * mag + 1e-30);
                }
            }
        }
    }
    CHECK(bad == 0);
    free(Af), free(Bf), free(C), free(A), free(B);
}

/* Empty products: M or N of 0 touches nothing; K of 0 gives beta * C, zeros for beta 0 even
 * over NaN. */
static void test_degenerate(void)
{
    static const uint32_t dts[] = {BF16, F16, F32};
    for (int d = 0; d < 3; d++) {
        float C[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
        lk_gemm_mixed(0, 0, 0, 3, 4, 1.0f, NULL, dts[d], 4, NULL, dts[d], 3, 0.0f, C, 3);
        lk_gemm_mixed(0, 0, 2, 0, 4, 1.0f, NULL, dts[d], 4, NULL, dts[d], 3, 0.0f, C, 3);
        for (int i = 0; i < 6; i++) CHECK(isnan(C[i]));
        lk_gemm_mixed(0, 0, 2, 3, 0, 1.0f, NULL, dts[d], 1, NULL, dts[d], 3, 0.0f, C, 3);
        for (int i = 0; i < 6; i++) CHECK(C[i] == 0.0f);
        for (int i = 0; i < 6; i++) C[i] = (float)i;
        lk_gemm_mixed(1, 1, 2, 3, 0, 1.0f, NULL, dts[d], 2, NULL, dts[d], 1, 2.0f, C, 3);
        for (int i = 0; i < 6; i++) CHECK(C[i] == 2.0f * (float)i);
    }
    /* Unknown dtypes: nothing happens. */
    float A[4] = {1, 2, 3, 4}, C[4] = {7, 7, 7, 7};
    lk_gemm_mixed(0, 0, 2, 2, 2, 1.0f, A, LOOM_DTYPE_I32, 2, A, F32, 2, 0.0f, C, 2);
    for (int i = 0; i < 4; i++) CHECK(C[i] == 7.0f);
}

int main(void)
{
    printf("LOOM_BF16_GEMM=%s; expecting oneDNN for bf16 x bf16: %s\n",
           getenv("LOOM_BF16_GEMM") ? getenv("LOOM_BF16_GEMM") : "(unset)",
           expect_onednn() ? "yes" : "no");
    test_products();
    test_cache_eviction();
    test_degenerate();
    return test_finish("test_gemm_mixed");
}
