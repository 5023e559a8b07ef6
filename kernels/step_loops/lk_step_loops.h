/*
 * lk_step_loops.h - the CPU loops of the optimizer step's kernels (ABI 1.5 adam_update,
 * scale_check), header-only so that ONE source serves two users: the CPU kernel table
 * (kernels/cpu/optim_step.c, built into libloom) and the optimizer and precision plugins,
 * which run the same loops themselves when the host's table lacks those members (an ABI 1.4
 * host). Plugins link nothing of the core; this folder is on their include path and holds
 * nothing but these inline functions. docs/architecture.md#device-step.
 *
 * Compiled as C11 without contraction (CMAKE_C_EXTENSIONS OFF: GCC's -ffp-contract=off), so
 * both copies produce the same bits.
 */
#ifndef LOOM_LK_STEP_LOOPS_H
#define LOOM_LK_STEP_LOOPS_H

#include <loom/kernels.h>
#include <loom/optimizer.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* Above this many elements (a whole step's, for lk_for_spans) the loop is spread over OpenMP
 * threads; below it the fork/join costs more than the update. */
#define LK_STEP_PARALLEL_MIN ((int64_t)1 << 15)
/* Above this many elements scale_check is spread over threads (it runs at memory speed). */
#define LK_SCALE_PARALLEL_MIN ((int64_t)1 << 16)

/* Spans come as an array built by the host; a newer host may append members, so the stride is
 * the host's struct_size, not our sizeof. */
static inline const loom_span *lk_span_at(const loom_span *spans, size_t i)
{
    return (const loom_span *)((const char *)spans + i * (size_t)spans->struct_size);
}

/* Elements [begin, end) of span s, with the rule's per-step coefficients. */
typedef void (*lk_piece_fn)(const loom_span *s, int64_t begin, int64_t end, const void *coef);

/* Where thread t of nt starts in `total` elements: equal shares, cut on multiples of 16 floats
 * (a 64-byte line for aligned arrays) so that neighbours rarely write the same cache line. */
static inline int64_t lk_share_start(int64_t total, int t, int nt)
{
    return t >= nt ? total : (total / 16) * t / nt * 16;
}

/* Runs fn over every element of every span in ONE parallel region: the spans' elements, end
 * to end, are cut into `threads` equal contiguous shares, so a thread may finish one span and
 * start the next, and a step of many small spans still uses every thread for one fork/join
 * (one region per span paid a fork/join for each, and ran every span below
 * LK_STEP_PARALLEL_MIN on one thread). Each element is updated once, by the same arithmetic
 * wherever the cuts fall, so the results do not depend on the thread count.
 * docs/benchmarks.md#adamw-bandwidth. */
static inline void lk_for_spans(const loom_span *spans, size_t n_spans, int threads, lk_piece_fn fn, const void *coef)
{
    int64_t total = 0;
    for (size_t i = 0; i < n_spans; i++)
        total += lk_span_at(spans, i)->numel;
#pragma omp parallel num_threads(threads) if (threads > 1 && total > LK_STEP_PARALLEL_MIN)
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t lo = lk_share_start(total, t, nt), hi = lk_share_start(total, t + 1, nt);
        int64_t off = 0;
        for (size_t i = 0; i < n_spans && off < hi; i++) {
            const loom_span *s = lk_span_at(spans, i);
            const int64_t b = lo > off ? lo - off : 0, e = hi - off < s->numel ? hi - off : s->numel;
            if (b < e)
                fn(s, b, e, coef);
            off += s->numel;
        }
    }
}

/* ---- adam_update: one loop per rule, each the plugin's update line for line ---- */

/* torch.optim.AdamW (plugins/optimizer/adamw.c): decoupled decay before the update. */
static inline void lk_adamw_piece(const loom_span *s, int64_t begin, int64_t end, const loom_adam_args *a)
{
    const loom_adam_args c = *a;
    const float decay = (float)(1.0 - c.lr * s->weight_decay);
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin, *restrict v = s->state[1] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.grad_scale;
        float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - c.step_size * (mi / (sqrtf(vi) / c.bias2_sqrt + c.eps));
    }
}

/* torch.optim.Adam (plugins/optimizer/adam.c): weight decay as L2 through the moments. */
static inline void lk_adam_l2_piece(const loom_span *s, int64_t begin, int64_t end, const loom_adam_args *a)
{
    const loom_adam_args c = *a;
    const float weight_decay = (float)s->weight_decay;
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin, *restrict v = s->state[1] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.grad_scale + weight_decay * p[i];
        float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= c.step_size * (mi / (sqrtf(vi) / c.bias2_sqrt + c.eps));
    }
}

/* transformers.AdamW v4.2 (plugins/optimizer/adamw_hf.c): eps outside the bias correction,
 * decay after the update on the new p. */
static inline void lk_adamw_hf_piece(const loom_span *s, int64_t begin, int64_t end, const loom_adam_args *a)
{
    const loom_adam_args c = *a;
    const float decay_rate = (float)(-c.lr * s->weight_decay);
    float *restrict p = s->param + begin, *restrict m = s->state[0] + begin, *restrict v = s->state[1] + begin;
    const float *restrict g = s->grad + begin;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.grad_scale;
        float mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        float vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] - c.step_size * (mi / (sqrtf(vi) + c.eps));
        /* HF writes p.add_(p, alpha=-lr*wd): p + (-lr*wd)*p, kept in that form. */
        p[i] = pi + decay_rate * pi;
    }
}

/* An lk_piece_fn: coef is the loom_adam_args. */
static inline void lk_adam_piece(const loom_span *s, int64_t begin, int64_t end, const void *coef)
{
    const loom_adam_args *a = coef;
    switch (a->rule) {
    case LOOM_ADAM_RULE_ADAMW: lk_adamw_piece(s, begin, end, a); break;
    case LOOM_ADAM_RULE_ADAM: lk_adam_l2_piece(s, begin, end, a); break;
    case LOOM_ADAM_RULE_HF: lk_adamw_hf_piece(s, begin, end, a); break;
    default: break;
    }
}

/* The whole adam_update on `threads` threads. */
static inline void lk_adam_spans(const loom_span *spans, size_t n_spans, const loom_adam_args *args, int threads)
{
    lk_for_spans(spans, n_spans, threads, lk_adam_piece, args);
}

/* ---- scale_check ---- */

/* x *= scale and report any inf/NaN in the result, in one pass (1: found). The test reads the
 * exponent bits, so it vectorises and still holds under -ffinite-math-only. */
static inline int lk_scale_check_loop(float *restrict x, int64_t n, float scale, int threads)
{
    uint32_t bad = 0;
#pragma omp parallel for simd reduction(| : bad) if (parallel : n > LK_SCALE_PARALLEL_MIN) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * scale;
        x[i] = v;
        uint32_t u;
        memcpy(&u, &v, sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

#endif
