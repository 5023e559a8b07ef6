/*
 * callback.h - observe the training loop and steer it through the control flags
 * (LOOM_KIND_CALLBACK): printer, progress, history, curves, tensorboard, early_stopping
 *
 * HF's TrainerCallback in C. One entry point receives every event with its id, so a callback
 * built against ABI 1.0 keeps working when later minors add events: it MUST ignore ids it does
 * not know. The host runs callbacks in the order they were given, on the training thread,
 * on every rank: state->is_world_process_zero says whether this is the world's main process,
 * state->is_local_process_zero whether it is its node's (HF's PrinterCallback prints there).
 */
#ifndef LOOM_CALLBACK_H
#define LOOM_CALLBACK_H

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Event ids (HF TrainerCallback methods). Never renumbered. */
#define LOOM_EVENT_INIT_END 1
#define LOOM_EVENT_TRAIN_BEGIN 2
#define LOOM_EVENT_TRAIN_END 3
#define LOOM_EVENT_EPOCH_BEGIN 4
#define LOOM_EVENT_EPOCH_END 5
#define LOOM_EVENT_STEP_BEGIN 6      /* before each optimizer step's first micro-batch      */
#define LOOM_EVENT_SUBSTEP_END 7     /* after each non-final micro-batch under accumulation */
#define LOOM_EVENT_STEP_END 8        /* after an optimizer step (taken or skipped)           */
#define LOOM_EVENT_EVALUATE 9        /* payload->metrics: eval_loss, ...                     */
#define LOOM_EVENT_SAVE 10           /* payload->text: the checkpoint folder                 */
#define LOOM_EVENT_LOG 11            /* payload->metrics: loss, learning_rate, epoch, ...    */
#define LOOM_EVENT_PREDICTION_STEP 12 /* payload->metrics (1.1+): "<prefix>_batches", the pass length */
#define LOOM_EVENT_PREDICT 13        /* payload->metrics: test_* metrics                     */

/* HF's TrainerState, as far as a callback needs it. Owned by the host; borrowed per event
 * (read-only; strings in it too). Every member Required (always set), since 1.0; the two
 * strings are NULL only where their comments say. */
typedef struct loom_trainer_state {
    LOOM_STRUCT_HEADER;
    double epoch;                 /* fractional epoch                                        */
    int64_t global_step;          /* optimizer steps done (taken + skipped)                  */
    int64_t max_steps;
    double num_train_epochs;
    double total_flos;
    double best_metric;           /* NaN when none yet                                       */
    const char *best_model_checkpoint; /* NULL when none                                     */
    int32_t is_local_process_zero;
    int32_t is_world_process_zero;
    int64_t logging_steps;
    int64_t eval_steps;
    int64_t save_steps;
    int64_t train_batch_size;     /* per device                                              */
    int64_t num_input_tokens_seen;
    int64_t skipped_steps;        /* optimizer steps skipped for fp16 overflow               */
    double loss_scale;
    const char *output_dir;       /* never NULL                                              */
    double elapsed_seconds;       /* since train begin                                       */

    /* ABI 1.13+: append below. */
} loom_trainer_state;

/* HF's TrainerControl: a callback sets flags; the host acts on them and resets them as HF
 * does (should_log/evaluate/save at each step, should_epoch_stop at each epoch;
 * should_training_stop is sticky). Each flag is 0 or 1: a callback that leaves another value
 * in one stops training with an error naming it and the flag. Owned by the host, lent writable
 * per event. Every member since 1.0; reserved1 is 0. */
typedef struct loom_trainer_control {
    LOOM_STRUCT_HEADER;
    int32_t should_training_stop;
    int32_t should_epoch_stop;
    int32_t should_save;
    int32_t should_evaluate;
    int32_t should_log;
    int32_t reserved1;

    /* ABI 1.13+: append below. */
} loom_trainer_control;

/* A named number: a log or metrics entry. Plain data (no header), since 1.0; key never NULL,
 * borrowed with the array that holds it. */
typedef struct loom_metric {
    const char *key;
    double value;

    /* Never appended to: no header, and events pass arrays of it. */
} loom_metric;

/* Event-specific data. Owned by the host; borrowed per event. Never NULL when passed to
 * on_event; each member since 1.0 and NULL / 0 where the comment says. */
typedef struct loom_event_payload {
    LOOM_STRUCT_HEADER;
    const loom_metric *metrics;   /* LOG, EVALUATE, PREDICT, PREDICTION_STEP; else NULL     */
    size_t n_metrics;
    const char *text;             /* SAVE: checkpoint folder; NULL otherwise                 */

    /* ABI 1.13+: append below. */
} loom_event_payload;

typedef struct loom_callback loom_callback; /* plugin-private instance */

/* Filled by the plugin (static storage, never freed). Members above the 1.2 line since 1.0. */
typedef struct loom_callback_vtable {
    LOOM_STRUCT_HEADER;
    /* Required. Create from the config section (borrowed for the call). *out is owned by the
     * host until destroy(); on failure *out stays NULL and api->fail says why. Init thread
     * only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_callback **out);
    /* Required. Free the instance; destroy(NULL) is a no-op. Init thread only. */
    void (*destroy)(loom_callback *self);
    /* Required. One event. MUST return LOOM_OK for unknown event ids. A non-OK status stops
     * training with the plugin's message. `state` and `payload` are borrowed and never NULL;
     * `control` is lent writable for the call. Training thread only. */
    loom_status (*on_event)(loom_callback *self, uint32_t event, const loom_trainer_state *state,
                            loom_trainer_control *control, const loom_event_payload *payload);

    /* ---- ABI 1.2 (read through LOOM_HAS: a 1.0/1.1 plugin's vtable ends above) ---- */

    /* Optional, since 1.2 (NULL: the descriptor's name). The key of this callback's entry in
     * trainer_state.json's "stateful_callbacks". HF's class name ("EarlyStoppingCallback")
     * lets loom and HF read each other's checkpoints. Static string. */
    const char *state_name;
    /* Optional, since 1.2 (NULL: nothing to keep across a resume). HF's ExportableState.state(): set *json
     * to a JSON object {"args": {...}, "attributes": {...}}: the configuration the instance was
     * created with, and what it has accumulated since. The text is owned by the instance and
     * stays valid until the next call on it or destroy. Called on the world process zero
     * each time the trainer writes trainer_state.json (each checkpoint, the end of training).
     * A non-OK status, or text that is not a JSON object, leaves this callback out of that
     * file with a warning (everything else still saves). Training thread only. */
    loom_status (*save_state)(loom_callback *self, const char **json);
    /* Optional, since 1.2 (NULL: nothing is restored). On resume, the object save_state wrote for this
     * instance (or an HF checkpoint wrote for the same state_name), borrowed for the call.
     * Called after create and before TRAIN_BEGIN, on every rank. MUST ignore members it does
     * not know; api->service's "loom.trainer/1" json_number reads values without a JSON
     * library. A value it cannot use is LOOM_E_FORMAT through api->fail, which stops the
     * resume. Training thread only. */
    loom_status (*load_state)(loom_callback *self, const char *json);

    /* ABI 1.13+: append below. */
} loom_callback_vtable;

/* ---------------------------------------------------------------------------------------- */
/* The trainer service (ABI 1.2): what HF hands a callback as **kwargs (model, optimizer,
 * lr_scheduler, train/eval dataloaders, tokenizer, args) and state.log_history, read-only.
 *
 *   const loom_trainer_api *tr = api->service(host, LOOM_TRAINER_SERVICE, 0);
 *
 * from create() or any event. The host lends it to callback instances the trainer created
 * (NULL for other plugin kinds and outside a trainer); pointer owned by the host, valid for
 * the instance's life. Every member is Required (non-NULL) in this minor; every member takes
 * the instance's own `host` and is called from the training thread only (the thread that
 * delivers events); every member since 1.2. Nothing a callback receives here may be written through; views and
 * strings are borrowed until the event (or create) returns unless a member says otherwise. */
#define LOOM_TRAINER_SERVICE "loom.trainer/1"

/* Sizes and positions of the data loaders (HF: len(train_dataloader), the epoch and the step
 * in it). The caller initialises the header (LOOM_HEADER_INIT): the host writes only members
 * that lie inside the caller's struct_size. -1: not known (yet). Every member Required (the
 * host writes each one) and since 1.2; the struct is the caller's. */
typedef struct loom_trainer_data {
    LOOM_STRUCT_HEADER;
    int64_t train_examples;      /* examples in the training set; -1 without one             */
    int64_t train_batches;       /* len(train_dataloader) on this rank, per epoch; -1 before
                                    training starts                                         */
    int64_t eval_examples;       /* examples in the validation set; -1 without one           */
    int64_t eval_batches;        /* len(eval_dataloader) on this rank; -1 without one         */
    int64_t epoch;               /* 0-based epoch the train loader is in; -1 before the first */
    int64_t batch;               /* batches of that epoch this rank has consumed so far      */
    int64_t updates_per_epoch;   /* optimizer steps per epoch; -1 before training starts     */
    int64_t gradient_accumulation_steps;

    /* ABI 1.13+: append below. */
} loom_trainer_data;

typedef struct loom_trainer_api {
    LOOM_STRUCT_HEADER;

    /* -- the model's parameters (HF kwargs["model"]) -- */

    /* Number of parameter tensors; 0 until the trainer has allocated them (training,
     * evaluation or prediction starts; INIT_END sees 0). */
    int64_t (*num_tensors)(loom_host *host);
    /* Tensor `index` (0 .. num_tensors-1, the model's order): *name (may be NULL; valid for the
     * run) and a view of its current values in the parameters' dtype, on view->device. The host
     * writes the whole view, header included. view->data is read-only and valid until the
     * event returns (each optimizer step rewrites it). LOOM_E_NOT_FOUND past the end.
     * Since 1.12, LOOM_E_UNSUPPORTED while the sharding plugin keeps the parameters
     * partitioned (ZeRO-3: a rank holds only its own ranges between uses, as DeepSpeed's
     * partitioned parameters are empty outside a gather). */
    loom_status (*tensor)(loom_host *host, int64_t index, const char **name, loom_tensor_view *view);
    /* The same by name ("fc1.weight"); LOOM_E_NOT_FOUND for a name the model lacks. */
    loom_status (*find_tensor)(loom_host *host, const char *name, loom_tensor_view *view);

    /* -- the optimizer (HF kwargs["optimizer"]) -- */

    /* The optimizer plugin's name ("adamw"); valid for the run. */
    const char *(*optimizer_name)(loom_host *host);
    /* A hyper-parameter of the optimizer ("beta1", "eps", "weight_decay", ... as its plugin
     * names them): the optimizer's own value when it reports one, else its resolved
     * configuration; "lr" is the rate of the next step (HF's param_groups[0]["lr"]; before
     * training starts, the peak) and "initial_lr" the peak rate the schedule scales.
     * LOOM_E_NOT_FOUND for a name it has none of these ways. */
    loom_status (*optimizer_hparam)(loom_host *host, const char *name, double *out);
    /* Name of state slot `slot` ("exp_avg", "exp_avg_sq"); NULL past the last slot. */
    const char *(*optimizer_state_name)(loom_host *host, uint32_t slot);
    /* Piece `piece` (0, 1, ...) of this rank's state `state` of tensor `tensor`: a 1-D f32 view
     * of the piece and, in *offset (may be NULL), the index of its first element in the
     * flattened tensor. Unsharded runs hold one piece per tensor, the whole tensor; under ZeRO a
     * rank holds the part of a tensor it owns (maybe none). Read-only, valid until the event
     * returns. LOOM_E_NOT_FOUND for an unknown tensor or state, or past the last piece;
     * LOOM_E_UNSUPPORTED before the optimizer exists (training has not started). */
    loom_status (*optimizer_state)(loom_host *host, const char *tensor, const char *state, uint32_t piece,
                                   loom_tensor_view *view, int64_t *offset);

    /* -- the schedule (HF kwargs["lr_scheduler"]) -- */

    /* Any pointer may be NULL. *next: the rate of the next optimizer step, HF's
     * lr_scheduler.get_last_lr()[0] and the "learning_rate" of a log entry; *last: the rate
     * the last optimizer step used (NaN before the first); *steps: optimizer steps taken (the
     * scheduler's counter; skipped fp16 steps do not count). LOOM_E_UNSUPPORTED before the
     * scheduler exists (training has not started). */
    loom_status (*learning_rate)(loom_host *host, double *next, double *last, int64_t *steps);

    /* -- the data loaders (HF kwargs["train_dataloader"], ["eval_dataloader"]) -- */

    /* Fill *out (see loom_trainer_data). LOOM_E_ABI when out's header is not initialised. */
    loom_status (*data)(loom_host *host, loom_trainer_data *out);

    /* -- the tokenizer (HF kwargs["tokenizer"]) -- */

    /* The folder holding the run's tokenizer files (vocab.json, merges.txt): --tokenizer_name,
     * else --model_name_or_path when it holds them; NULL when the run has none. Valid for the
     * run. */
    const char *(*tokenizer_folder)(loom_host *host);

    /* -- the state and the arguments (HF state.log_history, args) -- */

    /* Number of entries in log_history. */
    int64_t (*log_history_len)(loom_host *host);
    /* log_history[first:] as a JSON array (HF's trainer_state.json "log_history"), written into
     * buffer with a terminating NUL. *length (required) receives the text's length without
     * the NUL. buffer may be NULL when capacity is 0. Returns LOOM_E_NOMEM without writing
     * when capacity < *length + 1: call again with a larger buffer. first > len gives "[]". */
    loom_status (*log_history)(loom_host *host, int64_t first, char *buffer, size_t capacity, size_t *length);
    /* The resolved training argument `name` (HF's TrainingArguments name: "metric_for_best_model",
     * "evaluation_strategy", "greater_is_better", ...) as text: numbers in shortest form, "true"/
     * "false", "none" for None, list items separated by spaces. Same buffer protocol as
     * log_history. LOOM_E_NOT_FOUND for a name that is not an argument. */
    loom_status (*argument)(loom_host *host, const char *name, char *buffer, size_t capacity, size_t *length);

    /* -- a helper: read JSON text without linking a JSON library -- */

    /* The number at `path` in the JSON text `json`: member names and array indices joined by
     * '.' ("attributes.early_stopping_patience_counter", "3.eval_loss"); true/false read as
     * 1/0. LOOM_E_FORMAT when json does not parse, LOOM_E_NOT_FOUND when the path leads
     * nowhere or to something that is not a number or a boolean. MT-safe. */
    loom_status (*json_number)(loom_host *host, const char *json, const char *path, double *out);

    /* ABI 1.13+: append below. */
} loom_trainer_api;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_trainer_state) == 152, "loom_trainer_state layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_trainer_control) == 40, "loom_trainer_control layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_event_payload) == 40, "loom_event_payload layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_callback_vtable, on_event) == 32, "callback vtable layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_callback_vtable, state_name) == 40, "callback vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_callback_vtable) == 64, "callback vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_trainer_data) == 80, "loom_trainer_data layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_trainer_api, num_tensors) == 16, "loom_trainer_api layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_trainer_api) == 128, "loom_trainer_api layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CALLBACK_H */
