/* test_args.c - the run-argument parser: HF's defaults and forms, the JSON file, derived
 * defaults, validation messages, JSON output and name suggestions. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "error.h"
#include "test_util.h"

#define PARSE(a, ...) parse_list((a), (const char *[]){__VA_ARGS__, NULL})
#define CONTAINS(haystack, needle) (strstr((haystack), (needle)) != NULL)

static loom_status parse_list(loom_args *a, const char **list)
{
    int argc = 0;
    while (list[argc])
        argc++;
    loom_args_init(a);
    loom_error_clear();
    return loom_args_parse(a, argc, (char **)list);
}

/* A temporary JSON file holding `text`; the path is overwritten by the next call. */
static const char *all_names[] = {
#define LOOM_ARG(kind, name, default_text, status, note, doc) #name,
#include "training_args.def"
#undef LOOM_ARG
};

static void test_defaults(void)
{
    loom_args a;
    loom_args_init(&a);
    CHECK_CLOSE(a.learning_rate, 5e-5, 0, 0);
    CHECK_CLOSE(a.adam_beta1, 0.9, 0, 0);
    CHECK_CLOSE(a.adam_beta2, 0.999, 0, 0);
    CHECK_CLOSE(a.adam_epsilon, 1e-8, 0, 0);
    CHECK_CLOSE(a.weight_decay, 0.0, 0, 0);
    CHECK_CLOSE(a.max_grad_norm, 1.0, 0, 0);
    CHECK_CLOSE(a.num_train_epochs, 3.0, 0, 0);
    CHECK_CLOSE(a.warmup_ratio, 0.0, 0, 0);
    CHECK(a.max_steps == -1);
    CHECK(a.per_device_train_batch_size == 8 && a.per_device_eval_batch_size == 8);
    CHECK(a.per_gpu_train_batch_size == LOOM_ARG_NONE_INT);
    CHECK(a.gradient_accumulation_steps == 1);
    CHECK(a.logging_steps == 500 && a.save_steps == 500);
    CHECK(a.seed == 42 && a.local_rank == -1 && a.ddp_timeout == 1800);
    CHECK(isnan(a.eval_steps) && a.save_total_limit == LOOM_ARG_NONE_INT);
    CHECK(a.do_eval == -1 && a.do_train == 0 && a.disable_tqdm == -1);
    CHECK(a.remove_unused_columns == 1 && a.dataloader_pin_memory == 1 && a.fp16 == 0);
    CHECK(strcmp(a.evaluation_strategy, "no") == 0 && strcmp(a.save_strategy, "steps") == 0);
    CHECK(strcmp(a.lr_scheduler_type, "linear") == 0 && strcmp(a.optim, "adamw_torch") == 0);
    CHECK(strcmp(a.fp16_opt_level, "O1") == 0 && strcmp(a.hub_strategy, "every_save") == 0);
    CHECK(a.output_dir == NULL && a.eval_strategy == NULL && a.report_to.count == 0);
    /* Every row's default text parses: a fresh struct differs from no default. */
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    loom_args_print_nondefault(&a, f);
    fclose(f);
    CHECK(text && size == 0);
    free(text);
    loom_args_free(&a);
}

static void test_command_line_forms(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--learning_rate", "1e-4", "--num_train_epochs=2.5", "--output_dir", "/tmp/out",
                "--per-device-train-batch-size", "4", "--save_total_limit", "3", "--max_steps", "-5",
                "--run_name=") == LOOM_OK);
    CHECK_CLOSE(a.learning_rate, 1e-4, 0, 0);
    CHECK_CLOSE(a.num_train_epochs, 2.5, 0, 0);
    CHECK(a.output_dir && strcmp(a.output_dir, "/tmp/out") == 0);
    CHECK(a.per_device_train_batch_size == 4 && a.save_total_limit == 3 && a.max_steps == -5);
    /* An explicitly empty run_name is "not given": HF derives it from output_dir. */
    CHECK(a.run_name && strcmp(a.run_name, "/tmp/out") == 0);
    loom_args_free(&a);

    CHECK(PARSE(&a, "stray") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "stray"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--seed", "12x") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--seed") && CONTAINS(loom_error_message(), "12x") &&
          CONTAINS(loom_error_message(), "command line"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--learning_rate", "1e-4x") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "learning_rate"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--max_steps=") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--output_dir", "--do_train") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--output_dir needs a value"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--learning_rate", "nan") == LOOM_E_INVALID);
    loom_args_free(&a);
}

static void test_bool_forms(void)
{
    static const char *const yes[] = {"true", "True", "1", "yes", "YES"};
    static const char *const no[] = {"false", "False", "0", "no"};
    loom_args a;
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        CHECK(PARSE(&a, "--do_train", yes[i]) == LOOM_OK && a.do_train == 1);
        loom_args_free(&a);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        CHECK(PARSE(&a, "--overwrite_output_dir", "true", "--overwrite_output_dir", no[i]) == LOOM_OK &&
              a.overwrite_output_dir == 0);
        loom_args_free(&a);
    }
    /* Alone (before another flag or at the end) means true; OPT_BOOL alike. */
    CHECK(PARSE(&a, "--do_train", "--prediction_loss_only=yes", "--disable_tqdm") == LOOM_OK);
    CHECK(a.do_train == 1 && a.prediction_loss_only == 1 && a.disable_tqdm == 1);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--do_eval", "none") == LOOM_OK && a.do_eval == -1);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--do_train", "maybe") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "do_train") && CONTAINS(loom_error_message(), "maybe"));
    loom_args_free(&a);
    /* HfArgumentParser's --no_<name> for a bool that defaults to true. */
    CHECK(PARSE(&a, "--no_remove_unused_columns") == LOOM_OK && a.remove_unused_columns == 0);
    loom_args_free(&a);
}

static void test_lists(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--plugin", "adamw", "zero2", "--seed", "1", "--plugin", "printer", "--report_to=tensorboard") ==
          LOOM_OK);
    CHECK(a.plugin.count == 3);
    if (a.plugin.count == 3)
        CHECK(strcmp(a.plugin.items[0], "adamw") == 0 && strcmp(a.plugin.items[1], "zero2") == 0 &&
              strcmp(a.plugin.items[2], "printer") == 0);
    CHECK(a.seed == 1 && a.report_to.count == 1);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--plugin", "--seed", "3") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--plugin needs at least one value"));
    loom_args_free(&a);
}

static void test_json_file(void)
{
    loom_args a;
    const char *path = test_temp_file("{\n"
                                      "  \"learning_rate\": 0.1,\n"
                                      "  \"per_device_train_batch_size\": 16,\n"
                                      "  \"do_train\": true,\n"
                                      "  \"save_total_limit\": null,\n"
                                      "  \"plugin\": [\"adamw\", \"ddp\"],\n"
                                      "  \"report_to\": \"tensorboard\",\n"
                                      "  \"lr_scheduler_kwargs\": {\"num_cycles\": 2, \"power\": 0.5},\n"
                                      "  \"Learning_Rate\": 7,\n"
                                      "  \"n_layer\": 2,\n"
                                      "  \"adamw\": {\"beta1\": 0.95},\n"
                                      "  \"output_dir\": \"out\"\n"
                                      "}\n");
    CHECK(path && path[0]);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", path);
    /* --config is read first wherever it stands, so the later command line wins. */
    CHECK(PARSE(&a, "--learning_rate", "0.2", "--config", saved, "--plugin", "zero2", "--n_layer", "4") == LOOM_OK);
    CHECK_CLOSE(a.learning_rate, 0.2, 0, 0);
    CHECK(a.per_device_train_batch_size == 16 && a.do_train == 1 && a.save_total_limit == LOOM_ARG_NONE_INT);
    CHECK(a.plugin.count == 1 && strcmp(a.plugin.items[0], "zero2") == 0);
    CHECK(a.report_to.count == 1 && strcmp(a.report_to.items[0], "tensorboard") == 0);
    CHECK(a.lr_scheduler_kwargs && strcmp(a.lr_scheduler_kwargs, "{\"num_cycles\":2,\"power\":0.5}") == 0);
    CHECK(a.config && strcmp(a.config, saved) == 0);
    /* Keys are case-sensitive: Learning_Rate is a plugin's business, not learning_rate. */
    int seen_case = 0, seen_layer = 0, seen_beta = 0;
    CHECK(a.unknown_keys.count == a.unknown_values.count && a.unknown_keys.count == a.unknown_sources.count);
    for (size_t i = 0; i < a.unknown_keys.count; i++) {
        const char *k = a.unknown_keys.items[i], *v = a.unknown_values.items[i], *s = a.unknown_sources.items[i];
        if (strcmp(k, "Learning_Rate") == 0) seen_case = strcmp(v, "7") == 0 && strcmp(s, saved) == 0;
        if (strcmp(k, "n_layer") == 0) {
            seen_layer++;
            CHECK(strcmp(v, "4") == 0 && strcmp(s, "command line") == 0);
        }
        if (strcmp(k, "adamw.beta1") == 0) seen_beta = strcmp(v, "0.95") == 0;
    }
    CHECK(seen_case && seen_layer == 1 && seen_beta);
    loom_args_free(&a);
    unlink(saved);
}

static void test_json_errors(void)
{
    loom_args a;
    const char *path = test_temp_file("{\"seed\": 1, \"learning_rate\": 0.1, \"seed\": 2}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "duplicate key 'seed'") && CONTAINS(loom_error_message(), path));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\"lr_scheduler_kwargs\": {\"power\": 1, \"power\": 2}}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "lr_scheduler_kwargs.power"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\n  \"seed\": 1,\n  \"learning_rate\": 0.1,,\n}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_FORMAT);
    CHECK(CONTAINS(loom_error_message(), path) && CONTAINS(loom_error_message(), ":3:"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\"learning_rate\": \"high\"}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "learning_rate") && CONTAINS(loom_error_message(), path) &&
          CONTAINS(loom_error_message(), "expected a number"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\"learning_rate\": 1e999}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "finite"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\"per_device_train_batch_size\": 2.5}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "expected an integer"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("{\"plugin\": [\"adamw\", 3]}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "plugin") && CONTAINS(loom_error_message(), "array of strings"));
    loom_args_free(&a);
    unlink(path);

    path = test_temp_file("[1, 2]");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_FORMAT);
    CHECK(CONTAINS(loom_error_message(), "object"));
    loom_args_free(&a);
    unlink(path);

    CHECK(PARSE(&a, "--config", "/nonexistent/loom.json") == LOOM_E_IO);
    CHECK(CONTAINS(loom_error_message(), "/nonexistent/loom.json"));
    loom_args_free(&a);
}

static void test_unknown_flags(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--adamw.beta1", "0.95", "--n_layer=4", "--use_fancy", "--seed", "7", "--learnig_rate", "0.1",
                "--n_layer", "6") == LOOM_OK);
    CHECK(a.seed == 7 && a.unknown_keys.count == 4);
    if (a.unknown_keys.count == 4) {
        CHECK(strcmp(a.unknown_keys.items[0], "adamw.beta1") == 0 && strcmp(a.unknown_values.items[0], "0.95") == 0);
        /* A repeated flag keeps one entry, with the last value. */
        CHECK(strcmp(a.unknown_keys.items[1], "n_layer") == 0 && strcmp(a.unknown_values.items[1], "6") == 0);
        CHECK(strcmp(a.unknown_keys.items[2], "use_fancy") == 0 && strcmp(a.unknown_values.items[2], "true") == 0);
        CHECK(strcmp(a.unknown_keys.items[3], "learnig_rate") == 0);
        CHECK(strcmp(a.unknown_sources.items[3], "command line") == 0);
    }
    CHECK_CLOSE(a.learning_rate, 5e-5, 0, 0);
    loom_args_free(&a);
}

static void test_validation(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--evaluation_strategy", "sometimes") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "sometimes") && CONTAINS(loom_error_message(), "no, steps, epoch"));
    loom_args_free(&a);
    /* HF's __post_init__: the plateau schedule steps with the evaluation, and judges by the loss. */
    CHECK(PARSE(&a, "--lr_scheduler_type", "reduce_lr_on_plateau") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "requires an eval strategy"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--lr_scheduler_type", "reduce_lr_on_plateau", "--eval_strategy", "epoch") == LOOM_OK);
    CHECK(a.metric_for_best_model && strcmp(a.metric_for_best_model, "loss") == 0 && a.greater_is_better == 0);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--lr_scheduler_type", "cosine_with_hard_restarts") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "cosine_with_restarts"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--lr_scheduler_type", "cosine") == LOOM_OK);
    loom_args_free(&a);
    static const char *const later_schedules[] = {"inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                                                  "warmup_stable_decay"};
    for (size_t i = 0; i < sizeof later_schedules / sizeof *later_schedules; i++) {
        CHECK(PARSE(&a, "--lr_scheduler_type", later_schedules[i]) == LOOM_OK);
        loom_args_free(&a);
    }
    CHECK(PARSE(&a, "--optim", "lion_8bit") == LOOM_E_UNSUPPORTED);
    CHECK(CONTAINS(loom_error_message(), "--optim lion_8bit") && CONTAINS(loom_error_message(), "8 bits") &&
          CONTAINS(loom_error_message(), "lion_32bit"));
    loom_args_free(&a);
    /* HF's default with torch >= 2.8: accepted and kept under HF's name (docs/semantics/optimizers.md#optim-names). */
    CHECK(PARSE(&a, "--optim", "adamw_torch_fused") == LOOM_OK && strcmp(a.optim, "adamw_torch_fused") == 0);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--optim", "galore_adamw") == LOOM_E_UNSUPPORTED);
    CHECK(CONTAINS(loom_error_message(), "GaLore") && !CONTAINS(loom_error_message(), "not supported yet"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--optim", "adamw_fast") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "adamw_torch, adamw_hf, adam, sgd"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--optim", "adamw") == LOOM_OK && strcmp(a.optim, "adamw_torch") == 0);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--save_strategy", "best") == LOOM_E_UNSUPPORTED);
    loom_args_free(&a);

    CHECK(PARSE(&a, "--gradient_accumulation_steps", "0") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--gradient_accumulation_steps 0") && CONTAINS(loom_error_message(), ">= 1"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--per_device_eval_batch_size", "0") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--warmup_ratio", "1.5") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "warmup_ratio"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--learning_rate", "-1e-3") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--num_train_epochs", "-1") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--logging_steps", "0") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--logging_strategy", "no", "--logging_steps", "0") == LOOM_OK);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--logging_strategy", "no", "--logging_steps", "0", "--evaluation_strategy", "steps") ==
          LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "eval_steps"));
    loom_args_free(&a);

    const char *path = test_temp_file("{\"save_strategy\": \"sometimes\"}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), path));
    loom_args_free(&a);
    unlink(path);
}

static void test_status_columns(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--past_index", "1") == LOOM_E_UNSUPPORTED);
    CHECK(CONTAINS(loom_error_message(), "--past_index is not supported yet (past_index (mems): later)"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--past_index", "-1") == LOOM_OK);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--sortish_sampler", "--group_by_length") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--sortish_sampler and --group_by_length are both set"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--fp16", "--bf16") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--fp16 and --bf16 are both set"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--fp16", "--fp16_backend", "apex", "--fp16_opt_level", "O2") == LOOM_OK);
    /* HF's __post_init__: the deprecated name sets half_precision_backend and stays as given. */
    CHECK(!strcmp(a.half_precision_backend, "apex") && !strcmp(a.fp16_backend, "apex"));
    loom_args_free(&a);
    /* HF's dataclass default "" of debug, mp_parameters and v4's fsdp is their default here too. */
    CHECK(PARSE(&a, "--debug", "", "--mp_parameters", "", "--fsdp", "") == LOOM_OK);
    loom_args_free(&a);
    /* HF's older flag selects the optimizer, as --optim adafactor does. */
    CHECK(PARSE(&a, "--adafactor") == LOOM_OK);
    CHECK(a.optim && strcmp(a.optim, "adafactor") == 0);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--label_smoothing_factor", "0.1") == LOOM_OK && a.label_smoothing_factor == 0.1);
    loom_args_free(&a);
    const char *path = test_temp_file("{\"model_parallel\": true}");
    CHECK(PARSE(&a, "--config", path) == LOOM_E_UNSUPPORTED);
    CHECK(CONTAINS(loom_error_message(), "--model_parallel") && CONTAINS(loom_error_message(), path));
    loom_args_free(&a);
    unlink(path);
    /* NO_EFFECT: accepted with a warning. */
    CHECK(PARSE(&a, "--dataloader_num_workers", "4", "--push_to_hub", "--report_to", "wandb") == LOOM_OK);
    CHECK(a.dataloader_num_workers == 4);
    loom_args_free(&a);
}

/* FSDP's strategies and FairScale's modes on loom's sharding plugins, offload included. */
static void test_fsdp_sharding(void)
{
    static const struct {
        const char *flag, *value, *config, *plugin;
    } cases[] = {
        {"--fsdp", "full_shard", NULL, "zero3"},
        {"--fsdp", "full_shard auto_wrap", NULL, "zero3"},
        {"--fsdp", "hybrid_shard", NULL, "zero3"},
        {"--fsdp", "auto_wrap", NULL, "zero3"}, /* accelerate's default strategy, full_shard */
        {"--fsdp", "shard_grad_op", NULL, "zero2"},
        {"--fsdp", "shard_grad_op offload", NULL, "zero2"},
        {"--fsdp", "hybrid_shard_zero2", NULL, "zero2"},
        {"--fsdp", "no_shard", NULL, "ddp"},
        /* FSDP2's reshard_after_forward true is full_shard's resharding. */
        {"--fsdp", "shard_grad_op", "{\"reshard_after_forward\": true}", "zero3"},
        {"--fsdp", "hybrid_shard_zero2", "{\"fsdp_reshard_after_forward\": \"true\"}", "zero3"},
        {"--fsdp", "shard_grad_op", "{\"reshard_after_forward\": false}", "zero2"},
        {"--fsdp", "no_shard", "{\"reshard_after_forward\": true}", "ddp"},
        {"--fsdp", "full_shard",
         "{\"forward_prefetch\": true, \"limit_all_gathers\": true, \"use_orig_params\": "
         "true, \"sync_module_states\": true, \"backward_prefetch\": \"backward_pre\"}",
         "zero3"},
        {"--sharded_ddp", "zero_dp_3", NULL, "zero3"},
        {"--sharded_ddp", "zero_dp_3 auto_wrap", NULL, "zero3"},
        {"--sharded_ddp", "zero_dp_2", NULL, "zero2"},
        {"--sharded_ddp", "simple", NULL, "sharded_ddp"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        loom_args a;
        loom_status st = cases[i].config ? PARSE(&a, cases[i].flag, cases[i].value, "--fsdp_config", cases[i].config)
                                         : PARSE(&a, cases[i].flag, cases[i].value);
        const char *got = st == LOOM_OK ? loom__fsdp_sharding(&a) : NULL;
        if (!got || strcmp(got, cases[i].plugin) != 0)
            fprintf(stderr, "%s '%s' %s: got %s (%s)\n", cases[i].flag, cases[i].value,
                    cases[i].config ? cases[i].config : "", got ? got : "an error", loom_error_message());
        CHECK(got && strcmp(got, cases[i].plugin) == 0);
        loom_args_free(&a);
    }
    /* Offload with the strategies that shard the parameters has no effect on the CPU, where zero3
     * runs: the same plugin, with the warning zero2's offload gets. */
    static const struct {
        const char *flag, *value, *config;
    } offload[] = {
        {"--fsdp", "full_shard offload", NULL},
        {"--fsdp", "hybrid_shard offload", NULL},
        {"--fsdp", "offload auto_wrap", NULL},
        {"--fsdp", "full_shard", "{\"offload_params\": true}"},
        {"--fsdp", "shard_grad_op offload", "{\"reshard_after_forward\": true}"},
        {"--sharded_ddp", "zero_dp_3 offload", NULL},
    };
    for (size_t i = 0; i < sizeof offload / sizeof *offload; i++) {
        loom_args a;
        loom_status st = offload[i].config
                             ? PARSE(&a, offload[i].flag, offload[i].value, "--fsdp_config", offload[i].config)
                             : PARSE(&a, offload[i].flag, offload[i].value);
        CHECK(st == LOOM_OK && strcmp(loom__fsdp_sharding(&a), "zero3") == 0);
        loom_args_free(&a);
    }
}

static void test_derived(void)
{
    loom_args a;
    CHECK(parse_list(&a, (const char *[]){NULL}) == LOOM_OK);
    CHECK(a.do_eval == -1 && a.eval_steps == 500 && a.run_name == NULL);
    CHECK(a.logging_dir && strncmp(a.logging_dir, "runs/", 5) == 0);
    loom_args_free(&a);

    CHECK(PARSE(&a, "--evaluation_strategy", "steps", "--logging_steps", "50", "--output_dir", "/tmp/run1") == LOOM_OK);
    CHECK(a.do_eval == 1 && a.eval_steps == 50);
    CHECK(a.run_name && strcmp(a.run_name, "/tmp/run1") == 0);
    char host[256] = "", suffix[300];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    snprintf(suffix, sizeof suffix, "_%s", host);
    CHECK(a.logging_dir && strncmp(a.logging_dir, "/tmp/run1/runs/", 15) == 0);
    CHECK(a.logging_dir && strlen(a.logging_dir) > strlen(suffix) &&
          strcmp(a.logging_dir + strlen(a.logging_dir) - strlen(suffix), suffix) == 0);
    loom_args_free(&a);

    CHECK(PARSE(&a, "--evaluation_strategy", "epoch", "--do_eval", "false", "--eval_steps", "7") == LOOM_OK);
    CHECK(a.do_eval == 0 && a.eval_steps == 7);
    loom_args_free(&a);

    CHECK(PARSE(&a, "--eval_strategy", "epoch") == LOOM_OK);
    CHECK(strcmp(a.evaluation_strategy, "epoch") == 0 && a.do_eval == 1);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--eval_strategy", "epoch", "--evaluation_strategy", "steps") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "disagree"));
    loom_args_free(&a);
    const char *path = test_temp_file("{\"evaluation_strategy\": \"steps\"}");
    CHECK(PARSE(&a, "--config", path, "--eval_strategy", "epoch") == LOOM_OK);
    CHECK(strcmp(a.evaluation_strategy, "epoch") == 0);
    loom_args_free(&a);
    unlink(path);

    CHECK(PARSE(&a, "--per_gpu_train_batch_size", "16", "--logging_dir", "/tmp/logs") == LOOM_OK);
    CHECK(a.per_device_train_batch_size == 16 && strcmp(a.logging_dir, "/tmp/logs") == 0);
    loom_args_free(&a);

    CHECK(PARSE(&a, "--lr_scheduler_kwargs", "{\"num_cycles\": 2}") == LOOM_OK);
    CHECK(strcmp(a.lr_scheduler_kwargs, "{\"num_cycles\":2}") == 0);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--lr_scheduler_kwargs", "[2]") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "lr_scheduler_kwargs"));
    loom_args_free(&a);

    setenv("LOCAL_RANK", "3", 1);
    CHECK(PARSE(&a, "--local_rank", "0") == LOOM_OK && a.local_rank == 3);
    loom_args_free(&a);
    unsetenv("LOCAL_RANK");
}

static void test_write_json(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--learning_rate", "0.001", "--plugin", "adamw", "--adamw.beta1", "0.95", "--hub_token", "secret",
                "--lr_scheduler_kwargs", "{\"power\": 2, \"lr_end\": 1e-07}") == LOOM_OK);
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    CHECK(f && loom_args_write_json(&a, f) == LOOM_OK);
    fclose(f);
    /* HF's AcceleratorConfig dict sorts first when the flag is not given (HF writes it always). */
    CHECK(text && strncmp(text, "{\n  \"accelerator_config\": {\n", 28) == 0);
    CHECK(CONTAINS(text, "\n  \"adafactor\": false,\n") && CONTAINS(text, "\"even_batches\": true,"));
    CHECK(CONTAINS(text, "\n  \"adam_epsilon\": 1e-08,\n") && CONTAINS(text, "\n  \"num_train_epochs\": 3.0,\n"));
    CHECK(CONTAINS(text, "\n  \"plugin\": [\n    \"adamw\"\n  ],\n") && CONTAINS(text, "\"label_names\": [],"));
    CHECK(!CONTAINS(text, "secret"));
    cJSON *root = cJSON_Parse(text);
    CHECK(cJSON_IsObject(root));
    if (root) {
        CHECK((size_t)cJSON_GetArraySize(root) == sizeof all_names / sizeof *all_names + 1);
        const char *prev = "";
        for (const cJSON *c = root->child; c; c = c->next) {
            CHECK(strcmp(prev, c->string) < 0);
            prev = c->string;
        }
        CHECK_CLOSE(cJSON_GetObjectItem(root, "learning_rate")->valuedouble, 0.001, 0, 0);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "save_total_limit")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(root, "do_eval")));
        CHECK(cJSON_GetObjectItem(root, "seed")->valueint == 42);
        const cJSON *kwargs = cJSON_GetObjectItem(root, "lr_scheduler_kwargs");
        CHECK(cJSON_IsObject(kwargs) && strcmp(kwargs->child->string, "lr_end") == 0);
        const cJSON *flags = cJSON_GetObjectItem(root, "plugin_flags");
        CHECK(cJSON_IsString(cJSON_GetObjectItem(flags, "adamw.beta1")));
        CHECK(strcmp(cJSON_GetObjectItem(root, "hub_token")->valuestring, "<HUB_TOKEN>") == 0);
    }
    cJSON_Delete(root);
    free(text);
    loom_args_free(&a);
}

/* The JSON text of one argument as training_args.json writes it ("\"logging_steps\": 500"). */
static int json_has(const loom_args *a, const char *entry)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    int ok = f && loom_args_write_json(a, f) == LOOM_OK;
    if (f) fclose(f);
    ok = ok && text && CONTAINS(text, entry);
    free(text);
    return ok;
}

/* HF's logging_steps, eval_steps and save_steps are floats: below 1 a ratio of the run's total
 * steps, from 1 up a whole number of steps (docs/semantics/trainer.md#strategies). */
static void test_step_ratios(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--logging_steps", "0.25", "--save_steps", "0.5", "--evaluation_strategy", "steps") == LOOM_OK);
    CHECK(a.logging_steps == 0.25 && a.save_steps == 0.5 && a.eval_steps == 0.25);
    CHECK(json_has(&a, "\n  \"logging_steps\": 0.25,\n") && json_has(&a, "\n  \"save_steps\": 0.5,\n"));
    CHECK(json_has(&a, "\n  \"eval_steps\": 0.25,\n"));
    loom_args_free(&a);
    /* Whole numbers stay integers in training_args.json, "500.0" as much as "500". */
    CHECK(PARSE(&a, "--save_steps", "20.0", "--eval_steps", "1") == LOOM_OK);
    CHECK(json_has(&a, "\n  \"logging_steps\": 500,\n") && json_has(&a, "\n  \"save_steps\": 20,\n"));
    CHECK(json_has(&a, "\n  \"eval_steps\": 1,\n"));
    loom_args_free(&a);
    const char *path = test_temp_file("{\"logging_steps\": 0.1, \"eval_steps\": null, \"save_steps\": 30}");
    CHECK(PARSE(&a, "--config", path) == LOOM_OK);
    CHECK(a.logging_steps == 0.1 && a.eval_steps == 0.1 && a.save_steps == 30);
    loom_args_free(&a);
    unlink(path);

    /* The run's length resolves a ratio: HF's math.ceil(max_steps * ratio). */
    CHECK(loom_args_steps(0.25, 20) == 5 && loom_args_steps(0.1, 7) == 1 && loom_args_steps(0.3, 7) == 3);
    CHECK(loom_args_steps(0.5, 0) == 0 && loom_args_steps(500, 20) == 500 && loom_args_steps(1, 20) == 1);

    CHECK(PARSE(&a, "--logging_steps", "1.5") == LOOM_E_INVALID);
    CHECK(
        CONTAINS(loom_error_message(), "--logging_steps 1.5 on the command line: must be an integer if bigger than 1"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--save_steps", "-0.1") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--save_steps -0.1") && CONTAINS(loom_error_message(), "must be > 0"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--evaluation_strategy", "steps", "--eval_steps", "2.5") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--eval_steps 2.5"));
    loom_args_free(&a);
    CHECK(PARSE(&a, "--logging_steps", "1e30") == LOOM_E_INVALID);
    loom_args_free(&a);
    CHECK(PARSE(&a, "--logging_steps", "ten") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--logging_steps: expected a number of steps or a ratio in (0, 1)"));
    loom_args_free(&a);
    /* As HF: only the "steps" strategy reads (and checks) its interval. */
    CHECK(PARSE(&a, "--save_strategy", "no", "--save_steps", "2.5") == LOOM_OK);
    loom_args_free(&a);

    /* load_best_model_at_end: ratios against ratios, counts against counts, never mixed. */
    static const char *const best[] = {"--load_best_model_at_end", "--evaluation_strategy", "steps"};
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "0.25", "--save_steps", "0.5") == LOOM_OK);
    loom_args_free(&a);
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "0.1", "--save_steps", "0.3") == LOOM_OK);
    loom_args_free(&a);
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "0.2", "--save_steps", "0.5") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "--save_steps 0.5 to be a multiple of --eval_steps 0.2"));
    loom_args_free(&a);
    /* HF compares the numbers first: 10 % 0.25 == 0 passes, 10 % 0.3 is a ratio mixed with a count. */
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "0.25", "--save_steps", "10") == LOOM_OK);
    loom_args_free(&a);
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "0.3", "--save_steps", "10") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "a ratio and a count of steps"));
    loom_args_free(&a);
    CHECK(PARSE(&a, best[0], best[1], best[2], "--eval_steps", "4", "--save_steps", "6") == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "round multiple of --eval_steps"));
    loom_args_free(&a);
}

static void test_print_nondefault(void)
{
    loom_args a;
    CHECK(PARSE(&a, "--learning_rate", "0.001", "--plugin", "adamw", "zero2", "--output_dir", "o") == LOOM_OK);
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    loom_args_print_nondefault(&a, f);
    fclose(f);
    CHECK(CONTAINS(text, "  --learning_rate 0.001\n") && CONTAINS(text, "  --plugin adamw zero2\n"));
    CHECK(CONTAINS(text, "  --run_name o\n") && !CONTAINS(text, "--seed") && !CONTAINS(text, "--adam_beta1"));
    free(text);
    loom_args_free(&a);
}

static void test_closest_name(void)
{
    const size_t n = sizeof all_names / sizeof *all_names;
    const char *s = loom_closest_name("learnig_rate", all_names, n);
    CHECK(s && strcmp(s, "learning_rate") == 0);
    s = loom_closest_name("--per_device_train_bach_size", all_names, n);
    CHECK(s && strcmp(s, "per_device_train_batch_size") == 0);
    CHECK(loom_closest_name("banana", all_names, n) == NULL);
    static const char *const tie[] = {"ab", "ac"};
    s = loom_closest_name("aa", tie, 2);
    CHECK(s && strcmp(s, "ab") == 0);
    /* Short words still allow two edits; long ones a third of their length. */
    static const char *const one[] = {"seed"};
    CHECK(loom_closest_name("sd", one, 1) != NULL && loom_closest_name("s", one, 1) == NULL);
}

int main(void)
{
    unsetenv("LOCAL_RANK");
    test_defaults();
    test_command_line_forms();
    test_bool_forms();
    test_lists();
    test_json_file();
    test_json_errors();
    test_unknown_flags();
    test_validation();
    test_fsdp_sharding();
    test_status_columns();
    test_derived();
    test_write_json();
    test_step_ratios();
    test_print_nondefault();
    test_closest_name();
    return test_finish("test_args");
}
