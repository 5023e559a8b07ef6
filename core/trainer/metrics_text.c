/*
 * metrics_text.c - BLEU, ROUGE, exact match and edit-distance error rates of generated text
 * (metrics_text.h; docs/seq2seq.md#metrics). Sentences are short (a target sequence): the
 * n-gram counts are quadratic scans, which needs no hash table.
 */
#include "metrics_text.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct token {
    const char *s;
    size_t n;
} token;

typedef struct tokens {
    token *t;
    size_t n;
} tokens;

/* Whitespace-separated pieces of text (not copied). */
static loom_status split(const char *text, tokens *out)
{
    size_t cap = 8;
    out->n = 0;
    out->t = malloc(cap * sizeof *out->t);
    if (!out->t) return loom_error(LOOM_E_NOMEM, "out of memory for metrics");
    for (const char *p = text; *p;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (out->n == cap) {
            token *grown = realloc(out->t, 2 * cap * sizeof *grown);
            if (!grown) return free(out->t), out->t = NULL, loom_error(LOOM_E_NOMEM, "out of memory for metrics");
            out->t = grown, cap *= 2;
        }
        out->t[out->n++] = (token){start, (size_t)(p - start)};
    }
    return LOOM_OK;
}

static int same(const token *a, const token *b)
{
    return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
}

static int same_ngram(const tokens *a, size_t i, const tokens *b, size_t j, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!same(&a->t[i + k], &b->t[j + k])) return 0;
    return 1;
}

static size_t count_ngram(const tokens *in, const tokens *of, size_t i, size_t n)
{
    size_t c = 0;
    for (size_t j = 0; j + n <= in->n; j++)
        c += same_ngram(of, i, in, j, n);
    return c;
}

/* sum over distinct n-grams of hyp of min(count in hyp, count in ref) */
static double clipped_matches(const tokens *hyp, const tokens *ref, size_t n)
{
    double m = 0;
    for (size_t i = 0; i + n <= hyp->n; i++) {
        int first = 1;
        for (size_t j = 0; j < i && first; j++)
            first = !same_ngram(hyp, j, hyp, i, n);
        if (!first) continue;
        const size_t h = count_ngram(hyp, hyp, i, n), r = count_ngram(ref, hyp, i, n);
        m += (double)(h < r ? h : r);
    }
    return m;
}

static double f_measure(double overlap, double hyp_n, double ref_n)
{
    const double p = hyp_n > 0 ? overlap / hyp_n : 0, r = ref_n > 0 ? overlap / ref_n : 0;
    return p + r > 0 ? 2 * p * r / (p + r) : 0;
}

static size_t lcs(const tokens *a, const tokens *b, size_t *row)
{
    memset(row, 0, (b->n + 1) * sizeof *row);
    for (size_t i = 1; i <= a->n; i++) {
        size_t diag = 0;
        for (size_t j = 1; j <= b->n; j++) {
            const size_t up = row[j];
            row[j] = same(&a->t[i - 1], &b->t[j - 1]) ? diag + 1 : (row[j] > row[j - 1] ? row[j] : row[j - 1]);
            diag = up;
        }
    }
    return row[b->n];
}

static size_t edit_distance(const tokens *a, const tokens *b, size_t *row)
{
    for (size_t j = 0; j <= b->n; j++)
        row[j] = j;
    for (size_t i = 1; i <= a->n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b->n; j++) {
            const size_t up = row[j];
            size_t best = diag + !same(&a->t[i - 1], &b->t[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[b->n];
}

/* One rule of the 13a regexps applied like Python's re.sub: scan left to right, a match is
 * replaced and scanning resumes after it. */
typedef size_t (*rule_fn)(const char *s, char *out); /* chars consumed (0: no match); writes */

static int is_13a_punct(unsigned char c)
{
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
           (c >= ':' && c <= '@') || c == '/';
}
static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static size_t rule_punct(const char *s, char *o) /* ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 " */
{
    if (!is_13a_punct((unsigned char)s[0])) return 0;
    return sprintf(o, " %c ", s[0]), 1;
}
static size_t rule_period_after(const char *s, char *o) /* ([^0-9])([\.,]) -> "\1 \2 " */
{
    if (!s[0] || is_digit((unsigned char)s[0]) || (s[1] != '.' && s[1] != ',')) return 0;
    return sprintf(o, "%c %c ", s[0], s[1]), 2;
}
static size_t rule_period_before(const char *s, char *o) /* ([\.,])([^0-9]) -> " \1 \2" */
{
    if ((s[0] != '.' && s[0] != ',') || !s[1] || is_digit((unsigned char)s[1])) return 0;
    return sprintf(o, " %c %c", s[0], s[1]), 2;
}
static size_t rule_dash(const char *s, char *o) /* ([0-9])(-) -> "\1 \2 " */
{
    if (!is_digit((unsigned char)s[0]) || s[1] != '-') return 0;
    return sprintf(o, "%c %c ", s[0], s[1]), 2;
}

static char *apply(const char *in, rule_fn rule)
{
    const size_t n = strlen(in);
    char *out = malloc(3 * n + 4), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        const size_t used = rule(in + i, o);
        if (used) {
            o += strlen(o);
            i += used;
        } else {
            *o++ = in[i++];
        }
    }
    *o = 0;
    return out;
}

static char *replace_all(const char *in, const char *from, const char *to)
{
    const size_t n = strlen(in), fl = strlen(from), tl = strlen(to);
    char *out = malloc(n * (tl > fl ? tl : 1) + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = in; *p;) {
        if (strncmp(p, from, fl) == 0) {
            memcpy(o, to, tl), o += tl, p += fl;
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    return out;
}

loom_status loom_tokenize_13a(const char *text, char **out)
{
    /* sacreBLEU's Tokenizer13a: drop <skipped>, join "-\n" line breaks, newlines to spaces,
     * unescape four HTML entities, pad with spaces, then TokenizerRegexp's four rules and one
     * space between tokens. */
    static const char *const edits[][2] = {{"<skipped>", ""}, {"-\n", ""},   {"\n", " "},  {"&quot;", "\""},
                                           {"&amp;", "&"},    {"&lt;", "<"}, {"&gt;", ">"}};
    static const rule_fn rules[] = {rule_punct, rule_period_after, rule_period_before, rule_dash};
    *out = NULL;
    const size_t n = strlen(text);
    char *cur = malloc(n + 3);
    if (!cur) return loom_error(LOOM_E_NOMEM, "out of memory for metrics");
    snprintf(cur, n + 3, "%s", text);
    for (size_t i = 0; i < sizeof edits / sizeof *edits && cur; i++) {
        if (i >= 3 && !strchr(cur, '&')) break;
        char *next = replace_all(cur, edits[i][0], edits[i][1]);
        free(cur);
        cur = next;
    }
    if (cur) {
        char *padded = malloc(strlen(cur) + 3);
        if (padded) sprintf(padded, " %s ", cur);
        free(cur);
        cur = padded;
    }
    for (size_t i = 0; i < sizeof rules / sizeof *rules && cur; i++) {
        char *next = apply(cur, rules[i]);
        free(cur);
        cur = next;
    }
    if (!cur) return loom_error(LOOM_E_NOMEM, "out of memory for metrics");
    char *w = cur; /* ' '.join(line.split()) in place */
    for (const char *r = cur; *r;) {
        while (*r && isspace((unsigned char)*r))
            r++;
        if (!*r) break;
        if (w != cur) *w++ = ' ';
        while (*r && !isspace((unsigned char)*r))
            *w++ = *r++;
    }
    *w = 0;
    *out = cur;
    return LOOM_OK;
}

/* rouge_score's default tokens: lowercase, every run of [a-z0-9] a token. */
static char *rouge_text(const char *text)
{
    char *t = strdup(text);
    if (!t) return NULL;
    for (char *p = t; *p; p++) {
        const unsigned char c = (unsigned char)tolower((unsigned char)*p);
        *p = (char)((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : ' ');
    }
    return t;
}

loom_status loom_text_scores_add(loom_text_scores *s, const char *hyp, const char *ref, double generated_ids)
{
    char *h13 = NULL, *r13 = NULL, *hr = rouge_text(hyp), *rr = rouge_text(ref);
    tokens th = {0}, tr = {0}, bh = {0}, br = {0}, rh = {0}, rt = {0};
    size_t *row = NULL;
    loom_status st = hr && rr ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory for metrics");
    if (st == LOOM_OK) st = loom_tokenize_13a(hyp, &h13);
    if (st == LOOM_OK) st = loom_tokenize_13a(ref, &r13);
    if (st == LOOM_OK) st = split(h13, &bh);
    if (st == LOOM_OK) st = split(r13, &br);
    if (st == LOOM_OK) st = split(hyp, &th);
    if (st == LOOM_OK) st = split(ref, &tr);
    if (st == LOOM_OK) st = split(hr, &rh);
    if (st == LOOM_OK) st = split(rr, &rt);
    size_t longest = th.n > tr.n ? th.n : tr.n;
    if (rh.n > longest) longest = rh.n;
    if (rt.n > longest) longest = rt.n;
    if (st == LOOM_OK && !(row = malloc((longest + 1) * sizeof *row)))
        st = loom_error(LOOM_E_NOMEM, "out of memory for metrics");
    if (st == LOOM_OK) {
        for (size_t n = 1; n <= 4; n++) {
            s->matches[n - 1] += clipped_matches(&bh, &br, n);
            s->totals[n - 1] += bh.n >= n ? (double)(bh.n - n + 1) : 0;
        }
        s->hyp_len += (double)bh.n;
        s->ref_len += (double)br.n;
        for (size_t n = 1; n <= 2; n++)
            s->rouge[n - 1] += f_measure(clipped_matches(&rh, &rt, n), rh.n >= n ? (double)(rh.n - n + 1) : 0,
                                         rt.n >= n ? (double)(rt.n - n + 1) : 0);
        s->rouge[2] += f_measure((double)lcs(&rh, &rt, row), (double)rh.n, (double)rt.n);
        const size_t edits = edit_distance(&th, &tr, row);
        s->exact += edits == 0 && th.n == tr.n;
        s->edits += (double)edits;
        s->ref_tokens += (double)tr.n;
        s->examples += 1;
        s->gen_tokens += generated_ids;
    }
    free(row);
    free(th.t), free(tr.t), free(bh.t), free(br.t), free(rh.t), free(rt.t);
    free(h13), free(r13), free(hr), free(rr);
    return st;
}

double loom_text_scores_bleu(const loom_text_scores *s)
{
    double log_sum = 0;
    for (int n = 0; n < 4; n++) {
        if (s->totals[n] == 0 || s->matches[n] == 0) return 0; /* no smoothing: a zero precision is 0 */
        log_sum += log(s->matches[n] / s->totals[n]);
    }
    const double bp = s->hyp_len >= s->ref_len ? 1.0 : s->hyp_len > 0 ? exp(1.0 - s->ref_len / s->hyp_len) : 0.0;
    return 100.0 * bp * exp(log_sum / 4);
}

loom_status loom_text_scores_metrics(const loom_text_scores *s, const char *prefix, loom_metrics *m)
{
    if (s->examples <= 0) return LOOM_OK;
    const double n = s->examples;
    const struct {
        const char *name;
        double value;
    } rows[] = {
        {"bleu", loom_text_scores_bleu(s)},
        {"rouge1", 100.0 * s->rouge[0] / n},
        {"rouge2", 100.0 * s->rouge[1] / n},
        {"rougeL", 100.0 * s->rouge[2] / n},
        {"exact_match", s->exact / n},
        {"token_error_rate", s->ref_tokens > 0 ? s->edits / s->ref_tokens : 0},
        {"sequence_error_rate", 1.0 - s->exact / n},
        {"gen_len", s->gen_tokens / n},
    };
    char key[96];
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        snprintf(key, sizeof key, "%s_%s", prefix, rows[i].name);
        loom_status st = loom_metrics_set(m, key, rows[i].value);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}
