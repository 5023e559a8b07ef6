/*
 * sampler_length.h - training orders that batch examples of similar length together
 * (docs/seq2seq.md#samplers): HF's LengthGroupedSampler (--group_by_length) and the seq2seq
 * examples' SortishSampler (--sortish_sampler), with their distributed variants.
 *
 * Like the random order of dataset.c, each order is a pure function of (seed, epoch, rank,
 * world size, batch size, the lengths), so a resumed run recomputes the order of its epoch
 * instead of replaying the loader, and every rank knows its own share without talking.
 */
#ifndef LOOM_CORE_SAMPLER_LENGTH_H
#define LOOM_CORE_SAMPLER_LENGTH_H

#include <stdint.h>

#include "dataset.h"

/* Shuffle a[0..n) in place (Fisher-Yates over splitmix64 from *state): the one shuffle of every
 * order, so the random sampler's permutations stay what they were. */
void loom_shuffle(int64_t *a, int64_t n, uint64_t *state);

/* The state the shuffle of (seed, epoch) starts from. */
uint64_t loom_order_state(uint64_t seed, int64_t epoch);

/* This rank's order of `epoch` for dl->sampler (LOOM_SAMPLER_SORTISH or
 * LOOM_SAMPLER_GROUP_BY_LENGTH): order[0..per_rank), per_rank = ceil(n / world). The length of
 * an example is its source length (pair files) or its fixed length (other data). */
loom_status loom_length_order(const loom_dataloader *dl, int64_t epoch, int64_t *order, int64_t per_rank);

#endif
