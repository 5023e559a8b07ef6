/*
 * metrics_text.h - the built-in metrics of generated text (docs/seq2seq.md#metrics), each kept
 * as sums so that every rank adds its examples and one all-reduce gives the corpus's:
 *
 *   bleu                  corpus BLEU as sacreBLEU computes it by default but without
 *                         smoothing: its 13a tokenisation, clipped 1..4-gram precisions over
 *                         the corpus, geometric mean, brevity penalty exp(1 - ref/hyp) when the
 *                         hypotheses are shorter; 0..100
 *   rouge1 rouge2 rougeL  mean F-measure of unigram, bigram and longest-common-subsequence
 *                         overlap (rouge_score's tokens: lowercase a-z0-9 runs, no stemming);
 *                         0..100
 *   exact_match           fraction of examples whose whitespace tokens equal the reference's
 *   token_error_rate      token edit distance / reference tokens (whitespace tokens: PER for
 *                         phones, WER for words)
 *   sequence_error_rate   fraction of examples not exactly right (1 - exact_match: WER of G2P)
 *   gen_len               mean generated tokens (the model's ids, eos included), as HF's scripts
 */
#ifndef LOOM_CORE_METRICS_TEXT_H
#define LOOM_CORE_METRICS_TEXT_H

#include <stddef.h>

#include "trainer.h"

typedef struct loom_text_scores {
    double matches[4], totals[4]; /* BLEU n-gram statistics                  */
    double hyp_len, ref_len;      /* BLEU lengths (13a tokens)               */
    double rouge[3];              /* sums of per-example F: 1, 2, L          */
    double exact;                 /* examples equal to the reference         */
    double edits, ref_tokens;     /* token edit distance, reference tokens   */
    double examples;
    double gen_tokens; /* generated ids                           */
} loom_text_scores;

#define LOOM_TEXT_SCORES_N (sizeof(loom_text_scores) / sizeof(double))

/* sacreBLEU's 13a tokenisation of text: tokens separated by single spaces, written to out
 * (malloc'ed, NUL-terminated). */
loom_status loom_tokenize_13a(const char *text, char **out);

/* Add one example: hypothesis and reference text, and the number of generated ids. */
loom_status loom_text_scores_add(loom_text_scores *s, const char *hypothesis, const char *reference,
                                 double generated_ids);

/* Corpus BLEU (0..100) of the sums. */
double loom_text_scores_bleu(const loom_text_scores *s);

/* "<prefix>_bleu", "<prefix>_rouge1", ... into metrics. */
loom_status loom_text_scores_metrics(const loom_text_scores *s, const char *prefix, loom_metrics *metrics);

#endif
