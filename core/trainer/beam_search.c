/*
 * beam_search.c - HF's greedy_search and beam_search of transformers v4.2 (docs/seq2seq.md#generation):
 *
 *   every step: logprobs = log_softmax(logits) + the beam's running score; per example the
 *   2 * num_beams best of num_beams x vocab candidates, best first (ties: the lower index);
 *   a candidate ending in eos among the first num_beams becomes a finished hypothesis scored
 *   sum_logprobs / len^length_penalty (len: the start token and the tokens before eos), the
 *   others fill the num_beams running beams in order; an example is done when it holds
 *   num_beams hypotheses and (early_stopping, or its worst hypothesis is at least the best
 *   running score / cur_len^length_penalty). At max_length the running beams are added as
 *   hypotheses with their scores; the best hypothesis wins (ties: the one added last), and an
 *   eos follows it when it is shorter than max_length.
 *
 * Greedy (num_beams 1) is argmax, pad after an example's eos, until every example has ended.
 *
 * The logits processors (logits_processors.h) run where HF's do: in beam search on each beam's
 * log_softmax before its running score is added, in greedy search on the raw logits.
 */
#include "beam_search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "logits_processors.h"
#include "trainer_internal.h"

typedef struct hypothesis {
    double score;
    int64_t len;     /* tokens including the start token, excluding the eos */
    int32_t *tokens; /* [max_length] */
} hypothesis;

typedef struct hypotheses {
    hypothesis *items; /* num_beams + 1 slots, in the order they were added */
    int64_t count;
    double worst;
    int done;
} hypotheses;

/* BeamHypotheses.add */
static void hyp_add(hypotheses *h, int64_t num_beams, const int32_t *tokens, int64_t len, double sum_logprobs,
                    double length_penalty)
{
    const double score = sum_logprobs / pow((double)len, length_penalty);
    if (h->count >= num_beams && !(score > h->worst)) return;
    hypothesis *slot = &h->items[h->count++];
    slot->score = score;
    slot->len = len;
    memcpy(slot->tokens, tokens, (size_t)len * sizeof(int32_t));
    if (h->count > num_beams) { /* drop the worst (the first of equals), keep the order */
        int64_t worst = 0, second = -1;
        for (int64_t i = 1; i < h->count; i++)
            if (h->items[i].score < h->items[worst].score) worst = i;
        for (int64_t i = 0; i < h->count; i++)
            if (i != worst && (second < 0 || h->items[i].score < h->items[second].score)) second = i;
        h->worst = h->items[second].score;
        int32_t *freed = h->items[worst].tokens;
        memmove(&h->items[worst], &h->items[worst + 1], (size_t)(h->count - worst - 1) * sizeof(hypothesis));
        h->count--;
        h->items[h->count].tokens = freed;
    } else if (score < h->worst) {
        h->worst = score;
    }
}

/* BeamHypotheses.is_done */
static int hyp_is_done(const hypotheses *h, int64_t num_beams, int early_stopping, double best_sum_logprobs,
                       int64_t cur_len, double length_penalty)
{
    if (h->count < num_beams) return 0;
    if (early_stopping) return 1;
    return h->worst >= best_sum_logprobs / pow((double)cur_len, length_penalty);
}

/* log_softmax of one row, in double. */
static void log_softmax(const float *logits, int64_t V, double *out)
{
    double max = logits[0], sum = 0;
    for (int64_t v = 1; v < V; v++)
        if (logits[v] > max) max = logits[v];
    for (int64_t v = 0; v < V; v++)
        sum += exp((double)logits[v] - max);
    const double lse = max + log(sum);
    for (int64_t v = 0; v < V; v++)
        out[v] = (double)logits[v] - lse;
}

static loom_status check_config(const loom_beam_config *c, int64_t batch, int64_t vocab)
{
    if (c->num_beams < 1)
        return loom_error(LOOM_E_INVALID, "--num_beams must be >= 1 (got %lld)", (long long)c->num_beams);
    if (c->max_length < 2)
        return loom_error(LOOM_E_INVALID,
                          "--generation_max_length must be >= 2 (got %lld): it counts the decoder start token",
                          (long long)c->max_length);
    if (batch < 1 || vocab < 2)
        return loom_error(LOOM_E_INVALID, "generation: %lld examples, vocabulary %lld", (long long)batch,
                          (long long)vocab);
    if (c->num_beams > vocab)
        return loom_error(LOOM_E_INVALID, "--num_beams %lld is larger than the vocabulary (%lld)",
                          (long long)c->num_beams, (long long)vocab);
    if (!isfinite(c->length_penalty)) return loom_error(LOOM_E_INVALID, "--length_penalty must be a finite number");
    if (c->min_length < 0 || c->no_repeat_ngram_size < 0)
        return loom_error(LOOM_E_INVALID, "generation: min_length %lld and no_repeat_ngram_size %lld must be >= 0",
                          (long long)c->min_length, (long long)c->no_repeat_ngram_size);
    return LOOM_OK;
}

/* The argmax of the processed logits (the first of equals, as torch.argmax); seq: the row's
 * decoder input, step + 1 tokens. */
static int64_t greedy_pick(const loom_beam_config *c, const float *row, int64_t V, const int32_t *seq, int64_t step,
                           double *work)
{
    int64_t best = 0;
    if (!loom_logits_processors_on(c)) {
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        return best;
    }
    for (int64_t v = 0; v < V; v++)
        work[v] = row[v];
    loom_logits_process(c, seq, step + 1, work, V);
    for (int64_t v = 1; v < V; v++)
        if (work[v] > work[best]) best = v;
    return best;
}

/* seqs [B, max_length]: each row's decoder input, for the processors. */
static loom_status greedy(const loom_beam_config *c, int64_t B, int64_t V, const loom_decoder_fns *d, int32_t *out,
                          int64_t *lengths, double *scores, float *logits, double *lp, int32_t *tokens, int32_t *seqs)
{
    const int64_t G = c->max_length - 1, M = c->max_length;
    int64_t unfinished = B;
    for (int64_t b = 0; b < B; b++)
        seqs[b * M] = tokens[b] = c->decoder_start_token_id, lengths[b] = -1;
    for (int64_t i = 0; i < B * G; i++)
        out[i] = c->pad_token_id;
    if (scores) memset(scores, 0, (size_t)B * sizeof *scores);
    loom_status st = LOOM_OK;
    for (int64_t step = 0; step < G && unfinished > 0; step++) {
        if ((st = d->step(d->context, tokens, logits)) != LOOM_OK) return st;
        for (int64_t b = 0; b < B; b++) {
            if (lengths[b] >= 0) { /* finished: pad */
                tokens[b] = c->pad_token_id;
                continue;
            }
            const float *row = logits + b * V;
            const int64_t best = greedy_pick(c, row, V, seqs + b * M, step, lp);
            if (scores) { /* the model's log-probability: processors only ban */
                log_softmax(row, V, lp);
                scores[b] += lp[best];
            }
            out[b * G + step] = seqs[b * M + step + 1] = tokens[b] = (int32_t)best;
            if (best == c->eos_token_id) lengths[b] = step + 1, unfinished--;
        }
    }
    for (int64_t b = 0; b < B; b++)
        if (lengths[b] < 0) lengths[b] = G;
    return st;
}

typedef struct candidate {
    double score;
    int64_t index; /* beam * V + token */
} candidate;

loom_status loom_beam_search(const loom_beam_config *c, int64_t B, int64_t V, const loom_decoder_fns *d, int32_t *out,
                             int64_t *lengths, double *scores)
{
    loom_status st = check_config(c, B, V);
    if (st != LOOM_OK) return st;
    const int64_t K = c->num_beams, R = B * K, M = c->max_length, G = M - 1;
    float *logits = malloc((size_t)(R * V) * sizeof *logits);
    double *lp = malloc((size_t)V * sizeof *lp);
    int32_t *tokens = malloc((size_t)R * sizeof *tokens);
    if (!logits || !lp || !tokens) {
        free(logits), free(lp), free(tokens);
        return loom_error(LOOM_E_NOMEM, "out of memory for generation (%lld rows x %lld)", (long long)R, (long long)V);
    }
    /* Running beams: seqs [R, M] and their scores; the next step's in the second halves. */
    int32_t *seqs = malloc((size_t)(2 * R * M) * sizeof *seqs), *next_seqs = seqs ? seqs + R * M : NULL;
    if (K == 1) {
        st = seqs ? greedy(c, B, V, d, out, lengths, scores, logits, lp, tokens, seqs)
                  : loom_error(LOOM_E_NOMEM, "out of memory for generation (%lld rows x %lld)", (long long)R,
                               (long long)M);
        free(seqs), free(logits), free(lp), free(tokens);
        return st;
    }
    double *beam_scores = malloc((size_t)(2 * R) * sizeof *beam_scores);
    int32_t *rows = malloc((size_t)R * sizeof *rows);
    candidate *cand = malloc((size_t)(2 * K) * sizeof *cand);
    hypotheses *hyps = calloc((size_t)B, sizeof *hyps);
    hypothesis *slots = calloc((size_t)(B * (K + 1)), sizeof *slots);
    int32_t *hyp_tokens = malloc((size_t)(B * (K + 1) * M) * sizeof *hyp_tokens);
    if (!seqs || !beam_scores || !rows || !cand || !hyps || !slots || !hyp_tokens) {
        st = loom_error(LOOM_E_NOMEM, "out of memory for beam search (%lld rows x %lld positions)", (long long)R,
                        (long long)M);
        goto done;
    }
    for (int64_t b = 0; b < B; b++) {
        hyps[b].items = slots + b * (K + 1);
        hyps[b].worst = 1e9;
        for (int64_t i = 0; i <= K; i++)
            hyps[b].items[i].tokens = hyp_tokens + (b * (K + 1) + i) * M;
    }
    double *next_scores = beam_scores + R;
    for (int64_t r = 0; r < R; r++) {
        seqs[r * M] = tokens[r] = c->decoder_start_token_id;
        beam_scores[r] = r % K == 0 ? 0.0 : -1e9; /* only the first beam is live at the start */
    }
    const int processors = loom_logits_processors_on(c);
    int64_t cur_len = 1;
    while (cur_len < M) {
        if ((st = d->step(d->context, tokens, logits)) != LOOM_OK) goto done;
        int all_done = 1;
        for (int64_t b = 0; b < B; b++) {
            hypotheses *h = &hyps[b];
            if (h->done) { /* HF pads a finished example's beams (score 0, its own first row) */
                for (int64_t k = 0; k < K; k++) {
                    next_scores[b * K + k] = 0;
                    tokens[b * K + k] = c->pad_token_id;
                    rows[b * K + k] = (int32_t)(b * K);
                }
                continue;
            }
            /* The 2K best of K x V, best first, the lower index first among equals. */
            int64_t n = 0;
            for (int64_t k = 0; k < K; k++) {
                log_softmax(logits + (b * K + k) * V, V, lp);
                if (processors) loom_logits_process(c, seqs + (b * K + k) * M, cur_len, lp, V);
                const double base = beam_scores[b * K + k];
                for (int64_t v = 0; v < V; v++) {
                    const double s = lp[v] + base;
                    if (n == 2 * K && !(s > cand[n - 1].score)) continue;
                    int64_t i = n < 2 * K ? n++ : n - 1;
                    while (i > 0 && s > cand[i - 1].score) {
                        cand[i] = cand[i - 1];
                        i--;
                    }
                    cand[i].score = s;
                    cand[i].index = k * V + v;
                }
            }
            int64_t filled = 0;
            for (int64_t rank = 0; rank < n && filled < K; rank++) {
                const int64_t beam = cand[rank].index / V, token = cand[rank].index % V, row = b * K + beam;
                if (token == c->eos_token_id) {
                    if (rank >= K) continue; /* an eos below the first num_beams is not a hypothesis */
                    hyp_add(h, K, seqs + row * M, cur_len, cand[rank].score, c->length_penalty);
                } else {
                    next_scores[b * K + filled] = cand[rank].score;
                    tokens[b * K + filled] = (int32_t)token;
                    rows[b * K + filled] = (int32_t)row;
                    filled++;
                }
            }
            if (filled < K) {
                st = loom_error(LOOM_E_INTERNAL, "beam search: %lld beams for %lld (vocabulary too small)",
                                (long long)filled, (long long)K);
                goto done;
            }
            h->done = hyp_is_done(h, K, c->early_stopping, cand[0].score, cur_len, c->length_penalty);
            all_done &= h->done;
        }
        for (int64_t r = 0; r < R; r++) {
            memcpy(next_seqs + r * M, seqs + (int64_t)rows[r] * M, (size_t)cur_len * sizeof *seqs);
            next_seqs[r * M + cur_len] = tokens[r];
        }
        memcpy(seqs, next_seqs, (size_t)(R * M) * sizeof *seqs);
        memcpy(beam_scores, next_scores, (size_t)R * sizeof *beam_scores);
        cur_len++;
        if (all_done || cur_len >= M) break;
        if (d->reorder && (st = d->reorder(d->context, rows)) != LOOM_OK) goto done;
    }
    /* finalize: the running beams of unfinished examples become hypotheses. */
    for (int64_t b = 0; b < B; b++) {
        hypotheses *h = &hyps[b];
        if (!h->done)
            for (int64_t k = 0; k < K; k++)
                hyp_add(h, K, seqs + (b * K + k) * M, cur_len, beam_scores[b * K + k], c->length_penalty);
        int64_t best = 0;
        for (int64_t i = 1; i < h->count; i++)
            if (h->items[i].score >= h->items[best].score) best = i;
        const hypothesis *w = &h->items[best];
        int32_t *row = out + b * G;
        for (int64_t i = 0; i < G; i++)
            row[i] = c->pad_token_id;
        memcpy(row, w->tokens + 1, (size_t)(w->len - 1) * sizeof *row);
        lengths[b] = w->len - 1;
        if (w->len < M && c->eos_token_id >= 0) row[lengths[b]++] = c->eos_token_id;
        if (scores) scores[b] = w->score;
    }
done:
    free(seqs), free(beam_scores), free(rows), free(cand), free(hyps), free(slots), free(hyp_tokens);
    free(logits), free(lp), free(tokens);
    return st;
}

/* ---- over the trainer's model ---------------------------------------------------------- */

typedef struct model_decoder {
    const loom_model_vtable *vt;
    loom_model *m;
} model_decoder;

static loom_status model_step(void *context, const int32_t *tokens, float *logits)
{
    model_decoder *md = context;
    return md->vt->decode_rows(md->m, tokens, logits);
}

static loom_status model_reorder(void *context, const int32_t *rows)
{
    model_decoder *md = context;
    return md->vt->reorder_cache(md->m, rows);
}

loom_status loom_trainer_generation_ids(loom_trainer *t, loom_generation_ids *ids)
{
    const loom_model_vtable *mv = t->model.vtable;
    if (!LOOM_HAS(mv, loom_model_vtable, reorder_cache) || !mv->generation_ids || !mv->encode || !mv->decode_rows)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--predict_with_generate: model '%s' cannot generate from a source (it has no encode / "
                          "decode_rows / reorder_cache, ABI 1.4); use an encoder-decoder model such as t5",
                          t->model.plugin->desc->name);
    *ids = (loom_generation_ids){LOOM_HEADER_INIT(loom_generation_ids)};
    return mv->generation_ids(t->model.instance, ids);
}

loom_status loom_trainer_generate_batch(loom_trainer *t, const loom_batch *sources, const loom_beam_config *config,
                                        int32_t *out, int64_t *lengths)
{
    const loom_model_vtable *mv = t->model.vtable;
    loom_generation_ids ids;
    loom_status st = loom_trainer_generation_ids(t, &ids);
    if (st != LOOM_OK) return st;
    loom_beam_config c = *config;
    c.decoder_start_token_id = ids.decoder_start_token_id;
    c.eos_token_id = ids.eos_token_id;
    c.pad_token_id = ids.pad_token_id;
    int64_t shape[LOOM_MAX_DIMS];
    uint32_t ndim = 0;
    if ((st = loom_trainer_output_shape(t, shape, &ndim, NULL)) != LOOM_OK) return st;
    if ((st = check_config(&c, sources->batch_size, shape[ndim - 1])) != LOOM_OK) return st;
    if ((st = LOOM_PLUGIN_CALL(t->model, "encode",
                               mv->encode(t->model.instance, sources, c.num_beams, c.max_length - 1))) != LOOM_OK)
        return st;
    model_decoder md = {mv, t->model.instance};
    const loom_decoder_fns fns = {&md, model_step, model_reorder};
    return loom_beam_search(&c, sources->batch_size, shape[ndim - 1], &fns, out, lengths, NULL);
}

void loom_beam_config_from_args(const loom_args *a, loom_beam_config *c)
{
    memset(c, 0, sizeof *c);
    /* Seq2SeqTrainingArguments' generation_* win; v4.2's evaluate(max_length, num_beams)
     * spellings next; then HF's defaults, 20 and 1 (--generation_config's or a saved model's own
     * come on top of these: loom_beam_config_from_model). */
    const int64_t none = LOOM_ARG_NONE_INT;
    c->num_beams = a->generation_num_beams != none ? a->generation_num_beams : a->num_beams != none ? a->num_beams : 1;
    c->max_length = a->generation_max_length != none ? a->generation_max_length
                    : a->max_length != none          ? a->max_length
                                                     : 20;
    c->length_penalty = a->length_penalty;
    c->early_stopping = a->early_stopping == 1;
    c->eos_token_id = -1;
}
