/*
 * command_unknown.c - flags that are no training argument, reported before anything else
 * looks at the run (a required argument, the data): `--outputdir o` must say "unknown argument
 * --outputdir; did you mean --output_dir?", not "--output_dir is required".
 *
 * A flag may still be a plugin's key, and which plugins a run loads is decided later. So this
 * early pass only reports what no plugin could take: a plain key that no plugin found on the
 * search path (nor one named by --plugin) declares, or a dotted key whose prefix names no
 * plugin. A dotted key of a known plugin ("mlp.hiden_sizes") is left to the trainer, which
 * knows which plugins were loaded and names the plugin in its message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "error.h"
#include "plugin_config.h"
#include "plugin_loader.h"

typedef struct names {
    char **items;
    size_t count, cap;
    int failed;
} names;

static void add(names *n, const char *text)
{
    if (n->failed) return;
    if (n->count == n->cap) {
        size_t cap = n->cap ? 2 * n->cap : 256;
        char **grown = realloc(n->items, cap * sizeof *grown);
        if (!grown) {
            n->failed = 1;
            return;
        }
        n->items = grown;
        n->cap = cap;
    }
    if (!(n->items[n->count] = strdup(text))) n->failed = 1;
    else n->count++;
}

static int has(const names *n, const char *text)
{
    for (size_t i = 0; i < n->count; i++)
        if (!strcmp(n->items[i], text)) return 1;
    return 0;
}

typedef struct known {
    names plugins; /* plugin names */
    names keys;    /* every key, plain and "<plugin>.<key>" */
} known;

static void add_plugin(known *k, const loom_plugin_desc *desc)
{
    if (!desc || has(&k->plugins, desc->name)) return;
    add(&k->plugins, desc->name);
    for (const loom_param_spec *s = desc->params; s && s->key; s++) {
        char qualified[256];
        snprintf(qualified, sizeof qualified, "%s.%s", desc->name, s->key);
        add(&k->keys, s->key);
        add(&k->keys, qualified);
    }
}

static void visit(void *context, const char *path, const loom_plugin_desc *desc, int shadowed, const char *error)
{
    (void)path;
    (void)error;
    if (!shadowed) add_plugin(context, desc);
}

static void names_free(names *n)
{
    for (size_t i = 0; i < n->count; i++) free(n->items[i]);
    free(n->items);
}

/* The data arguments of HF's run_clm / run_translation / run_summarization (not
 * TrainingArguments), which a user brings along: where loom does the same thing. */
static const char *hf_script_hint(const char *key)
{
    static const struct {
        const char *name, *hint;
    } hints[] = {
        {"validation_split_percentage",
         "loom tokenize --validation_fraction splits a text (a fraction, not a percentage)"},
        {"pad_to_max_length", "loom pads each batch to its longest row (docs/seq2seq.md#batches): nothing to set"},
        {"ignore_pad_token_for_loss", "padded labels are -100 in loom, never scored: nothing to set"},
        {"dataset_name", "loom reads local files: --train_file, --validation_file (loom tokenize writes them)"},
        {"dataset_config_name", "loom reads local files: --train_file, --validation_file (loom tokenize writes them)"},
        {"max_source_length", "loom tokenize --max_source_length cuts the sources when it writes the pair files"},
        {"max_target_length", "loom tokenize --max_target_length cuts the targets when it writes the pair files"},
        {"source_prefix", "loom tokenize --source_prefix puts it before every source when it writes the pair files"},
        {"preprocessing_num_workers", "loom tokenize is one process: nothing to set"},
        {"overwrite_cache", "loom keeps no dataset cache: nothing to set"},
    };
    for (size_t i = 0; i < sizeof hints / sizeof *hints; i++)
        if (!strcmp(key, hints[i].name)) return hints[i].hint;
    return NULL;
}

/* Whether a plain key is declared by a plugin the run names outright (--model, a --plugin) or,
 * without --model, by one of the models loom ships, one of which the data or the checkpoint's
 * config.json will choose. */
static int named_plugin_declares(const loom_args *args, const char *key)
{
    static const char *const shipped_models[] = {"gpt2", "mlp", "t5"};
    const loom_plugin *p = NULL;
    if (args->model && *args->model) {
        if (loom_plugin_load(args->model, 0, &p) == LOOM_OK && loom_config_declares(p->desc, key)) return 1;
    } else {
        for (size_t i = 0; i < sizeof shipped_models / sizeof *shipped_models; i++)
            if (loom_plugin_load(shipped_models[i], LOOM_KIND_MODEL, &p) == LOOM_OK &&
                loom_config_declares(p->desc, key))
                return 1;
    }
    for (size_t i = 0; i < args->plugin.count; i++)
        if (loom_plugin_load(args->plugin.items[i], 0, &p) == LOOM_OK && loom_config_declares(p->desc, key)) return 1;
    loom_error_clear(); /* a plugin that does not load is reported when the run loads it */
    return 0;
}

/* Whether every key passes without looking further: dotted with a prefix that loads as a
 * plugin by that name, or plain and declared by the model or a --plugin (a model's
 * `--n_layer`). Seeing it without the scan below spares opening every plugin on the path, the
 * CUDA backend among them, whose cuBLAS alone touches some 200 MB while it is relocated. */
static int all_name_their_plugin(const loom_args *args)
{
    for (size_t i = 0; i < args->unknown_keys.count; i++) {
        const char *key = args->unknown_keys.items[i], *dot = strchr(key, '.');
        char prefix[256];
        const loom_plugin *p = NULL;
        if (!dot) {
            if (!named_plugin_declares(args, key)) return 0;
            continue;
        }
        if ((size_t)(dot - key) >= sizeof prefix) return 0;
        snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - key), key);
        if (loom_plugin_load(prefix, 0, &p) != LOOM_OK) {
            loom_error_clear();
            return 0;
        }
    }
    return 1;
}

loom_status loom_command_check_unknown(const loom_args *args)
{
    if (args->unknown_keys.count == 0) return LOOM_OK;
    known k = {0};
    loom_status st = loom_loader_init((const char *const *)args->plugin_dir.items, args->plugin_dir.count);
    if (st != LOOM_OK) return st;
    if (all_name_their_plugin(args)) return LOOM_OK;
    loom_plugin_foreach(visit, &k);
    for (size_t i = 0; i < args->plugin.count; i++) {
        const loom_plugin *p = NULL;
        if (loom_plugin_load(args->plugin.items[i], 0, &p) == LOOM_OK) add_plugin(&k, p->desc);
    }
    loom_error_clear(); /* a plugin that does not load is reported when the run loads it */
    static const char *const arguments[] = {
#define LOOM_ARG(kind, name, default_text, status, note, doc) #name,
#include "training_args.def"
#undef LOOM_ARG
    };
    for (size_t i = 0; i < sizeof arguments / sizeof *arguments; i++) add(&k.keys, arguments[i]);
    if (k.plugins.failed || k.keys.failed) st = loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; st == LOOM_OK && i < args->unknown_keys.count; i++) {
        const char *key = args->unknown_keys.items[i];
        const char *dot = strchr(key, '.');
        if (has(&k.keys, key)) continue;
        if (dot) {
            char prefix[256];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - key), key);
            if (has(&k.plugins, prefix)) continue; /* the trainer names the plugin */
        }
        const char *source = i < args->unknown_sources.count ? args->unknown_sources.items[i] : "the command line";
        const char *closest = loom_closest_name(key, (const char *const *)k.keys.items, k.keys.count);
        const char *hint = hf_script_hint(key);
        if (hint)
            st = loom_error(LOOM_E_INVALID, "unknown argument --%s (from %s): an argument of HF's example scripts; %s",
                            key, source, hint);
        else if (closest)
            st =
                loom_error(LOOM_E_INVALID, "unknown argument --%s (from %s); did you mean --%s?", key, source, closest);
        else
            st = loom_error(LOOM_E_INVALID,
                            "unknown argument --%s (from %s): not a training argument nor a key of any plugin found "
                            "(see `loom train --help`, `loom plugins`)",
                            key, source);
    }
    names_free(&k.plugins);
    names_free(&k.keys);
    return st;
}
