/* Sampling for generation: greedy, top-k, top-p and temperature against their definitions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "test_util.h"

static double frequency(const float *logits, int64_t vocab, const loom_generation_config *config, int32_t token,
                        int draws, int32_t *max_seen)
{
    void *scratch = malloc(loom_sample_scratch_bytes(vocab));
    uint64_t rng = 12345;
    int hits = 0;
    *max_seen = -1;
    for (int i = 0; i < draws; i++) {
        int32_t t = -1;
        CHECK(loom_sample_next(logits, vocab, config, &rng, scratch, &t) == LOOM_OK);
        hits += t == token;
        if (t > *max_seen) *max_seen = t;
    }
    free(scratch);
    return (double)hits / draws;
}

int main(void)
{
    /* Probabilities 0.5, 0.3, 0.15, 0.05 as logits (order shuffled to test the ranking). */
    const float p[4] = {0.15f, 0.5f, 0.05f, 0.3f};
    float logits[4];
    for (int i = 0; i < 4; i++) logits[i] = logf(p[i]) + 3.0f;
    void *scratch = malloc(loom_sample_scratch_bytes(4));
    uint64_t rng = 1;
    int32_t token = -1;

    loom_generation_config greedy = {.max_new_tokens = 1, .do_sample = 0, .temperature = 1, .top_k = 0, .top_p = 1};
    CHECK(loom_sample_next(logits, 4, &greedy, &rng, scratch, &token) == LOOM_OK);
    CHECK(token == 1);

    loom_generation_config sample = {.max_new_tokens = 1, .do_sample = 1, .temperature = 1, .top_k = 0, .top_p = 1};
    int32_t seen;
    const int draws = 40000;
    /* Plain sampling follows the softmax: 4 standard errors of tolerance. */
    for (int32_t t = 0; t < 4; t++) {
        double f = frequency(logits, 4, &sample, t, draws, &seen);
        CHECK_CLOSE(f, p[t], 4 * sqrt(p[t] * (1 - p[t]) / draws), 0);
    }
    /* top_k = 1 is greedy; top_k = 2 renormalises over {1, 3}: 0.5 / 0.8. */
    sample.top_k = 1;
    CHECK(frequency(logits, 4, &sample, 1, 2000, &seen) == 1.0);
    sample.top_k = 2;
    double f = frequency(logits, 4, &sample, 1, draws, &seen);
    CHECK_CLOSE(f, 0.625, 4 * sqrt(0.625 * 0.375 / draws), 0);
    CHECK(frequency(logits, 4, &sample, 0, 5000, &seen) == 0.0);
    CHECK(frequency(logits, 4, &sample, 2, 5000, &seen) == 0.0);
    /* top_p = 0.75: 0.5 alone is short of it, 0.5 + 0.3 reaches it: {1, 3} again. */
    sample.top_k = 0;
    sample.top_p = 0.75;
    f = frequency(logits, 4, &sample, 1, draws, &seen);
    CHECK_CLOSE(f, 0.625, 4 * sqrt(0.625 * 0.375 / draws), 0);
    CHECK(frequency(logits, 4, &sample, 0, 5000, &seen) == 0.0);
    /* A tiny top_p keeps only the most likely token. */
    sample.top_p = 0.01;
    CHECK(frequency(logits, 4, &sample, 1, 2000, &seen) == 1.0);
    /* Temperature 2: probabilities proportional to sqrt(p). */
    sample.top_p = 1;
    sample.temperature = 2;
    double norm = 0;
    for (int i = 0; i < 4; i++) norm += sqrt(p[i]);
    for (int32_t t = 0; t < 4; t++) {
        double want = sqrt(p[t]) / norm;
        CHECK_CLOSE(frequency(logits, 4, &sample, t, draws, &seen), want, 4 * sqrt(want * (1 - want) / draws), 0);
    }
    /* The same seed gives the same sequence. */
    uint64_t a = 99, b = 99;
    int same = 1;
    for (int i = 0; i < 100; i++) {
        int32_t x, y;
        loom_sample_next(logits, 4, &sample, &a, scratch, &x);
        loom_sample_next(logits, 4, &sample, &b, scratch, &y);
        same &= x == y;
    }
    CHECK(same);
    /* Bad settings are errors, not crashes. */
    sample.temperature = 0;
    CHECK(loom_sample_next(logits, 4, &sample, &rng, scratch, &token) == LOOM_E_INVALID);
    sample.temperature = 1;
    sample.top_p = 0;
    CHECK(loom_sample_next(logits, 4, &sample, &rng, scratch, &token) == LOOM_E_INVALID);
    free(scratch);
    return test_finish("test_generate");
}
