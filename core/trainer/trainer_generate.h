/*
 * trainer_generate.h - --predict_with_generate inside an evaluation or prediction pass
 * (docs/seq2seq.md#generation): each batch's sources are generated from (beam search over the
 * model's ABI 1.4 members), the sequences and the labels decoded to text, and the text
 * metrics (metrics_text.h) summed; at the end every rank's sums are added up (each example is
 * on one rank only: the pass's loader is unpadded).
 */
#ifndef LOOM_CORE_TRAINER_GENERATE_H
#define LOOM_CORE_TRAINER_GENERATE_H

#include "beam_search.h"
#include "metrics_text.h"
#include "trainer.h"

typedef struct loom_generation_pass {
    loom_beam_config config;
    loom_generation_ids ids;
    loom_text_scores scores;
    int32_t *out; /* [rows, max_length - 1] of one batch */
    int64_t *lengths;
    int64_t rows;
} loom_generation_pass;

/* Check the model can generate and size the buffers for batches of `rows` examples. */
loom_status loom_generation_pass_init(loom_trainer *t, loom_generation_pass *g, int64_t rows);
/* The beam search's settings (arguments, then the model folder's generation config) and the
 * model's special ids, checked against the model: what pass_init starts with, and what a
 * training run checks before its first step, not at its first evaluation. */
loom_status loom_generation_settings(loom_trainer *t, loom_beam_config *config, loom_generation_ids *ids);
/* Generate for one batch of the loader; add its scores; append the sequences and texts to
 * keep (when not NULL). */
loom_status loom_generation_pass_batch(loom_trainer *t, loom_generation_pass *g, const loom_batch *batch,
                                       loom_predictions *keep);
/* Add every rank's sums up and write "<prefix>_bleu" ... into metrics. */
loom_status loom_generation_pass_finish(loom_trainer *t, loom_generation_pass *g, const char *prefix,
                                        loom_metrics *metrics);
void loom_generation_pass_free(loom_generation_pass *g);

/* generated_predictions.txt: one generated text per line, in the order of the data (HF's
 * run_translation / run_summarization write the same file), through a temporary file. */
loom_status loom_write_generated_predictions(const loom_predictions *p, const char *path);

#endif
