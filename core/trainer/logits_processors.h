/*
 * logits_processors.h - the logits processors of HF's generate() that loom applies
 * (docs/seq2seq.md#generation): MinLengthLogitsProcessor (min_length, and min_new_tokens as
 * min_length = min_new_tokens + 1) and NoRepeatNGramLogitsProcessor (no_repeat_ngram_size).
 */
#ifndef LOOM_CORE_LOGITS_PROCESSORS_H
#define LOOM_CORE_LOGITS_PROCESSORS_H

#include "beam_search.h"

/* Whether any processor is on: the search asks once, so a run without them pays one branch
 * per step. */
static inline int loom_logits_processors_on(const loom_beam_config *c)
{
    return c->min_length > 1 || c->no_repeat_ngram_size > 0;
}

/* Ban (set to -inf) in scores[vocab] what the processors forbid after seq[cur_len], the row's
 * decoder input so far, start token first (HF's input_ids). Beam search passes log_softmax
 * scores, greedy search the raw logits, as HF's do. */
void loom_logits_process(const loom_beam_config *c, const int32_t *seq, int64_t cur_len, double *scores, int64_t vocab);

#endif
