/*
 * command_train.c - `loom train`, `loom evaluate`, `loom predict`: what HF's example scripts do
 * around the Trainer (run_glue.py and friends): parse the arguments, guard output_dir, log the
 * resolved configuration, train / evaluate / predict, and save.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checkpoint_dir.h"
#include "commands.h"
#include "error.h"
#include "deepspeed_config.h"
#include "fileutil.h"
#include "json_util.h"
#include "generate.h"
#include "tokenizer_bpe.h"
#include "host.h"
#include "interrupt_notice.h"
#include "plugin_config.h"
#include "trainer.h"
#include "trainer_generate.h"

/* HF's metrics_format + log_metrics: runtimes as h:mm:ss.cc, total_flos in GF, other floats
 * rounded to 4 decimals, keys and values in aligned columns. The JSON files keep every digit. */
static void format_metric(const char *key, double v, char *buf, size_t size)
{
    if (strstr(key, "_runtime")) {
        long long s = (long long)v;
        snprintf(buf, size, "%lld:%02lld:%02lld.%02d", s / 3600, s / 60 % 60, s % 60, (int)((v - (double)s) * 100));
    } else if (!strcmp(key, "total_flos")) {
        snprintf(buf, size, "%lldGF", (long long)v >> 30);
    } else {
        loom_format_rounded(v, 4, buf, size);
    }
}

/* HF's log_metrics and its "Saving ..." lines are logger.info: --log_level warning hides them. */
static int info_shown(void)
{
    return loom_host_log_level() >= LOOM_LOG_INFO;
}

/* --enable_jit_checkpoint stopped training at SIGTERM: the run is not finished, so no final
 * model, evaluation or prediction, and the exit status of a process SIGTERM ended (128 + 15),
 * which a scheduler that restarts failed jobs restarts (core/trainer/trainer_jit.c). */
static int jit_stopped(loom_trainer *t)
{
    if (t->state.is_world_process_zero)
        fprintf(stderr,
                "loom: stopped by SIGTERM (--enable_jit_checkpoint): --resume_from_checkpoint true goes on from "
                "%s/checkpoint-%lld\n",
                t->args.output_dir, (long long)t->state.global_step);
    loom_trainer_destroy(t);
    loom_loader_shutdown();
    return 128 + SIGTERM;
}

static void print_metrics(const char *title, const loom_metrics *m)
{
    if (!info_shown()) return;
    char values[LOOM_METRICS_MAX][64];
    int key_width = 0, value_width = 0;
    for (size_t i = 0; i < m->count; i++) {
        format_metric(m->keys[i], m->values[i], values[i], sizeof values[i]);
        if ((int)strlen(m->keys[i]) > key_width) key_width = (int)strlen(m->keys[i]);
        if ((int)strlen(values[i]) > value_width) value_width = (int)strlen(values[i]);
    }
    printf("***** %s metrics *****\n", title);
    for (size_t i = 0; i < m->count; i++) printf("  %-*s = %*s\n", key_width, m->keys[i], value_width, values[i]);
    fflush(stdout);
}

/* A flat object of numbers as HF's save_metrics writes it: json.dump(indent=4, sort_keys=True),
 * floats as Python prints them (2.0, not 2), counts (*_samples) as integers, a value that is
 * not finite as null (JSON has no NaN; Python would write NaN). Sorts `object`'s keys. NULL when
 * out of memory. */
static char *metrics_text(cJSON *object)
{
    char *text = NULL;
    size_t len = 0, i = 0;
    FILE *f = loom__json_sort_keys(object) == LOOM_OK ? open_memstream(&text, &len) : NULL;
    if (!f) return NULL;
    const cJSON *item;
    fputs("{", f);
    cJSON_ArrayForEach(item, object)
    {
        char number[64];
        const double v = item->valuedouble;
        const size_t key_len = strlen(item->string);
        const int count = key_len >= 8 && !strcmp(item->string + key_len - 8, "_samples");
        if (!isfinite(v))
            snprintf(number, sizeof number, "null");
        else if (count && v == floor(v) && fabs(v) < 1e15)
            snprintf(number, sizeof number, "%lld", (long long)v);
        else {
            loom__format_shortest(number, sizeof number - 2, v);
            if (!strpbrk(number, ".e")) strcat(number, ".0");
        }
        fputs(i++ ? ",\n    " : "\n    ", f);
        loom__json_write_string(f, item->string);
        fprintf(f, ": %s", number);
    }
    fputs(i ? "\n}" : "}", f);
    return fclose(f) == 0 ? text : (free(text), NULL);
}

/* HF's trainer.save_metrics(split): <split>_results.json, merged into all_results.json. */
static loom_status save_metrics(const loom_trainer *t, const char *split, const loom_metrics *m)
{
    if (!t->state.is_world_process_zero) return LOOM_OK;
    char name[64], path[4096];
    snprintf(name, sizeof name, "%s_results.json", split);
    loom_status st = loom_path_join(path, sizeof path, t->args.output_dir, name);
    if (st != LOOM_OK) return st;
    cJSON *json = cJSON_CreateObject();
    for (size_t i = 0; i < m->count; i++) cJSON_AddNumberToObject(json, m->keys[i], m->values[i]);
    char *text = metrics_text(json);
    st = text ? loom_write_file_atomic(path, text, strlen(text)) : loom_error(LOOM_E_NOMEM, "out of memory");
    free(text);
    cJSON_Delete(json);
    if (st != LOOM_OK) return st;
    /* all_results.json: what is there already plus these. */
    char all_path[4096], *old = NULL;
    size_t old_len = 0;
    if ((st = loom_path_join(all_path, sizeof all_path, t->args.output_dir, "all_results.json")) != LOOM_OK) return st;
    cJSON *all = loom_read_file(all_path, &old, &old_len) == LOOM_OK ? cJSON_Parse(old) : NULL;
    free(old);
    loom_error_clear();
    if (!cJSON_IsObject(all)) {
        cJSON_Delete(all);
        all = cJSON_CreateObject();
    }
    for (size_t i = 0; i < m->count; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(all, m->keys[i]);
        cJSON_AddNumberToObject(all, m->keys[i], m->values[i]);
    }
    text = metrics_text(all);
    st = text ? loom_write_file_atomic(all_path, text, strlen(text)) : loom_error(LOOM_E_NOMEM, "out of memory");
    free(text);
    cJSON_Delete(all);
    if (st == LOOM_OK && info_shown()) printf("loom: wrote %s and %s\n", path, all_path);
    return st;
}

/* The plugins chosen, their sections, and the merged DeepSpeed configuration. */
static void print_plugins(const loom_trainer *t, FILE *out)
{
    const loom_plugin_instance *slots[] = {&t->model,     &t->optimizer, &t->scheduler,
                                           &t->precision, &t->sharding,  &t->comm};
    for (size_t i = 0; i < sizeof slots / sizeof *slots; i++) {
        fprintf(out, "  [%s] %s (%s)\n", loom_kind_name(slots[i]->plugin->desc->kind), slots[i]->plugin->desc->name,
                slots[i]->plugin->path);
        loom_config_print(slots[i]->config, out);
    }
    for (size_t i = 0; i < t->n_callbacks; i++) {
        fprintf(out, "  [callback] %s (%s)\n", loom_trainer_callback_name(&t->callbacks[i]),
                t->callbacks[i].plugin ? t->callbacks[i].plugin->path : "the program");
        loom_config_print(t->callbacks[i].config, out);
    }
    if (t->ds) {
        fprintf(out, "  [deepspeed] %s merged with the arguments (\"auto\" resolved; total steps once known):\n",
                t->args.deepspeed);
        loom_ds_config_write_json(t->ds, out);
    }
}

/* The whole resolved configuration: every argument with where its value came from (the ones
 * given or taken from a file first), then the plugins. */
static void print_resolved(const loom_trainer *t, FILE *out)
{
    fprintf(out, "loom: resolved configuration (value, then where it came from: command line, a file, or default):\n");
    loom_args_print_resolved(&t->args, out, 0);
    print_plugins(t, out);
    fflush(out);
}

/* <output_dir>/resolved_config.txt always; the terminal too with --verbose. */
static loom_status save_resolved(const loom_trainer *t, int verbose)
{
    if (!t->state.is_world_process_zero) return LOOM_OK;
    if (verbose) print_resolved(t, stdout);
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, t->args.output_dir, "resolved_config.txt");
    if (st != LOOM_OK) return st;
    FILE *f = fopen(path, "w");
    if (!f) return loom_error(LOOM_E_IO, "%s: cannot write: %s", path, strerror(errno));
    print_resolved(t, f);
    if (fclose(f) != 0) st = loom_error(LOOM_E_IO, "%s: write failed: %s", path, strerror(errno));
    return st;
}

/* What --generate cannot do, said before the tokenizer is looked for: a classifier's folder
 * has no vocab.json, and "cannot open" would hide that the model itself cannot generate. */
static loom_status check_generation(const loom_trainer *t)
{
    const loom_args *a = &t->args;
    if (loom_trainer_can_generate(t) != LOOM_OK)
        return loom_error_context(LOOM_E_UNSUPPORTED, "--generate: %s",
                                  a->model_name_or_path && *a->model_name_or_path ? a->model_name_or_path
                                                                                  : "the model");
    /* --generate decodes greedily or by sampling: a beam count would be silently ignored. */
    const int64_t beams = a->generation_num_beams != LOOM_ARG_NONE_INT ? a->generation_num_beams : a->num_beams;
    if (beams != LOOM_ARG_NONE_INT && beams != 1)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "--%s %lld: --generate has no beam search (greedy, or --do_sample); beams are for "
                          "--predict_with_generate",
                          a->generation_num_beams != LOOM_ARG_NONE_INT ? "generation_num_beams" : "num_beams",
                          (long long)beams);
    /* HF's max_length counts the prompt; here the new tokens are counted: one setting, one name. */
    const int64_t length = a->generation_max_length != LOOM_ARG_NONE_INT ? a->generation_max_length : a->max_length;
    if (length != LOOM_ARG_NONE_INT)
        return loom_error(
            LOOM_E_UNSUPPORTED, "--%s %lld: --generate stops after --max_new_tokens new tokens: give that",
            a->generation_max_length != LOOM_ARG_NONE_INT ? "generation_max_length" : "max_length", (long long)length);
    if (a->test_file && *a->test_file)
        return loom_error(LOOM_E_INVALID,
                          "--test_file %s: predict --generate reads --prompt, not a test file: drop one", a->test_file);
    /* HF warns the same way: these shape sampling only. */
    if (!a->do_sample && (a->temperature != 1.0 || a->top_p != 1.0))
        loom_log(LOOM_LOG_WARNING, "--temperature and --top_p apply with --do_sample; this run decodes greedily");
    return LOOM_OK;
}

/* `loom predict --generate --prompt TEXT`: encode, decode step by step, print the text. */
static loom_status run_generation(loom_trainer *t)
{
    const loom_args *a = &t->args;
    const char *dir = a->tokenizer_name && *a->tokenizer_name ? a->tokenizer_name : a->model_name_or_path;
    if (!dir || !*dir) return loom_error(LOOM_E_INVALID, "--generate needs --model_name_or_path (or --tokenizer_name)");
    if (!a->prompt) return loom_error(LOOM_E_INVALID, "--generate needs --prompt TEXT");
    if (!*a->prompt) return loom_error(LOOM_E_INVALID, "--prompt is empty: generation starts from at least one token");
    loom_status st = check_generation(t);
    if (st != LOOM_OK) return st;
    char vocab[4096], merges[4096];
    st = loom_path_join(vocab, sizeof vocab, dir, "vocab.json");
    if (st == LOOM_OK) st = loom_path_join(merges, sizeof merges, dir, "merges.txt");
    loom_bpe *bpe = NULL;
    if (st == LOOM_OK) st = loom_bpe_load(vocab, merges, &bpe);
    if (st != LOOM_OK) return st;
    int32_t *prompt = NULL, *generated = NULL;
    size_t n_prompt = 0, n_generated = 0;
    st = loom_bpe_encode(bpe, a->prompt, strlen(a->prompt), &prompt, &n_prompt);
    loom_generation_config config = {
        .max_new_tokens = a->max_new_tokens,
        .do_sample = a->do_sample,
        .temperature = a->temperature,
        .top_k = a->top_k,
        .top_p = a->top_p,
        .seed = (uint64_t)a->seed,
        .eos_token_id = loom_bpe_eot(bpe),
    };
    if (st == LOOM_OK) st = loom_trainer_generate(t, prompt, n_prompt, &config, &generated, &n_generated);
    char *text = NULL;
    size_t len = 0;
    if (st == LOOM_OK) st = loom_bpe_decode(bpe, generated, n_generated, &text, &len);
    if (st == LOOM_OK && t->state.is_world_process_zero) {
        fputs(a->prompt, stdout);
        loom_print_text(stdout, text, len);
        fputc('\n', stdout);
        fflush(stdout);
    }
    free(text);
    free(prompt);
    free(generated);
    loom_bpe_free(bpe);
    return st;
}

int loom_command_train(const char *mode, int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            loom_help_train(mode);
            return 0;
        }
    /* --verbose is the command's, not a training argument: take it out before parsing. */
    const char *env = getenv("LOOM_VERBOSE");
    int verbose = env && *env && strcmp(env, "0") != 0, n = 0;
    char **rest = malloc((size_t)(argc + 1) * sizeof *rest);
    if (!rest) return loom_command_fail(loom_error(LOOM_E_NOMEM, "out of memory"));
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) verbose = 1;
        else rest[n++] = argv[i];
    }
    if (verbose) loom_host_set_log_level(LOOM_LOG_DEBUG);
    loom_args args;
    loom_args_init(&args);
    loom_status st = loom_args_parse(&args, n, rest);
    free(rest);
    /* Flags nothing can take come first: a misspelt required flag is a typo, not a missing one. */
    if (st == LOOM_OK) st = loom_command_check_unknown(&args);
    if (st != LOOM_OK) {
        loom_args_free(&args);
        return loom_command_fail(st);
    }
    int training = !strcmp(mode, "train");
    if (training) args.do_train = 1;
    if (!strcmp(mode, "evaluate")) args.do_eval = 1;
    if (!strcmp(mode, "predict")) args.do_predict = 1;
    /* --generate and --prompt are loom predict's text generation; elsewhere they would be
     * ignored, and without each other one would be. */
    const char *misplaced =
        args.generate && strcmp(mode, "predict") != 0   ? "--generate belongs to loom predict (text from --prompt)"
        : !args.generate && args.prompt && *args.prompt ? "--prompt is read by loom predict --generate: add --generate"
                                                        : NULL;
    if (misplaced) {
        loom_args_free(&args);
        return loom_command_fail(loom_error(LOOM_E_INVALID, "%s", misplaced));
    }
    if (!strcmp(mode, "evaluate") && (!args.validation_file || !*args.validation_file)) {
        loom_args_free(&args);
        return loom_command_fail(loom_error(LOOM_E_INVALID, "loom evaluate needs --validation_file"));
    }
    /* evaluate / predict without --output_dir: a folder of their own inside the model's
     * (RUN/evaluate, RUN/predict), so a training run's results are never overwritten unless
     * --output_dir names the run itself. */
    if (!training && (!args.output_dir || !*args.output_dir) && args.model_name_or_path && *args.model_name_or_path) {
        char own[4096];
        free(args.output_dir);
        args.output_dir =
            loom_path_join(own, sizeof own, args.model_name_or_path, mode) == LOOM_OK ? strdup(own) : NULL;
    }
    if (!args.output_dir || !*args.output_dir) {
        loom_args_free(&args);
        /* evaluate / predict would have made one inside the model's folder: what is missing is the model. */
        if (!training)
            return loom_command_fail(
                loom_error(LOOM_E_INVALID, "loom %s needs --model_name_or_path (the trained model's folder)", mode));
        return loom_command_fail(loom_error(LOOM_E_INVALID, "--output_dir is required"));
    }
    /* A restart by `loom launch --max_restarts` (docs/checkpoints.md#restarts) goes on from the
     * newest complete checkpoint even under --overwrite_output_dir, which only the first attempt
     * obeys; without a checkpoint yet it starts over. */
    const char *restart = getenv("LOOM_RESTART_COUNT");
    int restarted = restart && *restart && strcmp(restart, "0") != 0;
    if (training && (!args.overwrite_output_dir || restarted)) {
        int empty = 1;
        char last[4096];
        if ((st = loom_dir_is_empty(args.output_dir, &empty)) == LOOM_OK && !empty) {
            /* HF's example scripts: a run dir with a checkpoint is a run to continue. Only a look
             * here: the trainer checks every byte once, when it resumes ("true": the newest
             * checkpoint that passes, with a warning for each that does not). */
            if (loom_checkpoint_latest_sealed(args.output_dir, last, sizeof last) == LOOM_OK) {
                const char *given = args.resume_from_checkpoint;
                /* The trainer says where it resumed (the newest checkpoint that passes its
                 * checks, which may be an older one than `last`), and why. */
                if (restarted || !given || !*given || !strcasecmp(given, "false")) {
                    free(args.resume_from_checkpoint);
                    if (!(args.resume_from_checkpoint = strdup("true"))) st = loom_error(LOOM_E_NOMEM, "out of memory");
                    args.origin[LOOM__ARG_resume_from_checkpoint] = LOOM_ARG_FROM_OUTPUT_DIR;
                }
            } else if (restarted) {
                loom_error_clear(); /* the first attempt had the folder to itself */
            } else {
                loom_error_clear();
                st = loom_error(
                    LOOM_E_INVALID,
                    "output directory (%s) already exists and is not empty: use --overwrite_output_dir to overcome",
                    args.output_dir);
            }
        }
        if (st != LOOM_OK) {
            loom_args_free(&args);
            return loom_command_fail(st);
        }
    }
    /* predict --generate prints its text and writes no file: it leaves no empty folder. */
    if (!args.generate && (st = loom_mkdir_p(args.output_dir)) != LOOM_OK) {
        loom_args_free(&args);
        return loom_command_fail(st);
    }

    loom_trainer *t = NULL;
    if ((st = loom_trainer_create(&args, &t)) != LOOM_OK) {
        loom_args_free(&args);
        return loom_command_fail(st);
    }
    if (training && (st = save_resolved(t, verbose)) != LOOM_OK) goto fail;

    if (t->args.do_train) {
        if (t->state.is_world_process_zero) loom_interrupt_notice_install(t->args.output_dir);
        if ((st = loom_trainer_train(t)) != LOOM_OK) goto fail_running;
        if (t->jit_stopped) return jit_stopped(t);
        if ((st = loom_trainer_save_final(t)) != LOOM_OK) goto fail_running;
        if ((st = save_metrics(t, "train", &t->train_metrics)) != LOOM_OK) goto fail_running;
        /* HF's run_* scripts: trainer.log_metrics("train", metrics) after save_metrics. */
        if (t->state.is_world_process_zero) print_metrics("train", &t->train_metrics);
        if (t->state.is_world_process_zero && info_shown())
            printf("loom: saved the model to %s (model.safetensors, config.json, trainer_state.json, "
                   "train_results.json)\n",
                   t->args.output_dir);
    }
    if (t->args.do_eval == 1 && t->eval_dataset) {
        loom_metrics metrics;
        if ((st = loom_trainer_evaluate(t, &metrics)) != LOOM_OK) goto fail_running;
        if (t->state.is_world_process_zero) print_metrics("eval", &metrics);
        if ((st = save_metrics(t, "eval", &metrics)) != LOOM_OK) goto fail_running;
    } else if (!strcmp(mode, "evaluate")) {
        st = loom_error(LOOM_E_INVALID, "loom evaluate needs --validation_file");
        goto fail;
    }
    if (t->args.do_predict && t->args.generate) {
        if ((st = run_generation(t)) != LOOM_OK) goto fail_running;
    } else if (t->args.do_predict) {
        loom_predictions predictions;
        loom_metrics metrics;
        if ((st = loom_trainer_predict(t, &predictions, &metrics)) != LOOM_OK) goto fail_running;
        char path[4096];
        st = loom_path_join(path, sizeof path, t->args.output_dir, "predictions.txt");
        if (st == LOOM_OK && t->state.is_world_process_zero && predictions.n_rows > 0)
            st = loom_trainer_write_predictions(t, &predictions, path);
        int predictions_written = predictions.n_rows > 0;
        /* HF's run_translation / run_summarization: generated_predictions.txt, one line per
         * example; predict gathered every rank's lines. */
        char gen_path[4096];
        int generated_written = 0;
        if (st == LOOM_OK && t->args.predict_with_generate && t->state.is_world_process_zero) {
            st = loom_path_join(gen_path, sizeof gen_path, t->args.output_dir, "generated_predictions.txt");
            if (st == LOOM_OK) st = loom_write_generated_predictions(&predictions, gen_path);
            generated_written = st == LOOM_OK;
        }
        loom_predictions_free(&predictions);
        if (st != LOOM_OK) goto fail_running;
        if ((st = save_metrics(t, "test", &metrics)) != LOOM_OK) goto fail_running;
        if (t->state.is_world_process_zero) {
            print_metrics("test", &metrics);
            if (predictions_written && info_shown()) printf("loom: wrote %s\n", path);
            if (generated_written && info_shown()) printf("loom: wrote %s\n", gen_path);
        }
    }
    loom_trainer_destroy(t);
    loom_loader_shutdown();
    return 0;

fail:
    {
        int code = loom_command_fail(st);
        loom_trainer_destroy(t);
        return code;
    }
fail_running:
    {
        int code = loom_command_fail(st);
        loom_trainer_destroy(t);
        return code == 2 ? 2 : 1;
    }
}
