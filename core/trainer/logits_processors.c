/*
 * logits_processors.c - HF's MinLengthLogitsProcessor and NoRepeatNGramLogitsProcessor over one
 * row (logits_processors.h). Both only ban tokens, so the chosen token's score is its
 * log-probability either way.
 */
#include "logits_processors.h"

#include <math.h>

/* Every earlier n-gram of seq whose first n - 1 tokens are the last n - 1 bans its last token
 * (HF's _get_ngrams / _get_generated_ngrams: the start token counts; n = 1 bans every token
 * seen). */
static void no_repeat_ngram(const int32_t *seq, int64_t cur_len, int64_t n, double *scores, int64_t vocab)
{
    if (cur_len + 1 < n) return;
    const int32_t *tail = seq + cur_len - (n - 1);
    for (int64_t i = 0; i + n <= cur_len; i++) {
        int64_t j = 0;
        while (j < n - 1 && seq[i + j] == tail[j])
            j++;
        const int32_t banned = seq[i + n - 1];
        if (j == n - 1 && banned >= 0 && banned < vocab) scores[banned] = -INFINITY;
    }
}

void loom_logits_process(const loom_beam_config *c, const int32_t *seq, int64_t cur_len, double *scores, int64_t vocab)
{
    if (cur_len < c->min_length && c->eos_token_id >= 0 && c->eos_token_id < vocab) scores[c->eos_token_id] = -INFINITY;
    if (c->no_repeat_ngram_size > 0) no_repeat_ngram(seq, cur_len, c->no_repeat_ngram_size, scores, vocab);
}
