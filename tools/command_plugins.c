/*
 * command_plugins.c - `loom plugins`: every plugin found in the search path (kind, name,
 * version, ABI, path), or `loom plugins --help NAME`: one plugin's summary and keys.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "error.h"
#include "plugin_loader.h"

typedef struct listing {
    int count;
    int broken;
} listing;

static void print_one(void *context, const char *path, const loom_plugin_desc *desc, int shadowed, const char *error)
{
    listing *l = context;
    if (!desc) {
        printf("%-10s %-20s %-8s %-6s %s  (cannot load: %s)\n", "?", "?", "?", "?", path, error ? error : "?");
        l->broken++;
        return;
    }
    char abi[32];
    snprintf(abi, sizeof abi, "%u.%u", desc->abi_major, desc->abi_minor);
    printf("%-10s %-20s %-8s %-6s %s%s\n", loom_kind_name(desc->kind), desc->name, desc->version ? desc->version : "-",
           abi, path, shadowed ? "  (shadowed by an earlier one)" : "");
    l->count++;
}

static const char *type_name(uint32_t type)
{
    switch (type) {
    case LOOM_PARAM_BOOL: return "bool";
    case LOOM_PARAM_INT: return "int";
    case LOOM_PARAM_FLOAT: return "float";
    case LOOM_PARAM_STRING: return "string";
    default: return "?";
    }
}

int loom_command_plugins(int argc, char **argv)
{
    const char *help = NULL;
    const char *dirs[64] = {0};
    size_t n_dirs = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) && i + 1 == argc) {
            printf("usage: loom plugins [--plugin_dir DIR]... [--help NAME]\n\n"
                   "Lists the plugins found on the search path (the build or install folder,\n"
                   "LOOM_PLUGIN_PATH, each --plugin_dir) with kind, version, ABI and path;\n"
                   "--help NAME describes one plugin and its configuration keys.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--help") && i + 1 < argc) help = argv[++i];
        else if (!strcmp(argv[i], "--plugin_dir") && i + 1 < argc && n_dirs < 64) dirs[n_dirs++] = argv[++i];
        else {
            fprintf(stderr, "loom: error: plugins: %s '%s' (usage: loom plugins [--plugin_dir DIR]... [--help NAME])\n",
                    !strcmp(argv[i], "--help") || !strcmp(argv[i], "--plugin_dir") ? "no value after"
                                                                                   : "unexpected argument",
                    argv[i]);
            return 2;
        }
    }
    loom_status st = loom_loader_init(dirs, n_dirs);
    if (st != LOOM_OK) return loom_command_fail(st);
    if (help) {
        const loom_plugin *p = NULL;
        if ((st = loom_plugin_load(help, 0, &p)) != LOOM_OK) return loom_command_fail(st);
        const loom_plugin_desc *d = p->desc;
        printf("%s %s %s (ABI %u.%u) — %s\n  %s\n", loom_kind_name(d->kind), d->name, d->version ? d->version : "",
               d->abi_major, d->abi_minor, p->path, d->summary ? d->summary : "");
        if (!d->params || !d->params[0].key) printf("  no configuration keys\n");
        for (const loom_param_spec *s = d->params; s && s->key; s++)
            printf("  --%s.%-24s %-6s default %-10s %s\n", d->name, s->key, type_name(s->type),
                   s->default_value ? s->default_value : "(none)", s->doc ? s->doc : "");
        return 0;
    }
    char path[8192];
    loom_loader_search_path(path, sizeof path);
    printf("search path: %s\n", path);
    printf("%-10s %-20s %-8s %-6s %s\n", "KIND", "NAME", "VERSION", "ABI", "PATH");
    listing l = {0, 0};
    loom_plugin_foreach(print_one, &l);
    printf("%d plugins%s\n", l.count, l.broken ? " (and files that are not loadable plugins, above)" : "");
    return 0;
}
