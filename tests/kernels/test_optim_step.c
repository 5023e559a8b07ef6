/* test_optim_step.c - the ABI 1.5 step kernels of the CPU table: adam_update (each rule, over
 * spans of many sizes, a host's longer spans, several steps) against a double-precision
 * reference and, bit for bit, against each rule's f32 line written out here; scale_check's
 * products and its non-finite flag; sum_squares against a double reference. Results must not
 * depend on the thread count. */
#include <omp.h>

#include <loom/optimizer.h>

#include "kernel_test.h"
#include "lk_cpu.h"

/* A newer host's span: longer than ours, so the kernel must step by struct_size. */
typedef struct wide_span {
    loom_span span;
    char appended[40];
} wide_span;

#define N_SPANS 6
static const int64_t span_numel[N_SPANS] = {0, 1, 17, 1000, 40000, 70001};
static const double span_decay[N_SPANS] = {0.1, 0.0, 0.1, 0.01, 0.0, 0.1};

typedef struct adam_state {
    wide_span spans[N_SPANS];
    float *p, *g, *m, *v;
    int64_t total;
} adam_state;

static void adam_state_init(adam_state *s, uint64_t seed)
{
    s->total = 0;
    for (int i = 0; i < N_SPANS; i++) s->total += span_numel[i];
    s->p = test_alloc(s->total), s->g = test_alloc(s->total), s->m = test_alloc(s->total), s->v = test_alloc(s->total);
    test_rng_state = seed;
    test_fill(s->p, s->total, -1.0f, 1.0f);
    test_fill(s->g, s->total, -0.05f, 0.05f);
    memset(s->m, 0, (size_t)s->total * sizeof(float));
    memset(s->v, 0, (size_t)s->total * sizeof(float));
    int64_t off = 0;
    for (int i = 0; i < N_SPANS; i++) {
        memset(&s->spans[i], 0xab, sizeof s->spans[i]); /* the appended bytes: garbage */
        s->spans[i].span = (loom_span){LOOM_HEADER_INIT(loom_span), .name = "t", .numel = span_numel[i],
                                       .tensor_numel = span_numel[i], .param = s->p + off, .grad = s->g + off,
                                       .state = {s->m + off, s->v + off}, .weight_decay = span_decay[i]};
        s->spans[i].span.struct_size = sizeof(wide_span);
        off += span_numel[i];
    }
}

static void adam_state_free(adam_state *s)
{
    free(s->p), free(s->g), free(s->m), free(s->v);
}

/* The weight decay of flat element i (its span's, in double as the host passes it). */
static double span_wd(int64_t i)
{
    int64_t off = 0;
    for (int k = 0; k < N_SPANS; k++) {
        if (i < off + span_numel[k]) return span_decay[k];
        off += span_numel[k];
    }
    return 0;
}

/* The step's coefficients as an optimizer computes them (adamw.c, adam.c, adamw_hf.c). */
static loom_adam_args args_for(uint32_t rule, int64_t t, double lr, double grad_scale)
{
    const double b1 = 0.9, b2 = 0.999;
    loom_adam_args a = {LOOM_HEADER_INIT(loom_adam_args), .rule = rule, .grad_scale = (float)grad_scale,
                        .beta1 = (float)b1, .one_minus_beta1 = (float)(1.0 - b1), .beta2 = (float)b2,
                        .one_minus_beta2 = (float)(1.0 - b2), .eps = 1e-8f, .lr = lr};
    if (rule == LOOM_ADAM_RULE_HF) {
        a.step_size = (float)(lr * sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t)));
        a.bias2_sqrt = 1.0f;
    } else {
        a.step_size = (float)(lr / (1.0 - pow(b1, (double)t)));
        a.bias2_sqrt = (float)sqrt(1.0 - pow(b2, (double)t));
    }
    return a;
}

/* Element i of one step in f32, every operation as the rule's line says it (C11, nothing
 * contracted): what the kernel must equal bit for bit. */
static void f32_line(const loom_adam_args *c, double wd, float *p, float *m, float *v, float g)
{
    float gi = g * c->grad_scale;
    if (c->rule == LOOM_ADAM_RULE_ADAM) gi = gi + (float)wd * *p;
    float mi = c->beta1 * *m + c->one_minus_beta1 * gi;
    float vi = c->beta2 * *v + c->one_minus_beta2 * gi * gi;
    *m = mi, *v = vi;
    if (c->rule == LOOM_ADAM_RULE_ADAMW)
        *p = *p * (float)(1.0 - c->lr * wd) - c->step_size * (mi / (sqrtf(vi) / c->bias2_sqrt + c->eps));
    else if (c->rule == LOOM_ADAM_RULE_ADAM)
        *p = *p - c->step_size * (mi / (sqrtf(vi) / c->bias2_sqrt + c->eps));
    else {
        float q = *p - c->step_size * (mi / (sqrtf(vi) + c->eps));
        *p = q + (float)(-c->lr * wd) * q;
    }
}

/* The same step in double from the textbook formulas (torch's and HF's), for the tolerance. */
static void double_line(uint32_t rule, int64_t t, double lr, double gs, double wd, double *p, double *m, double *v,
                        double g)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    g *= gs;
    if (rule == LOOM_ADAM_RULE_ADAM) g += wd * *p;
    if (rule == LOOM_ADAM_RULE_ADAMW) *p *= 1.0 - lr * wd;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double c1 = 1 - pow(b1, (double)t), c2 = 1 - pow(b2, (double)t);
    if (rule == LOOM_ADAM_RULE_HF) {
        *p -= lr * sqrt(c2) / c1 * *m / (sqrt(*v) + eps);
        *p -= lr * wd * *p;
    } else {
        *p -= lr / c1 * *m / (sqrt(*v) / sqrt(c2) + eps);
    }
}

static void test_adam_rule(uint32_t rule)
{
    adam_state k, f;
    adam_state_init(&k, 7 + rule);
    adam_state_init(&f, 7 + rule);
    double *dp = test_dalloc_from(k.p, k.total), *dm = calloc((size_t)k.total, sizeof *dm),
           *dv = calloc((size_t)k.total, sizeof *dv);
    const double lr = 1e-2, gs = 0.75;
    for (int64_t t = 1; t <= 3; t++) {
        loom_adam_args a = args_for(rule, t, lr, gs);
        lk_adam_update(&k.spans[0].span, N_SPANS, &a);
        for (int64_t i = 0; i < f.total; i++) {
            f32_line(&a, span_wd(i), &f.p[i], &f.m[i], &f.v[i], f.g[i]);
            double_line(rule, t, lr, gs, span_wd(i), &dp[i], &dm[i], &dv[i], (double)k.g[i]);
        }
    }
    CHECK(memcmp(k.p, f.p, (size_t)k.total * sizeof(float)) == 0);
    CHECK(memcmp(k.m, f.m, (size_t)k.total * sizeof(float)) == 0);
    CHECK(memcmp(k.v, f.v, (size_t)k.total * sizeof(float)) == 0);
    /* f32 against double: the update is ~lr per step, so 1e-5 absolute is a few ulps of it. */
    CHECK(test_mismatches(k.p, dp, k.total, 1e-5, 1e-5) == 0);
    CHECK(test_mismatches(k.m, dm, k.total, 1e-7, 1e-4) == 0);
    CHECK(test_mismatches(k.v, dv, k.total, 1e-10, 1e-4) == 0);
    /* The thread count changes nothing. */
    adam_state one;
    adam_state_init(&one, 7 + rule);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int64_t t = 1; t <= 3; t++) {
        loom_adam_args a = args_for(rule, t, lr, gs);
        lk_adam_update(&one.spans[0].span, N_SPANS, &a);
    }
    omp_set_num_threads(threads);
    CHECK(memcmp(one.p, k.p, (size_t)k.total * sizeof(float)) == 0);
    CHECK(memcmp(one.v, k.v, (size_t)k.total * sizeof(float)) == 0);
    adam_state_free(&k), adam_state_free(&f), adam_state_free(&one);
    free(dp), free(dm), free(dv);
}

static void test_adam_unknown_rule(void)
{
    adam_state s;
    adam_state_init(&s, 99);
    float *p0 = test_alloc(s.total);
    memcpy(p0, s.p, (size_t)s.total * sizeof(float));
    loom_adam_args a = args_for(LOOM_ADAM_RULE_HF + 1, 1, 1e-2, 1.0);
    lk_adam_update(&s.spans[0].span, N_SPANS, &a);
    CHECK(memcmp(p0, s.p, (size_t)s.total * sizeof(float)) == 0);
    lk_adam_update(NULL, 0, &a); /* no spans: touches nothing */
    free(p0);
    adam_state_free(&s);
}

static void test_scale_check(int64_t n)
{
    float *x = test_alloc(n), *x0 = test_alloc(n);
    test_fill(x0, n, -4.0f, 4.0f);
    memcpy(x, x0, (size_t)n * sizeof *x);
    int32_t found = 0;
    lk_scale_check(x, n, 0.125f, &found);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += x[i] != x0[i] * 0.125f;
    CHECK(bad == 0);
    CHECK(found == 0);
    /* Accumulates: a flag already set stays set on a clean pass. */
    found = 1;
    lk_scale_check(x, n, 1.0f, &found);
    CHECK(found == 1);
    /* inf, NaN at the ends and the middle; and a finite value the scale pushes past f32's max. */
    const int64_t at[3] = {0, n / 2, n - 1};
    const float poison[3] = {INFINITY, NAN, -INFINITY};
    for (int k = 0; k < 3; k++) {
        memcpy(x, x0, (size_t)n * sizeof *x);
        x[at[k]] = poison[k];
        found = 0;
        lk_scale_check(x, n, 0.5f, &found);
        CHECK(found == 1);
    }
    memcpy(x, x0, (size_t)n * sizeof *x);
    x[at[1]] = 3e38f;
    found = 0;
    lk_scale_check(x, n, 4.0f, &found);
    CHECK(found == 1 && isinf(x[at[1]]));
    lk_scale_check(x, n, 1.0f, NULL); /* no flag: scale only */
    free(x), free(x0);
}

static void test_sum_squares(void)
{
    const int64_t n = 3 * 16384 + 77;
    float *x = test_alloc(n);
    test_fill(x, n, -2.0f, 2.0f);
    /* Blocks of 16384 cut at "tensor boundaries", one gap, one empty segment. */
    int64_t bounds[] = {0, 100, 100, 16384, 16384, 16384, 16400, 32768, 32768, 49152, 49152, n};
    const int64_t segs = 6;
    double sums[6], one[6];
    lk_sum_squares(sums, x, bounds, segs);
    for (int64_t w = 0; w < segs; w++) {
        double want = 0;
        for (int64_t i = bounds[2 * w]; i < bounds[2 * w + 1]; i++) want += (double)x[i] * (double)x[i];
        CHECK_CLOSE(sums[w], want, 1e-12, 1e-13);
    }
    CHECK(sums[2] == 0.0);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    lk_sum_squares(one, x, bounds, segs);
    omp_set_num_threads(threads);
    CHECK(memcmp(one, sums, sizeof sums) == 0);
    /* A NaN poisons its segment only. */
    x[20000] = NAN;
    lk_sum_squares(sums, x, bounds, segs);
    CHECK(isnan(sums[3]) && isfinite(sums[0]) && isfinite(sums[4]));
    x[20000] = INFINITY;
    lk_sum_squares(sums, x, bounds, segs);
    CHECK(isinf(sums[3]));
    lk_sum_squares(sums, x, bounds, 0); /* none: writes nothing */
    free(x);
}

int main(void)
{
    test_adam_rule(LOOM_ADAM_RULE_ADAMW);
    test_adam_rule(LOOM_ADAM_RULE_ADAM);
    test_adam_rule(LOOM_ADAM_RULE_HF);
    test_adam_unknown_rule();
    const int64_t sizes[4] = {1, 17, 1000, (1 << 16) + 5};
    for (int i = 0; i < 4; i++) test_scale_check(sizes[i]);
    lk_scale_check(NULL, 0, 2.0f, NULL);
    test_sum_squares();
    return test_finish("test_optim_step");
}
