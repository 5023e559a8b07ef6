/*
 * sched_harness.h - load a scheduler plugin the way the trainer does (core loader, config from
 * the plugin's spec, a real host) and ask it for values.
 */
#ifndef LOOM_TESTS_SCHED_HARNESS_H
#define LOOM_TESTS_SCHED_HARNESS_H

#include <loom/scheduler.h>

#include "plugin_config.h"
#include "plugin_loader.h"

typedef struct sched_fixture {
    const loom_plugin *plugin;
    const loom_scheduler_vtable *vt;
    loom_host *host;
    loom_config *config;
    loom_scheduler *sched;
} sched_fixture;

/* Load `name`, set the config pairs kv[0]=kv[1], ... (NULL-terminated, may be NULL) and create
 * an instance for (base_lr, total_steps, warmup_steps). Returns the first failing status. */
loom_status sched_open(sched_fixture *f, const char *name, const char *const *kv, double base_lr,
                       int64_t total_steps, int64_t warmup_steps);
void sched_close(sched_fixture *f);

/* value(t): the learning rate, or NaN (with the error printed) if the call failed. *momentum
 * (may be NULL) receives the momentum. */
double sched_lr(const sched_fixture *f, int64_t t, double *momentum);

#endif
