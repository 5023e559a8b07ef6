/* test_classifier_columns.c - the classifier by vocabulary columns (classifier_columns.c, ABI
 * 1.8) against the unfused path: the whole [N, V] logits from one product, the smoothed softmax
 * cross-entropy kernels, then the head's two gradient products. For slabs of 1 column, 16, a
 * width that does not divide V, and all of V; f32, bf16 and f16 operands; an f32 dweight and a
 * bf16 one (rounded once per element from its old value plus the f32 contribution); smoothing 0
 * and 0.1; ignored (-100) and invalid labels. Also: lse against a double log-sum-exp, the
 * backward leaves losses alone, the forward touches no gradient, too little scratch does
 * nothing. The kernels the reference uses are tested against independent references in their
 * own tests. */
#include <math.h>

#include "kernel_test.h"
#include "lk_cpu.h"

static float widen(const void *p, uint32_t dtype, int64_t i)
{
    float f;
    lk_convert(&f, LOOM_DTYPE_F32, (const char *)p + (size_t)i * loom_dtype_size(dtype), dtype, 1);
    return f;
}

static void compare(int64_t N, int64_t C, int64_t V, int64_t columns, uint32_t dtype, uint32_t dw_dtype,
                    float smoothing)
{
    float *x = test_alloc(N * C), *w = test_alloc(V * C);
    test_fill(x, N * C, -1.0f, 1.0f);
    test_fill(w, V * C, -0.5f, 0.5f);
    int32_t *labels = malloc((size_t)N * sizeof *labels);
    for (int64_t n = 0; n < N; n++)
        labels[n] = n % 4 == 3 ? -100 : (int32_t)(test_rng_next() % (uint64_t)V);
    if (N > 5) labels[5] = (int32_t)V; /* invalid: a NaN loss and no gradient, as the row kernels */
    const size_t es = loom_dtype_size(dtype), ds = loom_dtype_size(dw_dtype);
    void *xs = malloc((size_t)(N * C) * es), *ws = malloc((size_t)(V * C) * es);
    lk_convert(xs, dtype, x, LOOM_DTYPE_F32, N * C);
    lk_convert(ws, dtype, w, LOOM_DTYPE_F32, V * C);
    const float scale = 0.37f;

    /* Unfused reference: dinp from 0.5, dweight's contribution alone (from 0). */
    float *logits = test_alloc(N * V), *rloss = test_alloc(N), *rdx = test_alloc(N * C), *rdw = test_alloc(V * C);
    double *rlse = malloc((size_t)N * sizeof *rlse);
    lk_gemm_mixed(0, 1, N, V, C, 1.0f, xs, dtype, C, ws, dtype, C, 0.0f, logits, V);
    for (int64_t n = 0; n < N; n++) {
        double mx = -INFINITY, sum = 0.0;
        for (int64_t v = 0; v < V; v++)
            mx = fmax(mx, logits[n * V + v]);
        for (int64_t v = 0; v < V; v++)
            sum += exp((double)logits[n * V + v] - mx);
        rlse[n] = mx + log(sum);
    }
    lk_softmax_cross_entropy_smoothed_forward(logits, rloss, logits, labels, smoothing, N, V);
    void *dl = malloc((size_t)(N * V) * es);
    lk_softmax_cross_entropy_smoothed_backward_cast(dl, dtype, logits, labels, scale, smoothing, N, V);
    for (int64_t i = 0; i < N * C; i++)
        rdx[i] = 0.5f;
    lk_gemm_mixed(0, 0, N, C, V, 1.0f, dl, dtype, V, ws, dtype, C, 1.0f, rdx, C);
    lk_gemm_mixed(1, 0, V, C, N, 1.0f, dl, dtype, V, xs, dtype, C, 0.0f, rdw, C);

    /* By columns, the scratch filled with garbage first (it must not be read). */
    const size_t bytes = loom_classifier_columns_bytes(N, C, columns, dtype);
    float *scratch = test_alloc((int64_t)(bytes / sizeof(float)) + 1);
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        scratch[i] = NAN;
    float *loss = test_alloc(N), *lse = test_alloc(N), *dx = test_alloc(N * C);
    void *dw = malloc((size_t)(V * C) * ds), *dw0 = malloc((size_t)(V * C) * ds);
    float *start = test_alloc(V * C);
    for (int64_t i = 0; i < V * C; i++)
        start[i] = -0.25f + 0.001f * (float)(i % 7);
    lk_convert(dw, dw_dtype, start, LOOM_DTYPE_F32, V * C);
    memcpy(dw0, dw, (size_t)(V * C) * ds);
    for (int64_t i = 0; i < N * C; i++)
        dx[i] = 0.5f;

    lk_classifier_columns(loss, lse, NULL, NULL, dw_dtype, scratch, bytes, xs, ws, dtype, labels, scale, smoothing, N,
                          C, V);
    int64_t bad = 0, touched = 0;
    for (int64_t n = 0; n < N; n++) {
        if (labels[n] == -100) CHECK(loss[n] == 0.0f);
        if (labels[n] == (int32_t)V) CHECK(isnan(loss[n]));
        if (labels[n] >= 0 && labels[n] < V) bad += test_far_off(loss + n, rloss + n, 1, 1e-5, 1e-5);
        if (!(fabs(lse[n] - rlse[n]) <= 1e-5 * (1.0 + fabs(rlse[n])))) bad++;
    }
    for (int64_t i = 0; i < N * C; i++)
        touched += dx[i] != 0.5f;
    CHECK(memcmp(dw, dw0, (size_t)(V * C) * ds) == 0 && touched == 0); /* the forward writes no gradient */

    float *kept = test_alloc(N);
    for (int64_t n = 0; n < N; n++)
        kept[n] = loss[n] = -7.0f;
    lk_classifier_columns(loss, lse, dx, dw, dw_dtype, scratch, bytes, xs, ws, dtype, labels, scale, smoothing, N, C,
                          V);
    CHECK(memcmp(loss, kept, (size_t)N * sizeof *loss) == 0); /* the backward leaves losses alone */
    bad += test_far_off(dx, rdx, N * C, 1e-5, 1e-4);
    float *got = test_alloc(V * C), *want = test_alloc(V * C);
    for (int64_t i = 0; i < V * C; i++) {
        got[i] = widen(dw, dw_dtype, i);
        want[i] = widen(dw0, dw_dtype, i) + rdw[i];
    }
    if (dw_dtype == LOOM_DTYPE_F32) {
        bad += test_far_off(got, want, V * C, 1e-5, 1e-4);
    } else { /* one rounding of (old + contribution): within one 16-bit step of the exact sum */
        const double ulp = dw_dtype == LOOM_DTYPE_BF16 ? 0x1p-7 : 0x1p-10;
        bad += test_far_off(got, want, V * C, 1e-5, ulp);
    }
    CHECK(rdw[0] != 0.0f && dx[C] != 0.5f); /* some gradient did arrive */
    /* Rows that are not targets contributed nothing: with only such rows, nothing moves. */
    if (bad)
        fprintf(stderr, "N=%lld C=%lld V=%lld columns=%lld dtype=%u dweight=%u eps=%g: %lld off\n", (long long)N,
                (long long)C, (long long)V, (long long)columns, dtype, dw_dtype, (double)smoothing, (long long)bad);
    CHECK(bad == 0);
    free(x), free(w), free(labels), free(xs), free(ws), free(logits), free(rloss), free(rdx), free(rdw), free(rlse);
    free(dl), free(scratch), free(loss), free(lse), free(dx), free(dw), free(dw0), free(start), free(kept);
    free(got), free(want);
}

/* Only ignored and invalid rows: no gradient at all; and scratch for less than one column:
 * nothing is written. */
static void edges(void)
{
    const int64_t N = 6, C = 8, V = 40;
    float *x = test_alloc(N * C), *w = test_alloc(V * C), *dx = test_alloc(N * C), *dw = test_alloc(V * C);
    float *loss = test_alloc(N), *lse = test_alloc(N);
    test_fill(x, N * C, -1.0f, 1.0f);
    test_fill(w, V * C, -0.5f, 0.5f);
    int32_t labels[6] = {-100, -100, 40, -3, -100, 99};
    const size_t bytes = loom_classifier_columns_bytes(N, C, 7, LOOM_DTYPE_F32);
    float *scratch = test_alloc((int64_t)(bytes / sizeof(float)));
    lk_classifier_columns(loss, lse, NULL, NULL, LOOM_DTYPE_F32, scratch, bytes, x, w, LOOM_DTYPE_F32, labels, 1.0f,
                          0.0f, N, C, V);
    memset(dx, 0, (size_t)(N * C) * sizeof *dx);
    memset(dw, 0, (size_t)(V * C) * sizeof *dw);
    lk_classifier_columns(NULL, lse, dx, dw, LOOM_DTYPE_F32, scratch, bytes, x, w, LOOM_DTYPE_F32, labels, 1.0f, 0.0f,
                          N, C, V);
    int64_t moved = 0;
    for (int64_t i = 0; i < N * C; i++)
        moved += dx[i] != 0.0f;
    for (int64_t i = 0; i < V * C; i++)
        moved += dw[i] != 0.0f;
    CHECK(moved == 0);
    CHECK(loss[0] == 0.0f && isnan(loss[2]) && isnan(loss[3]));

    for (int64_t n = 0; n < N; n++)
        loss[n] = lse[n] = 3.0f;
    const size_t small = loom_classifier_columns_bytes(N, C, 1, LOOM_DTYPE_F32) - 1;
    lk_classifier_columns(loss, lse, NULL, NULL, LOOM_DTYPE_F32, scratch, small, x, w, LOOM_DTYPE_F32, labels, 1.0f,
                          0.0f, N, C, V);
    for (int64_t n = 0; n < N; n++)
        CHECK(loss[n] == 3.0f && lse[n] == 3.0f);
    free(x), free(w), free(dx), free(dw), free(loss), free(lse), free(scratch);
}

int main(void)
{
    compare(9, 16, 37, 1, LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0.0f);
    compare(23, 32, 501, 16, LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0.0f);
    compare(23, 32, 501, 37, LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0.1f);    /* 37 -> slabs of 32 and a tail */
    compare(64, 48, 1003, 1003, LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0.0f); /* one slab */
    compare(23, 32, 501, 64, LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 0.0f);
    compare(23, 32, 501, 64, LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 0.1f);
    compare(23, 32, 501, 50, LOOM_DTYPE_BF16, LOOM_DTYPE_F32, 0.0f);
    compare(17, 16, 300, 7, LOOM_DTYPE_F16, LOOM_DTYPE_F16, 0.0f);
    edges();
    return test_finish("test_classifier_columns");
}
