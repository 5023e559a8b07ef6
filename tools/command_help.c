/*
 * command_help.c - `loom train|evaluate|predict --help`: the arguments grouped as HF's
 * TrainingArguments documentation groups them, wrapped to the terminal (80 columns when the
 * output is not one), and the text wrapper the other commands' usages share.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"

int loom_help_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
    return 80;
}

void loom_help_wrap(FILE *out, const char *text, int column, int indent, int width)
{
    /* `column` characters are on the line already; continuation lines start at `indent`. */
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        size_t word = strcspn(p, " ");
        if (!word) break;
        if (column > indent && column + 1 + (int)word > width) {
            fprintf(out, "\n%*s", indent, "");
            column = indent;
        } else if (column > indent) {
            fputc(' ', out);
            column++;
        } else if (column < indent) {
            fprintf(out, "%*s", indent - column, "");
            column = indent;
        }
        fwrite(p, 1, word, out);
        column += (int)word;
        p += word;
    }
    fputc('\n', out);
}

/* The groups of HF's documentation, plus loom's own and the generation keys of predict. */
typedef struct help_group {
    const char *title;
    const char *const *names;
} help_group;

static const char *const g_run[] = {"config", "output_dir", "overwrite_output_dir", "do_train", "do_eval",
                                    "do_predict", "model", "model_name_or_path", "tokenizer_name", "plugin",
                                    "plugin_dir", "train_file", "validation_file", "test_file", "block_size",
                                    "num_threads", NULL};
static const char *const g_train[] = {"per_device_train_batch_size",
                                      "per_gpu_train_batch_size",
                                      "gradient_accumulation_steps",
                                      "num_train_epochs",
                                      "max_steps",
                                      "learning_rate",
                                      "weight_decay",
                                      "adam_beta1",
                                      "adam_beta2",
                                      "adam_epsilon",
                                      "max_grad_norm",
                                      "optim",
                                      "optim_args",
                                      "adafactor",
                                      "lr_scheduler_type",
                                      "lr_scheduler_kwargs",
                                      "warmup_ratio",
                                      "warmup_steps",
                                      "seed",
                                      "data_seed",
                                      "full_determinism",
                                      "resume_from_checkpoint",
                                      "ignore_data_skip",
                                      "dataloader_drop_last",
                                      "dataloader_num_workers",
                                      "dataloader_pin_memory",
                                      "remove_unused_columns",
                                      "label_names",
                                      "label_smoothing_factor",
                                      "group_by_length",
                                      "train_sampling_strategy",
                                      "length_column_name",
                                      "past_index",
                                      "gradient_checkpointing",
                                      "gradient_checkpointing_kwargs",
                                      "auto_find_batch_size",
                                      "neftune_noise_alpha",
                                      "average_tokens_across_devices",
                                      "model_parallel",
                                      "optim_target_modules",
                                      "dataloader_persistent_workers",
                                      "dataloader_prefetch_factor",
                                      "accelerator_config",
                                      "split_batches",
                                      "dispatch_batches",
                                      "use_liger_kernel",
                                      "liger_kernel_config",
                                      "torch_empty_cache_steps",
                                      "use_cache",
                                      NULL};
static const char *const g_eval[] = {"evaluation_strategy",
                                     "eval_strategy",
                                     "eval_steps",
                                     "eval_delay",
                                     "eval_on_start",
                                     "per_device_eval_batch_size",
                                     "per_gpu_eval_batch_size",
                                     "eval_accumulation_steps",
                                     "prediction_loss_only",
                                     "load_best_model_at_end",
                                     "metric_for_best_model",
                                     "greater_is_better",
                                     "include_for_metrics",
                                     "include_inputs_for_metrics",
                                     "batch_eval_metrics",
                                     "eval_do_concat_batches",
                                     "eval_use_gather_object",
                                     "use_legacy_prediction_loop",
                                     "jit_mode_eval",
                                     NULL};
static const char *const g_log[] = {"logging_dir",
                                    "logging_strategy",
                                    "logging_steps",
                                    "logging_first_step",
                                    "logging_nan_inf_filter",
                                    "log_on_each_node",
                                    "report_to",
                                    "run_name",
                                    "disable_tqdm",
                                    "include_tokens_per_second",
                                    "include_num_input_tokens_seen",
                                    "skip_memory_metrics",
                                    "debug",
                                    "project",
                                    "trackio_space_id",
                                    "ray_scope",
                                    NULL};
static const char *const g_save[] = {"save_strategy",
                                     "save_steps",
                                     "save_total_limit",
                                     "save_safetensors",
                                     "save_on_each_node",
                                     "save_only_model",
                                     "push_to_hub",
                                     "hub_model_id",
                                     "hub_strategy",
                                     "hub_token",
                                     "hub_private_repo",
                                     "hub_always_push",
                                     "hub_revision",
                                     "push_to_hub_model_id",
                                     "push_to_hub_organization",
                                     "push_to_hub_token",
                                     "enable_jit_checkpoint",
                                     NULL};
static const char *const g_precision[] = {"fp16",
                                          "fp16_backend",
                                          "fp16_opt_level",
                                          "fp16_full_eval",
                                          "bf16",
                                          "bf16_full_eval",
                                          "no_cuda",
                                          "use_cpu",
                                          "torch_compile",
                                          "torch_compile_backend",
                                          "torch_compile_mode",
                                          "half_precision_backend",
                                          "tf32",
                                          "torchdynamo",
                                          "use_ipex",
                                          "use_mps_device",
                                          NULL};
static const char *const g_distributed[] = {"local_rank",
                                            "ddp_backend",
                                            "ddp_timeout",
                                            "ddp_bucket_cap_mb",
                                            "ddp_find_unused_parameters",
                                            "sharded_ddp",
                                            "fsdp",
                                            "fsdp_config",
                                            "tpu_num_cores",
                                            "tpu_metrics_debug",
                                            "ddp_broadcast_buffers",
                                            "xpu_backend",
                                            "fsdp_min_num_params",
                                            "fsdp_transformer_layer_cls_to_wrap",
                                            "tp_size",
                                            "parallelism_config",
                                            "mp_parameters",
                                            NULL};
static const char *const g_deepspeed[] = {"deepspeed", NULL};
static const char *const g_generate[] = {"predict_with_generate",
                                         "generation_max_length",
                                         "generation_num_beams",
                                         "max_length",
                                         "num_beams",
                                         "length_penalty",
                                         "early_stopping",
                                         "generation_config",
                                         "generate",
                                         "prompt",
                                         "max_new_tokens",
                                         "do_sample",
                                         "temperature",
                                         "top_k",
                                         "top_p",
                                         NULL};

static const help_group groups[] = {
    {"Run, model and data", g_run}, {"Training", g_train},   {"Evaluation", g_eval},
    {"Logging", g_log},             {"Saving", g_save},      {"Precision", g_precision},
    {"Distributed", g_distributed}, {"DeepSpeed", g_deepspeed}, {"Prediction and generation", g_generate},
};

typedef struct arg_row {
    const char *name, *kind, *default_text, *note, *doc;
    int status;
} arg_row;

static const arg_row rows[] = {
#define LOOM_ARG(kind, name, default_text, status, note, doc) {#name, #kind, default_text, note, doc, status},
#include "training_args.def"
#undef LOOM_ARG
};

static const char *metavar(const char *kind)
{
    if (!strcmp(kind, "BOOL")) return "";
    if (!strcmp(kind, "OPT_BOOL")) return " BOOL";
    if (!strcmp(kind, "INT") || !strcmp(kind, "OPT_INT")) return " INT";
    if (!strcmp(kind, "FLOAT")) return " FLOAT";
    if (!strcmp(kind, "STEPS") || !strcmp(kind, "OPT_STEPS")) return " STEPS";
    if (!strcmp(kind, "LIST")) return " STR...";
    return " STR";
}

static int in_group(const char *name, const char *const *names)
{
    for (; *names; names++)
        if (!strcmp(*names, name)) return 1;
    return 0;
}

static int grouped(const char *name)
{
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
        if (in_group(name, groups[g].names)) return 1;
    return 0;
}

static void print_row(const arg_row *r, int width)
{
    enum { COLUMN = 32 };
    char head[128], text[1024];
    int n = snprintf(head, sizeof head, "  --%s%s", r->name, metavar(r->kind));
    printf("%s", head);
    const char *def = *r->default_text ? r->default_text : "none";
    if (!strcmp(r->kind, "LIST") && !*r->default_text) def = "empty";
    const char *status = r->status == LOOM_ARG_NOT_YET ? " Not supported yet."
                         : r->status == LOOM_ARG_NO_EFFECT ? " No effect here"
                                                           : "";
    /* A doc that says its default itself ("default: seed") is not given the table's too. */
    const int says_default = strstr(r->doc, "default:") != NULL;
    snprintf(text, sizeof text, "%s%s%s%s.%s%s%s%s", r->doc, says_default ? "" : " (default: ", says_default ? "" : def,
             says_default ? "" : ")", status, r->status == LOOM_ARG_NO_EFFECT && *r->note ? ": " : "",
             r->status == LOOM_ARG_NO_EFFECT ? r->note : "", r->status == LOOM_ARG_NO_EFFECT ? "." : "");
    if (n >= COLUMN - 1) {
        printf("\n");
        n = 0;
    }
    loom_help_wrap(stdout, text, n, COLUMN, width);
}

void loom_help_train(const char *mode)
{
    int width = loom_help_width();
    if (!strcmp(mode, "train")) {
        printf("usage: loom train --output_dir DIR --train_file FILE [--ARGUMENT VALUE ...]\n\n");
        loom_help_wrap(stdout,
                       "Train a model. Arguments take the names and defaults of Hugging Face's "
                       "TrainingArguments; --config FILE.json reads them from a JSON object (a run's "
                       "training_args.json works), and the command line wins over it.",
                       0, 0, width);
    } else if (!strcmp(mode, "evaluate")) {
        printf("usage: loom evaluate --model_name_or_path DIR --validation_file FILE\n"
               "                     [--ARGUMENT VALUE ...]\n\n");
        loom_help_wrap(stdout,
                       "Evaluate a saved model on --validation_file and write eval_results.json to "
                       "--output_dir (default: the model's folder). It takes the training arguments "
                       "below; the ones that matter here are the model, the data, "
                       "--per_device_eval_batch_size and the precision.",
                       0, 0, width);
    } else {
        printf("usage: loom predict --model_name_or_path DIR --test_file FILE\n"
               "                    [--ARGUMENT VALUE ...]\n"
               "       loom predict --model_name_or_path DIR --generate --prompt TEXT\n\n");
        loom_help_wrap(stdout,
                       "Score --test_file with a saved model (predictions.txt and test_results.json in "
                       "--output_dir, default: the model's folder), or continue --prompt with --generate. "
                       "It takes the training arguments below; the ones that matter here are the model, "
                       "the data, the prediction and generation group and the precision.",
                       0, 0, width);
    }
    for (size_t g = 0; g <= sizeof groups / sizeof *groups; g++) {
        int other = g == sizeof groups / sizeof *groups;
        int any = 0;
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
            if (other ? grouped(rows[i].name) : !in_group(rows[i].name, groups[g].names)) continue;
            if (!any) printf("\n%s:\n", other ? "Other" : groups[g].title);
            any = 1;
            print_row(&rows[i], width);
        }
    }
    printf("\nPlugin keys:\n");
    loom_help_wrap(stdout,
                   "--<plugin>.<key> VALUE sets a key of a loaded plugin (--gpt2.n_layer 4, "
                   "--adamw.beta1 0.9); --<key> VALUE works too when the key is the plugin's own. "
                   "`loom plugins` lists the plugins found and `loom plugins --help NAME` one plugin's keys.",
                   0, 2, width);
    printf("\nOther options:\n");
    loom_help_wrap(stdout,
                   "--verbose prints the full resolved configuration (also written to "
                   "<output_dir>/resolved_config.txt) and the per-rank memory budget in bytes; "
                   "LOOM_VERBOSE=1 in the environment does the same.",
                   0, 2, width);
}
