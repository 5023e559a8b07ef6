/* test_cross_entropy.c - fused softmax + cross-entropy against a double-precision reference,
 * with an ignored row (-100), extreme logits, finite differences, accumulation, and probs
 * aliasing logits (in place). */
#include "kernel_test.h"
#include "lk_cpu.h"

static void reference(double *probs, double *losses, const float *logits, const int32_t *labels,
                      int64_t B, int64_t C)
{
    for (int64_t b = 0; b < B; b++) {
        double max = logits[b * C];
        for (int64_t c = 1; c < C; c++) max = fmax(max, logits[b * C + c]);
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += exp(logits[b * C + c] - max);
        for (int64_t c = 0; c < C; c++) probs[b * C + c] = exp(logits[b * C + c] - max) / sum;
        losses[b] = labels[b] == -100 ? 0.0 : log(sum) - (logits[b * C + labels[b]] - max);
    }
}

static void test_forward(int64_t B, int64_t C)
{
    float *logits = test_alloc(B * C), *probs = test_alloc(B * C), *losses = test_alloc(B);
    double *rp = malloc((size_t)(B * C) * sizeof *rp), *rl = malloc((size_t)B * sizeof *rl);
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    test_fill(logits, B * C, -4.0f, 4.0f);
    for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)(test_rng_next() % (uint64_t)C);
    labels[B / 2] = -100;
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    reference(rp, rl, logits, labels, B, C);
    int bad = 0;
    for (int64_t b = 0; b < B; b++) {
        double row = 0.0;
        for (int64_t c = 0; c < C; c++) {
            bad += !(fabs(probs[b * C + c] - rp[b * C + c]) <= 1e-6 + 1e-5 * rp[b * C + c]);
            row += probs[b * C + c];
        }
        bad += !(fabs(row - 1.0) <= 1e-5);
        bad += !(fabs(losses[b] - rl[b]) <= 1e-5 + 1e-5 * rl[b]);
    }
    CHECK(bad == 0);
    CHECK(losses[B / 2] == 0.0f);
    free(logits), free(probs), free(losses), free(rp), free(rl), free(labels);
}

/* Logits that overflow expf without the max shift, and a target whose probability underflows
 * to 0 in float: the loss must still be finite and exact. */
static void test_extremes(void)
{
    const float logits[2 * 3] = {1000.0f, 999.0f, -1000.0f, 0.0f, 200.0f, 0.0f};
    const int32_t labels[2] = {1, 0};
    float probs[6], losses[2];
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, 2, 3);
    for (int i = 0; i < 6; i++) CHECK(isfinite(probs[i]));
    CHECK_CLOSE(losses[0], 1.0 + log(1.0 + exp(-1.0)), 1e-5, 1e-5);
    CHECK_CLOSE(losses[1], 200.0, 1e-4, 1e-6);
    CHECK(probs[3] == 0.0f); /* e^-200 underflows, yet the loss above is right */

    /* All logits far below 0: without the shift every exp underflows and the sum is 0. */
    const float low[3] = {-1000.0f, -1001.0f, -1002.0f};
    const int32_t low_label[1] = {2};
    lk_softmax_cross_entropy_forward(probs, losses, low, low_label, 1, 3);
    CHECK_CLOSE(losses[0], 2.0 + log(1.0 + exp(-1.0) + exp(-2.0)), 1e-5, 1e-5);
    CHECK_CLOSE(probs[0], 1.0 / (1.0 + exp(-1.0) + exp(-2.0)), 1e-6, 1e-5);

    /* A label outside [0, C) that is not -100 gives NaN, not a read past the row. */
    const int32_t bad_labels[2] = {3, -1};
    lk_softmax_cross_entropy_forward(probs, losses, logits, bad_labels, 2, 3);
    CHECK(isnan(losses[0]) && isnan(losses[1]));
    float d[6] = {0};
    lk_softmax_cross_entropy_backward(d, probs, bad_labels, 1.0f, 2, 3);
    for (int i = 0; i < 6; i++) CHECK(d[i] == 0.0f);
}

static double objective(const float *logits, const int32_t *labels, float scale, float *probs,
                        float *losses, int64_t B, int64_t C)
{
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    double s = 0.0;
    for (int64_t b = 0; b < B; b++) s += losses[b];
    return (double)scale * s;
}

/* backward(scale) is the gradient of scale * sum(losses); ignored rows get none. */
static void test_backward(void)
{
    enum { B = 5, C = 7 };
    const float scale = 0.37f;
    float logits[B * C], probs[B * C], losses[B], d[B * C], d0[B * C];
    const int32_t labels[B] = {3, -100, 0, 6, 2};
    test_fill(logits, B * C, -2.0f, 2.0f);
    test_fill(d0, B * C, -1.0f, 1.0f);
    memcpy(d, d0, sizeof d);
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    lk_softmax_cross_entropy_backward(d, probs, labels, scale, B, C);
    for (int64_t i = 0; i < B * C; i++) {
        const float x0 = logits[i];
        logits[i] = x0 + FD_EPS;
        const double lp = objective(logits, labels, scale, probs, losses, B, C);
        logits[i] = x0 - FD_EPS;
        const double lm = objective(logits, labels, scale, probs, losses, B, C);
        logits[i] = x0;
        CHECK_CLOSE(d[i] - d0[i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL, FD_RTOL);
    }
    for (int c = 0; c < C; c++) CHECK(d[1 * C + c] == d0[1 * C + c]); /* ignored row untouched */

    /* Each non-ignored row's gradient sums to 0 (probabilities sum to 1). */
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int c = 0; c < C; c++) s += d[b * C + c] - d0[b * C + c];
        CHECK_CLOSE(s, 0.0, 1e-6, 0);
    }
}

/* The threaded path: many rows, checked against the one-row call. */
static void test_large(void)
{
    const int64_t B = 1000, C = 67;
    float *logits = test_alloc(B * C), *probs = test_alloc(B * C), *losses = test_alloc(B);
    float *d = test_alloc(B * C), p1[67], l1[1], d1[67];
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    test_fill(logits, B * C, -3.0f, 3.0f);
    for (int64_t b = 0; b < B; b++) labels[b] = b % 10 == 3 ? -100 : (int32_t)(b % C);
    memset(d, 0, (size_t)(B * C) * sizeof *d);
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    lk_softmax_cross_entropy_backward(d, probs, labels, 0.5f, B, C);
    int bad = 0;
    for (int64_t b = 0; b < B; b += 37) {
        memset(d1, 0, sizeof d1);
        lk_softmax_cross_entropy_forward(p1, l1, logits + b * C, labels + b, 1, C);
        lk_softmax_cross_entropy_backward(d1, p1, labels + b, 0.5f, 1, C);
        bad += l1[0] != losses[b];
        for (int64_t c = 0; c < C; c++) bad += p1[c] != probs[b * C + c] || d1[c] != d[b * C + c];
    }
    CHECK(bad == 0);
    free(logits), free(probs), free(losses), free(d), free(labels);
}

/* probs aliasing logits (softmax in place) gives bitwise the same probs and losses as
 * separate buffers, ignored and out-of-range rows included. */
static void test_aliased(int64_t B, int64_t C)
{
    float *logits = test_alloc(B * C), *probs = test_alloc(B * C), *losses = test_alloc(B);
    float *inplace = test_alloc(B * C), *losses2 = test_alloc(B);
    int32_t *labels = malloc((size_t)B * sizeof *labels);
    test_fill(logits, B * C, -6.0f, 6.0f);
    for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)(test_rng_next() % (uint64_t)C);
    labels[0] = -100;
    if (B > 2) labels[1] = (int32_t)C; /* invalid: NaN loss either way */
    memcpy(inplace, logits, (size_t)(B * C) * sizeof *inplace);
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    lk_softmax_cross_entropy_forward(inplace, losses2, inplace, labels, B, C);
    CHECK(memcmp(probs, inplace, (size_t)(B * C) * sizeof *probs) == 0);
    int bad = 0;
    for (int64_t b = 0; b < B; b++)
        bad += !(losses[b] == losses2[b] || (isnan(losses[b]) && isnan(losses2[b])));
    CHECK(bad == 0);
    free(logits), free(probs), free(losses), free(inplace), free(losses2), free(labels);
}

/* lk_expf (the softmax's vectorisable exp): within 2 ulp of exp over its range, exactly 1 at 0
 * (the row max's term), 0 below -87.3 and for -inf (masked logits), NaN for NaN. */
/* The cast backward equals zeroing, the f32 backward and a convert, bit for bit, in every
 * dtype; ignored rows are zeros. */
static void test_backward_cast(void)
{
    const int64_t B = 9, C = 2500; /* rows longer than the kernel's block */
    float *logits = test_alloc(B * C), *probs = test_alloc(B * C), *losses = test_alloc(B);
    float *want32 = test_alloc(B * C), *got32 = test_alloc(B * C);
    uint16_t *want16 = malloc((size_t)(B * C) * 2), *got16 = malloc((size_t)(B * C) * 2);
    int32_t labels[9];
    test_fill(logits, B * C, -6.0f, 6.0f);
    for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)(test_rng_next() % (uint64_t)C);
    labels[3] = -100;
    labels[5] = C - 1; /* in the last, short block */
    lk_softmax_cross_entropy_forward(probs, losses, logits, labels, B, C);
    const float scale = 37.5f;
    memset(want32, 0, (size_t)(B * C) * sizeof(float));
    lk_softmax_cross_entropy_backward(want32, probs, labels, scale, B, C);
    lk_softmax_cross_entropy_backward_cast(got32, LOOM_DTYPE_F32, probs, labels, scale, B, C);
    CHECK(memcmp(want32, got32, (size_t)(B * C) * sizeof(float)) == 0);
    const uint32_t dtypes[2] = {LOOM_DTYPE_BF16, LOOM_DTYPE_F16};
    for (int k = 0; k < 2; k++) {
        lk_convert(want16, dtypes[k], want32, LOOM_DTYPE_F32, B * C);
        memset(got16, 0xAB, (size_t)(B * C) * 2);
        lk_softmax_cross_entropy_backward_cast(got16, dtypes[k], probs, labels, scale, B, C);
        CHECK(memcmp(want16, got16, (size_t)(B * C) * 2) == 0);
        int zeros = 1;
        for (int64_t c = 0; c < C; c++) zeros &= got16[3 * C + c] == 0;
        CHECK(zeros);
    }
    free(want16);
    free(got16);
    free(logits), free(probs), free(losses), free(want32), free(got32);
}

static void test_expf(void)
{
    double worst = 0.0;
    for (int i = 0; i <= 2000000; i++) {
        const float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        const double ref = exp((double)x), got = lk_expf(x);
        const double err = fabs(got - ref) / ref;
        worst = err > worst ? err : worst;
    }
    CHECK(worst <= 2.5e-7); /* 2 ulp = 2^-22 relative at worst */
    CHECK(lk_expf(0.0f) == 1.0f);
    CHECK(lk_expf(-87.5f) == 0.0f && lk_expf(-1000.0f) == 0.0f && lk_expf(-INFINITY) == 0.0f);
    CHECK(isnan(lk_expf(NAN)));
    CHECK(isfinite(lk_expf(1000.0f)) && lk_expf(1000.0f) > 1e38f);
}

int main(void)
{
    test_forward(4, 3);
    test_forward(9, 50257 / 100);
    test_extremes();
    test_backward();
    test_large();
    test_backward_cast();
    test_expf();
    test_aliased(6, 11);
    test_aliased(700, 97); /* threaded */
    return test_finish("test_cross_entropy");
}
