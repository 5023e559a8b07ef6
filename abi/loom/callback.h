/*
 * callback.h - observe the training loop and steer it through the control flags
 * (LOOM_KIND_CALLBACK): printer, progress, jsonl, tensorboard, early_stopping, ...
 *
 * HF's TrainerCallback in C. One entry point receives every event with its id, so a callback
 * built against ABI 1.0 keeps working when later minors add events: it MUST ignore ids it does
 * not know. The host runs callbacks in the order they were given, on the training thread,
 * on every rank (state->is_world_process_zero says whether this one logs).
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

/* HF's TrainerState, as far as a callback needs it. Owned by the host; borrowed per event. */
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
    const char *output_dir;
    double elapsed_seconds;       /* since train begin                                       */
} loom_trainer_state;

/* HF's TrainerControl: a callback sets flags; the host acts on them and resets them as HF
 * does (should_log/evaluate/save at each step, should_epoch_stop at each epoch;
 * should_training_stop is sticky). Values 0/1. */
typedef struct loom_trainer_control {
    LOOM_STRUCT_HEADER;
    int32_t should_training_stop;
    int32_t should_epoch_stop;
    int32_t should_save;
    int32_t should_evaluate;
    int32_t should_log;
    int32_t reserved1;
} loom_trainer_control;

/* A named number: a log or metrics entry. */
typedef struct loom_metric {
    const char *key;
    double value;
} loom_metric;

/* Event-specific data. Owned by the host; borrowed per event. */
typedef struct loom_event_payload {
    LOOM_STRUCT_HEADER;
    const loom_metric *metrics;   /* LOG, EVALUATE, PREDICT, PREDICTION_STEP; else NULL     */
    size_t n_metrics;
    const char *text;             /* SAVE: checkpoint folder; NULL otherwise                 */
} loom_event_payload;

typedef struct loom_callback loom_callback; /* plugin-private instance */

typedef struct loom_callback_vtable {
    LOOM_STRUCT_HEADER;
    /* Required. Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_callback **out);
    /* Required. NULL is a no-op. */
    void (*destroy)(loom_callback *self);
    /* Required. One event. MUST return LOOM_OK for unknown event ids. A non-OK status stops
     * training with the plugin's message. Training thread only. */
    loom_status (*on_event)(loom_callback *self, uint32_t event, const loom_trainer_state *state,
                            loom_trainer_control *control, const loom_event_payload *payload);

    /* ABI 1.1+: append below. */
} loom_callback_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_trainer_state) == 152, "loom_trainer_state layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_trainer_control) == 40, "loom_trainer_control layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_event_payload) == 40, "loom_event_payload layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_callback_vtable) == 40, "callback vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CALLBACK_H */
