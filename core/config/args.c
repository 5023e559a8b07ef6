/* args.c - loom_args' life cycle and the command line (HfArgumentParser's forms). The config
 * file, the derived defaults and the JSON output live in args_file.c, args_resolve.c and
 * args_json.c. */
#include "args.h"

#include <stdlib.h>
#include <string.h>

#include "args_internal.h"
#include "error.h"

void loom_args_init(loom_args *args)
{
    memset(args, 0, sizeof *args);
    /* Only a failed strdup of a default can fail here; the field then stays None and the
     * next allocation reports the shortage. */
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++)
        (void)loom__arg_set_default(args, &loom__arg_table[i]);
}

void loom_args_free(loom_args *args)
{
    if (!args) return;
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++) {
        const loom__arg_desc *d = &loom__arg_table[i];
        void *field = loom__arg_field(args, d);
        if (d->kind == LOOM__K_STRING) free(*(char **)field);
        if (d->kind == LOOM__K_LIST) loom__list_clear(field);
    }
    loom__list_clear(&args->unknown_keys);
    loom__list_clear(&args->unknown_values);
    loom__list_clear(&args->unknown_sources);
    memset(args, 0, sizeof *args);
}

/* "--x..." with something after the dashes; "-1" and "--" alone are values/positionals. */
static int is_flag(const char *tok)
{
    return tok[0] == '-' && tok[1] == '-' && tok[2] != '\0';
}

/* The row a flag names: exactly, with dashes for underscores (HfArgumentParser accepts
 * --per-device-train-batch-size too), or as --no_<name> for a bool whose default is true
 * (HfArgumentParser's store_false twin, e.g. --no_remove_unused_columns). */
static const loom__arg_desc *lookup_flag(const char *name, int *negated)
{
    *negated = 0;
    const loom__arg_desc *d = loom__arg_find(name);
    if (d) return d;
    char norm[256];
    size_t n = strlen(name);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '-' ? '_' : name[i];
    if ((d = loom__arg_find(norm))) return d;
    if (strncmp(norm, "no_", 3) == 0 && (d = loom__arg_find(norm + 3)) && d->kind == LOOM__K_BOOL &&
        strcmp(d->default_text, "true") == 0) {
        *negated = 1;
        return d;
    }
    return NULL;
}

/* The value after argv[*i] when it is not the next flag; advances *i past it. */
static const char *take_value(int argc, char **argv, int *i)
{
    if (*i + 1 < argc && !is_flag(argv[*i + 1])) return argv[++*i];
    return NULL;
}

/* --config FILE is read before everything else, wherever it stands, so the command line
 * can override any of its keys; the last one given wins, like any other flag. */
static loom_status find_config(int argc, char **argv, const char **path)
{
    *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (!(*path = take_value(argc, argv, &i)))
                return loom_error(LOOM_E_INVALID, "--config needs a JSON file name");
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        }
    }
    if (*path && !**path) return loom_error(LOOM_E_INVALID, "--config needs a JSON file name");
    return LOOM_OK;
}

static loom_status set_list_from_cli(loom_args *args, const loom__arg_desc *d, loom__arg_origin *origin,
                                     const char *inline_value, int argc, char **argv, int *i)
{
    loom_string_list *list = loom__arg_field(args, d);
    size_t index = (size_t)(d - loom__arg_table);
    /* The command line replaces the file's list; repeated flags then append. */
    if (!origin->cli_list_started[index]) {
        loom__list_clear(list);
        origin->cli_list_started[index] = 1;
    }
    if (inline_value) return loom__list_append(list, inline_value);
    size_t before = list->count;
    for (const char *v; (v = take_value(argc, argv, i));) {
        loom_status st = loom__list_append(list, v);
        if (st != LOOM_OK) return st;
    }
    if (list->count == before) return loom_error(LOOM_E_INVALID, "--%s needs at least one value", d->name);
    return LOOM_OK;
}

static loom_status parse_one(loom_args *args, loom__arg_origin *origin, const char *name, const char *inline_value,
                             int argc, char **argv, int *i)
{
    int negated;
    const loom__arg_desc *d = lookup_flag(name, &negated);
    if (!d) {
        /* A plugin's flag, or a typo: plugin_config.c decides once the plugins are known. */
        const char *v = inline_value ? inline_value : take_value(argc, argv, i);
        return loom__args_add_unknown(args, name, v ? v : "true", LOOM__SRC_CLI);
    }
    size_t index = (size_t)(d - loom__arg_table);
    origin->source[index] = LOOM__SRC_CLI;
    if (negated) {
        if (inline_value) return loom_error(LOOM_E_INVALID, "--%s takes no value", name);
        *(int32_t *)loom__arg_field(args, d) = 0;
        return LOOM_OK;
    }
    switch (d->kind) {
    case LOOM__K_LIST:
        return set_list_from_cli(args, d, origin, inline_value, argc, argv, i);
    case LOOM__K_BOOL:
    case LOOM__K_OPT_BOOL: {
        /* A bool alone means true; a following non-flag token is its value. */
        const char *v = inline_value ? inline_value : take_value(argc, argv, i);
        return loom__arg_set_text(args, d, v ? v : "true", LOOM__SRC_CLI);
    }
    default: {
        const char *v = inline_value ? inline_value : take_value(argc, argv, i);
        /* v5's include_num_input_tokens_seen, v4.4's sharded_ddp and debug are strings that still
         * take an older release's bool: alone, true. */
        if (!v && (d == &loom__arg_table[LOOM__ARG_include_num_input_tokens_seen] ||
                   d == &loom__arg_table[LOOM__ARG_sharded_ddp] || d == &loom__arg_table[LOOM__ARG_debug]))
            v = "true";
        if (!v) return loom_error(LOOM_E_INVALID, "--%s needs a value", d->name);
        return loom__arg_set_text(args, d, v, LOOM__SRC_CLI);
    }
    }
}

static loom_status parse_command_line(loom_args *args, loom__arg_origin *origin, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *tok = argv[i];
        if (!is_flag(tok))
            return loom_error(LOOM_E_INVALID, "unexpected argument '%s': arguments are given as --name value", tok);
        const char *body = tok + 2, *eq = strchr(body, '=');
        size_t len = eq ? (size_t)(eq - body) : strlen(body);
        if (len == 0) return loom_error(LOOM_E_INVALID, "unexpected argument '%s': no name after --", tok);
        char *name = strndup(body, len);
        if (!name) return loom_error(LOOM_E_NOMEM, "out of memory");
        loom_status st = LOOM_OK;
        if (strcmp(name, "config") == 0) {
            if (!eq) take_value(argc, argv, &i); /* read already, by find_config */
        } else {
            st = parse_one(args, origin, name, eq ? eq + 1 : NULL, argc, argv, &i);
        }
        free(name);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

loom_status loom_args_parse(loom_args *args, int argc, char **argv)
{
    loom__arg_origin origin;
    memset(&origin, 0, sizeof origin);
    const char *path;
    loom_status st = find_config(argc, argv, &path);
    if (st != LOOM_OK) return st;
    if (path) {
        if ((st = loom__arg_set_string(&args->config, path)) != LOOM_OK) return st;
        origin.source[LOOM__ARG_config] = LOOM__SRC_CLI;
        if ((st = loom__args_load_file(args, args->config, &origin)) != LOOM_OK) return st;
    }
    if ((st = parse_command_line(args, &origin, argc, argv)) != LOOM_OK) return st;
    if (args->deepspeed && *args->deepspeed && (st = loom__args_adopt_deepspeed(args, &origin)) != LOOM_OK) return st;
    if ((st = loom__args_resolve(args, &origin)) != LOOM_OK) return st;
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++) {
        const char *source = origin.source[i];
        args->origin[i] = !source                                        ? LOOM_ARG_FROM_DEFAULT
                          : source == LOOM__SRC_CLI                      ? LOOM_ARG_FROM_COMMAND_LINE
                          : args->config && !strcmp(source, args->config) ? LOOM_ARG_FROM_CONFIG_FILE
                                                                         : LOOM_ARG_FROM_DEEPSPEED_FILE;
    }
    return LOOM_OK;
}

void loom_args_print_nondefault(const loom_args *args, FILE *out)
{
    for (size_t i = 0; i < LOOM__ARG_COUNT; i++) {
        const loom__arg_desc *d = &loom__arg_table[i];
        if (loom__arg_is_default(args, d)) continue;
        char *text = loom__arg_format(args, d);
        fprintf(out, "  --%s %s\n", d->name, text ? text : "?");
        free(text);
    }
}

const char *loom_args_origin_text(const loom_args *args, size_t row)
{
    switch (row < LOOM__ARG_COUNT ? args->origin[row] : LOOM_ARG_FROM_DEFAULT) {
    case LOOM_ARG_FROM_COMMAND_LINE: return "command line";
    case LOOM_ARG_FROM_CONFIG_FILE: return args->config ? args->config : "--config";
    case LOOM_ARG_FROM_DEEPSPEED_FILE: return args->deepspeed ? args->deepspeed : "--deepspeed";
    case LOOM_ARG_FROM_OUTPUT_DIR:
        return "a checkpoint in --output_dir";
    default: return "default";
    }
}

void loom_args_print_resolved(const loom_args *args, FILE *out, int given_only)
{
    for (int pass = 0; pass < (given_only ? 1 : 2); pass++) {
        for (size_t i = 0; i < LOOM__ARG_COUNT; i++) {
            const loom__arg_desc *d = &loom__arg_table[i];
            if ((args->origin[i] == LOOM_ARG_FROM_DEFAULT) != (pass == 1)) continue;
            char *text = loom__arg_format(args, d);
            fprintf(out, "  --%-30s %-24s (%s)\n", d->name, text ? text : "?", loom_args_origin_text(args, i));
            free(text);
        }
    }
}
