/*
 * trainer_internal.h - what the trainer's source files share and nothing outside core/ uses.
 */
#ifndef LOOM_CORE_TRAINER_INTERNAL_H
#define LOOM_CORE_TRAINER_INTERNAL_H

#include "trainer.h"

/* Create the plugin instance of a slot whose plugin and config are set; setup is the kind's
 * setup struct (comm, sharding, scheduler) or NULL (trainer_setup.c). */
loom_status loom_trainer_create_instance(loom_plugin_instance *slot, const loom_plugin *plugin, const void *setup);

/* Default hooks (trainer_setup.c, trainer_eval.c, trainer_loop.c). */
loom_status loom_default_create_optimizer_and_scheduler(loom_trainer *t, int64_t num_training_steps);
loom_status loom_default_get_train_dataloader(loom_trainer *t, loom_dataloader *out);
loom_status loom_default_get_eval_dataloader(loom_trainer *t, loom_dataloader *out);
loom_status loom_default_get_test_dataloader(loom_trainer *t, loom_dataloader *out);
loom_status loom_default_log(loom_trainer *t, const loom_metrics *logs);
loom_status loom_default_training_step(loom_trainer *t, const loom_batch *batch, float seed, double *loss_sum);
loom_status loom_default_prediction_step(loom_trainer *t, const loom_batch *batch, loom_forward_result *result,
                                         loom_tensor_view *outputs);
loom_status loom_default_evaluate(loom_trainer *t, const char *metric_key_prefix, loom_metrics *metrics);
loom_status loom_default_predict(loom_trainer *t, loom_predictions *predictions, loom_metrics *metrics);

/* The grad sink the model writes into, wired to the sharding plugin. */
void loom_trainer_grad_sink(loom_trainer *t, loom_grad_sink *sink);

/* Checkpoints and the state file (trainer_save.c). */
loom_status loom_trainer_save_checkpoint(loom_trainer *t);
loom_status loom_trainer_write_state(loom_trainer *t, const char *dir);

/* Before step 1: the start-up block on rank 0 and, at debug level, each rank's memory budget
 * in bytes; sets t->budget_bytes (trainer_startup.c). */
loom_status loom_trainer_print_startup(loom_trainer *t, const loom_dataloader *dl, int64_t num_epochs,
                                       int64_t max_steps, int64_t updates_per_epoch);

/* The block size of the canonical gradient-norm pieces (elements). Sharding plugins that cut the
 * flat buffer only at multiples of it (or at tensor boundaries) get bitwise-identical norms. */
#define LOOM_NORM_BLOCK 16384

/* Seconds on a monotonic clock. */
double loom_now_seconds(void);

#endif
