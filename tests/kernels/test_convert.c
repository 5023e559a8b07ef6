/* test_convert.c - lk_convert and lk_accumulate_f32 against a reference written here from the
 * definitions (round to nearest even by integer arithmetic, in a different form from the
 * kernel's), and against the F16C / AVX512_BF16 instructions themselves where the CPU has
 * them. Built twice: as is (the vector paths this CPU takes) and with convert.c compiled
 * for the portable scalar code only (test_convert_scalar). */
#include <immintrin.h>
#include <stdio.h>

#include "kernel_test.h"
#include "lk_cpu.h"

enum { F32 = LOOM_DTYPE_F32, F16 = LOOM_DTYPE_F16, BF16 = LOOM_DTYPE_BF16 };

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* sig / 2^shift rounded to nearest, ties to even. */
static uint64_t rne_shift(uint64_t sig, int shift)
{
    if (shift >= 63) return 0; /* sig < 2^25 here: below half of one unit */
    const uint64_t q = sig >> shift, r = sig - (q << shift), half = 1ull << (shift - 1);
    return q + (r > half || (r == half && (q & 1)));
}

/* f32 -> f16 as vcvtps2ph imm 0: express |x| in units of the f16 ulp at its binade (never
 * finer than 2^-24, the subnormal ulp), round, then rebuild the encoding. */
static uint16_t ref_f16(uint32_t u)
{
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const int e = (int)((u >> 23) & 0xff);
    const uint32_t m = u & 0x7fffffu;
    if (e == 255) return (uint16_t)(sign | (m ? 0x7e00u | (m >> 13) : 0x7c00u));
    const uint64_t sig = e ? (m | 0x800000u) : m;
    const int exp2 = (e ? e : 1) - 150;           /* |x| = sig * 2^exp2 */
    const int binade = e ? e - 127 : -126;         /* floor(log2 |x|) for normals */
    const int ulp = (binade < -14 ? -14 : binade) - 10;
    const uint64_t q = rne_shift(sig, ulp - exp2); /* |x| / 2^ulp, rounded */
    uint64_t h;
    if (ulp == -24) h = q; /* subnormal range; q == 1024 is the smallest normal, encoded alike */
    else h = ((uint64_t)(ulp + 25) << 10) + q - 1024; /* q == 2048 carries into the exponent */
    return (uint16_t)(sign | (h >= 0x7c00 ? 0x7c00 : h));
}

/* f32 -> bf16 as vcvtneps2bf16: subnormals are read as zero, NaN is quieted (bit 6). */
static uint16_t ref_bf16(uint32_t u)
{
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t e = (u >> 23) & 0xff, m = u & 0x7fffffu;
    if (e == 255) return (uint16_t)((u >> 16) | (m ? 0x40u : 0u));
    if (e == 0) return sign;
    const uint64_t q = rne_shift(m | 0x800000u, 16); /* 128..256 */
    return (uint16_t)(sign | ((e << 7) + q - 128));  /* 256 carries; e = 255 is then inf */
}

static uint32_t ref_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 31) return sign | (m ? 0x7fc00000u | (m << 13) : 0x7f800000u);
    return sign | bits_of((float)ldexp((double)(e ? m + 1024 : m), (int)(e ? e : 1) - 25));
}

static uint32_t ref_bf16_to_f32(uint16_t h) { return (uint32_t)h << 16; }

/* ---- the instructions themselves, one value at a time ---- */

__attribute__((target("f16c"))) static uint16_t hw_f16(uint32_t u)
{
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(float_of(u)), 0), 0);
}

__attribute__((target("f16c"))) static uint32_t hw_f16_to_f32(uint16_t h)
{
    return bits_of(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))));
}

__attribute__((target("avx512f,avx512bf16"))) static uint16_t hw_bf16(uint32_t u)
{
    uint16_t out[16];
    _mm256_storeu_si256((__m256i *)out, (__m256i)_mm512_cvtneps_pbh(_mm512_set1_ps(float_of(u))));
    return out[0];
}

/* The hard cases, each also with the sign flipped. */
static const uint32_t hard[] = {
    0x00000000, 0x7f800000, 0x7fc00000, 0x7f800001, 0x7fa00000, 0x7fbfffff, 0x7fffffff,
    0x7fc01234, 0x3f800000, 0x3dcccccd,
    /* f16 top end: 65504, just under the 65520 tie, the tie itself (-> inf), just above, 65536,
     * FLT_MAX */
    0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, 0x7f7fffff,
    /* f16 ties at 1: 1 + 2^-11 (to even: 1), 1 + 3 * 2^-11 (to even: up), a hair above */
    0x3f801000, 0x3f803000, 0x3f801001, 0x3f800fff,
    /* f16 subnormals: 2^-24, 2^-25 (tie -> 0), just above it (-> 2^-24), 1.5 and 2.5 ulp
     * ties, the largest subnormal, the tie between it and 2^-14, 2^-14, 3 * 2^-26 */
    0x33800000, 0x33000000, 0x33000001, 0x33c00000, 0x34200000, 0x387fc000, 0x387fe000,
    0x38800000, 0x33400000, 0x32ffffff, 0x387fdfff,
    /* f32 subnormals and the smallest normal (bf16 reads subnormals as zero) */
    0x00000001, 0x007fffff, 0x00400000, 0x00800000, 0x00808000, 0x00818000,
    /* bf16 ties: to even below, to even above, just above; FLT_MAX's tie to inf and below */
    0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x7f7f8000, 0x7f7f7fff, 0x7f7fc000};
enum { NHARD = sizeof hard / sizeof hard[0] };

static int64_t fill_cases(uint32_t *u, int64_t n)
{
    int64_t k = 0;
    for (int i = 0; i < NHARD; i++) {
        u[k++] = hard[i];
        u[k++] = hard[i] ^ 0x80000000u;
    }
    for (; k < n; k++) {
        uint32_t r = (uint32_t)test_rng_next();
        /* Half the values get an exponent near the f16 range, where its rounding branches are. */
        if (k & 1) r = (r & 0x807fffffu) | ((uint32_t)(96 + r % 48) << 23);
        u[k] = r;
    }
    return k;
}

static void test_narrowing(void)
{
    enum { N = 1 << 22 };
    uint32_t *u = malloc(N * sizeof *u);
    uint16_t *h = malloc(N * sizeof *h), *b = malloc(N * sizeof *b);
    if (!u || !h || !b) abort();
    const int64_t n = fill_cases(u, N);
    lk_convert(h, F16, u, F32, n); /* above the threading threshold */
    lk_convert(b, BF16, u, F32, n);
    int64_t bad_h = 0, bad_b = 0;
    for (int64_t i = 0; i < n; i++) {
        if (h[i] != ref_f16(u[i]) && bad_h++ < 5)
            fprintf(stderr, "f16(%08x) = %04x, want %04x\n", u[i], h[i], ref_f16(u[i]));
        if (b[i] != ref_bf16(u[i]) && bad_b++ < 5)
            fprintf(stderr, "bf16(%08x) = %04x, want %04x\n", u[i], b[i], ref_bf16(u[i]));
    }
    CHECK(bad_h == 0);
    CHECK(bad_b == 0);
    /* Known answers, so that the reference itself is checked. */
    CHECK(ref_f16(0x477fe000) == 0x7bff && ref_f16(0x477ff000) == 0x7c00);
    CHECK(ref_f16(0x477fefff) == 0x7bff && ref_f16(0xc77ff000) == 0xfc00);
    CHECK(ref_f16(0x33800000) == 0x0001 && ref_f16(0x33000000) == 0x0000);
    CHECK(ref_f16(0x33000001) == 0x0001 && ref_f16(0x33c00000) == 0x0002);
    CHECK(ref_f16(0x34200000) == 0x0002 && ref_f16(0x387fe000) == 0x0400);
    CHECK(ref_f16(0x3f801000) == 0x3c00 && ref_f16(0x3f803000) == 0x3c02);
    CHECK(ref_f16(0x80000000) == 0x8000 && ref_f16(0x7f800001) == 0x7e00);
    CHECK(ref_bf16(0x3f808000) == 0x3f80 && ref_bf16(0x3f818000) == 0x3f82);
    CHECK(ref_bf16(0x7f7f8000) == 0x7f80 && ref_bf16(0x80000001) == 0x8000);
    CHECK(ref_bf16(0x7f800001) == 0x7fc0 && ref_bf16(0xff800001) == 0xffc0);

    /* The instructions, one value at a time, on the hard cases and a sample of the rest; and
     * the kernel on single values, which runs its scalar tail even where vectors exist. */
    int64_t hw_bad = 0, hw_checked = 0, one_bad = 0;
    const int f16c = __builtin_cpu_supports("f16c"), bf16 = __builtin_cpu_supports("avx512bf16");
    for (int64_t i = 0; i < n; i += i < 2 * NHARD ? 1 : 61) {
        if (f16c) hw_bad += hw_f16(u[i]) != h[i], hw_checked++;
        if (bf16) hw_bad += hw_bf16(u[i]) != b[i], hw_checked++;
        uint16_t h1, b1;
        lk_convert(&h1, F16, u + i, F32, 1);
        lk_convert(&b1, BF16, u + i, F32, 1);
        one_bad += h1 != h[i] || b1 != b[i];
    }
    CHECK(hw_bad == 0);
    CHECK(one_bad == 0);
    printf("narrowing: %lld values, %lld compared with the CPU's instructions (f16c %d, "
           "avx512bf16 %d)\n", (long long)n, (long long)hw_checked, f16c != 0, bf16 != 0);
    free(u), free(h), free(b);
}

/* Every 16-bit pattern: widening is exact; narrowing back gives it again, except that NaNs
 * come back quiet and (bf16) subnormals come back as zero, as the instructions do. Also
 * f16 <-> bf16 (through f32, one rounding). The array holds the 65536 patterns three times
 * plus a tail, so both the threaded path and a short tail run. */
static void test_all_16bit(void)
{
    enum { P = 65536, N = 3 * P + 5 };
    uint16_t *x = malloc(N * sizeof *x), *back = malloc(N * sizeof *back);
    uint16_t *other = malloc(N * sizeof *other);
    uint32_t *w = malloc(N * sizeof *w);
    if (!x || !back || !other || !w) abort();
    for (int64_t i = 0; i < N; i++) x[i] = (uint16_t)(i % P);
    const int f16c = __builtin_cpu_supports("f16c");
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t dt = pass ? BF16 : F16;
        int64_t bad_w = 0, bad_back = 0, bad_other = 0, bad_hw = 0;
        lk_convert(w, F32, x, dt, N);
        lk_convert(back, dt, w, F32, N);
        lk_convert(other, pass ? F16 : BF16, x, dt, N);
        for (int64_t i = 0; i < N; i++) {
            const uint16_t v = x[i];
            const uint32_t want = pass ? ref_bf16_to_f32(v) : ref_f16_to_f32(v);
            bad_w += w[i] != want;
            if (!pass && f16c) bad_hw += hw_f16_to_f32(v) != w[i];
            const int nan = pass ? (v & 0x7f80) == 0x7f80 && (v & 0x7f) : (v & 0x7c00) == 0x7c00 && (v & 0x3ff);
            const int sub = pass && (v & 0x7f80) == 0 && (v & 0x7f);
            uint16_t expect = v;
            if (nan) expect = (uint16_t)(v | (pass ? 0x40 : 0x200));
            if (sub) expect = v & 0x8000;
            bad_back += back[i] != expect;
            bad_other += other[i] != (pass ? ref_f16(want) : ref_bf16(want));
        }
        /* One at a time too (the scalar tail): */
        for (int64_t i = 0; i < P; i++) {
            uint32_t w1;
            uint16_t back1;
            lk_convert(&w1, F32, x + i, dt, 1);
            lk_convert(&back1, dt, &w1, F32, 1);
            bad_w += w1 != w[i];
            bad_back += back1 != back[i];
        }
        CHECK(bad_w == 0);
        CHECK(bad_back == 0);
        CHECK(bad_other == 0);
        CHECK(bad_hw == 0);
    }
    /* In place, 16 to 16 bits (the same pointer is allowed for equal element sizes). */
    memcpy(back, x, N * sizeof *x);
    lk_convert(back, BF16, back, F16, N);
    lk_convert(other, BF16, x, F16, N);
    CHECK(memcmp(back, other, N * sizeof *back) == 0);
    /* Equal dtypes copy. */
    lk_convert(back, F16, x, F16, N);
    CHECK(memcmp(back, x, N * sizeof *x) == 0);
    free(x), free(back), free(other), free(w);
}

/* Odd lengths, so the vector body and the scalar tail both run, and nothing past n is
 * written. */
static void test_lengths(void)
{
    static const int64_t lens[] = {0, 1, 15, 17, 1000003};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        uint32_t *u = malloc((size_t)(n + 8) * sizeof *u);
        uint16_t *h = malloc((size_t)(n + 8) * sizeof *h);
        uint32_t *w = malloc((size_t)(n + 8) * sizeof *w);
        if (!u || !h || !w) abort();
        for (int64_t i = 0; i < n; i++) u[i] = (uint32_t)test_rng_next();
        for (int pass = 0; pass < 2; pass++) {
            const uint32_t dt = pass ? BF16 : F16;
            for (int i = 0; i < 8; i++) h[n + i] = 0xabcd, w[n + i] = 0xdeadbeef;
            lk_convert(h, dt, u, F32, n);
            lk_convert(w, F32, h, dt, n);
            int64_t bad = 0;
            for (int64_t i = 0; i < n; i++) {
                const uint16_t want = pass ? ref_bf16(u[i]) : ref_f16(u[i]);
                bad += h[i] != want;
                bad += w[i] != (pass ? ref_bf16_to_f32(want) : ref_f16_to_f32(want));
            }
            for (int i = 0; i < 8; i++) bad += h[n + i] != 0xabcd || w[n + i] != 0xdeadbeef;
            CHECK(bad == 0);
        }
        free(u), free(h), free(w);
    }
    /* n == 0 touches nothing, even through NULL. */
    lk_convert(NULL, F16, NULL, F32, 0);
    lk_accumulate_f32(NULL, BF16, NULL, 0);
}

/* dst = round(dst + src) in each storage type, against widen / add in f32 / narrow. */
static void test_accumulate(void)
{
    static const int64_t lens[] = {1, 15, 17, 1000003};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        float *src = test_alloc(n + 8), *d32 = test_alloc(n + 8), *d32_0 = test_alloc(n);
        uint16_t *d = malloc((size_t)(n + 8) * sizeof *d), *d0 = malloc((size_t)n * sizeof *d0);
        if (!d || !d0) abort();
        test_fill(src, n, -4.0f, 4.0f);
        test_fill(d32_0, n, -100.0f, 100.0f);
        src[0] = 1e-3f; /* small against dst: the sum must still round once, to even */
        for (int pass = 0; pass < 2; pass++) {
            const uint32_t dt = pass ? BF16 : F16;
            for (int64_t i = 0; i < n; i++) d0[i] = pass ? ref_bf16(bits_of(d32_0[i])) : ref_f16(bits_of(d32_0[i]));
            memcpy(d, d0, (size_t)n * sizeof *d);
            for (int i = 0; i < 8; i++) d[n + i] = 0x1234;
            lk_accumulate_f32(d, dt, src, n);
            int64_t bad = 0;
            for (int64_t i = 0; i < n; i++) {
                const uint32_t old = pass ? ref_bf16_to_f32(d0[i]) : ref_f16_to_f32(d0[i]);
                const uint32_t sum = bits_of(float_of(old) + src[i]);
                bad += d[i] != (pass ? ref_bf16(sum) : ref_f16(sum));
            }
            for (int i = 0; i < 8; i++) bad += d[n + i] != 0x1234;
            CHECK(bad == 0);
        }
        memcpy(d32, d32_0, (size_t)n * sizeof *d32);
        d32[n] = 7.0f;
        lk_accumulate_f32(d32, F32, src, n);
        int64_t bad = d32[n] != 7.0f;
        for (int64_t i = 0; i < n; i++) bad += d32[i] != d32_0[i] + src[i];
        CHECK(bad == 0);
        free(src), free(d32), free(d32_0), free(d), free(d0);
    }
}

/* A dtype the kernels do not know leaves dst alone. */
static void test_unknown_dtype(void)
{
    float src[4] = {1, 2, 3, 4}, dst[4] = {9, 9, 9, 9};
    lk_convert(dst, LOOM_DTYPE_I32, src, F32, 4);
    lk_convert(dst, F32, src, LOOM_DTYPE_F64, 4);
    lk_accumulate_f32(dst, LOOM_DTYPE_U16, src, 4);
    for (int i = 0; i < 4; i++) CHECK(dst[i] == 9.0f);
}

int main(void)
{
    test_narrowing();
    test_all_16bit();
    test_lengths();
    test_accumulate();
    test_unknown_dtype();
    return test_finish("test_convert");
}
