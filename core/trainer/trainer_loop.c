/*
 * trainer_loop.c - train(): epochs, gradient accumulation, the step protocol (docs/architecture.md#step-protocol)
 * (count -> forward/backward -> finish grads -> unscale + overflow -> norm + clip -> optimizer
 * -> cast -> publish -> schedule), HF's DefaultFlowCallback (when to log, evaluate, save, stop),
 * and callback dispatch.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <loom/kernels.h>

#include "checkpoint_dir.h"
#include "device.h"
#include "error.h"
#include "grad_rows.h"
#include "host.h"
#include "step_pieces.h"
#include "trainer_generate.h"
#include "trainer_internal.h"

double loom_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- callbacks --------------------------------------------------------------------------- */

/* TrainerControl's flags are booleans (callback.h: 0 or 1). Any other value is a callback
 * writing something else there (a count, uninitialised memory), which would count as true and
 * stop, save or evaluate the run with no word of which callback asked; checked after each
 * callback so that the line names the one that wrote it. */
static loom_status check_control(const loom_trainer *t, const loom_plugin_instance *slot, uint32_t event)
{
    const loom_trainer_control *c = &t->control;
    const struct {
        const char *name;
        int32_t value;
    } flags[] = {{"should_training_stop", c->should_training_stop},
                 {"should_epoch_stop", c->should_epoch_stop},
                 {"should_save", c->should_save},
                 {"should_evaluate", c->should_evaluate},
                 {"should_log", c->should_log}};
    for (size_t k = 0; k < sizeof flags / sizeof *flags; k++)
        if (flags[k].value != 0 && flags[k].value != 1)
            return loom_error(LOOM_E_INVALID,
                              "callback '%s' set control->%s to %d (event %u, step %lld); a control "
                              "flag is 0 or 1",
                              loom_trainer_callback_name(slot), flags[k].name, (int)flags[k].value, (unsigned)event,
                              (long long)t->state.global_step);
    return LOOM_OK;
}

loom_status loom_trainer_fire(loom_trainer *t, uint32_t event, const loom_metrics *metrics, const char *text)
{
    loom_metric items[LOOM_METRICS_MAX];
    loom_event_payload payload = {LOOM_HEADER_INIT(loom_event_payload)};
    if (metrics) {
        for (size_t i = 0; i < metrics->count; i++) items[i] = (loom_metric){metrics->keys[i], metrics->values[i]};
        payload.metrics = items;
        payload.n_metrics = metrics->count;
    }
    payload.text = text;
    for (size_t i = 0; i < t->n_callbacks; i++) {
        const loom_callback_vtable *cv = t->callbacks[i].vtable;
        /* Cleared first, as LOOM_PLUGIN_CALL does: a callback failing without a message must not
         * be blamed for an older one an earlier, handled failure left. */
        loom_error_clear();
        loom_status st = cv->on_event(t->callbacks[i].instance, event, &t->state, &t->control, &payload);
        if (st != LOOM_OK) {
            if (!*loom_error_message())
                loom_error(st, "callback '%s' failed (%s)", loom_trainer_callback_name(&t->callbacks[i]),
                           loom_status_string(st));
            return st;
        }
        if ((st = check_control(t, &t->callbacks[i], event)) != LOOM_OK) return st;
    }
    /* HF's CallbackHandler resets these after the matching events. */
    switch (event) {
    case LOOM_EVENT_LOG: t->control.should_log = 0; break;
    case LOOM_EVENT_EVALUATE: t->control.should_evaluate = 0; break;
    case LOOM_EVENT_SAVE: t->control.should_save = 0; break;
    default: break;
    }
    return LOOM_OK;
}

loom_status loom_default_log(loom_trainer *t, const loom_metrics *logs)
{
    cJSON *entry = cJSON_CreateObject();
    if (!entry) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < logs->count; i++) cJSON_AddNumberToObject(entry, logs->keys[i], logs->values[i]);
    if (!cJSON_GetObjectItemCaseSensitive(entry, "epoch")) cJSON_AddNumberToObject(entry, "epoch", t->state.epoch);
    cJSON_AddNumberToObject(entry, "step", (double)t->state.global_step);
    cJSON_AddItemToArray(t->log_history, entry);
    return loom_trainer_fire(t, LOOM_EVENT_LOG, logs, NULL);
}

/* ---- the default hooks ------------------------------------------------------------------- */

static const loom_trainer_hooks default_hooks = {
    .get_train_dataloader = loom_default_get_train_dataloader,
    .get_eval_dataloader = loom_default_get_eval_dataloader,
    .get_test_dataloader = loom_default_get_test_dataloader,
    .log = loom_default_log,
    .create_optimizer_and_scheduler = loom_default_create_optimizer_and_scheduler,
    .compute_loss = NULL,
    .training_step = loom_default_training_step,
    .prediction_step = loom_default_prediction_step,
    .evaluate = loom_default_evaluate,
    .predict = loom_default_predict,
    .compute_metrics = NULL,
    .user_data = NULL,
    .decode_tokens = loom_default_decode_tokens,
};

const loom_trainer_hooks *loom_trainer_default_hooks(void) { return &default_hooks; }

/* ---- one optimizer step ------------------------------------------------------------------ */

/* The kernel table of the memory the step reads and writes (docs/architecture.md#device-step):
 * the device's when the fp32 values the optimizer steps are device memory (no master copy in
 * host memory, no ZeRO-Offload partition), else the CPU's. */
static const loom_kernels_api *step_kernels(const loom_trainer *t)
{
    if (t->device != LOOM_DEVICE_CPU && !t->has_master && !t->offload_params) return loom_device_kernels();
    return loom_host_api_table()->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
}

/* The global L2 norm in one canonical order. The flat buffer is cut into pieces: fixed blocks of
 * LOOM_NORM_BLOCK elements further cut at tensor boundaries (trainer_prepare.c). Each piece's sum
 * of squares is computed in one pass by the one rank responsible for it (in parallel over
 * pieces, by the step table's sum_squares: the CPU's or the device's), the per-piece sums are
 * combined across ranks by an all-reduce in which every other
 * rank contributes an exact zero, and the pieces are added in order. The result is therefore the
 * same bits whatever the thread count, the world size or the sharding strategy, as long as the
 * strategy cuts the buffer only at piece boundaries (ddp, sharded_ddp's whole tensors and zero1's
 * block-aligned partitions all do). A non-finite value anywhere makes the result non-finite. */
static void work_squares(loom_trainer *t, float *const *grads)
{
    const struct loom_norm_work *work = t->norm_work;
    int64_t n_work = (int64_t)t->n_norm_work;
    /* A device table without the member: the CPU's, over memory it may address (gpu.md). */
    const loom_kernels_api *k = step_kernels(t);
    if (!LOOM_HAS(k, loom_kernels_api, sum_squares))
        k = loom_host_api_table()->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
    /* Work items are in flat order, so each owned range's items are one run: one call each. */
    for (int64_t w0 = 0, w1; w0 < n_work; w0 = w1) {
        for (w1 = w0 + 1; w1 < n_work && work[w1].owned_index == work[w0].owned_index;) w1++;
        k->sum_squares(t->norm_work_sums + w0, grads[work[w0].owned_index], t->norm_bounds + 2 * w0, w1 - w0);
    }
}

/* The work items' sums (t->norm_work_sums: work_squares, or the piecewise step's norm pass)
 * combined into the global squared norm. */
static loom_status global_squared_norm(loom_trainer *t, int overflow, double *out)
{
    double *partials = t->norm_piece_sums;
    memset(partials, 0, (size_t)t->n_norm_pieces * sizeof *partials);
    const struct loom_norm_work *work = t->norm_work;
    const double *work_sums = t->norm_work_sums;
    int64_t n_work = (int64_t)t->n_norm_work;
    for (int64_t w = 0; w < n_work; w++) partials[work[w].piece] += work_sums[w];
    if (overflow && t->n_norm_pieces > 0) partials[0] = INFINITY;
    loom_status st = LOOM_OK;
    if (t->world_size > 1) {
        const loom_comm_vtable *cv = t->comm.vtable;
        st =
            cv->all_reduce(t->comm.instance, partials, (size_t)t->n_norm_pieces, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL);
    }
    double total = 0.0;
    for (int64_t p = 0; p < t->n_norm_pieces; p++) total += partials[p];
    *out = overflow ? INFINITY : total;
    return st;
}

/* Gradients that are not finite because the parameters are not: the update before wrote NaN or
 * inf into them (an optimizer plugin's fault, or a rate far too large), or the run started from
 * such weights. The precision plugin's word on this step's gradients ("lower --learning_rate")
 * would point at the wrong step, so the parameters get the gradients' own canonical pass, on
 * such steps only. Every rank is here (the overflow is global), so the all-reduce pairs up. */
static loom_status check_params(loom_trainer *t, float *const *master_params)
{
    work_squares(t, master_params);
    double squared = 0;
    loom_status st = global_squared_norm(t, 0, &squared);
    if (st != LOOM_OK || isfinite(squared)) return st;
    return loom_error(LOOM_E_OVERFLOW,
                      "optimizer step %lld: the parameters are not finite (NaN or inf) before it: written by the "
                      "previous update of optimizer '%s' (learning rate %g), or present in the weights the run "
                      "started from",
                      (long long)t->scheduler_step + 1, t->optimizer.plugin->desc->name, t->last_lr);
}

static int counts_tokens(const loom_trainer *t)
{
    return strcmp(t->args.include_num_input_tokens_seen, "no") != 0;
}

static loom_status comm_sum(loom_trainer *t, double *value)
{
    return loom_trainer_reduce_f64(t, value, 1, LOOM_REDUCE_SUM);
}

/* The one divisor of the step's loss, known before backward from this rank's `targets` (those of
 * its micro-batches of the step) (docs/architecture.md#loss-normalisation). With HF's default
 * --average_tokens_across_devices true: the targets of the whole accumulated batch over all
 * ranks. With false, HF divides by the rank's own targets and DDP then averages the ranks'
 * gradients; loom's reductions are sums, so the world size joins the divisor here
 * (docs/semantics/trainer.md#gradient-accumulation). */
static loom_status loss_divisor(loom_trainer *t, double targets, double *divisor)
{
    *divisor = targets;
    if (t->args.average_tokens_across_devices) return comm_sum(t, divisor);
    *divisor *= (double)t->world_size;
    return LOOM_OK;
}

/* The step's logged loss from this rank's sum of its targets' losses: HF averages the ranks'
 * tr_loss, each the rank's loss sum over its divisor times the world size that HF's
 * compute_loss multiplies in under average_tokens_across_devices. That is the sum over every
 * target over the global count, or, without it, the mean over the ranks of each rank's own
 * per-target mean. The first keeps its one division after the sum. */
static loom_status step_mean_loss(loom_trainer *t, double step_loss, double divisor, double *mean)
{
    if (t->args.average_tokens_across_devices) {
        loom_status st = comm_sum(t, &step_loss);
        *mean = divisor > 0 ? step_loss / divisor : 0.0;
        return st;
    }
    *mean = divisor > 0 ? step_loss / divisor : 0.0;
    return comm_sum(t, mean);
}

/* After backward: overflow, norm, clip, update, cast, publish. *taken = 0 on a skipped step. */
static loom_status optimizer_step(loom_trainer *t, int *taken)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    const loom_precision_vtable *pv = t->precision.vtable;
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    const loom_scheduler_vtable *schv = t->scheduler.vtable;
    loom_status st = LOOM_PLUGIN_CALL(t->sharding, "finish_grads", sv->finish_grads(t->sharding.instance));
    if (st != LOOM_OK) return st;

    void *owned_grads[64];
    float *master_params[64], *master_grads[64];
    if (t->n_owned > 64) return loom_error(LOOM_E_UNSUPPORTED, "more than 64 owned ranges");
    for (size_t r = 0; r < t->n_owned; r++)
        if ((st = LOOM_PLUGIN_CALL(t->sharding, "owned_grads",
                                   sv->owned_grads(t->sharding.instance, r, &owned_grads[r]))) != LOOM_OK)
            return st;
    /* The late rows of a two-part gradient, reduced and added the same way for every strategy. */
    if ((st = loom_grad_rows_finish(t, !t->gradients_local, owned_grads)) != LOOM_OK) return st;
    for (size_t r = 0; r < t->n_owned; r++) {
        if ((st = LOOM_PLUGIN_CALL(
                 t->precision, "master",
                 pv->master(t->precision.instance, r, owned_grads[r], &master_params[r], &master_grads[r]))) != LOOM_OK)
            return st;
    }
    int32_t overflow = 0;
    if (t->step_pieces) {
        /* The f32 gradients a piece at a time, never all at once (step_pieces.c). */
        if ((st = loom_step_pieces_norm(t, owned_grads, &overflow)) != LOOM_OK) return st;
    } else {
        if ((st = LOOM_PLUGIN_CALL(t->precision, "unscale",
                                   pv->unscale(t->precision.instance, owned_grads, t->n_owned, &overflow))) != LOOM_OK)
            return st;
        work_squares(t, master_grads);
    }
    /* One collective decides both the norm and the overflow: a rank that saw inf/NaN (its
     * precision plugin said so, or its squares are not finite) contributes inf, and a sum is
     * finite only if every term is. */
    double squared = 0;
    if ((st = global_squared_norm(t, overflow, &squared)) != LOOM_OK) return st;
    overflow = !isfinite(squared);
    if (overflow && (st = check_params(t, master_params)) != LOOM_OK) return st;
    double attempted = pv->loss_scale(t->precision.instance);
    if ((st = LOOM_PLUGIN_CALL(t->precision, "update_scale", pv->update_scale(t->precision.instance, overflow))) !=
        LOOM_OK)
        return st;
    *taken = !overflow;
    if (overflow) {
        /* Skipped: parameters, optimizer states and the schedule stay where they were (the
         * scheduler counts steps taken, as DeepSpeed's skipped lr_scheduler.step). */
        t->state.skipped_steps++;
        /* The norm of this step's gradients is not finite, and is logged so (HF logs what
         * clip_grad_norm_ returns after unscaling: inf or NaN): the last step's, or 0 before
         * any, would read as a real gradient. */
        t->last_grad_norm = squared;
        if (t->state.is_world_process_zero)
            loom_log(LOOM_LOG_WARNING,
                     "step %lld: overflow (inf/NaN gradients), step skipped. Attempted loss scale: %g, "
                     "next: %g",
                     (long long)t->state.global_step + 1, attempted, pv->loss_scale(t->precision.instance));
        return LOOM_OK;
    }

    double norm = sqrt(squared);
    t->last_grad_norm = norm;
    double clip = 1.0;
    if (t->args.max_grad_norm > 0) {
        /* torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1. */
        double coefficient = t->args.max_grad_norm / (norm + 1e-6);
        if (coefficient < 1.0) clip = coefficient;
    }

    loom_schedule_value value = {LOOM_HEADER_INIT(loom_schedule_value)};
    if ((st = LOOM_PLUGIN_CALL(t->scheduler, "value", schv->value(t->scheduler.instance, t->scheduler_step, &value))) !=
        LOOM_OK)
        return st;
    /* The host checks what a third-party scheduler returns rather than leave it to each
     * optimizer (the shipped ones refuse it, naming themselves, not the scheduler; another may
     * step with it and spread NaN through the model). */
    if (!isfinite(value.lr) || value.lr < 0)
        return loom_error(LOOM_E_INVALID, "scheduler '%s': learning rate %g at step %lld is not a finite value >= 0",
                          t->scheduler.plugin->desc->name, value.lr, (long long)t->scheduler_step + 1);
    for (size_t s = 0; s < t->n_spans; s++) {
        size_t r = t->span_range[s];
        int64_t at = t->span_flat_begin[s] - t->owned[r].begin;
        t->spans[s].param = master_params[r] + at;
        t->spans[s].grad = master_grads[r] ? master_grads[r] + at : NULL; /* NULL: piecewise */
    }
    loom_optimizer_step step = {LOOM_HEADER_INIT(loom_optimizer_step)};
    step.step = t->scheduler_step + 1;
    step.lr = value.lr;
    t->last_lr = value.lr;
    step.grad_scale = clip;
    step.momentum = value.momentum;
    step.comm = t->comm.instance;
    step.comm_vtable = t->comm.vtable;
    step.rank = t->rank;
    step.world_size = t->world_size;
    step.kernels = step_kernels(t);
    if (t->tensor_stats) {
        /* Whole-tensor statistics (LAMB): each element counted by one rank, summed in rank order. */
        size_t n_stats = t->n_tensors * ov->tensor_stats;
        memset(t->tensor_stats, 0, n_stats * sizeof *t->tensor_stats);
        for (size_t s = 0; s < t->n_stat_spans; s++) {
            size_t whole = t->stat_span_of[s];
            int64_t skip = t->stat_flat_begin[s] - t->span_flat_begin[whole];
            t->stat_spans[s].param = t->spans[whole].param + skip;
            t->stat_spans[s].grad = t->spans[whole].grad + skip;
        }
        if ((st = LOOM_PLUGIN_CALL(t->optimizer, "partial_stats",
                                   ov->partial_stats(t->optimizer.instance, t->stat_spans, t->n_stat_spans, &step,
                                                     t->tensor_stats))) != LOOM_OK)
            return st;
        const loom_comm_vtable *comm = t->comm.vtable;
        if (t->world_size > 1 && (st = comm->all_reduce(t->comm.instance, t->tensor_stats, n_stats, LOOM_DTYPE_F64,
                                                        LOOM_REDUCE_SUM, NULL)) != LOOM_OK)
            return st;
        step.tensor_stats = t->tensor_stats;
        step.n_tensors = t->n_tensors;
    }
    if (t->step_pieces) {
        if ((st = loom_step_pieces_update(t, owned_grads, master_params, &step)) != LOOM_OK) return st;
    } else {
        if ((st = LOOM_PLUGIN_CALL(t->optimizer, "step",
                                   ov->step(t->optimizer.instance, t->spans, t->n_spans, &step))) != LOOM_OK)
            return st;
        if ((st = LOOM_PLUGIN_CALL(t->precision, "cast_to_model", pv->cast_to_model(t->precision.instance))) != LOOM_OK)
            return st;
    }
    if ((st = LOOM_PLUGIN_CALL(t->sharding, "publish_params", sv->publish_params(t->sharding.instance))) != LOOM_OK)
        return st;
    t->scheduler_step++;
    return LOOM_OK;
}

/* Before the first micro-batch of a step: an optimizer that exchanges its own compressed state
 * (1-bit Adam after its warm-up) gets this rank's own gradients; the sharding plugin then
 * communicates nothing (trainer_setup.c refused shardings that cannot). */
static loom_status choose_reduction(loom_trainer *t)
{
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    if (!LOOM_HAS(ov, loom_optimizer_vtable, local_gradients)) return LOOM_OK;
    int32_t local = ov->local_gradients(t->optimizer.instance, t->scheduler_step + 1) != 0;
    t->gradients_local = local;
    if (!LOOM_HAS(sv, loom_sharding_vtable, set_reduction))
        return local ? loom_error(LOOM_E_UNSUPPORTED, "sharding '%s' cannot keep gradients local for optimizer '%s'",
                                  t->sharding.plugin->desc->name, t->optimizer.plugin->desc->name)
                     : LOOM_OK;
    return LOOM_PLUGIN_CALL(t->sharding, "set_reduction", sv->set_reduction(t->sharding.instance, !local));
}

static double current_lr(loom_trainer *t)
{
    const loom_scheduler_vtable *schv = t->scheduler.vtable;
    loom_schedule_value value = {LOOM_HEADER_INIT(loom_schedule_value)};
    if (schv->value(t->scheduler.instance, t->scheduler_step, &value) != LOOM_OK) return NAN;
    return value.lr;
}

/* ---- logging, evaluation and saving at step boundaries ------------------------------------ */

/* What one micro-batch's loss (summed over its targets; `divisor` is the step's, loss_divisor)
 * adds to the step's logged loss sum. HF's logging_nan_inf_filter
 * (Trainer._inner_training_loop), on this rank before the ranks are averaged: a nan or inf loss
 * adds instead the mean of what this rank added since the last log, tr_loss / (1 + global_step -
 * last logged step), so one bad batch does not make the logged loss (and train_loss) nan. Only
 * what is logged changes: the micro-batch's gradients are already in. */
static double logged_loss_sum(loom_trainer *t, double loss_sum, double divisor)
{
    loom_loss_tracker *losses = &t->losses;
    /* HF's units: this rank's share of the step's mean loss (the shares average to it). */
    double share = divisor > 0 ? (double)t->world_size / divisor : 0.0;
    if (!t->args.logging_nan_inf_filter || isfinite(loss_sum)) {
        losses->rank_since_log += loss_sum * share;
        return loss_sum;
    }
    double mean = losses->rank_since_log / (double)(1 + losses->steps_since_log);
    losses->rank_since_log += mean;
    return share > 0 ? mean / share : 0.0;
}

/* Tests only: LOOM_TEST_NAN_LOSS_AT_STEP="S0,S1,..." logs the losses of the micro-batches of
 * steps S_i (counted from 1, every rank) as NaN, or as +inf for an entry written "S:inf". The
 * step itself trains as usual: only the loss the log is made of changes (logged_loss_sum).
 * `spec` is the variable, read once per run (NULL: unset). */
static double test_loss_override(const char *spec, const loom_trainer *t, double loss_sum)
{
    const char *p = spec;
    while (p && *p) {
        char *end = NULL;
        long long step = strtoll(p, &end, 10);
        int inf = strncmp(end, ":inf", 4) == 0;
        if (step == t->state.global_step + 1) return inf ? INFINITY : NAN;
        p = strchr(end, ',');
        if (p) p++;
    }
    return loss_sum;
}

static loom_status save_checkpoint_now(loom_trainer *t)
{
    char folder[4096];
    loom_status st = loom_trainer_checkpoint_dir(t, folder, sizeof folder);
    if (st == LOOM_OK) st = loom_trainer_save_checkpoint(t);
    if (st == LOOM_OK) t->checkpoint_step = t->state.global_step;
    return st == LOOM_OK ? loom_trainer_fire(t, LOOM_EVENT_SAVE, NULL, folder) : st;
}

static loom_status maybe_log_save_evaluate(loom_trainer *t)
{
    loom_loss_tracker *losses = &t->losses;
    loom_status st;
    if (t->control.should_log && losses->steps_since_log > 0) {
        loom_metrics logs;
        loom_metrics_clear(&logs);
        loom_metrics_set(&logs, "loss", losses->since_log / (double)losses->steps_since_log);
        loom_metrics_set(&logs, "grad_norm", t->last_grad_norm);
        /* HF logs get_last_lr() after scheduler.step(): the rate of the NEXT step. */
        loom_metrics_set(&logs, "learning_rate", current_lr(t));
        if (counts_tokens(t)) loom_metrics_set(&logs, "num_input_tokens_seen", (double)t->state.num_input_tokens_seen);
        if (t->mixed_precision || t->state.skipped_steps > 0 || t->state.loss_scale != 1.0) {
            loom_metrics_set(&logs, "loss_scale", t->state.loss_scale);
            loom_metrics_set(&logs, "skipped_steps", (double)t->state.skipped_steps);
        }
        loom_metrics_set(&logs, "epoch", t->state.epoch);
        losses->since_log = 0;
        losses->rank_since_log = 0;
        losses->steps_since_log = 0;
        if ((st = t->hooks.log(t, &logs)) != LOOM_OK) return st;
    }
    t->control.should_log = 0;
    if (t->control.should_evaluate) {
        t->control.should_evaluate = 0;
        if (t->eval_dataset) {
            loom_metrics metrics;
            if ((st = t->hooks.evaluate(t, "eval", &metrics)) != LOOM_OK) return st;
            if ((st = loom_trainer_observe_metric(t, &metrics)) != LOOM_OK) return st;
            if ((st = loom_trainer_track_best(t, &metrics)) != LOOM_OK) return st;
        }
    }
    if (t->control.should_save) {
        if ((st = save_checkpoint_now(t)) != LOOM_OK) return st;
        t->control.should_save = 0;
    }
    return LOOM_OK;
}

/* --enable_jit_checkpoint (trainer_jit.c), where some rank has seen SIGTERM. At a step's end
 * (before its evaluation, as HF saves in on_step_end): the step is logged, not evaluated, and
 * its checkpoint saved by maybe_log_save_evaluate. Between steps (a signal during an evaluation
 * or a save) and after the last: checkpoint-N of the last finished step, unless the run just
 * saved or resumed from it. Either way training stops. */
static loom_status jit_stop_if_due(loom_trainer *t, int at_step_end)
{
    int due = 0;
    loom_status st = loom_trainer_jit_due(t, &due);
    if (st != LOOM_OK || !due) return st;
    if (at_step_end) {
        t->control.should_evaluate = 0;
        t->control.should_save = 1;
    } else if (t->checkpoint_step != t->state.global_step && (st = save_checkpoint_now(t)) != LOOM_OK) {
        return st;
    }
    t->jit_stopped = 1;
    t->control.should_training_stop = 1;
    return LOOM_OK;
}

/* After a JIT checkpoint every rank waits for the writer to have sealed it: the other ranks
 * leave the save as soon as their shards are in, and one that exits first makes the launcher
 * stop the rest, SIGKILL after its grace, which must not catch the writer hashing the files. */
static loom_status jit_leave_together(loom_trainer *t)
{
    return t->world_size > 1 ? loom_trainer_fail_together(t, LOOM_OK) : LOOM_OK;
}

/* HF's DefaultFlowCallback.on_step_end. */
static void default_flow_step_end(loom_trainer *t)
{
    const loom_args *a = &t->args;
    const loom_trainer_state *s = &t->state; /* its intervals: ratios resolved (resolve_step_intervals) */
    int64_t step = s->global_step;
    if (step == 1 && a->logging_first_step) t->control.should_log = 1;
    if (strcmp(a->logging_strategy, "steps") == 0 && s->logging_steps > 0 && step % s->logging_steps == 0)
        t->control.should_log = 1;
    if (strcmp(a->evaluation_strategy, "steps") == 0 && s->eval_steps > 0 && step % s->eval_steps == 0 &&
        a->eval_delay <= (double)step)
        t->control.should_evaluate = 1;
    if (strcmp(a->save_strategy, "steps") == 0 && s->save_steps > 0 && step % s->save_steps == 0)
        t->control.should_save = 1;
    if (step >= s->max_steps) t->control.should_training_stop = 1;
}

/* HF's DefaultFlowCallback.on_epoch_end. */
static void default_flow_epoch_end(loom_trainer *t)
{
    const loom_args *a = &t->args;
    if (strcmp(a->logging_strategy, "epoch") == 0) t->control.should_log = 1;
    if (strcmp(a->evaluation_strategy, "epoch") == 0 && a->eval_delay <= t->state.epoch) t->control.should_evaluate = 1;
    if (strcmp(a->save_strategy, "epoch") == 0) t->control.should_save = 1;
}

/* ---- train ------------------------------------------------------------------------------- */

/* Tokens of a batch for HF's flops estimate: token-id inputs count each id, other inputs one per
 * example (an MLP's true cost is 6 x parameters per example). */
/* The dropout seed of micro-batch m of the step being taken: a function of (seed, step,
 * micro-batch, rank) only, so a resumed run draws the same masks (docs/checkpoints.md). */
static uint64_t dropout_seed(const loom_trainer *t, int64_t m)
{
    uint64_t z = (uint64_t)t->args.seed * 0x9e3779b97f4a7c15ull ^
                 (uint64_t)t->state.global_step * 0xbf58476d1ce4e5b9ull ^ (uint64_t)m * 0x94d049bb133111ebull ^
                 (uint64_t)t->rank << 48;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t batch_tokens(const loom_batch *batch)
{
    if (batch->inputs.dtype == LOOM_DTYPE_I32 && batch->inputs.ndim == 2)
        return batch->batch_size * batch->inputs.shape[1];
    return batch->batch_size;
}

/* The tokens --include_num_input_tokens_seen counts in one micro-batch (HF v5's
 * _track_num_input_tokens): "all" every input position; "non_padding" the attention mask's ones,
 * or, without a mask (fixed-length data, nothing padded), every position as HF falls back to. The
 * host's copy of the mask is read, so a device run counts the same. */
static int64_t seen_tokens(const loom_trainer *t, const loom_batch_buffer *buf)
{
    const loom_batch *b = &buf->batch;
    if (strcmp(t->args.include_num_input_tokens_seen, "non_padding") != 0 || !buf->attention_mask ||
        b->inputs.ndim != 2)
        return batch_tokens(b);
    int64_t n = 0, cells = b->batch_size * b->inputs.shape[1];
    for (int64_t i = 0; i < cells; i++)
        n += buf->attention_mask[i] != 0;
    return n;
}

/* ceil(x) as an int64, INT64_MAX where it does not fit (converting such a double is undefined). */
static int64_t saturating_ceil(double x)
{
    const double c = ceil(x);
    return c >= 0x1p63 ? INT64_MAX : (int64_t)c;
}

/* HF's TrainerState.compute_steps: a logging, evaluation or save interval given as a ratio of
 * the run becomes a step count once the run's length is known, before the first step. A resumed
 * run computes it again, the same way, from its own arguments. */
static void resolve_step_intervals(loom_trainer *t, int64_t max_steps)
{
    const loom_args *a = &t->args;
    t->state.logging_steps = loom_args_steps(a->logging_steps, max_steps);
    t->state.eval_steps = loom_args_steps(isnan(a->eval_steps) ? a->logging_steps : a->eval_steps, max_steps);
    t->state.save_steps = loom_args_steps(a->save_steps, max_steps);
    /* Two ratios that pass HF's check (a multiple to six decimals) can still round to steps that
     * never meet: 0.5 and 0.25 of 10 steps save at 5 and 10 and evaluate at 3, 6 and 9. HF then
     * never loads a best model, silently; loom says so once the steps are known. */
    const loom_trainer_state *s = &t->state;
    if (a->load_best_model_at_end && !strcmp(a->save_strategy, "steps") && !strcmp(a->evaluation_strategy, "steps") &&
        s->eval_steps > 0 && s->save_steps % s->eval_steps != 0 && s->is_world_process_zero)
        loom_log(LOOM_LOG_WARNING,
                 "--load_best_model_at_end: over %lld steps, --save_steps %g saves every %lld steps and --eval_steps "
                 "%g evaluates every %lld, so some checkpoints have no evaluation and may never be judged best",
                 (long long)max_steps, a->save_steps, (long long)s->save_steps,
                 isnan(a->eval_steps) ? a->logging_steps : a->eval_steps, (long long)s->eval_steps);
}

/* Why an epoch has no batch: an empty file (whatever drop_last says), or fewer examples than
 * one batch with --dataloader_drop_last. */
/* Every rank restores on its own, from its own reading of the folder: one that failed would
 * leave the others waiting in the first collective until --ddp_timeout, and ranks given
 * different checkpoints (an output folder each, --resume_from_checkpoint true) would train on
 * from different steps. One all-reduce settles both. `mine` is this rank's restore status. */
static loom_status ranks_resume_together(loom_trainer *t, loom_status mine)
{
    if (t->world_size < 2) return mine;
    double v[3] = {mine != LOOM_OK, (double)t->state.global_step, -(double)t->state.global_step};
    if (mine != LOOM_OK) v[1] = -1, v[2] = -1e300; /* out of the step comparison */
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->all_reduce(t->comm.instance, v, 3, LOOM_DTYPE_F64, LOOM_REDUCE_MAX, NULL);
    if (mine != LOOM_OK) return mine; /* its own message, kept */
    if (st != LOOM_OK) return st;
    if (v[0] > 0) return loom_error(LOOM_E_INVALID, "another rank could not resume (its message says why)");
    if (v[1] != -v[2])
        return loom_error(LOOM_E_INVALID,
                          "the ranks resume from different steps (%.0f to %.0f): give every rank the same "
                          "--resume_from_checkpoint",
                          -v[2], v[1]);
    return LOOM_OK;
}

static loom_status no_train_batch(const loom_args *a, const loom_dataloader *dl)
{
    if (dl->dataset->n_examples == 0)
        return loom_error(LOOM_E_INVALID, "--train_file %s: the file holds no examples", a->train_file);
    return loom_error(LOOM_E_INVALID, "--train_file %s: %lld examples make no batch of %lld (dataloader_drop_last)",
                      a->train_file, (long long)dl->dataset->n_examples, (long long)dl->batch_size);
}

loom_status loom_trainer_train(loom_trainer *t)
{
    /* The checkpoint to resume from decides the seed (so the data loader's order) and the
     * weights prepare() loads. */
    loom_status st = loom_trainer_check_node_disks(t);
    /* Each rank finds the checkpoint on its own disk: one that lacks it stops every rank with its
     * line, before the others wait for it in the first collective. */
    if (st == LOOM_OK) st = loom_trainer_fail_together(t, loom_trainer_find_resume(t));
    if (st == LOOM_OK) st = loom_trainer_remove_leftovers(t);
    if (st == LOOM_OK) st = loom_trainer_autobatch_resume(t);
    if (st == LOOM_OK) st = loom_trainer_prepare_train(t);
    /* --predict_with_generate's settings fail here, not at the first evaluation, hours in. */
    if (st == LOOM_OK && t->args.predict_with_generate && t->eval_dataset) {
        loom_beam_config config;
        loom_generation_ids ids = {LOOM_HEADER_INIT(loom_generation_ids)};
        st = loom_generation_settings(t, &config, &ids);
    }
    if (st != LOOM_OK) return st;
    const loom_args *a = &t->args;
    loom_dataloader dl;
    if ((st = t->hooks.get_train_dataloader(t, &dl)) != LOOM_OK) return st;
    int64_t batches_per_epoch = loom_dataloader_len(&dl);
    if (batches_per_epoch < 1) {
        st = no_train_batch(a, &dl);
        loom_dataloader_free(&dl);
        return st;
    }
    int64_t ga = a->gradient_accumulation_steps;
    /* An epoch's last optimizer step takes the leftover micro-batches (current HF): every
     * example is seen once per epoch and none carries over into the next. */
    int64_t updates_per_epoch = (batches_per_epoch + ga - 1) / ga;
    t->train_batches = batches_per_epoch;
    t->updates_per_epoch = updates_per_epoch;
    int64_t max_steps, num_epochs;
    if (a->max_steps > 0) {
        max_steps = a->max_steps;
        /* Not (max_steps + updates_per_epoch - 1) / ...: that overflows near INT64_MAX (a script
         * passing sys.maxsize), and the run trained nothing over a negative epoch count. */
        num_epochs = max_steps / updates_per_epoch + (max_steps % updates_per_epoch != 0);
    } else {
        max_steps = saturating_ceil(a->num_train_epochs * (double)updates_per_epoch);
        num_epochs = saturating_ceil(a->num_train_epochs);
    }
    t->state.max_steps = max_steps;
    t->state.num_train_epochs = (double)num_epochs;
    resolve_step_intervals(t, max_steps);
    if ((st = t->hooks.create_optimizer_and_scheduler(t, max_steps)) != LOOM_OK) {
        loom_dataloader_free(&dl);
        return st;
    }

    loom_batch_buffer *micro = calloc((size_t)ga, sizeof *micro);
    if (!micro) {
        loom_dataloader_free(&dl);
        return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    for (int64_t m = 0; m < ga && st == LOOM_OK; m++) st = loom_batch_buffer_init(&micro[m], dl.dataset, dl.batch_size);
    if (st == LOOM_OK) st = ranks_resume_together(t, loom_trainer_restore(t));
    /* Ranks at the same step may still hold different checkpoints (docs/checkpoints.md#files-on-one-node):
     * compared after the steps, whose line says more where those differ too. */
    if (st == LOOM_OK) st = loom_trainer_same_checkpoint(t);
    if (st == LOOM_OK && t->resume_dir) t->checkpoint_step = t->state.global_step;
    /* Where the data stands: the sampler's order is a function of (seed, epoch), so a resumed
     * run jumps there instead of replaying the loader. */
    int64_t first_epoch = t->state.global_step / updates_per_epoch;
    int64_t skip_updates = t->args.ignore_data_skip ? 0 : t->state.global_step % updates_per_epoch;

    const loom_sharding_vtable *sv = t->sharding.vtable;
    const loom_precision_vtable *pv = t->precision.vtable;
    int64_t examples_seen = 0, tokens_seen = 0, first_step = t->state.global_step;
    const char *nan_loss_steps = getenv("LOOM_TEST_NAN_LOSS_AT_STEP");
    double start = loom_now_seconds();
    t->control.should_training_stop = 0;
    if (st == LOOM_OK) st = loom_trainer_print_startup(t, &dl, num_epochs, max_steps, updates_per_epoch);
    t->training_begun = 1;
    loom_trainer_jit_arm(t);
    if (st == LOOM_OK) st = loom_trainer_fire(t, LOOM_EVENT_TRAIN_BEGIN, NULL, NULL);
    /* HF's eval_on_start: one evaluation after on_train_begin, at the step the run starts from
     * (0, or a resumed run's). It is logged and reaches the callbacks (early stopping counts it);
     * no best model is judged on it, as HF judges only in its step-end evaluations. */
    if (st == LOOM_OK && t->args.eval_on_start && t->eval_dataset) {
        loom_metrics start_metrics;
        st = t->hooks.evaluate(t, "eval", &start_metrics);
    }

    for (int64_t epoch = first_epoch; st == LOOM_OK && epoch < num_epochs && !t->control.should_training_stop;
         epoch++) {
        if ((st = loom_dataloader_set_epoch(&dl, epoch)) != LOOM_OK) break;
        t->control.should_epoch_stop = 0;
        t->data_epoch = epoch;
        t->data_batch = epoch == first_epoch ? skip_updates * ga : 0;
        if ((st = loom_trainer_fire(t, LOOM_EVENT_EPOCH_BEGIN, NULL, NULL)) != LOOM_OK) break;
        for (int64_t u = epoch == first_epoch ? skip_updates : 0;
             u < updates_per_epoch && t->state.global_step < max_steps; u++) {
            /* Before the step too, after the last one's evaluation and save: a SIGTERM during
             * either is seen here, not a whole step later. */
            if ((st = jit_stop_if_due(t, 0)) != LOOM_OK || t->jit_stopped) break;
            int64_t first = u * ga;
            int64_t n_micro = batches_per_epoch - first < ga ? batches_per_epoch - first : ga;
            /* This rank's targets of the step, then the step's one divisor of the loss, known
             * before backward. */
            double divisor = 0;
            for (int64_t m = 0; m < n_micro && st == LOOM_OK; m++) {
                st = loom_dataloader_load(&dl, first + m, &micro[m]);
                divisor += (double)micro[m].batch.n_targets;
            }
            if (st != LOOM_OK || (st = loss_divisor(t, divisor, &divisor)) != LOOM_OK) break;
            if ((st = loom_trainer_fire(t, LOOM_EVENT_STEP_BEGIN, NULL, NULL)) != LOOM_OK) break;
            double scale = pv->loss_scale(t->precision.instance);
            float seed = divisor > 0 ? (float)(scale / divisor) : 0.0f;
            double step_loss = 0;
            int64_t step_tokens = 0, step_seen = 0;
            if ((st = choose_reduction(t)) != LOOM_OK) break;
            for (int64_t m = 0; m < n_micro && st == LOOM_OK; m++) {
                if ((st = LOOM_PLUGIN_CALL(
                         t->sharding, "begin_micro_batch",
                         sv->begin_micro_batch(t->sharding.instance, (int32_t)m, m == n_micro - 1))) != LOOM_OK)
                    break;
                double loss_sum = 0;
                micro[m].batch.training = 1;
                micro[m].batch.dropout_seed = dropout_seed(t, m);
                if ((st = t->hooks.training_step(t, &micro[m].batch, seed, &loss_sum)) != LOOM_OK) break;
                step_loss += logged_loss_sum(t, test_loss_override(nan_loss_steps, t, loss_sum), divisor);
                examples_seen += micro[m].batch.batch_size;
                step_tokens += batch_tokens(&micro[m].batch);
                step_seen += seen_tokens(t, &micro[m]);
                t->data_batch = first + m + 1;
                if (m < n_micro - 1) st = loom_trainer_fire(t, LOOM_EVENT_SUBSTEP_END, NULL, NULL);
            }
            if (st != LOOM_OK) break;
            int taken = 0;
            if ((st = optimizer_step(t, &taken)) != LOOM_OK) break;
            if ((st = LOOM_PLUGIN_CALL(t->sharding, "zero_grads", sv->zero_grads(t->sharding.instance))) != LOOM_OK)
                break;
            double mean_loss = 0;
            if ((st = step_mean_loss(t, step_loss, divisor, &mean_loss)) != LOOM_OK) break;
            t->losses.since_log += mean_loss;
            t->losses.steps_since_log++;
            t->losses.total += mean_loss;
            t->losses.steps++;
            /* HF's floating_point_ops: 6 x (non-embedding) parameters x tokens, over all ranks
             * (each sees as many batches of the same size). */
            step_tokens *= t->world_size;
            tokens_seen += step_tokens;
            t->state.total_flos += (double)t->flops_per_token * (double)step_tokens;

            t->state.global_step++;
            t->state.epoch = (double)epoch + (double)(u + 1) / (double)updates_per_epoch;
            t->state.loss_scale = pv->loss_scale(t->precision.instance);
            t->state.elapsed_seconds = loom_now_seconds() - start;
            if (counts_tokens(t)) {
                /* Summed over the ranks, as HF gathers them: padding differs from rank to rank. */
                double seen = (double)step_seen;
                if (t->world_size > 1 && (st = comm_sum(t, &seen)) != LOOM_OK) break;
                t->state.num_input_tokens_seen += (int64_t)seen;
            }
            default_flow_step_end(t);
            if ((st = loom_trainer_fire(t, LOOM_EVENT_STEP_END, NULL, NULL)) != LOOM_OK) break;
            loom_trainer_jit_test_signal(t, 0);
            if ((st = jit_stop_if_due(t, 1)) != LOOM_OK) break;
            if ((st = maybe_log_save_evaluate(t)) != LOOM_OK) break;
            loom_trainer_test_exit(t);
            loom_trainer_jit_test_signal(t, 1);
            if (t->control.should_epoch_stop || t->control.should_training_stop) break;
        }
        if (st != LOOM_OK || t->jit_stopped) break;
        default_flow_epoch_end(t);
        if ((st = loom_trainer_fire(t, LOOM_EVENT_EPOCH_END, NULL, NULL)) != LOOM_OK) break;
        if ((st = maybe_log_save_evaluate(t)) != LOOM_OK) break;
    }

    /* A SIGTERM during the last step or its evaluation: the final step's checkpoint, then the
     * same stop, rather than a final model the signal's sender did not wait for. */
    if (st == LOOM_OK && !t->jit_stopped) st = jit_stop_if_due(t, 0);
    if (st == LOOM_OK && t->jit_stopped) st = jit_leave_together(t);
    /* Stopped by SIGTERM, the process is on its way out: the handler stays until
     * loom_trainer_destroy, so a second SIGTERM (a launcher stopping the ranks once one has
     * exited) does not kill it before it has said where to resume from. */
    if (!t->jit_stopped) loom_trainer_jit_disarm();
    for (int64_t m = 0; m < ga; m++) loom_batch_buffer_free(&micro[m]);
    free(micro);
    loom_dataloader_free(&dl);
    if (st != LOOM_OK) return st;
    /* Stopped by SIGTERM: the callbacks close what they keep open; the best model is not loaded
     * and no final metrics are logged, as the run goes on after a resume. */
    if (t->jit_stopped) return loom_trainer_fire(t, LOOM_EVENT_TRAIN_END, NULL, NULL);

    if ((st = loom_trainer_load_best(t)) != LOOM_OK) return st;
    double runtime = loom_now_seconds() - start;
    t->state.elapsed_seconds = runtime;
    /* HF's speed_metrics (rounded as it rounds them), over the steps this process ran: after a
     * resume, the rates of this part of the run, not of the planned whole as HF reports. */
    loom_metrics *final = &t->train_metrics;
    int64_t steps_run = t->state.global_step - first_step;
    loom_metrics_clear(final);
    loom_metrics_set(final, "train_runtime", loom_round_to(runtime, 4));
    loom_metrics_set(final, "train_samples_per_second",
                     runtime > 0 ? loom_round_to((double)examples_seen * t->world_size / runtime, 3) : 0);
    loom_metrics_set(final, "train_steps_per_second", runtime > 0 ? loom_round_to((double)steps_run / runtime, 3) : 0);
    if (a->include_tokens_per_second)
        loom_metrics_set(final, "train_tokens_per_second",
                         runtime > 0 ? loom_round_to((double)tokens_seen / runtime, 3) : 0);
    loom_metrics_set(final, "total_flos", t->state.total_flos);
    loom_metrics_set(final, "train_loss", t->losses.steps > 0 ? t->losses.total / (double)t->losses.steps : 0.0);
    loom_metrics_set(final, "epoch", t->state.epoch);
    if ((st = t->hooks.log(t, final)) != LOOM_OK) return st;
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0)
        loom_log(LOOM_LOG_INFO, "peak resident memory, rank %d: %.1f MiB (the budget above: %.1f MiB)", t->rank,
                 (double)usage.ru_maxrss / 1024.0, (double)t->budget_bytes / 1048576.0);
    return loom_trainer_fire(t, LOOM_EVENT_TRAIN_END, NULL, NULL);
}
