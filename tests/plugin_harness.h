/*
 * plugin_harness.h - load a plugin the way the trainer does: the core loader, a config built
 * from the plugin's spec with the test's pairs set on it, a real host. The optimizer and
 * scheduler harnesses (tests/optimizer/optim_harness.h, tests/scheduler/sched_harness.h) add
 * their kind's create() and its arguments.
 */
#ifndef LOOM_TESTS_PLUGIN_HARNESS_H
#define LOOM_TESTS_PLUGIN_HARNESS_H

#include <stdio.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"

/* Load `name` of `kind`, set the config pairs kv[0]=kv[1], kv[2]=kv[3], ... (kv NULL-terminated,
 * may be NULL) and create the host. Returns the first failing status, with the error printed;
 * what was made is in the out parameters for the caller's cleanup either way. */
static inline loom_status harness_load(const char *name, uint32_t kind, const char *const *kv,
                                       const loom_plugin **plugin, loom_config **config, loom_host **host)
{
    static int loader_ready;
    loom_status st = LOOM_OK;
    if (!loader_ready && !(st = loom_loader_init(NULL, 0))) loader_ready = 1;
    if (!st) st = loom_plugin_load(name, kind, plugin);
    if (st) {
        fprintf(stderr, "loading %s: %s\n", name, loom_error_message());
        return st;
    }
    *config = loom_config_from_spec((*plugin)->desc);
    if (!*config) {
        fprintf(stderr, "config of %s: %s\n", name, loom_error_message());
        return LOOM_E_INVALID;
    }
    for (size_t i = 0; kv && kv[i]; i += 2) {
        if ((st = loom_config_set(*config, kv[i], kv[i + 1]))) {
            fprintf(stderr, "%s.%s = %s: %s\n", name, kv[i], kv[i + 1], loom_error_message());
            return st;
        }
    }
    *host = loom_host_create(name);
    return LOOM_OK;
}

/* Free what harness_load made (after the caller destroyed its instance). */
static inline void harness_release(loom_config *config, loom_host *host)
{
    loom_config_free(config);
    if (host) loom_host_destroy(host);
}

#endif
