/*
 * test_adafactor.c - the adafactor plugin, loaded through the core loader, against HF's
 * transformers.optimization.Adafactor.step re-implemented here in double precision
 * (docs/semantics/optimizers.md#adafactor), over several steps, on a 1-D, a 2-D and a 3-D
 * tensor at once (factored and not), with every option HF has: the Trainer's defaults
 * (--adafactor: lr given), the class's defaults (scale_parameter, relative_step), warmup_init,
 * beta1, weight decay, a clip threshold that clips, gradient scaling. Then the errors: a span
 * that is part of a tensor, bad options.
 */
#include "error.h"
#include "optim_harness.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct ref_opts {
    double eps1, eps2, clip, decay_rate, beta1; /* beta1 < 0: None */
    int scale_parameter, relative_step, warmup_init;
} ref_opts;

/* One tensor's state in the reference, HF's names. */
typedef struct ref_tensor {
    int64_t ndim, shape[3], n;
    double *p, *exp_avg, *exp_avg_sq, *row, *col;
} ref_tensor;

static double ref_rms(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s / (double)n);
}

/* Adafactor.step for one parameter: HF's code line by line (torch ops spelled out). */
static void ref_step(const ref_opts *o, ref_tensor *t, const double *grad, int64_t step, double group_lr, double wd)
{
    const int64_t n = t->n;
    const int factored = t->ndim >= 2;
    /* _get_lr */
    double rel = group_lr;
    if (o->relative_step) rel = fmin(o->warmup_init ? 1e-6 * (double)step : 1e-2, 1.0 / sqrt((double)step));
    const double scale = o->scale_parameter ? fmax(o->eps2, ref_rms(t->p, n)) : 1.0;
    const double lr = scale * rel;
    const double beta2t = 1.0 - pow((double)step, o->decay_rate);
    double *update = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) update[i] = grad[i] * grad[i] + o->eps1;
    if (factored) {
        const int64_t C = t->shape[t->ndim - 1], R = t->shape[t->ndim - 2], lead = n / (R * C);
        for (int64_t b = 0; b < lead; b++) {
            for (int64_t r = 0; r < R; r++) { /* update.mean(dim=-1) */
                double m = 0;
                for (int64_t c = 0; c < C; c++) m += update[(b * R + r) * C + c];
                t->row[b * R + r] = t->row[b * R + r] * beta2t + (m / (double)C) * (1.0 - beta2t);
            }
            for (int64_t c = 0; c < C; c++) { /* update.mean(dim=-2) */
                double m = 0;
                for (int64_t r = 0; r < R; r++) m += update[(b * R + r) * C + c];
                t->col[b * C + c] = t->col[b * C + c] * beta2t + (m / (double)R) * (1.0 - beta2t);
            }
        }
        /* _approx_sq_grad, times grad */
        for (int64_t b = 0; b < lead; b++) {
            double mean = 0;
            for (int64_t r = 0; r < R; r++) mean += t->row[b * R + r];
            mean /= (double)R;
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    const int64_t i = (b * R + r) * C + c;
                    update[i] = 1.0 / sqrt(t->row[b * R + r] / mean) * (1.0 / sqrt(t->col[b * C + c])) * grad[i];
                }
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            t->exp_avg_sq[i] = t->exp_avg_sq[i] * beta2t + update[i] * (1.0 - beta2t);
            update[i] = 1.0 / sqrt(t->exp_avg_sq[i]) * grad[i];
        }
    }
    const double denom = fmax(ref_rms(update, n) / o->clip, 1.0);
    for (int64_t i = 0; i < n; i++) update[i] = update[i] / denom * lr;
    if (o->beta1 >= 0) {
        for (int64_t i = 0; i < n; i++) {
            t->exp_avg[i] = t->exp_avg[i] * o->beta1 + update[i] * (1.0 - o->beta1);
            update[i] = t->exp_avg[i];
        }
    }
    if (wd != 0)
        for (int64_t i = 0; i < n; i++) t->p[i] += t->p[i] * (-wd * lr);
    for (int64_t i = 0; i < n; i++) t->p[i] -= update[i];
    free(update);
}

enum { N_TENSORS = 3, STEPS = 5 };

static const int64_t shapes[N_TENSORS][4] = {{1, 7, 0, 0}, {2, 4, 6, 0}, {3, 2, 3, 5}}; /* ndim, dims */

static int64_t numel_of(int k)
{
    int64_t n = 1;
    for (int64_t d = 0; d < shapes[k][0]; d++) n *= shapes[k][1 + d];
    return n;
}

static double grad_at(int k, int64_t i, int64_t t)
{
    /* Varying magnitudes per row and column, so the factored statistics differ from the full. */
    return sin(0.7 * (double)i + 1.3 * (double)t + (double)k) * (0.2 + 0.1 * (double)(i % 5)) + 0.01 * (double)(i % 3);
}

/* Runs STEPS steps through the plugin and the reference; returns mismatches. */
static int compare(const char *const *kv, const ref_opts *o, const double *lrs, double wd, double grad_scale)
{
    optim_fixture f;
    if (optim_open(&f, "adafactor", kv) != LOOM_OK) return -1;
    CHECK(f.vt->state_slots == 3 && (f.vt->flags & LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS));
    float *param[N_TENSORS], *grad[N_TENSORS], *state[N_TENSORS][3];
    ref_tensor ref[N_TENSORS];
    loom_span spans[N_TENSORS];
    for (int k = 0; k < N_TENSORS; k++) {
        const int64_t n = numel_of(k);
        param[k] = malloc(sizeof(float) * (size_t)n);
        grad[k] = malloc(sizeof(float) * (size_t)n);
        for (int s = 0; s < 3; s++) state[k][s] = calloc((size_t)n, sizeof(float));
        ref[k] = (ref_tensor){.ndim = shapes[k][0], .n = n};
        for (int d = 0; d < 3; d++) ref[k].shape[d] = shapes[k][1 + d];
        ref[k].p = malloc(sizeof(double) * (size_t)n);
        ref[k].exp_avg = calloc((size_t)n, sizeof(double));
        ref[k].exp_avg_sq = calloc((size_t)n, sizeof(double));
        ref[k].row = calloc((size_t)n, sizeof(double));
        ref[k].col = calloc((size_t)n, sizeof(double));
        for (int64_t i = 0; i < n; i++) ref[k].p[i] = param[k][i] = (float)(0.5 * cos(0.3 * (double)i + k) + 0.1);
        /* The 1-D tensor is a bias: no decay, as the Trainer's groups do. */
        spans[k] = optim_span(k == 0 ? "b" : k == 1 ? "w" : "w3", param[k], grad[k], state[k], 3, n, k == 0 ? 0 : wd);
        spans[k].ndim = (uint32_t)shapes[k][0];
        for (int d = 0; d < shapes[k][0]; d++) spans[k].shape[d] = shapes[k][1 + d];
    }
    int bad = 0;
    for (int64_t t = 1; t <= STEPS; t++) {
        double *g64[N_TENSORS];
        for (int k = 0; k < N_TENSORS; k++) {
            const int64_t n = numel_of(k);
            g64[k] = malloc(sizeof(double) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                grad[k][i] = (float)grad_at(k, i, t);
                g64[k][i] = (double)grad[k][i] * grad_scale;
            }
        }
        loom_optimizer_step step = optim_step_args(t, lrs[t - 1], grad_scale, NAN);
        CHECK(f.vt->step(f.opt, spans, N_TENSORS, &step) == LOOM_OK);
        for (int k = 0; k < N_TENSORS; k++) {
            ref_step(o, &ref[k], g64[k], t, lrs[t - 1], k == 0 ? 0 : wd);
            const int64_t n = numel_of(k);
            for (int64_t i = 0; i < n; i++) {
                const double want = ref[k].p[i];
                if (!(fabs(param[k][i] - want) <= 1e-6 + 1e-5 * fabs(want))) {
                    if (bad < 5)
                        fprintf(stderr, "step %lld tensor %d [%lld]: %.9g, HF %.9g\n", (long long)t, k, (long long)i,
                                param[k][i], want);
                    bad++;
                }
                if (o->beta1 >= 0)
                    bad += !(fabs(state[k][0][i] - ref[k].exp_avg[i]) <= 1e-9 + 1e-5 * fabs(ref[k].exp_avg[i]));
            }
            if (shapes[k][0] >= 2) {
                const int64_t C = shapes[k][shapes[k][0]], R = shapes[k][shapes[k][0] - 1];
                for (int64_t i = 0; i < n / C; i++)
                    bad += !(fabs(state[k][1][i] - ref[k].row[i]) <= 1e-12 + 1e-5 * ref[k].row[i]);
                for (int64_t i = 0; i < n / R; i++)
                    bad += !(fabs(state[k][2][i] - ref[k].col[i]) <= 1e-12 + 1e-5 * ref[k].col[i]);
            } else {
                for (int64_t i = 0; i < n; i++)
                    bad += !(fabs(state[k][1][i] - ref[k].exp_avg_sq[i]) <= 1e-12 + 1e-5 * ref[k].exp_avg_sq[i]);
            }
            free(g64[k]);
        }
    }
    for (int k = 0; k < N_TENSORS; k++) {
        free(param[k]), free(grad[k]);
        for (int s = 0; s < 3; s++) free(state[k][s]);
        free(ref[k].p), free(ref[k].exp_avg), free(ref[k].exp_avg_sq), free(ref[k].row), free(ref[k].col);
    }
    optim_close(&f);
    return bad;
}

static const double LRS[STEPS] = {1e-2, 2e-2, 3e-2, 3e-2, 1e-2};

static void test_trainer_defaults(void)
{
    /* --adafactor: lr from the scheduler, no parameter scale, no relative step, beta1 None. */
    const ref_opts o = {1e-30, 1e-3, 1.0, -0.8, -1, 0, 0, 0};
    CHECK(compare(NULL, &o, LRS, 0.0, 1.0) == 0);
}

static void test_class_defaults(void)
{
    const char *kv[] = {"scale_parameter", "true", "relative_step", "true", NULL};
    const ref_opts o = {1e-30, 1e-3, 1.0, -0.8, -1, 1, 1, 0};
    CHECK(compare(kv, &o, LRS, 0.0, 1.0) == 0);
}

static void test_warmup_init_beta1_decay(void)
{
    const char *kv[] = {"scale_parameter", "true", "relative_step", "true", "warmup_init", "true", "beta1", "0.9",
                        NULL};
    const ref_opts o = {1e-30, 1e-3, 1.0, -0.8, 0.9, 1, 1, 1};
    CHECK(compare(kv, &o, LRS, 0.1, 1.0) == 0);
}

static void test_clipping_and_options(void)
{
    /* A clip threshold the update's RMS exceeds, other eps and decay rate, gradient scaling. */
    const char *kv[] = {"clip_threshold", "0.05", "decay_rate", "-0.5", "eps1", "1e-20", "eps2", "1e-2",
                        "scale_parameter", "true", "beta1", "0.5", NULL};
    const ref_opts o = {1e-20, 1e-2, 0.05, -0.5, 0.5, 1, 0, 0};
    CHECK(compare(kv, &o, LRS, 0.01, 0.5) == 0);
}

static void test_errors(void)
{
    optim_fixture f;
    CHECK(optim_open(&f, "adafactor", NULL) == LOOM_OK);
    CHECK(optim_hparam_is(&f, "relative_step", 0.0));
    double beta1 = 0;
    CHECK(f.vt->get_hparam(f.opt, "beta1", &beta1) == LOOM_OK && isnan(beta1));
    /* Part of a tensor (a ZeRO partition) is refused, naming the tensor. */
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, s0[4] = {0}, s1[4] = {0}, s2[4] = {0};
    float *st[3] = {s0, s1, s2};
    loom_span s = optim_span("h.0.w", p, g, st, 3, 4, 0);
    s.tensor_numel = 8;
    loom_optimizer_step step = optim_step_args(1, 0.1, 1.0, NAN);
    CHECK(f.vt->step(f.opt, &s, 1, &step) == LOOM_E_UNSUPPORTED);
    CHECK(strstr(loom_error_message(), "whole tensors") && strstr(loom_error_message(), "h.0.w"));
    CHECK(p[0] == 1.0f);
    optim_close(&f);
    const char *warm[] = {"warmup_init", "true", NULL};
    CHECK(optim_open(&f, "adafactor", warm) != LOOM_OK);
    optim_close(&f);
    const char *clip[] = {"clip_threshold", "0", NULL};
    CHECK(optim_open(&f, "adafactor", clip) != LOOM_OK);
    optim_close(&f);
    const char *b1[] = {"beta1", "1.5", NULL};
    CHECK(optim_open(&f, "adafactor", b1) != LOOM_OK);
    optim_close(&f);
}

int main(void)
{
    test_trainer_defaults();
    test_class_defaults();
    test_warmup_init_beta1_decay();
    test_clipping_and_options();
    test_errors();
    return test_finish("test_adafactor");
}
