/* test_label_smoothing.c - the ABI 1.4 smoothed softmax cross-entropy kernels and the smoothed
 * fused classifier: losses against HF's LabelSmoother computed here in double precision
 * ((1 - eps) nll + eps mean_c(-log p_c) per row, ignored rows 0), gradients against central
 * finite differences of that loss, in place (probs aliasing logits), smoothing 0 equal bit for
 * bit to the unsmoothed kernels, the cast backward equal to the f32 one rounded once, the fused
 * classifier against the unfused smoothed path, and the CPU table lending all four. */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <loom/kernels.h>

static double ref_loss(const float *x, int32_t label, double eps, int64_t C)
{
    if (label == -100) return 0.0;
    double max = x[0];
    for (int64_t c = 1; c < C; c++) max = fmax(max, x[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++) sum += exp((double)x[c] - max);
    const double lse = log(sum) + max;
    double mean = 0.0; /* mean over the classes of -log p_c */
    for (int64_t c = 0; c < C; c++) mean += lse - (double)x[c];
    mean /= (double)C;
    return (1.0 - eps) * (lse - (double)x[label]) + eps * mean;
}

static void test_forward(int64_t B, int64_t C, float eps, int in_place)
{
    float *logits = test_alloc(B * C), *probs = test_alloc(B * C), *losses = test_alloc(B);
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    test_fill(logits, B * C, -5.0f, 5.0f);
    for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)(test_rng_next() % (uint64_t)C);
    labels[B / 2] = -100;
    double *want = malloc((size_t)B * sizeof *want);
    for (int64_t b = 0; b < B; b++) want[b] = ref_loss(logits + b * C, labels[b], eps, C);
    float *out = in_place ? logits : probs;
    lk_softmax_cross_entropy_smoothed_forward(out, losses, logits, labels, eps, B, C);
    int bad = 0;
    for (int64_t b = 0; b < B; b++) {
        bad += !(fabs(losses[b] - want[b]) <= 1e-5 + 1e-5 * want[b]);
        double row = 0.0;
        for (int64_t c = 0; c < C; c++) row += out[b * C + c];
        bad += !(fabs(row - 1.0) <= 1e-5);
    }
    if (bad) fprintf(stderr, "forward B=%lld C=%lld eps=%g in_place=%d: %d off\n", (long long)B, (long long)C, eps,
                     in_place, bad);
    CHECK(bad == 0);
    CHECK(losses[B / 2] == 0.0f);
    free(logits), free(probs), free(losses), free(labels), free(want);
}

/* Smoothing 0 is the 1.0 arithmetic: same bits in every kernel. */
static void test_zero_is_unsmoothed(void)
{
    enum { B = 33, C = 1031 };
    float *logits = test_alloc(B * C), *p0 = test_alloc(B * C), *p1 = test_alloc(B * C);
    float *l0 = test_alloc(B), *l1 = test_alloc(B), *d0 = test_alloc(B * C), *d1 = test_alloc(B * C);
    int32_t labels[B];
    test_fill(logits, B * C, -3.0f, 3.0f);
    for (int b = 0; b < B; b++) labels[b] = b % 5 == 4 ? -100 : (int32_t)(test_rng_next() % C);
    lk_softmax_cross_entropy_forward(p0, l0, logits, labels, B, C);
    lk_softmax_cross_entropy_smoothed_forward(p1, l1, logits, labels, 0.0f, B, C);
    CHECK(memcmp(p0, p1, sizeof(float) * B * C) == 0 && memcmp(l0, l1, sizeof(float) * B) == 0);
    test_fill(d0, B * C, -1.0f, 1.0f);
    memcpy(d1, d0, sizeof(float) * B * C);
    lk_softmax_cross_entropy_backward(d0, p0, labels, 0.3f, B, C);
    lk_softmax_cross_entropy_smoothed_backward(d1, p0, labels, 0.3f, 0.0f, B, C);
    CHECK(memcmp(d0, d1, sizeof(float) * B * C) == 0);
    uint16_t *c0 = malloc(sizeof(uint16_t) * B * C), *c1 = malloc(sizeof(uint16_t) * B * C);
    lk_softmax_cross_entropy_backward_cast(c0, LOOM_DTYPE_BF16, p0, labels, 0.3f, B, C);
    lk_softmax_cross_entropy_smoothed_backward_cast(c1, LOOM_DTYPE_BF16, p0, labels, 0.3f, 0.0f, B, C);
    CHECK(memcmp(c0, c1, sizeof(uint16_t) * B * C) == 0);
    free(logits), free(p0), free(p1), free(l0), free(l1), free(d0), free(d1), free(c0), free(c1);
}

static double objective(float *logits, const int32_t *labels, float scale, float eps, int64_t B, int64_t C)
{
    double s = 0.0;
    for (int64_t b = 0; b < B; b++) s += ref_loss(logits + b * C, labels[b], eps, C);
    return (double)scale * s;
}

/* backward(scale, eps) accumulates the gradient of scale * sum of smoothed losses. */
static void test_backward(float eps)
{
    enum { B = 5, C = 7 };
    const float scale = 0.37f;
    float logits[B * C], probs[B * C], losses[B], d[B * C], d0[B * C];
    const int32_t labels[B] = {3, -100, 0, 6, 2};
    test_fill(logits, B * C, -2.0f, 2.0f);
    test_fill(d0, B * C, -1.0f, 1.0f);
    memcpy(d, d0, sizeof d);
    lk_softmax_cross_entropy_smoothed_forward(probs, losses, logits, labels, eps, B, C);
    lk_softmax_cross_entropy_smoothed_backward(d, probs, labels, scale, eps, B, C);
    for (int64_t i = 0; i < B * C; i++) {
        const float x0 = logits[i];
        logits[i] = x0 + FD_EPS;
        const double lp = objective(logits, labels, scale, eps, B, C);
        logits[i] = x0 - FD_EPS;
        const double lm = objective(logits, labels, scale, eps, B, C);
        logits[i] = x0;
        CHECK_CLOSE(d[i] - d0[i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL, FD_RTOL);
    }
    for (int c = 0; c < C; c++) CHECK(d[1 * C + c] == d0[1 * C + c]); /* ignored row untouched */

    /* The cast backward writes the same values, rounded once (f32: equal; bf16: the f32
     * values converted); ignored rows are zeros. */
    float zero[B * C], f32[B * C];
    memset(zero, 0, sizeof zero);
    lk_softmax_cross_entropy_smoothed_backward(zero, probs, labels, scale, eps, B, C);
    lk_softmax_cross_entropy_smoothed_backward_cast(f32, LOOM_DTYPE_F32, probs, labels, scale, eps, B, C);
    CHECK(memcmp(zero, f32, sizeof zero) == 0);
    uint16_t got[B * C], want[B * C];
    lk_convert(want, LOOM_DTYPE_BF16, zero, LOOM_DTYPE_F32, B * C);
    lk_softmax_cross_entropy_smoothed_backward_cast(got, LOOM_DTYPE_BF16, probs, labels, scale, eps, B, C);
    CHECK(memcmp(got, want, sizeof got) == 0);
}

/* The fused classifier with smoothing against the unfused smoothed path (products, then the
 * kernels above), as test_classifier.c does for the plain one. */
static void test_classifier(int64_t N, int64_t C, int64_t V, int64_t chunk, uint32_t dtype, float eps)
{
    float *x = test_alloc(N * C), *w = test_alloc(V * C);
    test_fill(x, N * C, -1.0f, 1.0f);
    test_fill(w, V * C, -0.5f, 0.5f);
    int32_t *labels = malloc((size_t)N * sizeof *labels);
    for (int64_t n = 0; n < N; n++) labels[n] = n % 4 == 3 ? -100 : (int32_t)(test_rng_next() % (uint64_t)V);
    const size_t es = loom_dtype_size(dtype);
    void *xs = malloc((size_t)(N * C) * es), *ws = malloc((size_t)(V * C) * es);
    lk_convert(xs, dtype, x, LOOM_DTYPE_F32, N * C);
    lk_convert(ws, dtype, w, LOOM_DTYPE_F32, V * C);
    const float scale = 0.37f;

    float *logits = test_alloc(N * V), *rloss = test_alloc(N), *rdx = test_alloc(N * C), *rdw = test_alloc(V * C);
    lk_gemm_mixed(0, 1, N, V, C, 1.0f, xs, dtype, C, ws, dtype, C, 0.0f, logits, V);
    double *want = malloc((size_t)N * sizeof *want);
    for (int64_t n = 0; n < N; n++) want[n] = ref_loss(logits + n * V, labels[n], eps, V);
    lk_softmax_cross_entropy_smoothed_forward(logits, rloss, logits, labels, eps, N, V);
    void *dl = malloc((size_t)(N * V) * es);
    lk_softmax_cross_entropy_smoothed_backward_cast(dl, dtype, logits, labels, scale, eps, N, V);
    memset(rdx, 0, sizeof(float) * (size_t)(N * C));
    memset(rdw, 0, sizeof(float) * (size_t)(V * C));
    lk_gemm_mixed(0, 0, N, C, V, 1.0f, dl, dtype, V, ws, dtype, C, 1.0f, rdx, C);
    lk_gemm_mixed(1, 0, V, C, N, 1.0f, dl, dtype, V, xs, dtype, C, 1.0f, rdw, C);

    float *loss = test_alloc(N), *dx = test_alloc(N * C), *dw = test_alloc(V * C);
    const int64_t scratch_floats = chunk * V + (dtype == LOOM_DTYPE_F32 ? 0 : (chunk * V + 1) / 2);
    float *scratch = test_alloc(scratch_floats);
    memset(dx, 0, sizeof(float) * (size_t)(N * C));
    memset(dw, 0, sizeof(float) * (size_t)(V * C));
    lk_classifier_smoothed(loss, dx, dw, scratch, xs, ws, dtype, labels, scale, eps, N, C, V, chunk);
    int bad = 0;
    for (int64_t n = 0; n < N; n++) {
        bad += !(fabs(loss[n] - want[n]) <= 1e-5 + 1e-5 * want[n]);
        bad += !(fabs(loss[n] - rloss[n]) <= 1e-5 + 1e-5 * rloss[n]);
    }
    for (int64_t i = 0; i < N * C; i++) bad += !(fabs(dx[i] - rdx[i]) <= 1e-5 + 1e-4 * fabs(rdx[i]));
    for (int64_t i = 0; i < V * C; i++) bad += !(fabs(dw[i] - rdw[i]) <= 1e-5 + 1e-4 * fabs(rdw[i]));
    if (bad) fprintf(stderr, "classifier N=%lld V=%lld chunk=%lld dtype=%u: %d off\n", (long long)N, (long long)V,
                     (long long)chunk, dtype, bad);
    CHECK(bad == 0);
    free(x), free(w), free(labels), free(xs), free(ws), free(logits), free(rloss), free(rdx), free(rdw), free(dl);
    free(want), free(loss), free(dx), free(dw), free(scratch);
}

static void test_table(void)
{
    const loom_kernels_api *k = lk_cpu_kernel_table();
    CHECK(LOOM_HAS(k, loom_kernels_api, classifier_smoothed));
    CHECK(k->softmax_cross_entropy_smoothed_forward == lk_softmax_cross_entropy_smoothed_forward);
    CHECK(k->softmax_cross_entropy_smoothed_backward == lk_softmax_cross_entropy_smoothed_backward);
    CHECK(k->softmax_cross_entropy_smoothed_backward_cast == lk_softmax_cross_entropy_smoothed_backward_cast);
    CHECK(k->classifier_smoothed == lk_classifier_smoothed);
}

int main(void)
{
    test_forward(7, 11, 0.1f, 0);
    test_forward(64, 1000, 0.1f, 1);
    test_forward(300, 257, 0.3f, 0); /* rows enough for the threaded path */
    test_zero_is_unsmoothed();
    test_backward(0.1f);
    test_backward(0.5f);
    test_classifier(23, 32, 501, 5, LOOM_DTYPE_F32, 0.1f);
    test_classifier(23, 32, 501, 6, LOOM_DTYPE_BF16, 0.2f);
    test_table();
    return test_finish("test_label_smoothing");
}
