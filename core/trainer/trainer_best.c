/*
 * trainer_best.c - the best model, as HF's Trainer keeps it (docs/checkpoints.md, "Best model"):
 * after each evaluation the metric named by metric_for_best_model ("eval_" prefixed when it is
 * not) is compared with state.best_metric (greater or less by greater_is_better; the first
 * evaluation always wins), and a better one records best_metric and its step (best_global_step,
 * when the run saves at all). A save then names the best step's folder best_model_checkpoint if
 * that folder exists: the one being saved, or an earlier one still there. An evaluation on a
 * step that does not save (eval_steps 500, save_steps 1000) so never names a folder that was
 * not written. Rotation never deletes best_model_checkpoint (trainer_save.c), and
 * load_best_model_at_end reloads its weights after the last step: one rank reads them and every
 * rank takes them, whichever disks have the folder (docs/checkpoints.md#files-on-one-node). The
 * same metric also goes to a scheduler that observes one (reduce_lr_on_plateau), first, as in
 * HF's Trainer._evaluate.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint_dir.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "safetensors.h"
#include "trainer_internal.h"

/* The evaluation's value of metric_for_best_model (`name`), "eval_" prefixed as HF's Trainer does. */
static loom_status eval_metric(const char *name, const loom_metrics *metrics, double *value)
{
    char key[80];
    snprintf(key, sizeof key, "%s%s", strncmp(name, "eval_", 5) == 0 ? "" : "eval_", name);
    if (loom_metrics_get(metrics, key, value)) return LOOM_OK;
    char available[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < metrics->count && used + 2 < sizeof available; i++)
        used += (size_t)snprintf(available + used, sizeof available - used, "%s%s", i ? ", " : "", metrics->keys[i]);
    return loom_error(LOOM_E_INVALID, "--metric_for_best_model %s: the evaluation has no '%s' (it has: %s)", name, key,
                      available);
}

/* HF's Trainer._evaluate: ReduceLROnPlateau.step(metrics[metric_for_best_model]) after each
 * evaluation in training. docs/semantics/schedulers.md#reduce-lr-on-plateau */
loom_status loom_trainer_observe_metric(loom_trainer *t, const loom_metrics *metrics)
{
    const loom_scheduler_vtable *schv = t->scheduler.vtable;
    if (!LOOM_HAS(schv, loom_scheduler_vtable, observe)) return LOOM_OK;
    const char *name =
        t->args.metric_for_best_model && *t->args.metric_for_best_model ? t->args.metric_for_best_model : "loss";
    double value;
    loom_status st = eval_metric(name, metrics, &value);
    if (st != LOOM_OK) return st;
    return schv->observe(t->scheduler.instance, value);
}

loom_status loom_trainer_track_best(loom_trainer *t, const loom_metrics *metrics)
{
    const char *name = t->args.metric_for_best_model;
    if (!name || !*name) return LOOM_OK;
    double value;
    loom_status st = eval_metric(name, metrics, &value);
    if (st != LOOM_OK) return st;
    int greater = t->args.greater_is_better == 1;
    double best = t->state.best_metric;
    if (isnan(best)) best = greater ? -INFINITY : INFINITY;
    if (!(greater ? value > best : value < best)) return LOOM_OK;
    t->state.best_metric = value;
    if (strcmp(t->args.save_strategy, "no") != 0) t->best_global_step = t->state.global_step;
    return LOOM_OK;
}

loom_status loom_trainer_best_at_save(loom_trainer *t)
{
    if (t->best_global_step <= 0) return LOOM_OK;
    char folder[64], path[4096];
    snprintf(folder, sizeof folder, "checkpoint-%lld", (long long)t->best_global_step);
    loom_status st = loom_path_join(path, sizeof path, t->args.output_dir, folder);
    if (st != LOOM_OK) return st;
    if (t->best_global_step != t->state.global_step && !loom_checkpoint_is_sealed(path)) return LOOM_OK;
    if (t->best_model_checkpoint && !strcmp(t->best_model_checkpoint, path)) return LOOM_OK;
    char *copy = strdup(path);
    if (!copy) return loom_error(LOOM_E_NOMEM, "out of memory");
    free(t->best_model_checkpoint);
    t->best_model_checkpoint = copy;
    t->state.best_model_checkpoint = copy;
    return LOOM_OK;
}

/* The best checkpoint opened, every tensor of this run in it with this run's dtype and size (the
 * checkpoint holds the parameters in the run's own dtype, so a byte copy restores them). */
static loom_status open_best(loom_trainer *t, const char *path, loom_safetensors **file)
{
    loom_status st = loom_safetensors_open(path, file);
    if (st != LOOM_OK) return loom_error_context(st, "load_best_model_at_end");
    for (size_t i = 0; i < t->n_tensors && st == LOOM_OK; i++) {
        loom_st_tensor tensor;
        if ((st = loom_safetensors_find(*file, t->tensors[i].name, &tensor)) != LOOM_OK) break;
        uint64_t bytes = (uint64_t)(t->tensor_offsets[i + 1] - t->tensor_offsets[i]) * t->param_size;
        if (tensor.dtype != t->param_dtype || tensor.nbytes != bytes)
            st = loom_error(LOOM_E_FORMAT, "%s: tensor '%s' differs in dtype or size from this run's", path,
                            t->tensors[i].name);
    }
    if (st != LOOM_OK) {
        loom_safetensors_close(*file);
        *file = NULL;
    }
    return st;
}

/* Tensor i from the opened checkpoint into its place in t->params. */
static void copy_best(loom_trainer *t, loom_safetensors *file, size_t i)
{
    loom_st_tensor tensor;
    if (loom_safetensors_find(file, t->tensors[i].name, &tensor) != LOOM_OK) return; /* open_best found it */
    memcpy((char *)t->params + (size_t)t->tensor_offsets[i] * t->param_size, tensor.data, (size_t)tensor.nbytes);
}

/* The reader's file onto every rank: the whole buffer in one broadcast, or under ZeRO-3 a
 * tensor at a time, each gathered, overwritten by the reader, broadcast and given back, so that
 * no rank holds more than one tensor beyond its partition. */
static loom_status spread_best(loom_trainer *t, loom_safetensors *file, int reader)
{
    const loom_comm_vtable *cv = t->comm.vtable;
    if (!loom_trainer_params_streamed(t)) {
        for (size_t i = 0; file && i < t->n_tensors; i++)
            copy_best(t, file, i);
        if (t->world_size < 2) return LOOM_OK;
        return cv->broadcast(t->comm.instance, t->params, (size_t)t->total_numel, t->param_dtype, reader, NULL);
    }
    for (size_t i = 0; i < t->n_tensors; i++) {
        const int64_t begin = t->tensor_offsets[i], n = t->tensor_offsets[i + 1] - begin;
        loom_status st = loom_trainer_params_tensor(t, i, 0);
        if (st != LOOM_OK) return st;
        if (file) copy_best(t, file, i);
        if (n > 0)
            st = cv->broadcast(t->comm.instance, (char *)t->params + (size_t)begin * t->param_size, (size_t)n,
                               t->param_dtype, reader, NULL);
        loom_status released = loom_trainer_params_tensor(t, i, 1);
        if ((st = st != LOOM_OK ? st : released) != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static void say_loaded(const loom_trainer *t)
{
    char best[64];
    snprintf(best, sizeof best, "checkpoint-%lld", (long long)t->best_global_step);
    const char *base = strrchr(t->best_model_checkpoint, '/');
    base = base ? base + 1 : t->best_model_checkpoint;
    if (!strcmp(base, best))
        loom_log(LOOM_LOG_INFO, "loading best model from %s (score: %g)", t->best_model_checkpoint,
                 t->state.best_metric);
    else
        loom_log(LOOM_LOG_INFO,
                 "loading best model from %s, the best that was saved (the best evaluation, %g at step %lld, "
                 "fell on a step without a save)",
                 t->best_model_checkpoint, t->state.best_metric, (long long)t->best_global_step);
}

/* One rank reads the best checkpoint and every rank takes its weights, as every rank takes rank
 * 0's at the start, then its part of the checkpoint's f32 masters (trainer_best_copies.c): a
 * rank whose disk lacks the folder (node 1's, when only node 0 saves) would otherwise keep the
 * last step's weights, and the final evaluation, which sums every rank's share, would mix two
 * models. A rank that cannot read the file stops every rank. */
loom_status loom_trainer_load_best(loom_trainer *t)
{
    if (!t->args.load_best_model_at_end) return LOOM_OK;
    char path[4096] = "";
    int has = 0;
    if (t->best_model_checkpoint) {
        loom_status st = loom_path_join(path, sizeof path, t->best_model_checkpoint, "model.safetensors");
        if (st != LOOM_OK) return st;
        has = access(path, F_OK) == 0;
    }
    /* The first rank whose disk has the checkpoint reads it: on one shared disk rank 0, on disks
     * of their own without --save_on_each_node node 0 (docs/checkpoints.md#files-on-one-node). */
    int reader = -1;
    loom_status st = loom_trainer_first_rank(t, has, &reader);
    if (st != LOOM_OK) return loom_error_context(st, "load_best_model_at_end: finding the best checkpoint");
    if (reader < 0) {
        /* HF warns and keeps the last weights ("Could not locate the best model"): the folder
         * was removed by hand on every disk. The ranks hold the same last weights. */
        if (t->state.is_world_process_zero && t->best_model_checkpoint)
            loom_log(LOOM_LOG_WARNING, "load_best_model_at_end: %s is gone: keeping the last step's weights", path);
        return LOOM_OK;
    }
    loom_safetensors *file = NULL;
    if (t->rank == reader) st = open_best(t, path, &file);
    if ((st = loom_trainer_fail_together(t, st)) != LOOM_OK) return st;
    st = spread_best(t, file, reader);
    loom_safetensors_close(file);
    if (st != LOOM_OK)
        return loom_error_context(st, "load_best_model_at_end: broadcasting rank %d's best weights", reader);
    if ((st = loom_trainer_best_copies(t, t->best_model_checkpoint, reader)) != LOOM_OK) return st;
    if (t->rank == reader) say_loaded(t);
    return loom_trainer_test_write_states(t);
}
