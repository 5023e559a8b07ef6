/*
 * trainer_internal.h - what the trainer's source files share and nothing outside core/ uses.
 */
#ifndef LOOM_CORE_TRAINER_INTERNAL_H
#define LOOM_CORE_TRAINER_INTERNAL_H

#include "trainer.h"

/* Create the plugin instance of a slot whose plugin and config are set; setup is the kind's
 * setup struct (comm, sharding, scheduler) or NULL (trainer_setup.c). */
loom_status loom_trainer_create_instance(loom_plugin_instance *slot, const loom_plugin *plugin, const void *setup);

/* The status of a call into the plugin of `slot`; a failure the plugin left without a message
 * (docs/plugins.md#rules asks for api->fail) gets one naming the kind, the plugin and the
 * member: "optimizer 'x': step failed (internal error) without a message" (plugin_status.c).
 * LOOM_PLUGIN_CALL clears the message before the call, so that an older one is not taken for
 * the plugin's. */
loom_status loom_trainer_plugin_status(const loom_plugin_instance *slot, const char *member, loom_status st);
#define LOOM_PLUGIN_CALL(slot, member, call) loom_trainer_plugin_status(&(slot), member, (loom_error_clear(), (call)))

/* Put a host table in front of the comm instance of `slot` (just created): slot->vtable and
 * slot->instance become the table and its instance, which forward each member to the plugin and
 * name the plugin and the member in a failure it left without a message, as LOOM_PLUGIN_CALL
 * does; destroy frees both (comm_calls.c). */
loom_status loom_trainer_name_comm_calls(loom_plugin_instance *slot);

/* The model's output_shape, refused in one line naming the model unless 1 <= ndim <=
 * LOOM_MAX_DIMS and every extent is at least 1; *row (may be NULL): the product of the extents,
 * the floats of one row of outputs (model_shapes.c). */
loom_status loom_trainer_output_shape(loom_trainer *t, int64_t shape[LOOM_MAX_DIMS], uint32_t *ndim, int64_t *row);
/* Parameter i as param_info described it: a name, 1 to LOOM_MAX_DIMS dimensions, each extent at
 * least 1 (model.h); refused in one line naming the model and the parameter (model_shapes.c). */
loom_status loom_trainer_check_param_info(const loom_trainer *t, size_t i, const loom_param_info *info);
/* No two of t->tensors share a name: a checkpoint keys them by it. */
loom_status loom_trainer_check_param_names(const loom_trainer *t);

/* Every rank's owned_ranges inside the parameters, ascending and disjoint, and together all of
 * them; refused in one line naming the sharding plugin (owned_ranges.c). */
loom_status loom_trainer_check_owned(loom_trainer *t);

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
/* trainer_generate.c: the default decode_tokens hook (trainer.h). */
loom_status loom_default_decode_tokens(loom_trainer *t, const int32_t *ids, size_t n, char **text);
/* A tokenizer named by a file rather than a folder (--tokenizer_name): the file name it stands
 * for in a model folder ("spiece.model" for a SentencePiece .model, else "char_vocab.json"),
 * or NULL when path is not a regular file (trainer_generate.c). */
const char *loom_tokenizer_file_role(const char *path);
/* Frees the tokenizer loom_default_decode_tokens loaded (trainer_generate.c). */
void loom_trainer_text_tokenizer_free(loom_trainer *t);

/* After an evaluation or prediction pass over an unpadded loader (core/data/dataset.h): every
 * rank's rows, in the loader's order, replace this rank's own on every rank - the outputs and
 * labels of `outputs`, the generated ids, lengths and texts of `generated` (either NULL: none
 * kept). Collective: every rank passes the same NULLs. One rank: nothing to do
 * (trainer_gather.c). */
loom_status loom_trainer_gather_predictions(loom_trainer *t, loom_predictions *outputs, loom_predictions *generated);

/* x rounded to `digits` decimals, as Python's round() in HF's speed_metrics (metrics.c). */
double loom_round_to(double x, int digits);

/* The grad sink the model writes into, wired to the sharding plugin. */
void loom_trainer_grad_sink(loom_trainer *t, loom_grad_sink *sink);

/* Per-node disks (trainer_nodes.c): whether this process writes the run's files (HF's
 * should_save: local rank 0 with --save_on_each_node, else rank 0), and, before the first step
 * of a --save_on_each_node run on several nodes, the check that no two nodes share output_dir
 * (collective). */
int loom_trainer_saves_here(const loom_trainer *t);
loom_status loom_trainer_check_node_disks(loom_trainer *t);

/* After a step each rank takes alone, from its own disk (trainer_together.c): when any rank's
 * `mine` failed, every rank returns the first failing rank's status with its message, prefixed
 * "rank R: " (not where R is 0 and this rank failed too), so all stop with one line. LOOM_OK
 * when none failed; `mine` with one rank. Collective. */
loom_status loom_trainer_fail_together(loom_trainer *t, loom_status mine);
/* The trainer's own host values over the ranks: an all_reduce of n doubles in place through the
 * run's comm plugin (trainer_comm.c). Collective. */
loom_status loom_trainer_reduce_f64(loom_trainer *t, double *values, size_t n, uint32_t op);
/* --enable_jit_checkpoint (trainer_jit.c): SIGTERM sets a flag while train() runs (arm ..
 * disarm puts the previous action back; after a stop at SIGTERM, loom_trainer_destroy does);
 * due is whether any rank has seen it. due is collective when the flag is on and there are
 * several ranks. */
void loom_trainer_jit_arm(loom_trainer *t);
void loom_trainer_jit_disarm(void);
loom_status loom_trainer_jit_due(loom_trainer *t, int *due);
void loom_trainer_jit_test_signal(const loom_trainer *t, int after_evaluation);
/* The lowest rank whose `yes` is true, -1 when none (trainer_together.c). Collective. */
loom_status loom_trainer_first_rank(loom_trainer *t, int yes, int *rank);
/* After the ranks restored from the checkpoint, each from its own disk
 * (trainer_same_checkpoint.c): every rank's is the same checkpoint as rank 0's, in what every
 * node's copy holds alike; else every rank stops with the first differing rank's line.
 * Collective. */
loom_status loom_trainer_same_checkpoint(loom_trainer *t);

/* Checkpoints and the state file (trainer_save.c). */
loom_status loom_trainer_save_checkpoint(loom_trainer *t);
/* On the rank that writes output_dir, before training: remove what interrupted saves left there,
 * the checkpoint-N.tmp folders and the "<file>.tmp" of each file the final save writes (only
 * those names: never a user's file). */
loom_status loom_trainer_remove_leftovers(loom_trainer *t);
/* output_dir/checkpoint-<global_step>: the folder a save of this step writes. */
loom_status loom_trainer_checkpoint_dir(const loom_trainer *t, char *out, size_t size);
loom_status loom_trainer_write_state(loom_trainer *t, const char *dir);
/* The f32 master weights of owned range r (NULL when the precision plugin keeps none). */
loom_status loom_trainer_master_weights(loom_trainer *t, size_t r, float **out);

/* Resume (trainer_resume.c): find and check the checkpoint --resume_from_checkpoint names and
 * take its seed (before the data loader and prepare(), which then load its model); restore
 * every other state once the optimizer and scheduler exist. */
loom_status loom_trainer_find_resume(loom_trainer *t);
loom_status loom_trainer_restore(loom_trainer *t);
/* This rank's f32 master weights (every span of its owned ranges) from a checkpoint's shards. */
struct loom_shard_set;
loom_status loom_trainer_read_masters(loom_trainer *t, const struct loom_shard_set *shards);
/* Tests only: die at a step (LOOM_TEST_EXIT_AT_STEP, trainer_save.c). */
void loom_trainer_test_exit(const loom_trainer *t);
/* Tests only: the states after load_best_model_at_end (LOOM_TEST_STATES_AFTER_BEST, trainer_save.c). */
loom_status loom_trainer_test_write_states(loom_trainer *t);

/* Best model (trainer_best.c): after an evaluation, HF's _determine_best_metric; at the end of
 * training, load_best_model_at_end. */
loom_status loom_trainer_track_best(loom_trainer *t, const loom_metrics *metrics);
/* After an evaluation in training, before track_best: the metric to a scheduler that observes. */
loom_status loom_trainer_observe_metric(loom_trainer *t, const loom_metrics *metrics);
loom_status loom_trainer_load_best(loom_trainer *t);
/* After the best parameters reached every rank from `reader`: the f32 master weights and the
 * offload partition that the optimizer steps (trainer_best_copies.c). Collective. */
loom_status loom_trainer_best_copies(loom_trainer *t, const char *dir, int reader);
/* At a save, before the checkpoint's trainer_state.json is written: best_model_checkpoint
 * becomes the best step's folder when it exists (this save's own, or an earlier one). */
loom_status loom_trainer_best_at_save(loom_trainer *t);

/* Callbacks (trainer_callbacks.c). create_callback creates slot's instance from `plugin`
 * (slot->config set, ownership taken) with the trainer service lent to it; callback_config
 * builds a callback plugin's section from the run arguments (`used` as loom_config_build). */
loom_status loom_trainer_create_callback(loom_trainer *t, loom_plugin_instance *slot, const loom_plugin *plugin);
loom_config *loom_trainer_callback_config(const loom_trainer *t, const loom_plugin *plugin, unsigned char *used);
/* HF's TrainerState.stateful_callbacks: {state_name: {"args": .., "attributes": ..} or a list of
 * them when several instances share a name}, from every callback with save_state; NULL when no
 * callback keeps state (a callback whose save_state fails is left out with a warning). Owned
 * by the caller. */
struct cJSON;
struct cJSON *loom_trainer_callbacks_state(const loom_trainer *t);
/* Resume: hand each stored entry to the callbacks of that state name (in list order, a list's
 * items one each) through load_state. NULL is nothing to restore; names no callback has are
 * ignored with a warning ("TrainerControl", which HF stores, silently). A load_state failure
 * is returned with the plugin's message. */
loom_status loom_trainer_callbacks_restore(loom_trainer *t, const struct cJSON *stateful_callbacks);

/* The "loom.trainer/1" table lent to callbacks (trainer_service.c). */
const struct loom_trainer_api *loom_trainer_service_table(void);

/* The memory budget of a bound trainer (trainer_startup.c), from the sizes its buffers were
 * allocated with; optimizer_bytes is the optimizer states' (t->optimizer_state_bytes once
 * they exist, loom_trainer_optimizer_state_bytes before). */
typedef struct loom_budget {
    uint64_t parameters, gradients, master, optimizer, model_states, workspace, buckets, activations, baseline, total;
    /* Where they are: the device's (parameters, gradients, buckets, activations, and the
     * optimizer states unless offloaded) and the host's (the rest). On the CPU both are host
     * memory; the split still says what a device would hold. */
    uint64_t device_states, host_states, device_total, host_total;
} loom_budget;
loom_status loom_trainer_budget(loom_trainer *t, uint64_t optimizer_bytes, loom_budget *b);

/* What the optimizer's states will take for this rank's owned ranges (trainer_prepare.c),
 * known once the sharding plugin has cut them: the search of --auto_find_batch_size budgets
 * them before they are allocated. */
uint64_t loom_trainer_optimizer_state_bytes(const loom_trainer *t);

/* prepare() for train(): with --auto_find_batch_size, the model's activations are bound for the
 * batch the search finds (trainer_prepare.c). */
loom_status loom_trainer_prepare_train(loom_trainer *t);
/* Bind the model, the precision plugin and the piecewise step for a per-device train batch of
 * train_batch (the activations for the larger of it and the evaluation batch); again replaces
 * what the last call bound (trainer_prepare.c). */
loom_status loom_trainer_bind_batch(loom_trainer *t, int64_t train_batch);

/* ZeRO-3 (param_source.c, docs/architecture.md#zero-3). param_source_setup: after the sharding
 * plugin is created, whether it partitions the parameters (param_acquire), and if so that the
 * model can read them through a source (LOOM_MODEL_PARAM_SOURCE) and the device is the CPU;
 * fills t->param_source. params_whole / params_done bracket what reads or writes the whole
 * buffer (evaluation, saving, loading the best model, generation): collective, nested, and a
 * no-op when the parameters are not partitioned. */
loom_status loom_trainer_param_source_setup(loom_trainer *t);
loom_status loom_trainer_params_whole(loom_trainer *t);
loom_status loom_trainer_params_done(loom_trainer *t);
/* Saving and loading the best model under ZeRO-3 move one tensor at a time, so no rank holds
 * the whole model: params_streamed says whether to (partitioned, outside a whole span);
 * params_tensor gathers tensor i on every rank (done 0) and gives it back (done 1);
 * params_walk does both for every tensor from `from` on, which is what the ranks that do not
 * write do while the writer writes, and what a writer does for the tensors a failed write did
 * not reach, so that no rank waits for a gather that never comes. Collective. */
int loom_trainer_params_streamed(const loom_trainer *t);
loom_status loom_trainer_params_tensor(loom_trainer *t, size_t i, int done);
loom_status loom_trainer_params_walk(loom_trainer *t, size_t from);
/* What a rank that does not write a save does while the writer writes model.safetensors: under
 * ZeRO-3 the walk of params_walk, else nothing (trainer_save.c). */
loom_status loom_trainer_follow_model_save(loom_trainer *t);

/* --auto_find_batch_size (trainer_autobatch.c). autobatch_resume: a run resumed from a
 * checkpoint of a run with --auto_find_batch_size takes the size it found (its
 * trainer_state.json's train_batch_size), as HF does, with the flag or without. find: with the
 * parameters laid out and the sharding plugin created, bind the largest per-device train batch
 * of HF's sequence (from t->train_batch_size down, x 0.9) whose budget fits this process's
 * room (and the device's), the same on every rank; sets t->train_batch_size and
 * t->state.train_batch_size. LOOM_E_NOMEM with the numbers when even 1 does not fit. */
loom_status loom_trainer_autobatch_resume(loom_trainer *t);
loom_status loom_trainer_autobatch_find(loom_trainer *t);

/* Before step 1: the start-up block on rank 0 and, at debug level, each rank's memory budget
 * in bytes; sets t->budget_bytes (trainer_startup.c). */
loom_status loom_trainer_print_startup(loom_trainer *t, const loom_dataloader *dl, int64_t num_epochs,
                                       int64_t max_steps, int64_t updates_per_epoch);

/* The block size of the canonical gradient-norm pieces (elements). Sharding plugins that cut the
 * flat buffer only at multiples of it (or at tensor boundaries) get bitwise-identical norms. */
#define LOOM_NORM_BLOCK 16384

/* Seconds on a monotonic clock. */
double loom_now_seconds(void);

/* The run's device (trainer_device.c): HF's rules over --no_cuda/--use_cpu, a backend named
 * with --plugin and LOCAL_RANK; sets t->device and t->device_index. */
loom_status loom_trainer_open_device(loom_trainer *t);

/* A multi-process run, before the first collective (trainer_agree.c): every rank compares
 * its plugins, arguments, data and parameter shapes with rank 0's through the rendezvous
 * store, takes rank 0's seeds, and fails with the first difference in one line; LOOM_OK at
 * once in one process or once done. agree_abandon: a rank failing before then tells the
 * others, so that they stop at once (the current message is kept). */
loom_status loom_trainer_agree(loom_trainer *t);
void loom_trainer_agree_abandon(loom_trainer *t);

/* The comm plugin of the run once its device is known (trainer_comm.c, docs/gpu.md#nccl):
 * --ddp_backend, else nccl for several ranks on a GPU, gloo for several on the CPU, local for
 * one. Refuses nccl on a CPU run in one line. */
loom_status loom_trainer_comm_name(const loom_trainer *t, const char **name);

/* The device the comm plugin sees its buffers on: the run's device for nccl; the CPU for the
 * others, which read a GPU run's host-accessible memory as host memory. */
uint32_t loom_trainer_comm_device(const loom_trainer *t, const loom_plugin *comm);

#endif
