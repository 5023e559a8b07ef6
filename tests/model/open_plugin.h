/*
 * open_plugin.h - how the model tests load their plugin: dlopen() the .so from the build's
 * plugin folder and ask its query for its one descriptor, as the loader would (without the
 * core, so these tests need no libloom).
 */
#ifndef LOOM_TESTS_OPEN_PLUGIN_H
#define LOOM_TESTS_OPEN_PLUGIN_H

#include <dlfcn.h>
#include <stdio.h>

#include <loom/loom.h>

#include "test_util.h"

/* The descriptor at index 0 of the plugin at `path`, which must have no second one; NULL, with
 * the failure counted, when the file, its query or the descriptor is missing. *handle gets the
 * dlopen() handle (NULL when that failed), for dlclose() at the end. */
static inline const loom_plugin_desc *open_model_plugin(const char *path, void **handle)
{
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    *handle = so;
    CHECK(so != NULL);
    if (!so) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        return NULL;
    }
    loom_plugin_query_fn query = (loom_plugin_query_fn)dlsym(so, LOOM_PLUGIN_QUERY_SYMBOL);
    CHECK(query != NULL);
    const loom_plugin_desc *d = query ? query(LOOM_ABI_MAJOR, 0) : NULL;
    CHECK(d != NULL);
    if (d) CHECK(query(LOOM_ABI_MAJOR, 1) == NULL);
    return d;
}

#endif
