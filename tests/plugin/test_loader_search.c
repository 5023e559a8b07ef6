/* Where plugins are found: folder order, the three spec forms, one record per file, and the
 * listing `loom plugins` is built on. */
#include "error.h"
#include "loader_test_util.h"
#include "plugin_loader.h"
#include "test_util.h"

#define FIXTURE(name) LOOM_FIXTURE_DIR "/" name

static const loom_plugin *load(const char *spec, uint32_t kind)
{
    const loom_plugin *p = NULL;
    loom_status s = loom_plugin_load(spec, kind, &p);
    if (s) fprintf(stderr, "  load %s: %s\n", spec, loom_error_message());
    CHECK(s == LOOM_OK && p != NULL);
    return p;
}

/* Position of part in s, or -1. */
static long where(const char *s, const char *part)
{
    const char *at = strstr(s, part);
    return at ? (long)(at - s) : -1;
}

static void test_search_order(const char *a, const char *b, const char *c)
{
    char path[512], env[1024], buf[8192];
    /* probe.so in B (LOOM_PLUGIN_PATH) and C (--plugin_dir): the environment wins. */
    CHECK(copy_file(FIXTURE("good_optimizer.so"), path_in(path, sizeof path, b, "probe.so")) == 0);
    CHECK(copy_file(FIXTURE("good_optimizer.so"), path_in(path, sizeof path, c, "probe.so")) == 0);
    CHECK(copy_file(FIXTURE("wrong_kind.so"), path_in(path, sizeof path, c, "only_c.so")) == 0);
    snprintf(env, sizeof env, "%s::%s/", a, b); /* an empty entry and a trailing slash */
    setenv("LOOM_PLUGIN_PATH", env, 1);
    const char *dirs[] = {c, LOOM_FIXTURE_DIR};
    CHECK(loom_loader_init(dirs, 2) == LOOM_OK);

    loom_loader_search_path(buf, sizeof buf);
    printf("  search path: %s\n", buf);
    CHECK(where(buf, a) >= 0 && where(buf, a) < where(buf, b));
    CHECK(where(buf, b) < where(buf, c) && where(buf, c) < where(buf, LOOM_FIXTURE_DIR));
    CHECK(!contains(buf, ", ,") && !contains(buf, "//"));
    if (is_directory(LOOM_BUILD_PLUGIN_DIR)) CHECK(where(buf, LOOM_BUILD_PLUGIN_DIR) == 0);
    char small[8]; /* truncation is safe and terminated */
    loom_loader_search_path(small, sizeof small);
    CHECK(strlen(small) < sizeof small);

    const loom_plugin *probe = load("probe", LOOM_KIND_OPTIMIZER);
    CHECK(probe && strcmp(probe->path, path_in(path, sizeof path, b, "probe.so")) == 0);
    const loom_plugin *in_c = load(path_in(path, sizeof path, c, "probe.so"), LOOM_KIND_OPTIMIZER);
    CHECK(in_c && in_c != probe && in_c->handle != probe->handle);
    CHECK(in_c && strcmp(in_c->path, path) == 0);
    const loom_plugin *only_c = load("only_c", LOOM_KIND_SCHEDULER);
    CHECK(only_c && strcmp(only_c->path, path_in(path, sizeof path, c, "only_c.so")) == 0);

    /* Without the environment, C's copy is the first probe.so: the record loaded by path. */
    unsetenv("LOOM_PLUGIN_PATH");
    CHECK(loom_loader_init(dirs, 2) == LOOM_OK);
    loom_loader_search_path(buf, sizeof buf);
    CHECK(!contains(buf, a) && !contains(buf, b));
    CHECK(load("probe", LOOM_KIND_OPTIMIZER) == in_c);
}

/* name, name.so, absolute path, ./relative path and a symlink reach one record. */
static void test_spec_forms(const char *a)
{
    const char *dirs[] = {LOOM_FIXTURE_DIR, a};
    char link[512], cwd[4096];
    CHECK(loom_loader_init(dirs, 2) == LOOM_OK);
    const loom_plugin *by_name = load("good_optimizer", LOOM_KIND_OPTIMIZER);
    CHECK(by_name && strcmp(by_name->desc->name, "fixture_opt") == 0);
    CHECK(by_name && strcmp(by_name->path, FIXTURE("good_optimizer.so")) == 0);
    CHECK(load("good_optimizer.so", LOOM_KIND_OPTIMIZER) == by_name);
    CHECK(load(FIXTURE("good_optimizer.so"), LOOM_KIND_OPTIMIZER) == by_name);
    CHECK(load("good_optimizer", 0) == by_name);

    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(LOOM_FIXTURE_DIR) == 0);
    CHECK(load("./good_optimizer.so", LOOM_KIND_OPTIMIZER) == by_name);
    CHECK(load("../fixtures/good_optimizer.so", LOOM_KIND_OPTIMIZER) == by_name);
    CHECK(chdir(cwd) == 0);

    CHECK(symlink(FIXTURE("good_optimizer.so"), path_in(link, sizeof link, a, "alias.so")) == 0);
    CHECK(load("alias", LOOM_KIND_OPTIMIZER) == by_name);

    /* A path is the file itself, even without ".so" and with an "x.so" beside it. */
    char plain[512], decoy[512];
    CHECK(copy_file(FIXTURE("good_optimizer.so"), path_in(plain, sizeof plain, a, "plain")) == 0);
    CHECK(copy_file(FIXTURE("wrong_kind.so"), path_in(decoy, sizeof decoy, a, "plain.so")) == 0);
    const loom_plugin *p = load(plain, LOOM_KIND_OPTIMIZER);
    CHECK(p && strcmp(p->path, plain) == 0 && strcmp(p->desc->name, "fixture_opt") == 0 && p != by_name);
    p = load(decoy, LOOM_KIND_SCHEDULER);
    CHECK(p && strcmp(p->desc->name, "fixture_sched") == 0);
}

typedef struct listing {
    const char *extra_dir; /* the one folder besides the fixtures whose files are kept */
    char paths[64][512];
    char names[64][64];
    char errors[64][512];
    int shadowed[64];
    int n;
} listing;

static void collect(void *context, const char *path, const loom_plugin_desc *desc, int shadowed, const char *error)
{
    listing *l = context;
    /* Keep only our folders: the build's plugin folder holds whatever else is built. */
    if (strncmp(path, l->extra_dir, strlen(l->extra_dir)) != 0 &&
        strncmp(path, LOOM_FIXTURE_DIR "/", strlen(LOOM_FIXTURE_DIR) + 1) != 0)
        return;
    CHECK(l->n < 64);
    if (l->n >= 64) return;
    CHECK((desc == NULL) == (error != NULL));
    snprintf(l->paths[l->n], sizeof l->paths[0], "%s", path);
    snprintf(l->names[l->n], sizeof l->names[0], "%s", desc ? desc->name : "");
    snprintf(l->errors[l->n], sizeof l->errors[0], "%s", error ? error : "");
    l->shadowed[l->n] = shadowed;
    l->n++;
}

/* Index of the first entry for file `path` with descriptor `name` ("" for an error). */
static int find(const listing *l, const char *path, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->paths[i], path) == 0 && strcmp(l->names[i], name) == 0) return i;
    return -1;
}

/* Whether a file with this path is mapped into the process (/proc/self/maps). */
static int mapped(const char *path)
{
    char *real = realpath(path, NULL);
    FILE *f = fopen("/proc/self/maps", "r");
    int found = 0;
    char line[4096];
    while (real && f && !found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        size_t n = strlen(line), m = strlen(real);
        found = n >= m && strcmp(line + n - m, real) == 0;
    }
    if (f) fclose(f);
    free(real);
    return found;
}

static void test_foreach(const char *d)
{
    char copy[512];
    CHECK(copy_file(FIXTURE("good_optimizer.so"), path_in(copy, sizeof copy, d, "good_optimizer.so")) == 0);
    /* The fixture folder twice: listed once. */
    const char *dirs[] = {LOOM_FIXTURE_DIR, d, LOOM_FIXTURE_DIR "/"};
    CHECK(loom_loader_init(dirs, 3) == LOOM_OK);
    static listing l;
    l.extra_dir = d;
    loom_plugin_foreach(collect, &l);
    for (int i = 0; i < l.n; i++)
        printf("  %s %s%s %s\n", l.paths[i], l.names[i], l.shadowed[i] ? " (shadowed)" : "", l.errors[i]);

    int good = find(&l, FIXTURE("good_optimizer.so"), "fixture_opt");
    CHECK(good >= 0 && !l.shadowed[good]);
    int shadow = find(&l, copy, "fixture_opt");
    CHECK(shadow > good && l.shadowed[shadow]);
    int sched = find(&l, FIXTURE("two_plugins.so"), "fixture_two_sched");
    int opt = find(&l, FIXTURE("two_plugins.so"), "two_plugins");
    CHECK(sched >= 0 && opt == sched + 1);
    CHECK(find(&l, FIXTURE("old_abi_plugin.so"), "fixture_old") >= 0);
    CHECK(find(&l, FIXTURE("newer_minor.so"), "fixture_newer") >= 0);
    CHECK(find(&l, FIXTURE("wrong_kind.so"), "fixture_sched") >= 0);

    int no_entry = find(&l, FIXTURE("no_entry.so"), "");
    CHECK(no_entry >= 0 && contains(l.errors[no_entry], "loom_plugin_query"));
    int undef = find(&l, FIXTURE("undefined_symbol.so"), "");
    CHECK(undef >= 0 && contains(l.errors[undef], "undefined symbol: loom_missing_function"));
    int major = find(&l, FIXTURE("abi_major.so"), "");
    CHECK(major >= 0 && contains(l.errors[major], "ABI 2.0"));
    for (int i = 0; i < l.n; i++)
        CHECK(one_line(l.errors[i]));

    /* Each fixture file once, in byte order of file names; then the second folder. */
    int fixtures = 0;
    for (int i = 0; i < l.n; i++) {
        if (strncmp(l.paths[i], LOOM_FIXTURE_DIR "/", strlen(LOOM_FIXTURE_DIR) + 1) != 0) continue;
        fixtures++;
        CHECK(i == 0 || strcmp(l.paths[i - 1], l.paths[i]) <= 0);
        CHECK(i < shadow);
    }
    CHECK(fixtures == 18); /* 17 files, two_plugins.so twice */
    CHECK(l.n == fixtures + 1);

    /* The listing leaves nothing mapped that no run loaded (the cuda plugin would keep the CUDA
     * runtime and cuBLAS resident), and a file it closed loads again by name. */
    CHECK(!mapped(FIXTURE("two_plugins.so")) && !mapped(FIXTURE("wrong_kind.so")));
    CHECK(mapped(FIXTURE("good_optimizer.so"))); /* test_spec_forms loaded it: it stays */
    const loom_plugin *p = NULL;
    CHECK(loom_plugin_load(FIXTURE("two_plugins.so"), LOOM_KIND_OPTIMIZER, &p) == LOOM_OK && p &&
          strcmp(p->desc->name, "two_plugins") == 0);
    CHECK(mapped(FIXTURE("two_plugins.so")));
    /* A file a plugin was loaded from stays open through a listing. */
    static listing again;
    again.extra_dir = d;
    loom_plugin_foreach(collect, &again);
    CHECK(again.n == l.n && mapped(FIXTURE("two_plugins.so")) && strcmp(p->desc->name, "two_plugins") == 0);
}

static void test_kind_names(void)
{
    CHECK(strcmp(loom_kind_name(LOOM_KIND_OPTIMIZER), "optimizer") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_SCHEDULER), "scheduler") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_SHARDING), "sharding") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_PRECISION), "precision") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_CALLBACK), "callback") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_COMM), "comm") == 0);
    CHECK(strcmp(loom_kind_name(LOOM_KIND_MODEL), "model") == 0);
    CHECK(strcmp(loom_kind_name(0), "unknown") == 0);
    CHECK(strcmp(loom_kind_name(1000), "unknown") == 0);
}

int main(void)
{
    char a[256], b[256], c[256], d[256];
    make_scratch_dir(a, sizeof a);
    make_scratch_dir(b, sizeof b);
    make_scratch_dir(c, sizeof c);
    make_scratch_dir(d, sizeof d);

    test_search_order(a, b, c);
    test_spec_forms(a);
    test_foreach(d);
    test_kind_names();

    /* Shutdown forgets records but the loader works again afterwards. */
    loom_loader_shutdown();
    const char *dirs[] = {LOOM_FIXTURE_DIR};
    CHECK(loom_loader_init(dirs, 1) == LOOM_OK);
    const loom_plugin *p = load("good_optimizer", LOOM_KIND_OPTIMIZER);
    CHECK(p && strcmp(p->desc->name, "fixture_opt") == 0);
    loom_loader_shutdown();

    remove_scratch_dir(a);
    remove_scratch_dir(b);
    remove_scratch_dir(c);
    remove_scratch_dir(d);
    return test_finish("test_loader_search");
}
