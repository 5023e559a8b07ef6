/*
 * test_cuda_kernels.c - every CUDA kernel (lk_*_cuda) against its CPU twin (lk_*), on the
 * same random inputs, one line per case:
 *
 *   PASS sgemm NT 37x53x61 alpha=0.7 beta=0.3  n=2072  max_abs=1.91e-06 rel=2.87e-07 tol=1e-04
 *
 * max_abs is the largest |gpu - cpu| over every output of the case; rel is, per output tensor,
 * its largest |gpu - cpu| divided by its largest |cpu| (a normwise relative error: an
 * elementwise one is meaningless where the reference is near 0), worst tensor shown.
 * Non-finite values must match exactly (NaN where the CPU has NaN). Tolerances: 1e-4 for fp32
 * kernels, 1e-3 for products whose inner dimension is large (their rounding grows with sqrt(K)
 * and the two BLAS sum in different orders). A case also fails when the CUDA side records an
 * error. Backward passes start from non-zero gradients, so a kernel that overwrites instead of
 * accumulating fails.
 *
 * Exits 0 when every case passes, 1 otherwise, and 77 (skipped) when there is no GPU.
 */
#include <math.h>

#include <loom/optimizer.h>

#include "gpu_test.h"

#define TOL_F32 1e-4
#define TOL_LARGE_K 1e-3

static int passed, failed;

/* ---------------------------------------------------------------------------------------- */
/* Comparison                                                                               */

typedef struct {
    double max_abs, max_rel; /* over all tensors of the case; max_rel is per tensor */
    int64_t n, mismatched_nonfinite;
} cmp_t;

/* Adds one output tensor. Its relative error is taken against its own largest |cpu| value,
 * so a large tensor (losses of 100) cannot hide the error of a small one (probabilities). */
static void cmp_add(cmp_t *c, const float *gpu, const float *cpu, int64_t n)
{
    double max_abs = 0.0, max_ref = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float g = gpu[i], r = cpu[i];
        if (!isfinite(g) || !isfinite(r)) {
            const int same = (isnan(g) && isnan(r)) || g == r;
            if (!same) c->mismatched_nonfinite++;
            continue;
        }
        const double d = fabs((double)g - (double)r);
        if (d > max_abs) max_abs = d;
        if (fabs((double)r) > max_ref) max_ref = fabs((double)r);
    }
    const double rel = max_abs / (max_ref > 0.0 ? max_ref : 1.0);
    if (max_abs > c->max_abs) c->max_abs = max_abs;
    if (rel > c->max_rel) c->max_rel = rel;
    c->n += n;
}

/* Prints the case's line and counts it. */
static void cmp_report(const cmp_t *c, const char *name, double tol)
{
    const int sync_ok = lk_cuda_synchronize() == 0;
    const char *err = lk_cuda_last_error();
    const double rel = c->max_rel;
    const int ok = sync_ok && !err && c->mismatched_nonfinite == 0 && rel <= tol;
    printf("%s %-44s n=%-9lld max_abs=%.2e rel=%.2e tol=%.0e", ok ? "PASS" : "FAIL", name, (long long)c->n, c->max_abs,
           rel, tol);
    if (c->mismatched_nonfinite) printf(" non-finite mismatches=%lld", (long long)c->mismatched_nonfinite);
    if (err) printf(" cuda error: %s", err);
    printf("\n");
    fflush(stdout);
    lk_cuda_clear_error();
    if (ok)
        passed++;
    else
        failed++;
}

/* A boolean check that is not a numeric comparison. */
static void check(int ok, const char *name, const char *detail)
{
    printf("%s %-44s %s\n", ok ? "PASS" : "FAIL", name, detail ? detail : "");
    if (ok)
        passed++;
    else
        failed++;
}

/* ---------------------------------------------------------------------------------------- */
/* sgemm                                                                                    */

/* op(A) is M x K, op(B) is K x N; every operand gets `pad` extra columns of row stride so a
 * kernel that assumes packed rows fails. C starts random (or NaN when beta == 0: BLAS must
 * not read it then). */
static void case_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad,
                       double tol)
{
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
    const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
    const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
    const int64_t na = a_rows * lda, nb = b_rows * ldb, nc = M * ldc;
    float *A = gt_rand(na, -1.0f, 1.0f), *B = gt_rand(nb, -1.0f, 1.0f);
    float *C = gt_rand(nc, -1.0f, 1.0f);
    if (beta == 0.0f)
        for (int64_t i = 0; i < nc; i++)
            C[i] = NAN;
    float *dA = gt_device_f(A, na), *dB = gt_device_f(B, nb), *dC = gt_device_f(C, nc);

    lk_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    lk_sgemm_cuda(ta, tb, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
    float *gC = gt_fetch(dC, nc);

    /* Only the M x N block is defined output; the padding columns must be left alone, and
     * they are compared too (both sides keep their initial values). */
    cmp_t c = {0};
    cmp_add(&c, gC, C, nc);
    char name[96];
    snprintf(name, sizeof name, "sgemm %c%c %lldx%lldx%lld alpha=%g beta=%g", ta ? 'T' : 'N', tb ? 'T' : 'N',
             (long long)M, (long long)N, (long long)K, alpha, beta);
    cmp_report(&c, name, tol);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
    free(A), free(B), free(C), free(gC);
}

static void test_sgemm(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            case_sgemm(ta, tb, 37, 53, 61, 0.7f, 0.3f, 3, TOL_F32);
    case_sgemm(0, 0, 1, 1, 1, 1.0f, 0.0f, 0, TOL_F32);
    case_sgemm(0, 1, 29, 31, 17, 1.0f, 0.0f, 1, TOL_F32); /* beta 0: C (NaN) is not read */
    case_sgemm(0, 1, 64, 96, 4096, 1.0f, 1.0f, 0, TOL_LARGE_K);
    case_sgemm(1, 0, 96, 64, 4096, 0.5f, 1.0f, 0, TOL_LARGE_K);
    case_sgemm(0, 0, 13, 11, 0, 1.0f, 0.5f, 2, TOL_F32); /* K = 0: C = beta C */
    case_sgemm(0, 0, 13, 11, 0, 1.0f, 0.0f, 2, TOL_F32); /* K = 0, beta 0: zeros, no NaN */
}

/* ---------------------------------------------------------------------------------------- */
/* linear                                                                                   */

static void case_linear_forward(int64_t B, int64_t IC, int64_t OC, int with_bias, double tol)
{
    float *inp = gt_rand(B * IC, -1.0f, 1.0f), *w = gt_rand(OC * IC, -0.5f, 0.5f);
    float *bias = with_bias ? gt_rand(OC, -1.0f, 1.0f) : NULL;
    float *out = gt_rand(B * OC, -1.0f, 1.0f);
    for (int64_t i = 0; i < B * OC; i++)
        out[i] = NAN; /* must be overwritten, never read */
    float *d_inp = gt_device_f(inp, B * IC), *d_w = gt_device_f(w, OC * IC);
    float *d_bias = with_bias ? gt_device_f(bias, OC) : NULL;
    float *d_out = gt_device_f(out, B * OC);

    lk_linear_forward(out, inp, w, bias, B, IC, OC);
    lk_linear_forward_cuda(d_out, d_inp, d_w, d_bias, B, IC, OC);
    float *g = gt_fetch(d_out, B * OC);

    cmp_t c = {0};
    cmp_add(&c, g, out, B * OC);
    char name[96];
    snprintf(name, sizeof name, "linear_forward B=%lld IC=%lld OC=%lld%s", (long long)B, (long long)IC, (long long)OC,
             with_bias ? "" : " no bias");
    cmp_report(&c, name, tol);
    cudaFree(d_inp), cudaFree(d_w), cudaFree(d_bias), cudaFree(d_out);
    free(inp), free(w), free(bias), free(out), free(g);
}

/* which: bit 0 dinp, bit 1 dweight, bit 2 dbias (a missing one is passed as NULL). */
static void case_linear_backward(int64_t B, int64_t IC, int64_t OC, int which, double tol)
{
    float *inp = gt_rand(B * IC, -1.0f, 1.0f), *w = gt_rand(OC * IC, -0.5f, 0.5f);
    float *dout = gt_rand(B * OC, -1.0f, 1.0f);
    float *dinp = gt_rand(B * IC, -1.0f, 1.0f), *dw = gt_rand(OC * IC, -1.0f, 1.0f);
    float *db = gt_rand(OC, -1.0f, 1.0f);
    float *d_inp = gt_device_f(inp, B * IC), *d_w = gt_device_f(w, OC * IC);
    float *d_dout = gt_device_f(dout, B * OC), *d_dinp = gt_device_f(dinp, B * IC);
    float *d_dw = gt_device_f(dw, OC * IC), *d_db = gt_device_f(db, OC);

    lk_linear_backward(which & 1 ? dinp : NULL, which & 2 ? dw : NULL, which & 4 ? db : NULL, dout, inp, w, B, IC, OC);
    lk_linear_backward_cuda(which & 1 ? d_dinp : NULL, which & 2 ? d_dw : NULL, which & 4 ? d_db : NULL, d_dout, d_inp,
                            d_w, B, IC, OC);
    float *g_dinp = gt_fetch(d_dinp, B * IC), *g_dw = gt_fetch(d_dw, OC * IC);
    float *g_db = gt_fetch(d_db, OC);

    cmp_t c = {0};
    /* Skipped gradients must come back untouched: they are compared too. */
    cmp_add(&c, g_dinp, dinp, B * IC);
    cmp_add(&c, g_dw, dw, OC * IC);
    cmp_add(&c, g_db, db, OC);
    char name[96];
    snprintf(name, sizeof name, "linear_backward B=%lld IC=%lld OC=%lld %s%s%s", (long long)B, (long long)IC,
             (long long)OC, which & 1 ? "dinp " : "", which & 2 ? "dweight " : "", which & 4 ? "dbias" : "");
    cmp_report(&c, name, tol);
    cudaFree(d_inp), cudaFree(d_w), cudaFree(d_dout), cudaFree(d_dinp), cudaFree(d_dw), cudaFree(d_db);
    free(inp), free(w), free(dout), free(dinp), free(dw), free(db);
    free(g_dinp), free(g_dw), free(g_db);
}

static void test_linear(void)
{
    case_linear_forward(33, 70, 45, 1, TOL_F32);
    case_linear_forward(33, 70, 45, 0, TOL_F32);
    case_linear_forward(5, 0, 7, 1, TOL_F32); /* IC = 0: out = bias */
    case_linear_forward(256, 768, 2304, 1, TOL_LARGE_K);
    case_linear_backward(33, 70, 45, 7, TOL_F32);
    case_linear_backward(33, 70, 45, 2, TOL_F32);
    case_linear_backward(33, 70, 45, 5, TOL_F32);
    case_linear_backward(1000, 3, 5, 4, TOL_F32); /* dbias over many rows */
    case_linear_backward(512, 768, 768, 7, TOL_LARGE_K);
}

/* ---------------------------------------------------------------------------------------- */
/* Elementwise: relu, gelu                                                                  */

typedef void (*unary_fwd)(float *out, const float *inp, int64_t n);
typedef void (*unary_bwd)(float *dinp, const float *inp, const float *dout, int64_t n);

static void case_unary(const char *op, unary_fwd cpu_fwd, unary_fwd gpu_fwd, unary_bwd cpu_bwd, unary_bwd gpu_bwd,
                       int64_t n, float lo, float hi)
{
    float *x = gt_rand(n, lo, hi), *dout = gt_rand(n, -1.0f, 1.0f);
    float *dinp = gt_rand(n, -1.0f, 1.0f), *out = gt_host((size_t)n * sizeof *out);
    for (int64_t i = 0; i < n && i < 16; i++)
        x[i] = (float)(i - 8) * 0.0f;                                          /* exact zeros */
    if (n > 20) x[16] = 10.0f, x[17] = -10.0f, x[18] = 9.99f, x[19] = -10.01f; /* GELU's guard */
    float *d_x = gt_device_f(x, n), *d_dout = gt_device_f(dout, n);
    float *d_dinp = gt_device_f(dinp, n), *d_out = gt_device_f(NULL, n);

    char name[96];
    cpu_fwd(out, x, n);
    gpu_fwd(d_out, d_x, n);
    float *g = gt_fetch(d_out, n);
    cmp_t c = {0};
    cmp_add(&c, g, out, n);
    snprintf(name, sizeof name, "%s_forward n=%lld x in [%g, %g)", op, (long long)n, lo, hi);
    cmp_report(&c, name, TOL_F32);
    free(g);

    cpu_bwd(dinp, x, dout, n);
    gpu_bwd(d_dinp, d_x, d_dout, n);
    g = gt_fetch(d_dinp, n);
    cmp_t cb = {0};
    cmp_add(&cb, g, dinp, n);
    snprintf(name, sizeof name, "%s_backward n=%lld x in [%g, %g)", op, (long long)n, lo, hi);
    cmp_report(&cb, name, TOL_F32);
    free(g);

    cudaFree(d_x), cudaFree(d_dout), cudaFree(d_dinp), cudaFree(d_out);
    free(x), free(dout), free(dinp), free(out);
}

/* ABI 1.9: GELU on a stored dtype (in and out both `dtype`), the CPU's one-pass kernels as the
 * reference. Outputs are compared widened to f32; a 16-bit output may differ by one rounding
 * step where the two tanh differ in the last f32 bit, hence the 16-bit tolerance. dinp starts
 * as NaN on both sides: the backward writes it, and any read of it shows as NaN. */
static void case_gelu_cast(uint32_t dtype, int64_t n, double tol)
{
    const size_t es = loom_dtype_size(dtype);
    float *x = gt_rand(n, -12.0f, 12.0f), *dout = gt_rand(n, -1.0f, 1.0f);
    float *dinp = gt_host((size_t)n * sizeof *dinp), *want = gt_host((size_t)n * sizeof *want);
    void *in = gt_host((size_t)n * es), *out = gt_host((size_t)n * es);
    lk_convert(in, dtype, x, LOOM_DTYPE_F32, n);
    for (int64_t i = 0; i < n; i++)
        dinp[i] = NAN;
    void *d_in = gt_device(in, (size_t)n * es), *d_out = gt_device(NULL, (size_t)n * es);
    float *d_dout = gt_device_f(dout, n), *d_dinp = gt_device_f(dinp, n), *d_wide = gt_device_f(NULL, n);

    char name[96];
    lk_gelu_forward_cast(out, dtype, in, dtype, n);
    lk_convert(want, LOOM_DTYPE_F32, out, dtype, n);
    lk_gelu_forward_cast_cuda(d_out, dtype, d_in, dtype, n);
    lk_convert_cuda(d_wide, LOOM_DTYPE_F32, d_out, dtype, n);
    float *g = gt_fetch(d_wide, n);
    cmp_t c = {0};
    cmp_add(&c, g, want, n);
    snprintf(name, sizeof name, "gelu_forward_cast %s n=%lld", loom_dtype_name(dtype), (long long)n);
    cmp_report(&c, name, tol);
    free(g);

    lk_gelu_backward_cast(dinp, in, dtype, dout, n);
    lk_gelu_backward_cast_cuda(d_dinp, d_in, dtype, d_dout, n);
    g = gt_fetch(d_dinp, n);
    cmp_t cb = {0};
    cmp_add(&cb, g, dinp, n);
    snprintf(name, sizeof name, "gelu_backward_cast %s n=%lld", loom_dtype_name(dtype), (long long)n);
    cmp_report(&cb, name, TOL_F32);
    free(g);

    cudaFree(d_in), cudaFree(d_out), cudaFree(d_dout), cudaFree(d_dinp), cudaFree(d_wide);
    free(x), free(dout), free(dinp), free(want), free(in), free(out);
}

static void test_elementwise(void)
{
    case_gelu_cast(LOOM_DTYPE_F32, 100003, TOL_F32);
    case_gelu_cast(LOOM_DTYPE_BF16, 100003, 1e-2);
    case_gelu_cast(LOOM_DTYPE_F16, 4000000, 1e-3);
    case_unary("relu", lk_relu_forward, lk_relu_forward_cuda, lk_relu_backward, lk_relu_backward_cuda, 100003, -3.0f,
               3.0f);
    case_unary("relu", lk_relu_forward, lk_relu_forward_cuda, lk_relu_backward, lk_relu_backward_cuda, 7, -3.0f, 3.0f);
    case_unary("gelu", lk_gelu_forward, lk_gelu_forward_cuda, lk_gelu_backward, lk_gelu_backward_cuda, 100003, -12.0f,
               12.0f);
    case_unary("gelu", lk_gelu_forward, lk_gelu_forward_cuda, lk_gelu_backward, lk_gelu_backward_cuda, 4000000, -4.0f,
               4.0f);
}

/* ---------------------------------------------------------------------------------------- */
/* softmax + cross-entropy                                                                  */

/* in_place: probs aliases logits on both devices (the contract allows it). smoothing > 0: the
 * ABI 1.4 label-smoothing members on both devices. */
static void case_cross_entropy(int64_t B, int64_t C, float spread, int in_place, float smoothing)
{
    float *logits = gt_rand(B * C, -spread, spread);
    int32_t *labels = gt_host((size_t)B * sizeof *labels);
    for (int64_t b = 0; b < B; b++)
        labels[b] = (int32_t)(gt_rng_next() % (uint64_t)C);
    if (B > 4) labels[1] = -100, labels[2] = -100;         /* ignored rows */
    if (B > 4) labels[3] = (int32_t)C + 3, labels[4] = -5; /* invalid: NaN loss, no gradient */
    float *probs = gt_host((size_t)(B * C) * sizeof *probs), *losses = gt_host((size_t)B * sizeof *losses);
    float *dlogits = gt_rand(B * C, -1.0f, 1.0f);
    float *d_logits = gt_device_f(logits, B * C), *d_probs = gt_device_f(NULL, B * C);
    float *d_losses = gt_device_f(NULL, B), *d_dlogits = gt_device_f(dlogits, B * C);
    int32_t *d_labels = gt_device(labels, (size_t)B * sizeof *labels);
    const float scale = 1.0f / (float)B;

    if (in_place) {
        memcpy(probs, logits, (size_t)(B * C) * sizeof *probs);
        lk_softmax_cross_entropy_smoothed_forward(probs, losses, probs, labels, smoothing, B, C);
        gt_cuda(cudaMemcpy(d_probs, d_logits, (size_t)(B * C) * sizeof *probs, cudaMemcpyDeviceToDevice),
                "cudaMemcpy on device");
        if (smoothing > 0.0f)
            lk_softmax_cross_entropy_smoothed_forward_cuda(d_probs, d_losses, d_probs, d_labels, smoothing, B, C);
        else
            lk_softmax_cross_entropy_forward_cuda(d_probs, d_losses, d_probs, d_labels, B, C);
    } else {
        lk_softmax_cross_entropy_smoothed_forward(probs, losses, logits, labels, smoothing, B, C);
        if (smoothing > 0.0f)
            lk_softmax_cross_entropy_smoothed_forward_cuda(d_probs, d_losses, d_logits, d_labels, smoothing, B, C);
        else
            lk_softmax_cross_entropy_forward_cuda(d_probs, d_losses, d_logits, d_labels, B, C);
    }
    float *g_probs = gt_fetch(d_probs, B * C), *g_losses = gt_fetch(d_losses, B);
    cmp_t c = {0};
    cmp_add(&c, g_probs, probs, B * C);
    cmp_add(&c, g_losses, losses, B);
    char name[96];
    snprintf(name, sizeof name, "softmax_cross_entropy_forward B=%lld C=%lld%s smoothing %g", (long long)B,
             (long long)C, in_place ? " in place" : "", smoothing);
    cmp_report(&c, name, TOL_F32);

    /* Both backward passes start from the CPU's probabilities, so this compares the backward
     * kernels alone. */
    gt_cuda(cudaMemcpy(d_probs, probs, (size_t)(B * C) * sizeof *probs, cudaMemcpyHostToDevice),
            "cudaMemcpy to device");
    lk_softmax_cross_entropy_smoothed_backward(dlogits, probs, labels, scale, smoothing, B, C);
    if (smoothing > 0.0f)
        lk_softmax_cross_entropy_smoothed_backward_cuda(d_dlogits, d_probs, d_labels, scale, smoothing, B, C);
    else
        lk_softmax_cross_entropy_backward_cuda(d_dlogits, d_probs, d_labels, scale, B, C);
    float *g_dlogits = gt_fetch(d_dlogits, B * C);
    cmp_t cb = {0};
    cmp_add(&cb, g_dlogits, dlogits, B * C);
    snprintf(name, sizeof name, "softmax_cross_entropy_backward B=%lld C=%lld smoothing %g", (long long)B, (long long)C,
             smoothing);
    cmp_report(&cb, name, TOL_F32);

    cudaFree(d_logits), cudaFree(d_probs), cudaFree(d_losses), cudaFree(d_dlogits), cudaFree(d_labels);
    free(logits), free(labels), free(probs), free(losses), free(dlogits);
    free(g_probs), free(g_losses), free(g_dlogits);
}

static void test_cross_entropy(void)
{
    case_cross_entropy(67, 50257, 10.0f, 0, 0.0f); /* GPT-2's vocabulary */
    case_cross_entropy(67, 50257, 10.0f, 1, 0.0f);
    case_cross_entropy(1000, 10, 3.0f, 0, 0.0f); /* short rows */
    case_cross_entropy(1000, 10, 3.0f, 1, 0.0f);
    case_cross_entropy(9, 777, 80.0f, 0, 0.0f); /* exp(80) overflows without the max subtraction */
    case_cross_entropy(1, 1, 1.0f, 0, 0.0f);
    case_cross_entropy(67, 50257, 10.0f, 0, 0.1f); /* label smoothing (ABI 1.4) */
    case_cross_entropy(1000, 10, 3.0f, 1, 0.3f);
}

/* ---------------------------------------------------------------------------------------- */
/* conv1d (HF Conv1D, weight [IC, OC])                                                      */

static void case_conv1d(int64_t N, int64_t IC, int64_t OC, int with_bias, int which, double tol)
{
    float *inp = gt_rand(N * IC, -1.0f, 1.0f), *w = gt_rand(IC * OC, -0.5f, 0.5f);
    float *bias = gt_rand(OC, -1.0f, 1.0f), *out = gt_host((size_t)(N * OC) * sizeof *out);
    float *dout = gt_rand(N * OC, -1.0f, 1.0f), *dinp = gt_rand(N * IC, -1.0f, 1.0f);
    float *dw = gt_rand(IC * OC, -1.0f, 1.0f), *db = gt_rand(OC, -1.0f, 1.0f);
    float *d_inp = gt_device_f(inp, N * IC), *d_w = gt_device_f(w, IC * OC);
    float *d_bias = gt_device_f(bias, OC), *d_out = gt_device_f(NULL, N * OC);
    float *d_dout = gt_device_f(dout, N * OC), *d_dinp = gt_device_f(dinp, N * IC);
    float *d_dw = gt_device_f(dw, IC * OC), *d_db = gt_device_f(db, OC);
    char name[96];

    lk_conv1d_forward(out, inp, w, with_bias ? bias : NULL, N, IC, OC);
    lk_conv1d_forward_cuda(d_out, d_inp, d_w, with_bias ? d_bias : NULL, N, IC, OC);
    float *g = gt_fetch(d_out, N * OC);
    cmp_t c = {0};
    cmp_add(&c, g, out, N * OC);
    snprintf(name, sizeof name, "conv1d_forward N=%lld IC=%lld OC=%lld%s", (long long)N, (long long)IC, (long long)OC,
             with_bias ? "" : " no bias");
    cmp_report(&c, name, tol);
    free(g);

    lk_conv1d_backward(which & 1 ? dinp : NULL, which & 2 ? dw : NULL, which & 4 ? db : NULL, dout, inp, w, N, IC, OC);
    lk_conv1d_backward_cuda(which & 1 ? d_dinp : NULL, which & 2 ? d_dw : NULL, which & 4 ? d_db : NULL, d_dout, d_inp,
                            d_w, N, IC, OC);
    float *g_dinp = gt_fetch(d_dinp, N * IC), *g_dw = gt_fetch(d_dw, IC * OC), *g_db = gt_fetch(d_db, OC);
    cmp_t cb = {0};
    cmp_add(&cb, g_dinp, dinp, N * IC);
    cmp_add(&cb, g_dw, dw, IC * OC);
    cmp_add(&cb, g_db, db, OC);
    snprintf(name, sizeof name, "conv1d_backward N=%lld IC=%lld OC=%lld %s%s%s", (long long)N, (long long)IC,
             (long long)OC, which & 1 ? "dinp " : "", which & 2 ? "dweight " : "", which & 4 ? "dbias" : "");
    cmp_report(&cb, name, tol);

    cudaFree(d_inp), cudaFree(d_w), cudaFree(d_bias), cudaFree(d_out), cudaFree(d_dout);
    cudaFree(d_dinp), cudaFree(d_dw), cudaFree(d_db);
    free(inp), free(w), free(bias), free(out), free(dout), free(dinp), free(dw), free(db);
    free(g_dinp), free(g_dw), free(g_db);
}

static void test_conv1d(void)
{
    case_conv1d(33, 70, 45, 1, 7, TOL_F32);
    case_conv1d(33, 70, 45, 0, 6, TOL_F32);
    case_conv1d(256, 768, 2304, 1, 7, TOL_LARGE_K); /* GPT-2's c_attn over 256 tokens */
}

/* ---------------------------------------------------------------------------------------- */
/* encoder                                                                                  */

static void case_encoder(int64_t B, int64_t T, int64_t C, int64_t V)
{
    const int64_t BT = B * T;
    int32_t *tokens = gt_host((size_t)BT * sizeof *tokens);
    for (int64_t i = 0; i < BT; i++)
        tokens[i] = (int32_t)(gt_rng_next() % (uint64_t)V);
    float *wte = gt_rand(V * C, -1.0f, 1.0f), *wpe = gt_rand(T * C, -1.0f, 1.0f);
    float *out = gt_host((size_t)(BT * C) * sizeof *out), *dout = gt_rand(BT * C, -1.0f, 1.0f);
    float *dwte = gt_rand(V * C, -1.0f, 1.0f), *dwpe = gt_rand(T * C, -1.0f, 1.0f);
    int32_t *d_tokens = gt_device(tokens, (size_t)BT * sizeof *tokens);
    float *d_wte = gt_device_f(wte, V * C), *d_wpe = gt_device_f(wpe, T * C);
    float *d_out = gt_device_f(NULL, BT * C), *d_dout = gt_device_f(dout, BT * C);
    float *d_dwte = gt_device_f(dwte, V * C), *d_dwpe = gt_device_f(dwpe, T * C);
    char name[96];

    lk_encoder_forward(out, tokens, wte, wpe, B, T, C);
    lk_encoder_forward_cuda(d_out, d_tokens, d_wte, d_wpe, B, T, C);
    float *g = gt_fetch(d_out, BT * C);
    cmp_t c = {0};
    cmp_add(&c, g, out, BT * C);
    snprintf(name, sizeof name, "encoder_forward B=%lld T=%lld C=%lld V=%lld", (long long)B, (long long)T, (long long)C,
             (long long)V);
    cmp_report(&c, name, TOL_F32);
    free(g);

    lk_encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
    lk_encoder_backward_cuda(d_dwte, d_dwpe, d_dout, d_tokens, B, T, C);
    float *g_dwte = gt_fetch(d_dwte, V * C), *g_dwpe = gt_fetch(d_dwpe, T * C);
    cmp_t cb = {0};
    cmp_add(&cb, g_dwte, dwte, V * C);
    cmp_add(&cb, g_dwpe, dwpe, T * C);
    snprintf(name, sizeof name, "encoder_backward B=%lld T=%lld C=%lld V=%lld", (long long)B, (long long)T,
             (long long)C, (long long)V);
    cmp_report(&cb, name, TOL_F32);

    cudaFree(d_tokens), cudaFree(d_wte), cudaFree(d_wpe), cudaFree(d_out), cudaFree(d_dout);
    cudaFree(d_dwte), cudaFree(d_dwpe);
    free(tokens), free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe);
    free(g_dwte), free(g_dwpe);
}

static void test_encoder(void)
{
    case_encoder(4, 64, 96, 50);   /* ids repeat a lot */
    case_encoder(8, 300, 40, 500); /* B*T past one shared-memory tile of ids */
    case_encoder(2, 1024, 768, 50257);
}

/* ---------------------------------------------------------------------------------------- */
/* layernorm                                                                                */

static void case_layernorm(int64_t N, int64_t C, float offset, int which)
{
    float *x = gt_rand(N * C, offset - 1.0f, offset + 1.0f);
    float *w = gt_rand(C, 0.5f, 1.5f), *bias = gt_rand(C, -1.0f, 1.0f);
    float *out = gt_host((size_t)(N * C) * sizeof *out), *mean = gt_host((size_t)N * sizeof *mean);
    float *rstd = gt_host((size_t)N * sizeof *rstd), *dout = gt_rand(N * C, -1.0f, 1.0f);
    float *dinp = gt_rand(N * C, -1.0f, 1.0f), *dw = gt_rand(C, -1.0f, 1.0f), *db = gt_rand(C, -1.0f, 1.0f);
    float *d_x = gt_device_f(x, N * C), *d_w = gt_device_f(w, C), *d_bias = gt_device_f(bias, C);
    float *d_out = gt_device_f(NULL, N * C), *d_mean = gt_device_f(NULL, N), *d_rstd = gt_device_f(NULL, N);
    float *d_dout = gt_device_f(dout, N * C), *d_dinp = gt_device_f(dinp, N * C);
    float *d_dw = gt_device_f(dw, C), *d_db = gt_device_f(db, C);
    const float eps = 1e-5f;
    char name[96];

    lk_layernorm_forward(out, mean, rstd, x, w, bias, N, C, eps);
    lk_layernorm_forward_cuda(d_out, d_mean, d_rstd, d_x, d_w, d_bias, N, C, eps);
    float *g_out = gt_fetch(d_out, N * C), *g_mean = gt_fetch(d_mean, N), *g_rstd = gt_fetch(d_rstd, N);
    cmp_t c = {0};
    cmp_add(&c, g_out, out, N * C);
    cmp_add(&c, g_mean, mean, N);
    cmp_add(&c, g_rstd, rstd, N);
    snprintf(name, sizeof name, "layernorm_forward N=%lld C=%lld mean~%g", (long long)N, (long long)C, offset);
    cmp_report(&c, name, TOL_F32);

    /* The backward runs on the CPU's mean and rstd on both sides: it is compared alone. */
    gt_cuda(cudaMemcpy(d_mean, mean, (size_t)N * sizeof *mean, cudaMemcpyHostToDevice), "cudaMemcpy");
    gt_cuda(cudaMemcpy(d_rstd, rstd, (size_t)N * sizeof *rstd, cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_layernorm_backward(which & 1 ? dinp : NULL, which & 2 ? dw : NULL, which & 4 ? db : NULL, dout, x, w, mean, rstd,
                          N, C);
    lk_layernorm_backward_cuda(which & 1 ? d_dinp : NULL, which & 2 ? d_dw : NULL, which & 4 ? d_db : NULL, d_dout, d_x,
                               d_w, d_mean, d_rstd, N, C);
    float *g_dinp = gt_fetch(d_dinp, N * C), *g_dw = gt_fetch(d_dw, C), *g_db = gt_fetch(d_db, C);
    cmp_t cb = {0};
    cmp_add(&cb, g_dinp, dinp, N * C);
    cmp_add(&cb, g_dw, dw, C);
    cmp_add(&cb, g_db, db, C);
    snprintf(name, sizeof name, "layernorm_backward N=%lld C=%lld %s%s%s", (long long)N, (long long)C,
             which & 1 ? "dinp " : "", which & 2 ? "dweight " : "", which & 4 ? "dbias" : "");
    cmp_report(&cb, name, N > 1000 ? TOL_LARGE_K : TOL_F32);

    cudaFree(d_x), cudaFree(d_w), cudaFree(d_bias), cudaFree(d_out), cudaFree(d_mean);
    cudaFree(d_rstd), cudaFree(d_dout), cudaFree(d_dinp), cudaFree(d_dw), cudaFree(d_db);
    free(x), free(w), free(bias), free(out), free(mean), free(rstd), free(dout), free(dinp);
    free(dw), free(db), free(g_out), free(g_mean), free(g_rstd), free(g_dinp), free(g_dw), free(g_db);
}

static void test_layernorm(void)
{
    case_layernorm(77, 768, 0.0f, 7);
    case_layernorm(77, 768, 100.0f, 7); /* |mean| >> std: the corrected variance */
    case_layernorm(5, 13, 0.0f, 1);
    case_layernorm(4096, 768, 0.0f, 6); /* dweight/dbias over many rows */
}

/* ---------------------------------------------------------------------------------------- */
/* attention                                                                                */

static void case_attention(int64_t B, int64_t T, int64_t C, int64_t NH, double tol)
{
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C, natt = B * NH * T * T;
    float *qkv = gt_rand(nqkv, -1.0f, 1.0f), *out = gt_host((size_t)nout * sizeof *out);
    float *att = gt_host((size_t)natt * sizeof *att), *dout = gt_rand(nout, -1.0f, 1.0f);
    float *dqkv = gt_rand(nqkv, -1.0f, 1.0f);
    float *d_qkv = gt_device_f(qkv, nqkv), *d_out = gt_device_f(NULL, nout);
    float *d_att = gt_rand(natt, 5.0f, 6.0f); /* garbage the forward must overwrite entirely */
    float *dd_att = gt_device_f(d_att, natt);
    float *d_dout = gt_device_f(dout, nout), *d_dqkv = gt_device_f(dqkv, nqkv);
    char name[96];

    lk_attention_forward(out, att, qkv, B, T, C, NH);
    lk_attention_forward_cuda(d_out, dd_att, d_qkv, B, T, C, NH);
    float *g_out = gt_fetch(d_out, nout), *g_att = gt_fetch(dd_att, natt);
    cmp_t c = {0};
    cmp_add(&c, g_out, out, nout);
    cmp_add(&c, g_att, att, natt);
    snprintf(name, sizeof name, "attention_forward B=%lld T=%lld C=%lld NH=%lld", (long long)B, (long long)T,
             (long long)C, (long long)NH);
    cmp_report(&c, name, tol);

    gt_cuda(cudaMemcpy(dd_att, att, (size_t)natt * sizeof *att, cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_attention_backward(dqkv, dout, qkv, att, B, T, C, NH);
    lk_attention_backward_cuda(d_dqkv, d_dout, d_qkv, dd_att, B, T, C, NH);
    float *g_dqkv = gt_fetch(d_dqkv, nqkv);
    cmp_t cb = {0};
    cmp_add(&cb, g_dqkv, dqkv, nqkv);
    snprintf(name, sizeof name, "attention_backward B=%lld T=%lld C=%lld NH=%lld", (long long)B, (long long)T,
             (long long)C, (long long)NH);
    cmp_report(&cb, name, tol);

    cudaFree(d_qkv), cudaFree(d_out), cudaFree(dd_att), cudaFree(d_dout), cudaFree(d_dqkv);
    free(qkv), free(out), free(att), free(dout), free(dqkv), free(d_att), free(g_out), free(g_att);
    free(g_dqkv);
}

static void test_attention(void)
{
    case_attention(2, 37, 48, 4, TOL_F32);        /* hs = 12, T not a multiple of 32 */
    case_attention(1, 5, 600, 2, TOL_F32);        /* hs = 300: more than one register sweep */
    case_attention(2, 256, 768, 12, TOL_LARGE_K); /* GPT-2 small heads (hs = 64) */
}

/* ---------------------------------------------------------------------------------------- */
/* flash attention and the fused classifier (ABI 1.3)                                       */

/* A host buffer of n values stored as dtype, from f32 values, and its device copy. */
static void *stored_as(const float *values, int64_t n, uint32_t dtype, void **device)
{
    const size_t bytes = (size_t)n * loom_dtype_size(dtype);
    void *h = gt_host(bytes);
    lk_convert(h, dtype, values, LOOM_DTYPE_F32, n);
    *device = gt_device(h, bytes);
    return h;
}

/* dropout > 0: the ABI 1.4 _dropout members on both devices, the same seed (the masks must be
 * the same draws for the results to agree). */
static void case_flash(int64_t B, int64_t T, int64_t C, int64_t NH, uint32_t dtype, double tol, float dropout)
{
    const uint64_t seed = 0x5eedf1a5u;
    const int64_t nqkv = B * T * 3 * C, nout = B * T * C, nlse = B * NH * T;
    float *qkv = gt_rand(nqkv, -1.0f, 1.0f), *dout = gt_rand(nout, -1.0f, 1.0f), *dqkv = gt_rand(nqkv, -1.0f, 1.0f);
    float *out = gt_host((size_t)nout * sizeof *out), *lse = gt_host((size_t)nlse * sizeof *lse);
    void *d_qkv = NULL;
    void *h_qkv = stored_as(qkv, nqkv, dtype, &d_qkv);
    float *d_out = gt_device_f(NULL, nout), *d_lse = gt_device_f(NULL, nlse), *d_dout = gt_device_f(dout, nout);
    float *d_dqkv = gt_device_f(dqkv, nqkv);
    char name[112];

    lk_attention_flash_forward_dropout(out, lse, h_qkv, dtype, B, T, C, NH, dropout, seed);
    if (dropout > 0.0f)
        lk_attention_flash_forward_dropout_cuda(d_out, d_lse, d_qkv, dtype, B, T, C, NH, dropout, seed);
    else
        lk_attention_flash_forward_cuda(d_out, d_lse, d_qkv, dtype, B, T, C, NH);
    float *g_out = gt_fetch(d_out, nout), *g_lse = gt_fetch(d_lse, nlse);
    cmp_t c = {0};
    cmp_add(&c, g_out, out, nout);
    cmp_add(&c, g_lse, lse, nlse);
    snprintf(name, sizeof name, "attention_flash_forward dtype=%u B=%lld T=%lld C=%lld NH=%lld dropout %g", dtype,
             (long long)B, (long long)T, (long long)C, (long long)NH, dropout);
    cmp_report(&c, name, tol);

    /* Both backwards start from the CPU forward's out and lse, so only the backward differs. */
    gt_cuda(cudaMemcpy(d_out, out, (size_t)nout * sizeof *out, cudaMemcpyHostToDevice), "cudaMemcpy");
    gt_cuda(cudaMemcpy(d_lse, lse, (size_t)nlse * sizeof *lse, cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_attention_flash_backward_dropout(dqkv, dout, h_qkv, dtype, out, lse, B, T, C, NH, dropout, seed);
    if (dropout > 0.0f)
        lk_attention_flash_backward_dropout_cuda(d_dqkv, d_dout, d_qkv, dtype, d_out, d_lse, B, T, C, NH, dropout,
                                                 seed);
    else
        lk_attention_flash_backward_cuda(d_dqkv, d_dout, d_qkv, dtype, d_out, d_lse, B, T, C, NH);
    float *g_dqkv = gt_fetch(d_dqkv, nqkv);
    cmp_t cb = {0};
    cmp_add(&cb, g_dqkv, dqkv, nqkv);
    snprintf(name, sizeof name, "attention_flash_backward dtype=%u B=%lld T=%lld C=%lld NH=%lld dropout %g", dtype,
             (long long)B, (long long)T, (long long)C, (long long)NH, dropout);
    cmp_report(&cb, name, tol);
    check(lk_cuda_last_error() == NULL, "attention_flash: no error recorded", lk_cuda_last_error());

    cudaFree(d_qkv), cudaFree(d_out), cudaFree(d_lse), cudaFree(d_dout), cudaFree(d_dqkv);
    free(qkv), free(dout), free(dqkv), free(out), free(lse), free(h_qkv), free(g_out), free(g_lse), free(g_dqkv);
}

/* smoothing > 0: classifier_smoothed (ABI 1.4) on both devices. */
static void case_classifier(int64_t N, int64_t C, int64_t V, int64_t chunk, uint32_t dtype, double tol, float smoothing)
{
    float *inp = gt_rand(N * C, -1.0f, 1.0f), *weight = gt_rand(V * C, -0.5f, 0.5f);
    float *dinp = gt_rand(N * C, -1.0f, 1.0f), *dweight = gt_rand(V * C, -1.0f, 1.0f);
    float *losses = gt_host((size_t)N * sizeof *losses);
    int32_t *labels = gt_host((size_t)N * sizeof *labels);
    for (int64_t i = 0; i < N; i++)
        labels[i] = i % 7 == 3 ? -100 : (int32_t)((i * 7919) % V); /* some rows ignored */
    void *d_inp = NULL, *d_weight = NULL;
    void *h_inp = stored_as(inp, N * C, dtype, &d_inp), *h_weight = stored_as(weight, V * C, dtype, &d_weight);
    const size_t scratch_bytes = (size_t)(chunk * V) * (4 + (dtype == LOOM_DTYPE_F32 ? 0 : 2));
    void *scratch = gt_host(scratch_bytes), *d_scratch = gt_device(NULL, scratch_bytes);
    float *d_losses = gt_device_f(NULL, N), *d_dinp = gt_device_f(dinp, N * C),
          *d_dweight = gt_device_f(dweight, V * C);
    int32_t *d_labels = gt_device(labels, (size_t)N * sizeof *labels);
    const float scale = 1.0f / (float)N;

    lk_classifier_smoothed(losses, dinp, dweight, scratch, h_inp, h_weight, dtype, labels, scale, smoothing, N, C, V,
                           chunk);
    if (smoothing > 0.0f)
        lk_classifier_smoothed_cuda(d_losses, d_dinp, d_dweight, d_scratch, d_inp, d_weight, dtype, d_labels, scale,
                                    smoothing, N, C, V, chunk);
    else
        lk_classifier_cuda(d_losses, d_dinp, d_dweight, d_scratch, d_inp, d_weight, dtype, d_labels, scale, N, C, V,
                           chunk);
    float *g_losses = gt_fetch(d_losses, N), *g_dinp = gt_fetch(d_dinp, N * C), *g_dweight = gt_fetch(d_dweight, V * C);
    cmp_t c = {0};
    cmp_add(&c, g_losses, losses, N);
    cmp_add(&c, g_dinp, dinp, N * C);
    cmp_add(&c, g_dweight, dweight, V * C);
    char name[96];
    snprintf(name, sizeof name, "classifier dtype=%u N=%lld C=%lld V=%lld chunk=%lld smoothing %g", dtype, (long long)N,
             (long long)C, (long long)V, (long long)chunk, smoothing);
    cmp_report(&c, name, tol);
    check(lk_cuda_last_error() == NULL, "classifier: no error recorded", lk_cuda_last_error());

    cudaFree(d_inp), cudaFree(d_weight), cudaFree(d_scratch), cudaFree(d_losses), cudaFree(d_dinp);
    cudaFree(d_dweight), cudaFree(d_labels);
    free(inp), free(weight), free(dinp), free(dweight), free(losses), free(labels), free(h_inp), free(h_weight);
    free(scratch), free(g_losses), free(g_dinp), free(g_dweight);
}

/* classifier_columns (ABI 1.8): the forward (losses, lse) and then the backward (dinp, an f32
 * dweight) on both devices, with the same scratch size so both cut the same slabs. */
static void case_classifier_columns(int64_t N, int64_t C, int64_t V, int64_t columns, uint32_t dtype, double tol,
                                    float smoothing)
{
    float *inp = gt_rand(N * C, -1.0f, 1.0f), *weight = gt_rand(V * C, -0.5f, 0.5f);
    float *dinp = gt_rand(N * C, -1.0f, 1.0f), *dweight = gt_rand(V * C, -1.0f, 1.0f);
    float *losses = gt_host((size_t)N * sizeof *losses), *lse = gt_host((size_t)N * sizeof *lse);
    int32_t *labels = gt_host((size_t)N * sizeof *labels);
    for (int64_t i = 0; i < N; i++)
        labels[i] = i % 7 == 3 ? -100 : (int32_t)((i * 7919) % V);
    void *d_inp = NULL, *d_weight = NULL;
    void *h_inp = stored_as(inp, N * C, dtype, &d_inp), *h_weight = stored_as(weight, V * C, dtype, &d_weight);
    const size_t bytes = loom_classifier_columns_bytes(N, C, columns, dtype);
    void *scratch = gt_host(bytes), *d_scratch = gt_device(NULL, bytes);
    float *d_losses = gt_device_f(NULL, N), *d_lse = gt_device_f(NULL, N), *d_dinp = gt_device_f(dinp, N * C),
          *d_dweight = gt_device_f(dweight, V * C);
    int32_t *d_labels = gt_device(labels, (size_t)N * sizeof *labels);
    const float scale = 1.0f / (float)N;

    lk_classifier_columns(losses, lse, NULL, NULL, LOOM_DTYPE_F32, scratch, bytes, h_inp, h_weight, dtype, labels,
                          scale, smoothing, N, C, V);
    lk_classifier_columns(NULL, lse, dinp, dweight, LOOM_DTYPE_F32, scratch, bytes, h_inp, h_weight, dtype, labels,
                          scale, smoothing, N, C, V);
    lk_classifier_columns_cuda(d_losses, d_lse, NULL, NULL, LOOM_DTYPE_F32, d_scratch, bytes, d_inp, d_weight, dtype,
                               d_labels, scale, smoothing, N, C, V);
    lk_classifier_columns_cuda(NULL, d_lse, d_dinp, d_dweight, LOOM_DTYPE_F32, d_scratch, bytes, d_inp, d_weight, dtype,
                               d_labels, scale, smoothing, N, C, V);
    float *g_losses = gt_fetch(d_losses, N), *g_lse = gt_fetch(d_lse, N), *g_dinp = gt_fetch(d_dinp, N * C),
          *g_dweight = gt_fetch(d_dweight, V * C);
    cmp_t c = {0};
    cmp_add(&c, g_losses, losses, N);
    cmp_add(&c, g_lse, lse, N);
    cmp_add(&c, g_dinp, dinp, N * C);
    cmp_add(&c, g_dweight, dweight, V * C);
    char name[112];
    snprintf(name, sizeof name, "classifier_columns dtype=%u N=%lld C=%lld V=%lld columns=%lld smoothing %g", dtype,
             (long long)N, (long long)C, (long long)V, (long long)columns, smoothing);
    cmp_report(&c, name, tol);
    check(lk_cuda_last_error() == NULL, "classifier_columns: no error recorded", lk_cuda_last_error());

    cudaFree(d_inp), cudaFree(d_weight), cudaFree(d_scratch), cudaFree(d_losses), cudaFree(d_lse), cudaFree(d_dinp);
    cudaFree(d_dweight), cudaFree(d_labels);
    free(inp), free(weight), free(dinp), free(dweight), free(losses), free(lse), free(labels), free(h_inp);
    free(h_weight), free(scratch), free(g_losses), free(g_lse), free(g_dinp), free(g_dweight);
}

static void test_flash_classifier(void)
{
    case_flash(2, 37, 48, 4, LOOM_DTYPE_F32, TOL_F32, 0.0f);        /* hs = 12, T not a multiple of 32 */
    case_flash(1, 300, 768, 12, LOOM_DTYPE_F32, TOL_LARGE_K, 0.0f); /* GPT-2 heads (hs = 64) */
    case_flash(1, 130, 256, 2, LOOM_DTYPE_BF16, TOL_LARGE_K, 0.0f); /* hs = 128, 16-bit inputs widened alike */
    case_flash(1, 64, 128, 2, LOOM_DTYPE_F16, TOL_LARGE_K, 0.0f);
    case_flash(2, 37, 48, 4, LOOM_DTYPE_F32, TOL_F32, 0.1f); /* attention dropout (ABI 1.4): the same masks */
    case_flash(1, 130, 256, 2, LOOM_DTYPE_BF16, TOL_LARGE_K, 0.3f);
    case_classifier(37, 48, 1000, 16, LOOM_DTYPE_F32, TOL_LARGE_K, 0.0f); /* chunks of 16, 16, 5 */
    case_classifier(64, 96, 5003, 64, LOOM_DTYPE_BF16, TOL_LARGE_K, 0.0f);
    case_classifier(37, 48, 1000, 16, LOOM_DTYPE_F32, TOL_LARGE_K, 0.1f); /* label smoothing (ABI 1.4) */
    case_classifier(64, 96, 5003, 64, LOOM_DTYPE_BF16, TOL_LARGE_K, 0.2f);
    case_classifier_columns(37, 48, 1000, 100, LOOM_DTYPE_F32, TOL_LARGE_K, 0.0f); /* slabs of 96 and a tail */
    case_classifier_columns(64, 96, 5003, 700, LOOM_DTYPE_BF16, TOL_LARGE_K, 0.2f);
}

/* ---------------------------------------------------------------------------------------- */
/* T5: rmsnorm and mha (ABI 1.3)                                                            */

/* in_place: out aliases inp on both devices, and rstd is NULL (as at inference) - the
 * backward then runs on the CPU's rstd, which it uses anyway. which: bit 0 dinp, bit 1 dweight. */
static void case_rmsnorm(int64_t N, int64_t C, int in_place, int which)
{
    float *x = gt_rand(N * C, -2.0f, 2.0f), *w = gt_rand(C, 0.5f, 1.5f);
    float *out = gt_host((size_t)(N * C) * sizeof *out), *rstd = gt_host((size_t)N * sizeof *rstd);
    float *dout = gt_rand(N * C, -1.0f, 1.0f), *dinp = gt_rand(N * C, -1.0f, 1.0f), *dw = gt_rand(C, -1.0f, 1.0f);
    float *d_x = gt_device_f(x, N * C), *d_w = gt_device_f(w, C), *d_out = gt_device_f(NULL, N * C);
    float *d_rstd = gt_device_f(NULL, N), *d_dout = gt_device_f(dout, N * C), *d_dinp = gt_device_f(dinp, N * C);
    float *d_dw = gt_device_f(dw, C);
    const float eps = 1e-6f;
    char name[96];

    lk_rmsnorm_forward(out, rstd, x, w, N, C, eps); /* the CPU's rstd is needed below either way */
    cmp_t c = {0};
    if (in_place) {
        gt_cuda(cudaMemcpy(d_out, d_x, (size_t)(N * C) * sizeof *x, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        lk_rmsnorm_forward_cuda(d_out, NULL, d_out, d_w, N, C, eps);
        float *g_out = gt_fetch(d_out, N * C);
        cmp_add(&c, g_out, out, N * C);
        free(g_out);
    } else {
        lk_rmsnorm_forward_cuda(d_out, d_rstd, d_x, d_w, N, C, eps);
        float *g_out = gt_fetch(d_out, N * C), *g_rstd = gt_fetch(d_rstd, N);
        cmp_add(&c, g_out, out, N * C);
        cmp_add(&c, g_rstd, rstd, N);
        free(g_out), free(g_rstd);
    }
    snprintf(name, sizeof name, "rmsnorm_forward N=%lld C=%lld%s", (long long)N, (long long)C,
             in_place ? " in place, no rstd" : "");
    cmp_report(&c, name, TOL_F32);

    gt_cuda(cudaMemcpy(d_rstd, rstd, (size_t)N * sizeof *rstd, cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_rmsnorm_backward(which & 1 ? dinp : NULL, which & 2 ? dw : NULL, dout, x, w, rstd, N, C);
    lk_rmsnorm_backward_cuda(which & 1 ? d_dinp : NULL, which & 2 ? d_dw : NULL, d_dout, d_x, d_w, d_rstd, N, C);
    float *g_dinp = gt_fetch(d_dinp, N * C), *g_dw = gt_fetch(d_dw, C);
    cmp_t cb = {0};
    cmp_add(&cb, g_dinp, dinp, N * C); /* a skipped gradient must come back untouched */
    cmp_add(&cb, g_dw, dw, C);
    snprintf(name, sizeof name, "rmsnorm_backward N=%lld C=%lld %s%s", (long long)N, (long long)C,
             which & 1 ? "dinp " : "", which & 2 ? "dweight" : "");
    cmp_report(&cb, name, N > 1000 ? TOL_LARGE_K : TOL_F32);

    cudaFree(d_x), cudaFree(d_w), cudaFree(d_out), cudaFree(d_rstd), cudaFree(d_dout), cudaFree(d_dinp), cudaFree(d_dw);
    free(x), free(w), free(out), free(rstd), free(dout), free(dinp), free(dw), free(g_dinp), free(g_dw);
}

typedef struct {
    int64_t B, NH, Tq, Tk, HS, kv_rows;
    int bias, mask, causal;
    float dropout;
} mha_case;

/* mha_forward (out and att) and mha_backward (dq, dk, dv, dbias accumulated onto random values;
 * k, v, dk and dv have kv_rows rows, of which the ones past Tk must come back untouched) on
 * the same inputs and dropout seed. The mask leaves out random keys and, with B > 1, every key
 * of batch entry 1 (a query with nothing to attend to: zero probabilities, zero output). The
 * backward runs on the CPU's att on both sides; it is also run twice on the GPU, which must
 * give the same bits (no atomics). */
static void case_mha(mha_case m, double tol)
{
    const int64_t E = m.NH * m.HS, nq = m.B * m.Tq * E, nkv = m.B * m.kv_rows * E;
    const int64_t natt = m.B * m.NH * m.Tq * m.Tk, nbias = m.NH * m.Tq * m.Tk;
    const float scale = 0.5f;
    const uint64_t seed = 0xdecafbadu;
    float *q = gt_rand(nq, -1.0f, 1.0f), *k = gt_rand(nkv, -1.0f, 1.0f), *v = gt_rand(nkv, -1.0f, 1.0f);
    float *bias = m.bias ? gt_rand(nbias, -2.0f, 2.0f) : NULL;
    int32_t *mask = NULL;
    if (m.mask) {
        mask = gt_host((size_t)(m.B * m.Tk) * sizeof *mask);
        for (int64_t i = 0; i < m.B * m.Tk; i++)
            mask[i] = gt_rng_next() % 4 != 0;
        if (m.B > 1)
            for (int64_t j = 0; j < m.Tk; j++)
                mask[m.Tk + j] = 0;
    }
    float *out = gt_host((size_t)nq * sizeof *out), *att = gt_host((size_t)natt * sizeof *att);
    float *dout = gt_rand(nq, -1.0f, 1.0f), *dq = gt_rand(nq, -1.0f, 1.0f), *dk = gt_rand(nkv, -1.0f, 1.0f);
    float *dv = gt_rand(nkv, -1.0f, 1.0f), *dbias = gt_rand(nbias, -1.0f, 1.0f);
    float *d_q = gt_device_f(q, nq), *d_k = gt_device_f(k, nkv), *d_v = gt_device_f(v, nkv);
    float *d_bias = bias ? gt_device_f(bias, nbias) : NULL;
    int32_t *d_mask = mask ? gt_device(mask, (size_t)(m.B * m.Tk) * sizeof *mask) : NULL;
    float *garbage = gt_rand(nq > natt ? nq : natt, 5.0f, 6.0f); /* outputs must be overwritten entirely */
    float *d_out = gt_device_f(garbage, nq), *d_att = gt_device_f(garbage, natt);
    float *d_dout = gt_device_f(dout, nq), *d_dq = gt_device_f(dq, nq), *d_dk = gt_device_f(dk, nkv);
    float *d_dv = gt_device_f(dv, nkv), *d_dbias = gt_device_f(dbias, nbias);
    char name[160], shape[112];
    snprintf(shape, sizeof shape, "B=%lld NH=%lld Tq=%lld Tk=%lld HS=%lld kv=%lld%s%s%s dropout %g", (long long)m.B,
             (long long)m.NH, (long long)m.Tq, (long long)m.Tk, (long long)m.HS, (long long)m.kv_rows,
             m.bias ? " bias" : "", m.mask ? " mask" : "", m.causal ? " causal" : "", m.dropout);

    lk_mha_forward(out, att, q, k, v, bias, mask, m.B, m.NH, m.Tq, m.Tk, m.HS, m.kv_rows, scale, m.causal, m.dropout,
                   seed);
    lk_mha_forward_cuda(d_out, d_att, d_q, d_k, d_v, d_bias, d_mask, m.B, m.NH, m.Tq, m.Tk, m.HS, m.kv_rows, scale,
                        m.causal, m.dropout, seed);
    float *g_out = gt_fetch(d_out, nq), *g_att = gt_fetch(d_att, natt);
    cmp_t c = {0};
    cmp_add(&c, g_out, out, nq);
    cmp_add(&c, g_att, att, natt);
    snprintf(name, sizeof name, "mha_forward %s", shape);
    cmp_report(&c, name, tol);

    /* Twice on the GPU from the same starting gradients: the second run must equal the first. */
    float *g_first[4] = {0};
    float *const devs[4] = {d_dq, d_dk, d_dv, d_dbias};
    float *const inits[4] = {gt_copy(dq, nq), gt_copy(dk, nkv), gt_copy(dv, nkv), gt_copy(dbias, nbias)};
    const int64_t sizes[4] = {nq, nkv, nkv, nbias};
    gt_cuda(cudaMemcpy(d_att, att, (size_t)natt * sizeof *att, cudaMemcpyHostToDevice), "cudaMemcpy");
    int same = 1;
    for (int run = 0; run < 2; run++) {
        for (int t = 0; t < 4; t++)
            gt_cuda(cudaMemcpy(devs[t], inits[t], (size_t)sizes[t] * sizeof(float), cudaMemcpyHostToDevice),
                    "cudaMemcpy");
        lk_mha_backward_cuda(d_dq, d_dk, d_dv, d_dbias, d_dout, d_q, d_k, d_v, d_att, m.B, m.NH, m.Tq, m.Tk, m.HS,
                             m.kv_rows, scale, m.dropout, seed);
        for (int t = 0; t < 4; t++) {
            float *g = gt_fetch(devs[t], sizes[t]);
            if (run == 0)
                g_first[t] = g;
            else {
                same = same && memcmp(g, g_first[t], (size_t)sizes[t] * sizeof(float)) == 0;
                free(g);
            }
        }
    }
    lk_mha_backward(dq, dk, dv, dbias, dout, q, k, v, att, m.B, m.NH, m.Tq, m.Tk, m.HS, m.kv_rows, scale, m.dropout,
                    seed);
    cmp_t cb = {0};
    cmp_add(&cb, g_first[0], dq, nq);
    cmp_add(&cb, g_first[1], dk, nkv);
    cmp_add(&cb, g_first[2], dv, nkv);
    cmp_add(&cb, g_first[3], dbias, nbias);
    snprintf(name, sizeof name, "mha_backward dq dk dv dbias %s", shape);
    cmp_report(&cb, name, tol);
    check(same, "mha_backward: two runs give the same bits", NULL);

    /* Only some gradients: the NULL ones are skipped, the others still right. */
    for (int t = 0; t < 4; t++)
        gt_cuda(cudaMemcpy(devs[t], inits[t], (size_t)sizes[t] * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_mha_backward_cuda(NULL, d_dk, NULL, d_dbias, d_dout, d_q, d_k, d_v, d_att, m.B, m.NH, m.Tq, m.Tk, m.HS,
                         m.kv_rows, scale, m.dropout, seed);
    float *g_dk = gt_fetch(d_dk, nkv), *g_dbias = gt_fetch(d_dbias, nbias), *g_dq = gt_fetch(d_dq, nq);
    float *g_dv = gt_fetch(d_dv, nkv);
    cmp_t cp = {0};
    cmp_add(&cp, g_dk, dk, nkv);
    cmp_add(&cp, g_dbias, dbias, nbias);
    cmp_add(&cp, g_dq, inits[0], nq); /* untouched */
    cmp_add(&cp, g_dv, inits[2], nkv);
    snprintf(name, sizeof name, "mha_backward dk dbias only %s", shape);
    cmp_report(&cp, name, tol);

    for (int t = 0; t < 4; t++)
        free(g_first[t]), free(inits[t]);
    cudaFree(d_q), cudaFree(d_k), cudaFree(d_v), cudaFree(d_bias), cudaFree(d_mask), cudaFree(d_out), cudaFree(d_att);
    cudaFree(d_dout), cudaFree(d_dq), cudaFree(d_dk), cudaFree(d_dv), cudaFree(d_dbias);
    free(q), free(k), free(v), free(bias), free(mask), free(out), free(att), free(dout), free(dq), free(dk), free(dv);
    free(dbias), free(garbage), free(g_out), free(g_att), free(g_dk), free(g_dbias), free(g_dq), free(g_dv);
}

static void test_t5(void)
{
    case_rmsnorm(77, 512, 0, 3);
    case_rmsnorm(77, 512, 1, 1);
    case_rmsnorm(5, 13, 0, 2);
    case_rmsnorm(4096, 768, 0, 3); /* dweight over many rows */
    /* The encoder's self-attention: bias, padding mask, dropout. */
    case_mha((mha_case){3, 4, 37, 37, 16, 37, 1, 1, 0, 0.1f}, TOL_F32);
    /* The decoder's: bias, causal, dropout, no mask. */
    case_mha((mha_case){2, 4, 45, 45, 16, 45, 1, 0, 1, 0.1f}, TOL_F32);
    /* Everything at once, and a KV cache with room to grow (kv_rows > Tk, Tq < Tk). */
    case_mha((mha_case){2, 3, 9, 40, 24, 50, 1, 1, 1, 0.25f}, TOL_F32);
    /* Cross-attention: no bias, the encoder's mask, Tq != Tk. */
    case_mha((mha_case){2, 2, 33, 70, 40, 70, 0, 1, 0, 0.0f}, TOL_F32);
    /* T5-small's heads (HS = 64, 8 heads) over 128 tokens, and HS past one register sweep. */
    case_mha((mha_case){2, 8, 128, 128, 64, 128, 1, 1, 1, 0.1f}, TOL_LARGE_K);
    case_mha((mha_case){1, 2, 17, 19, 200, 19, 1, 0, 0, 0.0f}, TOL_LARGE_K);
}

/* ---------------------------------------------------------------------------------------- */
/* add, accumulate                                                                          */

static void test_add_accumulate(void)
{
    const int64_t n = 300007;
    float *a = gt_rand(n, -1.0f, 1.0f), *b = gt_rand(n, -1.0f, 1.0f), *out = gt_host((size_t)n * sizeof *out);
    float *d_a = gt_device_f(a, n), *d_b = gt_device_f(b, n), *d_out = gt_device_f(NULL, n);

    lk_add(out, a, b, n);
    lk_add_cuda(d_out, d_a, d_b, n);
    float *g = gt_fetch(d_out, n);
    char name[64];
    cmp_t c = {0};
    cmp_add(&c, g, out, n);
    snprintf(name, sizeof name, "add n=%lld", (long long)n);
    cmp_report(&c, name, TOL_F32);
    free(g);

    lk_add(a, a, b, n); /* out aliases a */
    lk_add_cuda(d_a, d_a, d_b, n);
    g = gt_fetch(d_a, n);
    cmp_t ca = {0};
    cmp_add(&ca, g, a, n);
    snprintf(name, sizeof name, "add n=%lld in place", (long long)n);
    cmp_report(&ca, name, TOL_F32);
    free(g);

    lk_accumulate(b, a, n);
    lk_accumulate_cuda(d_b, d_a, n);
    g = gt_fetch(d_b, n);
    cmp_t cc = {0};
    cmp_add(&cc, g, b, n);
    snprintf(name, sizeof name, "accumulate n=%lld", (long long)n);
    cmp_report(&cc, name, TOL_F32);
    free(g);

    cudaFree(d_a), cudaFree(d_b), cudaFree(d_out);
    free(a), free(b), free(out);
}

/* ---------------------------------------------------------------------------------------- */
/* The optimizer step (ABI 1.5)                                                              */

/* Spans over one flat p/g/m/v (host or device pointers), laid out as the trainer does. */
#define STEP_SPANS 5
static const int64_t step_numel[STEP_SPANS] = {0, 1, 17, 1000, 300007};
static const double step_decay[STEP_SPANS] = {0.1, 0.0, 0.1, 0.01, 0.1};

static void step_spans(loom_span *spans, float *p, float *g, float *m, float *v)
{
    int64_t off = 0;
    for (int i = 0; i < STEP_SPANS; i++) {
        spans[i] = (loom_span){LOOM_HEADER_INIT(loom_span), .name = "t", .tensor_numel = step_numel[i],
                               .numel = step_numel[i], .param = p + off, .grad = g + off,
                               .state = {m + off, v + off}, .weight_decay = step_decay[i]};
        off += step_numel[i];
    }
}

static loom_adam_args step_args_for(uint32_t rule, int64_t t)
{
    const double b1 = 0.9, b2 = 0.999, lr = 1e-2;
    loom_adam_args a = {LOOM_HEADER_INIT(loom_adam_args), .rule = rule, .grad_scale = 0.75f, .beta1 = (float)b1,
                        .one_minus_beta1 = (float)(1.0 - b1), .beta2 = (float)b2,
                        .one_minus_beta2 = (float)(1.0 - b2), .eps = 1e-8f, .bias2_sqrt = 1.0f, .lr = lr};
    a.step_size = (float)(lr / (1.0 - pow(b1, (double)t)));
    if (rule != LOOM_ADAM_RULE_HF) a.bias2_sqrt = (float)sqrt(1.0 - pow(b2, (double)t));
    return a;
}

/* The update is written without contraction on both sides: the GPU must equal the CPU bit for
 * bit, after three steps, in p, m and v. */
static void case_adam_update(uint32_t rule, const char *rule_name)
{
    int64_t n = 0;
    for (int i = 0; i < STEP_SPANS; i++) n += step_numel[i];
    float *p = gt_rand(n, -1.0f, 1.0f), *g = gt_rand(n, -0.05f, 0.05f);
    float *m = gt_host((size_t)n * sizeof *m), *v = gt_host((size_t)n * sizeof *v);
    memset(m, 0, (size_t)n * sizeof *m);
    memset(v, 0, (size_t)n * sizeof *v);
    float *d_p = gt_device_f(p, n), *d_g = gt_device_f(g, n), *d_m = gt_device_f(m, n), *d_v = gt_device_f(v, n);
    loom_span cpu[STEP_SPANS], gpu[STEP_SPANS];
    step_spans(cpu, p, g, m, v);
    step_spans(gpu, d_p, d_g, d_m, d_v);
    for (int64_t t = 1; t <= 3; t++) {
        loom_adam_args a = step_args_for(rule, t);
        lk_adam_update(cpu, STEP_SPANS, &a);
        lk_adam_update_cuda(gpu, STEP_SPANS, &a);
    }
    float *gp = gt_fetch(d_p, n), *gm = gt_fetch(d_m, n), *gv = gt_fetch(d_v, n);
    char name[64];
    cmp_t c = {0};
    cmp_add(&c, gp, p, n);
    cmp_add(&c, gm, m, n);
    cmp_add(&c, gv, v, n);
    snprintf(name, sizeof name, "adam_update %s 3 steps n=%lld", rule_name, (long long)n);
    cmp_report(&c, name, TOL_F32);
    int same = !memcmp(gp, p, (size_t)n * sizeof *p) && !memcmp(gm, m, (size_t)n * sizeof *m) &&
               !memcmp(gv, v, (size_t)n * sizeof *v);
    snprintf(name, sizeof name, "adam_update %s bit for bit", rule_name);
    check(same, name, "p, m, v equal the CPU's bits");
    cudaFree(d_p), cudaFree(d_g), cudaFree(d_m), cudaFree(d_v);
    free(p), free(g), free(m), free(v), free(gp), free(gm), free(gv);
}

static void test_optim_step(void)
{
    case_adam_update(LOOM_ADAM_RULE_ADAMW, "adamw");
    case_adam_update(LOOM_ADAM_RULE_ADAM, "adam");
    case_adam_update(LOOM_ADAM_RULE_HF, "adamw_hf");

    /* scale_check: the products bit for bit, the flag only when a result is inf or NaN. */
    const int64_t n = 300007;
    float *x = gt_rand(n, -4.0f, 4.0f), *d_x = gt_device_f(x, n);
    int32_t cpu_found = 0, gpu_found = 0;
    lk_scale_check(x, n, 0.125f, &cpu_found);
    lk_scale_check_cuda(d_x, n, 0.125f, &gpu_found);
    float *gx = gt_fetch(d_x, n);
    check(!memcmp(gx, x, (size_t)n * sizeof *x) && cpu_found == 0 && gpu_found == 0, "scale_check finite",
          "products equal the CPU's bits, no flag");
    free(gx);
    x[n - 1] = 3e38f; /* finite, but not after scaling */
    gt_cuda(cudaMemcpy(d_x + n - 1, x + n - 1, sizeof *x, cudaMemcpyHostToDevice), "cudaMemcpy");
    lk_scale_check(x, n, 4.0f, &cpu_found);
    lk_scale_check_cuda(d_x, n, 4.0f, &gpu_found);
    check(cpu_found == 1 && gpu_found == 1 && lk_cuda_last_error() == NULL, "scale_check overflow", "both flag it");
    cudaFree(d_x);
    free(x);

    /* sum_squares: segments of 16384 cut short, a gap and an empty one; the GPU's fixed tree
     * agrees with the CPU to double round-off and with itself bit for bit. */
    const int64_t total = 5 * 16384 + 123;
    float *y = gt_rand(total, -2.0f, 2.0f), *d_y = gt_device_f(y, total);
    const int64_t bounds[] = {0, 100, 100, 16384, 16384, 16384, 16400, 32768, 32768, 49152, 49152, total};
    double want[6], got[6], again[6];
    lk_sum_squares(want, y, bounds, 6);
    lk_sum_squares_cuda(got, d_y, bounds, 6);
    lk_sum_squares_cuda(again, d_y, bounds, 6);
    double rel = 0;
    for (int w = 0; w < 6; w++) {
        double d = fabs(got[w] - want[w]) / (want[w] > 0 ? want[w] : 1.0);
        if (d > rel) rel = d;
    }
    char detail[96];
    snprintf(detail, sizeof detail, "max rel %.2e (tol 1e-12), empty segment %g", rel, got[2]);
    check(rel <= 1e-12 && got[2] == 0.0 && lk_cuda_last_error() == NULL, "sum_squares vs CPU", detail);
    check(!memcmp(got, again, sizeof got), "sum_squares deterministic", "two runs, same bits");
    cudaFree(d_y);
    free(y);
}

/* ---------------------------------------------------------------------------------------- */
/* The table and error reporting                                                            */

/* Needs no GPU: runs before the skip. */
static void test_table(void)
{
    const loom_kernels_api *k = lk_cuda_kernel_table();
    int ok = k != NULL && k == lk_cuda_kernel_table() && k->abi_major == LOOM_ABI_MAJOR &&
             k->abi_minor == LOOM_ABI_MINOR && k->struct_size == sizeof(loom_kernels_api) &&
             k->device == LOOM_DEVICE_CUDA && k->sgemm == lk_sgemm_cuda &&
             k->linear_forward == lk_linear_forward_cuda && k->linear_backward == lk_linear_backward_cuda &&
             k->relu_forward == lk_relu_forward_cuda && k->relu_backward == lk_relu_backward_cuda &&
             k->gelu_forward == lk_gelu_forward_cuda && k->gelu_backward == lk_gelu_backward_cuda &&
             k->gelu_forward_cast == lk_gelu_forward_cast_cuda && k->gelu_backward_cast == lk_gelu_backward_cast_cuda &&
             k->softmax_cross_entropy_forward == lk_softmax_cross_entropy_forward_cuda &&
             k->softmax_cross_entropy_backward == lk_softmax_cross_entropy_backward_cuda &&
             k->encoder_forward == lk_encoder_forward_cuda && k->encoder_backward == lk_encoder_backward_cuda &&
             k->layernorm_forward == lk_layernorm_forward_cuda && k->layernorm_backward == lk_layernorm_backward_cuda &&
             k->conv1d_forward == lk_conv1d_forward_cuda && k->conv1d_backward == lk_conv1d_backward_cuda &&
             k->attention_forward == lk_attention_forward_cuda && k->attention_backward == lk_attention_backward_cuda &&
             k->add == lk_add_cuda && k->accumulate == lk_accumulate_cuda;
    /* Every slot is set, in both tables (the synchronous one wraps each member): nothing a
     * model binds to is NULL on CUDA. */
    const loom_kernels_api *sync = lk_cuda_synchronous_kernel_table();
    for (size_t off = offsetof(loom_kernels_api, sgemm); k && sync && off < sizeof(loom_kernels_api);
         off += sizeof(void *)) {
        void *slot, *sync_slot;
        memcpy(&slot, (const char *)k + off, sizeof slot);
        memcpy(&sync_slot, (const char *)sync + off, sizeof sync_slot);
        ok = ok && slot != NULL && sync_slot != NULL;
    }
    ok = ok && k && sync && sync->struct_size == sizeof(loom_kernels_api) &&
         k->attention_flash_forward == lk_attention_flash_forward_cuda &&
         k->attention_flash_backward == lk_attention_flash_backward_cuda && k->classifier == lk_classifier_cuda &&
         k->rmsnorm_forward == lk_rmsnorm_forward_cuda && k->rmsnorm_backward == lk_rmsnorm_backward_cuda &&
         k->mha_forward == lk_mha_forward_cuda && k->mha_backward == lk_mha_backward_cuda;
    ok = ok && k && k->softmax_cross_entropy_smoothed_forward == lk_softmax_cross_entropy_smoothed_forward_cuda &&
         k->softmax_cross_entropy_smoothed_backward == lk_softmax_cross_entropy_smoothed_backward_cuda &&
         k->softmax_cross_entropy_smoothed_backward_cast == lk_softmax_cross_entropy_smoothed_backward_cast_cuda &&
         k->classifier_smoothed == lk_classifier_smoothed_cuda &&
         k->attention_flash_forward_dropout == lk_attention_flash_forward_dropout_cuda &&
         k->attention_flash_backward_dropout == lk_attention_flash_backward_dropout_cuda;
    /* ABI 1.5: the optimizer step; the synchronous table waits in adam_update too. */
    ok = ok && k && k->adam_update == lk_adam_update_cuda && k->scale_check == lk_scale_check_cuda &&
         k->sum_squares == lk_sum_squares_cuda && sync && sync->adam_update &&
         sync->adam_update != lk_adam_update_cuda && sync->scale_check == lk_scale_check_cuda &&
         sync->sum_squares == lk_sum_squares_cuda;
    /* ABI 1.8: the classifier by columns. */
    ok = ok && k && k->classifier_columns == lk_classifier_columns_cuda && sync && sync->classifier_columns &&
         sync->classifier_columns != lk_classifier_columns_cuda;
    check(ok, "kernel_table", "device CUDA, every member of ABI 1.0-1.9 set in both CUDA tables");
    check(lk_cuda_last_error() == NULL, "no error recorded at start", NULL);
}

/* A bad argument is recorded, not fatal, and clearing works. */
static void test_errors(void)
{
    float *d = gt_device_f(NULL, 64);
    /* lda 3 < K 4 for an untransposed row-major A: cuBLAS rejects it. */
    lk_sgemm_cuda(0, 0, 4, 4, 4, 1.0f, d, 3, d + 16, 4, 0.0f, d + 32, 4);
    const char *err = lk_cuda_last_error();
    check(err != NULL && strstr(err, "lk_sgemm_cuda") != NULL, "error recorded (bad lda)",
          err ? err : "nothing recorded");
    lk_cuda_clear_error();
    check(lk_cuda_last_error() == NULL && lk_cuda_synchronize() == 0, "error cleared", NULL);
    cudaFree(d);
}

int main(void)
{
    test_table();
    if (failed) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    gt_require_gpu("test_cuda_kernels");
    struct cudaDeviceProp prop;
    int dev = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
        printf("device %d: %s (sm_%d%d)\n", dev, prop.name, prop.major, prop.minor);

    test_sgemm();
    test_linear();
    test_elementwise();
    test_cross_entropy();
    test_conv1d();
    test_encoder();
    test_layernorm();
    test_attention();
    test_flash_classifier();
    test_t5();
    test_add_accumulate();
    test_optim_step();
    test_errors();

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
