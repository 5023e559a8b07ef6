/*
 * generation_config.h - the generation defaults a run decodes with (docs/seq2seq.md#generation).
 */
#ifndef LOOM_CORE_GENERATION_CONFIG_H
#define LOOM_CORE_GENERATION_CONFIG_H

#include "beam_search.h"

/* Where the arguments leave them unset (--generation_max_length and --max_length,
 * --generation_num_beams and --num_beams, --early_stopping, --length_penalty: its origin is
 * the default), take max_length, num_beams, early_stopping and length_penalty over what
 * loom_beam_config_from_args put in *c from --generation_config when given (a JSON object, a
 * JSON file, or a folder's generation_config.json), else from the model folder's
 * generation_config.json, else its config.json; and max_new_tokens (over any max_length, as
 * HF's generate()), min_length, min_new_tokens, no_repeat_ngram_size. No source: nothing
 * changes. LOOM_E_FORMAT naming the file for malformed JSON or a value of the wrong type;
 * LOOM_E_UNSUPPORTED for a key that would decode otherwise (generation_keys.h), ids other than
 * model_ids included. */
loom_status loom_beam_config_from_model(const loom_args *a, const loom_generation_ids *model_ids, loom_beam_config *c);

/* --generation_config (NULL or "": none) read and every key of it checked, as HF's
 * Seq2SeqTrainer loads and validates it when it is made: a run stops at its start, whatever it
 * does, rather than at its first generation. */
loom_status loom_generation_config_check(const char *arg);

#endif
