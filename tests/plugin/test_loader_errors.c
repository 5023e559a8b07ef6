/* Every way a plugin can fail to load gives the documented status and one line that names
 * what was asked for, the file, and the real reason. */
#include "error.h"
#include "loader_test_util.h"
#include "plugin_loader.h"
#include "test_util.h"

#define FIXTURE(name) LOOM_FIXTURE_DIR "/" name

/* Load spec as kind, expect status `want` and a message holding spec and each of parts. */
static void expect_failure(const char *spec, uint32_t kind, loom_status want, const char *const *parts)
{
    const loom_plugin *p = (const loom_plugin *)&p; /* must be reset to NULL */
    loom_error_clear();
    loom_status s = loom_plugin_load(spec, kind, &p);
    const char *msg = loom_error_message();
    printf("  %s -> %s: %s\n", spec, loom_status_string(s), msg);
    CHECK(s == want);
    CHECK(p == NULL);
    CHECK(one_line(msg));
    CHECK(contains(msg, spec));
    for (; *parts; parts++) {
        CHECK(contains(msg, *parts));
        if (!contains(msg, *parts)) fprintf(stderr, "    missing \"%s\"\n", *parts);
    }
}

int main(void)
{
    char scratch[256], env_dir[256], path[512];
    make_scratch_dir(scratch, sizeof scratch);
    make_scratch_dir(env_dir, sizeof env_dir);
    setenv("LOOM_PLUGIN_PATH", env_dir, 1);
    const char *dirs[] = {LOOM_FIXTURE_DIR};
    CHECK(loom_loader_init(dirs, 1) == LOOM_OK);

    /* Not found: every folder searched is listed, built-in ones first. */
    {
        const char *parts[] = {"no_such_plugin.so", env_dir, LOOM_FIXTURE_DIR, NULL};
        expect_failure("no_such_plugin", LOOM_KIND_OPTIMIZER, LOOM_E_NOT_FOUND, parts);
        const char *msg = loom_error_message();
        CHECK(contains(msg, env_dir) && strstr(msg, env_dir) < strstr(msg, LOOM_FIXTURE_DIR));
        if (is_directory(LOOM_BUILD_PLUGIN_DIR))
            CHECK(contains(msg, LOOM_BUILD_PLUGIN_DIR) && strstr(msg, LOOM_BUILD_PLUGIN_DIR) < strstr(msg, env_dir));
    }
    {
        const char *parts[] = {"no such file", NULL};
        expect_failure(FIXTURE("missing.so"), 0, LOOM_E_NOT_FOUND, parts);
        const char *dir_parts[] = {"not a regular file", NULL};
        expect_failure(LOOM_FIXTURE_DIR "/", 0, LOOM_E_NOT_FOUND, dir_parts);
    }

    /* Loads, but is not a plugin; asking twice fails twice (nothing half-registered). */
    for (int i = 0; i < 2; i++) {
        const char *parts[] = {FIXTURE("no_entry.so"), "not a loom plugin", "loom_plugin_query", NULL};
        expect_failure("no_entry", LOOM_KIND_OPTIMIZER, LOOM_E_NOT_FOUND, parts);
    }

    /* The wrong kind, then the right one. */
    {
        const char *parts[] = {FIXTURE("wrong_kind.so"), "is a scheduler plugin, not an optimizer plugin", NULL};
        expect_failure("wrong_kind.so", LOOM_KIND_OPTIMIZER, LOOM_E_INVALID, parts);
        const loom_plugin *p = NULL;
        CHECK(loom_plugin_load("wrong_kind.so", LOOM_KIND_SCHEDULER, &p) == LOOM_OK);
        CHECK(p && p->desc->kind == LOOM_KIND_SCHEDULER && strcmp(p->desc->name, "fixture_sched") == 0);
    }
    {
        const char *parts[] = {FIXTURE("two_plugins.so"),
                               "holds the plugins scheduler 'fixture_two_sched', optimizer 'two_plugins'",
                               "none is a model plugin", NULL};
        expect_failure("two_plugins", LOOM_KIND_MODEL, LOOM_E_INVALID, parts);
    }

    /* Both versions are named, so the user knows which side to rebuild. */
    {
        const char *parts[] = {FIXTURE("abi_major.so"), "ABI 2.0", "this loom is ABI 1.", NULL};
        expect_failure("abi_major", LOOM_KIND_OPTIMIZER, LOOM_E_ABI, parts);
    }
    {
        const char *parts[] = {FIXTURE("short_vtable.so"), "vtable", "smaller than", NULL};
        expect_failure("short_vtable", LOOM_KIND_OPTIMIZER, LOOM_E_ABI, parts);
    }
    {
        const char *parts[] = {FIXTURE("null_member.so"), "optimizer vtable of 'null_member'",
                               "required member 'step' NULL", NULL};
        expect_failure("null_member", LOOM_KIND_OPTIMIZER, LOOM_E_ABI, parts);
    }
    {
        const char *parts[] = {FIXTURE("bad_name.so"), "named 'Lion.v2'", "lowercase", NULL};
        expect_failure("bad_name", LOOM_KIND_OPTIMIZER, LOOM_E_FORMAT, parts);
    }
    {
        /* Before: loaded, and --duplicate_key.momentum set one of the two entries. */
        const char *parts[] = {FIXTURE("duplicate_key.so"), "plugin 'duplicate_key'", "parameter 'momentum' twice",
                               NULL};
        expect_failure("duplicate_key", LOOM_KIND_OPTIMIZER, LOOM_E_FORMAT, parts);
    }

    /* dlopen's reason, not libltdl's "file not found"; the path appears once. */
    {
        const char *parts[] = {FIXTURE("undefined_symbol.so"), "undefined symbol: loom_missing_function", NULL};
        expect_failure("undefined_symbol", LOOM_KIND_OPTIMIZER, LOOM_E_IO, parts);
        const char *msg = loom_error_message();
        const char *first = strstr(msg, FIXTURE("undefined_symbol.so"));
        CHECK(first && !strstr(first + 1, FIXTURE("undefined_symbol.so")));
        CHECK(!contains(msg, "file not found"));
    }
    {
        path_in(path, sizeof path, scratch, "garbage.so");
        CHECK(write_text(path, "this is not an ELF file, just text long enough to have a header\n") == 0);
        const char *parts[] = {"cannot be loaded", NULL};
        expect_failure(path, 0, LOOM_E_IO, parts);
        CHECK(!contains(loom_error_message(), "file not found"));
    }

    /* Bad arguments. */
    {
        const loom_plugin *p = NULL;
        CHECK(loom_plugin_load("", 0, &p) == LOOM_E_INVALID && p == NULL);
        CHECK(loom_plugin_load(NULL, 0, &p) == LOOM_E_INVALID && p == NULL);
    }

    /* None of this broke the loader. */
    {
        const loom_plugin *p = NULL;
        CHECK(loom_plugin_load("good_optimizer", LOOM_KIND_OPTIMIZER, &p) == LOOM_OK);
        CHECK(p && strcmp(p->desc->name, "fixture_opt") == 0);
    }

    /* No folder at all: the message says how to add one. */
    unsetenv("LOOM_PLUGIN_PATH");
    CHECK(loom_loader_init(NULL, 0) == LOOM_OK);
    char searched[4096];
    loom_loader_search_path(searched, sizeof searched);
    if (searched[0] == '\0') {
        const char *parts[] = {"LOOM_PLUGIN_PATH", "--plugin_dir", NULL};
        expect_failure("good_optimizer", LOOM_KIND_OPTIMIZER, LOOM_E_NOT_FOUND, parts);
    } else {
        /* Fixtures live outside the built-in plugin folders. */
        const char *parts[] = {"good_optimizer.so", NULL};
        expect_failure("good_optimizer", LOOM_KIND_OPTIMIZER, LOOM_E_NOT_FOUND, parts);
    }

    loom_loader_shutdown();
    remove_scratch_dir(scratch);
    remove_scratch_dir(env_dir);
    return test_finish("test_loader_errors");
}
