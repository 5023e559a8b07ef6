/*
 * trainer_agree.c - before the first collective, every rank of a multi-process run checks that
 * it runs what rank 0 runs (docs/semantics/trainer.md#ranks-agree). Each rank describes its run
 * as a list of (setting, value) pairs: the plugin of each kind, the resolved arguments, the
 * examples and the checksum of each data file, the model's parameter names and shapes, and the resolved sections
 * of the plugins that compute. Rank 0 publishes its list in the rendezvous store; every other
 * rank compares its own with it and publishes a verdict (empty: the same); rank 0 publishes the
 * first verdict that is not empty, in rank order, as the result, and every rank fails with it.
 * torch's DDP checks only the parameters' shapes (and hangs or trains wrongly on the rest);
 * here one line names the first setting that differs, with both values, on every rank.
 *
 * The seeds are the exception: every rank takes rank 0's --seed and --data_seed, with a warning,
 * as it takes rank 0's parameters (trainer_prepare.c). HF hands every rank the same seed; torch
 * would shuffle each rank's data with its own seed, so that ranks skip and repeat examples.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "args_internal.h"
#include "data_checksum.h"
#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "store.h"
#include "trainer_internal.h"

#define DESCRIPTION_KEY "loom/agree/0"
#define RESULT_KEY "loom/agree/result"
#define FAILED_MARK '!' /* a description that is rank 0's failure (a JSON list never begins so) */

/* Arguments a rank may hold its own. local_rank is the launcher's word to each process. The
 * output folder and what derives from it name where a rank writes (only rank 0 writes the model,
 * the logs and the state; ranks started by hand often get a folder each), and logging_dir's
 * default holds the clock and the host's name. num_threads fits the node's cores and changes no
 * bit (each kernel output is computed in a fixed order); disable_tqdm is how a rank shows its
 * progress. config and plugin_dir are where a node finds things: what they hold is compared (the
 * resolved arguments, the chosen plugins). */
static int per_rank_argument(const char *name)
{
    static const char *const names[] = {"local_rank",   "output_dir", "overwrite_output_dir",
                                        "logging_dir",  "run_name",   "num_threads",
                                        "disable_tqdm", "config",     "plugin_dir"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i]) == 0) return 1;
    return 0;
}

static int add(cJSON *list, const char *key, const char *value)
{
    cJSON *pair = cJSON_CreateArray(), *k = cJSON_CreateString(key), *v = cJSON_CreateString(value);
    if (!pair || !k || !v) {
        cJSON_Delete(pair);
        cJSON_Delete(k);
        cJSON_Delete(v);
        return 0;
    }
    cJSON_AddItemToArray(pair, k);
    cJSON_AddItemToArray(pair, v);
    cJSON_AddItemToArray(list, pair);
    return 1;
}

/* A resume the command chose itself, because this rank's output folder holds a checkpoint
 * (tools/command_train.c), is marked so: on disks of their own only the node that saved has one
 * (docs/checkpoints.md#files-on-one-node), and the other rank's line should say that, not that
 * it was given another flag. The mark is not a difference of its own. */
#define FOUND_IN_OUTPUT_DIR " (a checkpoint found in output_dir)"

static int describe_arguments(const loom_trainer *t, cJSON *list)
{
    int ok = 1;
    for (size_t i = 0; ok && i < LOOM__ARG_COUNT; i++) {
        const loom__arg_desc *d = &loom__arg_table[i];
        if (per_rank_argument(d->name)) continue;
        char key[96], *value = loom__arg_format(&t->args, d);
        snprintf(key, sizeof key, "--%s", d->name);
        if (value && i == LOOM__ARG_resume_from_checkpoint && t->args.origin[i] == LOOM_ARG_FROM_OUTPUT_DIR) {
            char *marked = malloc(strlen(value) + sizeof FOUND_IN_OUTPUT_DIR);
            if (marked) sprintf(marked, "%s%s", value, FOUND_IN_OUTPUT_DIR);
            free(value);
            value = marked;
        }
        ok = value && add(list, key, value);
        free(value);
    }
    return ok;
}

/* Whether a described --resume_from_checkpoint carries the mark; *length: the value's without it. */
static int found_in_output_dir(const char *value, size_t *length)
{
    size_t n = strlen(value), m = strlen(FOUND_IN_OUTPUT_DIR);
    int marked = n >= m && !strcmp(value + n - m, FOUND_IN_OUTPUT_DIR);
    *length = marked ? n - m : n;
    return marked;
}

/* An unmarked value that resumes from nothing (an empty text is shown as ""). */
static int no_resume(const char *value)
{
    return !strcasecmp(value, "none") || !strcasecmp(value, "false") || !strcmp(value, "\"\"");
}

/* Two --resume_from_checkpoint values, marks aside: 1 when the same; else the line for them. */
static int same_resume(const loom_trainer *t, const char *v, const char *v0, char *line, size_t size)
{
    size_t n, n0;
    int mine = found_in_output_dir(v, &n), theirs = found_in_output_dir(v0, &n0);
    if (n == n0 && !strncmp(v, v0, n)) return 1;
    const char *why = "on disks of their own only the node that saved has the checkpoints: save with "
                      "--save_on_each_node, copy the checkpoint folder to every node, or start over with "
                      "--overwrite_output_dir";
    if (theirs && !mine && no_resume(v))
        snprintf(line, size,
                 "rank %d has no checkpoint in its output_dir %s to resume from, and rank 0 resumes from "
                 "the one in its own (%s)",
                 t->rank, t->args.output_dir, why);
    else if (mine && !theirs && no_resume(v0))
        snprintf(line, size,
                 "rank %d resumes from a checkpoint in its output_dir %s, and rank 0 has none in its own "
                 "(%s)",
                 t->rank, t->args.output_dir, why);
    else
        snprintf(line, size, "rank %d differs from rank 0: --resume_from_checkpoint %.*s (rank 0: %.*s)", t->rank,
                 (int)n, v, (int)n0, v0);
    return 0;
}

static int describe_parameters(const loom_trainer *t, cJSON *list)
{
    const loom_model_vtable *mv = t->model.vtable;
    size_t n = mv->param_count(t->model.instance);
    char key[320], value[320];
    snprintf(value, sizeof value, "%zu", n);
    int ok = add(list, "number of parameter tensors", value);
    for (size_t i = 0; ok && i < n; i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        if (mv->param_info(t->model.instance, i, &info) != LOOM_OK) return 0;
        size_t at = (size_t)snprintf(value, sizeof value, "[");
        for (uint32_t d = 0; d < info.ndim && d < LOOM_MAX_DIMS && at < sizeof value; d++)
            at += (size_t)snprintf(value + at, sizeof value - at, d ? ", %lld" : "%lld", (long long)info.shape[d]);
        if (at < sizeof value) snprintf(value + at, sizeof value - at, "]");
        snprintf(key, sizeof key, "parameter %s has shape", info.name);
        ok = add(list, key, value);
    }
    return ok;
}

#define CHECKSUM " has the checksum"

/* Each data file's examples, then its bytes: on disks of their own two nodes may hold files of
 * one name and length and other contents (another tokenizer's ids, an older export), which the
 * count alone lets through, each rank training on its own data. The checksum costs one read of
 * the file at the start (SHA-256 at about 1.5 GB/s here, some 65 ms for 100 MB in the page cache),
 * none per step. */
static int describe_data(const loom_trainer *t, cJSON *list)
{
    const loom_dataset *data[] = {t->train_dataset, t->eval_dataset, t->test_dataset};
    const char *flags[] = {"--train_file", "--validation_file", "--test_file"};
    const char *paths[] = {t->args.train_file, t->args.validation_file, t->args.test_file};
    int ok = 1;
    for (size_t i = 0; ok && i < 3; i++) {
        if (!data[i]) continue;
        char key[4200], value[2200];
        snprintf(key, sizeof key, "%s holds", flags[i]);
        snprintf(value, sizeof value, "%lld examples", (long long)data[i]->n_examples);
        ok = add(list, key, value);
        char hash[65];
        uint64_t bytes = 0;
        size_t files = 0;
        if (loom_data_checksum(paths[i], hash, &bytes, &files) == LOOM_OK)
            snprintf(value, sizeof value, "%s (SHA-256 of %llu bytes in %zu file%s)", hash,
                     (unsigned long long)bytes, files, files > 1 ? "s" : "");
        else { /* read when opened a moment ago: say why not now, and the ranks differ on it */
            snprintf(value, sizeof value, "unreadable (%s)", loom_error_message());
            loom_error_clear();
        }
        snprintf(key, sizeof key, "%s %s" CHECKSUM, flags[i], paths[i]);
        ok = ok && add(list, key, value);
    }
    return ok;
}

/* The sections of the plugins whose values change the arithmetic; not the comm plugin's, whose
 * keys say how a rank reaches its peers (gloo.hostname is each rank's own address). */
static int describe_sections(const loom_trainer *t, cJSON *list)
{
    const loom_plugin_instance *slots[] = {&t->model, &t->optimizer, &t->scheduler, &t->precision, &t->sharding};
    int ok = 1;
    for (size_t s = 0; ok && s < sizeof slots / sizeof *slots; s++) {
        const char *key_name;
        for (size_t i = 0; ok && (key_name = loom_config_key(slots[s]->config, i)) != NULL; i++) {
            char key[160], value[4096];
            snprintf(key, sizeof key, "--%s.%s", slots[s]->plugin->desc->name, key_name);
            ok = loom_config_value_text(slots[s]->config, key_name, value, sizeof value) && add(list, key, value);
        }
    }
    return ok;
}

/* This rank's run as a JSON list of [setting, value] pairs, in the order they are compared: the
 * plugins first (the sharding strategy is the likeliest slip), the arguments, the data, the
 * parameters, then the plugins' own keys (a shape flag such as --mlp.hidden_sizes shows up as
 * the parameter it shapes). NULL when out of memory. */
static char *describe(const loom_trainer *t)
{
    cJSON *list = cJSON_CreateArray();
    const loom_plugin_instance *kinds[] = {&t->model,     &t->optimizer, &t->scheduler,
                                           &t->precision, &t->sharding,  &t->comm};
    const char *kind_names[] = {"model", "optimizer", "scheduler", "precision", "sharding", "comm"};
    int ok = list != NULL;
    for (size_t i = 0; ok && i < sizeof kinds / sizeof *kinds; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s plugin", kind_names[i]);
        ok = add(list, key, kinds[i]->plugin->desc->name);
    }
    ok = ok && describe_arguments(t, list) && describe_data(t, list) && describe_parameters(t, list) &&
         describe_sections(t, list);
    char *text = ok ? cJSON_PrintUnformatted(list) : NULL;
    cJSON_Delete(list);
    return text;
}

/* A value as a message shows it: "" for an empty one. */
static const char *shown(const char *value)
{
    return value && *value ? value : "\"\"";
}

/* The run takes rank 0's seed (see the top of the file). */
static loom_status adopt_seed(loom_trainer *t, const char *key, const char *mine, const char *theirs)
{
    loom_status st = loom__arg_set_text(&t->args, loom__arg_find(key + 2), theirs, NULL);
    if (st != LOOM_OK) return st;
    loom_log(LOOM_LOG_WARNING,
             "rank %d: %s %s differs from rank 0's %s: every rank takes rank 0's seeds, as it takes its parameters",
             t->rank, key, mine, theirs);
    loom_host_set_seed((uint64_t)t->args.seed);
    return LOOM_OK;
}

static const char *pair_text(const cJSON *list, int i, int which)
{
    const cJSON *item = cJSON_GetArrayItem(cJSON_GetArrayItem(list, i), which);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Compare rank 0's list with this rank's: the verdict (malloc'd; "" when they agree). */
static loom_status compare(loom_trainer *t, const char *rank0_text, const char *my_text, char **verdict)
{
    *verdict = NULL;
    cJSON *theirs = cJSON_Parse(rank0_text), *mine = cJSON_Parse(my_text);
    char line[2048] = "";
    loom_status st = LOOM_OK;
    if (!cJSON_IsArray(theirs) || !cJSON_IsArray(mine)) {
        st = loom_error(LOOM_E_INTERNAL, "rank %d: cannot read the description of rank 0's run", t->rank);
        goto done;
    }
    int n0 = cJSON_GetArraySize(theirs), n = cJSON_GetArraySize(mine);
    for (int i = 0; i < (n > n0 ? n : n0) && !*line && st == LOOM_OK; i++) {
        const char *k0 = pair_text(theirs, i, 0), *v0 = shown(pair_text(theirs, i, 1));
        const char *k = pair_text(mine, i, 0), *v = shown(pair_text(mine, i, 1));
        int same_key = k && k0 && !strcmp(k, k0);
        if (same_key && !strcmp(v, v0)) continue;
        if (same_key && !strcmp(k, "--resume_from_checkpoint")) {
            if (same_resume(t, v, v0, line, sizeof line)) continue;
        } else if (same_key && (!strcmp(k, "--seed") || !strcmp(k, "--data_seed")))
            st = adopt_seed(t, k, v, v0);
        else if (same_key && strlen(k) > strlen(CHECKSUM) && !strcmp(k + strlen(k) - strlen(CHECKSUM), CHECKSUM))
            snprintf(line, sizeof line,
                     "rank %d differs from rank 0: %.*s holds other bytes than rank 0's: checksum %s (rank 0: %s): "
                     "every node needs the same copy of the file",
                     t->rank, (int)(strlen(k) - strlen(CHECKSUM)), k, v, v0);
        else if (same_key)
            snprintf(line, sizeof line, "rank %d differs from rank 0: %s %s (rank 0: %s)", t->rank, k, v, v0);
        else if (k && k0)
            snprintf(line, sizeof line, "rank %d differs from rank 0: %s %s (rank 0: %s %s)", t->rank, k, v, k0, v0);
        else if (k)
            snprintf(line, sizeof line, "rank %d differs from rank 0: %s %s (rank 0: nothing there)", t->rank, k, v);
        else
            snprintf(line, sizeof line, "rank %d differs from rank 0: nothing where rank 0 has %s %s", t->rank, k0, v0);
    }
    if (st == LOOM_OK && !(*verdict = strdup(line))) st = loom_error(LOOM_E_NOMEM, "out of memory");
done:
    cJSON_Delete(theirs);
    cJSON_Delete(mine);
    return st;
}

/* GET key as a NUL-terminated malloc'd string, waiting up to timeout seconds for it. */
static loom_status get_text(loom_trainer *t, const char *key, double timeout, char **out)
{
    size_t capacity = 64 * 1024, size = 0;
    char *text = malloc(capacity + 1);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = loom_store_get(t->store_client, key, text, capacity, &size, timeout);
    if (st == LOOM_OK && size > capacity) {
        /* Longer than expected (a model of thousands of tensors): read it again whole. */
        char *bigger = realloc(text, size + 1);
        if (!bigger)
            st = loom_error(LOOM_E_NOMEM, "out of memory");
        else
            text = bigger, capacity = size;
        if (st == LOOM_OK) st = loom_store_get(t->store_client, key, text, capacity, &size, 0);
    }
    if (st != LOOM_OK) {
        free(text);
        return st;
    }
    text[size < capacity ? size : capacity] = '\0';
    *out = text;
    return LOOM_OK;
}

static void verdict_key(char *key, size_t size, int32_t rank)
{
    snprintf(key, size, "loom/agree/verdict/%d", rank);
}

static double agree_timeout(const loom_trainer *t)
{
    return t->args.ddp_timeout > 0 ? (double)t->args.ddp_timeout : 1800.0;
}

/* Rank 0: publish, collect the verdicts in rank order, publish the first that is not empty (or
 * why one is missing, so that no rank waits for a result that will not come). */
static loom_status agree_as_rank0(loom_trainer *t, const char *mine, char **result)
{
    loom_status st = loom_store_set(t->store_client, DESCRIPTION_KEY, mine, strlen(mine));
    if (st != LOOM_OK) return st;
    t->agreement_published = 1;
    char *first = NULL;
    for (int32_t r = 1; r < t->world_size && st == LOOM_OK; r++) {
        char key[64], *verdict = NULL;
        verdict_key(key, sizeof key, r);
        if ((st = get_text(t, key, agree_timeout(t), &verdict)) != LOOM_OK)
            st = loom_error_context(st, "rank %d did not compare its run with rank 0's", r);
        else if (!first && *verdict)
            first = verdict, verdict = NULL;
        free(verdict);
    }
    char line[2048];
    snprintf(line, sizeof line, "%s", st != LOOM_OK ? loom_error_message() : first ? first : "");
    free(first);
    loom_status set = loom_store_set(t->store_client, RESULT_KEY, line, strlen(line));
    if (st != LOOM_OK) return loom_error(st, "%s", line);
    if (set != LOOM_OK) return set;
    if (*line && !(*result = strdup(line))) return loom_error(LOOM_E_NOMEM, "out of memory");
    return LOOM_OK;
}

/* Any other rank: read rank 0's run, compare, publish the verdict, read the result. */
static loom_status agree_as_other(loom_trainer *t, const char *mine, char **result)
{
    char *theirs = NULL, *verdict = NULL, key[64];
    loom_status st = get_text(t, DESCRIPTION_KEY, agree_timeout(t), &theirs);
    if (st != LOOM_OK) return loom_error_context(st, "rank %d: waiting for rank 0's description of its run", t->rank);
    if (theirs[0] == FAILED_MARK) {
        t->agreement_published = 1; /* rank 0 collects nothing */
        st = loom_error(LOOM_E_INVALID, "%s", theirs + 1);
        free(theirs);
        return st;
    }
    st = compare(t, theirs, mine, &verdict);
    free(theirs);
    if (st != LOOM_OK) return st;
    verdict_key(key, sizeof key, t->rank);
    st = loom_store_set(t->store_client, key, verdict, strlen(verdict));
    if (st == LOOM_OK) t->agreement_published = 1;
    if (st == LOOM_OK && *verdict) {
        /* This rank's own difference: say it at once; rank 0 tells the others. */
        *result = verdict;
        return LOOM_OK;
    }
    free(verdict);
    if (st == LOOM_OK) st = get_text(t, RESULT_KEY, agree_timeout(t), result);
    if (st == LOOM_OK && !**result) {
        free(*result);
        *result = NULL;
    }
    return st;
}

loom_status loom_trainer_agree(loom_trainer *t)
{
    if (!t->store_client || t->agreement_published) return LOOM_OK;
    char *mine = describe(t), *result = NULL;
    if (!mine) return loom_error(LOOM_E_NOMEM, "out of memory describing the run for the other ranks");
    loom_status st = t->rank == 0 ? agree_as_rank0(t, mine, &result) : agree_as_other(t, mine, &result);
    free(mine);
    if (st == LOOM_OK && result) st = loom_error(LOOM_E_INVALID, "%s", result);
    free(result);
    return st;
}

void loom_trainer_agree_abandon(loom_trainer *t)
{
    if (!t->store_client || t->agreement_published) return;
    t->agreement_published = 1;
    char saved[2048], line[2200], key[64];
    snprintf(saved, sizeof saved, "%s", loom_error_message());
    snprintf(line, sizeof line, "%crank %d failed to start: %s", FAILED_MARK, t->rank, saved);
    if (t->rank == 0) {
        loom_store_set(t->store_client, DESCRIPTION_KEY, line, strlen(line));
    } else {
        verdict_key(key, sizeof key, t->rank);
        loom_store_set(t->store_client, key, line + 1, strlen(line + 1));
    }
    loom_error(LOOM_OK, "%s", saved); /* the store's errors must not replace the cause */
}
