/*
 * sampler_sequential.h - --train_sampling_strategy sequential: HF's SequentialSampler, the
 * examples in the order of the file, every epoch the same.
 *
 * On one rank that is 0, 1, ..., n-1 in batches, the last one short unless drop_last. On
 * several, HF's training loader goes through accelerate, whose BatchSamplerShard (split_batches
 * false, even_batches true: the only values loom takes) hands out whole batches of the
 * sequential order in turn: rank r reads batches r, r + world, ... With drop_last, batches past
 * the last full round of `world` batches are dropped; without, the short last batch and the
 * missing batches of the last round are filled with the first examples again, so every rank
 * reads the same number of full batches.
 */
#ifndef LOOM_CORE_SAMPLER_SEQUENTIAL_H
#define LOOM_CORE_SAMPLER_SEQUENTIAL_H

#include <stdint.h>

#include "dataset.h"

/* Examples this rank reads per epoch. */
int64_t loom_sequential_per_rank(const loom_dataloader *dl);

/* This rank's order: order[0..loom_sequential_per_rank(dl)). */
void loom_sequential_order(const loom_dataloader *dl, int64_t *order);

#endif
