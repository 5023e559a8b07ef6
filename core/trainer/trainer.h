/*
 * trainer.h - loom_trainer, HF's Trainer in C.
 *
 * A program creates a trainer from run arguments, may replace any hook (the C form of
 * subclassing Trainer: set trainer->hooks.compute_loss = my_loss), then calls
 * loom_trainer_train / _evaluate / _predict. `loom train` is exactly that with no hook
 * replaced. Every hook has a default that does what HF's does; a replacement may call the
 * default (loom_trainer_default_hooks()) for the parts it does not change.
 *
 * Plugins: the trainer loads one model, optimizer, scheduler, precision, sharding and comm
 * plugin, and any number of callbacks, from the arguments (--model, --optim,
 * --lr_scheduler_type, --plugin NAME...), each configured through its own section.
 *
 * Threading: a trainer is used from one thread.
 */
#ifndef LOOM_CORE_TRAINER_H
#define LOOM_CORE_TRAINER_H

#include "error.h" /* LOOM_API */

#include <loom/callback.h>
#include <loom/comm.h>
#include <loom/model.h>
#include <loom/optimizer.h>
#include <loom/precision.h>
#include <loom/scheduler.h>
#include <loom/sharding.h>

#include "args.h"
#include "dataset.h"
#include "memory_check.h"
#include "plugin_loader.h"
#include "ranks.h"

typedef struct loom_trainer loom_trainer;

/* A set of named numbers (a log entry, evaluation metrics). Keys are copied. */
#define LOOM_METRICS_MAX 64
typedef struct loom_metrics {
    size_t count;
    char keys[LOOM_METRICS_MAX][64];
    double values[LOOM_METRICS_MAX];
} loom_metrics;

LOOM_API void loom_metrics_clear(loom_metrics *m);
/* Set (or replace) key. Returns LOOM_E_NOMEM when full. */
LOOM_API loom_status loom_metrics_set(loom_metrics *m, const char *key, double value);
/* 1 and *value when present. */
LOOM_API int loom_metrics_get(const loom_metrics *m, const char *key, double *value);

/* Predictions of one evaluation / prediction run, kept for compute_metrics and for writing:
 * one row per example of the data, in its order, gathered from every rank onto every rank. */
typedef struct loom_predictions {
    float *outputs;      /* n_rows * row_size model outputs (logits) */
    int32_t *labels;     /* n_rows labels                            */
    int64_t n_rows;
    int64_t row_size;
    /* --predict_with_generate (docs/seq2seq.md#generation): the generated ids of every
     * example in order, [n_generated, generated_stride] padded after
     * generated_lengths[i] (eos included), and their text (decode_tokens, special tokens
     * left out). NULL / 0 otherwise. */
    int32_t *generated;
    int64_t *generated_lengths;
    int64_t generated_stride;
    char **generated_texts;
    int64_t n_generated;
} loom_predictions;

typedef struct loom_trainer_hooks {
    /* The loaders. Defaults: train shuffled with the seed (drop_last from the arguments),
     * eval/test in order, from --train_file / --validation_file / --test_file. */
    loom_status (*get_train_dataloader)(loom_trainer *t, loom_dataloader *out);
    loom_status (*get_eval_dataloader)(loom_trainer *t, loom_dataloader *out);
    loom_status (*get_test_dataloader)(loom_trainer *t, loom_dataloader *out);
    /* Record one log entry: append to state's log_history, fire on_log. */
    loom_status (*log)(loom_trainer *t, const loom_metrics *logs);
    /* Create the optimizer and scheduler plugin instances for num_training_steps. */
    loom_status (*create_optimizer_and_scheduler)(loom_trainer *t, int64_t num_training_steps);
    /* The loss of a batch from the model's outputs (logits), as a SUM over targets, and, when
     * doutputs is not NULL, its gradient with respect to the outputs (same shape as outputs,
     * d(loss_sum)/d(outputs)). NULL (the default) = the model's own loss; overriding needs a
     * model with backward_outputs. */
    loom_status (*compute_loss)(loom_trainer *t, const loom_batch *batch, const loom_tensor_view *outputs,
                                double *loss_sum, float *doutputs);
    /* Forward + backward of one micro-batch with the given seed (loss_scale / the step's divisor:
     * the global target count, or world size x this rank's with --average_tokens_across_devices
     * false; docs/semantics/trainer.md#gradient-accumulation);
     * returns the batch's loss sum. */
    loom_status (*training_step)(loom_trainer *t, const loom_batch *batch, float seed, double *loss_sum);
    /* Forward only: loss, targets, correct, and outputs when `outputs` is not NULL. */
    loom_status (*prediction_step)(loom_trainer *t, const loom_batch *batch, loom_forward_result *result,
                                   loom_tensor_view *outputs);
    /* Evaluate on the eval loader: fills metrics "<prefix>_loss", "<prefix>_accuracy" (when the
     * model counts correct predictions), "<prefix>_runtime", "<prefix>_samples_per_second",
     * plus compute_metrics'; fires on_evaluate and logs them. */
    loom_status (*evaluate)(loom_trainer *t, const char *metric_key_prefix, loom_metrics *metrics);
    /* Predict on the test loader: predictions (owned by the caller: free with
     * loom_predictions_free) and "test_*" metrics when labels exist. */
    loom_status (*predict)(loom_trainer *t, loom_predictions *predictions, loom_metrics *metrics);
    /* Optional (NULL: none). Extra metrics from the predictions of an evaluation. */
    loom_status (*compute_metrics)(loom_trainer *t, const loom_predictions *predictions, const char *prefix,
                                   loom_metrics *metrics);
    /* Free for the user's hooks. */
    void *user_data;
    /* Text of token ids, special tokens already left out (*text malloc'ed, the caller frees):
     * --predict_with_generate's metrics and generated_predictions.txt. The default decodes with
     * the run's GPT-2 BPE (vocab.json + merges.txt in --tokenizer_name, else in
     * --model_name_or_path) and otherwise writes the ids as decimal numbers separated by
     * spaces. Other tokenizers (SentencePiece, a character vocabulary) plug in here. */
    loom_status (*decode_tokens)(loom_trainer *t, const int32_t *ids, size_t n, char **text);
} loom_trainer_hooks;

/* One created plugin: its descriptor, host context, instance and vtable. */
typedef struct loom_plugin_instance {
    const loom_plugin *plugin;      /* NULL for a program's own callback (below)             */
    loom_host *host;
    void *instance;
    const void *vtable;
    loom_config *config;            /* the resolved section (owned); set before the instance */
    char name[64];                  /* a program's own callback (loom_trainer_add_callback_
                                       instance): its name; the program owns its instance    */
} loom_plugin_instance;

#define LOOM_MAX_CALLBACKS 16

/* The running sums behind the logged "loss" and the final "train_loss"; saved with a checkpoint
 * so that a resumed run logs the same numbers as one that never stopped. */
typedef struct loom_loss_tracker {
    double since_log;               /* sum of step losses since the last log entry           */
    int64_t steps_since_log;
    double total;                   /* sum of all step losses, for train_loss                */
    int64_t steps;
    /* HF's tr_loss on this rank: its share of since_log (the ranks' shares average to it), the
     * sum whose mean logging_nan_inf_filter puts in place of a nan or inf loss. */
    double rank_since_log;
} loom_loss_tracker;

struct loom_trainer {
    loom_args args;                 /* resolved arguments (owned)                            */
    loom_trainer_hooks hooks;

    loom_plugin_instance model, optimizer, scheduler, precision, sharding, comm;
    loom_plugin_instance callbacks[LOOM_MAX_CALLBACKS];
    size_t n_callbacks;

    loom_trainer_state state;
    loom_ranks ranks;                  /* where this process stands in the run                */
    struct loom_ds_config *ds;         /* --deepspeed's merged configuration (owned) or NULL   */
    struct loom_store_server *store_server; /* rank 0 of a multi-process run (owned)          */
    struct loom_store_client *store_client; /* every rank of a multi-process run (owned)      */
    int agreement_published;                /* this rank's part of loom_trainer_agree is in the store */
    loom_trainer_control control;
    int32_t rank, world_size, local_rank, local_world_size;

    /* Data (owned). */
    loom_dataset *train_dataset, *eval_dataset, *test_dataset;

    /* Parameters: one flat buffer (model dtype), the tensor table. */
    void *params;
    uint32_t param_dtype;           /* LOOM_DTYPE_* the precision plugin chose for params/grads */
    uint32_t has_master;            /* the precision plugin keeps f32 master weights          */
    uint32_t mixed_precision;       /* parameters or products not in f32: logs carry the scale */
    size_t param_size;              /* bytes per parameter element                           */
    int64_t params_capacity;        /* elements params has room for (>= total_numel)         */
    int64_t total_numel;
    size_t n_tensors;
    loom_param_info *tensors;
    int64_t *tensor_offsets;        /* n_tensors + 1                                         */
    int64_t max_batch_size;         /* what the model's activations are bound for: the larger
                                       of train_batch_size and the evaluation batch          */
    int64_t train_batch_size;       /* the per-device train batch of this run (HF's
                                       _train_batch_size): --per_device_train_batch_size, or
                                       what --auto_find_batch_size chose (trainer_autobatch.c) */
    int bound;                      /* model/params/plugins bound                            */
    /* ZeRO-3 (param_source.c): the sharding plugin keeps only the owned ranges of params
     * between uses. The model reads the rest through param_source; whole_depth counts the
     * host's own spans that gathered the whole buffer (nested), during which the source's
     * calls return at once. */
    int params_partitioned;
    int whole_depth;
    loom_param_source param_source;

    /* Owned ranges and optimizer spans built on them (owned). */
    const loom_range *owned;
    size_t n_owned;
    loom_span *spans;
    size_t n_spans;
    size_t *span_range;             /* owned range of each span                              */
    int64_t *span_flat_begin;       /* flat index of each span's first element               */
    loom_span *stat_spans;          /* spans cut to the norm ranges, for partial_stats (owned) */
    size_t *stat_span_of;           /* the span each stat span is a piece of                 */
    int64_t *stat_flat_begin;
    size_t n_stat_spans;
    double *tensor_stats;           /* n_tensors x the optimizer's tensor_stats (owned)      */
    float *optimizer_state;         /* state_slots * owned elements                          */
    /* ZeRO-Offload (sharding's host_params, docs/semantics/deepspeed.md#offload): the host copy
     * of the owned ranges the step updates, lent by the sharding plugin, or NULL; then the
     * precision plugin is bound to it through offload_owned (the owned ranges rebased into it,
     * owned) and the optimizer states are host memory. */
    void *offload_params;
    loom_range *offload_owned;
    uint64_t optimizer_state_bytes;

    /* Scheduler step counter: optimizer steps actually taken. */
    int64_t scheduler_step;
    uint64_t budget_bytes;          /* the memory budget printed before step 1               */
    uint64_t baseline_bytes;        /* resident before prepare(): code, libraries, data       */
    loom_memory_room memory_room;   /* what the process may hold, measured before prepare()   */
    uint64_t device_room;           /* the device's free memory before prepare() allocated
                                       there; UINT64_MAX on the CPU or when the backend does
                                       not say                                               */
    double last_lr;
    double last_grad_norm;
    struct loom_norm_range {        /* the owned elements no lower rank also owns: counted in
                                       the global norm by this rank only (owned)              */
        int64_t begin, end;
        size_t owned_index;
    } *norm_ranges;
    size_t n_norm_ranges;
    int64_t n_norm_pieces;          /* canonical pieces of the flat buffer (block x tensor)  */
    double *norm_piece_sums;        /* one per piece (owned)                                 */
    struct loom_norm_work {         /* this rank's share: piece index and element range      */
        int64_t piece, begin, end;
        size_t owned_index;
    } *norm_work;
    size_t n_norm_work;
    double *norm_work_sums;         /* one per work item (owned)                             */
    int64_t *norm_bounds;           /* 2 per work item: [begin, end) inside its owned range,
                                       the segments of kernels.h sum_squares (owned)          */
    int64_t norm_partials_len;
    /* The piecewise step (step_pieces.c, docs/architecture.md#piecewise-step): on or off, its
     * f32 buffer of LOOM_STEP_PIECE elements, the spans narrowed to a piece and the norm
     * segments of a piece (owned). */
    int step_pieces;
    int piece_buffer_lent; /* piece_buffer is the model's step scratch, not ours    */
    float *piece_buffer;
    loom_span *piece_spans;
    int64_t *piece_bounds;

    loom_host *core_host;           /* the core's own allocations are counted through it     */

    /* Where the train loader stands, for the "loom.trainer/1" service (train() keeps them;
     * train_batches == 0: training has not started). */
    int64_t train_batches;          /* batches per epoch on this rank                        */
    int64_t updates_per_epoch;
    int64_t data_epoch;             /* 0-based epoch in progress                             */
    int64_t data_batch;             /* batches of it consumed                                */

    /* log_history as a cJSON array (owned; cJSON *). */
    void *log_history;
    char *best_model_checkpoint;
    int64_t best_global_step;      /* the step of the best evaluation, 0 for none (HF's name) */
    int foreign_checkpoint_warned; /* save_total_limit met a checkpoint-N loom did not write */

    loom_loss_tracker losses;
    char *resume_dir;               /* the checkpoint train() resumes from, or NULL (owned)  */
    int64_t flops_per_token;        /* 6 x the parameters that are not embeddings (HF)       */
    loom_metrics train_metrics;     /* train()'s final metrics, for train_results.json       */

    /* The compute device (trainer_device.c; docs/gpu.md#device-selection). */
    const struct loom_plugin *backend_plugin; /* a backend named with --plugin, or NULL      */
    uint32_t device;                /* LOOM_DEVICE_* of parameters, gradients, states, batches */
    int32_t device_index;

    /* The default decode_tokens' tokenizer, loaded on first use (owned: a loom_bpe, loom_spm
     * or loom_chars as text_tokenizer_kind says, trainer_generate.c), and whether a load was
     * tried. */
    void *text_tokenizer;
    int text_tokenizer_tried;
    int text_tokenizer_kind;
    /* Two-part gradients (grad_rows.h): the late rows of this step (owned), and whether this
     * step's gradients stay local (1-bit Adam; choose_reduction in trainer_loop.c). */
    struct loom_grad_rows *grad_rows;
    int32_t gradients_local;
    /* Training has begun (HF's state.epoch is no longer None): evaluations log an "epoch", the
     * one before the first step (--eval_on_start) included. */
    int32_t training_begun;
    /* The step of the newest checkpoint this process wrote or resumed from (-1: none), and
     * whether a SIGTERM stopped train() after saving one (--enable_jit_checkpoint): the caller
     * should then end the process (loom train exits 143); the SIGTERM handler stays installed
     * until loom_trainer_destroy. */
    int64_t checkpoint_step;
    int32_t jit_stopped;
};

/* Create a trainer from parsed arguments (moved into the trainer: do not free args after).
 * Loads the plugins and opens the data files; does not allocate parameters yet. */
LOOM_API loom_status loom_trainer_create(loom_args *args, loom_trainer **out);
LOOM_API void loom_trainer_destroy(loom_trainer *t);

/* The default hooks (what loom_trainer_create installs). */
LOOM_API const loom_trainer_hooks *loom_trainer_default_hooks(void);

/* Allocate parameters, optimizer states and activations and initialise (or load) the model.
 * Called by train/evaluate/predict when needed; idempotent. */
LOOM_API loom_status loom_trainer_prepare(loom_trainer *t);

/* HF's trainer.train(): the whole training loop. */
LOOM_API loom_status loom_trainer_train(loom_trainer *t);
/* HF's trainer.evaluate() / predict() (call the hooks). */
LOOM_API loom_status loom_trainer_evaluate(loom_trainer *t, loom_metrics *metrics);
LOOM_API loom_status loom_trainer_predict(loom_trainer *t, loom_predictions *predictions, loom_metrics *metrics);
LOOM_API void loom_predictions_free(loom_predictions *p);

/* Save the model (model.safetensors + config.json) into dir. */
LOOM_API loom_status loom_trainer_save_model(loom_trainer *t, const char *dir);
/* End of training, as HF's trainer.save_model() + save_state(): the model, the arguments and
 * trainer_state.json into output_dir (world process zero only). */
LOOM_API loom_status loom_trainer_save_final(loom_trainer *t);
/* Write output_dir/predictions.txt ("index\tprediction" lines, argmax of each row), through a
 * temporary file renamed over it. */
LOOM_API loom_status loom_trainer_write_predictions(loom_trainer *t, const loom_predictions *p, const char *path);

/* ---- callbacks: HF's add_callback / pop_callback / remove_callback ------------------------
 * Not from inside an event (the list must not change while it is being walked). A callback
 * is named by its plugin's name ("early_stopping"), or by the name given to
 * add_callback_instance; `name` and `instance` pick one: the first callback with that name,
 * or the one whose instance pointer is `instance` (set exactly one of the two). */

/* Load callback plugin `plugin` (a name or a path, as --plugin takes), configure it from the
 * run's --<plugin>.<key> flags and its defaults, create it and append it to the list. A
 * second instance of a plugin already there is added with a warning, as HF does. */
LOOM_API loom_status loom_trainer_add_callback(loom_trainer *t, const char *plugin);
/* Append a callback the program implements: on_event (and save_state / load_state when the
 * vtable's struct_size has them) are called as for a plugin; create and destroy are not. The
 * program keeps ownership of `instance` and must keep it (and vtable) alive while listed. */
LOOM_API loom_status loom_trainer_add_callback_instance(loom_trainer *t, const char *name,
                                                        const loom_callback_vtable *vtable, loom_callback *instance);
/* Take a callback out of the list and hand it to the caller in *out (owned by the caller from
 * then on: loom_trainer_callback_destroy frees it; its instance may be added again with
 * add_callback_instance meanwhile). LOOM_E_NOT_FOUND (loom_error set) when none matches. */
LOOM_API loom_status loom_trainer_pop_callback(loom_trainer *t, const char *name, const loom_callback *instance,
                                               loom_plugin_instance *out);
/* Take a callback out of the list and destroy it (a program's own instance is only unlisted).
 * LOOM_E_NOT_FOUND (loom_error set) when none matches. */
LOOM_API loom_status loom_trainer_remove_callback(loom_trainer *t, const char *name, const loom_callback *instance);
/* Free a popped callback: the plugin instance, its host context and configuration. */
LOOM_API void loom_trainer_callback_destroy(loom_plugin_instance *popped);
/* The callback's name: its plugin's, or the one given to add_callback_instance. */
LOOM_API const char *loom_trainer_callback_name(const loom_plugin_instance *slot);

/* Fire one callback event to every callback plugin. */
LOOM_API loom_status loom_trainer_fire(loom_trainer *t, uint32_t event, const loom_metrics *metrics, const char *text);

#endif
