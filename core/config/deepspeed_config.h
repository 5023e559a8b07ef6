/*
 * deepspeed_config.h - `--deepspeed ds_config.json`: read and validate a DeepSpeed
 * configuration (DeepSpeed v0.3.10's keys plus every key of today's DeepSpeed, each of them
 * mapped, accepted with no effect, or refused: docs/semantics/deepspeed.md#todays-keys)
 * and merge it with the run arguments the way HF's Trainer integration does, giving the
 * trainer typed values and, per plugin kind, a plugin name and its mapped configuration
 * entries (loom_config_default pairs, step 2 of plugin_config.h).
 *
 * Strictness (stricter than DeepSpeed, which ignores unknown keys): a key that is not in the
 * schema below, at any level, is an error naming its path ("zero_optimization.
 * reduce_bucket_sise") and the closest valid key; a duplicate key is an error; a value of the
 * wrong type is an error naming the expected type. Every message is one line starting with the
 * file's path (loom_error()).
 *
 * "auto" and the command line (HF v4.6+ rules; docs/semantics/deepspeed.md#hf-integration):
 *   train_micro_batch_size_per_gpu  "auto"/absent -> --per_device_train_batch_size
 *   gradient_accumulation_steps     "auto"/absent -> --gradient_accumulation_steps
 *   train_batch_size                "auto"/absent -> micro * GA * world_size; a number must
 *                                   equal that product (DeepSpeed's _batch_assertion)
 *   gradient_clipping               "auto"/absent -> --max_grad_norm
 *   optimizer.params lr, betas (the pair or each element), eps, weight_decay
 *                                   "auto" -> --learning_rate, --adam_beta1/2, --adam_epsilon,
 *                                   --weight_decay
 *   scheduler.params warmup_max_lr "auto" -> --learning_rate; warmup_min_lr "auto" -> 0;
 *                    warmup_num_steps "auto" -> --warmup_steps (or ceil(--warmup_ratio * T),
 *                    pending until loom_ds_config_resolve_steps); total_num_steps "auto" ->
 *                    the run's total optimizer steps T (pending likewise)
 *   fp16.enabled "auto" -> --fp16 (fp16_backend other than apex); amp.enabled "auto" -> --fp16
 *                with --fp16_backend apex; amp.opt_level "auto" -> --fp16_opt_level;
 *                bf16.enabled "auto" -> --bf16
 * A number in the file that disagrees with its command-line counterpart is an error showing
 * both ("train_micro_batch_size_per_gpu=16 in ds.json but --per_device_train_batch_size 8"), as
 * HF's "DeepSpeed config values that mismatch TrainingArguments values": this holds for the
 * batch sizes, gradient_clipping, the optimizer's lr/betas/eps/weight_decay and the
 * scheduler's warmup_max_lr/warmup_num_steps (and total_num_steps, checked when T is known).
 * fp16/amp/bf16 "enabled" given as true/false is kept as written (the precision decision is
 * the trainer's).
 * Before any of this, loom_args_parse (args_deepspeed.c) lets the file win over defaults: each
 * number or true/false the file writes for a key above replaces its argument's default
 * (lr -> --learning_rate, betas -> --adam_beta1/2, eps, weight_decay, gradient_clipping ->
 * --max_grad_norm, the batch sizes, warmup_max_lr -> --learning_rate, warmup_num_steps ->
 * --warmup_steps unless --warmup_ratio was given, WarmupDecayLR's total_num_steps ->
 * --max_steps unless --num_train_epochs was given, fp16/amp/bf16 enabled and amp.opt_level), so
 * by the time the file is loaded here a disagreement can only come from an argument the user
 * gave; that is the one-line error, naming the key, the flag, both values and where the flag
 * came from. train_batch_size is checked, never adopted (it depends on the world size).
 *
 * Schema (v0.3.10 defaults in parentheses):
 *   top level: train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps
 *     (integers >= 1 or "auto"); gradient_clipping (number >= 0 or "auto");
 *     steps_per_print (10; logging cadence of DeepSpeed's own prints - kept, loom logs with
 *     --logging_steps); wall_clock_breakdown (false; DeepSpeed's timers - kept, no effect);
 *     zero_allow_untested_optimizer (false; DeepSpeed's guard for non-DS optimizers under ZeRO
 *     - kept, every loom optimizer works with ZeRO); prescale_gradients (false) and
 *     gradient_predivide_factor (1.0): accepted, any other value is "not supported";
 *     zero_optimization, optimizer, scheduler, fp16, amp, bf16 (objects, below).
 *   zero_optimization: stage (0|1|2|3), allgather_partitions
 *     (true), allgather_bucket_size (5e8), reduce_scatter (true), reduce_bucket_size (5e8;
 *     "auto", which HF fills with hidden_size^2, keeps 5e8: loom takes it as a bound only),
 *     overlap_comm (false), contiguous_gradients (false), cpu_offload (false),
 *     load_from_fp32_weights (true), elastic_checkpoint (true), offload_optimizer
 *     {device: "cpu"|"none", pin_memory (false)} (the newer spelling of cpu_offload; both
 *     given and disagreeing is an error). Stage 1 needs reduce_scatter true (DeepSpeed
 *     asserts it); cpu_offload needs stage 2 (ZeRO-Offload is stage 2 only in v0.3.10; loom's
 *     ZeRO-3 has no offload, so stage 3 refuses it, offload_param's devices cpu/nvme,
 *     cpu_offload_param and ZeRO++'s zero_quantized_* true, and --auto_find_batch_size, HF's rule).
 *     Sharding plugin: stage 0 -> "ddp" (no entries: ddp keeps its own keys), 1 -> "zero1",
 *     2 -> "zero2", 3 -> "zero3", with one entry per key above under DeepSpeed's name, resolved
 *     to its value or default (contiguous_gradients is written as true with cpu_offload, as
 *     stage2.py forces it); stage 3 adds prefetch_bucket_size, param_persistence_threshold,
 *     model_persistence_threshold, max_live_parameters, max_reuse_distance and
 *     gather_16bit_weights_on_model_save under those plain names where the file gives them
 *     (either name; "auto" is left out). Absent section: stage 0.
 *   optimizer: {type, params}; type is case-insensitive (DeepSpeed lower-cases it):
 *     Adam -> "adamw" when params.adam_w_mode is true (DeepSpeed's default), else "adam";
 *     AdamW -> "adamw" (adam_w_mode false is an error); Lamb -> "lamb"; OneBitAdam ->
 *     "onebit_adam"; anything else is an error listing these four.
 *     params (all types): lr, betas [b1, b2] (entries beta1/beta2), eps, weight_decay;
 *       Adam/AdamW: torch_adam (kept, no effect: loom has one implementation), adam_w_mode;
 *       Lamb: max_coeff, min_coeff, bias_correction (Lamb with a static fp16 loss_scale is an
 *       error: DeepSpeed asserts dynamic loss scaling); OneBitAdam: freeze_step, cuda_aware,
 *       comm_backend_name. max_grad_norm is an error "use gradient_clipping".
 *     Entries: lr, beta1, beta2, eps, weight_decay plus the type's own keys, DeepSpeed names.
 *     Absent section: the --optim plugin (adamw_torch -> adamw, adamw_hf, adam, sgd) with lr,
 *     beta1, beta2, eps, weight_decay from the command line, as HF's integration injects the
 *     Trainer's optimizer (it also sets zero_allow_untested_optimizer, which the merged JSON
 *     shows).
 *   scheduler: {type, params}: WarmupLR -> "warmup_lr", WarmupDecayLR -> "warmup_decay_lr",
 *     OneCycle -> "one_cycle", LRRangeTest -> "lr_range_test" (type case-sensitive, as
 *     DeepSpeed looks it up). params, passed through as entries under DeepSpeed's names:
 *       WarmupLR: warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type (a v0.5 key;
 *         "log" or "linear"); WarmupDecayLR: the same + total_num_steps;
 *       OneCycle: cycle_min_lr, cycle_max_lr, decay_lr_rate, cycle_first_step_size,
 *         cycle_second_step_size, cycle_first_stair_count, cycle_second_stair_count,
 *         decay_step_size, cycle_momentum, cycle_min_mom, cycle_max_mom, decay_mom_rate;
 *       LRRangeTest: lr_range_test_min_lr, lr_range_test_step_size, lr_range_test_step_rate,
 *         lr_range_test_staircase.
 *     Absent section (HF v4.3's init_deepspeed): --lr_scheduler_type linear -> WarmupDecayLR
 *     {total_num_steps=T, warmup_min_lr=0, warmup_max_lr=lr, warmup_num_steps=W};
 *     constant_with_warmup -> WarmupLR {warmup_min_lr=0, warmup_max_lr=lr,
 *     warmup_num_steps=W}. Neither passes warmup_type, so the plugin's default applies (as in
 *     HF v4.3 with DeepSpeed's log warmup). Any other type keeps loom's own HF scheduler
 *     plugin (scheduler.plugin == NULL) where HF v4.3 raised ValueError.
 *   fp16: enabled (false; true/false/"auto"), loss_scale (0 = dynamic), initial_scale_power
 *     (32 in v0.3.10), loss_scale_window (1000), hysteresis (2), min_loss_scale (1),
 *     consecutive_hysteresis (false). explicit_mask records which of the four dynamic-scaler
 *     keys were present: DeepSpeed builds its dynamic arguments only when at least one is,
 *     otherwise ZeRO's DynamicLossScaler() defaults apply (delayed_shift 1: no hysteresis).
 *     Absent section: enabled = --fp16 (HF v4.3 injects it).
 *   amp: enabled (false/"auto"), opt_level ("O1"/"auto"), and apex's amp.initialize keys
 *     passed through as JSON text: cast_model_type, patch_torch_functions,
 *     keep_batchnorm_fp32, master_weights, loss_scale, cast_model_outputs, num_losses,
 *     verbosity, min_loss_scale, max_loss_scale. fp16 and amp both enabled is an error; amp
 *     with ZeRO stage >= 1 is an error (DeepSpeed asserts both).
 *   bf16 (or its old name bfloat16): enabled (false/"auto"). bf16 with fp16 or amp enabled is an
 *     error.
 *   Today's keys (docs/semantics/deepspeed.md#todays-keys): dataloader_drop_last and
 *     checkpoint.use_node_local_storage are --dataloader_drop_last and --save_on_each_node
 *     under the rules above; communication_data_type and data_types.grad_accum_dtype must name
 *     grad_dtype (or be null); fp16.auto_cast, bf16.immediate_grad_update, the stage 1/2 tuning
 *     and the ZeRO-3 keys of zero_optimization, and the monitor/profiler/logging/I-O sections
 *     are accepted with no effect, a note (notes[]) where the value asks for something; what
 *     would change the training (NVMe or partial offload, fp16 master weights, elasticity,
 *     hybrid_engine, progressive_layer_drop, curriculum_learning, data_efficiency,
 *     torch_autocast, pipeline/tensor parallelism, compression) is refused in one line.
 * An empty file {} is valid: everything comes from the command line.
 */
#ifndef LOOM_CORE_DEEPSPEED_CONFIG_H
#define LOOM_CORE_DEEPSPEED_CONFIG_H

#include <loom/loom.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "plugin_config.h"

#define LOOM_DS_MAX_ENTRIES 24
#define LOOM_DS_MAX_NOTES 16

/* One plugin kind's choice: the plugin name (a static string; NULL = keep loom's choice from
 * the run arguments) and mapped configuration entries. entries[i].key is static text,
 * entries[i].value is owned text, or NULL while pending (see loom_ds_config_resolve_steps). */
typedef struct loom_ds_plugin_choice {
    const char *plugin;
    loom_config_default entries[LOOM_DS_MAX_ENTRIES];
    size_t n_entries;
} loom_ds_plugin_choice;

/* fp16.explicit_mask bits: the dynamic-scaler keys present in the file. */
#define LOOM_DS_FP16_INITIAL_SCALE_POWER 1u
#define LOOM_DS_FP16_LOSS_SCALE_WINDOW 2u
#define LOOM_DS_FP16_HYSTERESIS 4u
#define LOOM_DS_FP16_MIN_LOSS_SCALE 8u

/* Everything parsed and merged. Do not copy by value (entries own their text); free with
 * loom_ds_config_free. "*_auto" flags say a value came from the command line because the file
 * said "auto" (or left it out, for the batch sizes and clipping). */
typedef struct loom_ds_config {
    char *path; /* the file read (owned) */
    int world_size;

    /* batch and clipping: final values */
    int64_t train_batch_size;
    int64_t train_micro_batch_size_per_gpu;
    int64_t gradient_accumulation_steps;
    double gradient_clipping;
    int64_t steps_per_print;           /* 10 */
    int wall_clock_breakdown;          /* 0 */
    int zero_allow_untested_optimizer; /* as written (0 when absent) */
    int prescale_gradients;            /* always 0 once loaded */
    double gradient_predivide_factor;  /* always 1.0 once loaded */

    struct {
        int present; /* the section was in the file */
        int stage;
        int allgather_partitions;
        int64_t allgather_bucket_size;
        int reduce_scatter;
        int64_t reduce_bucket_size;
        int overlap_comm;
        int contiguous_gradients; /* as written */
        int cpu_offload;          /* cpu_offload or offload_optimizer.device == "cpu" */
        int load_from_fp32_weights;
        int elastic_checkpoint;
        int offload_optimizer_present;
        int offload_pin_memory;
    } zero;
    loom_ds_plugin_choice sharding; /* "ddp" | "zero1" | "zero2" | "zero3" */

    struct {
        int present;     /* the section was in the file; else from --optim */
        char *type;      /* as written (owned), NULL when absent */
        int adam_w_mode; /* Adam/AdamW: 1 unless adam_w_mode false */
        int torch_adam;
        double lr, beta1, beta2, eps, weight_decay;
        double max_coeff, min_coeff; /* Lamb: 10.0, 0.01 */
        int bias_correction;         /* Lamb: 1 */
        int64_t freeze_step;         /* OneBitAdam: 100000 */
        int cuda_aware;              /* OneBitAdam: 0 */
        char *comm_backend_name;     /* OneBitAdam: "nccl" (owned) */
    } optimizer;
    loom_ds_plugin_choice optimizer_choice; /* "adamw" | "adam" | "lamb" | "onebit_adam" | --optim's */

    struct {
        int present;                       /* the section was in the file */
        int from_args;                     /* mapped from --lr_scheduler_type (no section) */
        char *type;                        /* DeepSpeed's name (owned): as written, or the mapped one */
        int total_steps_pending;           /* total_num_steps waits for T */
        int warmup_steps_pending;          /* warmup_num_steps waits for ceil(warmup_ratio * T) */
        int64_t total_num_steps_explicit;  /* a number given in the file, else -1 */
        int64_t warmup_num_steps_explicit; /* likewise (checked again when T is known) */
        double warmup_ratio;               /* --warmup_ratio, for the pending warmup */
        double warmup_steps;               /* --warmup_steps (v5: below 1 a ratio) */
    } scheduler;
    loom_ds_plugin_choice scheduler_choice; /* plugin NULL: keep loom's HF scheduler */

    struct {
        int present;
        int enabled;
        double loss_scale;          /* 0 = dynamic */
        int initial_scale_power;    /* 32 */
        int64_t loss_scale_window;  /* 1000 */
        int hysteresis;             /* 2 */
        double min_loss_scale;      /* 1 */
        int consecutive_hysteresis; /* 0 */
        int consecutive_hysteresis_present;
        unsigned explicit_mask; /* LOOM_DS_FP16_* bits */
    } fp16;

    struct {
        int present;
        int enabled;
        char *opt_level;      /* "O1" (owned) */
        size_t n_passthrough; /* apex keys: key (static) = value as compact JSON (owned) */
        const char *passthrough_keys[16];
        char *passthrough_values[16];
    } amp;

    struct {
        int present;
        int enabled;
    } bf16;

    /* Keys of today's DeepSpeed (ds_config_data.c, ds_config_extras.c) */
    int dataloader_drop_last;   /* = --dataloader_drop_last once loaded */
    int use_node_local_storage; /* checkpoint.use_node_local_storage = --save_on_each_node */
    const char *grad_dtype;     /* "fp32" | "fp16" | "bf16": what loom reduces and accumulates
                                   gradients in, which communication_data_type and
                                   data_types.grad_accum_dtype must name */
    /* One line each for keys accepted with no effect whose value asks for something
     * ("flops_profiler.enabled true has no effect here (...)"); the trainer prints them once,
     * on rank 0, as warnings. Owned text. */
    char *notes[LOOM_DS_MAX_NOTES];
    size_t n_notes;
} loom_ds_config;

/* Read `path`, validate it and merge it with `args` for a run of `world_size` (>= 1) ranks.
 * On success *out is filled (free with loom_ds_config_free); on failure *out is left freed
 * (safe to free again) and loom_error() holds one line naming the file and the key. */
loom_status loom_ds_config_load(const char *path, const loom_args *args, int world_size, loom_ds_config *out);

/* Fill what waits for the run's total optimizer steps T (> 0): scheduler total_num_steps
 * ("auto", or mapped from --lr_scheduler_type linear) and warmup_num_steps from
 * --warmup_ratio (ceil(ratio * T), as HF's get_warmup_steps). An explicit total_num_steps
 * that differs from T is an error showing both. Call before building the scheduler section
 * (entries with NULL values are pending). */
loom_status loom_ds_config_resolve_steps(loom_ds_config *cfg, int64_t total_steps);

void loom_ds_config_free(loom_ds_config *cfg);

/* Write the merged configuration as DeepSpeed JSON (indent 2, file order of sections), with
 * every "auto" replaced. A pending scheduler value is written as null until
 * loom_ds_config_resolve_steps ran. Without an optimizer section the --optim choice is
 * written as DeepSpeed would name it (AdamW for adamw_torch/adamw_hf, Adam with adam_w_mode
 * false for adam, SGD for sgd) with zero_allow_untested_optimizer true, as HF injects it.
 * Without a scheduler section, a mapped scheduler is written; a kept HF scheduler is not. */
loom_status loom_ds_config_write_json(const loom_ds_config *cfg, FILE *out);

#endif
