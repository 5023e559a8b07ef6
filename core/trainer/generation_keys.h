/*
 * generation_keys.h - every key of a generation config file judged (docs/seq2seq.md#generation-config):
 * those loom decodes with are read by generation_config.c; those that cannot change what is
 * generated are accepted; those that would, set to anything but their default, are refused
 * ("not supported yet"), so a run never decodes otherwise than HF's generate() would.
 */
#ifndef LOOM_CORE_GENERATION_KEYS_H
#define LOOM_CORE_GENERATION_KEYS_H

#include <cjson/cJSON.h>

#include "trainer.h"

/* Check the keys of json, read from path. model_config: a model's config.json (its other keys
 * are the model's own, not warned about); otherwise a key loom does not know is one warning
 * (newer transformers add keys), once per file. model_ids (NULL: not known yet) are what the
 * file's decoder_start_token_id, eos_token_id and pad_token_id must equal. LOOM_E_UNSUPPORTED
 * naming the file and the key. */
loom_status loom_generation_keys_check(const cJSON *json, const char *path, int model_config,
                                       const loom_generation_ids *model_ids);

#endif
