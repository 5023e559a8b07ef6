/* test_classifier.c - the fused classifier (classifier.c) against the unfused path the gpt2
 * model ran before it: the whole [N, V] logits from one product, the softmax cross-entropy
 * kernels, then the head's two gradient products. Losses, dinp and dweight (both accumulated
 * into), for chunks of 1 row, a chunk that does not divide N, and one chunk of all rows; ignored
 * (-100) rows; the forward alone (no gradient outputs); and bf16 operands against the unfused
 * bf16 path (products on the same rounded operands, dlogits rounded once). The kernels the
 * reference uses are tested against independent references in their own tests. */
#include "kernel_test.h"
#include "lk_cpu.h"

static void compare(int64_t N, int64_t C, int64_t V, int64_t chunk, uint32_t dtype, int backward)
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

    /* Unfused reference. */
    float *logits = test_alloc(N * V), *rloss = test_alloc(N), *rdx = test_alloc(N * C), *rdw = test_alloc(V * C);
    lk_gemm_mixed(0, 1, N, V, C, 1.0f, xs, dtype, C, ws, dtype, C, 0.0f, logits, V);
    lk_softmax_cross_entropy_forward(logits, rloss, logits, labels, N, V);
    void *dl = malloc((size_t)(N * V) * es);
    lk_softmax_cross_entropy_backward_cast(dl, dtype, logits, labels, scale, N, V);
    for (int64_t i = 0; i < N * C; i++) rdx[i] = 0.5f;
    for (int64_t i = 0; i < V * C; i++) rdw[i] = -0.25f;
    lk_gemm_mixed(0, 0, N, C, V, 1.0f, dl, dtype, V, ws, dtype, C, 1.0f, rdx, C);
    lk_gemm_mixed(1, 0, V, C, N, 1.0f, dl, dtype, V, xs, dtype, C, 1.0f, rdw, C);

    /* Fused, its scratch filled with garbage first (it must not be read). */
    float *loss = test_alloc(N), *dx = test_alloc(N * C), *dw = test_alloc(V * C);
    const int64_t scratch_floats = chunk * V + (dtype == LOOM_DTYPE_F32 ? 0 : (chunk * V + 1) / 2);
    float *scratch = test_alloc(scratch_floats);
    for (int64_t i = 0; i < scratch_floats; i++) scratch[i] = NAN;
    for (int64_t i = 0; i < N * C; i++) dx[i] = 0.5f;
    for (int64_t i = 0; i < V * C; i++) dw[i] = -0.25f;
    lk_classifier(loss, backward ? dx : NULL, backward ? dw : NULL, scratch, xs, ws, dtype, labels, scale, N, C, V,
                  chunk);

    int64_t bad = test_far_off(loss, rloss, N, 1e-5, 1e-5);
    for (int64_t n = 0; n < N; n++)
        if (labels[n] == -100) CHECK(loss[n] == 0.0f);
    if (backward) {
        bad += test_far_off(dx, rdx, N * C, 1e-5, 1e-4);
        bad += test_far_off(dw, rdw, V * C, 1e-5, 1e-4);
        /* Some gradient did arrive: the reference moved away from the starting values. */
        CHECK(rdw[0] != -0.25f && dx[C] != 0.5f);
    } else {
        int64_t touched = 0;
        for (int64_t i = 0; i < N * C; i++) touched += dx[i] != 0.5f;
        for (int64_t i = 0; i < V * C; i++) touched += dw[i] != -0.25f;
        CHECK(touched == 0);
    }
    if (bad)
        fprintf(stderr, "N=%lld C=%lld V=%lld chunk=%lld dtype=%u: %lld off\n", (long long)N, (long long)C,
                (long long)V, (long long)chunk, dtype, (long long)bad);
    CHECK(bad == 0);
    free(x), free(w), free(labels), free(xs), free(ws), free(logits), free(rloss), free(rdx), free(rdw), free(dl);
    free(loss), free(dx), free(dw), free(scratch);
}

int main(void)
{
    compare(9, 16, 37, 1, LOOM_DTYPE_F32, 1);
    compare(23, 32, 501, 5, LOOM_DTYPE_F32, 1);
    compare(23, 32, 501, 23, LOOM_DTYPE_F32, 1);
    compare(64, 48, 1003, 100, LOOM_DTYPE_F32, 1); /* a chunk larger than N */
    compare(23, 32, 501, 4, LOOM_DTYPE_F32, 0);
    compare(23, 32, 501, 6, LOOM_DTYPE_BF16, 1);
    compare(17, 16, 300, 7, LOOM_DTYPE_F16, 1);
    return test_finish("test_classifier");
}
