/*
 * trainer_resume.c - HF's train(resume_from_checkpoint=...): continue a run from checkpoint-N as
 * if it had never stopped.
 *
 * What a checkpoint restores, and from which file (docs/checkpoints.md):
 *   model.safetensors          the parameters (loaded by prepare(), in the run's dtype)
 *   optimizer*.safetensors     every optimizer state slot and the f32 master weights, gathered
 *                              from the shards of whatever world size wrote them
 *   scheduler.json             the scheduler's step (a schedule is a pure function of it)
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
#include "trainer_internal.h"

static loom_status read_json(const char *dir, const char *name, cJSON **out)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st != LOOM_OK) return st;
    char *text = NULL;
    size_t len = 0;
    if ((st = loom_read_file(path, &text, &len)) != LOOM_OK) return st;
    *out = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return loom_error(LOOM_E_FORMAT, "%s: not a JSON object", path);
    }
    return LOOM_OK;
}

/* A number member; LOOM_E_FORMAT naming file and key when absent or not a number. */
static loom_status number(const cJSON *json, const char *file, const char *key, double *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, key);
    if (!cJSON_IsNumber(item)) return loom_error(LOOM_E_FORMAT, "%s: \"%s\" is missing or not a number", file, key);
    *out = item->valuedouble;
    return LOOM_OK;
}

static int is_false(const char *s) { return !s || !*s || !strcasecmp(s, "false") || !strcasecmp(s, "none"); }

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
    cJSON *rng = NULL;
    double seed = 0;
    if ((st = read_json(dir, "rng_state.json", &rng)) == LOOM_OK) st = number(rng, "rng_state.json", "seed", &seed);
    cJSON_Delete(rng);
    if (st != LOOM_OK) return st;
    if ((int64_t)seed != t->args.seed) {
        if (t->state.is_world_process_zero)
            loom_log(LOOM_LOG_WARNING,
                     "%s was written with --seed %lld: resuming with it (not %lld), so that the data order "
                     "goes on where it stopped",
                     dir, (long long)seed, (long long)t->args.seed);
        t->args.seed = (int64_t)seed;
    }
    if (!(t->resume_dir = strdup(dir))) return loom_error(LOOM_E_NOMEM, "out of memory");
    return LOOM_OK;
}

static loom_status restore_trainer_state(loom_trainer *t, const char *dir)
{
    cJSON *json = NULL;
    loom_status st = read_json(dir, "trainer_state.json", &json);
    if (st != LOOM_OK) return st;
    const char *file = "trainer_state.json";
    double global_step = 0, epoch = 0, total_flos = 0, tokens = 0;
    if (st == LOOM_OK) st = number(json, file, "global_step", &global_step);
    if (st == LOOM_OK) st = number(json, file, "epoch", &epoch);
    if (st == LOOM_OK) st = number(json, file, "total_flos", &total_flos);
    cJSON *history = cJSON_DetachItemFromObjectCaseSensitive(json, "log_history");
    if (st == LOOM_OK && !cJSON_IsArray(history))
        st = loom_error(LOOM_E_FORMAT, "%s/%s: no log_history array", dir, file);
    if (st == LOOM_OK) {
        /* Older files have no token count: it restarts from 0 then. */
        if (number(json, file, "num_input_tokens_seen", &tokens) != LOOM_OK) loom_error_clear();
        const cJSON *best = cJSON_GetObjectItemCaseSensitive(json, "best_metric");
        const cJSON *best_dir = cJSON_GetObjectItemCaseSensitive(json, "best_model_checkpoint");
        t->state.global_step = (int64_t)global_step;
        t->state.epoch = epoch;
        t->state.total_flos = total_flos;
        t->state.num_input_tokens_seen = (int64_t)tokens;
        t->state.best_metric = cJSON_IsNumber(best) ? best->valuedouble : NAN;
        free(t->best_model_checkpoint);
        t->best_model_checkpoint = cJSON_IsString(best_dir) ? strdup(best_dir->valuestring) : NULL;
        t->state.best_model_checkpoint = t->best_model_checkpoint;
        cJSON_Delete(t->log_history);
        t->log_history = history;
        history = NULL;
        /* Callbacks that keep state (early stopping's patience counter), HF's layout. */
        st = loom_trainer_callbacks_restore(t, cJSON_GetObjectItemCaseSensitive(json, "stateful_callbacks"));
    }
    cJSON_Delete(history);
    cJSON_Delete(json);
    return st;
}

static loom_status restore_small_states(loom_trainer *t, const char *dir)
{
    cJSON *json = NULL;
    double v = 0;
    loom_status st = read_json(dir, "scheduler.json", &json);
    if (st == LOOM_OK) st = number(json, "scheduler.json", "step", &v);
    if (st == LOOM_OK) {
        t->scheduler_step = (int64_t)v;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(json, "scheduler");
        const char *mine = t->scheduler.plugin->desc->name;
        if (cJSON_IsString(name) && strcmp(name->valuestring, mine) != 0 && t->state.is_world_process_zero)
            loom_log(LOOM_LOG_WARNING, "%s was written with scheduler '%s'; going on with '%s' from its step %lld", dir,
                     name->valuestring, mine, (long long)t->scheduler_step);
        if (number(json, "scheduler.json", "last_lr", &v) == LOOM_OK) t->last_lr = v;
        else loom_error_clear();
    }
    cJSON_Delete(json);
    json = NULL;
    if (st != LOOM_OK) return st;

    /* The loss scaler: only the precision that wrote it can take it back. */
    if ((st = read_json(dir, "scaler.json", &json)) != LOOM_OK) return st;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(json, "precision");
    const char *mine = t->precision.plugin->desc->name;
    if (!cJSON_IsString(name) || strcmp(name->valuestring, mine) != 0)
        st = loom_error(LOOM_E_INVALID, "%s was written with precision '%s'; resuming it with '%s' is not supported",
                        dir, cJSON_IsString(name) ? name->valuestring : "?", mine);
    loom_precision_state ps = {LOOM_HEADER_INIT(loom_precision_state)};
    const char *file = "scaler.json";
    double scale = 1, iteration = 0, last_overflow = 0, growth = 0, hysteresis = 0, skipped = 0;
    if (st == LOOM_OK) st = number(json, file, "loss_scale", &scale);
    if (st == LOOM_OK) st = number(json, file, "iteration", &iteration);
    if (st == LOOM_OK) st = number(json, file, "last_overflow", &last_overflow);
    if (st == LOOM_OK) st = number(json, file, "growth_tracker", &growth);
    if (st == LOOM_OK) st = number(json, file, "hysteresis_left", &hysteresis);
    if (st == LOOM_OK) st = number(json, file, "skipped_steps", &skipped);
    cJSON_Delete(json);
    json = NULL;
    if (st != LOOM_OK) return st;
    const loom_precision_vtable *pv = t->precision.vtable;
    if ((st = pv->get_state(t->precision.instance, &ps)) != LOOM_OK) return st;
    ps.loss_scale = scale;
    ps.iteration = (int64_t)iteration;
    ps.last_overflow = (int64_t)last_overflow;
    ps.growth_tracker = (int64_t)growth;
    ps.hysteresis_left = (int64_t)hysteresis;
    if ((st = pv->set_state(t->precision.instance, &ps)) != LOOM_OK) return st;
    t->state.skipped_steps = (int64_t)skipped;
    t->state.loss_scale = pv->loss_scale(t->precision.instance);

    /* The running loss sums (absent in a checkpoint of an older loom: they restart at 0, as HF's). */
    memset(&t->losses, 0, sizeof t->losses);
    if (read_json(dir, "loss_tracker.json", &json) != LOOM_OK) {
        loom_error_clear();
        return LOOM_OK;
    }
    double since = 0, n_since = 0, total = 0, n_total = 0;
    file = "loss_tracker.json";
    st = number(json, file, "since_log", &since);
    if (st == LOOM_OK) st = number(json, file, "steps_since_log", &n_since);
    if (st == LOOM_OK) st = number(json, file, "total", &total);
    if (st == LOOM_OK) st = number(json, file, "steps", &n_total);
    cJSON_Delete(json);
    if (st != LOOM_OK) return st;
    t->losses = (loom_loss_tracker){since, (int64_t)n_since, total, (int64_t)n_total};
    return LOOM_OK;
}

/* Every span of this rank's optimizer state (and master weights) from the checkpoint's shards. */
static loom_status restore_optimizer(loom_trainer *t, const char *dir)
{
    loom_shard_set *shards = NULL;
    loom_status st = loom_shard_set_open(dir, &shards);
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
        if (st != LOOM_OK || !t->has_master) continue;
        float *master = NULL;
        size_t r = t->span_range[s];
        if ((st = loom_trainer_master_weights(t, r, &master)) != LOOM_OK) break;
        if (!master) continue;
        master += t->span_flat_begin[s] - t->owned[r].begin;
        st = loom_shard_set_read(shards, span->name, "fp32_master", span->offset, span->numel, master);
    }
    if (st == LOOM_OK && t->state.is_world_process_zero && loom_shard_set_world(shards) != t->world_size)
        loom_log(LOOM_LOG_INFO, "optimizer states written by %d rank(s), re-cut for %d", loom_shard_set_world(shards),
                 t->world_size);
    loom_shard_set_close(shards);
    if (st != LOOM_OK) return loom_error_context(st, "%s", dir);
    return st;
}

loom_status loom_trainer_restore(loom_trainer *t)
{
    if (!t->resume_dir) return LOOM_OK;
    const char *dir = t->resume_dir;
    loom_status st = restore_trainer_state(t, dir);
    if (st == LOOM_OK) st = restore_small_states(t, dir);
    if (st == LOOM_OK) st = restore_optimizer(t, dir);
    if (st != LOOM_OK) return st;
    if (t->state.is_world_process_zero)
        loom_log(LOOM_LOG_INFO, "resuming from %s: step %lld, epoch %.4g%s", dir, (long long)t->state.global_step,
                 t->state.epoch, t->args.ignore_data_skip ? " (--ignore_data_skip: the epoch starts over)" : "");
    return LOOM_OK;
}
