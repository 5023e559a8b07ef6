/*
 * generation_keys.c - the keys of transformers' GenerationConfig and what loom does with each
 * (generation_keys.h).
 */
#include "generation_keys.h"

#include <stdio.h>
#include <string.h>

#include "error.h"
#include "host.h"

enum {
    NO_EFFECT, /* cannot change the generated sequences (or read by generation_config.c) */
    MODEL_ID,  /* must be the model's own id                                             */
    OFF_NULL,  /* refused unless null (or an empty list or dict)                        */
    OFF_FALSE, /* refused unless false                                                   */
    OFF_NUMBER /* refused unless null or `off`                                          */
};

typedef struct key_rule {
    const char *key;
    int kind;
    double off;
} key_rule;

static const key_rule rules[] = {
    /* decoded with (generation_config.c) */
    {"max_length", NO_EFFECT, 0},
    {"max_new_tokens", NO_EFFECT, 0},
    {"min_length", NO_EFFECT, 0},
    {"min_new_tokens", NO_EFFECT, 0},
    {"num_beams", NO_EFFECT, 0},
    {"early_stopping", NO_EFFECT, 0},
    {"length_penalty", NO_EFFECT, 0},
    {"no_repeat_ngram_size", NO_EFFECT, 0},
    /* an encoder-decoder starts from decoder_start_token_id, so bos is never fed */
    {"bos_token_id", NO_EFFECT, 0},
    {"decoder_start_token_id", MODEL_ID, 0},
    {"eos_token_id", MODEL_ID, 0},
    {"pad_token_id", MODEL_ID, 0},
    /* what generate() returns besides the sequences, caching, compiling, assistants */
    {"transformers_version", NO_EFFECT, 0},
    {"output_scores", NO_EFFECT, 0},
    {"output_logits", NO_EFFECT, 0},
    {"output_attentions", NO_EFFECT, 0},
    {"output_hidden_states", NO_EFFECT, 0},
    {"return_dict_in_generate", NO_EFFECT, 0},
    {"use_cache", NO_EFFECT, 0},
    {"cache_implementation", NO_EFFECT, 0},
    {"cache_config", NO_EFFECT, 0},
    {"return_legacy_cache", NO_EFFECT, 0},
    {"compile_config", NO_EFFECT, 0},
    {"disable_compile", NO_EFFECT, 0},
    {"prefill_chunk_size", NO_EFFECT, 0},
    {"num_assistant_tokens", NO_EFFECT, 0},
    {"num_assistant_tokens_schedule", NO_EFFECT, 0},
    {"assistant_confidence_threshold", NO_EFFECT, 0},
    {"prompt_lookup_num_tokens", NO_EFFECT, 0},
    {"max_matching_ngram_size", NO_EFFECT, 0},
    {"assistant_early_exit", NO_EFFECT, 0},
    {"assistant_lookbehind", NO_EFFECT, 0},
    {"target_lookbehind", NO_EFFECT, 0},
    {"is_assistant", NO_EFFECT, 0},
    /* the sampling warpers: generate() applies them only with do_sample */
    {"temperature", NO_EFFECT, 0},
    {"top_k", NO_EFFECT, 0},
    {"top_p", NO_EFFECT, 0},
    {"typical_p", NO_EFFECT, 0},
    {"min_p", NO_EFFECT, 0},
    {"epsilon_cutoff", NO_EFFECT, 0},
    {"eta_cutoff", NO_EFFECT, 0},
    /* would change the output: not supported yet */
    {"do_sample", OFF_FALSE, 0},
    {"num_return_sequences", OFF_NUMBER, 1},
    {"repetition_penalty", OFF_NUMBER, 1},
    {"encoder_repetition_penalty", OFF_NUMBER, 1},
    {"encoder_no_repeat_ngram_size", OFF_NUMBER, 0},
    {"bad_words_ids", OFF_NULL, 0},
    {"force_words_ids", OFF_NULL, 0},
    {"forced_bos_token_id", OFF_NULL, 0},
    {"forced_eos_token_id", OFF_NULL, 0},
    {"forced_decoder_ids", OFF_NULL, 0},
    {"num_beam_groups", OFF_NUMBER, 1},
    {"diversity_penalty", OFF_NUMBER, 0},
    {"exponential_decay_length_penalty", OFF_NULL, 0},
    {"suppress_tokens", OFF_NULL, 0},
    {"begin_suppress_tokens", OFF_NULL, 0},
    {"sequence_bias", OFF_NULL, 0},
    {"renormalize_logits", OFF_FALSE, 0},
    {"remove_invalid_values", OFF_FALSE, 0},
    {"constraints", OFF_NULL, 0},
    {"penalty_alpha", OFF_NUMBER, 0},
    {"guidance_scale", OFF_NUMBER, 1},
    {"low_memory", OFF_FALSE, 0},
    {"watermarking_config", OFF_NULL, 0},
    {"max_time", OFF_NULL, 0},
    {"stop_strings", OFF_NULL, 0},
    {"dola_layers", OFF_NULL, 0},
    {"token_healing", OFF_FALSE, 0},
    {"generation_kwargs", OFF_NULL, 0},
};

static const key_rule *rule_of(const char *key)
{
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++)
        if (strcmp(rules[i].key, key) == 0) return &rules[i];
    return NULL;
}

static int is_off(const key_rule *r, const cJSON *v)
{
    if (cJSON_IsNull(v)) return 1;
    switch (r->kind) {
    case OFF_FALSE:
        return cJSON_IsFalse(v);
    case OFF_NUMBER:
        return cJSON_IsNumber(v) && v->valuedouble == r->off;
    case OFF_NULL:
        return (cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child;
    default:
        return 1;
    }
}

/* eos_token_id may be a list (transformers >= 4.38): one id is that id; several are refused. */
static loom_status check_id(const cJSON *v, const char *path, const char *key, int32_t model)
{
    if (cJSON_IsNull(v)) return LOOM_OK;
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1) v = v->child;
    if (cJSON_IsArray(v))
        return loom_error(LOOM_E_UNSUPPORTED, "%s: %s with several ids is not supported yet", path, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble)
        return loom_error(LOOM_E_FORMAT, "%s: %s must be an integer token id", path, key);
    if (v->valuedouble != (double)model)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: %s %.0f is not the model's (%d): another id than the model's is not supported yet", path,
                          key, v->valuedouble, (int)model);
    return LOOM_OK;
}

loom_status loom_generation_keys_check(const cJSON *json, const char *path, int model_config,
                                       const loom_generation_ids *model_ids)
{
    /* Unknown keys warn once per file, not at every evaluation that reads it again. */
    static char warned[4096];
    const int warn = !model_config && strcmp(warned, path) != 0;
    for (const cJSON *v = json->child; v; v = v->next) {
        const key_rule *r = rule_of(v->string);
        loom_status st = LOOM_OK;
        if (!r) {
            /* transformers' own bookkeeping (_from_model_config, _commit_hash) */
            if (warn && v->string[0] != '_') {
                loom_log(LOOM_LOG_WARNING, "%s: unknown generation setting '%s' is ignored", path, v->string);
                snprintf(warned, sizeof warned, "%s", path);
            }
        } else if (r->kind == MODEL_ID) {
            if (model_ids) {
                const int32_t id = strcmp(r->key, "eos_token_id") == 0   ? model_ids->eos_token_id
                                   : strcmp(r->key, "pad_token_id") == 0 ? model_ids->pad_token_id
                                                                         : model_ids->decoder_start_token_id;
                st = check_id(v, path, r->key, id);
            }
        } else if (!is_off(r, v)) {
            st = loom_error(LOOM_E_UNSUPPORTED, "%s: %s is not supported yet (only its default)", path, r->key);
        }
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}
