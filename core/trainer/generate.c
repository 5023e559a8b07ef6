/*
 * generate.c - greedy and sampled decoding (temperature, top-k, top-p) over a model's
 * incremental decode_step.
 */
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "trainer_internal.h"

size_t loom_sample_scratch_bytes(int64_t vocab) { return (size_t)vocab * (sizeof(float) + sizeof(int32_t)); }

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static _Thread_local const float *sort_keys;

static int by_probability_desc(const void *a, const void *b)
{
    float pa = sort_keys[*(const int32_t *)a], pb = sort_keys[*(const int32_t *)b];
    if (pa != pb) return pa < pb ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b; /* ties: the lower id first, deterministic */
}

loom_status loom_sample_next(const float *logits, int64_t vocab, const loom_generation_config *config,
                             uint64_t *rng_state, void *scratch, int32_t *token)
{
    if (vocab < 1) return loom_error(LOOM_E_INVALID, "generation: empty vocabulary");
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (!config->do_sample) {
        *token = (int32_t)best;
        return LOOM_OK;
    }
    if (!(config->temperature > 0)) return loom_error(LOOM_E_INVALID, "--temperature must be > 0");
    if (!(config->top_p > 0 && config->top_p <= 1)) return loom_error(LOOM_E_INVALID, "--top_p must be in (0, 1]");
    float *probs = scratch;
    int32_t *order = (int32_t *)(probs + vocab);
    /* Softmax of logits / temperature, stable. */
    double max = logits[best] / config->temperature, sum = 0;
    for (int64_t i = 0; i < vocab; i++) {
        probs[i] = (float)exp(logits[i] / config->temperature - max);
        sum += probs[i];
        order[i] = (int32_t)i;
    }
    for (int64_t i = 0; i < vocab; i++) probs[i] = (float)(probs[i] / sum);
    sort_keys = probs;
    qsort(order, (size_t)vocab, sizeof *order, by_probability_desc);
    /* The candidates: the first k of the ranking, cut further at cumulative probability top_p
     * (the token that crosses it is kept, as HF's TopPLogitsWarper does). */
    int64_t keep = config->top_k > 0 && config->top_k < vocab ? config->top_k : vocab;
    double cumulative = 0;
    int64_t nucleus = 0;
    while (nucleus < keep) {
        cumulative += probs[order[nucleus]];
        nucleus++;
        if (cumulative >= config->top_p) break;
    }
    double mass = 0;
    for (int64_t i = 0; i < nucleus; i++) mass += probs[order[i]];
    double u = ((double)(next_random(rng_state) >> 11) * (1.0 / 9007199254740992.0)) * mass;
    double running = 0;
    for (int64_t i = 0; i < nucleus; i++) {
        running += probs[order[i]];
        if (u < running) {
            *token = order[i];
            return LOOM_OK;
        }
    }
    *token = order[nucleus - 1];
    return LOOM_OK;
}

loom_status loom_trainer_can_generate(const loom_trainer *t)
{
    const loom_model_vtable *mv = t->model.vtable;
    if (LOOM_HAS(mv, loom_model_vtable, decode_begin) && LOOM_HAS(mv, loom_model_vtable, decode_step)) return LOOM_OK;
    return loom_error(LOOM_E_UNSUPPORTED, "a model of type '%s' cannot generate text (no decode_step)",
                      t->model.plugin->desc->name);
}

loom_status loom_trainer_generate(loom_trainer *t, const int32_t *prompt, size_t n_prompt,
                                  const loom_generation_config *config, int32_t **generated, size_t *n_generated)
{
    *generated = NULL;
    *n_generated = 0;
    loom_status st = loom_trainer_prepare(t);
    if (st != LOOM_OK) return st;
    if ((st = loom_trainer_can_generate(t)) != LOOM_OK) return st;
    const loom_model_vtable *mv = t->model.vtable;
    if (n_prompt < 1) return loom_error(LOOM_E_INVALID, "generation needs a prompt of at least one token");
    int64_t shape[LOOM_MAX_DIMS];
    uint32_t ndim = 0;
    if ((st = loom_trainer_output_shape(t, shape, &ndim, NULL)) != LOOM_OK) return st;
    int64_t vocab = shape[ndim - 1];
    int64_t context = 0;
    if (loom_config_i64(t->model.config, "n_positions", &context) != LOOM_CFG_PRESENT)
        context = (int64_t)n_prompt + config->max_new_tokens;
    if ((int64_t)n_prompt > context)
        return loom_error(LOOM_E_INVALID, "the prompt has %zu tokens; the model's context is %lld", n_prompt,
                          (long long)context);
    int64_t total = (int64_t)n_prompt + config->max_new_tokens;
    if (total > context) {
        /* HF warns too ("will exceed the model's predefined maximum length"): fewer tokens than
         * asked for should not look like an early end of text. */
        loom_log(LOOM_LOG_WARNING,
                 "--max_new_tokens %lld: the prompt's %zu tokens leave room for %lld in the model's "
                 "context of %lld; generating %lld",
                 (long long)config->max_new_tokens, n_prompt, (long long)(context - (int64_t)n_prompt),
                 (long long)context, (long long)(context - (int64_t)n_prompt));
        total = context;
    }
    float *logits = malloc((size_t)vocab * sizeof *logits);
    void *scratch = malloc(loom_sample_scratch_bytes(vocab));
    int32_t *out = malloc((size_t)(config->max_new_tokens > 0 ? config->max_new_tokens : 1) * sizeof *out);
    if (!logits || !scratch || !out) {
        free(logits), free(scratch), free(out);
        return loom_error(LOOM_E_NOMEM, "out of memory for generation");
    }
    uint64_t rng = config->seed * 0x2545f4914f6cdd1dull + 1;
    size_t n = 0;
    /* Decoding reads every block at every token: under ZeRO-3 the whole model, once. */
    st = loom_trainer_params_whole(t);
    if (st == LOOM_OK) st = LOOM_PLUGIN_CALL(t->model, "decode_begin", mv->decode_begin(t->model.instance, total));
    if (st == LOOM_OK)
        st = LOOM_PLUGIN_CALL(t->model, "decode_step",
                              mv->decode_step(t->model.instance, prompt, (int64_t)n_prompt, logits));
    for (int64_t position = (int64_t)n_prompt; st == LOOM_OK && position < total; position++) {
        int32_t next = 0;
        if ((st = loom_sample_next(logits, vocab, config, &rng, scratch, &next)) != LOOM_OK) break;
        out[n++] = next;
        if (next == config->eos_token_id || position + 1 == total) break;
        st = LOOM_PLUGIN_CALL(t->model, "decode_step", mv->decode_step(t->model.instance, &next, 1, logits));
    }
    free(logits);
    free(scratch);
    loom_status released = loom_trainer_params_done(t);
    if (st == LOOM_OK) st = released;
    if (st != LOOM_OK) {
        free(out);
        return st;
    }
    *generated = out;
    *n_generated = n;
    return LOOM_OK;
}
