/*
 * generation_config.h - a saved model's generation defaults (docs/seq2seq.md#generation).
 */
#ifndef LOOM_CORE_GENERATION_CONFIG_H
#define LOOM_CORE_GENERATION_CONFIG_H

#include "beam_search.h"

/* Where the arguments leave them unset (--generation_max_length and --max_length,
 * --generation_num_beams and --num_beams, --early_stopping, --length_penalty: its origin is
 * the default), take max_length, num_beams, early_stopping and length_penalty from
 * DIR/generation_config.json, else DIR/config.json, over what
 * loom_beam_config_from_args put in *c. NULL or empty dir, or neither file: nothing changes.
 * LOOM_E_FORMAT naming the file for malformed JSON or a value of the wrong type. */
loom_status loom_beam_config_from_model(const char *dir, const loom_args *args, loom_beam_config *c);

#endif
