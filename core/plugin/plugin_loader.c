/*
 * plugin_loader.c - finding, opening and checking plugins (see plugin_loader.h).
 *
 * Two tables live here: the files opened (keyed by real path, so one file reached through
 * two spellings is opened and checked once) and the loom_plugin records handed out (keyed by
 * descriptor, which is static data of its file, so loading the same plugin twice returns the
 * same record). Nothing is ever closed: plugin code may run until exit (docs/architecture.md#never-unload).
 */
#include "plugin_loader.h"

#include "error.h"
#include "vtable_rules.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <ltdl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* A plugin that ignores `index` would return descriptors forever. */
#define MAX_DESCRIPTORS 64

#define END_OF(T, m) (offsetof(T, m) + sizeof(((T *)0)->m))

/* The ABI 1.0 descriptor: no 1.x plugin may be shorter, whatever minor it was built for. */
#define DESC_MIN_SIZE END_OF(loom_plugin_desc, params)

typedef struct struct_header {
    LOOM_STRUCT_HEADER;
} struct_header;

typedef struct loaded_file {
    char *real_path;
    char *path; /* as first opened, for loom_plugin.path */
    lt_dlhandle handle;
    loom_plugin_query_fn query;
} loaded_file;

static struct {
    int ltdl_ready;  /* lt_dlinit is never undone: lt_dlexit would close every plugin */
    int initialised; /* the folders below are set */
    char **dirs;
    size_t n_dirs;
    loaded_file *files;
    size_t n_files;
    loom_plugin **plugins; /* pointers, so records stay put when the table grows */
    size_t n_plugins;
} loader;

const char *loom_kind_name(uint32_t kind)
{
    switch (kind) {
    case LOOM_KIND_OPTIMIZER: return "optimizer";
    case LOOM_KIND_SCHEDULER: return "scheduler";
    case LOOM_KIND_SHARDING: return "sharding";
    case LOOM_KIND_PRECISION: return "precision";
    case LOOM_KIND_CALLBACK: return "callback";
    case LOOM_KIND_COMM: return "comm";
    case LOOM_KIND_MODEL: return "model";
    case LOOM_KIND_BACKEND: return "backend";
    default: return "unknown";
    }
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join_path(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", dir, file);
    return path;
}

static void free_dirs(void)
{
    for (size_t i = 0; i < loader.n_dirs; i++)
        free(loader.dirs[i]);
    free(loader.dirs);
    loader.dirs = NULL;
    loader.n_dirs = 0;
}

/* Append dir[0..len) without trailing slashes; empty entries (as in "a::b") are skipped. */
static loom_status add_dir(const char *dir, size_t len)
{
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len == 0)
        return LOOM_OK;
    char **grown = realloc(loader.dirs, (loader.n_dirs + 1) * sizeof *grown);
    if (!grown)
        return loom_error(LOOM_E_NOMEM, "plugin loader: out of memory for the search path");
    loader.dirs = grown;
    if (!(loader.dirs[loader.n_dirs] = strndup(dir, len)))
        return loom_error(LOOM_E_NOMEM, "plugin loader: out of memory for the search path");
    loader.n_dirs++;
    return LOOM_OK;
}

loom_status loom_loader_init(const char *const *plugin_dirs, size_t n_plugin_dirs)
{
    if (!loader.ltdl_ready) {
        if (lt_dlinit() != 0)
            return loom_error(LOOM_E_INTERNAL, "plugin loader: lt_dlinit failed: %s", lt_dlerror());
        loader.ltdl_ready = 1;
    }
    free_dirs();
    loader.initialised = 0;

    loom_status s = LOOM_OK;
    /* Where this libloom lives decides which built-in folders count: the build tree's plugin
     * folder only for a libloom inside that build tree, and for an installed one the plugin
     * folder beside it (<libdir>/loom/plugins, so a moved prefix still works), else the
     * configured install folder. */
    char self_dir[PATH_MAX] = "";
    Dl_info info;
    /* For a program that carries the core statically (the `loom` command) dladdr names the
     * program as it was invoked (argv[0]), which need not resolve: ask the kernel instead. */
    const int in_shared_object =
        dladdr((void *)loom_loader_init, &info) && info.dli_fname && strstr(info.dli_fname, ".so") != NULL;
    if (in_shared_object ? realpath(info.dli_fname, self_dir) != NULL : realpath("/proc/self/exe", self_dir) != NULL) {
        char *slash = strrchr(self_dir, '/');
        if (slash) *slash = '\0';
    }
    char build_root[PATH_MAX];
    snprintf(build_root, sizeof build_root, "%s", LOOM_BUILD_PLUGIN_DIR);
    char *last = strrchr(build_root, '/');
    if (last) *last = '\0';
    int in_build_tree = self_dir[0] && strncmp(self_dir, build_root, strlen(build_root)) == 0;
    char beside[PATH_MAX + 32];
    snprintf(beside, sizeof beside, "%s/loom/plugins", self_dir);
    /* The `loom` command carries the core statically: it lives in <prefix>/bin, its plugins in
     * <prefix>/<libdir>/loom/plugins. */
    char from_bin[2 * PATH_MAX];
    snprintf(from_bin, sizeof from_bin, "%s/../%s/loom/plugins", self_dir, LOOM_INSTALL_LIBDIR);
    if (self_dir[0] && !is_dir(beside) && realpath(from_bin, beside) == NULL)
        snprintf(beside, sizeof beside, "%s/loom/plugins", self_dir);
    if (in_build_tree && is_dir(LOOM_BUILD_PLUGIN_DIR))
        s = add_dir(LOOM_BUILD_PLUGIN_DIR, strlen(LOOM_BUILD_PLUGIN_DIR));
    if (!s && !in_build_tree && self_dir[0] && is_dir(beside))
        s = add_dir(beside, strlen(beside));
    else if (!s && !in_build_tree && is_dir(LOOM_INSTALL_PLUGIN_DIR))
        s = add_dir(LOOM_INSTALL_PLUGIN_DIR, strlen(LOOM_INSTALL_PLUGIN_DIR));
    for (const char *p = getenv("LOOM_PLUGIN_PATH"); !s && p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        s = add_dir(p, len);
        p = colon ? colon + 1 : NULL;
    }
    for (size_t i = 0; !s && i < n_plugin_dirs; i++) {
        /* A folder the user named that is not there is a typo to report, not a folder to skip:
         * the plugin it holds would then be "not found" with no hint why. */
        if (plugin_dirs[i] && !is_dir(plugin_dirs[i]))
            s = loom_error(LOOM_E_NOT_FOUND, "--plugin_dir %s: %s", plugin_dirs[i],
                           access(plugin_dirs[i], F_OK) == 0 ? "not a folder" : "no such folder");
        else if (plugin_dirs[i])
            s = add_dir(plugin_dirs[i], strlen(plugin_dirs[i]));
    }
    if (s) {
        free_dirs();
        return s;
    }
    loader.initialised = 1;
    return LOOM_OK;
}

/* Loading before loom_loader_init searches the built-in folders and $LOOM_PLUGIN_PATH. */
static loom_status ensure_init(void)
{
    return loader.initialised ? LOOM_OK : loom_loader_init(NULL, 0);
}

void loom_loader_search_path(char *buf, size_t size)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < loader.n_dirs && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", loader.dirs[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* dlerror() text for one line: without the "<path>: " prefix our message already has, and
 * with any newline flattened. */
static void clean_reason(char *out, size_t size, const char *why, const char *path)
{
    size_t plen = strlen(path);
    if (!why)
        why = "unknown dlopen error";
    if (strncmp(why, path, plen) == 0 && why[plen] == ':' && why[plen + 1] == ' ')
        why += plen + 2;
    snprintf(out, size, "%s", why);
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
}

/* "plugin 'x' at /p/x.so", or "plugin /p/x.so" when the spec was that path: every message
 * about a file starts with it. */
static const char *subject(char *buf, size_t size, const char *spec, const char *path)
{
    if (strcmp(spec, path) == 0)
        snprintf(buf, size, "plugin %s", path);
    else
        snprintf(buf, size, "plugin '%s' at %s", spec, path);
    return buf;
}

/* Open `path` (known to exist) once and find its entry symbol. */
static loom_status open_file(const char *who, const char *path, loaded_file **out)
{
    char reason[1024];
    char *real = realpath(path, NULL);
    if (!real)
        return loom_error(LOOM_E_IO, "%s: %s", who, strerror(errno));
    for (size_t i = 0; i < loader.n_files; i++) {
        if (strcmp(loader.files[i].real_path, real) == 0) {
            free(real);
            *out = &loader.files[i];
            return LOOM_OK;
        }
    }

    /* libltdl opens with RTLD_LAZY and turns every failure into "file not found". Opening
     * with RTLD_NOW first gives dlerror()'s real reason, and makes an unresolved function
     * fail here instead of killing the process at its first call. */
    dlerror();
    void *probe = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!probe) {
        clean_reason(reason, sizeof reason, dlerror(), path);
        free(real);
        return loom_error(LOOM_E_IO, "%s cannot be loaded: %s", who, reason);
    }
    /* No lt_dladvise_ext: the path is already complete, and with it libltdl would open
     * "x.so" beside an extension-less "x", or fail on "x" alone. */
    lt_dlhandle handle = NULL;
    lt_dladvise advise;
    if (lt_dladvise_init(&advise) == 0) {
        if (lt_dladvise_local(&advise) == 0)
            handle = lt_dlopenadvise(path, advise);
        lt_dladvise_destroy(&advise);
    }
    if (!handle)
        clean_reason(reason, sizeof reason, lt_dlerror(), path);
    dlclose(probe); /* after libltdl took its own reference, so nothing is unmapped */
    if (!handle) {
        free(real);
        return loom_error(LOOM_E_IO, "%s cannot be loaded: %s", who, reason);
    }

    loom_plugin_query_fn query = (loom_plugin_query_fn)lt_dlsym(handle, LOOM_PLUGIN_QUERY_SYMBOL);
    if (!query) {
        free(real);
        return loom_error(LOOM_E_NOT_FOUND, "%s is not a loom plugin: it does not export %s",
                          who, LOOM_PLUGIN_QUERY_SYMBOL);
    }
    loaded_file *grown = realloc(loader.files, (loader.n_files + 1) * sizeof *grown);
    char *path_copy = strdup(path);
    if (!grown || !path_copy) {
        if (grown)
            loader.files = grown;
        free(path_copy);
        free(real);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", who);
    }
    loader.files = grown;
    loader.files[loader.n_files] = (loaded_file){real, path_copy, handle, query};
    *out = &loader.files[loader.n_files++];
    return LOOM_OK;
}

/* A key declared twice is a plugin bug the configuration would hide: one --NAME.KEY sets one of
 * the two entries, the listing shows both, and which the plugin reads is an accident. */
static loom_status check_params(const char *who, const loom_plugin_desc *d)
{
    for (const loom_param_spec *s = d->params; s && s->key; s++)
        for (const loom_param_spec *earlier = d->params; earlier != s; earlier++)
            if (strcmp(earlier->key, s->key) == 0)
                return loom_error(LOOM_E_FORMAT, "%s: plugin '%s' declares the parameter '%s' twice (--%s.%s)", who,
                                  d->name, s->key, d->name, s->key);
    return LOOM_OK;
}

static loom_status check_desc(const char *who, uint32_t index, const loom_plugin_desc *d)
{
    if (d->abi_major != LOOM_ABI_MAJOR)
        return loom_error(LOOM_E_ABI, "%s was built for loom ABI %u.%u; this loom is ABI %d.%d",
                          who, d->abi_major, d->abi_minor, LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    if (d->struct_size < DESC_MIN_SIZE)
        return loom_error(LOOM_E_ABI, "%s: descriptor %u is %u bytes, smaller than the %zu of loom ABI 1.0",
                          who, index, d->struct_size, (size_t)DESC_MIN_SIZE);
    if (!d->name)
        return loom_error(LOOM_E_FORMAT, "%s: descriptor %u has no name", who, index);
    /* The name prefixes the plugin's keys on the command line (--NAME.KEY) and is looked up as
     * NAME.so: a '.', a '/', a space or a capital would make it unreachable (loom.h: lowercase). */
    if (!*d->name || d->name[strspn(d->name, "abcdefghijklmnopqrstuvwxyz0123456789_-")])
        return loom_error(LOOM_E_FORMAT,
                          "%s: descriptor %u is named '%s': a plugin's name is lowercase letters, "
                          "digits, '_' and '-'",
                          who, index, d->name);
    if (!d->vtable)
        return loom_error(LOOM_E_FORMAT, "%s: descriptor '%s' has no vtable", who, d->name);
    loom_status s = check_params(who, d);
    if (s) return s;
    const struct_header *vt = d->vtable;
    if (vt->abi_major != LOOM_ABI_MAJOR)
        return loom_error(LOOM_E_ABI, "%s: the %s vtable of '%s' was built for loom ABI %u.%u; this loom is ABI %d.%d",
                          who, loom_kind_name(d->kind), d->name, vt->abi_major, vt->abi_minor,
                          LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    size_t min = loom_vtable_min_size(d->kind);
    if (vt->struct_size < min)
        return loom_error(LOOM_E_ABI, "%s: the %s vtable of '%s' is %u bytes, smaller than the %zu of loom ABI 1.0",
                          who, loom_kind_name(d->kind), d->name, vt->struct_size, min);
    const char *missing = loom_vtable_missing_member(d->kind, vt);
    if (missing)
        return loom_error(LOOM_E_ABI, "%s: the %s vtable of '%s' leaves its required member '%s' NULL", who,
                          loom_kind_name(d->kind), d->name, missing);
    return LOOM_OK;
}

/* Every descriptor of the file, each checked; a file with one bad descriptor is refused. */
static loom_status read_descs(const char *who, const loaded_file *f,
                              const loom_plugin_desc **descs, size_t *n)
{
    *n = 0;
    for (uint32_t i = 0;; i++) {
        const loom_plugin_desc *d = f->query(LOOM_ABI_MAJOR, i);
        if (!d)
            break;
        if (i == MAX_DESCRIPTORS)
            return loom_error(LOOM_E_FORMAT, "%s: %s returns more than %d descriptors (does it ignore index?)",
                              who, LOOM_PLUGIN_QUERY_SYMBOL, MAX_DESCRIPTORS);
        loom_status s = check_desc(who, i, d);
        if (s)
            return s;
        descs[(*n)++] = d;
    }
    if (*n == 0)
        return loom_error(LOOM_E_FORMAT, "%s: %s(%d, 0) returned NULL: it declares no plugin",
                          who, LOOM_PLUGIN_QUERY_SYMBOL, LOOM_ABI_MAJOR);
    return LOOM_OK;
}

/* "x" for "x", "x.so", "dir/x.so"; the name a descriptor is preferred by. */
static char *spec_base_name(const char *spec)
{
    const char *slash = strrchr(spec, '/');
    const char *base = slash ? slash + 1 : spec;
    size_t len = strlen(base);
    if (len > 3 && strcmp(base + len - 3, ".so") == 0)
        len -= 3;
    return strndup(base, len);
}

/* The file a spec names: a path as is, otherwise NAME.so in the first folder that has it. */
static loom_status resolve(const char *spec, const char *base, char **out)
{
    if (strchr(spec, '/')) {
        struct stat st;
        if (stat(spec, &st) != 0)
            return loom_error(LOOM_E_NOT_FOUND, "plugin %s: no such file", spec);
        if (!S_ISREG(st.st_mode))
            return loom_error(LOOM_E_NOT_FOUND, "plugin %s: not a regular file", spec);
        *out = strdup(spec);
        return *out ? LOOM_OK : loom_error(LOOM_E_NOMEM, "plugin '%s': out of memory", spec);
    }
    char file[1024];
    snprintf(file, sizeof file, "%s.so", base);
    for (size_t i = 0; i < loader.n_dirs; i++) {
        char *path = join_path(loader.dirs[i], file);
        if (!path)
            return loom_error(LOOM_E_NOMEM, "plugin '%s': out of memory", spec);
        if (is_file(path)) {
            *out = path;
            return LOOM_OK;
        }
        free(path);
    }
    if (loader.n_dirs == 0)
        return loom_error(LOOM_E_NOT_FOUND,
                          "plugin '%s': no %s and no plugin folder to search (set LOOM_PLUGIN_PATH or --plugin_dir)",
                          spec, file);
    char searched[1536];
    loom_loader_search_path(searched, sizeof searched);
    /* "--plugin fake.so" with ./fake.so there: a name is looked up in the plugin folders only. */
    struct stat here;
    if (strchr(spec, '/') == NULL && stat(spec, &here) == 0 && S_ISREG(here.st_mode))
        return loom_error(LOOM_E_NOT_FOUND, "plugin '%s': no %s in %s (for the file in this folder, give a path: ./%s)",
                          spec, file, searched, spec);
    return loom_error(LOOM_E_NOT_FOUND, "plugin '%s': no %s in %s", spec, file, searched);
}

static const char *article(const char *word) { return strchr("aeiou", word[0]) ? "an" : "a"; }

/* The wrong-kind error: what the file holds against what was asked for. */
static loom_status wrong_kind(const char *who, uint32_t kind, const loom_plugin_desc *const *descs, size_t n)
{
    const char *want = loom_kind_name(kind);
    if (n == 1) {
        const char *have = loom_kind_name(descs[0]->kind);
        return loom_error(LOOM_E_INVALID, "%s is %s %s plugin, not %s %s plugin", who, article(have), have,
                          article(want), want);
    }
    char held[512];
    size_t used = 0;
    held[0] = '\0';
    for (size_t i = 0; i < n && used < sizeof held; i++) {
        int w = snprintf(held + used, sizeof held - used, "%s%s '%s'", i ? ", " : "",
                         loom_kind_name(descs[i]->kind), descs[i]->name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return loom_error(LOOM_E_INVALID, "%s holds the plugins %s; none is %s %s plugin", who, held, article(want), want);
}

static loom_status remember(const loom_plugin_desc *desc, const loaded_file *f, const loom_plugin **out)
{
    for (size_t i = 0; i < loader.n_plugins; i++) {
        if (loader.plugins[i]->desc == desc) {
            *out = loader.plugins[i];
            return LOOM_OK;
        }
    }
    loom_plugin **grown = realloc(loader.plugins, (loader.n_plugins + 1) * sizeof *grown);
    if (grown)
        loader.plugins = grown;
    loom_plugin *p = grown ? malloc(sizeof *p) : NULL;
    char *path = p ? strdup(f->path) : NULL;
    if (!path) {
        free(p);
        return loom_error(LOOM_E_NOMEM, "plugin '%s': out of memory", desc->name);
    }
    *p = (loom_plugin){desc, path, f->handle};
    loader.plugins[loader.n_plugins++] = p;
    *out = p;
    return LOOM_OK;
}

loom_status loom_plugin_load(const char *spec, uint32_t kind, const loom_plugin **out)
{
    *out = NULL;
    if (!spec || !*spec)
        return loom_error(LOOM_E_INVALID, "plugin loader: empty plugin name");
    loom_status s = ensure_init();
    if (s)
        return s;
    char *base = spec_base_name(spec);
    char *path = NULL;
    if (!base)
        return loom_error(LOOM_E_NOMEM, "plugin '%s': out of memory", spec);
    if ((s = resolve(spec, base, &path)) != LOOM_OK) {
        free(base);
        return s;
    }

    char who[2048];
    subject(who, sizeof who, spec, path);
    loaded_file *f = NULL;
    const loom_plugin_desc *descs[MAX_DESCRIPTORS];
    size_t n = 0;
    if (!(s = open_file(who, path, &f)))
        s = read_descs(who, f, descs, &n);
    if (!s) {
        /* The descriptor named like the file, else the first of the kind. */
        const loom_plugin_desc *pick = NULL, *first = NULL;
        for (size_t i = 0; i < n && !pick; i++) {
            if (kind && descs[i]->kind != kind)
                continue;
            if (strcmp(descs[i]->name, base) == 0)
                pick = descs[i];
            else if (!first)
                first = descs[i];
        }
        if (!pick)
            pick = first;
        s = pick ? remember(pick, f, out) : wrong_kind(who, kind, descs, n);
    }
    free(path);
    free(base);
    return s;
}

/* Close a file that only a listing opened: nothing loaded from it, so nothing of it can run.
 * A listing must not leave a backend's libraries mapped in a run that never uses them (the
 * cuda plugin brings the CUDA runtime and cuBLAS: 60 MiB resident in a CPU run). */
static void close_listed(lt_dlhandle handle)
{
    for (size_t i = 0; i < loader.n_plugins; i++)
        if (loader.plugins[i]->handle == handle) return;
    for (size_t i = 0; i < loader.n_files; i++) {
        if (loader.files[i].handle != handle) continue;
        free(loader.files[i].real_path);
        free(loader.files[i].path);
        memmove(&loader.files[i], &loader.files[i + 1], (loader.n_files - i - 1) * sizeof *loader.files);
        loader.n_files--;
        lt_dlclose(handle);
        return;
    }
}

static void visit_file(loom_plugin_visit_fn fn, void *context, const char *path, const char *name, int shadowed)
{
    char who[2048];
    loaded_file *f = NULL;
    const loom_plugin_desc *descs[MAX_DESCRIPTORS];
    size_t n = 0;
    size_t open_before = loader.n_files;
    subject(who, sizeof who, name, path);
    loom_status s = open_file(who, path, &f);
    /* Opened here (not already loaded): closed again below. fn may open more files. */
    lt_dlhandle opened = !s && loader.n_files > open_before ? f->handle : NULL;
    if (!s)
        s = read_descs(who, f, descs, &n);
    if (s) {
        fn(context, path, NULL, shadowed, loom_error_message());
    } else {
        for (size_t i = 0; i < n; i++)
            fn(context, path, descs[i], shadowed, NULL);
    }
    if (opened) close_listed(opened);
}

static int so_file(const struct dirent *e)
{
    size_t len = strlen(e->d_name);
    return len > 3 && strcmp(e->d_name + len - 3, ".so") == 0;
}

/* Byte order, not the locale's: the listing must not change with LC_COLLATE. */
static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int in_list(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return 1;
    return 0;
}

/* Append a copy of s; on allocation failure the entry is just not remembered. */
static void add_to_list(char ***list, size_t *n, const char *s)
{
    char **grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown)
        return;
    *list = grown;
    if ((grown[*n] = strdup(s)) != NULL)
        (*n)++;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void loom_plugin_foreach(loom_plugin_visit_fn fn, void *context)
{
    if (ensure_init())
        return;
    char **seen_dirs = NULL, **seen_files = NULL;
    size_t n_seen_dirs = 0, n_seen_files = 0;
    for (size_t d = 0; d < loader.n_dirs; d++) {
        /* A folder listed twice (LOOM_PLUGIN_PATH and --plugin_dir) is listed once. */
        char *real_dir = realpath(loader.dirs[d], NULL);
        if (!real_dir)
            continue;
        if (in_list(seen_dirs, n_seen_dirs, real_dir)) {
            free(real_dir);
            continue;
        }
        add_to_list(&seen_dirs, &n_seen_dirs, real_dir);
        free(real_dir);

        struct dirent **entries = NULL;
        int n = scandir(loader.dirs[d], &entries, so_file, by_name);
        for (int i = 0; i < n; i++) {
            const char *file = entries[i]->d_name;
            char *path = join_path(loader.dirs[d], file);
            if (path && is_file(path)) {
                /* Loading by name takes the first folder's file: later ones are shadowed. */
                int shadowed = in_list(seen_files, n_seen_files, file);
                char *name = strndup(file, strlen(file) - 3);
                if (name)
                    visit_file(fn, context, path, name, shadowed);
                free(name);
                if (!shadowed)
                    add_to_list(&seen_files, &n_seen_files, file);
            }
            free(path);
            free(entries[i]);
        }
        free(entries);
    }
    free_list(seen_dirs, n_seen_dirs);
    free_list(seen_files, n_seen_files);
}

void loom_loader_shutdown(void)
{
    for (size_t i = 0; i < loader.n_plugins; i++) {
        free(loader.plugins[i]->path);
        free(loader.plugins[i]);
    }
    free(loader.plugins);
    for (size_t i = 0; i < loader.n_files; i++) {
        free(loader.files[i].real_path);
        free(loader.files[i].path);
    }
    free(loader.files);
    free_dirs();
    loader.plugins = NULL;
    loader.n_plugins = 0;
    loader.files = NULL;
    loader.n_files = 0;
    loader.initialised = 0;
}
