/*
 * trainer_save.c - what a run leaves on disk, in HF's layout:
 *   output_dir/model.safetensors + config.json       the final model (save_model)
 *   output_dir/trainer_state.json                    TrainerState with log_history
 *   output_dir/training_args.json                    the resolved arguments
 *   output_dir/checkpoint-N/                         model, optimizer.safetensors,
 *                                                    scheduler.json, rng_state.json,
 *                                                    trainer_state.json, training_args.json
 *                                                    (--save_only_model: the model and the
 *                                                    last two only)
 * A checkpoint is written into checkpoint-N.tmp, sealed with a manifest of every file's size and
 * checksum (checkpoint_dir.c), and renamed when complete, so a crash never leaves a half
 * checkpoint that looks whole; save_total_limit deletes the oldest afterwards.
 * Rank 0 writes, seals and rotates; with --save_on_each_node each node's local rank 0 does, on
 * its own disk, and a partitioning strategy's shards go to their rank's node
 * (docs/checkpoints.md#save-on-each-node).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_dir.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "json_util.h"
#include "plugin_config.h"
#include "safetensors.h"
#include "trainer_internal.h"

static loom_status write_json(const char *dir, const char *name, cJSON *json)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st != LOOM_OK) return st;
    char *text = cJSON_Print(json);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory writing %s", path);
    /* cJSON indents with tabs; HF writes indent=2. Raw tabs only occur as layout (a tab inside
     * a string is escaped), so each becomes two spaces, or one after a key's colon. */
    size_t len = strlen(text), n = 0;
    char *pretty = malloc(2 * len + 2);
    if (!pretty) {
        cJSON_free(text);
        return loom_error(LOOM_E_NOMEM, "out of memory writing %s", path);
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '\t') pretty[n++] = text[i];
        else if (i > 0 && text[i - 1] == ':') pretty[n++] = ' ';
        else pretty[n++] = ' ', pretty[n++] = ' ';
    }
    pretty[n++] = '\n';
    cJSON_free(text);
    st = loom_write_file_atomic(path, pretty, n);
    free(pretty);
    return st;
}

/* config.json: the model plugin's name as model_type and its resolved section, typed; a string
 * param "architectures" becomes HF's one-element list. */
static cJSON *model_config_json(const loom_trainer *t)
{
    cJSON *json = cJSON_CreateObject();
    const loom_plugin_desc *desc = t->model.plugin->desc;
    cJSON_AddStringToObject(json, "model_type", desc->name);
    const char *architecture = NULL; /* HF's class name, a model's "architectures" string param */
    if (loom_config_str(t->model.config, "architectures", &architecture) == LOOM_CFG_PRESENT && *architecture)
        cJSON_AddItemToObject(json, "architectures", cJSON_CreateStringArray(&architecture, 1));
    for (const loom_param_spec *s = desc->params; s && s->key; s++) {
        /* gradient_checkpointing (and label smoothing, NEFTune) is how a run trains, not what
         * the model is. */
        if (!strcmp(s->key, "architectures") || !strcmp(s->key, "gradient_checkpointing") ||
            !strcmp(s->key, "label_smoothing_factor") || !strcmp(s->key, "neftune_noise_alpha"))
            continue;
        double f;
        int64_t i;
        int32_t b;
        const char *str;
        switch (s->type) {
        case LOOM_PARAM_FLOAT:
            if (loom_config_f64(t->model.config, s->key, &f) == LOOM_CFG_PRESENT)
                cJSON_AddNumberToObject(json, s->key, f);
            break;
        case LOOM_PARAM_INT:
            if (loom_config_i64(t->model.config, s->key, &i) == LOOM_CFG_PRESENT)
                cJSON_AddNumberToObject(json, s->key, (double)i);
            break;
        case LOOM_PARAM_BOOL:
            if (loom_config_bool(t->model.config, s->key, &b) == LOOM_CFG_PRESENT)
                cJSON_AddBoolToObject(json, s->key, b);
            break;
        default:
            if (loom_config_str(t->model.config, s->key, &str) == LOOM_CFG_PRESENT)
                cJSON_AddStringToObject(json, s->key, str);
            break;
        }
    }
    return json;
}

/* The tokenizer files a model folder may hold; a saved model gets those its source has. */
static const char *const tokenizer_names[] = {"vocab.json", "merges.txt", "spiece.model", "char_vocab.json"};

static loom_status copy_one(const char *from, const char *dir, const char *name)
{
    char to[4096];
    loom_status st = loom_path_join(to, sizeof to, dir, name);
    char *data = NULL;
    size_t len = 0;
    if (st == LOOM_OK) st = loom_read_file(from, &data, &len);
    if (st == LOOM_OK) st = loom_write_file_atomic(to, data, len);
    free(data);
    return st;
}

/* HF saves the tokenizer beside the model: GPT-2's vocab.json + merges.txt, T5's spiece.model,
 * or loom tokenize's char_vocab.json, from --tokenizer_name (a folder that must hold one of
 * them, or a .model / character-vocabulary file) or from the model folder the run started
 * from (whatever it has). docs/seq2seq.md#tokenizers. */
static loom_status copy_tokenizer_files(const loom_trainer *t, const char *dir)
{
    const char *source = t->args.tokenizer_name && *t->args.tokenizer_name ? t->args.tokenizer_name : NULL;
    int required = source != NULL;
    if (!source) source = t->args.model_name_or_path && *t->args.model_name_or_path ? t->args.model_name_or_path : NULL;
    if (!source || strcmp(source, dir) == 0) return LOOM_OK;
    const char *role = loom_tokenizer_file_role(source);
    if (role) return copy_one(source, dir, role);
    int copied = 0;
    for (size_t i = 0; i < sizeof tokenizer_names / sizeof *tokenizer_names; i++) {
        char from[4096];
        loom_status st = loom_path_join(from, sizeof from, source, tokenizer_names[i]);
        if (st != LOOM_OK) return st;
        if (access(from, R_OK) != 0) continue;
        if ((st = copy_one(from, dir, tokenizer_names[i])) != LOOM_OK) return st;
        copied++;
    }
    if (required && !copied)
        return loom_error(LOOM_E_NOT_FOUND,
                          "--tokenizer_name %s: no tokenizer there (vocab.json + merges.txt, spiece.model or "
                          "char_vocab.json)",
                          source);
    return LOOM_OK;
}

/* Under ZeRO-3 model.safetensors is written tensor by tensor, each gathered just before its bytes
 * are written; `held` is the tensor gathered and not given back (-1: none), `next` the first one
 * the write has not reached. */
typedef struct model_stage {
    loom_trainer *t;
    size_t next;
    int64_t held;
    int broken; /* a gather failed: the ranks stop at it together */
} model_stage;

static loom_status stage_tensor(void *context, size_t i, int done)
{
    model_stage *s = context;
    loom_status st = loom_trainer_params_tensor(s->t, i, done);
    if (!done) s->next = i + 1;
    if (st != LOOM_OK)
        s->broken = 1;
    else
        s->held = done ? -1 : (int64_t)i;
    return st;
}

/* What the write left of the walk every rank makes: the tensor it held, and those it never got to. */
static loom_status finish_walk(model_stage *s)
{
    if (s->broken) return LOOM_OK;
    loom_status st = s->held >= 0 ? loom_trainer_params_tensor(s->t, (size_t)s->held, 1) : LOOM_OK;
    return st == LOOM_OK ? loom_trainer_params_walk(s->t, s->next) : st;
}

static loom_status write_model_file(loom_trainer *t, const char *dir);

loom_status loom_trainer_save_model(loom_trainer *t, const char *dir)
{
    loom_status st = write_model_file(t, dir);
    if (st != LOOM_OK) return st;
    cJSON *config = model_config_json(t);
    st = write_json(dir, "config.json", config);
    cJSON_Delete(config);
    if (st == LOOM_OK) st = copy_tokenizer_files(t, dir);
    return st;
}

loom_status loom_trainer_follow_model_save(loom_trainer *t)
{
    return loom_trainer_params_streamed(t) ? loom_trainer_params_walk(t, 0) : LOOM_OK;
}

static loom_status write_model_file(loom_trainer *t, const char *dir)
{
    model_stage stage = {t, 0, -1, 0};
    const int streamed = loom_trainer_params_streamed(t);
    loom_status st = loom_mkdir_p(dir);
    loom_st_tensor *tensors = st == LOOM_OK ? calloc(t->n_tensors ? t->n_tensors : 1, sizeof *tensors) : NULL;
    if (st == LOOM_OK && !tensors) st = loom_error(LOOM_E_NOMEM, "out of memory");
    if (st != LOOM_OK) {
        /* The other ranks walk the tensors with this one whatever happens here. */
        if (streamed) finish_walk(&stage);
        return st;
    }
    /* In the parameters' own dtype, as DeepSpeed saves a half-precision module (the f32 master
     * weights of a mixed-precision run go with the optimizer states). */
    const char *params = t->params;
    for (size_t i = 0; i < t->n_tensors; i++) {
        tensors[i].name = t->tensors[i].name;
        tensors[i].dtype = t->param_dtype;
        tensors[i].ndim = t->tensors[i].ndim;
        memcpy(tensors[i].shape, t->tensors[i].shape, sizeof tensors[i].shape);
        tensors[i].data = params + (size_t)t->tensor_offsets[i] * t->param_size;
        tensors[i].nbytes = (uint64_t)(t->tensor_offsets[i + 1] - t->tensor_offsets[i]) * t->param_size;
    }
    char path[4096];
    const char *metadata[] = {"format", "pt"};
    st = loom_path_join(path, sizeof path, dir, "model.safetensors");
    if (st == LOOM_OK)
        st = streamed ? loom_safetensors_write_staged(path, tensors, t->n_tensors, metadata, 1, stage_tensor, &stage)
                      : loom_safetensors_write(path, tensors, t->n_tensors, metadata, 1);
    free(tensors);
    if (streamed) {
        loom_status walked = finish_walk(&stage);
        if (st == LOOM_OK) st = walked;
    }
    return st;
}

static void add_number_or_null(cJSON *json, const char *key, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(json, key, v);
    else cJSON_AddNullToObject(json, key);
}

/* HF's stateful_callbacks: the callbacks' states and, since transformers 4.41, its own
 * TrainerControl as it stood when the state was written (at a checkpoint: should_save set,
 * the step's log and evaluation done; at the last step should_training_stop). Resuming does not
 * read it back: HF's callback handler clears each flag before it is consulted (on_train_begin,
 * on_epoch_begin, on_step_begin), so a restored control changes nothing there either. NULL when
 * out of memory. */
static cJSON *control_and_callbacks_state(const loom_trainer *t)
{
    cJSON *all = loom_trainer_callbacks_state(t);
    if (!all && !(all = cJSON_CreateObject())) return NULL;
    cJSON *control = cJSON_CreateObject(), *flags = cJSON_CreateObject();
    const loom_trainer_control *c = &t->control;
    cJSON_AddBoolToObject(flags, "should_epoch_stop", c->should_epoch_stop);
    cJSON_AddBoolToObject(flags, "should_evaluate", c->should_evaluate);
    cJSON_AddBoolToObject(flags, "should_log", c->should_log);
    cJSON_AddBoolToObject(flags, "should_save", c->should_save);
    cJSON_AddBoolToObject(flags, "should_training_stop", c->should_training_stop);
    cJSON_AddItemToObject(control, "args", flags);
    cJSON_AddItemToObject(control, "attributes", cJSON_CreateObject());
    cJSON_AddItemToObject(all, "TrainerControl", control);
    return all;
}

loom_status loom_trainer_write_state(loom_trainer *t, const char *dir)
{
    const loom_trainer_state *s = &t->state;
    /* Keys sorted at every level before writing, as HF's json.dumps(sort_keys=True). */
    cJSON *json = cJSON_CreateObject();
    if (t->best_global_step > 0)
        cJSON_AddNumberToObject(json, "best_global_step", (double)t->best_global_step);
    else
        cJSON_AddNullToObject(json, "best_global_step");
    add_number_or_null(json, "best_metric", s->best_metric);
    if (t->best_model_checkpoint) cJSON_AddStringToObject(json, "best_model_checkpoint", t->best_model_checkpoint);
    else cJSON_AddNullToObject(json, "best_model_checkpoint");
    cJSON_AddNumberToObject(json, "epoch", s->epoch);
    cJSON_AddNumberToObject(json, "eval_steps", (double)s->eval_steps);
    cJSON_AddNumberToObject(json, "global_step", (double)s->global_step);
    cJSON_AddBoolToObject(json, "is_hyper_param_search", 0);
    cJSON_AddBoolToObject(json, "is_local_process_zero", s->is_local_process_zero);
    cJSON_AddBoolToObject(json, "is_world_process_zero", s->is_world_process_zero);
    /* A copy: its entries' keys are sorted below, and the trainer's own stay in logging order. */
    cJSON *history = cJSON_Duplicate(t->log_history, 1);
    if (history) cJSON_AddItemToObject(json, "log_history", history);
    cJSON_AddNumberToObject(json, "logging_steps", (double)s->logging_steps);
    cJSON_AddNumberToObject(json, "max_steps", (double)s->max_steps);
    cJSON_AddNumberToObject(json, "num_input_tokens_seen", (double)s->num_input_tokens_seen);
    cJSON_AddNumberToObject(json, "num_train_epochs", s->num_train_epochs);
    cJSON_AddNumberToObject(json, "save_steps", (double)s->save_steps);
    cJSON_AddNumberToObject(json, "skipped_steps", (double)s->skipped_steps);
    cJSON *stateful = control_and_callbacks_state(t);
    if (stateful) cJSON_AddItemToObject(json, "stateful_callbacks", stateful);
    cJSON_AddNumberToObject(json, "total_flos", s->total_flos);
    cJSON_AddNumberToObject(json, "train_batch_size", (double)s->train_batch_size);
    cJSON_AddNullToObject(json, "trial_name");
    cJSON_AddNullToObject(json, "trial_params");
    loom_status st =
        history ? loom__json_sort_keys(json) : loom_error(LOOM_E_NOMEM, "out of memory writing trainer_state.json");
    if (st == LOOM_OK) st = write_json(dir, "trainer_state.json", json);
    cJSON_Delete(json);
    return st;
}

static loom_status write_training_args(loom_trainer *t, const char *dir)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, "training_args.json");
    if (st != LOOM_OK) return st;
    /* Built in memory and written as every other file is (a full disk names the file, leaves
     * no .tmp behind, and the bytes are on disk before the checkpoint's manifest lists them). */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return loom_error(LOOM_E_NOMEM, "out of memory writing %s", path);
    st = loom_args_write_json(&t->args, f);
    if (fclose(f) != 0 && st == LOOM_OK) st = loom_error(LOOM_E_NOMEM, "out of memory writing %s", path);
    if (st == LOOM_OK) st = loom_write_file_atomic(path, text, len);
    free(text);
    return st;
}

loom_status loom_trainer_master_weights(loom_trainer *t, size_t r, float **out)
{
    *out = NULL;
    if (!t->has_master) return LOOM_OK;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    const loom_precision_vtable *pv = t->precision.vtable;
    void *owned_grad = NULL;
    float *master = NULL, *master_grad = NULL;
    loom_status st =
        LOOM_PLUGIN_CALL(t->sharding, "owned_grads", sv->owned_grads(t->sharding.instance, r, &owned_grad));
    if (st == LOOM_OK)
        st = LOOM_PLUGIN_CALL(t->precision, "master",
                              pv->master(t->precision.instance, r, owned_grad, &master, &master_grad));
    *out = master;
    return st;
}

/* Optimizer state slots of every owned span, named "<tensor>.<state>", with the span's offset
 * in the tensor in the name when it is only part of it (a sharded run); with a mixed-precision
 * plugin also its f32 master weights as "<tensor>.fp32_master" (DeepSpeed keeps them in its
 * optimizer checkpoint too). */
static loom_status write_optimizer_state(loom_trainer *t, const char *dir, const char *file_name)
{
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    uint32_t slots = ov->state_slots + (t->has_master ? 1 : 0);
    size_t n = t->n_spans * slots;
    loom_st_tensor *tensors = calloc(n ? n : 1, sizeof *tensors);
    char (*names)[256] = calloc(n ? n : 1, sizeof *names);
    if (!tensors || !names) {
        free(tensors);
        free(names);
        return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t s = 0; s < t->n_spans; s++) {
        const loom_span *span = &t->spans[s];
        float *master = NULL;
        if (t->has_master) {
            loom_status st = loom_trainer_master_weights(t, t->span_range[s], &master);
            if (st != LOOM_OK) {
                free(tensors);
                free(names);
                return st;
            }
            if (master) master += t->span_flat_begin[s] - t->owned[t->span_range[s]].begin;
        }
        for (uint32_t slot = 0; slot < slots; slot++, k++) {
            int is_master = slot == ov->state_slots;
            const char *state_name = is_master ? "fp32_master" : ov->state_names ? ov->state_names[slot] : "state";
            if (span->numel == span->tensor_numel)
                snprintf(names[k], sizeof names[k], "%s.%s", span->name, state_name);
            else
                snprintf(names[k], sizeof names[k], "%s.%s@%lld", span->name, state_name, (long long)span->offset);
            tensors[k].name = names[k];
            tensors[k].dtype = LOOM_DTYPE_F32;
            tensors[k].ndim = 1;
            tensors[k].shape[0] = span->numel;
            tensors[k].data = is_master ? master : span->state[slot];
            tensors[k].nbytes = (uint64_t)span->numel * sizeof(float);
        }
    }
    char path[4096], step_text[32];
    snprintf(step_text, sizeof step_text, "%lld", (long long)t->scheduler_step);
    const char *metadata[] = {"optimizer", t->optimizer.plugin->desc->name, "step", step_text};
    loom_status st = loom_path_join(path, sizeof path, dir, file_name);
    if (st == LOOM_OK) st = loom_safetensors_write(path, tensors, k, metadata, 2);
    free(tensors);
    free(names);
    return st;
}

/* What an observing scheduler accumulated (reduce_lr_on_plateau), under "state". */
static loom_status add_scheduler_state(loom_trainer *t, cJSON *scheduler)
{
    const loom_scheduler_vtable *schv = t->scheduler.vtable;
    if (!LOOM_HAS(schv, loom_scheduler_vtable, save_state)) return LOOM_OK;
    const char *text = NULL;
    loom_status st = schv->save_state(t->scheduler.instance, &text);
    if (st != LOOM_OK) return st;
    cJSON *state = text ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(state)) {
        cJSON_Delete(state);
        return loom_error(LOOM_E_FORMAT, "scheduler '%s': save_state gave no JSON object",
                          t->scheduler.plugin->desc->name);
    }
    cJSON_AddItemToObject(scheduler, "state", state);
    return LOOM_OK;
}

static loom_status write_small_states(loom_trainer *t, const char *dir)
{
    cJSON *scheduler = cJSON_CreateObject();
    cJSON_AddStringToObject(scheduler, "scheduler", t->scheduler.plugin->desc->name);
    cJSON_AddNumberToObject(scheduler, "step", (double)t->scheduler_step);
    cJSON_AddNumberToObject(scheduler, "last_lr", t->last_lr);
    loom_status st = add_scheduler_state(t, scheduler);
    if (st == LOOM_OK) st = write_json(dir, "scheduler.json", scheduler);
    cJSON_Delete(scheduler);
    if (st != LOOM_OK) return st;
    /* Every random choice of a run derives from (seed, epoch, step): that is the whole state. */
    cJSON *rng = cJSON_CreateObject();
    cJSON_AddNumberToObject(rng, "seed", (double)t->args.seed);
    cJSON_AddNumberToObject(rng, "epoch", t->state.epoch);
    cJSON_AddNumberToObject(rng, "global_step", (double)t->state.global_step);
    /* Not random state: with the batch sizes it gives the examples a step took, so a resume can
     * tell whether its data position still lands where this one stopped. */
    cJSON_AddNumberToObject(rng, "world_size", (double)t->world_size);
    st = write_json(dir, "rng_state.json", rng);
    cJSON_Delete(rng);
    if (st != LOOM_OK) return st;
    const loom_precision_vtable *pv = t->precision.vtable;
    loom_precision_state ps = {LOOM_HEADER_INIT(loom_precision_state)};
    if ((st = LOOM_PLUGIN_CALL(t->precision, "get_state", pv->get_state(t->precision.instance, &ps))) != LOOM_OK)
        return st;
    cJSON *scaler = cJSON_CreateObject();
    cJSON_AddStringToObject(scaler, "precision", t->precision.plugin->desc->name);
    cJSON_AddNumberToObject(scaler, "loss_scale", ps.loss_scale);
    cJSON_AddNumberToObject(scaler, "iteration", (double)ps.iteration);
    cJSON_AddNumberToObject(scaler, "last_overflow", (double)ps.last_overflow);
    cJSON_AddNumberToObject(scaler, "growth_tracker", (double)ps.growth_tracker);
    cJSON_AddNumberToObject(scaler, "hysteresis_left", (double)ps.hysteresis_left);
    cJSON_AddNumberToObject(scaler, "skipped_steps", (double)t->state.skipped_steps);
    st = write_json(dir, "scaler.json", scaler);
    cJSON_Delete(scaler);
    if (st != LOOM_OK) return st;
    /* The running loss sums (trainer_resume.c): cJSON prints a double with as many digits as
     * it takes to read the same bits back. */
    cJSON *losses = cJSON_CreateObject();
    cJSON_AddNumberToObject(losses, "since_log", t->losses.since_log);
    cJSON_AddNumberToObject(losses, "steps_since_log", (double)t->losses.steps_since_log);
    cJSON_AddNumberToObject(losses, "total", t->losses.total);
    cJSON_AddNumberToObject(losses, "steps", (double)t->losses.steps);
    st = write_json(dir, "loss_tracker.json", losses);
    cJSON_Delete(losses);
    return st;
}

/* HF's _rotate_checkpoints: keep the save_total_limit newest, but never the best checkpoint
 * (moved next to the newest in the deletion order) nor the newest one (with a limit of 1 and a
 * best that is not the newest, two are kept). Two departures keep the right folders:
 * - a checkpoint numbered past the one just saved is another run's (this one overwrote an
 *   older, longer run, or resumed from an earlier checkpoint): it goes first. Ordered by number
 *   alone, as HF orders them, it would outlive this run's own checkpoints, and a later resume
 *   would pick it up;
 * - a checkpoint-N folder without loom's manifest is not loom's to delete (every save loom
 *   finishes is sealed, docs/checkpoints.md): it is left alone and named once. */
static loom_status rotate_checkpoints(loom_trainer *t, int64_t saved)
{
    if (t->args.save_total_limit == LOOM_ARG_NONE_INT || t->args.save_total_limit <= 0) return LOOM_OK;
    int64_t *steps = NULL;
    size_t listed = 0, n = 0;
    loom_status st = loom_list_checkpoints(t->args.output_dir, &steps, &listed);
    if (st != LOOM_OK) return st;
    char(*paths)[4096] = calloc(listed ? listed : 1, sizeof *paths);
    if (!paths) {
        free(steps);
        return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    size_t best = listed;
    for (int later = 1; later >= 0 && st == LOOM_OK; later--) {
        for (size_t i = 0; i < listed && st == LOOM_OK; i++) {
            if ((steps[i] > saved) != later) continue;
            char name[64];
            snprintf(name, sizeof name, "checkpoint-%lld", (long long)steps[i]);
            if ((st = loom_path_join(paths[n], sizeof paths[n], t->args.output_dir, name)) != LOOM_OK) break;
            if (!loom_checkpoint_is_sealed(paths[n])) {
                if (!t->foreign_checkpoint_warned)
                    loom_log(LOOM_LOG_WARNING,
                             "--save_total_limit: leaving %s alone: it has no %s, so loom did not "
                             "save it",
                             paths[n], LOOM_CHECKPOINT_MANIFEST);
                t->foreign_checkpoint_warned = 1;
                continue;
            }
            /* The folder, not the string: a resume may spell the output folder otherwise than the
             * checkpoint's trainer_state.json does, and the best would be deleted. */
            if (t->best_model_checkpoint && loom_same_file(paths[n], t->best_model_checkpoint)) best = n;
            n++;
        }
    }
    free(steps);
    int64_t keep = t->args.save_total_limit;
    if (st == LOOM_OK && best < n) {
        char moved[4096];
        memcpy(moved, paths[best], sizeof moved);
        for (size_t i = best; i + 2 < n; i++) memcpy(paths[i], paths[i + 1], sizeof paths[i]);
        if (best + 2 < n) memcpy(paths[n - 2], moved, sizeof moved);
        if (keep == 1 && !loom_same_file(paths[n - 1], t->best_model_checkpoint)) keep = 2;
    }
    for (size_t i = 0; st == LOOM_OK && (int64_t)n > keep && i < n - (size_t)keep; i++)
        st = loom_checkpoint_remove(paths[i]);
    free(paths);
    return st;
}

/* Whether optimizer states are partitioned over ranks (ZeRO, sharded DDP): then every rank
 * writes its own shard, as DeepSpeed writes zero_pp_rank_R files. */
static loom_status states_are_sharded(loom_trainer *t, int *sharded)
{
    double mine = !(t->n_owned == 1 && t->owned[0].begin == 0 && t->owned[0].end == t->total_numel);
    loom_status st = loom_trainer_reduce_f64(t, &mine, 1, LOOM_REDUCE_MAX);
    *sharded = t->world_size > 1 && mine > 0;
    return st;
}

/* Tests only: LOOM_TEST_KILL_DURING_SAVE=N kills rank 0 with SIGKILL while checkpoint-N is half
 * written (its files in the .tmp folder, no manifest yet), the moment a crash costs the most. */
static void maybe_die_for_a_test(const loom_trainer *t)
{
    if (!t->state.is_world_process_zero) return;
    const char *at = getenv("LOOM_TEST_KILL_DURING_SAVE");
    if (at && *at && strtoll(at, NULL, 10) == t->state.global_step) raise(SIGKILL);
}

/* Tests only: LOOM_TEST_EXIT_AT_STEP="R:S0,S1,..." kills rank R with SIGKILL at the end of
 * step S_a of attempt a (LOOM_RESTART_COUNT, loom launch --max_restarts), after that step's
 * checkpoint if it has one; attempts past the list run through. */
void loom_trainer_test_exit(const loom_trainer *t)
{
    const char *spec = getenv("LOOM_TEST_EXIT_AT_STEP"), *count = getenv("LOOM_RESTART_COUNT");
    if (!spec || !*spec) return;
    char *p = NULL;
    long long rank = strtoll(spec, &p, 10), attempt = count ? strtoll(count, NULL, 10) : 0;
    if (rank != t->rank || *p != ':') return;
    for (long long a = 0; *p && a <= attempt; a++) {
        long long step = strtoll(p + 1, &p, 10);
        if (a == attempt && step == t->state.global_step) raise(SIGKILL);
    }
}

/* Tests only: LOOM_TEST_STATES_AFTER_BEST=DIR has every rank write its optimizer states and
 * f32 master weights, as a save writes its shard, to DIR/optimizer.rank-R-of-W.safetensors
 * after load_best_model_at_end: what a step after the last would start from, which no command
 * writes (tests/cli/test_cli_nodes_best.py compares them with the best checkpoint's). */
loom_status loom_trainer_test_write_states(loom_trainer *t)
{
    const char *dir = getenv("LOOM_TEST_STATES_AFTER_BEST");
    if (!dir || !*dir) return LOOM_OK;
    char shard[96];
    snprintf(shard, sizeof shard, "optimizer.rank-%d-of-%d.safetensors", t->rank, t->world_size);
    loom_status st = loom_mkdir_p(dir);
    return st == LOOM_OK ? write_optimizer_state(t, dir, shard) : st;
}

/* This rank's optimizer shard, into the folder its writer made: without --save_on_each_node rank 0's,
 * which a rank on a node with a disk of its own does not see (docs/checkpoints.md#files-on-one-node). */
static loom_status write_shard(loom_trainer *t, const char *tmp_dir, int writer)
{
    if (!writer && access(tmp_dir, F_OK) != 0)
        return loom_error(LOOM_E_NOT_FOUND,
                          "%s, the folder rank 0 made for this checkpoint, is not on this rank's disk: with a disk "
                          "of its own each node needs --save_on_each_node to save its ranks' optimizer shards (or "
                          "--save_only_model, which saves none)",
                          tmp_dir);
    char shard[96];
    snprintf(shard, sizeof shard, "optimizer.rank-%d-of-%d.safetensors", t->rank, t->world_size);
    return write_optimizer_state(t, tmp_dir, shard);
}

loom_status loom_trainer_checkpoint_dir(const loom_trainer *t, char *out, size_t size)
{
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)t->state.global_step);
    return loom_path_join(out, size, t->args.output_dir, name);
}

/* Everything the writer (rank 0, or each node's local rank 0) puts into the folder: all but the
 * optimizer shards of the other ranks. A model-only checkpoint leaves out what only a resume
 * reads, as HF's _save_checkpoint skips _save_optimizer_and_scheduler and _save_rng_state
 * (docs/checkpoints.md#model-only). */
static loom_status write_main_files(loom_trainer *t, const char *dir, int sharded, int model_only)
{
    loom_remove_tree(dir);
    loom_status st = loom_trainer_save_model(t, dir);
    if (st == LOOM_OK && !sharded && !model_only) st = write_optimizer_state(t, dir, "optimizer.safetensors");
    if (st == LOOM_OK && !model_only) st = write_small_states(t, dir);
    if (st == LOOM_OK) st = write_training_args(t, dir);
    if (st == LOOM_OK) st = loom_trainer_write_state(t, dir);
    return st;
}

static loom_status save_checkpoint(loom_trainer *t)
{
    char final_dir[4096], tmp_dir[4200];
    loom_status st = loom_trainer_checkpoint_dir(t, final_dir, sizeof final_dir);
    if (st != LOOM_OK) return st;
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", final_dir);
    /* Model-only, no rank has a shard to add: the writers write alone, as with whole states, and
     * the ranks skip the collectives that only serve the shards (every rank holds the same
     * --save_only_model: the ranks compare their arguments when they start). */
    const int model_only = t->args.save_only_model != 0;
    int sharded = 0;
    if (!model_only && (st = states_are_sharded(t, &sharded)) != LOOM_OK) return st;
    if ((st = loom_trainer_best_at_save(t)) != LOOM_OK) return st;
    int writer = loom_trainer_saves_here(t);
    st = writer ? write_main_files(t, tmp_dir, sharded, model_only) : loom_trainer_follow_model_save(t);
    if (sharded) {
        /* The writer made the folder; each rank adds its shard; the writer seals it when all are
         * in. A failure anywhere stops every rank with the failing rank's line, so no rank waits
         * for a rename that will not come.
         * With --save_on_each_node every node has a writer (its local rank 0), the folder is its
         * disk's, and its manifest lists that node's shards: the files that are there. */
        if ((st = loom_trainer_fail_together(t, st)) != LOOM_OK) goto failed;
        st = write_shard(t, tmp_dir, writer);
        if ((st = loom_trainer_fail_together(t, st)) != LOOM_OK) goto failed;
    }
    if (!writer) return st;
    if (st != LOOM_OK) goto failed;
    maybe_die_for_a_test(t);
    /* The manifest is the seal: written last, it makes the folder complete. */
    if ((st = loom_checkpoint_write_manifest(tmp_dir)) != LOOM_OK) goto failed;
    if ((st = loom_checkpoint_install(tmp_dir, final_dir)) != LOOM_OK) goto failed;
    return rotate_checkpoints(t, t->state.global_step);
failed:
    /* No litter: a half folder is never left to be mistaken for, or fill the disk beside, the
     * complete ones. */
    if (writer) loom_remove_tree(tmp_dir);
    return st;
}

loom_status loom_trainer_save_checkpoint(loom_trainer *t)
{
    loom_status st = save_checkpoint(t);
    /* With --save_on_each_node every node has a writer, each on its own disk: one that fails there
     * (its disk full, the --tokenizer_name folder missing from it) stops the others at this save
     * with its line, not at their next collective (docs/checkpoints.md#files-on-one-node). */
    if (t->args.save_on_each_node) st = loom_trainer_fail_together(t, st);
    return st;
}

/* What loom_trainer_save_final writes into output_dir besides the tokenizer files, and the
 * metrics files `loom train` writes after it (HF's save_metrics). Each goes through
 * "<name>.tmp" (loom_write_file_atomic), which a save killed before its rename leaves. */
static const char *const final_names[] = {"model.safetensors",  "config.json",        "training_args.json",
                                          "trainer_state.json", "train_results.json", "eval_results.json",
                                          "all_results.json"};

/* The "<name>.tmp" of each file of the final save, where it is a regular file: only names loom
 * writes, so a user's own *.tmp stays. */
static loom_status remove_final_temporaries(const char *output_dir, int *removed)
{
    const char *const *lists[] = {final_names, tokenizer_names};
    const size_t lengths[] = {sizeof final_names / sizeof *final_names,
                              sizeof tokenizer_names / sizeof *tokenizer_names};
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lengths[l]; i++) {
            char name[64], path[4096];
            snprintf(name, sizeof name, "%s.tmp", lists[l][i]);
            loom_status st = loom_path_join(path, sizeof path, output_dir, name);
            if (st != LOOM_OK) return st;
            struct stat info;
            if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode)) continue;
            if (unlink(path) != 0)
                return loom_error(LOOM_E_IO, "%s: cannot remove this leftover of an interrupted save: %s", path,
                                  strerror(errno));
            (*removed)++;
        }
    }
    return LOOM_OK;
}

loom_status loom_trainer_remove_leftovers(loom_trainer *t)
{
    /* At the start of training, not of the save: a checkpoint-N.tmp folder or a model-sized
     * model.safetensors.tmp would otherwise hold its disk space through the whole run (and the
     * final save, hours later, replaces its own temporaries anyway). Only the writer rank: it is
     * the one that writes output_dir, on its node's disk. */
    if (!loom_trainer_saves_here(t)) return LOOM_OK;
    int folders = 0, files = 0;
    loom_status st = loom_checkpoint_remove_leftovers(t->args.output_dir, &folders);
    if (st == LOOM_OK) st = remove_final_temporaries(t->args.output_dir, &files);
    if (st != LOOM_OK) return st;
    if (folders > 0)
        loom_log(LOOM_LOG_INFO, "removed %d unfinished checkpoint folder(s) (checkpoint-N.tmp) of an interrupted save",
                 folders);
    if (files > 0)
        loom_log(LOOM_LOG_INFO,
                 "removed %d temporary file(s) (model.safetensors.tmp, ...) of an interrupted final save", files);
    return LOOM_OK;
}

loom_status loom_trainer_save_final(loom_trainer *t)
{
    /* Every rank calls it: under ZeRO-3 the others gather each tensor with the writer. */
    if (!loom_trainer_saves_here(t)) return loom_trainer_follow_model_save(t);
    loom_status st = loom_trainer_save_model(t, t->args.output_dir);
    if (st == LOOM_OK) st = write_training_args(t, t->args.output_dir);
    if (st == LOOM_OK) st = loom_trainer_write_state(t, t->args.output_dir);
    return st;
}
