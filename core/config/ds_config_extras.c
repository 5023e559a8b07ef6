/* ds_config_extras.c - the sections and switches of today's DeepSpeed that are not about the
 * update loom computes: monitors, profilers, loggers, I/O tuning, and features that only act on
 * model code written for DeepSpeed. Each is accepted with no effect - with one note when its
 * value asks for something that then does not happen - or refused in one line when it would
 * change the training and loom cannot do it (docs/semantics/deepspeed.md#todays-keys). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "ds_config_internal.h"
#include "error.h"

typedef enum { QUIET, NOTE, REFUSE } ds_effect;

/* A section switched on by "enabled": true. keys NULL: DeepSpeed's own schema for the
 * section is open-ended (nested feature configs), so only its switch is read. */
typedef struct switch_section {
    const char *name;
    const ds_key *keys;
    size_t n;
    ds_effect when_enabled;
    const char *why;
} switch_section;

static const ds_key flops_profiler[] = {{"enabled", K_BOOL, 0},         {"recompute_fwd_factor", K_NUM, 0},
                                        {"profile_step", K_INT, 0},     {"module_depth", K_INT, 0},
                                        {"top_modules", K_INT, 0},      {"detailed", K_BOOL, 0},
                                        {"output_file", K_STR, DS_NULL}};
static const ds_key tensorboard[] = {{"enabled", K_BOOL, 0}, {"output_path", K_STR, 0}, {"job_name", K_STR, 0}};
static const ds_key wandb[] = {
    {"enabled", K_BOOL, 0}, {"group", K_STR, DS_NULL}, {"team", K_STR, DS_NULL}, {"project", K_STR, 0}};
static const ds_key comet[] = {{"enabled", K_BOOL, 0},
                               {"samples_log_interval", K_INT, 0},
                               {"project", K_STR, DS_NULL},
                               {"workspace", K_STR, DS_NULL},
                               {"api_key", K_STR, DS_NULL},
                               {"experiment_name", K_STR, DS_NULL},
                               {"experiment_key", K_STR, DS_NULL},
                               {"online", K_BOOL, DS_NULL},
                               {"mode", K_STR, DS_NULL}};
static const ds_key comms_logger[] = {{"enabled", K_BOOL, 0},
                                      {"verbose", K_BOOL, 0},
                                      {"prof_all", K_BOOL, 0},
                                      {"debug", K_BOOL, 0},
                                      {"prof_ops", K_OBJ, DS_ANY}};
static const ds_key eigenvalue[] = {{"enabled", K_BOOL, 0},   {"verbose", K_BOOL, 0},
                                    {"max_iter", K_INT, 0},   {"tol", K_NUM, 0},
                                    {"stability", K_NUM, 0},  {"gas_boundary_resolution", K_INT, 0},
                                    {"layer_name", K_STR, 0}, {"layer_num", K_INT, 0}};
static const ds_key nebula[] = {{"enabled", K_BOOL, 0},
                                {"persistent_storage_path", K_STR, DS_NULL},
                                {"persistent_time_interval", K_INT, 0},
                                {"num_of_version_in_retention", K_INT, 0},
                                {"enable_nebula_load", K_BOOL, 0},
                                {"nebula_load_path", K_STR, DS_NULL}};
static const ds_key hybrid_engine[] = {{"enabled", K_BOOL, 0},          {"max_out_tokens", K_INT, 0},
                                       {"inference_tp_size", K_INT, 0}, {"release_inference_cache", K_BOOL, 0},
                                       {"pin_parameters", K_BOOL, 0},   {"tp_gather_partition_size", K_INT, 0}};
static const ds_key elasticity[] = {{"enabled", K_BOOL, 0},
                                    {"max_train_batch_size", K_INT, 0},
                                    {"micro_batch_sizes", K_OBJ, DS_ANY},
                                    {"min_gpus", K_INT, 0},
                                    {"max_gpus", K_INT, 0},
                                    {"min_time", K_INT, 0},
                                    {"version", K_NUM, 0},
                                    {"ignore_non_elastic_batch_info", K_BOOL, 0},
                                    {"prefer_larger_batch", K_BOOL, 0},
                                    {"model_parallel_size", K_INT, 0},
                                    {"num_gpus_per_node", K_INT, 0}};
static const ds_key progressive_layer_drop[] = {{"enabled", K_BOOL, 0}, {"theta", K_NUM, 0}, {"gamma", K_NUM, 0}};
static const ds_key torch_autocast[] = {
    {"enabled", K_BOOL, 0}, {"dtype", K_STR, DS_NULL}, {"lower_precision_safe_modules", K_OBJ, DS_ANY}};

#define KEYS(t) t, COUNT(t)
static const switch_section switch_sections[] = {
    {"flops_profiler", KEYS(flops_profiler), NOTE, "DeepSpeed's profiler of PyTorch modules"},
    {"tensorboard", KEYS(tensorboard), NOTE,
     "DeepSpeed's own monitor; loom writes TensorBoard events with --report_to"},
    {"wandb", KEYS(wandb), NOTE, "DeepSpeed's own monitor"},
    {"csv_monitor", KEYS(tensorboard), NOTE, "DeepSpeed's own monitor"},
    {"comet", KEYS(comet), NOTE, "DeepSpeed's own monitor"},
    {"comms_logger", KEYS(comms_logger), NOTE, "DeepSpeed's log of its torch.distributed calls"},
    {"eigenvalue", KEYS(eigenvalue), NOTE, "DeepSpeed uses it only for compression_training's MoQ quantizer"},
    {"nebula", KEYS(nebula), NOTE, "Azure's checkpoint service; loom writes its own checkpoints"},
    {"autotuning", NULL, 0, NOTE, "DeepSpeed's launcher runs the autotuner, deepspeed --autotuning"},
    {"hybrid_engine", KEYS(hybrid_engine), REFUSE, "DeepSpeed-Chat's inference kernels for generation"},
    {"elasticity", KEYS(elasticity), REFUSE, "DeepSpeed then chooses the batch size from the number of GPUs"},
    {"progressive_layer_drop", KEYS(progressive_layer_drop), REFUSE,
     "it skips layers through a forward argument of models written for it"},
    {"curriculum_learning", NULL, 0, REFUSE,
     "it truncates sequences through a forward argument of models written for it"},
    {"data_efficiency", NULL, 0, REFUSE, "its curriculum sampling and random-LTD change which data and layers train"},
    {"torch_autocast", KEYS(torch_autocast), REFUSE,
     "torch.autocast over fp32 parameters is not one of loom's precisions: use fp16 or bf16"},
};

/* Switches of the top level that loom accepts and does not act on. */
typedef struct switch_key {
    const char *name;
    ds_effect when_true;
    const char *why;
} switch_key;

static const switch_key switch_keys[] = {
    {"dump_state", NOTE, "DeepSpeed prints its configuration at start; loom logs the merged one"},
    {"memory_breakdown", NOTE, "DeepSpeed's log of CUDA memory"},
    /* A transport for nn.Embedding(sparse=True) gradients; the sums are the same. */
    {"sparse_gradients", QUIET, NULL},
    {"disable_allgather", QUIET, NULL},
    /* CUDA graphs for DeepSpeed's overflow check. */
    {"graph_harvesting", QUIET, NULL},
    /* The topology of mixture-of-experts groups; loom has no experts. */
    {"use_data_before_expert_parallelism", QUIET, NULL},
    /* DeepSpeed's guard for offload with a non-DeepSpeed optimizer; every loom optimizer offloads. */
    {"zero_force_ds_cpu_optimizer", QUIET, NULL},
};

static loom_status refuse(const ds_ctx *c, const char *what, const char *why)
{
    return loom_error(LOOM_E_UNSUPPORTED, "%s: %s is not supported (%s)", c->file, what, why);
}

static loom_status parse_switch_section(ds_ctx *c, const cJSON *root, const switch_section *s)
{
    ds_value sec, en;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", s->name);
    loom_status st = loom__ds_get(c, root, "", s->name, K_OBJ, 0, &sec);
    if (st != LOOM_OK || !sec.present) return st;
    if (s->keys && (st = loom__ds_check_table(c, sec.json, prefix, s->keys, s->n)) != LOOM_OK) return st;
    if ((st = loom__ds_get(c, sec.json, prefix, "enabled", K_BOOL, 0, &en)) != LOOM_OK) return st;
    if (!en.present || !en.b || s->when_enabled == QUIET) return LOOM_OK;
    if (s->when_enabled == REFUSE) {
        char what[96];
        snprintf(what, sizeof what, "%s.enabled true", s->name);
        return refuse(c, what, s->why);
    }
    return loom__ds_note(c, "%s: %s.enabled true has no effect here (%s)", c->file, s->name, s->why);
}

static loom_status parse_switch_key(ds_ctx *c, const cJSON *root, const switch_key *k)
{
    ds_value v;
    loom_status st = loom__ds_get(c, root, "", k->name, K_BOOL, 0, &v);
    if (st != LOOM_OK || !v.present || !v.b || k->when_true == QUIET) return st;
    return loom__ds_note(c, "%s: %s true has no effect here (%s)", c->file, k->name, k->why);
}

/* activation_checkpointing configures deepspeed.checkpointing, which only model code that
 * calls it uses (Megatron-style); HF's Trainer and models checkpoint with torch.utils.checkpoint
 * (--gradient_checkpointing) and never call it, and neither does DeepSpeed's engine. */
static loom_status parse_activation_checkpointing(ds_ctx *c, const cJSON *root)
{
    static const ds_key keys[] = {{"partition_activations", K_BOOL, 0},
                                  {"contiguous_memory_optimization", K_BOOL, 0},
                                  {"cpu_checkpointing", K_BOOL, 0},
                                  {"number_checkpoints", K_INT, DS_NULL},
                                  {"synchronize_checkpoint_boundary", K_BOOL, 0},
                                  {"profile", K_BOOL, 0}};
    const char *p = "activation_checkpointing.";
    ds_value sec;
    loom_status st = loom__ds_get(c, root, "", "activation_checkpointing", K_OBJ, 0, &sec);
    if (st != LOOM_OK || !sec.present) return st;
    if ((st = loom__ds_check_table(c, sec.json, p, keys, COUNT(keys))) != LOOM_OK) return st;
    for (size_t i = 0; i < COUNT(keys); i++)
        if (keys[i].k == K_BOOL && loom__ds_is_true(sec.json, keys[i].key) &&
            (st = loom__ds_note(c,
                                "%s: activation_checkpointing.%s true has no effect here (only model code that calls "
                                "deepspeed.checkpointing uses it; for HF's models use --gradient_checkpointing)",
                                c->file, keys[i].key)) != LOOM_OK)
            return st;
    return LOOM_OK;
}

/* Tuning of the NVMe swapper (aio) and the step timers: nothing to tell. thread_count is aio's
 * older name for intra_op_parallelism, still in HF's example configs (DeepSpeed ignores it). */
static loom_status parse_tuning(ds_ctx *c, const cJSON *root)
{
    static const ds_key aio[] = {
        {"block_size", K_INT, 0},   {"queue_depth", K_INT, 0},    {"intra_op_parallelism", K_INT, 0},
        {"thread_count", K_INT, 0}, {"single_submit", K_BOOL, 0}, {"overlap_events", K_BOOL, 0},
        {"use_gds", K_BOOL, 0}};
    static const ds_key timers[] = {{"throughput", K_OBJ, 0}};
    static const ds_key throughput[] = {{"enabled", K_BOOL, 0}, {"synchronized", K_BOOL, 0}};
    ds_value a, t;
    loom_status st;
    if ((st = loom__ds_get(c, root, "", "aio", K_OBJ, 0, &a)) != LOOM_OK ||
        (a.present && (st = loom__ds_check_table(c, a.json, "aio.", aio, COUNT(aio))) != LOOM_OK) ||
        (st = loom__ds_get(c, root, "", "timers", K_OBJ, 0, &t)) != LOOM_OK ||
        (t.present && (st = loom__ds_check_table(c, t.json, "timers.", timers, COUNT(timers))) != LOOM_OK))
        return st;
    const cJSON *tp = t.present ? cJSON_GetObjectItemCaseSensitive(t.json, "throughput") : NULL;
    return tp ? loom__ds_check_table(c, tp, "timers.throughput.", throughput, COUNT(throughput)) : LOOM_OK;
}

/* Some "enabled": true anywhere inside (compression_training nests one per technique). */
static const cJSON *find_enabled(const cJSON *j)
{
    for (const cJSON *k = j ? j->child : NULL; k; k = k->next) {
        if (k->string && !strcmp(k->string, "enabled") && cJSON_IsTrue(k)) return j;
        const cJSON *inner = cJSON_IsObject(k) ? find_enabled(k) : NULL;
        if (inner) return inner;
    }
    return NULL;
}

/* Sections whose schema is DeepSpeed's open-ended one: refused where they ask for a parallelism
 * or a model transformation loom does not do, otherwise accepted (ZeRO-3's weight quantization
 * and the sparse attention of DeepSpeed's own layers act on nothing here). */
static loom_status parse_open_sections(ds_ctx *c, const cJSON *root)
{
    static const char *const names[] = {"pipeline", "compression_training", "sparse_attention", "weight_quantization",
                                        "tensor_parallel"};
    ds_value v[COUNT(names)];
    loom_status st;
    for (size_t i = 0; i < COUNT(names); i++)
        if ((st = loom__ds_get(c, root, "", names[i], K_OBJ, 0, &v[i])) != LOOM_OK) return st;
    const cJSON *stages = v[0].present ? cJSON_GetObjectItemCaseSensitive(v[0].json, "stages") : NULL;
    if (cJSON_IsNumber(stages) && stages->valuedouble > 1)
        return refuse(c, "pipeline.stages > 1", "pipeline parallelism; loom runs data parallelism only");
    if (v[1].present && find_enabled(v[1].json))
        return refuse(c, "compression_training with a technique enabled",
                      "quantization, pruning and layer reduction change the model that trains");
    if (v[2].present && v[2].json->child &&
        (st = loom__ds_note(c,
                            "%s: sparse_attention has no effect here (only models built from DeepSpeed's "
                            "SparseSelfAttention read it)",
                            c->file)) != LOOM_OK)
        return st;
    const cJSON *autotp = v[4].present ? cJSON_GetObjectItemCaseSensitive(v[4].json, "autotp_size") : NULL;
    if (cJSON_IsNumber(autotp) && autotp->valuedouble > 1)
        return refuse(c, "tensor_parallel.autotp_size > 1", "tensor parallelism; loom runs data parallelism only");
    return LOOM_OK;
}

loom_status loom__ds_parse_extras(ds_ctx *c, const cJSON *root)
{
    loom_status st;
    for (size_t i = 0; i < COUNT(switch_sections); i++)
        if ((st = parse_switch_section(c, root, &switch_sections[i])) != LOOM_OK) return st;
    for (size_t i = 0; i < COUNT(switch_keys); i++)
        if ((st = parse_switch_key(c, root, &switch_keys[i])) != LOOM_OK) return st;
    if ((st = parse_activation_checkpointing(c, root)) != LOOM_OK || (st = parse_tuning(c, root)) != LOOM_OK) return st;
    return parse_open_sections(c, root);
}
