/*
 * resume_state.h - the small JSON state files of a checkpoint (docs/checkpoints.md), read into
 * plain values before anything of the trainer changes: trainer_state.json, scheduler.json,
 * scaler.json, rng_state.json and loss_tracker.json, and the batch shape.
 * Every number that becomes a count or a step is checked to be an integer in range, so a damaged
 * file is an error naming the file and the key, never an undefined conversion.
 */
#ifndef LOOM_CORE_RESUME_STATE_H
#define LOOM_CORE_RESUME_STATE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include <loom/loom.h>

typedef struct loom_resume_state {
    /* trainer_state.json */
    int64_t global_step;
    double epoch;
    double total_flos;
    int64_t num_input_tokens_seen;   /* 0 when the file predates it                        */
    double best_metric;              /* NAN when absent                                    */
    char *best_model_checkpoint;     /* NULL when absent; owned                            */
    int64_t best_global_step;        /* 0 when absent (an older file: from the folder's name) */
    cJSON *log_history;              /* an array; owned                                    */
    cJSON *stateful_callbacks;       /* the object, or NULL when absent; owned             */
    /* The batch shape of the run that wrote it, each 0 when the checkpoint does not say:
     * trainer_state.json's train_batch_size (per device), training_args.json, rng_state.json. */
    int64_t train_batch_size, gradient_accumulation_steps, world_size;
    /* scheduler.json */
    int64_t scheduler_step;
    char *scheduler;                 /* the plugin that wrote it, or NULL; owned           */
    double last_lr;
    bool has_last_lr;
    cJSON *scheduler_state; /* its "state" object (observing schedulers), or NULL; owned */
    /* scaler.json */
    char *precision;                 /* the plugin that wrote it, or NULL; owned           */
    double loss_scale;
    int64_t iteration, last_overflow, growth_tracker, hysteresis_left, skipped_steps;
    /* loss_tracker.json (absent in a checkpoint of an older loom: has_losses false) */
    bool has_losses;
    double loss_since_log, loss_total;
    int64_t steps_since_log, steps_total;
} loom_resume_state;

/* Whether DIR was saved with --save_only_model (its training_args.json says so): it holds the
 * model and trainer_state.json, and nothing else a resume restores. False when the file cannot
 * be read (the reads of the state files then name what is wrong). */
bool loom_resume_is_model_only(const char *dir);

/* The per-device train batch --auto_find_batch_size found for the run that wrote DIR: its
 * trainer_state.json's train_batch_size when its training_args.json has auto_find_batch_size
 * true (current HF records train_batch_size only then), else 0. LOOM_E_FORMAT for a recorded
 * value that is not a count. */
loom_status loom_resume_read_found_batch(const char *dir, int64_t *batch);

/* The seed of DIR/rng_state.json (an integer in int64 range). */
loom_status loom_resume_read_seed(const char *dir, int64_t *seed);

/* Read the files above from DIR into *out (zeroed first; free with loom_resume_state_free,
 * also on failure). LOOM_E_FORMAT naming the file and key for a missing or ill-typed value;
 * the errors of loom_read_file for a file that cannot be read. */
loom_status loom_resume_state_read(const char *dir, loom_resume_state *out);

void loom_resume_state_free(loom_resume_state *s);

#endif
