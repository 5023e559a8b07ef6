/*
 * beam_search.h - HF's greedy search and beam search (transformers v4.2's generate() with
 * BeamSearchScorer and BeamHypotheses) over any decoder that can be stepped one token per row
 * and have its cache rows reordered (docs/seq2seq.md#generation).
 *
 * The decoder is two callbacks, so the search can run over a model (loom_trainer_generate_batch,
 * the model's ABI 1.4 members) or over a table of scores in a test.
 */
#ifndef LOOM_CORE_BEAM_SEARCH_H
#define LOOM_CORE_BEAM_SEARCH_H

#include <stdint.h>

#include "trainer.h"

typedef struct loom_beam_config {
    int64_t num_beams;     /* 1: greedy search                                              */
    int64_t max_length;    /* HF's max_length: counts the decoder start token, so at most
                              max_length - 1 tokens are generated (>= 2)                    */
    double length_penalty; /* a finished hypothesis scores sum_logprobs / len^length_penalty,
                              len counting the start token and not the eos                  */
    int early_stopping;    /* 1: an example is done once it has num_beams hypotheses; 0: once
                              no running beam can beat the worst of them (HF's is_done)     */
    int64_t min_length;    /* HF's min_length: eos is banned while the sequence, the start
                              token included, is shorter (0 or 1: off; min_new_tokens N
                              arrives as N + 1, as HF's generate() sets it)                 */
    int64_t no_repeat_ngram_size; /* > 0: a token that would complete an n-gram already in
                              the row's sequence (start token included) is banned           */
    int32_t decoder_start_token_id;
    int32_t eos_token_id; /* -1: none                                                      */
    int32_t pad_token_id; /* fills the rows of finished examples                           */
} loom_beam_config;

/* The decoder: step feeds tokens[rows] (one per row, rows = batch * num_beams) at the next
 * position and writes logits [rows, vocab]; reorder makes row r continue from row rows[r]
 * (always a row of the same example). NULL reorder: the decoder keeps no per-row state. */
typedef struct loom_decoder_fns {
    void *context;
    loom_status (*step)(void *context, const int32_t *tokens, float *logits);
    loom_status (*reorder)(void *context, const int32_t *rows);
} loom_decoder_fns;

/* Generate for `batch` examples. out [batch, max_length - 1]: the generated tokens without the
 * start token (the eos included, as HF's decoded sequences have it), padded with pad_token_id;
 * lengths[b] the tokens of row b before the padding; scores (may be NULL) [batch]: the chosen
 * hypothesis's score (beam search) or its summed log-probability (greedy). */
loom_status loom_beam_search(const loom_beam_config *config, int64_t batch, int64_t vocab,
                             const loom_decoder_fns *decoder, int32_t *out, int64_t *lengths, double *scores);

/* The model's start, eos and pad ids; LOOM_E_UNSUPPORTED when it cannot generate from a
 * source (no ABI 1.4 encode / decode_rows / reorder_cache). */
loom_status loom_trainer_generation_ids(loom_trainer *t, loom_generation_ids *ids);

/* The same over the trainer's model (its ABI 1.4 encode / decode_rows / reorder_cache):
 * encode sources (a batch of the eval or test loader), then search. The ids (start, eos, pad)
 * come from the model's generation_ids; config's are ignored. */
loom_status loom_trainer_generate_batch(loom_trainer *t, const loom_batch *sources, const loom_beam_config *config,
                                        int32_t *out, int64_t *lengths);

/* The beam configuration of the run's arguments for evaluate/predict: --generation_num_beams
 * (or --num_beams), --generation_max_length (or --max_length), --length_penalty,
 * --early_stopping; HF's defaults otherwise (1 beam, max_length 20; generation_config.h adds
 * --generation_config's or the model folder's). */
void loom_beam_config_from_args(const loom_args *args, loom_beam_config *config);

#endif
