/*
 * zero_whole.h - ZeRO's partition for optimizers that need whole tensors (Adafactor:
 * LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS), docs/semantics/deepspeed.md#zero-stages. Partition
 * boundaries fall on tensor boundaries only: each rank owns a contiguous run of whole tensors,
 * in flat order, so the partitions stay contiguous ranges of the flat buffer (the collectives
 * and checkpoints work on them as on the even cut) and the optimizer's spans are whole tensors.
 *
 * The runs are balanced by element count: the smallest capacity C for which a greedy fill (each
 * rank takes tensors in order while its run stays <= C, then the next rank starts) places every
 * tensor in `world` ranks, found by bisection; then that fill. So the largest partition, which
 * sizes every rank's buffers and collectives, is as small as contiguous runs of whole tensors
 * allow, and never smaller than the largest tensor. A rank may own nothing (fewer tensors than
 * ranks, or one tensor dominating): its range is empty, at the end of the previous one.
 * Header-only, plain C: each plugin is its own .so, and the unit test includes it directly.
 */
#ifndef LOOM_PLUGINS_ZERO_WHOLE_H
#define LOOM_PLUGINS_ZERO_WHOLE_H

#include <stddef.h>
#include <stdint.h>

#include <loom/sharding.h>

/* The greedy fill at capacity C: ranks used (world + 1 when the tensors do not fit), with the
 * ranges written when `ranges` is not NULL (every one of the world ranks, trailing ones empty). */
static inline int32_t zero_whole_fill(const int64_t *offsets, size_t n_tensors, int32_t world, int64_t C,
                                      loom_range *ranges)
{
    int32_t r = 0;
    int64_t begin = offsets[0];
    for (size_t i = 0; i < n_tensors; i++) {
        const int64_t end = offsets[i + 1];
        if (end - begin > C && offsets[i] > begin) {
            /* Tensor i starts the next rank's run. */
            if (ranges && r < world) ranges[r] = (loom_range){begin, offsets[i]};
            if (++r >= world) return world + 1;
            begin = offsets[i];
        }
    }
    if (ranges) {
        ranges[r] = (loom_range){begin, offsets[n_tensors]};
        for (int32_t k = r + 1; k < world; k++) ranges[k] = (loom_range){offsets[n_tensors], offsets[n_tensors]};
    }
    return r + 1;
}

/* Fill ranges[0..world) (world >= 1) from the n_tensors + 1 flat offsets and return the largest
 * partition's length (0 for an empty model). */
static inline int64_t zero_whole_partition(const int64_t *offsets, size_t n_tensors, int32_t world,
                                           loom_range *ranges)
{
    int64_t lo = 0, hi = offsets[n_tensors] - offsets[0];
    for (size_t i = 0; i < n_tensors; i++)
        if (offsets[i + 1] - offsets[i] > lo) lo = offsets[i + 1] - offsets[i];
    /* The smallest C in [largest tensor, total] that fits: fits(total) always holds. */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (zero_whole_fill(offsets, n_tensors, world, mid, NULL) <= world) hi = mid;
        else lo = mid + 1;
    }
    zero_whole_fill(offsets, n_tensors, world, lo, ranges);
    int64_t largest = 0;
    for (int32_t r = 0; r < world; r++)
        if (ranges[r].end - ranges[r].begin > largest) largest = ranges[r].end - ranges[r].begin;
    return largest;
}

#endif
