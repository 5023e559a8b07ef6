/* deepspeed_config.c - ds_config.json, the top level: read the file, check its top-level keys,
 * run the section parsers (one file each, see ds_config_internal.h), free, and resolve what
 * waits for the step count. The rules are documented in deepspeed_config.h. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "ds_config_internal.h"
#include "error.h"
#include "json_util.h"

static void choice_free(loom_ds_plugin_choice *c)
{
    for (size_t i = 0; i < c->n_entries; i++)
        free((char *)(uintptr_t)c->entries[i].value);
    memset(c, 0, sizeof *c);
}

static loom_config_default *find_entry(loom_ds_plugin_choice *c, const char *key)
{
    for (size_t i = 0; i < c->n_entries; i++)
        if (strcmp(c->entries[i].key, key) == 0) return &c->entries[i];
    return NULL;
}

/* ---- load / free / resolve ---------------------------------------------------------------- */

static const char *const top_keys[] = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "steps_per_print", "wall_clock_breakdown", "zero_allow_untested_optimizer", "prescale_gradients",
    "gradient_predivide_factor", "zero_optimization", "optimizer", "scheduler", "fp16", "amp", "bf16", "bfloat16",
    /* ds_config_data.c */
    "dataloader_drop_last", "checkpoint", "communication_data_type", "data_types", "seq_parallel_comm_data_type",
    /* ds_config_extras.c */
    "activation_checkpointing", "aio", "autotuning", "comet", "comms_logger", "compression_training", "csv_monitor",
    "curriculum_learning", "data_efficiency", "disable_allgather", "dump_state", "eigenvalue", "elasticity",
    "flops_profiler", "graph_harvesting", "hybrid_engine", "memory_breakdown", "nebula", "pipeline",
    "progressive_layer_drop", "sparse_attention", "sparse_gradients", "tensor_parallel", "tensorboard", "timers",
    "torch_autocast", "use_data_before_expert_parallelism", "wandb", "weight_quantization",
    "zero_force_ds_cpu_optimizer"};

void loom_ds_config_free(loom_ds_config *cfg)
{
    if (!cfg) return;
    free(cfg->path);
    choice_free(&cfg->sharding);
    choice_free(&cfg->optimizer_choice);
    choice_free(&cfg->scheduler_choice);
    free(cfg->optimizer.type);
    free(cfg->optimizer.comm_backend_name);
    free(cfg->scheduler.type);
    free(cfg->amp.opt_level);
    for (size_t i = 0; i < cfg->amp.n_passthrough; i++)
        free(cfg->amp.passthrough_values[i]);
    for (size_t i = 0; i < cfg->n_notes; i++)
        free(cfg->notes[i]);
    memset(cfg, 0, sizeof *cfg);
}

loom_status loom_ds_config_load(const char *path, const loom_args *args, int world_size, loom_ds_config *out)
{
    memset(out, 0, sizeof *out);
    if (!path || !*path) return loom_error(LOOM_E_INVALID, "--deepspeed: no config file given");
    if (world_size < 1) return loom_error(LOOM_E_INVALID, "%s: world size %d must be >= 1", path, world_size);
    cJSON *root = NULL;
    loom_status st = loom__ds_read_json(path, &root);
    if (st != LOOM_OK) return st;
    path = loom__ds_label(path); /* for messages; an inline dict's text would make them unreadable */
    ds_ctx c = {path, args, out};
    if (!cJSON_IsObject(root)) {
        st = loom_error(LOOM_E_FORMAT, "%s: expected a JSON object (a DeepSpeed config), got %s", path,
                        loom__json_type_name(root));
        goto done;
    }
    out->world_size = world_size;
    if (!(out->path = loom__ds_dup_text(path))) {
        st = loom_error(LOOM_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = loom__ds_check_keys(&c, root, "", top_keys, COUNT(top_keys))) != LOOM_OK ||
        (st = loom__ds_parse_batch(&c, root)) != LOOM_OK || (st = loom__ds_parse_zero(&c, root)) != LOOM_OK ||
        (st = loom__ds_parse_optimizer(&c, root)) != LOOM_OK || (st = loom__ds_parse_scheduler(&c, root)) != LOOM_OK ||
        (st = loom__ds_parse_precision(&c, root)) != LOOM_OK || (st = loom__ds_parse_data(&c, root)) != LOOM_OK ||
        (st = loom__ds_parse_extras(&c, root)) != LOOM_OK)
        goto done;
done:
    cJSON_Delete(root);
    if (st != LOOM_OK) loom_ds_config_free(out);
    return st;
}

/* A pending entry (written "auto" and waiting for the run's length) gets its value. */
static loom_status resolve_pending(loom_ds_plugin_choice *ch, const char *key, int64_t value, int *pending)
{
    loom_config_default *e = find_entry(ch, key);
    if (!e) return LOOM_OK;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)value);
    char *v = loom__ds_dup_text(buf);
    if (!v) return loom_error(LOOM_E_NOMEM, "out of memory");
    free((char *)(uintptr_t)e->value);
    e->value = v;
    *pending = 0;
    return LOOM_OK;
}

loom_status loom_ds_config_resolve_steps(loom_ds_config *cfg, int64_t total_steps)
{
    if (total_steps <= 0)
        return loom_error(LOOM_E_INVALID, "%s: total optimizer steps %lld must be > 0", cfg->path,
                          (long long)total_steps);
    loom_ds_plugin_choice *ch = &cfg->scheduler_choice;
    if (cfg->scheduler.total_num_steps_explicit >= 0 && cfg->scheduler.total_num_steps_explicit != total_steps)
        return loom_error(LOOM_E_INVALID,
                          "scheduler.params.total_num_steps=%lld in %s but the run has %lld optimizer steps (use "
                          "\"auto\" or make them agree)",
                          (long long)cfg->scheduler.total_num_steps_explicit, cfg->path, (long long)total_steps);
    /* The same rule as the trainer's (loom_args_warmup_steps): v5's warmup_steps, then v4's ratio. */
    int by_steps = cfg->scheduler.warmup_steps > 0;
    int64_t warmup = by_steps ? loom_args_steps(cfg->scheduler.warmup_steps, total_steps)
                              : (int64_t)ceil(cfg->scheduler.warmup_ratio * (double)total_steps);
    if (cfg->scheduler.warmup_num_steps_explicit >= 0 && cfg->scheduler.warmup_num_steps_explicit != warmup)
        return loom_error(LOOM_E_INVALID,
                          "scheduler.params.warmup_num_steps=%lld in %s but %s %g gives %lld steps (use "
                          "\"auto\" or make them agree)",
                          (long long)cfg->scheduler.warmup_num_steps_explicit, cfg->path,
                          by_steps ? "--warmup_steps" : "--warmup_ratio",
                          by_steps ? cfg->scheduler.warmup_steps : cfg->scheduler.warmup_ratio, (long long)warmup);
    loom_status st = LOOM_OK;
    if (cfg->scheduler.total_steps_pending &&
        (st = resolve_pending(ch, "total_num_steps", total_steps, &cfg->scheduler.total_steps_pending)) != LOOM_OK)
        return st;
    if (cfg->scheduler.warmup_steps_pending &&
        (st = resolve_pending(ch, "warmup_num_steps", warmup, &cfg->scheduler.warmup_steps_pending)) != LOOM_OK)
        return st;
    return LOOM_OK;
}
