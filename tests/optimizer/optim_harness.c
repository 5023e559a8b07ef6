/* optim_harness.c - see optim_harness.h. */
#include "optim_harness.h"
#include "plugin_harness.h"

#include "error.h"
#include "host.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

loom_status optim_open(optim_fixture *f, const char *name, const char *const *kv)
{
    memset(f, 0, sizeof *f);
    loom_status st = harness_load(name, LOOM_KIND_OPTIMIZER, kv, &f->plugin, &f->config, &f->host);
    if (st) return st;
    f->vt = f->plugin->desc->vtable;
    st = f->vt->create(f->host, loom_host_api_table(), f->config, &f->opt);
    if (st)
        fprintf(stderr, "create %s: %s\n", name, loom_error_message());
    return st;
}

void optim_close(optim_fixture *f)
{
    if (f->vt && f->opt)
        f->vt->destroy(f->opt);
    harness_release(f->config, f->host);
    memset(f, 0, sizeof *f);
}

loom_span optim_span(const char *name, float *param, const float *grad, float *const *state,
                     uint32_t slots, int64_t numel, double weight_decay)
{
    loom_span s = {
        LOOM_HEADER_INIT(loom_span),
        .name = name,
        .tensor_numel = numel,
        .offset = 0,
        .numel = numel,
        .ndim = 1,
        .flags = weight_decay == 0 ? LOOM_SPAN_NO_DECAY : 0,
        .shape = {numel},
        .param = param,
        .grad = grad,
        .weight_decay = weight_decay,
        .group = weight_decay == 0 ? 1 : 0,
    };
    for (uint32_t k = 0; k < slots; k++)
        s.state[k] = state[k];
    return s;
}

loom_optimizer_step optim_step_args(int64_t t, double lr, double grad_scale, double momentum)
{
    return (loom_optimizer_step){
        LOOM_HEADER_INIT(loom_optimizer_step),
        .step = t,
        .lr = lr,
        .grad_scale = grad_scale,
        .momentum = momentum,
    };
}

int optim_hparam_is(const optim_fixture *f, const char *key, double want)
{
    double got = NAN, other = NAN;
    loom_status st = f->vt->get_hparam(f->opt, key, &got);
    loom_status unknown = f->vt->get_hparam(f->opt, "no_such_hparam", &other);
    if (st == LOOM_OK && got == want && unknown == LOOM_E_NOT_FOUND)
        return 1;
    fprintf(stderr, "get_hparam(%s): status %d, %.17g (want %.17g); unknown name: status %d\n",
            key, (int)st, got, want, (int)unknown);
    return 0;
}

float optim_test_grad(int64_t i, int64_t t)
{
    /* Mixed signs and magnitudes, different at every step. */
    return (float)(0.4 * sin(0.9 * (double)i + 1.7 * (double)t) + 0.05 * (double)(i % 3) - 0.02);
}

float optim_test_param(int64_t i)
{
    return (float)(0.5 * cos(0.3 * (double)i) + 0.1);
}

static int close_enough(double got, double want, double rtol, double atol)
{
    return fabs(got - want) <= atol + rtol * fabs(want);
}

int optim_compare(const optim_fixture *f, const optim_compare_args *a)
{
    uint32_t slots = f->vt->state_slots;
    int64_t n = a->n_decay + a->n_nodecay;
    float *param = malloc((size_t)n * sizeof *param);
    float *grad = calloc((size_t)n, sizeof *grad);
    float *state = calloc((size_t)n * (slots ? slots : 1), sizeof *state);
    double *rp = malloc((size_t)n * sizeof *rp);
    double *rs = calloc((size_t)n * LOOM_MAX_STATE_SLOTS, sizeof *rs);
    size_t stride = sizeof(loom_span) + a->span_pad;
    unsigned char *span_mem = calloc(2, stride);
    int mismatches = 0;
    if (!param || !grad || !state || !rp || !rs || !span_mem) {
        mismatches = -1;
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        param[i] = optim_test_param(i);
        rp[i] = param[i];
    }
    /* Host layout: slot k of the whole owned range is one array; a span points into it. */
    const int64_t first[2] = {0, a->n_decay}, count[2] = {a->n_decay, a->n_nodecay};
    const char *names[2] = {"w", "b"};
    const double decay[2] = {a->wd, 0.0};
    for (int s = 0; s < 2; s++) {
        float *st[LOOM_MAX_STATE_SLOTS] = {0};
        for (uint32_t k = 0; k < slots; k++)
            st[k] = state + (size_t)k * (size_t)n + (size_t)first[s];
        loom_span span = optim_span(names[s], param + first[s], grad + first[s], st, slots,
                                    count[s], decay[s]);
        span.struct_size = (uint32_t)stride;
        memcpy(span_mem + (size_t)s * stride, &span, sizeof span);
    }
    for (size_t j = 0; j < a->n_steps; j++) {
        const loom_optimizer_step *step = &a->steps[j];
        for (int64_t i = 0; i < n; i++)
            grad[i] = optim_test_grad(i, step->step);
        loom_status st = f->vt->step(f->opt, (const loom_span *)span_mem, 2, step);
        if (st) {
            fprintf(stderr, "step %lld: status %d: %s\n", (long long)step->step, (int)st,
                    loom_error_message());
            mismatches = -1;
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            double g = (double)grad[i] * step->grad_scale;
            double *ri = rs + (size_t)i * LOOM_MAX_STATE_SLOTS;
            a->ref(a->hparams, step, i < a->n_decay ? a->wd : 0.0, g, &rp[i], ri);
            int bad = !close_enough(param[i], rp[i], a->rtol, a->atol);
            for (uint32_t k = 0; k < slots; k++)
                bad |= !close_enough(state[(size_t)k * (size_t)n + (size_t)i], ri[k], a->rtol,
                                     a->atol);
            if (bad && mismatches++ < 10) {
                fprintf(stderr, "step %lld element %lld: param %.9g want %.9g", (long long)step->step,
                        (long long)i, (double)param[i], rp[i]);
                for (uint32_t k = 0; k < slots; k++)
                    fprintf(stderr, "; state%u %.9g want %.9g", k,
                            (double)state[(size_t)k * (size_t)n + (size_t)i], ri[k]);
                fprintf(stderr, "\n");
            }
        }
    }
done:
    free(param);
    free(grad);
    free(state);
    free(rp);
    free(rs);
    free(span_mem);
    return mismatches;
}

#define AGREE_SPANS 41

int optim_threads_agree(const char *name, const char *const *kv)
{
    /* Sizes that put the threads' cuts inside spans, on span edges and around empty spans. */
    int64_t numel[AGREE_SPANS], total = 0;
    for (int i = 0; i < AGREE_SPANS; i++) {
        numel[i] = i % 6 == 0 ? 0 : (i * 7919) % 6007 + 1;
        if (i == 20) numel[i] = 40000;
        total += numel[i];
    }
    /* Runs 4 and 5 lend the step the host's CPU kernel table (ABI 1.5 step.kernels): an Adam
     * rule then runs its adam_update; run 5's table is cut to its 1.4 size, so the rule must
     * see no such member and run its own loop. All must agree. */
    const int counts[6] = {1, 2, 3, 7, 3, 3};
    loom_kernels_api old_table;
    const size_t bytes = (size_t)total * sizeof(float);
    float *first = malloc(bytes * (LOOM_MAX_STATE_SLOTS + 1)), *mine = malloc(bytes * (LOOM_MAX_STATE_SLOTS + 1));
    float *grad = malloc(bytes);
    int agree = first && mine && grad;
    for (int c = 0; c < 6 && agree; c++) {
        loom_host_set_threads(counts[c]);
        optim_fixture f;
        float *buf = c == 0 ? first : mine;
        if (optim_open(&f, name, kv) != LOOM_OK) {
            agree = 0;
            break;
        }
        uint32_t slots = f.vt->state_slots;
        memset(buf, 0, bytes * (slots + 1));
        loom_span spans[AGREE_SPANS];
        int64_t off = 0;
        for (int i = 0; i < AGREE_SPANS; i++) {
            float *st[LOOM_MAX_STATE_SLOTS] = {0};
            for (uint32_t k = 0; k < slots && numel[i]; k++)
                st[k] = buf + (size_t)(k + 1) * (size_t)total + (size_t)off;
            spans[i] = optim_span("s", numel[i] ? buf + off : NULL, numel[i] ? grad + off : NULL, st, slots,
                                  numel[i], i % 2 ? 0.0 : 0.01);
            off += numel[i];
        }
        for (int64_t i = 0; i < total; i++)
            buf[i] = optim_test_param(i);
        for (int64_t t = 1; t <= 3 && agree; t++) {
            for (int64_t i = 0; i < total; i++)
                grad[i] = optim_test_grad(i, t);
            loom_optimizer_step step = optim_step_args(t, 1e-2, t == 2 ? 0.5 : 1.0, NAN);
            if (c >= 4) {
                const loom_kernels_api *cpu = loom_host_api_table()->service(f.host, LOOM_KERNELS_CPU_SERVICE, 0);
                old_table = *cpu;
                old_table.struct_size = (uint32_t)offsetof(loom_kernels_api, adam_update);
                step.kernels = c == 4 ? cpu : &old_table;
            }
            if (f.vt->step(f.opt, spans, AGREE_SPANS, &step) != LOOM_OK) {
                fprintf(stderr, "%s, %d threads: step %lld: %s\n", name, counts[c], (long long)t, loom_error_message());
                agree = 0;
            }
        }
        if (c == 0 && agree && buf[total / 2] == optim_test_param(total / 2)) {
            fprintf(stderr, "%s: the parameters did not move\n", name);
            agree = 0;
        }
        for (int64_t i = 0; c > 0 && agree && i < total * (int64_t)(slots + 1); i++)
            if (memcmp(&first[i], &mine[i], sizeof(float))) {
                fprintf(stderr, "%s, %d threads%s: element %lld of array %lld is %.9g, with 1 thread %.9g\n", name,
                        counts[c], c == 4 ? ", the host's kernel table" : c == 5 ? ", a 1.4 kernel table" : "",
                        (long long)(i % total), (long long)(i / total), (double)mine[i], (double)first[i]);
                agree = 0;
            }
        optim_close(&f);
    }
    loom_host_set_threads(0);
    free(first);
    free(mine);
    free(grad);
    return agree;
}
