/* test_metrics_text.c - core/trainer/metrics_text.c on cases worked out by hand: 13a tokens,
 * BLEU of a perfect and of a too-short corpus, ROUGE of a known overlap, the edit distance and
 * exact match. With --score FILE (lines "hypothesis<TAB>reference") it prints the 13a tokens of
 * every line and the corpus metrics, for metrics_text_reference_test.py (NLTK's corpus_bleu). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_text.h"
#include "test_util.h"

static void check_13a(const char *in, const char *want)
{
    char *got = NULL;
    CHECK(loom_tokenize_13a(in, &got) == LOOM_OK);
    if (strcmp(got, want) != 0) printf("13a(\"%s\") = \"%s\", want \"%s\"\n", in, got, want);
    CHECK(strcmp(got, want) == 0);
    free(got);
}

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

static void test_by_hand(void)
{
    check_13a("Hello, world.", "Hello , world .");
    check_13a("It costs 3.50 (or 4,000)!", "It costs 3.50 ( or 4,000 ) !");
    check_13a("a 1-2 b-c &amp; d&lt;e", "a 1 - 2 b-c & d < e");
    check_13a("don't stop", "don't stop");

    loom_text_scores s;
    memset(&s, 0, sizeof s);
    CHECK(loom_text_scores_add(&s, "the cat sat on the mat", "the cat sat on the mat", 7) == LOOM_OK);
    CHECK(near(loom_text_scores_bleu(&s), 100.0));
    /* "the cat sat" against "the cat sat on the mat": every n-gram matches, precision 1, so BLEU is
     * the brevity penalty exp(1 - 6/3). */
    memset(&s, 0, sizeof s);
    CHECK(loom_text_scores_add(&s, "the cat sat on", "the cat sat on the mat", 5) == LOOM_OK);
    CHECK(near(loom_text_scores_bleu(&s), 100.0 * exp(1.0 - 6.0 / 4.0)));
    /* unigrams: 4 of 4 and 4 of 6: F = 2 (1)(2/3) / (5/3) = 0.8; bigrams 3/3 and 3/5: 0.75;
     * LCS 4: 0.8. Edit distance 2 of 6 reference tokens; not exact. */
    loom_metrics m;
    loom_metrics_clear(&m);
    CHECK(loom_text_scores_metrics(&s, "eval", &m) == LOOM_OK);
    double v = 0;
    CHECK(loom_metrics_get(&m, "eval_rouge1", &v) && near(v, 80.0));
    CHECK(loom_metrics_get(&m, "eval_rouge2", &v) && near(v, 75.0));
    CHECK(loom_metrics_get(&m, "eval_rougeL", &v) && near(v, 80.0));
    CHECK(loom_metrics_get(&m, "eval_token_error_rate", &v) && near(v, 2.0 / 6.0));
    CHECK(loom_metrics_get(&m, "eval_exact_match", &v) && near(v, 0.0));
    CHECK(loom_metrics_get(&m, "eval_sequence_error_rate", &v) && near(v, 1.0));
    CHECK(loom_metrics_get(&m, "eval_gen_len", &v) && near(v, 5.0));
    /* G2P: phones; one substitution in 3 and one word right of two. */
    memset(&s, 0, sizeof s);
    CHECK(loom_text_scores_add(&s, "K AE T", "K AE T", 4) == LOOM_OK);
    CHECK(loom_text_scores_add(&s, "D AO G", "D AA G", 4) == LOOM_OK);
    loom_metrics_clear(&m);
    CHECK(loom_text_scores_metrics(&s, "test", &m) == LOOM_OK);
    CHECK(loom_metrics_get(&m, "test_token_error_rate", &v) && near(v, 1.0 / 6.0));
    CHECK(loom_metrics_get(&m, "test_sequence_error_rate", &v) && near(v, 0.5));
    CHECK(loom_metrics_get(&m, "test_exact_match", &v) && near(v, 0.5));
}

static int score_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return perror(path), 1;
    loom_text_scores s;
    memset(&s, 0, sizeof s);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        char *h = NULL, *r = NULL;
        if (loom_tokenize_13a(line, &h) != LOOM_OK || loom_tokenize_13a(tab + 1, &r) != LOOM_OK) return 1;
        printf("%s\t%s\n", h, r);
        free(h), free(r);
        if (loom_text_scores_add(&s, line, tab + 1, 0) != LOOM_OK) return 1;
    }
    fclose(f);
    loom_metrics m;
    loom_metrics_clear(&m);
    loom_text_scores_metrics(&s, "m", &m);
    for (size_t i = 0; i < m.count; i++)
        printf("%s=%.15g\n", m.keys[i], m.values[i]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--score") == 0) return score_file(argv[2]);
    test_by_hand();
    return test_finish("test_metrics_text");
}
