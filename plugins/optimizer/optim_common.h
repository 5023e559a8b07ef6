/*
 * optim_common.h - what every optimizer plugin of this folder does the same way: read typed
 * config values (through loom/plugin.h), validate a step, walk the host's span array.
 *
 * Header-only (static functions) because each optimizer is its own MODULE and plugins never
 * link anything of the core; every .so gets its own copy.
 */
#ifndef LOOM_PLUGINS_OPTIM_COMMON_H
#define LOOM_PLUGINS_OPTIM_COMMON_H

#include <loom/optimizer.h>
#include <loom/plugin.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>

/* Above this many elements (a span's, or a whole step's for optim_for_spans) the loop is spread
 * over OpenMP threads; below it the fork/join costs more than the update. */
#define OPTIM_PARALLEL_MIN ((int64_t)1 << 15)

/* Checks shared by every update rule. The bias corrections divide by 1 - beta^t, so t must
 * start at 1; a non-finite lr or clip coefficient would silently turn every weight into NaN. */
static inline loom_status optim_check_step(loom_host *host, const loom_host_api *api,
                                           const loom_span *spans, size_t n_spans,
                                           const loom_optimizer_step *step)
{
    if (!step || !LOOM_HAS_FIELD(step, loom_optimizer_step, momentum))
        return api->fail(host, LOOM_E_ABI, "step descriptor missing or too small");
    if (step->step < 1)
        return api->fail(host, LOOM_E_INVALID, "step counter %lld: the first update is step 1",
                         (long long)step->step);
    if (!isfinite(step->lr) || step->lr < 0)
        return api->fail(host, LOOM_E_INVALID, "learning rate %g is not a finite value >= 0",
                         step->lr);
    if (!isfinite(step->grad_scale))
        return api->fail(host, LOOM_E_INVALID, "grad_scale %g is not finite", step->grad_scale);
    if (n_spans > 0 && (!spans || spans->struct_size < sizeof(loom_span)))
        return api->fail(host, LOOM_E_ABI, "span array missing or spans too small");
    return LOOM_OK;
}

/* Spans come as an array built by the host; a newer host may append members, so the stride is
 * the host's struct_size, not our sizeof. */
static inline const loom_span *optim_span_at(const loom_span *spans, size_t i)
{
    return (const loom_span *)((const char *)spans + i * (size_t)spans->struct_size);
}

/* Every state slot the rule uses must be there, or the loop would write through NULL. */
static inline loom_status optim_check_span(loom_host *host, const loom_host_api *api,
                                           const loom_span *s, uint32_t slots)
{
    if (s->numel < 0)
        return api->fail(host, LOOM_E_INVALID, "span of '%s': negative numel", s->name);
    if (s->numel == 0)
        return LOOM_OK;
    if (!s->param || !s->grad)
        return api->fail(host, LOOM_E_INVALID, "span of '%s': no param or grad", s->name);
    for (uint32_t k = 0; k < slots; k++)
        if (!s->state[k])
            return api->fail(host, LOOM_E_INVALID, "span of '%s': state slot %u missing",
                             s->name, k);
    if (!isfinite(s->weight_decay) || s->weight_decay < 0)
        return api->fail(host, LOOM_E_INVALID, "span of '%s': weight_decay %g", s->name,
                         s->weight_decay);
    return LOOM_OK;
}

/* All spans are checked before any is updated, so a failed step leaves every value as it was. */
static inline loom_status optim_check_spans(loom_host *host, const loom_host_api *api,
                                            const loom_span *spans, size_t n_spans,
                                            uint32_t slots)
{
    loom_status st = LOOM_OK;
    for (size_t i = 0; i < n_spans && !st; i++)
        st = optim_check_span(host, api, optim_span_at(spans, i), slots);
    return st;
}

/* The host's thread budget for compute (several ranks may share a machine); at least 1. */
static inline int optim_threads(loom_host *host, const loom_host_api *api)
{
    int32_t n = api->num_threads ? api->num_threads(host) : 1;
    return n > 0 ? (int)n : 1;
}

/* Elements [begin, end) of span s, with the rule's per-step coefficients. */
typedef void (*optim_piece_fn)(const loom_span *s, int64_t begin, int64_t end, const void *coef);

/* Where thread t of nt starts in `total` elements: equal shares, cut on multiples of 16 floats
 * (a 64-byte line for aligned arrays) so that neighbours rarely write the same cache line. */
static inline int64_t optim_share_start(int64_t total, int t, int nt)
{
    return t >= nt ? total : (total / 16) * t / nt * 16;
}

/* Runs fn over every element of every span in ONE parallel region: the spans' elements, end
 * to end, are cut into `threads` equal contiguous shares, so a thread may finish one span and
 * start the next, and a step of many small spans still uses every thread for one fork/join
 * (one region per span paid a fork/join for each, and ran every span below
 * OPTIM_PARALLEL_MIN on one thread). Each element is updated once, by the same arithmetic
 * wherever the cuts fall, so the results do not depend on the thread count.
 * docs/benchmarks.md#adamw-bandwidth. */
static inline void optim_for_spans(const loom_span *spans, size_t n_spans, int threads,
                                   optim_piece_fn fn, const void *coef)
{
    int64_t total = 0;
    for (size_t i = 0; i < n_spans; i++)
        total += optim_span_at(spans, i)->numel;
#pragma omp parallel num_threads(threads) if (threads > 1 && total > OPTIM_PARALLEL_MIN)
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t lo = optim_share_start(total, t, nt), hi = optim_share_start(total, t + 1, nt);
        int64_t off = 0;
        for (size_t i = 0; i < n_spans && off < hi; i++) {
            const loom_span *s = optim_span_at(spans, i);
            const int64_t b = lo > off ? lo - off : 0, e = hi - off < s->numel ? hi - off : s->numel;
            if (b < e)
                fn(s, b, e, coef);
            off += s->numel;
        }
    }
}

/* The scheduler's momentum (NaN = none) overrides the configured one for this step only. */
static inline double optim_momentum(const loom_optimizer_step *step, double own)
{
    return isnan(step->momentum) ? own : step->momentum;
}

#endif
