/*
 * trainer_eval.c - evaluate() and predict(): forward passes over the eval or test loader,
 * losses summed over targets and divided once by their count, accuracy when the model counts
 * correct predictions, and the user's compute_metrics.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"
#include "trainer_generate.h"
#include "trainer_internal.h"

void loom_predictions_free(loom_predictions *p)
{
    free(p->outputs);
    free(p->labels);
    for (int64_t i = 0; i < p->n_generated; i++)
        free(p->generated_texts[i]);
    free(p->generated);
    free(p->generated_lengths);
    free(p->generated_texts);
    memset(p, 0, sizeof *p);
}

typedef struct pass_totals {
    double loss_sum;
    int64_t targets;
    int64_t correct;     /* -1: the model does not count */
    int64_t examples;
    int64_t batches;
    double seconds;
} pass_totals;

/* Under ZeRO-3 the model gathers each block from its owners as it runs (param_source.c), so
 * every rank must run as many forwards as the others: *lockstep is the most batches any rank
 * has, which a rank with fewer makes up with forwards of its last batch that count for nothing.
 * Generation is not in lockstep (hypotheses end at different lengths), and a rank without a
 * batch has none to repeat: then the whole model is gathered once for the pass instead (the
 * model's gathers return at once; *whole set), and the pass ends with loom_trainer_params_done. */
static loom_status lockstep_batches(loom_trainer *t, int64_t n_batches, int64_t *lockstep, int *whole)
{
    *lockstep = n_batches;
    *whole = 0;
    if (!loom_trainer_params_streamed(t)) return LOOM_OK;
    /* The most and the fewest batches in one maximum: of n and of -n. */
    int64_t counts[2] = {n_batches, -n_batches};
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->all_reduce(t->comm.instance, counts, 2, LOOM_DTYPE_I64, LOOM_REDUCE_MAX, NULL);
    if (st != LOOM_OK) return st;
    const int64_t most = counts[0], least = -counts[1];
    if (t->args.predict_with_generate || (least == 0 && most > 0)) {
        *whole = 1;
        return loom_trainer_params_whole(t);
    }
    *lockstep = most;
    return LOOM_OK;
}

/* One pass over a loader: sums, and the predictions when keep != NULL. With
 * --predict_with_generate, also generation from every batch (its text metrics into gen_metrics,
 * its sequences into `generated` when not NULL). Every rank ends with the sums and the kept
 * predictions of the whole set, each example counted once whatever the number of ranks. */
static loom_status run_pass(loom_trainer *t, loom_dataloader *dl, const char *prefix, loom_predictions *keep,
                            pass_totals *totals, loom_predictions *generated, loom_metrics *gen_metrics)
{
    int whole = 0; /* this pass gathered the whole model (lockstep_batches) */
    loom_generation_pass gen;
    memset(&gen, 0, sizeof gen);
    memset(totals, 0, sizeof *totals);
    totals->correct = 0;
    int counts_correct = 1;
    loom_batch_buffer buf;
    loom_status st = loom_batch_buffer_init(&buf, dl->dataset, dl->batch_size);
    if (st != LOOM_OK) return st;
    /* Whatever loader a hook made: padding would count examples twice. Ranks may then run
     * one batch fewer than others, which is safe because nothing in a forward pass, in
     * generation or at PREDICTION_STEP communicates, except the model's gathers under ZeRO-3
     * (lockstep_batches). */
    dl->unpadded = 1;
    if ((st = loom_dataloader_set_epoch(dl, 0)) != LOOM_OK) goto done;
    if (t->args.predict_with_generate && (st = loom_generation_pass_init(t, &gen, dl->batch_size)) != LOOM_OK)
        goto done;
    int64_t n_batches = loom_dataloader_len(dl), lockstep = n_batches;
    if ((st = lockstep_batches(t, n_batches, &lockstep, &whole)) != LOOM_OK) goto done;
    int64_t row_size = 0;
    int64_t shape[LOOM_MAX_DIMS];
    uint32_t ndim = 0;
    if ((st = loom_trainer_output_shape(t, shape, &ndim, &row_size)) != LOOM_OK) goto done;
    if (keep) {
        int64_t rows = n_batches * dl->batch_size;
        keep->outputs = malloc((size_t)(rows * row_size) * sizeof(float) + 1);
        keep->labels = malloc((size_t)rows * sizeof(int32_t) + 1);
        keep->row_size = row_size;
        keep->n_rows = 0;
        if (!keep->outputs || !keep->labels) {
            st = loom_error(LOOM_E_NOMEM, "out of memory for %lld predictions", (long long)rows);
            goto done;
        }
    }
    /* PREDICTION_STEP tells callbacks how long the pass is ("<prefix>_batches"): progress bars. */
    loom_metrics length;
    char key[96];
    loom_metrics_clear(&length);
    snprintf(key, sizeof key, "%s_batches", prefix);
    loom_metrics_set(&length, key, (double)n_batches);
    double start = loom_now_seconds();
    for (int64_t b = 0; b < n_batches; b++) {
        if ((st = loom_dataloader_load(dl, b, &buf)) != LOOM_OK) goto done;
        loom_forward_result result = {LOOM_HEADER_INIT(loom_forward_result)};
        loom_tensor_view outputs = {LOOM_HEADER_INIT(loom_tensor_view)};
        loom_tensor_view *out_view = NULL;
        if (keep) {
            outputs.data = keep->outputs + keep->n_rows * row_size;
            outputs.dtype = LOOM_DTYPE_F32;
            outputs.ndim = ndim + 1;
            outputs.shape[0] = buf.batch.batch_size;
            memcpy(outputs.shape + 1, shape, ndim * sizeof *shape);
            out_view = &outputs;
        }
        if ((st = t->hooks.prediction_step(t, &buf.batch, &result, out_view)) != LOOM_OK) goto done;
        if (t->args.predict_with_generate &&
            (st = loom_generation_pass_batch(t, &gen, &buf.batch, generated)) != LOOM_OK)
            goto done;
        if (keep) {
            memcpy(keep->labels + keep->n_rows, buf.labels, (size_t)buf.batch.batch_size * sizeof(int32_t));
            keep->n_rows += buf.batch.batch_size;
        }
        totals->loss_sum += result.loss_sum;
        totals->targets += result.n_targets;
        if (result.n_correct < 0) counts_correct = 0;
        else totals->correct += result.n_correct;
        totals->examples += buf.batch.batch_size;
        totals->batches++;
        if ((st = loom_trainer_fire(t, LOOM_EVENT_PREDICTION_STEP, &length, NULL)) != LOOM_OK) goto done;
    }
    /* The forwards this rank owes the others' gathers: its last batch again, counted nowhere. */
    for (int64_t b = n_batches; b < lockstep; b++) {
        loom_forward_result ignored = {LOOM_HEADER_INIT(loom_forward_result)};
        if ((st = t->hooks.prediction_step(t, &buf.batch, &ignored, NULL)) != LOOM_OK) goto done;
    }
    totals->seconds = loom_now_seconds() - start;
    /* Every rank scored its shard: the metrics are over the whole set. */
    double sums[5] = {totals->loss_sum, (double)totals->targets, (double)totals->correct, (double)totals->examples,
                      counts_correct ? 0.0 : 1.0};
    const loom_comm_vtable *cv = t->comm.vtable;
    if ((st = cv->all_reduce(t->comm.instance, sums, 5, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL)) != LOOM_OK) goto done;
    totals->loss_sum = sums[0];
    totals->targets = (int64_t)sums[1];
    totals->correct = (int64_t)sums[2];
    totals->examples = (int64_t)sums[3];
    if (sums[4] > 0) totals->correct = -1;
    if (t->args.predict_with_generate && (st = loom_generation_pass_finish(t, &gen, prefix, gen_metrics)) != LOOM_OK)
        goto done;
    st = loom_trainer_gather_predictions(t, keep, t->args.predict_with_generate ? generated : NULL);
done:
    loom_generation_pass_free(&gen);
    loom_batch_buffer_free(&buf);
    if (whole) {
        loom_status released = loom_trainer_params_done(t);
        if (st == LOOM_OK) st = released;
    }
    return st;
}

static loom_status totals_to_metrics(loom_trainer *t, const pass_totals *totals, const char *prefix,
                                     const loom_predictions *predictions, int language_model,
                                     const loom_metrics *gen_metrics, loom_metrics *metrics)
{
    char key[96];
    loom_metrics_clear(metrics);
    if (totals->targets > 0) {
        double loss = totals->loss_sum / (double)totals->targets;
        snprintf(key, sizeof key, "%s_loss", prefix);
        loom_metrics_set(metrics, key, loss);
        /* HF's run_clm reports exp(eval_loss) as "perplexity". */
        if (language_model) {
            snprintf(key, sizeof key, "%s", strcmp(prefix, "eval") == 0 ? "perplexity" : "test_perplexity");
            loom_metrics_set(metrics, key, exp(loss));
        }
        if (!t->args.prediction_loss_only && totals->correct >= 0) {
            snprintf(key, sizeof key, "%s_accuracy", prefix);
            loom_metrics_set(metrics, key, (double)totals->correct / (double)totals->targets);
        }
    }
    for (size_t i = 0; i < gen_metrics->count; i++) { /* after the loss, as HF orders them */
        loom_status st = loom_metrics_set(metrics, gen_metrics->keys[i], gen_metrics->values[i]);
        if (st != LOOM_OK) return st;
    }
    if (t->hooks.compute_metrics && predictions && !t->args.prediction_loss_only) {
        loom_status st = t->hooks.compute_metrics(t, predictions, prefix, metrics);
        if (st != LOOM_OK) return st;
    }
    /* HF's speed_metrics, rounded as it rounds them. */
    const double seconds = totals->seconds;
    snprintf(key, sizeof key, "%s_runtime", prefix);
    loom_metrics_set(metrics, key, loom_round_to(seconds, 4));
    snprintf(key, sizeof key, "%s_samples_per_second", prefix);
    loom_metrics_set(metrics, key, seconds > 0 ? loom_round_to((double)totals->examples / seconds, 3) : 0.0);
    snprintf(key, sizeof key, "%s_steps_per_second", prefix);
    loom_metrics_set(metrics, key, seconds > 0 ? loom_round_to((double)totals->batches / seconds, 3) : 0.0);
    return LOOM_OK;
}

loom_status loom_default_evaluate(loom_trainer *t, const char *metric_key_prefix, loom_metrics *metrics)
{
    loom_status st = loom_trainer_prepare(t);
    if (st != LOOM_OK) return st;
    loom_dataloader dl;
    if ((st = t->hooks.get_eval_dataloader(t, &dl)) != LOOM_OK) return st;
    loom_predictions predictions = {0};
    pass_totals totals;
    loom_metrics gen_metrics;
    loom_metrics_clear(&gen_metrics);
    st = run_pass(t, &dl, metric_key_prefix, t->hooks.compute_metrics ? &predictions : NULL, &totals,
                  t->hooks.compute_metrics ? &predictions : NULL, &gen_metrics);
    if (st == LOOM_OK)
        st = totals_to_metrics(t, &totals, metric_key_prefix, &predictions, dl.dataset->labels_per_example > 1,
                               &gen_metrics, metrics);
    loom_predictions_free(&predictions);
    loom_dataloader_free(&dl);
    if (st != LOOM_OK) return st;
    if (t->training_begun || t->state.global_step > 0 || t->state.epoch > 0)
        loom_metrics_set(metrics, "epoch", t->state.epoch);
    if ((st = t->hooks.log(t, metrics)) != LOOM_OK) return st;
    return loom_trainer_fire(t, LOOM_EVENT_EVALUATE, metrics, NULL);
}

loom_status loom_default_predict(loom_trainer *t, loom_predictions *predictions, loom_metrics *metrics)
{
    loom_status st = loom_trainer_prepare(t);
    if (st != LOOM_OK) return st;
    loom_dataloader dl;
    if ((st = t->hooks.get_test_dataloader(t, &dl)) != LOOM_OK) return st;
    pass_totals totals;
    /* A language model's outputs are [T, vocab] per example: scoring keeps only the metrics. */
    int language_model = dl.dataset->labels_per_example > 1;
    loom_metrics gen_metrics;
    loom_metrics_clear(&gen_metrics);
    st = run_pass(t, &dl, "test", language_model ? NULL : predictions, &totals, predictions, &gen_metrics);
    if (st == LOOM_OK) st = totals_to_metrics(t, &totals, "test", predictions, language_model, &gen_metrics, metrics);
    loom_dataloader_free(&dl);
    if (st != LOOM_OK) return st;
    return loom_trainer_fire(t, LOOM_EVENT_PREDICT, metrics, NULL);
}

loom_status loom_trainer_evaluate(loom_trainer *t, loom_metrics *metrics)
{
    return t->hooks.evaluate(t, "eval", metrics);
}

loom_status loom_trainer_predict(loom_trainer *t, loom_predictions *predictions, loom_metrics *metrics)
{
    memset(predictions, 0, sizeof *predictions);
    return t->hooks.predict(t, predictions, metrics);
}

static void print_predictions(FILE *f, const void *context)
{
    const loom_predictions *p = context;
    fprintf(f, "index\tprediction\n");
    for (int64_t i = 0; i < p->n_rows; i++) {
        const float *row = p->outputs + i * p->row_size;
        int64_t best = 0;
        for (int64_t c = 1; c < p->row_size; c++)
            if (row[c] > row[best]) best = c;
        fprintf(f, "%lld\t%lld\n", (long long)i, (long long)best);
    }
}

loom_status loom_trainer_write_predictions(loom_trainer *t, const loom_predictions *p, const char *path)
{
    (void)t;
    return loom_write_text_atomic(path, print_predictions, p);
}
