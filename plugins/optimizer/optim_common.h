/*
 * optim_common.h - what every optimizer plugin of this folder does the same way: read typed
 * config values (through loom/plugin.h), validate a step, walk the host's span array
 * (lk_for_spans, kernels/step_loops/lk_step_loops.h).
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

/* lk_span_at, lk_for_spans, LK_STEP_PARALLEL_MIN and the Adam family's loops: shared with the
 * CPU kernel table, which runs the same loops (kernels/step_loops). */
#include "lk_step_loops.h"

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
        st = optim_check_span(host, api, lk_span_at(spans, i), slots);
    return st;
}

/* The host's thread budget for compute (several ranks may share a machine); at least 1. */
static inline int optim_threads(loom_host *host, const loom_host_api *api)
{
    int32_t n = api->num_threads ? api->num_threads(host) : 1;
    return n > 0 ? (int)n : 1;
}

/* The scheduler's momentum (NaN = none) overrides the configured one for this step only. */
static inline double optim_momentum(const loom_optimizer_step *step, double own)
{
    return isnan(step->momentum) ? own : step->momentum;
}

#endif
