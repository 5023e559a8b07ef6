/* test_deepspeed_config.c - ds_config.json: the example configs, "auto" and the command line,
 * conflicts, the strict schema (unknown keys with their path and a suggestion, duplicates,
 * types), ZeRO/optimizer/scheduler/precision mapping, and the merged JSON. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "deepspeed_config.h"
#include "error.h"
#include "test_util.h"

#define CONTAINS(haystack, needle) (strstr((haystack), (needle)) != NULL)
#define COUNT_OF(a) (sizeof(a) / sizeof *(a))

/* A temporary file holding `text`; the path is overwritten by the next call. */
/* Default run arguments (HF's), optionally adjusted by parsing argv. */
static void args_from(loom_args *a, const char **argv)
{
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    loom_args_init(a);
    if (argc && loom_args_parse(a, argc, (char **)argv) != LOOM_OK) {
        fprintf(stderr, "args: %s\n", loom_error_message());
        exit(2);
    }
}

/* Load `text` with `a` and world; the status, and cfg filled on success. */
static loom_status load_text(const char *text, const loom_args *a, int world, loom_ds_config *cfg)
{
    loom_error_clear();
    const char *path = test_temp_file(text);
    loom_status st = loom_ds_config_load(path, a, world, cfg);
    unlink(path);
    return st;
}

/* Expect failure whose message holds every needle (NULL-terminated). */
static int fails_with(const char *text, const loom_args *a, int world, const char *const *needles)
{
    loom_ds_config cfg;
    loom_status st = load_text(text, a, world, &cfg);
    if (st == LOOM_OK) {
        loom_ds_config_free(&cfg);
        fprintf(stderr, "expected failure for: %s\n", text);
        return 0;
    }
    const char *msg = loom_error_message();
    for (; *needles; needles++) {
        if (!CONTAINS(msg, *needles)) {
            fprintf(stderr, "message '%s' lacks '%s'\n", msg, *needles);
            return 0;
        }
    }
    return 1;
}
#define FAILS(text, a, world, ...) fails_with((text), (a), (world), (const char *const[]){__VA_ARGS__, NULL})

static const char *entry(const loom_ds_plugin_choice *c, const char *key)
{
    for (size_t i = 0; i < c->n_entries; i++)
        if (strcmp(c->entries[i].key, key) == 0) return c->entries[i].value ? c->entries[i].value : "(pending)";
    return NULL;
}
#define ENTRY_IS(c, key, text) (entry((c), (key)) && strcmp(entry((c), (key)), (text)) == 0)

/* The merged JSON as text (malloc'd). */
static char *merged_json(const loom_ds_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    loom_status st = loom_ds_config_write_json(cfg, f);
    fclose(f);
    if (st != LOOM_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static const char *example(const char *name)
{
    static char path[4096];
    const char *src = getenv("LOOM_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/examples/deepspeed/%s", src ? src : LOOM_TEST_SOURCE_DIR, name);
    return path;
}

static void test_examples(void)
{
    loom_args a;
    args_from(&a, (const char *[]){"--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                                   "--learning_rate", "3e-5", "--warmup_steps", "10", "--max_grad_norm", "0.5", NULL});
    const char *names[] = {"ds_zero1.json", "ds_zero2.json", "ds_zero2_offload.json", "ds_fp16.json", "ds_zero3.json"};
    const char *sharding[] = {"zero1", "zero2", "zero2", "ddp", "zero3"};
    for (int i = 0; i < 5; i++) {
        loom_ds_config cfg;
        loom_error_clear();
        loom_status st = loom_ds_config_load(example(names[i]), &a, 2, &cfg);
        if (st != LOOM_OK) fprintf(stderr, "%s: %s\n", names[i], loom_error_message());
        CHECK(st == LOOM_OK);
        if (st != LOOM_OK) continue;
        CHECK(cfg.train_micro_batch_size_per_gpu == 4);
        CHECK(cfg.gradient_accumulation_steps == 2);
        CHECK(cfg.train_batch_size == 16);
        CHECK_CLOSE(cfg.gradient_clipping, 0.5, 0, 0);
        CHECK(strcmp(cfg.sharding.plugin, sharding[i]) == 0);
        CHECK(strcmp(cfg.optimizer_choice.plugin, "adamw") == 0);
        CHECK_CLOSE(cfg.optimizer.lr, 3e-5, 0, 0);
        CHECK(ENTRY_IS(&cfg.optimizer_choice, "lr", "3e-05"));
        CHECK(ENTRY_IS(&cfg.optimizer_choice, "beta2", "0.999"));
        CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_max_lr", "3e-05"));
        CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_num_steps", "10"));
        CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_min_lr", "0"));
        CHECK(cfg.fp16.present);
        CHECK(cfg.fp16.enabled == (i == 3)); /* "auto" follows --fp16 (false); ds_fp16 says true */
        CHECK(cfg.fp16.initial_scale_power == 16);
        CHECK(cfg.fp16.explicit_mask == 15u);
        if (i == 1) {
            CHECK(ENTRY_IS(&cfg.sharding, "reduce_bucket_size", "200000000"));
            CHECK(ENTRY_IS(&cfg.sharding, "overlap_comm", "true"));
            CHECK(ENTRY_IS(&cfg.sharding, "cpu_offload", "false"));
            CHECK(ENTRY_IS(&cfg.sharding, "load_from_fp32_weights", "true"));
            CHECK(strcmp(cfg.scheduler_choice.plugin, "warmup_lr") == 0);
            CHECK(cfg.steps_per_print == 2000);
        }
        if (i == 4) {
            /* HF's ZeRO-3 config: its "auto" sizes are left to zero3's defaults. */
            CHECK(ENTRY_IS(&cfg.sharding, "max_live_parameters", "1000000000"));
            CHECK(ENTRY_IS(&cfg.sharding, "max_reuse_distance", "1000000000"));
            CHECK(ENTRY_IS(&cfg.sharding, "gather_16bit_weights_on_model_save", "true"));
            CHECK(!entry(&cfg.sharding, "prefetch_bucket_size") &&
                  !entry(&cfg.sharding, "param_persistence_threshold"));
            CHECK(!entry(&cfg.sharding, "stage3_max_live_parameters"));
            CHECK(ENTRY_IS(&cfg.sharding, "cpu_offload", "false") && cfg.sharding.n_entries == 12);
        }
        if (i == 2) {
            CHECK(cfg.zero.cpu_offload && cfg.zero.offload_pin_memory);
            CHECK(ENTRY_IS(&cfg.sharding, "cpu_offload", "true"));
        }
        if (i == 0 || i == 3) {
            CHECK(strcmp(cfg.scheduler_choice.plugin, "warmup_decay_lr") == 0);
            CHECK(cfg.scheduler.total_steps_pending);
            CHECK(ENTRY_IS(&cfg.scheduler_choice, "total_num_steps", "(pending)"));
            CHECK(loom_ds_config_resolve_steps(&cfg, 1000) == LOOM_OK);
            CHECK(ENTRY_IS(&cfg.scheduler_choice, "total_num_steps", "1000"));
            CHECK(!cfg.scheduler.total_steps_pending);
        }
        if (i == 3) CHECK(cfg.sharding.n_entries == 0);

        /* The merged JSON parses back, has no "auto", and loads again to the same values. */
        char *text = merged_json(&cfg);
        CHECK(text != NULL);
        if (text) {
            CHECK(!CONTAINS(text, "auto"));
            cJSON *j = cJSON_Parse(text);
            CHECK(cJSON_IsObject(j));
            CHECK(cJSON_GetObjectItem(j, "train_batch_size") &&
                  cJSON_GetObjectItem(j, "train_batch_size")->valueint == 16);
            cJSON_Delete(j);
            loom_ds_config again;
            st = load_text(text, &a, 2, &again);
            if (st != LOOM_OK) fprintf(stderr, "%s reloaded: %s\n%s\n", names[i], loom_error_message(), text);
            CHECK(st == LOOM_OK);
            if (st == LOOM_OK) {
                CHECK(strcmp(again.sharding.plugin, cfg.sharding.plugin) == 0);
                CHECK(again.fp16.explicit_mask == cfg.fp16.explicit_mask);
                CHECK(again.fp16.enabled == cfg.fp16.enabled);
                CHECK(again.zero.reduce_bucket_size == cfg.zero.reduce_bucket_size);
                CHECK(strcmp(again.scheduler_choice.plugin, cfg.scheduler_choice.plugin) == 0);
                loom_ds_config_free(&again);
            }
            free(text);
        }
        loom_ds_config_free(&cfg);
    }
    loom_args_free(&a);
}

static void test_empty_and_stage0(void)
{
    loom_args a;
    args_from(&a, NULL);
    loom_ds_config cfg;
    CHECK(load_text("{}", &a, 1, &cfg) == LOOM_OK);
    CHECK(cfg.train_batch_size == 8 && cfg.train_micro_batch_size_per_gpu == 8 && cfg.gradient_accumulation_steps == 1);
    CHECK_CLOSE(cfg.gradient_clipping, 1.0, 0, 0);
    CHECK(strcmp(cfg.sharding.plugin, "ddp") == 0);
    CHECK(cfg.zero.stage == 0 && !cfg.zero.present);
    CHECK(!cfg.optimizer.present && strcmp(cfg.optimizer_choice.plugin, "adamw") == 0); /* --optim adamw_torch */
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "lr", "5e-05"));
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "eps", "1e-08"));
    CHECK(!cfg.fp16.present && !cfg.fp16.enabled && cfg.fp16.initial_scale_power == 32 && cfg.fp16.explicit_mask == 0);
    /* no scheduler section + --lr_scheduler_type linear (default): WarmupDecayLR */
    CHECK(cfg.scheduler.from_args && strcmp(cfg.scheduler_choice.plugin, "warmup_decay_lr") == 0);
    CHECK(strcmp(cfg.scheduler.type, "WarmupDecayLR") == 0);
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_min_lr", "0"));
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_max_lr", "5e-05"));
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_num_steps", "0"));
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "total_num_steps", "(pending)"));
    CHECK(entry(&cfg.scheduler_choice, "warmup_type") == NULL);
    char *text = merged_json(&cfg);
    CHECK(text && CONTAINS(text, "\"zero_allow_untested_optimizer\": true") && CONTAINS(text, "\"AdamW\"") &&
          CONTAINS(text, "\"total_num_steps\": null"));
    free(text);
    CHECK(loom_ds_config_resolve_steps(&cfg, 300) == LOOM_OK);
    text = merged_json(&cfg);
    CHECK(text && CONTAINS(text, "\"total_num_steps\": 300") && !CONTAINS(text, "null"));
    free(text);
    loom_ds_config_free(&cfg);
    loom_ds_config_free(&cfg); /* twice is fine */

    CHECK(load_text("{\"zero_optimization\": {\"stage\": 0}}", &a, 4, &cfg) == LOOM_OK);
    CHECK(cfg.zero.present && cfg.zero.stage == 0 && strcmp(cfg.sharding.plugin, "ddp") == 0);
    CHECK(cfg.train_batch_size == 32);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

static void test_batch_rules(void)
{
    loom_args a;
    args_from(&a, (const char *[]){"--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "4", NULL});
    loom_ds_config cfg;
    CHECK(load_text(
              "{\"train_micro_batch_size_per_gpu\": 8, \"gradient_accumulation_steps\": 4, \"train_batch_size\": 64}",
              &a, 2, &cfg) == LOOM_OK);
    CHECK(cfg.train_batch_size == 64);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"train_micro_batch_size_per_gpu\": 16}", &a, 1, "train_micro_batch_size_per_gpu=16 in",
                "but --per_device_train_batch_size 8"));
    CHECK(FAILS("{\"gradient_accumulation_steps\": 2}", &a, 1, "gradient_accumulation_steps=2 in",
                "--gradient_accumulation_steps 4"));
    CHECK(FAILS("{\"train_batch_size\": 64}", &a, 1, "train_batch_size=64", "world size 1 = 32"));
    CHECK(FAILS("{\"train_batch_size\": \"64\"}", &a, 1,
                "train_batch_size: expected an integer or \"auto\", got a string"));
    CHECK(FAILS("{\"train_batch_size\": 8.5}", &a, 1, "train_batch_size: expected an integer"));
    CHECK(FAILS("{\"train_micro_batch_size_per_gpu\": 0}", &a, 1, "must be >= 1"));
    CHECK(FAILS("{\"gradient_clipping\": 0.5}", &a, 1, "gradient_clipping=0.5 in", "but --max_grad_norm 1"));
    CHECK(load_text("{\"gradient_clipping\": 1.0, \"train_batch_size\": \"auto\"}", &a, 3, &cfg) == LOOM_OK);
    CHECK(cfg.train_batch_size == 96);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"prescale_gradients\": true}", &a, 1, "prescale_gradients", "not supported"));
    CHECK(FAILS("{\"gradient_predivide_factor\": 2.0}", &a, 1, "gradient_predivide_factor", "not supported"));
    CHECK(
        load_text("{\"prescale_gradients\": false, \"gradient_predivide_factor\": 1.0, \"wall_clock_breakdown\": true, "
                  "\"zero_allow_untested_optimizer\": true, \"steps_per_print\": 5}",
                  &a, 1, &cfg) == LOOM_OK);
    CHECK(cfg.wall_clock_breakdown && cfg.zero_allow_untested_optimizer && cfg.steps_per_print == 5);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

static void test_schema_errors(void)
{
    loom_args a;
    args_from(&a, NULL);
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"reduce_bucket_sise\": 5e8}}", &a, 1,
                "unknown key 'zero_optimization.reduce_bucket_sise'",
                "did you mean 'zero_optimization.reduce_bucket_size'?"));
    CHECK(
        FAILS("{\"train_batch_sise\": 8}", &a, 1, "unknown key 'train_batch_sise'", "did you mean 'train_batch_size'"));
    CHECK(FAILS("{\"fp16\": {\"enabeld\": true}}", &a, 1, "'fp16.enabeld'", "'fp16.enabled'"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 5e-5, \"beta\": [0.9, 0.999]}}}", &a, 1,
                "'optimizer.params.beta'", "'optimizer.params.betas'"));
    CHECK(FAILS("{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lrr\": 5e-5}}}", &a, 1,
                "'scheduler.params.warmup_max_lrr'", "'scheduler.params.warmup_max_lr'"));
    CHECK(FAILS(
        "{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\", \"pin_memroy\": true}}}",
        &a, 1, "'zero_optimization.offload_optimizer.pin_memroy'"));
    CHECK(FAILS("{\"zzzzzzzzzzzz\": 1}", &a, 1, "unknown key 'zzzzzzzzzzzz'", "valid keys"));
    CHECK(FAILS("{\"fp16\": {\"enabled\": true, \"enabled\": false}}", &a, 1, "duplicate key 'fp16.enabled'"));
    CHECK(FAILS("{\"steps_per_print\": 1, \"steps_per_print\": 2}", &a, 1, "duplicate key 'steps_per_print'"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": \"2\"}}", &a, 1,
                "zero_optimization.stage: expected an integer, got a string"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 1, \"overlap_comm\": 1}}", &a, 1,
                "zero_optimization.overlap_comm: expected true or false"));
    CHECK(FAILS("{\"zero_optimization\": true}", &a, 1, "zero_optimization: expected an object"));
    CHECK(FAILS("{\"fp16\": {\"enabled\": \"yes\"}}", &a, 1, "fp16.enabled: expected true or false or \"auto\""));
    CHECK(FAILS("{\"fp16\": {\"loss_scale_window\": \"auto\"}}", &a, 1, "fp16.loss_scale_window",
                "\"auto\" is not allowed"));
    CHECK(FAILS("[1, 2]", &a, 1, "expected a JSON object"));
    CHECK(FAILS("{\"fp16\": {\"enabled\": true,}}", &a, 1, "malformed JSON"));
    loom_ds_config cfg;
    loom_error_clear();
    CHECK(loom_ds_config_load("/nonexistent/ds.json", &a, 1, &cfg) != LOOM_OK);
    CHECK(CONTAINS(loom_error_message(), "/nonexistent/ds.json"));
    loom_args_free(&a);
}

static void test_zero(void)
{
    loom_args a;
    args_from(&a, NULL);
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 4}}", &a, 1, "expected 0, 1, 2 or 3, got 4"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": -1}}", &a, 1, "expected 0, 1, 2 or 3, got -1"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 1, \"reduce_scatter\": false}}", &a, 1, "reduce_scatter",
                "stage 1"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 1, \"cpu_offload\": true}}", &a, 1, "requires stage 2"));
    CHECK(FAILS(
        "{\"zero_optimization\": {\"stage\": 2, \"cpu_offload\": false, \"offload_optimizer\": {\"device\": \"cpu\"}}}",
        &a, 1, "disagrees"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\"}}}", &a, 1,
                "\"cpu\" and \"none\""));
    loom_ds_config cfg;
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 1}}", &a, 2, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.sharding.plugin, "zero1") == 0);
    CHECK(ENTRY_IS(&cfg.sharding, "reduce_bucket_size", "500000000") &&
          ENTRY_IS(&cfg.sharding, "allgather_bucket_size", "500000000"));
    CHECK(ENTRY_IS(&cfg.sharding, "reduce_scatter", "true") &&
          ENTRY_IS(&cfg.sharding, "contiguous_gradients", "false"));
    CHECK(ENTRY_IS(&cfg.sharding, "elastic_checkpoint", "true") &&
          ENTRY_IS(&cfg.sharding, "allgather_partitions", "true"));
    CHECK(cfg.sharding.n_entries == 9);
    loom_ds_config_free(&cfg);
    /* cpu_offload forces contiguous gradients (stage2.py); the struct keeps what was written. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2, \"cpu_offload\": true}}", &a, 2, &cfg) == LOOM_OK);
    CHECK(cfg.zero.cpu_offload && !cfg.zero.contiguous_gradients &&
          ENTRY_IS(&cfg.sharding, "contiguous_gradients", "true"));
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"none\"}}}", &a, 2,
                    &cfg) == LOOM_OK);
    CHECK(!cfg.zero.cpu_offload && cfg.zero.offload_optimizer_present);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

/* Stage 3 is the zero3 plugin: stage 1/2's keys, plus the ZeRO-3 tuning keys under their plain
 * names; CPU offload has no effect (zero3 runs on the CPU), NVMe offload and quantized
 * communication are refused. */
static void test_zero3(void)
{
    loom_args a;
    args_from(&a, NULL);
    loom_ds_config cfg;
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 3}}", &a, 2, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.sharding.plugin, "zero3") == 0 && cfg.zero.stage == 3);
    CHECK(ENTRY_IS(&cfg.sharding, "reduce_bucket_size", "500000000") &&
          ENTRY_IS(&cfg.sharding, "allgather_bucket_size", "500000000"));
    CHECK(ENTRY_IS(&cfg.sharding, "reduce_scatter", "true") &&
          ENTRY_IS(&cfg.sharding, "contiguous_gradients", "false"));
    CHECK(ENTRY_IS(&cfg.sharding, "cpu_offload", "false") && ENTRY_IS(&cfg.sharding, "load_from_fp32_weights", "true"));
    CHECK(cfg.sharding.n_entries == 9); /* no stage-3 key given: zero3's defaults */
    CHECK(cfg.n_notes == 0);
    loom_ds_config_free(&cfg);
    /* Either name of a key, passed under the plain one; "auto" is left to zero3. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 3, \"overlap_comm\": true, \"reduce_bucket_size\": 2e8, "
                    "\"stage3_prefetch_bucket_size\": 5e7, \"param_persistence_threshold\": \"auto\", "
                    "\"stage3_model_persistence_threshold\": 0, \"max_live_parameters\": 1e9, "
                    "\"stage3_max_reuse_distance\": 1000, \"stage3_gather_fp16_weights_on_model_save\": false, "
                    "\"sub_group_size\": 1e9, \"zero_hpz_partition_size\": 1, \"mics_shard_size\": -1, "
                    "\"offload_param\": {\"device\": \"none\"}, \"offload_optimizer\": {\"device\": \"none\", "
                    "\"ratio\": 0.5}}}",
                    &a, 2, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.sharding.plugin, "zero3") == 0);
    CHECK(ENTRY_IS(&cfg.sharding, "overlap_comm", "true") &&
          ENTRY_IS(&cfg.sharding, "reduce_bucket_size", "200000000"));
    CHECK(ENTRY_IS(&cfg.sharding, "prefetch_bucket_size", "50000000"));
    CHECK(!entry(&cfg.sharding, "param_persistence_threshold"));
    CHECK(ENTRY_IS(&cfg.sharding, "model_persistence_threshold", "0"));
    CHECK(ENTRY_IS(&cfg.sharding, "max_live_parameters", "1000000000"));
    CHECK(ENTRY_IS(&cfg.sharding, "max_reuse_distance", "1000"));
    CHECK(ENTRY_IS(&cfg.sharding, "gather_16bit_weights_on_model_save", "false"));
    CHECK(!entry(&cfg.sharding, "stage3_prefetch_bucket_size") && !entry(&cfg.sharding, "sub_group_size"));
    CHECK(cfg.sharding.n_entries == 14);
    CHECK(cfg.n_notes == 0);
    /* The merged JSON shows the stage and what zero3 got. */
    char *json = merged_json(&cfg);
    CHECK(json && CONTAINS(json, "\"stage\": 3") && CONTAINS(json, "\"prefetch_bucket_size\": 50000000") &&
          CONTAINS(json, "\"gather_16bit_weights_on_model_save\": false"));
    free(json);
    loom_ds_config_free(&cfg);
    /* The newer name wins over DeepSpeed's older fp16 one. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 3, \"gather_16bit_weights_on_model_save\": true, "
                    "\"stage3_gather_fp16_weights_on_model_save\": false}}",
                    &a, 2, &cfg) == LOOM_OK);
    CHECK(ENTRY_IS(&cfg.sharding, "gather_16bit_weights_on_model_save", "true"));
    loom_ds_config_free(&cfg);
    /* Below stage 3 the keys are DeepSpeed's no-ops and zero2 never sees them. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2, \"stage3_max_live_parameters\": 1e9, "
                    "\"zero_quantized_weights\": true}}",
                    &a, 2, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.sharding.plugin, "zero2") == 0 && !entry(&cfg.sharding, "max_live_parameters"));
    loom_ds_config_free(&cfg);
    /* HF's ZeRO-3 configs offload to the CPU, where loom's zero3 runs: noted, no effect, and
     * zero3 gets no offload. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\", "
                    "\"pin_memory\": true, \"ratio\": 0.3}, \"offload_param\": {\"device\": \"cpu\", "
                    "\"pin_memory\": true}}}",
                    &a, 2, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.sharding.plugin, "zero3") == 0 && ENTRY_IS(&cfg.sharding, "cpu_offload", "false"));
    CHECK(cfg.n_notes == 2);
    CHECK(cfg.n_notes == 2 && CONTAINS(cfg.notes[0], "offload_param.device \"cpu\" has no effect") &&
          CONTAINS(cfg.notes[1], "CPU offload of the optimizer") && CONTAINS(cfg.notes[1], "has no effect"));
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 3, \"cpu_offload\": true, \"cpu_offload_param\": true}}", &a,
                    2, &cfg) == LOOM_OK);
    CHECK(ENTRY_IS(&cfg.sharding, "cpu_offload", "false") && cfg.n_notes == 2);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\"}}}", &a, 1,
                "zero_optimization.offload_optimizer.device \"nvme\"", "NVMe offload) is not supported"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"nvme\", \"nvme_path\": "
                "\"/nvme\"}}}",
                &a, 1, "offload_param.device \"nvme\" with stage 3", "NVMe offload is not supported"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3, \"zero_quantized_gradients\": true}}", &a, 1,
                "zero_optimization.zero_quantized_gradients true with stage 3 is not supported"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3, \"stage3_max_live_parameters\": -1}}", &a, 1,
                "zero_optimization.stage3_max_live_parameters: must be >= 0"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3, \"prefetch_bucket_size\": 1, "
                "\"stage3_prefetch_bucket_size\": 1}}",
                &a, 1, "are one key"));
    loom_args_free(&a);
    /* HF's Trainer refuses its batch size search under ZeRO-3. */
    args_from(&a, (const char *[]){"--auto_find_batch_size", NULL});
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 3}}", &a, 1,
                "zero_optimization.stage 3 with --auto_find_batch_size"));
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2}}", &a, 1, &cfg) == LOOM_OK);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

static void test_optimizer(void)
{
    loom_args a;
    args_from(&a, (const char *[]){"--learning_rate", "1e-4", "--adam_beta2", "0.98", "--weight_decay", "0.01", NULL});
    loom_ds_config cfg;
    /* Adam: adam_w_mode defaults to true -> adamw; false -> adam; type is case-insensitive. */
    CHECK(load_text("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": \"auto\"}}}", &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "adamw") == 0 && cfg.optimizer.adam_w_mode);
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "lr", "0.0001"));
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "beta2", "0.999")); /* absent: DeepSpeed's default */
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "weight_decay", "0"));
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"optimizer\": {\"type\": \"adam\", \"params\": {\"adam_w_mode\": false, \"betas\": \"auto\", "
                    "\"weight_decay\": \"auto\", \"torch_adam\": true}}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "adam") == 0 && !cfg.optimizer.adam_w_mode && cfg.optimizer.torch_adam);
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "beta1", "0.9") && ENTRY_IS(&cfg.optimizer_choice, "beta2", "0.98"));
    CHECK(ENTRY_IS(&cfg.optimizer_choice, "weight_decay", "0.01"));
    char *text = merged_json(&cfg);
    CHECK(text && CONTAINS(text, "\"adam_w_mode\": false") && CONTAINS(text, "\"betas\": [0.9, 0.98]"));
    free(text);
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"optimizer\": {\"type\": \"ADAMW\", \"params\": {\"betas\": [\"auto\", 0.98]}}}", &a, 1, &cfg) ==
          LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "adamw") == 0);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"adam_w_mode\": false}}}", &a, 1, "contradicts"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 3e-5}}}", &a, 1,
                "optimizer.params.lr=3e-05 in", "but --learning_rate 0.0001"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"betas\": [0.9, 0.999]}}}", &a, 1,
                "optimizer.params.betas[1]=0.999", "--adam_beta2 0.98"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"betas\": [0.9]}}}", &a, 1,
                "expected [beta1, beta2]"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"max_grad_norm\": 1.0}}}", &a, 1, "max_grad_norm",
                "use gradient_clipping"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"SGD\", \"params\": {}}}", &a, 1, "\"SGD\" is not supported",
                "Adam, AdamW, Lamb, OneBitAdam"));
    CHECK(FAILS("{\"optimizer\": {\"params\": {}}}", &a, 1, "optimizer.type is missing"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Lamb\", \"params\": {\"adam_w_mode\": true}}}", &a, 1,
                "'optimizer.params.adam_w_mode'"));
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Lamb\", \"params\": {\"max_coeff\": \"auto\"}}}", &a, 1,
                "\"auto\" is not allowed"));
    /* Lamb and OneBitAdam with their own keys. */
    CHECK(load_text("{\"optimizer\": {\"type\": \"Lamb\", \"params\": {\"lr\": \"auto\", \"max_coeff\": 0.3, "
                    "\"min_coeff\": 0.01, "
                    "\"bias_correction\": false}}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "lamb") == 0 && ENTRY_IS(&cfg.optimizer_choice, "max_coeff", "0.3") &&
          ENTRY_IS(&cfg.optimizer_choice, "bias_correction", "false"));
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"optimizer\": {\"type\": \"Lamb\"}, \"fp16\": {\"enabled\": true, \"loss_scale\": 128}}", &a, 1,
                "Lamb needs dynamic loss scaling"));
    CHECK(load_text("{\"optimizer\": {\"type\": \"OneBitAdam\", \"params\": {\"lr\": \"auto\", \"freeze_step\": 400, "
                    "\"cuda_aware\": false, \"comm_backend_name\": \"mpi\"}}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "onebit_adam") == 0 &&
          ENTRY_IS(&cfg.optimizer_choice, "freeze_step", "400") &&
          ENTRY_IS(&cfg.optimizer_choice, "comm_backend_name", "mpi"));
    loom_ds_config_free(&cfg);
    /* Without an optimizer section: --optim decides. */
    loom_args b;
    args_from(&b, (const char *[]){"--optim", "adam", NULL});
    CHECK(load_text("{}", &b, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.optimizer_choice.plugin, "adam") == 0);
    loom_ds_config_free(&cfg);
    loom_args_free(&b);
    loom_args_free(&a);
}

static void test_scheduler(void)
{
    loom_args a;
    args_from(&a, (const char *[]){"--learning_rate", "2e-5", "--warmup_steps", "100", NULL});
    loom_ds_config cfg;
    CHECK(load_text(
              "{\"scheduler\": {\"type\": \"OneCycle\", \"params\": {\"cycle_min_lr\": 1e-5, \"cycle_max_lr\": 1e-3, "
              "\"cycle_first_step_size\": 500, \"cycle_second_step_size\": null, \"cycle_momentum\": false}}}",
              &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.scheduler_choice.plugin, "one_cycle") == 0 && cfg.scheduler_choice.n_entries == 4);
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "cycle_max_lr", "0.001") &&
          ENTRY_IS(&cfg.scheduler_choice, "cycle_momentum", "false"));
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"scheduler\": {\"type\": \"LRRangeTest\", \"params\": {\"lr_range_test_min_lr\": 1e-4, "
                    "\"lr_range_test_step_size\": 10, \"lr_range_test_staircase\": true}}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.scheduler_choice.plugin, "lr_range_test") == 0 &&
          ENTRY_IS(&cfg.scheduler_choice, "lr_range_test_staircase", "true"));
    loom_ds_config_free(&cfg);
    CHECK(
        load_text(
            "{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": 2e-5, \"warmup_num_steps\": 100, "
            "\"warmup_type\": \"linear\"}}}",
            &a, 1, &cfg) == LOOM_OK);
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_type", "linear") &&
          entry(&cfg.scheduler_choice, "warmup_min_lr") == NULL);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": 1e-3}}}", &a, 1,
                "scheduler.params.warmup_max_lr=0.001 in", "--learning_rate 2e-05"));
    CHECK(FAILS("{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_num_steps\": 50}}}", &a, 1,
                "warmup_num_steps=50 in", "--warmup_steps 100"));
    CHECK(FAILS("{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"total_num_steps\": 50}}}", &a, 1,
                "'scheduler.params.total_num_steps'"));
    CHECK(
        FAILS("{\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {}}}", &a, 1, "total_num_steps is required"));
    CHECK(FAILS("{\"scheduler\": {\"type\": \"WarmupLr\"}}", &a, 1, "not supported", "did you mean \"WarmupLR\"?"));
    CHECK(FAILS("{\"scheduler\": {\"type\": \"OneCycle\", \"params\": {\"cycle_min_lr\": \"auto\"}}}", &a, 1,
                "\"auto\" is not allowed"));
    /* Explicit total_num_steps is checked against T. */
    CHECK(load_text("{\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"total_num_steps\": 1000}}}", &a, 1,
                    &cfg) == LOOM_OK);
    CHECK(loom_ds_config_resolve_steps(&cfg, 999) != LOOM_OK && CONTAINS(loom_error_message(), "total_num_steps=1000"));
    CHECK(loom_ds_config_resolve_steps(&cfg, 1000) == LOOM_OK);
    loom_ds_config_free(&cfg);

    /* HF mapping without a scheduler section. */
    loom_args b;
    args_from(&b, (const char *[]){"--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "7", NULL});
    CHECK(load_text("{}", &b, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.scheduler_choice.plugin, "warmup_lr") == 0 && strcmp(cfg.scheduler.type, "WarmupLR") == 0);
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_num_steps", "7") &&
          entry(&cfg.scheduler_choice, "total_num_steps") == NULL);
    CHECK(!cfg.scheduler.total_steps_pending);
    loom_ds_config_free(&cfg);
    loom_args_free(&b);
    args_from(&b, (const char *[]){"--lr_scheduler_type", "cosine", NULL});
    CHECK(load_text("{}", &b, 1, &cfg) == LOOM_OK);
    CHECK(cfg.scheduler_choice.plugin == NULL && !cfg.scheduler.from_args); /* loom's HF cosine stays */
    char *text = merged_json(&cfg);
    CHECK(text && !CONTAINS(text, "scheduler"));
    free(text);
    loom_ds_config_free(&cfg);
    loom_args_free(&b);
    /* warmup_ratio: warmup waits for T, ceil(ratio * T). */
    args_from(&b, (const char *[]){"--warmup_ratio", "0.1", NULL});
    CHECK(load_text("{\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_num_steps\": \"auto\", "
                    "\"total_num_steps\": \"auto\"}}}",
                    &b, 1, &cfg) == LOOM_OK);
    CHECK(cfg.scheduler.warmup_steps_pending && ENTRY_IS(&cfg.scheduler_choice, "warmup_num_steps", "(pending)"));
    CHECK(loom_ds_config_resolve_steps(&cfg, 95) == LOOM_OK);
    CHECK(ENTRY_IS(&cfg.scheduler_choice, "warmup_num_steps", "10") &&
          ENTRY_IS(&cfg.scheduler_choice, "total_num_steps", "95"));
    loom_ds_config_free(&cfg);
    loom_args_free(&b);
    loom_args_free(&a);
}

static void test_precision(void)
{
    loom_args a;
    args_from(&a, NULL);
    loom_ds_config cfg;
    CHECK(
        FAILS("{\"fp16\": {\"enabled\": true}, \"amp\": {\"enabled\": true}}", &a, 1, "fp16.enabled and amp.enabled"));
    CHECK(FAILS("{\"amp\": {\"enabled\": true, \"opt_level\": \"O1\"}, \"zero_optimization\": {\"stage\": 2}}", &a, 1,
                "amp (apex) cannot be combined with ZeRO stage 2"));
    CHECK(FAILS("{\"bf16\": {\"enabled\": true}, \"fp16\": {\"enabled\": true}}", &a, 1,
                "bf16.enabled and fp16.enabled"));
    CHECK(FAILS("{\"amp\": {\"enabled\": true, \"opt_level\": \"O5\"}}", &a, 1, "amp.opt_level \"O5\""));
    CHECK(load_text("{\"amp\": {\"enabled\": true, \"opt_level\": \"O2\", \"keep_batchnorm_fp32\": true, "
                    "\"loss_scale\": \"dynamic\"}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(cfg.amp.enabled && strcmp(cfg.amp.opt_level, "O2") == 0 && cfg.amp.n_passthrough == 2);
    char *text = merged_json(&cfg);
    CHECK(text && CONTAINS(text, "\"keep_batchnorm_fp32\": true") && CONTAINS(text, "\"loss_scale\": \"dynamic\""));
    free(text);
    loom_ds_config_free(&cfg);
    /* Which dynamic-scaler keys were present is kept: only hysteresis here. */
    CHECK(load_text("{\"fp16\": {\"enabled\": true, \"hysteresis\": 4}}", &a, 1, &cfg) == LOOM_OK);
    CHECK(cfg.fp16.enabled && cfg.fp16.explicit_mask == LOOM_DS_FP16_HYSTERESIS && cfg.fp16.hysteresis == 4);
    CHECK(cfg.fp16.initial_scale_power == 32 && cfg.fp16.loss_scale_window == 1000 && cfg.fp16.loss_scale == 0);
    text = merged_json(&cfg);
    CHECK(text && CONTAINS(text, "\"hysteresis\": 4") && !CONTAINS(text, "initial_scale_power"));
    free(text);
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"fp16\": {\"enabled\": \"auto\"}, \"bf16\": {\"enabled\": \"auto\"}}", &a, 1, &cfg) == LOOM_OK);
    CHECK(!cfg.fp16.enabled && !cfg.bf16.enabled && cfg.fp16.explicit_mask == 0);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

/* Today's DeepSpeed: a full ZeRO-2 config (HF's ds_config_zero2.json and the sections a config
 * written for DeepSpeed 0.16 carries) loads to the same plugins and entries as the minimal one,
 * and with its sections at their disabled values says nothing. */
static void test_todays_zero2(void)
{
    loom_args a;
    args_from(&a, (const char *[]){"--per_device_train_batch_size", "4", "--warmup_steps", "10", NULL});
    loom_ds_config full, minimal;
    loom_error_clear();
    loom_status st = loom_ds_config_load(example("ds_zero2_today.json"), &a, 2, &full);
    if (st != LOOM_OK) fprintf(stderr, "ds_zero2_today.json: %s\n", loom_error_message());
    CHECK(st == LOOM_OK);
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}}, "
                    "\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": \"auto\", "
                    "\"warmup_num_steps\": \"auto\"}}}",
                    &a, 2, &minimal) == LOOM_OK);
    if (st == LOOM_OK) {
        CHECK(full.n_notes == 0);
        CHECK(strcmp(full.sharding.plugin, "zero2") == 0 && full.zero.cpu_offload);
        CHECK(ENTRY_IS(&full.sharding, "reduce_bucket_size", "200000000"));
        CHECK(strcmp(full.optimizer_choice.plugin, minimal.optimizer_choice.plugin) == 0);
        for (size_t i = 0; i < minimal.optimizer_choice.n_entries; i++)
            CHECK(ENTRY_IS(&full.optimizer_choice, minimal.optimizer_choice.entries[i].key,
                           minimal.optimizer_choice.entries[i].value));
        CHECK(strcmp(full.scheduler_choice.plugin, "warmup_lr") == 0);
        CHECK(ENTRY_IS(&full.scheduler_choice, "warmup_max_lr", "5e-05") &&
              ENTRY_IS(&full.scheduler_choice, "warmup_num_steps", "10"));
        CHECK(!full.fp16.enabled && !full.bf16.enabled && strcmp(full.grad_dtype, "fp32") == 0);
        CHECK(!full.dataloader_drop_last && !full.use_node_local_storage);
        loom_ds_config_free(&full);
    }
    loom_ds_config_free(&minimal);
    /* DeepSpeed's number rules: 2e8 is an integer where it takes one, "auto" where HF fills it. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 1, \"sub_group_size\": 1e9, \"prefetch_bucket_size\": "
                    "\"auto\", \"zero_hpz_partition_size\": 1, \"zeropp_loco_param\": {\"err_beta\": 0.8}}}",
                    &a, 2, &full) == LOOM_OK);
    CHECK(full.n_notes == 0);
    loom_ds_config_free(&full);
    /* reduce_bucket_size "auto" (HF: hidden_size^2) is a bound loom does not need: the default. */
    CHECK(load_text("{\"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": \"auto\"}}", &a, 2, &full) ==
          LOOM_OK);
    CHECK(ENTRY_IS(&full.sharding, "reduce_bucket_size", "500000000"));
    loom_ds_config_free(&full);
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"sub_group_size\": 2.5}}", &a, 1,
                "zero_optimization.sub_group_size: expected an integer"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"round_robin_gradients\": \"auto\"}}", &a, 1,
                "zero_optimization.round_robin_gradients", "\"auto\" is not allowed"));
    CHECK(FAILS("{\"flops_profiler\": {\"enabled\": 1}}", &a, 1, "flops_profiler.enabled: expected true or false"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"stage3_max_live_parameters\": 1e9, "
                "\"max_live_parameters\": 1e9}}",
                &a, 1, "stage3_max_live_parameters and zero_optimization.max_live_parameters are one key"));
    loom_args_free(&a);
}

/* The keys that map onto run arguments or must name what loom does. */
static void test_todays_mapped_keys(void)
{
    loom_args a, drop;
    args_from(&a, NULL);
    args_from(&drop, (const char *[]){"--dataloader_drop_last", "--save_on_each_node", NULL});
    loom_ds_config cfg;
    /* dataloader_drop_last and checkpoint.use_node_local_storage: the flags' values, which a
     * number in the file must agree with ("auto" takes them). */
    CHECK(load_text("{\"dataloader_drop_last\": true, \"checkpoint\": {\"use_node_local_storage\": true}}", &drop, 1,
                    &cfg) == LOOM_OK);
    CHECK(cfg.dataloader_drop_last && cfg.use_node_local_storage);
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"dataloader_drop_last\": \"auto\"}", &drop, 1, &cfg) == LOOM_OK);
    CHECK(cfg.dataloader_drop_last && cfg.use_node_local_storage);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"dataloader_drop_last\": true}", &a, 1, "dataloader_drop_last=true in",
                "but --dataloader_drop_last false", "use \"auto\" or make them agree"));
    CHECK(FAILS("{\"dataloader_drop_last\": false}", &drop, 1, "dataloader_drop_last=false in",
                "but --dataloader_drop_last true"));
    CHECK(FAILS("{\"checkpoint\": {\"use_node_local_storage\": false}}", &drop, 1,
                "checkpoint.use_node_local_storage=false in", "but --save_on_each_node true"));
    CHECK(FAILS("{\"checkpoint\": {\"tag_validation\": \"Strict\"}}", &a, 1, "checkpoint.tag_validation \"Strict\"",
                "Ignore, Warn or Fail"));
    /* communication_data_type and data_types.grad_accum_dtype: loom reduces and accumulates in
     * the parameters' dtype, which is DeepSpeed's default; naming it is accepted (any case). */
    CHECK(load_text("{\"communication_data_type\": \"fp32\", \"data_types\": {\"grad_accum_dtype\": \"FP32\"}}", &a, 1,
                    &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.grad_dtype, "fp32") == 0);
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"fp16\": {\"enabled\": true}, \"communication_data_type\": \"fp16\", \"data_types\": "
                    "{\"grad_accum_dtype\": \"fp16\"}}",
                    &a, 1, &cfg) == LOOM_OK);
    CHECK(strcmp(cfg.grad_dtype, "fp16") == 0);
    loom_ds_config_free(&cfg);
    CHECK(load_text("{\"bfloat16\": {\"enabled\": true}, \"communication_data_type\": \"bf16\", "
                    "\"communication_data_type\": null}",
                    &a, 1, &cfg) != LOOM_OK); /* duplicate */
    CHECK(load_text("{\"bfloat16\": {\"enabled\": true}, \"communication_data_type\": \"bf16\"}", &a, 1, &cfg) ==
          LOOM_OK);
    CHECK(cfg.bf16.enabled && strcmp(cfg.grad_dtype, "bf16") == 0);
    loom_ds_config_free(&cfg);
    CHECK(FAILS("{\"fp16\": {\"enabled\": true}, \"communication_data_type\": \"fp32\"}", &a, 1,
                "communication_data_type \"fp32\" is not supported",
                "loom reduces gradients in the parameters' "
                "dtype, fp16 in this run"));
    CHECK(FAILS("{\"bf16\": {\"enabled\": true}, \"data_types\": {\"grad_accum_dtype\": \"fp32\"}}", &a, 1,
                "data_types.grad_accum_dtype \"fp32\" is not supported", "accumulates", "bf16 in this run"));
    CHECK(FAILS("{\"communication_data_type\": \"int8\"}", &a, 1, "communication_data_type \"int8\"",
                "expected \"fp32\", \"fp16\" or \"bf16\""));
    CHECK(FAILS("{\"seq_parallel_comm_data_type\": \"fp8\"}", &a, 1, "seq_parallel_comm_data_type \"fp8\""));
    CHECK(FAILS("{\"bf16\": {\"enabled\": true}, \"bfloat16\": {\"enabled\": true}}", &a, 1,
                "bf16 and bfloat16 are one section"));
    loom_args_free(&drop);
    loom_args_free(&a);
}

/* Accepted with no effect: one note when the value asks for something, none at the defaults. */
static void test_todays_no_effect_keys(void)
{
    loom_args a;
    args_from(&a, NULL);
    loom_ds_config cfg;
    CHECK(load_text("{\"flops_profiler\": {\"enabled\": true, \"profile_step\": 1}, \"wandb\": {\"enabled\": true, "
                    "\"project\": \"p\"}, \"activation_checkpointing\": {\"partition_activations\": true, "
                    "\"cpu_checkpointing\": true}, \"zero_optimization\": {\"stage\": 2, \"offload_param\": "
                    "{\"device\": \"cpu\"}}, \"wall_clock_breakdown\": true, \"memory_breakdown\": true, "
                    "\"checkpoint\": {\"load_universal\": true}, \"sparse_attention\": {\"mode\": \"fixed\"}, "
                    "\"tensorboard\": {\"enabled\": false}, \"sparse_gradients\": true}",
                    &a, 1, &cfg) == LOOM_OK);
    const char *expected[] = {"wall_clock_breakdown true has no effect here",
                              "zero_optimization.offload_param.device \"cpu\" has no effect with stage 2",
                              "checkpoint.load_universal true has no effect here",
                              "flops_profiler.enabled true has no effect here",
                              "wandb.enabled true has no effect here",
                              "memory_breakdown true has no effect here",
                              "activation_checkpointing.partition_activations true has no effect here",
                              "activation_checkpointing.cpu_checkpointing true has no effect here",
                              "sparse_attention has no effect here"};
    CHECK(cfg.n_notes == COUNT_OF(expected));
    for (size_t i = 0; i < COUNT_OF(expected) && i < cfg.n_notes; i++) {
        if (!CONTAINS(cfg.notes[i], expected[i])) fprintf(stderr, "note %zu: %s\n", i, cfg.notes[i]);
        CHECK(CONTAINS(cfg.notes[i], expected[i]) && !strchr(cfg.notes[i], '\n'));
    }
    loom_ds_config_free(&cfg);
    /* Every section at its disabled value: silent. */
    CHECK(
        load_text("{\"flops_profiler\": {\"enabled\": false}, \"comet\": {\"enabled\": false, \"online\": null}, "
                  "\"comms_logger\": {\"enabled\": false, \"prof_ops\": [\"all_reduce\"]}, \"eigenvalue\": "
                  "{\"enabled\": false}, \"nebula\": {\"enabled\": false}, \"autotuning\": {\"enabled\": false, "
                  "\"metric\": \"throughput\"}, \"hybrid_engine\": {\"enabled\": false}, \"elasticity\": {\"enabled\": "
                  "false}, \"progressive_layer_drop\": {\"enabled\": false}, \"curriculum_learning\": {\"enabled\": "
                  "false}, \"data_efficiency\": {\"enabled\": false}, \"torch_autocast\": {\"enabled\": false}, "
                  "\"timers\": {\"throughput\": {\"enabled\": true, \"synchronized\": true}}, \"aio\": "
                  "{\"thread_count\": 1}, \"tensor_parallel\": {\"autotp_size\": 1}, \"weight_quantization\": {}, "
                  "\"dump_state\": false, \"disable_allgather\": false, \"graph_harvesting\": true, "
                  "\"use_data_before_expert_parallelism\": false, \"zero_force_ds_cpu_optimizer\": false, "
                  "\"fp16\": {\"enabled\": false, \"auto_cast\": true, \"fp16_master_weights_and_grads\": true}}",
                  &a, 1, &cfg) == LOOM_OK);
    if (cfg.n_notes) fprintf(stderr, "unexpected note: %s\n", cfg.notes[0]);
    CHECK(cfg.n_notes == 0);
    loom_ds_config_free(&cfg);
    loom_args_free(&a);
}

/* Refused in one line: what would change the training and loom cannot do. */
static void test_todays_refusals(void)
{
    loom_args a;
    args_from(&a, NULL);
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": "
                "\"/nvme\"}}}",
                &a, 1, "offload_optimizer.device \"nvme\"", "not supported"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\", \"ratio\": 0.3}}}",
                &a, 1, "offload_optimizer.ratio 0.3", "partial offload needs ZeRO-3"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"offload_param\": {\"device\": \"disk\"}}}", &a, 1,
                "offload_param.device \"disk\""));
    CHECK(FAILS("{\"hybrid_engine\": {\"enabled\": true}}", &a, 1, "hybrid_engine.enabled true is not supported"));
    CHECK(FAILS("{\"elasticity\": {\"enabled\": true, \"max_train_batch_size\": 64}}", &a, 1,
                "elasticity.enabled true is not supported", "batch size"));
    CHECK(FAILS("{\"progressive_layer_drop\": {\"enabled\": true, \"theta\": 0.5}}", &a, 1,
                "progressive_layer_drop.enabled true is not supported"));
    CHECK(FAILS("{\"curriculum_learning\": {\"enabled\": true, \"curriculum_type\": \"seqlen\"}}", &a, 1,
                "curriculum_learning.enabled true is not supported"));
    CHECK(FAILS("{\"data_efficiency\": {\"enabled\": true}}", &a, 1, "data_efficiency.enabled true is not supported"));
    CHECK(FAILS("{\"torch_autocast\": {\"enabled\": true, \"dtype\": \"bfloat16\"}}", &a, 1,
                "torch_autocast.enabled true is not supported"));
    CHECK(FAILS("{\"pipeline\": {\"stages\": 2}}", &a, 1, "pipeline.stages > 1 is not supported"));
    CHECK(FAILS("{\"compression_training\": {\"weight_quantization\": {\"shared_parameters\": {\"enabled\": true}}}}",
                &a, 1, "compression_training with a technique enabled is not supported"));
    CHECK(FAILS("{\"tensor_parallel\": {\"autotp_size\": 2}}", &a, 1, "tensor_parallel.autotp_size > 1"));
    CHECK(FAILS("{\"fp16\": {\"enabled\": true, \"fp16_master_weights_and_grads\": true}}", &a, 1,
                "fp16.fp16_master_weights_and_grads true is not supported"));
    loom_args_free(&a);
}

/* Real typos of the new keys still get their error and the closest key. */
static void test_todays_typos(void)
{
    loom_args a;
    args_from(&a, NULL);
    CHECK(FAILS("{\"activation_checkpoint\": {}}", &a, 1, "unknown key 'activation_checkpoint'",
                "did you mean 'activation_checkpointing'?"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"round_robin_gradient\": true}}", &a, 1,
                "did you mean 'zero_optimization.round_robin_gradients'?"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"stage3_prefetch_bucket_sise\": 5e7}}", &a, 1,
                "did you mean 'zero_optimization.stage3_prefetch_bucket_size'?"));
    CHECK(FAILS("{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\", \"nvme_pth\": "
                "null}}}",
                &a, 1, "did you mean 'zero_optimization.offload_optimizer.nvme_path'?"));
    CHECK(FAILS("{\"flops_profiler\": {\"enable\": true}}", &a, 1, "did you mean 'flops_profiler.enabled'?"));
    CHECK(FAILS("{\"bf16\": {\"immediate_grad_updates\": true}}", &a, 1, "did you mean 'bf16.immediate_grad_update'?"));
    CHECK(FAILS("{\"data_types\": {\"grad_acum_dtype\": \"fp32\"}}", &a, 1,
                "did you mean 'data_types.grad_accum_dtype'?"));
    CHECK(FAILS("{\"dataloader_droplast\": true}", &a, 1, "did you mean 'dataloader_drop_last'?"));
    loom_args_free(&a);
}

int main(void)
{
    test_examples();
    test_empty_and_stage0();
    test_batch_rules();
    test_schema_errors();
    test_zero();
    test_zero3();
    test_optimizer();
    test_scheduler();
    test_precision();
    test_todays_zero2();
    test_todays_mapped_keys();
    test_todays_no_effect_keys();
    test_todays_refusals();
    test_todays_typos();
    return test_finish("test_deepspeed_config");
}
