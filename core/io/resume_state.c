/*
 * resume_state.c - read a checkpoint's JSON state files (resume_state.h).
 */
#include "resume_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"

/* State files are small; anything larger is not one of ours. */
#define STATE_FILE_MAX ((size_t)256 << 20)

static loom_status read_json(const char *dir, const char *name, cJSON **out)
{
    char path[4096];
    *out = NULL;
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st != LOOM_OK) return st;
    char *text = NULL;
    size_t len = 0;
    if ((st = loom_read_file_max(path, STATE_FILE_MAX, &text, &len)) != LOOM_OK) return st;
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

/* An integer member that converts to int64 exactly (a step, a count, a seed). */
static loom_status integer(const cJSON *json, const char *file, const char *key, int64_t *out)
{
    double v = 0;
    loom_status st = number(json, file, key, &v);
    if (st != LOOM_OK) return st;
    /* 2^63 is exact as a double; every double below it converts without overflow. */
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0) || v != floor(v))
        return loom_error(LOOM_E_FORMAT, "%s: \"%s\" is not an integer in range (%g)", file, key, v);
    *out = (int64_t)v;
    return LOOM_OK;
}

static char *string_member(const cJSON *json, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, key);
    return cJSON_IsString(item) ? strdup(item->valuestring) : NULL;
}

/* Whether the run that wrote DIR had the boolean argument `key` on (its training_args.json);
 * false when the file cannot be read, whose own reads then name what is wrong. */
static bool written_with(const char *dir, const char *key)
{
    cJSON *json = NULL;
    if (read_json(dir, "training_args.json", &json) != LOOM_OK) {
        loom_error_clear();
        return false;
    }
    bool on = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, key));
    cJSON_Delete(json);
    return on;
}

bool loom_resume_is_model_only(const char *dir)
{
    return written_with(dir, "save_only_model");
}

loom_status loom_resume_read_found_batch(const char *dir, int64_t *batch)
{
    *batch = 0;
    if (!written_with(dir, "auto_find_batch_size")) return LOOM_OK;
    cJSON *json = NULL;
    loom_status st = read_json(dir, "trainer_state.json", &json);
    if (st != LOOM_OK) return st;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, "train_batch_size");
    if (cJSON_IsNumber(item) && item->valuedouble >= 1 && item->valuedouble <= 1e15 &&
        item->valuedouble == (double)(int64_t)item->valuedouble)
        *batch = (int64_t)item->valuedouble;
    else if (item && !cJSON_IsNull(item))
        st = loom_error(LOOM_E_FORMAT, "%s/trainer_state.json: \"train_batch_size\" is not a count >= 1", dir);
    cJSON_Delete(json);
    return st;
}

loom_status loom_resume_read_seed(const char *dir, int64_t *seed)
{
    cJSON *rng = NULL;
    loom_status st = read_json(dir, "rng_state.json", &rng);
    if (st == LOOM_OK) st = integer(rng, "rng_state.json", "seed", seed);
    cJSON_Delete(rng);
    return st;
}

static loom_status read_trainer_state(const char *dir, loom_resume_state *s)
{
    cJSON *json = NULL;
    loom_status st = read_json(dir, "trainer_state.json", &json);
    if (st != LOOM_OK) return st;
    const char *file = "trainer_state.json";
    if (st == LOOM_OK) st = integer(json, file, "global_step", &s->global_step);
    /* Re-sealed by hand, a negative step went on into the data position ("example 9465... outside
     * the dataset"). */
    if (st == LOOM_OK && s->global_step < 0)
        st = loom_error(LOOM_E_FORMAT, "%s/%s: \"global_step\" is negative (%lld)", dir, file,
                        (long long)s->global_step);
    if (st == LOOM_OK) st = number(json, file, "epoch", &s->epoch);
    if (st == LOOM_OK) st = number(json, file, "total_flos", &s->total_flos);
    if (st == LOOM_OK) {
        s->log_history = cJSON_DetachItemFromObjectCaseSensitive(json, "log_history");
        if (!cJSON_IsArray(s->log_history)) st = loom_error(LOOM_E_FORMAT, "%s/%s: no log_history array", dir, file);
    }
    /* Older files have no token count: it restarts from 0 then. */
    if (st == LOOM_OK && cJSON_GetObjectItemCaseSensitive(json, "num_input_tokens_seen"))
        st = integer(json, file, "num_input_tokens_seen", &s->num_input_tokens_seen);
    const cJSON *batch = cJSON_GetObjectItemCaseSensitive(json, "train_batch_size");
    if (cJSON_IsNumber(batch) && batch->valuedouble >= 1 && batch->valuedouble <= 1e15)
        s->train_batch_size = (int64_t)batch->valuedouble;
    if (st == LOOM_OK) {
        const cJSON *best = cJSON_GetObjectItemCaseSensitive(json, "best_metric");
        s->best_metric = cJSON_IsNumber(best) ? best->valuedouble : NAN;
        s->best_model_checkpoint = string_member(json, "best_model_checkpoint");
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(json, "best_global_step");
        const char *base = s->best_model_checkpoint ? strrchr(s->best_model_checkpoint, '/') : NULL;
        base = base ? base + 1 : s->best_model_checkpoint;
        long long n = 0;
        if (cJSON_IsNumber(step) && step->valuedouble >= 1 && step->valuedouble <= 9e15)
            s->best_global_step = (int64_t)step->valuedouble;
        else if (base && sscanf(base, "checkpoint-%lld", &n) == 1 && n > 0)
            s->best_global_step = n;
        s->stateful_callbacks = cJSON_DetachItemFromObjectCaseSensitive(json, "stateful_callbacks");
    }
    cJSON_Delete(json);
    return st;
}

static loom_status read_scheduler(const char *dir, loom_resume_state *s)
{
    cJSON *json = NULL;
    loom_status st = read_json(dir, "scheduler.json", &json);
    if (st == LOOM_OK) st = integer(json, "scheduler.json", "step", &s->scheduler_step);
    if (st == LOOM_OK) {
        s->scheduler = string_member(json, "scheduler");
        const cJSON *lr = cJSON_GetObjectItemCaseSensitive(json, "last_lr");
        s->has_last_lr = cJSON_IsNumber(lr);
        if (s->has_last_lr) s->last_lr = lr->valuedouble;
        s->scheduler_state = cJSON_DetachItemFromObjectCaseSensitive(json, "state");
    }
    cJSON_Delete(json);
    return st;
}

static loom_status read_scaler(const char *dir, loom_resume_state *s)
{
    cJSON *json = NULL;
    loom_status st = read_json(dir, "scaler.json", &json);
    const char *file = "scaler.json";
    if (st == LOOM_OK) s->precision = string_member(json, "precision");
    if (st == LOOM_OK) st = number(json, file, "loss_scale", &s->loss_scale);
    if (st == LOOM_OK) st = integer(json, file, "iteration", &s->iteration);
    if (st == LOOM_OK) st = integer(json, file, "last_overflow", &s->last_overflow);
    if (st == LOOM_OK) st = integer(json, file, "growth_tracker", &s->growth_tracker);
    if (st == LOOM_OK) st = integer(json, file, "hysteresis_left", &s->hysteresis_left);
    if (st == LOOM_OK) st = integer(json, file, "skipped_steps", &s->skipped_steps);
    cJSON_Delete(json);
    return st;
}

static loom_status read_losses(const char *dir, loom_resume_state *s)
{
    cJSON *json = NULL;
    if (read_json(dir, "loss_tracker.json", &json) != LOOM_OK) {
        loom_error_clear();
        return LOOM_OK;
    }
    const char *file = "loss_tracker.json";
    loom_status st = number(json, file, "since_log", &s->loss_since_log);
    if (st == LOOM_OK) st = integer(json, file, "steps_since_log", &s->steps_since_log);
    if (st == LOOM_OK) st = number(json, file, "total", &s->loss_total);
    if (st == LOOM_OK) st = integer(json, file, "steps", &s->steps_total);
    s->has_losses = st == LOOM_OK;
    cJSON_Delete(json);
    return st;
}

/* A count in `name` of `dir`, or 0 when the file or the key is missing or not a count: these
 * are only compared (an older checkpoint lacks them), never restored. */
static int64_t optional_count(const char *dir, const char *name, const char *key)
{
    cJSON *json = NULL;
    if (read_json(dir, name, &json) != LOOM_OK) {
        loom_error_clear();
        return 0;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, key);
    int64_t n = cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 1e15 ? (int64_t)v->valuedouble : 0;
    cJSON_Delete(json);
    return n;
}

loom_status loom_resume_state_read(const char *dir, loom_resume_state *out)
{
    memset(out, 0, sizeof *out);
    loom_status st = read_trainer_state(dir, out);
    if (st == LOOM_OK) st = read_scheduler(dir, out);
    if (st == LOOM_OK) st = read_scaler(dir, out);
    if (st == LOOM_OK) st = read_losses(dir, out);
    if (st == LOOM_OK) {
        out->gradient_accumulation_steps = optional_count(dir, "training_args.json", "gradient_accumulation_steps");
        out->world_size = optional_count(dir, "rng_state.json", "world_size");
    }
    return st;
}

void loom_resume_state_free(loom_resume_state *s)
{
    free(s->best_model_checkpoint);
    free(s->scheduler);
    free(s->precision);
    cJSON_Delete(s->log_history);
    cJSON_Delete(s->stateful_callbacks);
    cJSON_Delete(s->scheduler_state);
    memset(s, 0, sizeof *s);
}
