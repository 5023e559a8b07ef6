/* test_encoder.c - token + position embedding against a double-precision reference and finite
 * differences, with repeated tokens (the backward's scatter must not race or overwrite),
 * accumulation, NULL gradient outputs, and the threaded path against one thread. */
#include "kernel_test.h"
#include "lk_cpu.h"

#include <omp.h>

static void ref_forward(double *out, const int32_t *tok, const float *wte, const float *wpe,
                        int64_t B, int64_t T, int64_t C)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < C; c++)
                out[(b * T + t) * C + c] = (double)wte[tok[b * T + t] * C + c] + wpe[t * C + c];
}

static void ref_backward(double *dwte, double *dwpe, const float *dout, const int32_t *tok,
                         int64_t B, int64_t T, int64_t C)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < C; c++) {
                const double g = dout[(b * T + t) * C + c];
                dwte[tok[b * T + t] * C + c] += g;
                dwpe[t * C + c] += g;
            }
}

/* Tokens drawn from a vocabulary of V with many repeats; token V-1 never appears. */
static void fill_tokens(int32_t *tok, int64_t n, int64_t V)
{
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)(test_rng_next() % (uint64_t)(V - 1));
    tok[0] = tok[n - 1] = 0; /* at least one certain repeat */
}

static void test_case(int64_t B, int64_t T, int64_t C, int64_t V)
{
    const int64_t N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof *tok);
    float *wte = test_alloc(V * C), *wpe = test_alloc(T * C), *out = test_alloc(N * C);
    float *dout = test_alloc(N * C), *dwte = test_alloc(V * C), *dwpe = test_alloc(T * C);
    double *rout = malloc((size_t)(N * C) * sizeof *rout);
    fill_tokens(tok, N, V);
    test_fill(wte, V * C, -1.0f, 1.0f);
    test_fill(wpe, T * C, -1.0f, 1.0f);
    test_fill(dout, N * C, -1.0f, 1.0f);
    test_fill(dwte, V * C, -1.0f, 1.0f); /* non-zero: the backward must accumulate */
    test_fill(dwpe, T * C, -1.0f, 1.0f);

    lk_encoder_forward(out, tok, wte, wpe, B, T, C);
    ref_forward(rout, tok, wte, wpe, B, T, C);
    CHECK(test_mismatches(out, rout, N * C, 0.0, 1e-7) == 0);

    double *rdwte = test_dalloc_from(dwte, V * C), *rdwpe = test_dalloc_from(dwpe, T * C);
    const float last_row0 = dwte[(V - 1) * C];
    lk_encoder_backward(dwte, dwpe, dout, tok, B, T, C);
    ref_backward(rdwte, rdwpe, dout, tok, B, T, C);
    CHECK(test_mismatches(dwte, rdwte, V * C, 1e-5, 1e-5) == 0);
    CHECK(test_mismatches(dwpe, rdwpe, T * C, 1e-5, 1e-5) == 0);
    CHECK(dwte[(V - 1) * C] == last_row0); /* a token not in the batch: row untouched */

    free(tok), free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe);
    free(rout), free(rdwte), free(rdwpe);
}

/* Finite differences of sum(out * w) with respect to every wte and wpe entry. */
static void test_fd(void)
{
    enum { B = 2, T = 5, C = 12, V = 4 };
    int32_t tok[B * T];
    float wte[V * C], wpe[T * C], out[B * T * C], w[B * T * C];
    float dwte[V * C], dwte0[V * C], dwpe[T * C], dwpe0[T * C];
    fill_tokens(tok, B * T, V);
    test_fill(wte, V * C, -1.0f, 1.0f);
    test_fill(wpe, T * C, -1.0f, 1.0f);
    test_fill(w, B * T * C, -1.0f, 1.0f);
    test_fill(dwte0, V * C, -1.0f, 1.0f);
    test_fill(dwpe0, T * C, -1.0f, 1.0f);
    memcpy(dwte, dwte0, sizeof dwte);
    memcpy(dwpe, dwpe0, sizeof dwpe);
    lk_encoder_backward(dwte, dwpe, w, tok, B, T, C);
    float *params[2] = {wte, wpe}, *grads[2] = {dwte, dwpe}, *grads0[2] = {dwte0, dwpe0};
    const int64_t sizes[2] = {V * C, T * C};
    for (int p = 0; p < 2; p++) {
        for (int64_t i = 0; i < sizes[p]; i++) {
            const float x0 = params[p][i];
            params[p][i] = x0 + FD_EPS;
            lk_encoder_forward(out, tok, wte, wpe, B, T, C);
            const double lp = test_dot(out, w, B * T * C);
            params[p][i] = x0 - FD_EPS;
            lk_encoder_forward(out, tok, wte, wpe, B, T, C);
            const double lm = test_dot(out, w, B * T * C);
            params[p][i] = x0;
            CHECK_CLOSE(grads[p][i] - grads0[p][i], (lp - lm) / (2.0 * (double)FD_EPS), FD_ATOL,
                        FD_RTOL);
        }
    }
}

/* Either gradient output may be NULL; the other is still right. */
static void test_null(void)
{
    enum { B = 2, T = 3, C = 5, V = 3 };
    int32_t tok[B * T] = {1, 1, 0, 1, 2, 1};
    float dout[B * T * C], a[V * C], b[T * C], a2[V * C], b2[T * C];
    test_fill(dout, B * T * C, -1.0f, 1.0f);
    memset(a, 0, sizeof a), memset(b, 0, sizeof b), memset(a2, 0, sizeof a2), memset(b2, 0, sizeof b2);
    lk_encoder_backward(a, b, dout, tok, B, T, C);
    lk_encoder_backward(a2, NULL, dout, tok, B, T, C);
    lk_encoder_backward(NULL, b2, dout, tok, B, T, C);
    lk_encoder_backward(NULL, NULL, dout, tok, B, T, C);
    CHECK(memcmp(a, a2, sizeof a) == 0);
    CHECK(memcmp(b, b2, sizeof b) == 0);
}

/* GPT-2 width, all tokens from a vocabulary of 3: heavy repetition on the threaded path. The
 * result must be bitwise the same for 1 and 3 threads. */
static void test_threads(void)
{
    const int64_t B = 4, T = 64, C = 768, V = 4, N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof *tok);
    float *dout = test_alloc(N * C), *d1 = test_alloc(V * C), *d3 = test_alloc(V * C);
    float *p1 = test_alloc(T * C), *p3 = test_alloc(T * C);
    fill_tokens(tok, N, V);
    test_fill(dout, N * C, -1.0f, 1.0f);
    memset(d1, 0, (size_t)(V * C) * sizeof *d1), memset(d3, 0, (size_t)(V * C) * sizeof *d3);
    memset(p1, 0, (size_t)(T * C) * sizeof *p1), memset(p3, 0, (size_t)(T * C) * sizeof *p3);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    lk_encoder_backward(d1, p1, dout, tok, B, T, C);
    omp_set_num_threads(3);
    lk_encoder_backward(d3, p3, dout, tok, B, T, C);
    omp_set_num_threads(saved);
    CHECK(memcmp(d1, d3, (size_t)(V * C) * sizeof *d1) == 0);
    CHECK(memcmp(p1, p3, (size_t)(T * C) * sizeof *p1) == 0);
    free(tok), free(dout), free(d1), free(d3), free(p1), free(p3);
}

int main(void)
{
    test_case(2, 5, 12, 7);
    test_case(3, 17, 67, 11);
    test_case(4, 64, 768, 50); /* threaded */
    test_fd();
    test_null();
    test_threads();
    return test_finish("test_encoder");
}
