/* test_beam_search.c - core/trainer/beam_search.c:
 *   (a) a toy decoder, worked out by hand, where beam search and greedy search disagree, and
 *       where length_penalty changes beam search's answer (docs/seq2seq.md#generation);
 *   (b) the reorder callback: every row continues the history of the row it is given, always a
 *       beam of its own example;
 *   (c) errors: num_beams larger than the vocabulary, max_length below 2;
 *   (d) HF's logits processors on the toy: min_length and no_repeat_ngram_size each change the
 *       answer of (a).
 * With --table FILE it runs beam search over a Markov table of logits and prints the results,
 * for beam_search_reference_test.py (HF v4.2's beam search reimplemented in Python). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "beam_search.h"
#include "test_util.h"

enum { PAD = 0, EOS = 1, A = 2, BB = 3, V = 4, MAXROWS = 8, MAXLEN = 8 };

/* (a) p(next | history), history without the start token. */
typedef struct toy {
    int32_t hist[MAXROWS][MAXLEN];
    int64_t len[MAXROWS];
    int64_t rows;
    int bad_reorder;
    int64_t beams;
} toy;

static void probs(const int32_t *h, int64_t n, double *p)
{
    for (int v = 0; v < V; v++)
        p[v] = 0.01;
    if (n == 0) {
        p[A] = 0.6, p[BB] = 0.4, p[EOS] = 1e-6, p[PAD] = 1e-6;
    } else if (n == 1 && h[0] == A) {
        p[A] = 0.35, p[BB] = 0.35, p[EOS] = 0.3, p[PAD] = 1e-6;
    } else if (n == 1) {
        p[EOS] = 0.9, p[A] = 0.05, p[BB] = 0.05, p[PAD] = 1e-6;
    } else if (h[1] == A) {
        p[EOS] = 0.97;
    } else {
        p[EOS] = 0.96;
    }
}

static loom_status toy_step(void *context, const int32_t *tokens, float *logits)
{
    toy *t = context;
    for (int64_t r = 0; r < t->rows; r++) {
        t->hist[r][t->len[r]++] = tokens[r]; /* hist[r][0]: the start token */
        double p[V];
        probs(t->hist[r] + 1, t->len[r] - 1, p);
        for (int v = 0; v < V; v++)
            logits[r * V + v] = (float)log(p[v]);
    }
    return LOOM_OK;
}

static loom_status toy_reorder(void *context, const int32_t *rows)
{
    toy *t = context;
    int32_t hist[MAXROWS][MAXLEN];
    int64_t len[MAXROWS];
    memcpy(hist, t->hist, sizeof hist);
    memcpy(len, t->len, sizeof len);
    for (int64_t r = 0; r < t->rows; r++) {
        if (rows[r] / t->beams != r / t->beams) t->bad_reorder = 1;
        memcpy(t->hist[r], hist[rows[r]], sizeof hist[r]);
        t->len[r] = len[rows[r]];
    }
    return LOOM_OK;
}

static void run_toy_with(int64_t beams, double length_penalty, int64_t max_length, int64_t min_length,
                         int64_t no_repeat_ngram_size, const int32_t *want, int64_t want_len)
{
    toy t;
    memset(&t, 0, sizeof t);
    t.rows = beams; /* one example */
    t.beams = beams;
    loom_beam_config c = {.num_beams = beams,
                          .max_length = max_length,
                          .length_penalty = length_penalty,
                          .early_stopping = 0,
                          .min_length = min_length,
                          .no_repeat_ngram_size = no_repeat_ngram_size,
                          .decoder_start_token_id = PAD,
                          .eos_token_id = EOS,
                          .pad_token_id = PAD};
    const loom_decoder_fns fns = {&t, toy_step, toy_reorder};
    int32_t out[MAXLEN];
    int64_t len = 0;
    double score = 0;
    CHECK(loom_beam_search(&c, 1, V, &fns, out, &len, &score) == LOOM_OK);
    CHECK(!t.bad_reorder);
    int same = len == want_len;
    for (int64_t i = 0; same && i < len; i++)
        same = out[i] == want[i];
    printf("beams %lld, length_penalty %g, min_length %lld, no_repeat_ngram_size %lld: %lld tokens:", (long long)beams,
           length_penalty, (long long)min_length, (long long)no_repeat_ngram_size, (long long)len);
    for (int64_t i = 0; i < len; i++)
        printf(" %d", out[i]);
    printf(" (score %.4f)\n", score);
    CHECK(same);
}

static void run_toy(int64_t beams, double length_penalty, int64_t max_length, const int32_t *want, int64_t want_len)
{
    run_toy_with(beams, length_penalty, max_length, 0, 0, want, want_len);
}

static void test_toy(void)
{
    /* Greedy: A (0.6), then A (0.35, the lower id of a tie with B), then eos. */
    const int32_t greedy[] = {A, A, EOS}, short_b[] = {BB, EOS};
    run_toy(1, 1.0, 6, greedy, 3);
    /* Two beams: [B] ends at step 2 with 0.4 x 0.9 = 0.36, score log(0.36) / 2 = -0.511 (the
     * length counts the start token); [A A] ends at step 3 with 0.6 x 0.35 x 0.97, score
     * log(0.2037) / 3 = -0.530; [A B] with 0.2016 does not enter. B wins. */
    run_toy(2, 1.0, 6, short_b, 2);
    /* length_penalty 2 favours the longer: log(0.36) / 4 = -0.255 < log(0.2037) / 9 = -0.177. */
    run_toy(2, 2.0, 6, greedy, 3);
    /* max_length 3 (two tokens): the running beams are finalised with log(0.21) / 3 = -0.520;
     * [B] still wins and keeps its eos (shorter than max_length). */
    run_toy(2, 1.0, 3, short_b, 2);
}

static void test_processors(void)
{
    /* Greedy with min_length 4: eos (0.97) is banned at cur_len 3 (start, A, A), so the argmax is
     * the first of the 0.01s, PAD; then eos. Without it: A A eos (test_toy). */
    const int32_t longer[] = {A, A, PAD, EOS};
    run_toy_with(1, 1.0, 6, 4, 0, longer, 4);
    /* Two beams with min_length 3: [B] cannot end at cur_len 2, nor can [A]; [A A] and [A B] lead
     * with 0.21 each, end at step 3 with log(0.2037) / 3 = -0.530 and log(0.2016) / 3 = -0.534,
     * and [A A] wins. Without it: B eos. */
    const int32_t aa[] = {A, A, EOS};
    run_toy_with(2, 1.0, 6, 3, 0, aa, 3);
    /* min_length 2 bans nothing here (no example ends before cur_len 2): B eos as without it. */
    const int32_t short_b[] = {BB, EOS};
    run_toy_with(2, 1.0, 6, 2, 0, short_b, 2);
    /* Greedy with no_repeat_ngram_size 1: after A, A is banned (so is the start token, PAD), so B
     * (0.35), then eos. Without it: A A eos. */
    const int32_t ab[] = {A, BB, EOS};
    run_toy_with(1, 1.0, 6, 0, 1, ab, 3);
    /* no_repeat_ngram_size 2 bans nothing before a bigram repeats: as without it. */
    run_toy_with(1, 1.0, 6, 0, 2, aa, 3);
}

static void test_errors(void)
{
    toy t;
    memset(&t, 0, sizeof t);
    const loom_decoder_fns fns = {&t, toy_step, toy_reorder};
    int32_t out[MAXLEN * 2];
    int64_t len[2];
    loom_beam_config c = {.num_beams = 5, .max_length = 4, .length_penalty = 1, .eos_token_id = EOS};
    CHECK(loom_beam_search(&c, 1, V, &fns, out, len, NULL) == LOOM_E_INVALID);
    c.num_beams = 2, c.max_length = 1;
    CHECK(loom_beam_search(&c, 1, V, &fns, out, len, NULL) == LOOM_E_INVALID);
}

/* --table FILE: "B V K max_length length_penalty early_stopping start eos pad min_length
 * no_repeat_ngram_size", then
 * logits[b][step][prev][v] for step < max_length - 1, prev < V (prev of step 0: the start). */
typedef struct table {
    int64_t B, V, K, step;
    float *logits;
} table;

static loom_status table_step(void *context, const int32_t *tokens, float *logits)
{
    table *t = context;
    for (int64_t r = 0; r < t->B * t->K; r++) {
        const int64_t b = r / t->K;
        memcpy(logits + r * t->V, t->logits + ((b * MAXLEN + t->step) * t->V + tokens[r]) * t->V,
               (size_t)t->V * sizeof(float));
    }
    t->step++;
    return LOOM_OK;
}

static int run_table(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return perror(path), 1;
    table t = {0};
    long long ml = 0, es = 0, start = 0, eos = 0, pad = 0, min_length = 0, ngram = 0;
    double lp = 0;
    if (fscanf(f, "%lld %lld %lld %lld %lf %lld %lld %lld %lld %lld %lld", (long long *)&t.B, (long long *)&t.V,
               (long long *)&t.K, &ml, &lp, &es, &start, &eos, &pad, &min_length, &ngram) != 11 ||
        ml > MAXLEN)
        return fprintf(stderr, "%s: bad header\n", path), 1;
    const int64_t n = t.B * MAXLEN * t.V * t.V;
    t.logits = calloc((size_t)n, sizeof(float));
    for (int64_t b = 0; b < t.B; b++)
        for (int64_t s = 0; s < ml - 1; s++)
            for (int64_t i = 0; i < t.V * t.V; i++)
                if (fscanf(f, "%f", &t.logits[(b * MAXLEN + s) * t.V * t.V + i]) != 1)
                    return fprintf(stderr, "%s: short table\n", path), 1;
    fclose(f);
    loom_beam_config c = {.num_beams = t.K,
                          .max_length = ml,
                          .length_penalty = lp,
                          .early_stopping = (int)es,
                          .min_length = min_length,
                          .no_repeat_ngram_size = ngram,
                          .decoder_start_token_id = (int32_t)start,
                          .eos_token_id = (int32_t)eos,
                          .pad_token_id = (int32_t)pad};
    const loom_decoder_fns fns = {&t, table_step, NULL};
    int32_t *out = malloc((size_t)(t.B * (ml - 1)) * sizeof *out);
    int64_t *len = malloc((size_t)t.B * sizeof *len);
    double *score = malloc((size_t)t.B * sizeof *score);
    loom_status st = loom_beam_search(&c, t.B, t.V, &fns, out, len, score);
    if (st != LOOM_OK) return fprintf(stderr, "beam search failed\n"), 1;
    for (int64_t b = 0; b < t.B; b++) {
        printf("%.12g", score[b]);
        for (int64_t i = 0; i < len[b]; i++)
            printf(" %d", out[b * (ml - 1) + i]);
        printf("\n");
    }
    free(out), free(len), free(score), free(t.logits);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--table") == 0) return run_table(argv[2]);
    test_toy();
    test_processors();
    test_errors();
    return test_finish("test_beam_search");
}
