/*
 * trainer_setup.c - creating a trainer: choosing and configuring the plugins from the run
 * arguments, opening the data, and (prepare) laying out parameters, gradients, master weights
 * and optimizer states once, before step 1.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args_internal.h"
#include "checkpoint_dir.h"
#include "error.h"
#include "grad_rows.h"
#include "fileutil.h"
#include "host.h"
#include "json_util.h"
#include "model_config.h"
#include "optim_names.h"
#include "plugin_config.h"
#include "ranks.h"
#include "deepspeed_config.h"
#include "device.h"
#include "store.h"
#include "tokenizer_bpe.h"
#include "trainer.h"
#include "step_pieces.h"
#include "trainer_internal.h"

/* ---- which plugin for which kind --------------------------------------------------------- */

static loom_status load_plugin(const char *spec, uint32_t kind, const loom_plugin **out)
{
    loom_status st = loom_plugin_load(spec, kind, out);
    return st;
}

/* The names the run arguments accept, for "did you mean" on an unknown flag. */
static const char *const argument_names[] = {
#define LOOM_ARG(kind, name, default_text, status, note, doc) #name,
#include "training_args.def"
#undef LOOM_ARG
};

static loom_status report_unused_flags(const loom_trainer *t, const unsigned char *used,
                                       const loom_plugin *const *plugins, size_t n_plugins)
{
    const loom_args *a = &t->args;
    for (size_t i = 0; i < a->unknown_keys.count; i++) {
        if (used[i]) continue;
        const char *key = a->unknown_keys.items[i];
        const char *source = i < a->unknown_sources.count ? a->unknown_sources.items[i] : "the command line";
        /* Candidates: every argument name and every key of every loaded plugin, plain and
         * qualified; 1024 is far above what a run loads. */
        const char *names[1024];
        char qualified[512][96];
        size_t n = 0, nq = 0;
        for (size_t k = 0; k < sizeof argument_names / sizeof *argument_names && n < 1024; k++)
            names[n++] = argument_names[k];
        for (size_t p = 0; p < n_plugins; p++) {
            const loom_plugin_desc *d = plugins[p]->desc;
            for (const loom_param_spec *s = d->params; s && s->key && n + 2 < 1024 && nq < 512; s++) {
                names[n++] = s->key;
                snprintf(qualified[nq], sizeof qualified[nq], "%s.%s", d->name, s->key);
                names[n++] = qualified[nq++];
            }
        }
        const char *closest = loom_closest_name(key, names, n);
        if (closest)
            return loom_error(LOOM_E_INVALID, "unknown argument --%s (from %s); did you mean --%s?", key, source,
                              closest);
        return loom_error(LOOM_E_INVALID,
                          "unknown argument --%s (from %s): not a training argument nor a key of a loaded plugin (see "
                          "`loom train --help`, `loom plugins`)",
                          key, source);
    }
    return LOOM_OK;
}

/* slot->config must be set (the section is owned by the slot from then on). */
loom_status loom_trainer_create_instance(loom_plugin_instance *slot, const loom_plugin *plugin, const void *setup)
{
    const loom_host_api *api = loom_host_api_table();
    const loom_config *config = slot->config;
    slot->plugin = plugin;
    slot->vtable = plugin->desc->vtable;
    if (!slot->host) slot->host = loom_host_create(plugin->desc->name); /* callbacks bring theirs */
    if (!slot->host) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = LOOM_E_INTERNAL;
    void *instance = NULL;
    switch (plugin->desc->kind) {
    case LOOM_KIND_MODEL:
        st = ((const loom_model_vtable *)slot->vtable)->create(slot->host, api, config, (loom_model **)&instance);
        break;
    case LOOM_KIND_PRECISION:
        st = ((const loom_precision_vtable *)slot->vtable)
                 ->create(slot->host, api, config, (loom_precision **)&instance);
        break;
    case LOOM_KIND_CALLBACK:
        st = ((const loom_callback_vtable *)slot->vtable)->create(slot->host, api, config, (loom_callback **)&instance);
        break;
    case LOOM_KIND_COMM:
        st = ((const loom_comm_vtable *)slot->vtable)->create(slot->host, api, config, setup, (loom_comm **)&instance);
        break;
    case LOOM_KIND_SHARDING:
        st = ((const loom_sharding_vtable *)slot->vtable)
                 ->create(slot->host, api, config, setup, (loom_sharding **)&instance);
        break;
    case LOOM_KIND_OPTIMIZER:
        st = ((const loom_optimizer_vtable *)slot->vtable)
                 ->create(slot->host, api, config, (loom_optimizer **)&instance);
        break;
    case LOOM_KIND_SCHEDULER:
        st = ((const loom_scheduler_vtable *)slot->vtable)
                 ->create(slot->host, api, config, setup, (loom_scheduler **)&instance);
        break;
    }
    if (st != LOOM_OK) {
        if (!*loom_error_message())
            loom_error(st, "%s: create failed (%s)", plugin->desc->name, loom_status_string(st));
        return st;
    }
    slot->instance = instance;
    return plugin->desc->kind == LOOM_KIND_COMM ? loom_trainer_name_comm_calls(slot) : LOOM_OK;
}

/* Open a data file of `format` (others are left for later); block_size for token data. */
static loom_status open_dataset(const char *path, const char *flag, int only_format, int64_t block_size,
                                loom_dataset **out)
{
    if (*out) return LOOM_OK;
    int format = 0;
    loom_status st = loom_dataset_sniff(path, &format);
    if (st == LOOM_OK && format != only_format) return LOOM_OK;
    if (st == LOOM_OK) st = loom_dataset_open(path, block_size, out);
    if (st != LOOM_OK) return loom_error_context(st, "--%s", flag);
    return LOOM_OK;
}

/* Open the run's data files of one format: classification before the model exists (its sizes
 * come from the data), token data after (its example length comes from the model). */
static loom_status open_datasets(loom_trainer *t, int format, int64_t block_size)
{
    const loom_args *a = &t->args;
    loom_status st = LOOM_OK;
    if (a->do_train) st = open_dataset(a->train_file, "train_file", format, block_size, &t->train_dataset);
    if (st == LOOM_OK && a->do_eval == 1 && a->validation_file && *a->validation_file)
        st = open_dataset(a->validation_file, "validation_file", format, block_size, &t->eval_dataset);
    if (st == LOOM_OK && a->do_predict && !a->generate)
        st = open_dataset(a->test_file, "test_file", format, block_size, &t->test_dataset);
    return st;
}

/* Token data: examples of --block_size tokens, or the model's context length. */
static loom_status open_token_datasets(loom_trainer *t)
{
    int64_t block = t->args.block_size;
    int64_t positions = 0;
    if (loom_config_i64(t->model.config, "n_positions", &positions) == LOOM_CFG_PRESENT && block <= 0)
        block = positions;
    if (positions > 0 && block > positions)
        return loom_error(LOOM_E_INVALID, "--block_size %lld is longer than the model's n_positions %lld",
                          (long long)block, (long long)positions);
    if (block <= 0) block = 1024;
    return open_datasets(t, LOOM_DATA_TOKENS, block);
}

/* HF refuses an evaluation that cannot happen (Trainer.__init__: an evaluation strategy with no
 * eval_dataset; the example scripts: --do_eval without a validation set) rather than train
 * and silently never evaluate. Token data already refuses a file without one example. */
static loom_status check_evaluation(const loom_trainer *t)
{
    const loom_args *a = &t->args;
    if (a->do_eval != 1) return LOOM_OK;
    int by_strategy =
        strcmp(a->evaluation_strategy, "no") != 0 && a->origin[LOOM__ARG_do_eval] == LOOM_ARG_FROM_DEFAULT;
    if (!a->validation_file || !*a->validation_file) {
        if (a->eval_on_start && !by_strategy && a->origin[LOOM__ARG_do_eval] == LOOM_ARG_FROM_DEFAULT)
            return loom_error(LOOM_E_INVALID, "--eval_on_start needs validation data: give --validation_file");
        if (by_strategy)
            return loom_error(LOOM_E_INVALID,
                              "--evaluation_strategy %s needs validation data: give --validation_file (or "
                              "--evaluation_strategy no)",
                              a->evaluation_strategy);
        return loom_error(LOOM_E_INVALID, "--do_eval needs validation data: give --validation_file");
    }
    if (!t->eval_dataset) return LOOM_OK; /* opened later (token data), checked again then */
    int64_t n = t->eval_dataset->n_examples, world = t->world_size > 0 ? t->world_size : 1;
    if (n < 1)
        return loom_error(LOOM_E_INVALID, "--validation_file %s holds no example: nothing to evaluate",
                          a->validation_file);
    if (a->dataloader_drop_last && (n + world - 1) / world < a->per_device_eval_batch_size)
        return loom_error(LOOM_E_INVALID,
                          "--validation_file %s: %lld examples over %lld rank(s) make no evaluation batch of "
                          "--per_device_eval_batch_size %lld with --dataloader_drop_last",
                          a->validation_file, (long long)n, (long long)world, (long long)a->per_device_eval_batch_size);
    return LOOM_OK;
}

/* What a data file holds, as the error messages name it. */
static const char *data_kind(const loom_dataset *ds)
{
    return ds->n_classes > 0 ? "classification (LOOMCLS1)" : ds->collate ? "seq2seq (JSON lines)" : "token";
}

/* One data file against the training data and the model, before step 1. Without this, a
 * validation or test file of another kind or size stops the run at the first evaluation,
 * maybe hours in, with a message from the model that names no file. */
static loom_status check_one_data_file(const loom_trainer *t, const char *flag, const char *path, loom_dataset *ds)
{
    const loom_dataset *train = t->train_dataset;
    const char *model = t->model.plugin->desc->name;
    if (train && ds != train && strcmp(data_kind(ds), data_kind(train)) != 0)
        return loom_error(LOOM_E_INVALID, "--%s %s holds %s data, but --train_file %s holds %s data", flag, path,
                          data_kind(ds), t->args.train_file, data_kind(train));
    int64_t input_size = 0, num_classes = 0;
    if (loom_config_i64(t->model.config, "input_size", &input_size) != LOOM_CFG_PRESENT) input_size = 0;
    if (loom_config_i64(t->model.config, "num_classes", &num_classes) != LOOM_CFG_PRESENT) num_classes = 0;
    if (input_size > 0 && ds->n_classes <= 0)
        return loom_error(LOOM_E_INVALID,
                          "--%s %s holds %s data, but the model '%s' takes classification data "
                          "(%lld features per example)",
                          flag, path, data_kind(ds), model, (long long)input_size);
    if (input_size > 0 && ds->n_features != input_size)
        return loom_error(LOOM_E_INVALID, "--%s %s: %lld features per example, but the model '%s' takes %lld", flag,
                          path, (long long)ds->n_features, model, (long long)input_size);
    if (num_classes > 0 && ds->n_classes > num_classes)
        return loom_error(LOOM_E_INVALID, "--%s %s: labels of %lld classes, but the model '%s' has %lld", flag, path,
                          (long long)ds->n_classes, model, (long long)num_classes);
    int64_t vocab = 0;
    if (loom_config_i64(t->model.config, "vocab_size", &vocab) == LOOM_CFG_PRESENT && vocab > 0)
        ds->vocab_limit = vocab;
    return LOOM_OK;
}

static loom_status check_data_fits_model(const loom_trainer *t)
{
    const loom_args *a = &t->args;
    loom_status st = LOOM_OK;
    if (t->train_dataset) st = check_one_data_file(t, "train_file", a->train_file, t->train_dataset);
    if (st == LOOM_OK && t->eval_dataset)
        st = check_one_data_file(t, "validation_file", a->validation_file, t->eval_dataset);
    if (st == LOOM_OK && t->test_dataset) st = check_one_data_file(t, "test_file", a->test_file, t->test_dataset);
    return st;
}

/* --deepspeed ds_config.json: read and merge it with the arguments (conflicts are errors), and
 * refuse what this build cannot do yet rather than run something else. */
static loom_status load_deepspeed(loom_trainer *t)
{
    loom_args *a = &t->args;
    t->ds = calloc(1, sizeof *t->ds);
    if (!t->ds) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = loom_ds_config_load(a->deepspeed, a, t->world_size, t->ds);
    if (st != LOOM_OK) return st;
    const loom_ds_config *ds = t->ds;
    a->max_grad_norm = ds->gradient_clipping;
    /* Keys accepted with no effect that asked for something: said once, by the first rank. */
    for (size_t i = 0; t->rank == 0 && i < ds->n_notes; i++)
        fprintf(stderr, "loom: warning: %s\n", ds->notes[i]);
    return LOOM_OK;
}

/* Which precision plugin runs, and the configuration mapped onto it:
 *   a ds_config's fp16 section -> amp with DeepSpeed's dynamic scaler and the section's values
 *     (hysteresis honoured whether or not the dynamic keys are written: no v0.3.10 trap);
 *   its amp section -> apex at amp.opt_level; its bf16 section -> bf16;
 *   else --bf16 -> bf16; --fp16 -> amp with torch's GradScaler (HF's native AMP), or apex at
 *     --fp16_opt_level with --half_precision_backend apex (or its deprecated name --fp16_backend);
 *   a run that does not train with --fp16_full_eval / --bf16_full_eval -> amp / bf16, so
 *     evaluate and predict run on 16-bit weights;
 *   otherwise fp32. --plugin <precision>.so replaces fp32 (its keys from --key flags); another
 *   choice it may only repeat (apply_plugin_flags). */
typedef struct precision_choice {
    const char *plugin;
    loom_config_default entries[16];
    size_t n;
    char text[16][64];
} precision_choice;

static void choice_add(precision_choice *c, const char *key, const char *value)
{
    if (c->n < 16) c->entries[c->n++] = (loom_config_default){key, value};
}

static void choice_add_number(precision_choice *c, const char *key, double value)
{
    if (c->n >= 16) return;
    loom__format_shortest(c->text[c->n], sizeof c->text[c->n], value);
    choice_add(c, key, c->text[c->n]);
}

static void choose_precision(const loom_trainer *t, precision_choice *c)
{
    const loom_args *a = &t->args;
    const loom_ds_config *ds = t->ds;
    c->plugin = "fp32";
    c->n = 0;
    if (ds && ds->fp16.enabled) {
        c->plugin = "amp";
        choice_add(c, "scaler", "deepspeed");
        choice_add_number(c, "loss_scale", ds->fp16.loss_scale);
        choice_add_number(c, "initial_scale_power", ds->fp16.initial_scale_power);
        choice_add_number(c, "loss_scale_window", (double)ds->fp16.loss_scale_window);
        choice_add_number(c, "hysteresis", ds->fp16.hysteresis);
        choice_add_number(c, "min_loss_scale", ds->fp16.min_loss_scale);
        choice_add(c, "consecutive_hysteresis", ds->fp16.consecutive_hysteresis ? "true" : "false");
        return;
    }
    if (ds && ds->amp.enabled) {
        c->plugin = "apex";
        choice_add(c, "opt_level", ds->amp.opt_level);
        for (size_t i = 0; i < ds->amp.n_passthrough; i++)
            if (!strcmp(ds->amp.passthrough_keys[i], "loss_scale") ||
                !strcmp(ds->amp.passthrough_keys[i], "min_loss_scale") ||
                !strcmp(ds->amp.passthrough_keys[i], "max_loss_scale"))
                choice_add(c, ds->amp.passthrough_keys[i], ds->amp.passthrough_values[i]);
        return;
    }
    if (ds && ds->bf16.enabled) {
        c->plugin = "bf16";
        return;
    }
    if (ds) return; /* the file decided (its sections default to the arguments) */
    if (a->bf16 || (!a->do_train && a->bf16_full_eval)) {
        c->plugin = "bf16";
    } else if (loom__args_fp16_apex(a)) {
        c->plugin = "apex";
        choice_add(c, "opt_level", a->fp16_opt_level);
    } else if (a->fp16 || (!a->do_train && a->fp16_full_eval)) {
        c->plugin = "amp";
        choice_add(c, "scaler", "torch");
    }
}

/* ---- loom_trainer_create, step by step ---------------------------------------------------- */

/* The plugins a run uses: one per kind, callbacks in the order they run. */
typedef struct chosen_plugins {
    const loom_plugin *model, *optimizer, *scheduler, *precision, *sharding, *comm;
    const loom_plugin *callbacks[LOOM_MAX_CALLBACKS];
    size_t n_callbacks;
    precision_choice precision_mapped;
} chosen_plugins;

/* HF's --log_level / --log_level_replica over loom's own messages; passive keeps what the
 * command chose (info, or debug with --verbose). */
static uint32_t log_level_named(const char *name, uint32_t passive)
{
    if (!name || !strcmp(name, "passive")) return passive;
    if (!strcmp(name, "debug")) return LOOM_LOG_DEBUG;
    if (!strcmp(name, "info")) return LOOM_LOG_INFO;
    if (!strcmp(name, "warning")) return LOOM_LOG_WARNING;
    return LOOM_LOG_ERROR; /* error, critical */
}

/* Who we are: torchrun / loom launch, mpirun or srun variables, or one process. */
static loom_status join_run(loom_trainer *t)
{
    const loom_args *a = &t->args;
    loom_status st = loom_ranks_detect(&t->ranks);
    if (st != LOOM_OK) return st;
    t->rank = t->ranks.rank;
    t->world_size = t->ranks.world_size;
    t->local_rank = t->ranks.local_rank;
    t->local_world_size = t->ranks.local_world_size;
    /* HF's should_log: with log_on_each_node (its default) each node's local rank 0 takes
     * log_level, not rank 0 alone. --verbose (LOOM_VERBOSE) asks for every message of every rank:
     * it wins over both. */
    const int should_log = a->log_on_each_node ? t->local_rank == 0 : t->rank == 0;
    if (loom_host_log_level() < LOOM_LOG_DEBUG)
        loom_host_set_log_level(
            log_level_named(should_log ? a->log_level : a->log_level_replica, loom_host_log_level()));
    /* --local_rank is a launcher's word to the process it starts, which also finds RANK and
     * WORLD_SIZE in its environment. Alone it would be ignored in silence, where HF fails to
     * join a process group. */
    const char *env_local_rank = getenv("LOCAL_RANK");
    if (a->local_rank != -1 && !strcmp(t->ranks.source, "single process") && !(env_local_rank && *env_local_rank))
        return loom_error(LOOM_E_INVALID,
                          "--local_rank %lld: this is a single process (no RANK and WORLD_SIZE in the environment): "
                          "start the ranks with loom launch --nproc_per_node N, or leave --local_rank out",
                          (long long)a->local_rank);
    if (a->num_threads > 0) omp_set_num_threads((int)a->num_threads);
    if (t->world_size > 1) {
        /* Rank 0 serves the rendezvous store; every rank joins before any plugin needs it. */
        double timeout = a->ddp_timeout > 0 ? (double)a->ddp_timeout : 1800.0;
        if ((st = loom_store_rendezvous(t->rank, t->world_size, t->ranks.master_addr, t->ranks.master_port, timeout,
                                        &t->store_server, &t->store_client)) != LOOM_OK)
            return st;
        loom_host_set_store(t->store_client);
    }
    loom_host_set_seed((uint64_t)a->seed);
    if (a->num_threads > 0) loom_host_set_threads((int32_t)a->num_threads);
    return LOOM_OK;
}

/* What the run reads before choosing plugins: the ds_config, the plugin folders, the data whose
 * shapes size the model (classification data first: the model's sizes come from it), and a
 * saved model's config.json. */
/* A job that restarts failed ranks (loom launch --max_restarts, torchrun --max-restarts) goes
 * on from the newest checkpoint, and a model-only one cannot be resumed: every restart would
 * be refused in turn, after the failure it was meant to survive. Said before the run instead. */
static loom_status check_restartable(const loom_args *a)
{
    const char *env = getenv("LOOM_MAX_RESTARTS");
    if (!env || !*env) env = getenv("TORCHELASTIC_MAX_RESTARTS");
    long long restarts = env && *env ? strtoll(env, NULL, 10) : 0;
    if (a->do_train && a->save_only_model && restarts > 0)
        return loom_error(LOOM_E_INVALID,
                          "--save_only_model in a job that restarts failed ranks (%lld restarts allowed): a restart "
                          "resumes from the newest checkpoint, and model-only checkpoints cannot be resumed; drop "
                          "--save_only_model or --max_restarts",
                          restarts);
    return LOOM_OK;
}

static loom_status read_inputs(loom_trainer *t, loom_saved_model_config *saved)
{
    const loom_args *a = &t->args;
    loom_status st = LOOM_OK;
    if (a->deepspeed && *a->deepspeed && (st = load_deepspeed(t)) != LOOM_OK) return st;
    st = loom_loader_init((const char *const *)a->plugin_dir.items, a->plugin_dir.count);
    if (st != LOOM_OK) return st;
    if ((st = open_datasets(t, LOOM_DATA_CLASSIFICATION, 0)) != LOOM_OK) return st;
    if ((st = open_datasets(t, LOOM_DATA_SEQ2SEQ, 0)) != LOOM_OK) return st;
    if ((st = check_evaluation(t)) != LOOM_OK) return st;
    if ((st = check_restartable(a)) != LOOM_OK) return st;
    if (a->model_name_or_path && *a->model_name_or_path) {
        /* A checkpoint's manifest is checked here too, not only at a resume: a flipped byte in
         * its weights would otherwise be evaluated or trained on without a word. */
        if ((st = loom_checkpoint_verify_model(a->model_name_or_path)) != LOOM_OK)
            return loom_error_context(st, "--model_name_or_path");
        return loom_saved_model_config_read(a->model_name_or_path, saved);
    }
    return LOOM_OK;
}

/* The model a run names, or the one its data asks for (text -> gpt2, pairs -> t5, features ->
 * mlp). */
static const char *model_spec_for(const loom_args *a, const loom_saved_model_config *saved)
{
    const char *model_spec = saved->model_type ? saved->model_type : a->model;
    if (model_spec && *model_spec) return model_spec;
    const char *files[] = {a->train_file, a->validation_file, a->test_file};
    int format = LOOM_DATA_CLASSIFICATION;
    for (size_t i = 0; i < 3; i++)
        if (files[i] && *files[i] && loom_dataset_sniff(files[i], &format) == LOOM_OK) break;
    loom_error_clear();
    return format == LOOM_DATA_TOKENS ? "gpt2" : format == LOOM_DATA_SEQ2SEQ ? "t5" : "mlp";
}

/* The default plugin of every kind, from the arguments and the ds_config. */
static loom_status choose_default_plugins(loom_trainer *t, const loom_saved_model_config *saved, chosen_plugins *c)
{
    const loom_args *a = &t->args;
    loom_status st = LOOM_OK;
    if ((st = load_plugin(model_spec_for(a, saved), LOOM_KIND_MODEL, &c->model)) != LOOM_OK) goto done;
    const char *optimizer_name = loom__optimizer_plugin_for(a->optim), *scheduler_name = a->lr_scheduler_type;
    if (t->ds && t->ds->optimizer_choice.plugin)
        optimizer_name = loom__optimizer_plugin_for(t->ds->optimizer_choice.plugin);
    if (t->ds && t->ds->scheduler_choice.plugin) scheduler_name = t->ds->scheduler_choice.plugin;
    if ((st = load_plugin(optimizer_name, LOOM_KIND_OPTIMIZER, &c->optimizer)) != LOOM_OK) goto done;
    if ((st = load_plugin(scheduler_name, LOOM_KIND_SCHEDULER, &c->scheduler)) != LOOM_OK) goto done;
    choose_precision(t, &c->precision_mapped);
    if ((st = load_plugin(c->precision_mapped.plugin, LOOM_KIND_PRECISION, &c->precision)) != LOOM_OK) goto done;
    const char *sharding_name = t->world_size > 1 ? "ddp" : "none";
    if (loom__fsdp_sharding(a)) sharding_name = loom__fsdp_sharding(a); /* --fsdp, --sharded_ddp */
    if (t->ds && strcmp(t->ds->sharding.plugin, "ddp") != 0) sharding_name = t->ds->sharding.plugin;
    if ((st = load_plugin(sharding_name, LOOM_KIND_SHARDING, &c->sharding)) != LOOM_OK) goto done;
done:
    return st;
}

/* The callbacks every run has: a printer or a progress bar, the history file, and what
 * --report_to asks for. */
static loom_status choose_default_callbacks(const loom_trainer *t, chosen_plugins *c)
{
    const loom_args *a = &t->args;
    loom_status st =
        load_plugin(a->disable_tqdm == 1 ? "printer" : "progress", LOOM_KIND_CALLBACK, &c->callbacks[c->n_callbacks++]);
    if (st != LOOM_OK) return st;
    /* Every run: log_history.jsonl, written as it happens (loom plot reads it). */
    if ((st = load_plugin("history", LOOM_KIND_CALLBACK, &c->callbacks[c->n_callbacks++])) != LOOM_OK) return st;
    /* --report_to tensorboard (or all): HF's TensorBoardCallback; html (or all): curves.html. */
    int tensorboard = 0, html = 0;
    for (size_t i = 0; i < a->report_to.count; i++) {
        tensorboard |= !strcmp(a->report_to.items[i], "tensorboard") || !strcmp(a->report_to.items[i], "all");
        html |= !strcmp(a->report_to.items[i], "html") || !strcmp(a->report_to.items[i], "all");
    }
    if (tensorboard &&
        (st = load_plugin("tensorboard", LOOM_KIND_CALLBACK, &c->callbacks[c->n_callbacks++])) != LOOM_OK)
        return st;
    if (html && (st = load_plugin("curves", LOOM_KIND_CALLBACK, &c->callbacks[c->n_callbacks++])) != LOOM_OK) return st;
    return LOOM_OK;
}

/* What chose a kind's plugin before --plugin, when the user asked for something (NULL: only
 * defaults did). A --plugin that names another plugin of that kind contradicts it. */
static const char *explicit_choice(const loom_trainer *t, const chosen_plugins *c, uint32_t kind)
{
    const loom_args *a = &t->args;
    const loom_ds_config *ds = t->ds;
    switch (kind) {
    case LOOM_KIND_MODEL:
        return a->model && *a->model ? "--model" : NULL;
    case LOOM_KIND_OPTIMIZER:
        if (ds && ds->optimizer_choice.plugin) return "the DeepSpeed config's optimizer";
        return a->optim && strcmp(a->optim, "adamw_torch") != 0 ? "--optim" : NULL;
    case LOOM_KIND_SCHEDULER:
        if (ds && ds->scheduler_choice.plugin) return "the DeepSpeed config's scheduler";
        return a->lr_scheduler_type && strcmp(a->lr_scheduler_type, "linear") != 0 ? "--lr_scheduler_type" : NULL;
    case LOOM_KIND_PRECISION:
        if (strcmp(c->precision_mapped.plugin, "fp32") == 0) return NULL;
        return ds ? "the DeepSpeed config's precision section" : "--fp16/--bf16";
    case LOOM_KIND_SHARDING:
        if (loom__fsdp_sharding(a)) return a->fsdp ? "--fsdp" : "--sharded_ddp";
        return ds && strcmp(ds->sharding.plugin, "ddp") != 0 ? "the DeepSpeed config's zero_optimization" : NULL;
    default:
        return NULL;
    }
}

/* The slot a --plugin of this kind fills (NULL: callbacks and backends, handled apart). */
static const loom_plugin **kind_slot(chosen_plugins *c, uint32_t kind)
{
    switch (kind) {
    case LOOM_KIND_MODEL:
        return &c->model;
    case LOOM_KIND_OPTIMIZER:
        return &c->optimizer;
    case LOOM_KIND_SCHEDULER:
        return &c->scheduler;
    case LOOM_KIND_PRECISION:
        return &c->precision;
    case LOOM_KIND_SHARDING:
        return &c->sharding;
    case LOOM_KIND_COMM:
        return &c->comm;
    default:
        return NULL;
    }
}

/* Callbacks add up, but two of one name (the same file given twice, two files that declare one
 * name, or a callback the run has anyway) would both take one set of --NAME.KEY flags.
 * given[k]: the --plugin that loaded callback k, NULL for the run's defaults. */
static loom_status refuse_same_callback(const chosen_plugins *c, const char *const *given, const char *spec,
                                        const loom_plugin *p)
{
    for (size_t k = 0; k < c->n_callbacks; k++) {
        const loom_plugin *other = c->callbacks[k];
        if (strcmp(other->desc->name, p->desc->name) != 0) continue;
        char first[1024];
        if (given[k])
            snprintf(first, sizeof first, "--plugin %s (%s)", given[k], other->path);
        else
            snprintf(first, sizeof first, "the run's default %s", other->path);
        return loom_error(LOOM_E_INVALID,
                          "callback '%s' given twice, by %s and by --plugin %s (%s): both would take the --%s.KEY "
                          "flags; give it once",
                          p->desc->name, first, spec, p->path, p->desc->name);
    }
    return LOOM_OK;
}

/* --plugin overrides the default of its kind (callbacks add), but not a choice the user made
 * some other way, nor another --plugin of the same kind: a run silently doing something other
 * than one of its flags says is worse than an error. */
static loom_status apply_plugin_flags(loom_trainer *t, chosen_plugins *c)
{
    const loom_args *a = &t->args;
    const char *given[16] = {0};                          /* the --plugin that chose each kind */
    const char *callback_given[LOOM_MAX_CALLBACKS] = {0}; /* ... that loaded each callback     */
    for (size_t i = 0; i < a->plugin.count; i++) {
        const loom_plugin *p = NULL;
        loom_status st = load_plugin(a->plugin.items[i], 0, &p);
        if (st != LOOM_OK) return st;
        const uint32_t kind = p->desc->kind;
        /* One plugin per kind, callbacks aside; a backend too (the last one used to win silently). */
        if (kind < 16 && kind != LOOM_KIND_CALLBACK) {
            if (given[kind])
                return loom_error(LOOM_E_INVALID, "--plugin %s and --plugin %s are both %s plugins: give one",
                                  given[kind], a->plugin.items[i], loom_kind_name(kind));
            given[kind] = a->plugin.items[i];
        }
        const loom_plugin **slot = kind < 16 ? kind_slot(c, kind) : NULL;
        if (slot) {
            const char *by = explicit_choice(t, c, kind);
            if (by && *slot && strcmp((*slot)->desc->name, p->desc->name) != 0)
                return loom_error(LOOM_E_INVALID, "--plugin %s: %s already chose the %s plugin '%s': give one of them",
                                  a->plugin.items[i], by, loom_kind_name(kind), (*slot)->desc->name);
            *slot = p;
            continue;
        }
        switch (kind) {
        case LOOM_KIND_BACKEND: t->backend_plugin = p; break;
        case LOOM_KIND_CALLBACK:
            if (c->n_callbacks == LOOM_MAX_CALLBACKS)
                return loom_error(LOOM_E_INVALID, "more than %d callbacks", LOOM_MAX_CALLBACKS);
            if ((st = refuse_same_callback(c, callback_given, a->plugin.items[i], p)) != LOOM_OK) return st;
            callback_given[c->n_callbacks] = a->plugin.items[i];
            c->callbacks[c->n_callbacks++] = p;
            break;
        default:
            return loom_error(LOOM_E_INVALID, "--plugin %s: unknown plugin kind %u", a->plugin.items[i], p->desc->kind);
        }
    }
    return LOOM_OK;
}

/* The values mapped from the run arguments onto each plugin's section, and the text they
 * point at (it must outlive loom_config_build). */
typedef struct mapped_sections {
    loom_config_default model[256];
    size_t n_model;
    char text[7][64];
    char smoothing[64];
    char neftune[64];
    loom_config_default optimizer[5];
    loom_config_default scheduler[32];
    size_t n_scheduler;
    char *kwarg_texts[32];
    loom_config_default sharding[1];
    size_t n_sharding;
    char bucket[32];
    cJSON *kwargs; /* owns the scheduler's keys */
} mapped_sections;

static void mapped_sections_free(mapped_sections *m)
{
    for (size_t i = 0; i < m->n_scheduler; i++)
        free(m->kwarg_texts[i]);
    cJSON_Delete(m->kwargs);
}

/* The model's section: the data's shape, a saved config.json, --gradient_checkpointing. */
static loom_status map_model_section(const loom_trainer *t, const loom_saved_model_config *saved,
                                     const loom_plugin *model, mapped_sections *m)
{
    const loom_dataset *shape_source = t->train_dataset  ? t->train_dataset
                                       : t->eval_dataset ? t->eval_dataset
                                                         : t->test_dataset;
    if (shape_source && shape_source->n_classes > 0) {
        snprintf(m->text[0], sizeof m->text[0], "%lld", (long long)shape_source->n_features);
        snprintf(m->text[1], sizeof m->text[1], "%lld", (long long)shape_source->n_classes);
        m->model[m->n_model++] = (loom_config_default){"input_size", m->text[0]};
        m->model[m->n_model++] = (loom_config_default){"num_classes", m->text[1]};
    }
    for (size_t i = 0; i < saved->n && m->n_model < 256; i++)
        m->model[m->n_model++] = saved->entries[i];
    /* How the run trains, reaching the model as keys it must declare (HF's models without
     * the feature refuse it too): gpt2 recomputes its blocks in backward; HF's LabelSmoother
     * is inside the model's loss; NEFTune is HF's hook on the model's input embedding. */
    loom__format_shortest(m->smoothing, sizeof m->smoothing, t->args.label_smoothing_factor);
    loom__format_shortest(m->neftune, sizeof m->neftune, t->args.neftune_noise_alpha);
    const struct {
        int on;
        const char *key, *value, *lacks;
    } training[] = {
        {t->args.gradient_checkpointing == 1 || loom__fsdp_activation_checkpointing(&t->args), "gradient_checkpointing",
         "true", "cannot recompute its activations"},
        {t->args.label_smoothing_factor != 0.0, "label_smoothing_factor", m->smoothing, "has no smoothed loss"},
        {t->args.neftune_noise_alpha != 0.0, "neftune_noise_alpha", m->neftune,
         "has no input embedding to add NEFTune's noise to"},
    };
    for (size_t i = 0; i < sizeof training / sizeof *training; i++) {
        if (!training[i].on || m->n_model >= 256) continue;
        if (!loom_config_declares(model->desc, training[i].key))
            return loom_error(LOOM_E_UNSUPPORTED, "--%s: model '%s' %s", training[i].key, model->desc->name,
                              training[i].lacks);
        m->model[m->n_model++] = (loom_config_default){training[i].key, training[i].value};
    }
    return LOOM_OK;
}

/* The optimizer's and sharding's sections from the arguments. */
static void map_optimizer_and_sharding(const loom_args *a, mapped_sections *m)
{
    loom__format_shortest(m->text[2], sizeof m->text[2], a->learning_rate);
    loom__format_shortest(m->text[3], sizeof m->text[3], a->adam_beta1);
    loom__format_shortest(m->text[4], sizeof m->text[4], a->adam_beta2);
    loom__format_shortest(m->text[5], sizeof m->text[5], a->adam_epsilon);
    loom__format_shortest(m->text[6], sizeof m->text[6], a->weight_decay);
    /* In the order loom__optim_trainer_keys counts (see build_configs). */
    static const char *const keys[5] = LOOM_OPTIM_TRAINER_KEYS;
    static const int text_of[5] = {2, 6, 3, 4, 5};
    for (size_t i = 0; i < 5; i++)
        m->optimizer[i] = (loom_config_default){keys[i], m->text[text_of[i]]};
    snprintf(m->bucket, sizeof m->bucket, "%lld", (long long)a->ddp_bucket_cap_mb);
    m->sharding[0] = (loom_config_default){"bucket_cap_mb", m->bucket};
    m->n_sharding = a->ddp_bucket_cap_mb != LOOM_ARG_NONE_INT ? 1 : 0;
}

/* The kwargs whose parameter defaults to None in HF's schedule function (transformers
 * optimization.py: get_cosine_with_min_lr_schedule_with_warmup, ..._with_warmup_lr_rate,
 * get_wsd_schedule), so that a JSON null there is that default: the key left unset. Nowhere else
 * is None a value HF's function takes (docs/semantics/schedulers.md#hf-schedules). */
static int kwarg_defaults_to_none(const char *scheduler, const char *key)
{
    static const char *const none_defaults[][2] = {
        {"cosine_with_min_lr", "min_lr"},
        {"cosine_with_min_lr", "min_lr_rate"},
        {"cosine_warmup_with_min_lr", "min_lr"},
        {"cosine_warmup_with_min_lr", "min_lr_rate"},
        {"cosine_warmup_with_min_lr", "warmup_lr_rate"},
        {"warmup_stable_decay", "num_stable_steps"},
    };
    for (size_t i = 0; i < sizeof none_defaults / sizeof none_defaults[0]; i++)
        if (!strcmp(none_defaults[i][0], scheduler) && !strcmp(none_defaults[i][1], key)) return 1;
    return 0;
}

/* --lr_scheduler_kwargs '{"num_cycles": 2}' maps onto the scheduler's keys. */
static loom_status map_scheduler_kwargs(const loom_args *a, const char *scheduler, mapped_sections *m)
{
    if (!a->lr_scheduler_kwargs || !*a->lr_scheduler_kwargs) return LOOM_OK;
    m->kwargs = cJSON_Parse(a->lr_scheduler_kwargs);
    if (!cJSON_IsObject(m->kwargs))
        return loom_error(LOOM_E_INVALID, "--lr_scheduler_kwargs: not a JSON object: %s", a->lr_scheduler_kwargs);
    for (cJSON *item = m->kwargs->child; item && m->n_scheduler < 32; item = item->next) {
        if (cJSON_IsNull(item) && kwarg_defaults_to_none(scheduler, item->string)) continue;
        m->kwarg_texts[m->n_scheduler] =
            cJSON_IsString(item) ? strdup(item->valuestring) : cJSON_PrintUnformatted(item);
        m->scheduler[m->n_scheduler] = (loom_config_default){item->string, m->kwarg_texts[m->n_scheduler]};
        m->n_scheduler++;
    }
    return LOOM_OK;
}

/* A kwarg the scheduler does not declare is a mistake, not a silent no-op. */
static loom_status check_scheduler_kwargs(const loom_plugin *scheduler, const mapped_sections *m)
{
    for (size_t i = 0; i < m->n_scheduler; i++) {
        int declared = 0;
        for (const loom_param_spec *s = scheduler->desc->params; s && s->key; s++)
            declared |= !strcmp(s->key, m->scheduler[i].key);
        if (!declared)
            return loom_error(LOOM_E_INVALID, "--lr_scheduler_kwargs: scheduler '%s' has no key '%s'",
                              scheduler->desc->name, m->scheduler[i].key);
    }
    return LOOM_OK;
}

/* Every plugin's configuration section: the values mapped from the run arguments (a
 * ds_config's sections replace them: it already merged them), then the user's flags, which
 * `used` marks. */
static loom_status build_configs(loom_trainer *t, const chosen_plugins *c, const mapped_sections *m,
                                 unsigned char *used)
{
    const loom_args *a = &t->args;
    const loom_config_default *opt_entries = m->optimizer, *sched_entries = m->scheduler, *shard_entries = m->sharding;
    /* Only what HF's Trainer gives that optimizer: Adafactor, SGD, Adagrad and RMSprop get lr
     * and the groups' weight decay, not Adam's betas and eps; Lion gets the betas too. */
    size_t n_opt = loom__optim_trainer_keys(c->optimizer->desc->name), n_sched = m->n_scheduler;
    size_t n_shard = m->n_sharding;
    if (t->ds && t->ds->optimizer.present)
        opt_entries = t->ds->optimizer_choice.entries, n_opt = t->ds->optimizer_choice.n_entries;
    if (t->ds && t->ds->scheduler_choice.plugin)
        sched_entries = t->ds->scheduler_choice.entries, n_sched = t->ds->scheduler_choice.n_entries;
    if (t->ds && strcmp(c->sharding->desc->name, t->ds->sharding.plugin) == 0)
        shard_entries = t->ds->sharding.entries, n_shard = t->ds->sharding.n_entries;
    /* The mapped precision values belong to the plugin they were mapped for, not to a --plugin
     * replacing it. */
    int own_precision = strcmp(c->precision->desc->name, c->precision_mapped.plugin) == 0;
    int configs_ok =
        (t->model.config = loom_config_build(c->model->desc, m->model, m->n_model, a, used)) &&
        (t->optimizer.config = loom_config_build(c->optimizer->desc, opt_entries, n_opt, a, used)) &&
        (t->scheduler.config = loom_config_build(c->scheduler->desc, sched_entries, n_sched, a, used)) &&
        (t->precision.config = loom_config_build(c->precision->desc, own_precision ? c->precision_mapped.entries : NULL,
                                                 own_precision ? c->precision_mapped.n : 0, a, used)) &&
        (t->sharding.config = loom_config_build(c->sharding->desc, shard_entries, n_shard, a, used)) &&
        (t->comm.config = loom_config_build(c->comm->desc, NULL, 0, a, used));
    for (size_t i = 0; configs_ok && i < c->n_callbacks; i++) {
        t->callbacks[i].plugin = c->callbacks[i];
        configs_ok = (t->callbacks[i].config = loom_trainer_callback_config(t, c->callbacks[i], used)) != NULL;
        t->n_callbacks = i + 1;
    }
    if (!configs_ok) return LOOM_E_INVALID;
    return LOOM_OK;
}

/* Map, build and check every section; then no flag may be left unused. */
static loom_status configure_plugins(loom_trainer *t, const loom_saved_model_config *saved, const chosen_plugins *c,
                                     unsigned char *used)
{
    mapped_sections *m = calloc(1, sizeof *m);
    if (!m) return loom_error(LOOM_E_NOMEM, "out of memory");
    t->model.plugin = c->model;
    t->optimizer.plugin = c->optimizer;
    t->scheduler.plugin = c->scheduler;
    t->precision.plugin = c->precision;
    t->sharding.plugin = c->sharding;
    t->comm.plugin = c->comm;
    loom_status st = map_model_section(t, saved, c->model, m);
    if (st == LOOM_OK) {
        map_optimizer_and_sharding(&t->args, m);
        st = map_scheduler_kwargs(&t->args, c->scheduler->desc->name, m);
    }
    if (st == LOOM_OK) st = build_configs(t, c, m, used);
    if (st == LOOM_OK) st = check_scheduler_kwargs(c->scheduler, m);
    mapped_sections_free(m);
    free(m);
    if (st != LOOM_OK) return st;
    const loom_plugin *all[6 + LOOM_MAX_CALLBACKS] = {c->model,     c->optimizer, c->scheduler,
                                                      c->precision, c->sharding,  c->comm};
    for (size_t i = 0; i < c->n_callbacks; i++)
        all[6 + i] = c->callbacks[i];
    return report_unused_flags(t, used, all, 6 + c->n_callbacks);
}

/* Instances that need nothing from the training setup: model, precision, callbacks, comm.
 * Sharding needs the parameter layout (prepare), optimizer and scheduler the step count
 * (create_optimizer_and_scheduler). Token data opens once the model says its context. */
static loom_status create_early_instances(loom_trainer *t, const chosen_plugins *c)
{
    const loom_args *a = &t->args;
    loom_status st = loom_trainer_create_instance(&t->model, c->model, NULL);
    if (st != LOOM_OK) return st;
    if ((st = open_token_datasets(t)) != LOOM_OK) return st;
    if ((st = check_evaluation(t)) != LOOM_OK) return st;
    if ((st = check_data_fits_model(t)) != LOOM_OK) return st;
    if ((st = loom_trainer_create_instance(&t->precision, c->precision, NULL)) != LOOM_OK) return st;
    for (size_t i = 0; i < c->n_callbacks; i++)
        if ((st = loom_trainer_create_callback(t, &t->callbacks[i], c->callbacks[i])) != LOOM_OK) return st;
    /* Before the comm plugin joins its group: ranks that run different things would hang or
     * fail there, far from the cause, and a rank that failed so far would be waited for. */
    if ((st = loom_trainer_agree(t)) != LOOM_OK) return st;
    loom_comm_setup setup = {LOOM_HEADER_INIT(loom_comm_setup)};
    setup.rank = t->rank;
    setup.world_size = t->world_size;
    setup.local_rank = t->local_rank;
    setup.local_world_size = t->local_world_size;
    setup.master_addr = t->ranks.master_addr;
    setup.master_port = t->ranks.master_port;
    setup.device = loom_trainer_comm_device(t, c->comm);
    setup.timeout_seconds = a->ddp_timeout > 0 ? (double)a->ddp_timeout : 1800.0;
    if ((st = loom_trainer_create_instance(&t->comm, c->comm, &setup)) != LOOM_OK) return st;
    t->sharding.vtable = c->sharding->desc->vtable;
    t->optimizer.vtable = c->optimizer->desc->vtable;
    t->scheduler.vtable = c->scheduler->desc->vtable;
    /* An optimizer that communicates itself (1-bit Adam) needs its steps' gradients left
     * local, which only a replicating sharding can do; say so before any work. */
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    if (LOOM_HAS(ov, loom_optimizer_vtable, local_gradients) && !LOOM_HAS(sv, loom_sharding_vtable, set_reduction))
        return loom_error(LOOM_E_INVALID,
                          "%s needs --plugin ddp (DeepSpeed runs 1-bit Adam with ZeRO stage 0), not sharding '%s'",
                          c->optimizer->desc->name, c->sharding->desc->name);
    return LOOM_OK;
}

/* The comm plugin depends on the device (nccl on a GPU): chosen once it is open, unless a
 * --plugin named one. */
static loom_status choose_comm(const loom_trainer *t, chosen_plugins *c)
{
    const char *comm_name = NULL;
    if (c->comm) return LOOM_OK;
    loom_status st = loom_trainer_comm_name(t, &comm_name);
    return st != LOOM_OK ? st : load_plugin(comm_name, LOOM_KIND_COMM, &c->comm);
}

/* HF's TrainerState and TrainerControl before INIT_END. */
static void init_trainer_state(loom_trainer *t)
{
    t->state = (loom_trainer_state){LOOM_HEADER_INIT(loom_trainer_state)};
    t->state.is_world_process_zero = t->rank == 0;
    t->state.is_local_process_zero = t->local_rank == 0;
    t->state.best_metric = 0.0 / 0.0;
    t->state.output_dir = t->args.output_dir;
    /* A ratio stays 0 until train() knows the run's length (resolve_step_intervals). */
    t->state.logging_steps = loom_args_steps(t->args.logging_steps, 0);
    t->state.eval_steps = loom_args_steps(isnan(t->args.eval_steps) ? t->args.logging_steps : t->args.eval_steps, 0);
    t->state.save_steps = loom_args_steps(t->args.save_steps, 0);
    t->train_batch_size = t->args.per_device_train_batch_size;
    t->state.train_batch_size = t->train_batch_size;
    t->state.loss_scale = 1.0;
    t->control = (loom_trainer_control){LOOM_HEADER_INIT(loom_trainer_control)};
}

loom_status loom_trainer_create(loom_args *args, loom_trainer **out)
{
    *out = NULL;
    loom_trainer *t = calloc(1, sizeof *t);
    if (!t) return loom_error(LOOM_E_NOMEM, "out of memory");
    t->args = *args;
    memset(args, 0, sizeof *args);
    t->hooks = *loom_trainer_default_hooks();
    t->checkpoint_step = -1;
    t->core_host = loom_host_create("loom");
    t->log_history = cJSON_CreateArray();
    loom_status st = LOOM_OK;
    loom_saved_model_config saved = {0};
    chosen_plugins chosen = {0};
    unsigned char *used = calloc(t->args.unknown_keys.count + 1, 1);
    if (!t->core_host || !t->log_history || !used) st = loom_error(LOOM_E_NOMEM, "out of memory");
    if (st == LOOM_OK) st = join_run(t);
    if (st == LOOM_OK) st = read_inputs(t, &saved);
    if (st == LOOM_OK) st = choose_default_plugins(t, &saved, &chosen);
    if (st == LOOM_OK) st = choose_default_callbacks(t, &chosen);
    if (st == LOOM_OK) st = apply_plugin_flags(t, &chosen);
    if (st == LOOM_OK) st = loom_trainer_open_device(t);
    if (st == LOOM_OK) st = choose_comm(t, &chosen);
    if (st == LOOM_OK) st = configure_plugins(t, &saved, &chosen, used);
    if (st == LOOM_OK) st = create_early_instances(t, &chosen);
    free(used);
    loom_saved_model_config_free(&saved);
    if (st != LOOM_OK) {
        loom_trainer_agree_abandon(t);
        loom_trainer_destroy(t);
        return st;
    }
    init_trainer_state(t);
    *out = t;
    return loom_trainer_fire(t, LOOM_EVENT_INIT_END, NULL, NULL);
}

/* ---- teardown ---------------------------------------------------------------------------- */

static void destroy_instance(loom_plugin_instance *slot)
{
    if (slot->instance && slot->plugin) {
        switch (slot->plugin->desc->kind) {
        case LOOM_KIND_MODEL: ((const loom_model_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_OPTIMIZER: ((const loom_optimizer_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_SCHEDULER: ((const loom_scheduler_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_PRECISION: ((const loom_precision_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_SHARDING: ((const loom_sharding_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_CALLBACK: ((const loom_callback_vtable *)slot->vtable)->destroy(slot->instance); break;
        case LOOM_KIND_COMM: ((const loom_comm_vtable *)slot->vtable)->destroy(slot->instance); break;
        default: break;
        }
    }
    loom_host_destroy(slot->host);
    loom_config_free(slot->config);
    memset(slot, 0, sizeof *slot);
}

void loom_trainer_destroy(loom_trainer *t)
{
    if (!t) return;
    if (t->jit_stopped) loom_trainer_jit_disarm(); /* kept past train() after a SIGTERM (trainer_jit.c) */
    const loom_host_api *api = loom_host_api_table();
    /* Users of the communicator and the parameters go first. */
    for (size_t i = 0; i < LOOM_MAX_CALLBACKS; i++) destroy_instance(&t->callbacks[i]);
    destroy_instance(&t->optimizer);
    destroy_instance(&t->scheduler);
    destroy_instance(&t->sharding);
    destroy_instance(&t->precision);
    destroy_instance(&t->model);
    destroy_instance(&t->comm);
    if (t->store_client) {
        /* Rank 0 serves the store: it must outlive every other rank's last use of it. A short
         * wait: after a failure the others may never arrive. */
        char saved[2048]; /* teardown must not replace the error that caused it */
        snprintf(saved, sizeof saved, "%s", loom_error_message());
        int64_t arrived = 0;
        if (loom_store_add(t->store_client, "loom/finished", 1, &arrived) == LOOM_OK && arrived == t->world_size)
            loom_store_set(t->store_client, "loom/finished/all", "1", 1);
        const char *all = "loom/finished/all";
        if (t->rank == 0) loom_store_wait(t->store_client, &all, 1, 5.0);
        loom_error(LOOM_OK, "%s", saved);
        loom_host_set_store(NULL);
        loom_store_close(t->store_client);
    }
    loom_store_server_stop(t->store_server);
    loom_grad_rows_free(t->grad_rows);
    if (t->core_host) {
        api->free_memory(t->core_host, t->params);
        api->free_memory(t->core_host, t->optimizer_state);
    }
    loom_host_destroy(t->core_host);
    loom_device_close();
    if (t->train_dataset) t->train_dataset->destroy(t->train_dataset);
    if (t->eval_dataset) t->eval_dataset->destroy(t->eval_dataset);
    if (t->test_dataset) t->test_dataset->destroy(t->test_dataset);
    loom_trainer_text_tokenizer_free(t);
    free(t->tensors);
    free(t->tensor_offsets);
    free(t->spans);
    free(t->span_range);
    free(t->span_flat_begin);
    free(t->offload_owned);
    free(t->stat_spans);
    free(t->stat_span_of);
    free(t->stat_flat_begin);
    free(t->tensor_stats);
    free(t->norm_ranges);
    if (t->ds) loom_ds_config_free(t->ds);
    free(t->ds);
    free(t->norm_piece_sums);
    free(t->norm_work);
    free(t->norm_work_sums);
    loom_step_pieces_free(t);
    free(t->norm_bounds);
    cJSON_Delete(t->log_history);
    free(t->best_model_checkpoint);
    free(t->resume_dir);
    loom_args_free(&t->args);
    free(t);
}
