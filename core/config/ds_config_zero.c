/* ds_config_zero.c - zero_optimization: stages 0, 1, 2, 3 onto the ddp, zero1, zero2 and zero3
 * sharding plugins, with their bucket and overlap settings and CPU offload of the optimizer
 * (stage 2 only); today's other keys (DeepSpeedZeroConfig, which forbids unknown ones too) are
 * type-checked and not acted on, except the ZeRO-3 tuning keys zero3 takes under stage 3. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "ds_config_internal.h"
#include "error.h"

static const char *const zero_keys[] = {"stage",
                                        "allgather_partitions",
                                        "allgather_bucket_size",
                                        "reduce_scatter",
                                        "reduce_bucket_size",
                                        "overlap_comm",
                                        "contiguous_gradients",
                                        "cpu_offload",
                                        "load_from_fp32_weights",
                                        "elastic_checkpoint",
                                        "offload_optimizer"};

/* Keys loom accepts and does not act on: how DeepSpeed's stage 1/2 optimizer schedules its
 * copies and buckets (round_robin_gradients reorders each rank's partition, the sums stay the
 * same), and ZeRO-3's tuning of when parameters are fetched and kept, which DeepSpeed ignores
 * below stage 3 and which changes no result under it (the stage3_ names are aliases of the
 * plain ones; stage3_keys lists the ones zero3 takes). HF fills "auto" only under ZeRO-3. */
static const ds_key ignored_keys[] = {{"sub_group_size", K_INT, 0},
                                      {"round_robin_gradients", K_BOOL, 0},
                                      {"use_multi_rank_bucket_allreduce", K_BOOL, 0},
                                      {"ignore_unused_parameters", K_BOOL, 0},
                                      {"legacy_stage1", K_BOOL, 0},
                                      {"log_trace_cache_warnings", K_BOOL, 0},
                                      {"offload_param", K_OBJ, 0},
                                      {"cpu_offload_param", K_BOOL, DS_NULL},
                                      {"cpu_offload_use_pin_memory", K_BOOL, DS_NULL},
                                      {"prefetch_bucket_size", K_INT, DS_AUTO},
                                      {"stage3_prefetch_bucket_size", K_INT, DS_AUTO},
                                      {"param_persistence_threshold", K_INT, DS_AUTO},
                                      {"stage3_param_persistence_threshold", K_INT, DS_AUTO},
                                      {"model_persistence_threshold", K_INT, 0},
                                      {"stage3_model_persistence_threshold", K_INT, 0},
                                      {"max_live_parameters", K_INT, 0},
                                      {"stage3_max_live_parameters", K_INT, 0},
                                      {"max_reuse_distance", K_INT, 0},
                                      {"stage3_max_reuse_distance", K_INT, 0},
                                      {"gather_16bit_weights_on_model_save", K_BOOL, 0},
                                      {"stage3_gather_16bit_weights_on_model_save", K_BOOL, 0},
                                      {"stage3_gather_fp16_weights_on_model_save", K_BOOL, 0},
                                      {"module_granularity_threshold", K_INT, 0},
                                      {"stage3_module_granularity_threshold", K_INT, 0},
                                      {"use_all_reduce_for_fetch_params", K_BOOL, 0},
                                      {"stage3_use_all_reduce_for_fetch_params", K_BOOL, 0},
                                      {"zero_hpz_partition_size", K_INT, 0},
                                      {"zero_quantized_weights", K_BOOL, 0},
                                      {"zero_quantized_nontrainable_weights", K_BOOL, 0},
                                      {"zero_quantized_gradients", K_BOOL, 0},
                                      {"zeropp_loco_param", K_OBJ, DS_ANY},
                                      {"mics_shard_size", K_INT, 0},
                                      {"mics_hierarchical_params_gather", K_BOOL, 0},
                                      {"memory_efficient_linear", K_BOOL, 0},
                                      {"pipeline_loading_checkpoint", K_BOOL, 0},
                                      {"override_module_apply", K_BOOL, 0}};

/* offload_optimizer: device and pin_memory act; the NVMe knobs only matter for device "nvme",
 * which is refused; fast_init is how the swapper starts. */
static const char *const offload_keys[] = {"device",        "pin_memory",     "nvme_path", "buffer_count",
                                           "pipeline_read", "pipeline_write", "fast_init", "ratio"};
static const ds_key offload_types[] = {{"nvme_path", K_STR, DS_NULL}, {"buffer_count", K_INT, 0},
                                       {"pipeline_read", K_BOOL, 0},  {"pipeline_write", K_BOOL, 0},
                                       {"fast_init", K_BOOL, 0},      {"ratio", K_NUM, 0}};
/* offload_param (ZeRO-3's parameter offload). */
static const ds_key offload_param_keys[] = {{"device", K_STR, 0},       {"nvme_path", K_STR, DS_NULL},
                                            {"buffer_count", K_INT, 0}, {"buffer_size", K_INT, 0},
                                            {"max_in_cpu", K_INT, 0},   {"pin_memory", K_BOOL, 0}};

/* The ZeRO-3 keys zero3 takes, under their plain names (it accepts them with no effect on the
 * update); stage3_gather_fp16_weights_on_model_save is DeepSpeed's older name of the last. */
static const ds_key stage3_keys[] = {
    {"prefetch_bucket_size", K_INT, DS_AUTO},  {"param_persistence_threshold", K_INT, DS_AUTO},
    {"model_persistence_threshold", K_INT, 0}, {"max_live_parameters", K_INT, 0},
    {"max_reuse_distance", K_INT, 0},          {"gather_16bit_weights_on_model_save", K_BOOL, 0}};

/* ZeRO++'s quantized communication: under stage 3 DeepSpeed all-gathers int8 weights and
 * reduce-scatters int4 gradients, which changes the update; below stage 3 it reads neither. */
static const char *const stage3_lossy[] = {"zero_quantized_weights", "zero_quantized_nontrainable_weights",
                                           "zero_quantized_gradients"};

/* The same key under both of its names (DeepSpeed's pydantic model takes either). */
static loom_status check_aliases(const ds_ctx *c, const cJSON *z)
{
    for (size_t i = 0; i < COUNT(ignored_keys); i++) {
        const char *name = ignored_keys[i].key;
        if (strncmp(name, "stage3_", 7) != 0 || !cJSON_GetObjectItemCaseSensitive(z, name) ||
            !cJSON_GetObjectItemCaseSensitive(z, name + 7))
            continue;
        return loom_error(LOOM_E_INVALID,
                          "%s: zero_optimization.%s and zero_optimization.%s are one key (the first is the second's "
                          "alias): give one",
                          c->file, name, name + 7);
    }
    return LOOM_OK;
}

/* offload_param: DeepSpeed offloads parameters only under ZeRO-3, and ignores it below. loom's
 * zero3 runs on the CPU, where its partitions are host memory already: "cpu" has no effect
 * there either, and NVMe (ZeRO-Infinity) is not supported. */
static loom_status read_offload_param(ds_ctx *c, const cJSON *z)
{
    int stage = c->cfg->zero.stage;
    loom_status st;
    if (stage == 3 && loom__ds_is_true(z, "cpu_offload_param") &&
        (st = loom__ds_note(c,
                            "%s: zero_optimization.cpu_offload_param true has no effect: loom's ZeRO-3 runs on the "
                            "CPU, where the parameters are host memory already",
                            c->file)) != LOOM_OK)
        return st;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(z, "offload_param");
    if (!op) return LOOM_OK;
    const char *p = "zero_optimization.offload_param.";
    ds_value dev;
    if ((st = loom__ds_check_table(c, op, p, offload_param_keys, COUNT(offload_param_keys))) != LOOM_OK ||
        (st = loom__ds_get(c, op, p, "device", K_STR, 0, &dev)) != LOOM_OK)
        return st;
    if (!dev.present || !strcmp(dev.s, "none")) return LOOM_OK;
    if (strcmp(dev.s, "cpu") != 0 && strcmp(dev.s, "nvme") != 0)
        return loom_error(LOOM_E_INVALID,
                          "%s: zero_optimization.offload_param.device \"%s\": expected \"none\", \"cpu\" or \"nvme\"",
                          c->file, dev.s);
    if (stage == 3 && !strcmp(dev.s, "nvme"))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: zero_optimization.offload_param.device \"nvme\" with stage 3: ZeRO-Infinity's NVMe "
                          "offload is not supported (\"cpu\" and \"none\" are)",
                          c->file);
    if (stage == 3)
        return loom__ds_note(c,
                             "%s: zero_optimization.offload_param.device \"cpu\" has no effect: loom's ZeRO-3 runs on "
                             "the CPU, where the parameters are host memory already",
                             c->file);
    return loom__ds_note(c,
                         "%s: zero_optimization.offload_param.device \"%s\" has no effect with stage %d (DeepSpeed "
                         "offloads parameters only under ZeRO-3)",
                         c->file, dev.s, stage);
}

/* The section's own keys, with DeepSpeed's defaults for the absent ones. `off` is cpu_offload as
 * written, for the check against offload_optimizer. */
static loom_status read_zero_keys(ds_ctx *c, const cJSON *z, ds_value *off, ds_value *oo)
{
    loom_ds_config *cfg = c->cfg;
    const char *p = "zero_optimization.";
    ds_value stage, agp, agb, rs, rb, oc, cg, lf, ec;
    loom_status st;
    if ((st = loom__ds_get(c, z, p, "stage", K_INT, 0, &stage)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "allgather_partitions", K_BOOL, 0, &agp)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "allgather_bucket_size", K_INT, 0, &agb)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, p, "allgather_bucket_size", &agb, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "reduce_scatter", K_BOOL, 0, &rs)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "reduce_bucket_size", K_INT, 1, &rb)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, p, "reduce_bucket_size", &rb, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "overlap_comm", K_BOOL, 0, &oc)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "contiguous_gradients", K_BOOL, 0, &cg)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "cpu_offload", K_BOOL, 0, off)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "load_from_fp32_weights", K_BOOL, 0, &lf)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "elastic_checkpoint", K_BOOL, 0, &ec)) != LOOM_OK ||
        (st = loom__ds_get(c, z, p, "offload_optimizer", K_OBJ, 0, oo)) != LOOM_OK)
        return st;
    if (stage.present && (stage.i < 0 || stage.i > 3))
        return loom_error(LOOM_E_INVALID, "%s: zero_optimization.stage: expected 0, 1, 2 or 3, got %lld", c->file,
                          (long long)stage.i);
    cfg->zero.stage = stage.present ? (int)stage.i : 0;
    cfg->zero.allgather_partitions = agp.present ? agp.b : 1;
    cfg->zero.allgather_bucket_size = agb.present ? agb.i : 500000000;
    cfg->zero.reduce_scatter = rs.present ? rs.b : 1;
    /* HF fills "auto" with hidden_size^2; loom's ZeRO reduces the ranges backward releases and
     * takes the size as a bound only, so "auto" keeps DeepSpeed's default. */
    cfg->zero.reduce_bucket_size = rb.present && !rb.is_auto ? rb.i : 500000000;
    cfg->zero.overlap_comm = oc.present ? oc.b : 0;
    cfg->zero.contiguous_gradients = cg.present ? cg.b : 0;
    cfg->zero.cpu_offload = off->present ? off->b : 0;
    cfg->zero.load_from_fp32_weights = lf.present ? lf.b : 1;
    cfg->zero.elastic_checkpoint = ec.present ? ec.b : 1;
    return LOOM_OK;
}

/* offload_optimizer {device, pin_memory}: the newer spelling of cpu_offload; both must agree. */
static loom_status read_offload_optimizer(ds_ctx *c, const ds_value *oo, const ds_value *off)
{
    loom_ds_config *cfg = c->cfg;
    const char *op = "zero_optimization.offload_optimizer.";
    ds_value dev, pin;
    loom_status st;
    ds_value ratio;
    if ((st = loom__ds_check_keys(c, oo->json, op, offload_keys, COUNT(offload_keys))) != LOOM_OK ||
        (st = loom__ds_check_types(c, oo->json, op, offload_types, COUNT(offload_types))) != LOOM_OK ||
        (st = loom__ds_get(c, oo->json, op, "device", K_STR, 0, &dev)) != LOOM_OK ||
        (st = loom__ds_get(c, oo->json, op, "pin_memory", K_BOOL, 0, &pin)) != LOOM_OK ||
        (st = loom__ds_get(c, oo->json, op, "ratio", K_NUM, 0, &ratio)) != LOOM_OK)
        return st;
    int cpu = 0;
    if (dev.present) {
        if (strcmp(dev.s, "cpu") == 0)
            cpu = 1;
        else if (strcmp(dev.s, "nvme") == 0)
            return loom_error(
                LOOM_E_UNSUPPORTED,
                "%s: zero_optimization.offload_optimizer.device \"nvme\" (ZeRO-Infinity's NVMe offload) is "
                "not supported: supported devices are \"cpu\" and \"none\"",
                c->file);
        else if (strcmp(dev.s, "none") != 0)
            return loom_error(
                LOOM_E_INVALID,
                "%s: zero_optimization.offload_optimizer.device \"%s\": supported devices are \"cpu\" and \"none\"",
                c->file, dev.s);
    }
    if (ratio.present && (ratio.d < 0 || ratio.d > 1))
        return loom_error(LOOM_E_INVALID, "%s: zero_optimization.offload_optimizer.ratio %g: expected 0 to 1", c->file,
                          ratio.d);
    /* Under stage 3 the ratio only matters with device "cpu", which has no effect there. */
    if (ratio.present && ratio.d < 1 && cfg->zero.stage != 3)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: zero_optimization.offload_optimizer.ratio %g: partial offload needs ZeRO-3 (DeepSpeed "
                          "asserts it)",
                          c->file, ratio.d);
    if (off->present && off->b != cpu)
        return loom_error(LOOM_E_INVALID,
                          "%s: zero_optimization.cpu_offload %s disagrees with offload_optimizer.device \"%s\"",
                          c->file, off->b ? "true" : "false", dev.present ? dev.s : "none");
    cfg->zero.offload_optimizer_present = 1;
    cfg->zero.offload_pin_memory = pin.present ? pin.b : 0;
    cfg->zero.cpu_offload = cpu;
    return LOOM_OK;
}

/* What DeepSpeed asserts about the stage and the other keys, and what loom's zero3 lacks. */
static loom_status check_zero_stage(const ds_ctx *c, const cJSON *z)
{
    const loom_ds_config *cfg = c->cfg;
    int s = cfg->zero.stage;
    for (size_t i = 0; s == 3 && i < COUNT(stage3_lossy); i++)
        if (loom__ds_is_true(z, stage3_lossy[i]))
            return loom_error(LOOM_E_UNSUPPORTED,
                              "%s: zero_optimization.%s true with stage 3 is not supported (ZeRO++'s quantized "
                              "communication changes the update)",
                              c->file, stage3_lossy[i]);
    /* HF's Trainer raises this before DeepSpeed starts. */
    if (s == 3 && c->args && c->args->auto_find_batch_size == 1)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "%s: zero_optimization.stage 3 with --auto_find_batch_size: the batch size search is not "
                          "supported with ZeRO-3 (HF's rule; use stage 0, 1 or 2)",
                          c->file);
    if (s == 1 && !cfg->zero.reduce_scatter)
        return loom_error(LOOM_E_INVALID,
                          "%s: zero_optimization.reduce_scatter false with stage 1: ZeRO-1 requires reduce_scatter "
                          "true (DeepSpeed asserts it)",
                          c->file);
    if (cfg->zero.cpu_offload && s != 2)
        return loom_error(
            LOOM_E_INVALID,
            "%s: zero_optimization: CPU offload (cpu_offload / offload_optimizer) requires stage 2, got stage %d",
            c->file, s);
    return LOOM_OK;
}

/* Stage 3's keys present in the file, under their plain names; "auto" (HF computes it from the
 * model's hidden_size, which this layer does not know) is left out: zero3 has its defaults. */
static loom_status map_stage3_keys(const ds_ctx *c, const cJSON *z, loom_ds_plugin_choice *ch)
{
    const char *p = "zero_optimization.";
    loom_status st;
    for (size_t i = 0; i < COUNT(stage3_keys); i++) {
        const ds_key *k = &stage3_keys[i];
        char alias[64];
        snprintf(alias, sizeof alias, "stage3_%s", k->key);
        const char *name = cJSON_GetObjectItemCaseSensitive(z, k->key) ? k->key : alias;
        if (k->k == K_BOOL && !cJSON_GetObjectItemCaseSensitive(z, name))
            name = "stage3_gather_fp16_weights_on_model_save"; /* the one bool's older name */
        ds_value v;
        if ((st = loom__ds_get(c, z, p, name, k->k, (k->flags & DS_AUTO) != 0, &v)) != LOOM_OK) return st;
        if (!v.present || v.is_auto) continue;
        if (k->k == K_BOOL) {
            st = loom__ds_add_bool(ch, k->key, v.b);
        } else if ((st = loom__ds_need_min_int(c, p, name, &v, 0)) == LOOM_OK) {
            st = loom__ds_add_int(ch, k->key, v.i);
        }
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

/* Stage 0 is ddp; stages 1, 2 and 3 are zero1 / zero2 / zero3 with the section's settings. */
static loom_status map_zero_to_sharding(const ds_ctx *c, const cJSON *z)
{
    loom_ds_config *cfg = c->cfg;
    int s = cfg->zero.stage;
    loom_ds_plugin_choice *ch = &cfg->sharding;
    ch->plugin = s == 0 ? "ddp" : s == 1 ? "zero1" : s == 2 ? "zero2" : "zero3";
    if (s == 0) return LOOM_OK;
    loom_status st;
    if ((st = loom__ds_add_bool(ch, "allgather_partitions", cfg->zero.allgather_partitions)) != LOOM_OK ||
        (st = loom__ds_add_int(ch, "allgather_bucket_size", cfg->zero.allgather_bucket_size)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "reduce_scatter", cfg->zero.reduce_scatter)) != LOOM_OK ||
        (st = loom__ds_add_int(ch, "reduce_bucket_size", cfg->zero.reduce_bucket_size)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "overlap_comm", cfg->zero.overlap_comm)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "contiguous_gradients", cfg->zero.contiguous_gradients || cfg->zero.cpu_offload)) !=
            LOOM_OK ||
        (st = loom__ds_add_bool(ch, "cpu_offload", cfg->zero.cpu_offload)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "load_from_fp32_weights", cfg->zero.load_from_fp32_weights)) != LOOM_OK ||
        (st = loom__ds_add_bool(ch, "elastic_checkpoint", cfg->zero.elastic_checkpoint)) != LOOM_OK)
        return st;
    return s == 3 && z ? map_stage3_keys(c, z, ch) : LOOM_OK;
}

loom_status loom__ds_parse_zero(ds_ctx *c, const cJSON *root)
{
    ds_value sec, off, oo;
    loom_status st = loom__ds_get(c, root, "", "zero_optimization", K_OBJ, 0, &sec);
    if (st != LOOM_OK) return st;
    const cJSON *z = sec.json;
    c->cfg->zero.present = sec.present;
    /* The keys loom acts on and the ones it only type-checks. */
    const char *names[COUNT(zero_keys) + COUNT(ignored_keys)];
    for (size_t i = 0; i < COUNT(names); i++)
        names[i] = i < COUNT(zero_keys) ? zero_keys[i] : ignored_keys[i - COUNT(zero_keys)].key;
    if (z && ((st = loom__ds_check_keys(c, z, "zero_optimization.", names, COUNT(names))) != LOOM_OK ||
              (st = loom__ds_check_types(c, z, "zero_optimization.", ignored_keys, COUNT(ignored_keys))) != LOOM_OK ||
              (st = check_aliases(c, z)) != LOOM_OK))
        return st;
    if ((st = read_zero_keys(c, z, &off, &oo)) != LOOM_OK) return st;
    if (z && (st = read_offload_param(c, z)) != LOOM_OK) return st;
    if (oo.present && (st = read_offload_optimizer(c, &oo, &off)) != LOOM_OK) return st;
    /* HF's ZeRO-3 configs offload to the CPU; loom's zero3 is on the CPU already. */
    if (c->cfg->zero.stage == 3 && c->cfg->zero.cpu_offload) {
        c->cfg->zero.cpu_offload = 0;
        if ((st = loom__ds_note(
                 c,
                 "%s: zero_optimization CPU offload of the optimizer (offload_optimizer.device \"cpu\" "
                 "/ cpu_offload) has no effect: loom's ZeRO-3 runs on the CPU, where the optimizer states "
                 "are host memory already",
                 c->file)) != LOOM_OK)
            return st;
    }
    if ((st = check_zero_stage(c, z)) != LOOM_OK) return st;
    return map_zero_to_sharding(c, z);
}
