/*
 * trainer_resume.c - HF's train(resume_from_checkpoint=...): continue a run from checkpoint-N as
 * if it had never stopped.
 *
 * What a checkpoint restores, and from which file (docs/checkpoints.md):
 *   model.safetensors          the parameters (loaded by prepare(), in the run's dtype)
 *   optimizer*.safetensors     every optimizer state slot and the f32 master weights, gathered
 *                              from the shards of whatever world size wrote them
 *   scheduler.json             the scheduler's step (a schedule is a pure function of it), and
 *                              the "state" of one that observes the eval metric (ABI 1.11)
 *   scaler.json                the loss scaler and the skipped-step count
 *   rng_state.json             the seed: every random choice of a run (the data order of each
 *                              epoch) derives from (seed, epoch), so the seed is the whole state
 *   trainer_state.json         global_step, epoch, log_history, best_metric, total_flos, ...
 *   loss_tracker.json          the running loss sums, so the next log entry and train_loss are
 *                              the numbers an uninterrupted run logs (HF restarts them at 0)
 * The data position is computed, not replayed: the sampler's order is a function of (seed,
 * epoch), so the loop starts at epoch global_step / updates_per_epoch, update global_step %
 * updates_per_epoch (--ignore_data_skip: at the start of that epoch, as HF).
 *
 * What is not restored: 1-bit Adam's server-side error feedback (reset to zero, as DeepSpeed does
 * on load; its worker error is a state slot and is restored).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checkpoint_dir.h"
#include "checkpoint_shards.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "resume_state.h"
#include "trainer_internal.h"

static int is_false(const char *s) { return !s || !*s || !strcasecmp(s, "false") || !strcasecmp(s, "none"); }

/* A checkpoint saved with --save_only_model has the weights and the step, and none of what a
 * resume restores besides. HF resumes it anyway, with a fresh optimizer and its schedule back at
 * step 0 (or fails, under DeepSpeed, to find the engine's states); loom refuses it in one line,
 * worded for how the folder was chosen (docs/checkpoints.md#model-only). */
static loom_status refuse_model_only(const loom_trainer *t, const char *dir)
{
    const char *why = "was saved with --save_only_model: it holds no optimizer, scheduler or RNG state to resume from";
    const char *restart = getenv("LOOM_RESTART_COUNT");
    if (t->args.origin[LOOM__ARG_resume_from_checkpoint] == LOOM_ARG_FROM_OUTPUT_DIR) {
        if (restart && *restart && strcmp(restart, "0") != 0)
            return loom_error(LOOM_E_INVALID,
                              "restart %s: the newest checkpoint, %s, %s (loom launch --max_restarts needs "
                              "checkpoints saved without --save_only_model)",
                              restart, dir, why);
        return loom_error(LOOM_E_INVALID,
                          "checkpoint detected at %s, but it %s; to start a new run from its weights, use "
                          "--model_name_or_path %s, or add --overwrite_output_dir to train from scratch",
                          dir, why, dir);
    }
    if (!strcasecmp(t->args.resume_from_checkpoint, "true"))
        return loom_error(LOOM_E_INVALID,
                          "--resume_from_checkpoint true: the newest checkpoint, %s, %s; to start a new run from "
                          "its weights, use --model_name_or_path %s",
                          dir, why, dir);
    return loom_error(LOOM_E_INVALID,
                      "--resume_from_checkpoint: %s %s; to start a new run from its weights, use "
                      "--model_name_or_path %s",
                      dir, why, dir);
}

loom_status loom_trainer_find_resume(loom_trainer *t)
{
    const char *arg = t->args.resume_from_checkpoint;
    if (is_false(arg) || t->resume_dir) return LOOM_OK;
    char dir[4096];
    loom_status st;
    if (!strcasecmp(arg, "true")) {
        if ((st = loom_checkpoint_latest(t->args.output_dir, dir, sizeof dir)) != LOOM_OK)
            return loom_error_context(st, "--resume_from_checkpoint true");
    } else {
        if (strlen(arg) >= sizeof dir) return loom_error(LOOM_E_INVALID, "--resume_from_checkpoint: path too long");
        strcpy(dir, arg);
        if ((st = loom_checkpoint_verify(dir)) != LOOM_OK) return loom_error_context(st, "--resume_from_checkpoint");
    }
    if (loom_resume_is_model_only(dir)) return refuse_model_only(t, dir);
    int64_t seed = 0;
    if ((st = loom_resume_read_seed(dir, &seed)) != LOOM_OK) return st;
    if (seed != t->args.seed) {
        if (t->state.is_world_process_zero)
            loom_log(LOOM_LOG_WARNING,
                     "%s was written with --seed %lld: resuming with it (not %lld), so that the data order "
                     "goes on where it stopped",
                     dir, (long long)seed, (long long)t->args.seed);
        t->args.seed = seed;
    }
    if (!(t->resume_dir = strdup(dir))) return loom_error(LOOM_E_NOMEM, "out of memory");
    return LOOM_OK;
}

static loom_status restore_trainer_state(loom_trainer *t, loom_resume_state *rs)
{
    t->state.global_step = rs->global_step;
    t->state.epoch = rs->epoch;
    t->state.total_flos = rs->total_flos;
    t->state.num_input_tokens_seen = rs->num_input_tokens_seen;
    t->state.best_metric = rs->best_metric;
    free(t->best_model_checkpoint);
    t->best_model_checkpoint = rs->best_model_checkpoint;
    rs->best_model_checkpoint = NULL;
    t->state.best_model_checkpoint = t->best_model_checkpoint;
    t->best_global_step = rs->best_global_step;
    cJSON_Delete(t->log_history);
    t->log_history = rs->log_history;
    rs->log_history = NULL;
    /* Callbacks that keep state (early stopping's patience counter), HF's layout; as HF, only
     * when asked (restore_callback_states_from_checkpoint), else they start afresh. */
    if (!t->args.restore_callback_states_from_checkpoint) return LOOM_OK;
    return loom_trainer_callbacks_restore(t, rs->stateful_callbacks);
}

/* An observing scheduler (reduce_lr_on_plateau) gets back what it had accumulated. */
static loom_status restore_scheduler_state(loom_trainer *t, const char *dir, const loom_resume_state *rs)
{
    const loom_scheduler_vtable *schv = t->scheduler.vtable;
    if (!LOOM_HAS(schv, loom_scheduler_vtable, load_state)) return LOOM_OK;
    if (!cJSON_IsObject(rs->scheduler_state))
        return loom_error(LOOM_E_FORMAT, "%s/scheduler.json has no \"state\" for scheduler '%s' to resume from", dir,
                          t->scheduler.plugin->desc->name);
    char *text = cJSON_PrintUnformatted(rs->scheduler_state);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = schv->load_state(t->scheduler.instance, text);
    free(text);
    return st;
}

static loom_status restore_small_states(loom_trainer *t, const char *dir, const loom_resume_state *rs)
{
    t->scheduler_step = rs->scheduler_step;
    const char *mine = t->scheduler.plugin->desc->name;
    if (rs->scheduler && strcmp(rs->scheduler, mine) != 0 && t->state.is_world_process_zero)
        loom_log(LOOM_LOG_WARNING, "%s was written with scheduler '%s'; going on with '%s' from its step %lld", dir,
                 rs->scheduler, mine, (long long)t->scheduler_step);
    if (rs->has_last_lr) t->last_lr = rs->last_lr;
    loom_status st = restore_scheduler_state(t, dir, rs);
    if (st != LOOM_OK) return st;

    /* The loss scaler: only the precision that wrote it can take it back. */
    mine = t->precision.plugin->desc->name;
    if (!rs->precision || strcmp(rs->precision, mine) != 0)
        return loom_error(LOOM_E_INVALID, "%s was written with precision '%s'; resuming it with '%s' is not supported",
                          dir, rs->precision ? rs->precision : "?", mine);
    loom_precision_state ps = {LOOM_HEADER_INIT(loom_precision_state)};
    const loom_precision_vtable *pv = t->precision.vtable;
    st = LOOM_PLUGIN_CALL(t->precision, "get_state", pv->get_state(t->precision.instance, &ps));
    if (st != LOOM_OK) return st;
    ps.loss_scale = rs->loss_scale;
    ps.iteration = rs->iteration;
    ps.last_overflow = rs->last_overflow;
    ps.growth_tracker = rs->growth_tracker;
    ps.hysteresis_left = rs->hysteresis_left;
    if ((st = LOOM_PLUGIN_CALL(t->precision, "set_state", pv->set_state(t->precision.instance, &ps))) != LOOM_OK)
        return st;
    t->state.skipped_steps = rs->skipped_steps;
    t->state.loss_scale = pv->loss_scale(t->precision.instance);

    /* The running loss sums (absent in a checkpoint of an older loom: they restart at 0, as HF's). */
    memset(&t->losses, 0, sizeof t->losses);
    /* Each rank's own share of since_log is not saved: the mean of the shares stands in for it
     * (exact with one rank). */
    if (rs->has_losses)
        t->losses = (loom_loss_tracker){rs->loss_since_log, rs->steps_since_log, rs->loss_total, rs->steps_total,
                                        rs->loss_since_log};
    return LOOM_OK;
}

/* A --save_on_each_node checkpoint on disks of their own holds its node's shards only. At the
 * world size and strategy that wrote it each rank reads its own shard, which is there; another
 * cut needs pieces from other nodes' disks (docs/checkpoints.md#save-on-each-node). */
static loom_status refuse_other_nodes_shards(const loom_trainer *t, const char *dir, const loom_shard_set *shards)
{
    int first = 0, missing = loom_shard_set_missing(shards, &first), world = loom_shard_set_world(shards);
    return loom_error(LOOM_E_INVALID,
                      "%s holds the optimizer shards of %d of its %d ranks (--save_on_each_node on disks of their "
                      "own: optimizer.rank-%d-of-%d.safetensors is on another node), and rank %d needs states from "
                      "the others: resume with the world size and sharding that saved it (each rank then reads its own "
                      "shard), or copy every node's optimizer.rank-*-of-%d.safetensors into the folder on each node",
                      dir, world - missing, world, first, world, t->rank, world);
}

loom_status loom_trainer_read_masters(loom_trainer *t, const loom_shard_set *shards)
{
    loom_status st = LOOM_OK;
    for (size_t s = 0; s < t->n_spans && st == LOOM_OK && t->has_master; s++) {
        const loom_span *span = &t->spans[s];
        float *master = NULL;
        size_t r = t->span_range[s];
        if ((st = loom_trainer_master_weights(t, r, &master)) != LOOM_OK || !master) continue;
        master += t->span_flat_begin[s] - t->owned[r].begin;
        st = loom_shard_set_read(shards, span->name, "fp32_master", span->offset, span->numel, master);
    }
    return st;
}

/* Every span of this rank's optimizer state (and master weights) from the checkpoint's shards.
 * The folder has passed its manifest: a rank file it lacks was never in it (a node-local
 * --save_on_each_node save), and only matters if this rank needs its elements. */
static loom_status restore_optimizer(loom_trainer *t, const char *dir)
{
    loom_shard_set *shards = NULL;
    loom_status st = loom_shard_set_open_partial(dir, &shards);
    if (st != LOOM_OK) return st;
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    const char *mine = t->optimizer.plugin->desc->name, *theirs = loom_shard_set_optimizer(shards);
    if (*theirs && strcmp(theirs, mine) != 0)
        st = loom_error(LOOM_E_INVALID, "%s holds the states of optimizer '%s'; this run uses '%s'", dir, theirs, mine);
    if (st == LOOM_OK && t->has_master && !loom_shard_set_has_state(shards, "fp32_master"))
        st = loom_error(LOOM_E_FORMAT, "%s: no f32 master weights (fp32_master) for this mixed-precision run", dir);
    for (size_t s = 0; s < t->n_spans && st == LOOM_OK; s++) {
        const loom_span *span = &t->spans[s];
        for (uint32_t slot = 0; slot < ov->state_slots && st == LOOM_OK; slot++) {
            const char *state = ov->state_names ? ov->state_names[slot] : "state";
            st = loom_shard_set_read(shards, span->name, state, span->offset, span->numel, span->state[slot]);
        }
    }
    if (st == LOOM_OK) st = loom_trainer_read_masters(t, shards);
    /* Whole states read whole (ddp after ddp on any world size) are not re-cut: nothing to say. */
    int64_t owned = 0;
    for (size_t r = 0; r < t->n_owned; r++)
        owned += t->owned[r].end - t->owned[r].begin;
    int whole = loom_shard_set_world(shards) == 1 && owned == t->total_numel;
    if (st == LOOM_OK && t->state.is_world_process_zero && loom_shard_set_world(shards) != t->world_size && !whole)
        loom_log(LOOM_LOG_INFO, "optimizer states written by %d rank(s), re-cut for %d", loom_shard_set_world(shards),
                 t->world_size);
    int first = 0;
    if (st == LOOM_E_FORMAT && loom_shard_set_missing(shards, &first) > 0) {
        loom_error_clear();
        st = refuse_other_nodes_shards(t, dir, shards);
        loom_shard_set_close(shards);
        return st;
    }
    loom_shard_set_close(shards);
    if (st != LOOM_OK) return loom_error_context(st, "%s", dir);
    return st;
}

/* The data position of a resumed epoch is counted in optimizer steps (as HF counts it), so it
 * lands where the checkpoint stopped only if a step takes as many examples as it did then: per
 * device x accumulation x ranks (the factors may trade, docs/checkpoints.md). HF warns about a
 * changed per-device batch alone. What an older checkpoint does not say counts as unchanged. */
static void warn_if_batch_changed(const loom_trainer *t, const char *dir, const loom_resume_state *rs)
{
    if (!t->state.is_world_process_zero || t->args.ignore_data_skip) return;
    int64_t batch = t->train_batch_size, ga = t->args.gradient_accumulation_steps;
    int64_t old_batch = rs->train_batch_size > 0 ? rs->train_batch_size : batch;
    int64_t old_ga = rs->gradient_accumulation_steps > 0 ? rs->gradient_accumulation_steps : ga;
    int64_t old_world = rs->world_size > 0 ? rs->world_size : t->world_size;
    int64_t before = old_batch * old_ga * old_world, now = batch * ga * t->world_size;
    if (before == now) return;
    loom_log(LOOM_LOG_WARNING,
             "%s was written at %lld examples a step (per_device_train_batch_size %lld x gradient_accumulation_steps "
             "%lld x %lld rank(s)), this run takes %lld (%lld x %lld x %d): the data position is counted in steps, so "
             "examples of this epoch are skipped or seen twice (--ignore_data_skip starts the epoch over instead)",
             dir, (long long)before, (long long)old_batch, (long long)old_ga, (long long)old_world, (long long)now,
             (long long)batch, (long long)ga, t->world_size);
}

/* One line: where, from which step, and why when the user did not name the checkpoint (HF's
 * example scripts say "Checkpoint detected, resuming training at ..."). */
static void say_resumed(const loom_trainer *t, const char *dir)
{
    char where[64];
    snprintf(where, sizeof where, "step %lld, epoch %.4g", (long long)t->state.global_step, t->state.epoch);
    const char *skip = t->args.ignore_data_skip ? " (--ignore_data_skip: the epoch starts over)" : "";
    const char *restart = getenv("LOOM_RESTART_COUNT");
    if (t->args.origin[LOOM__ARG_resume_from_checkpoint] != LOOM_ARG_FROM_OUTPUT_DIR)
        loom_log(LOOM_LOG_INFO, "resuming from %s: %s%s", dir, where, skip);
    else if (restart && *restart && strcmp(restart, "0") != 0)
        loom_log(LOOM_LOG_INFO, "restart %s: resuming training at %s: %s%s", restart, dir, where, skip);
    else
        loom_log(LOOM_LOG_INFO,
                 "checkpoint detected, resuming training at %s: %s%s. To avoid this, change --output_dir or add "
                 "--overwrite_output_dir to train from scratch.",
                 dir, where, skip);
}

loom_status loom_trainer_restore(loom_trainer *t)
{
    if (!t->resume_dir) return LOOM_OK;
    const char *dir = t->resume_dir;
    loom_resume_state rs;
    loom_status st = loom_resume_state_read(dir, &rs);
    if (st == LOOM_OK) st = restore_trainer_state(t, &rs);
    if (st == LOOM_OK) st = restore_small_states(t, dir, &rs);
    if (st == LOOM_OK) st = restore_optimizer(t, dir);
    if (st == LOOM_OK) warn_if_batch_changed(t, dir, &rs);
    loom_resume_state_free(&rs);
    if (st != LOOM_OK) return st;
    if (t->state.is_world_process_zero) say_resumed(t, dir);
    return LOOM_OK;
}
