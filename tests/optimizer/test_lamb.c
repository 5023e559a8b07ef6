/* LAMB against a double-precision transcription of DeepSpeed's FusedLamb (docs/semantics/optimizers.md#lamb), and
 * the whole-tensor statistics protocol: a tensor split into two spans (as ZeRO splits it across
 * ranks), whose partial sums are added, updates exactly as the whole tensor does. */
#include <math.h>
#include <string.h>

#include "optim_harness.h"
#include "test_util.h"

#define N 11

typedef struct ref_state {
    double p[N], m[N], v[N];
} ref_state;

/* One LAMB step on a whole tensor, in double. */
static void reference(ref_state *r, const double *g, double lr, double b1, double b2, double eps, double wd, int64_t t,
                      double min_coeff, double max_coeff)
{
    double u[N], pp = 0, uu = 0;
    for (int i = 0; i < N; i++) {
        r->m[i] = b1 * r->m[i] + (1 - b1) * g[i];
        r->v[i] = b2 * r->v[i] + (1 - b2) * g[i] * g[i];
        u[i] = r->m[i] / (sqrt(r->v[i]) + eps) + wd * r->p[i];
        pp += r->p[i] * r->p[i];
        uu += u[i] * u[i];
    }
    double coeff = 1;
    if (pp > 0 && uu > 0) coeff = fmin(fmax(sqrt(pp) / sqrt(uu), min_coeff), max_coeff);
    double step = lr * sqrt(1 - pow(b2, (double)t)) / (1 - pow(b1, (double)t));
    for (int i = 0; i < N; i++) r->p[i] -= step * coeff * u[i];
}

/* Run `steps` steps through the plugin with the tensor cut at `cut` (0: one span). */
static void run(const optim_fixture *f, int cut, int steps, float *p, float *m, float *v)
{
    for (int t = 1; t <= steps; t++) {
        float g[N];
        for (int i = 0; i < N; i++) g[i] = optim_test_grad(i, t);
        float *state_a[2] = {m, v}, *state_b[2] = {m + cut, v + cut};
        loom_span spans[2];
        size_t n = 0;
        if (cut > 0) {
            spans[n++] = optim_span("w", p, g, state_a, 2, cut, 0.01);
            spans[n++] = optim_span("w", p + cut, g + cut, state_b, 2, N - cut, 0.01);
            spans[1].offset = cut;
        } else {
            spans[n++] = optim_span("w", p, g, state_a, 2, N, 0.01);
        }
        for (size_t k = 0; k < n; k++) spans[k].tensor_index = 0, spans[k].tensor_numel = N;
        loom_optimizer_step step = optim_step_args(t, 0.05, 0.7, NAN);
        double sums[2] = {0, 0};
        /* The partial sums of each piece, added as the host adds ranks'. */
        for (size_t k = 0; k < n; k++) CHECK(f->vt->partial_stats(f->opt, &spans[k], 1, &step, sums) == LOOM_OK);
        step.tensor_stats = sums;
        step.n_tensors = 1;
        CHECK(f->vt->step(f->opt, spans, n, &step) == LOOM_OK);
    }
}

int main(void)
{
    optim_fixture f;
    static const char *const kv[] = {"beta1", "0.8", "beta2", "0.99", "eps", "1e-6", "max_coeff", "5", "min_coeff",
                                     "0.05", NULL};
    if (optim_open(&f, "lamb", kv) != LOOM_OK) return 1;
    CHECK(f.vt->tensor_stats == 2 && f.vt->partial_stats != NULL);
    CHECK((f.vt->flags & LOOM_OPTIMIZER_NEEDS_TENSOR_NORMS) != 0);

    float p1[N], m1[N] = {0}, v1[N] = {0}, p2[N], m2[N] = {0}, v2[N] = {0};
    ref_state r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < N; i++) p1[i] = p2[i] = optim_test_param(i), r.p[i] = p1[i];
    run(&f, 0, 4, p1, m1, v1);
    run(&f, 4, 4, p2, m2, v2);
    for (int t = 1; t <= 4; t++) {
        double g[N];
        for (int i = 0; i < N; i++) g[i] = (double)optim_test_grad(i, t) * (double)0.7f;
        reference(&r, g, 0.05, 0.8, 0.99, 1e-6, 0.01, t, 0.05, 5);
    }
    for (int i = 0; i < N; i++) {
        CHECK_CLOSE(p1[i], r.p[i], 1e-6, 1e-4);
        CHECK_CLOSE(m1[i], r.m[i], 1e-7, 1e-4);
        CHECK_CLOSE(v1[i], r.v[i], 1e-9, 1e-4);
        CHECK(p2[i] == p1[i]); /* split spans + summed statistics == the whole tensor, bit for bit */
    }
    /* partial_stats changes nothing. */
    float before[N];
    memcpy(before, p1, sizeof before);
    float g[N], *state[2] = {m1, v1};
    for (int i = 0; i < N; i++) g[i] = 1.0f;
    loom_span span = optim_span("w", p1, g, state, 2, N, 0.01);
    loom_optimizer_step step = optim_step_args(5, 0.05, 1.0, NAN);
    double sums[2] = {0, 0};
    float m_before = m1[3];
    CHECK(f.vt->partial_stats(f.opt, &span, 1, &step, sums) == LOOM_OK);
    CHECK(memcmp(before, p1, sizeof before) == 0 && m1[3] == m_before);
    CHECK(sums[0] > 0 && sums[1] > 0);
    /* Without statistics the step refuses instead of guessing. */
    CHECK(f.vt->step(f.opt, &span, 1, &step) != LOOM_OK);
    optim_close(&f);
    return test_finish("test_lamb");
}
