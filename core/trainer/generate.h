/*
 * generate.h - text generation with a model that can decode incrementally (model.h's
 * decode_begin / decode_step): greedy, or sampling with temperature, top-k and top-p, as HF's
 * generate() does with the same names.
 */
#ifndef LOOM_CORE_GENERATE_H
#define LOOM_CORE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "trainer.h"

typedef struct loom_generation_config {
    int64_t max_new_tokens;  /* tokens to add after the prompt                               */
    int do_sample;           /* 0: greedy (argmax); 1: sample                                */
    double temperature;      /* > 0; logits are divided by it before sampling                */
    int64_t top_k;           /* keep the k most likely tokens (0: all)                       */
    double top_p;            /* keep the smallest set whose probability reaches top_p (1: all) */
    uint64_t seed;           /* the sampling stream                                           */
    int32_t eos_token_id;    /* stop after generating it; -1: never                           */
} loom_generation_config;

/* Pick the next token from logits[vocab]. scratch holds 2 * vocab floats and vocab int32s
 * worth of bytes (see loom_sample_scratch_bytes). rng_state advances. */
size_t loom_sample_scratch_bytes(int64_t vocab);
loom_status loom_sample_next(const float *logits, int64_t vocab, const loom_generation_config *config,
                             uint64_t *rng_state, void *scratch, int32_t *token);

/* LOOM_OK when the run's model can decode token by token (decode_begin and decode_step),
 * else LOOM_E_UNSUPPORTED naming its type. */
loom_status loom_trainer_can_generate(const loom_trainer *t);

/* Continue `prompt` (n_prompt >= 1 tokens) with up to max_new_tokens tokens (fewer at the end
 * of the model's context or after eos). *generated (malloc'ed, caller frees) receives only the
 * new tokens. */
loom_status loom_trainer_generate(loom_trainer *t, const int32_t *prompt, size_t n_prompt,
                                  const loom_generation_config *config, int32_t **generated, size_t *n_generated);

#endif
