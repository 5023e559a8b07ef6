/*
 * optim_step.c - the optimizer step's element-wise kernels (ABI 1.5, abi/loom/kernels.h):
 * adam_update and scale_check run the loops the plugins share with this table
 * (kernels/step_loops/lk_step_loops.h); sum_squares is the trainer's gradient-norm pass
 * (docs/architecture.md#canonical-order), which moved here from core/trainer/trainer_loop.c.
 */
#include "lk_cpu.h"

#include <omp.h>

#include "step_loops/lk_step_loops.h"

void lk_adam_update(const struct loom_span *spans, size_t n_spans, const struct loom_adam_args *args)
{
    lk_adam_spans(spans, n_spans, args, omp_get_max_threads());
}

void lk_scale_check(float *x, int64_t n, float scale, int32_t *found_inf)
{
    if (n <= 0) return;
    int bad = lk_scale_check_loop(x, n, scale, omp_get_max_threads());
    if (bad && found_inf) *found_inf = 1;
}

/* One thread per segment, segments dealt out dynamically (their lengths differ: blocks of
 * 16384 cut at tensor boundaries); within a segment the `omp simd` reduction's order is fixed
 * by the compiled code, so a segment's sum never depends on the thread count. */
void lk_sum_squares(double *sums, const float *x, const int64_t *bounds, int64_t n_segments)
{
#pragma omp parallel for schedule(dynamic, 8) if (n_segments > 4)
    for (int64_t w = 0; w < n_segments; w++) {
        const float *s = x + bounds[2 * w];
        const int64_t n = bounds[2 * w + 1] - bounds[2 * w];
        double partial = 0.0;
#pragma omp simd reduction(+ : partial)
        for (int64_t i = 0; i < n; i++) partial += (double)s[i] * (double)s[i];
        sums[w] = partial;
    }
}
