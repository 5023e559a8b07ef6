/* sched_harness.c - see sched_harness.h. */
#include "sched_harness.h"
#include "plugin_harness.h"

#include "error.h"
#include "host.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

loom_status sched_open(sched_fixture *f, const char *name, const char *const *kv, double base_lr,
                       int64_t total_steps, int64_t warmup_steps)
{
    memset(f, 0, sizeof *f);
    loom_status st = harness_load(name, LOOM_KIND_SCHEDULER, kv, &f->plugin, &f->config, &f->host);
    if (st) return st;
    f->vt = f->plugin->desc->vtable;
    loom_schedule_setup setup = {
        LOOM_HEADER_INIT(loom_schedule_setup),
        .base_lr = base_lr,
        .total_steps = total_steps,
        .warmup_steps = warmup_steps,
    };
    st = f->vt->create(f->host, loom_host_api_table(), f->config, &setup, &f->sched);
    if (st)
        fprintf(stderr, "create %s (lr %g, T %lld, W %lld): %s\n", name, base_lr,
                (long long)total_steps, (long long)warmup_steps, loom_error_message());
    return st;
}

void sched_close(sched_fixture *f)
{
    if (f->vt && f->sched)
        f->vt->destroy(f->sched);
    harness_release(f->config, f->host);
    memset(f, 0, sizeof *f);
}

double sched_lr(const sched_fixture *f, int64_t t, double *momentum)
{
    loom_schedule_value v = {LOOM_HEADER_INIT(loom_schedule_value), .lr = -1, .momentum = -1};
    loom_status st = f->vt->value(f->sched, t, &v);
    if (st) {
        fprintf(stderr, "value(%lld): status %d: %s\n", (long long)t, (int)st,
                loom_error_message());
        return NAN;
    }
    if (momentum)
        *momentum = v.momentum;
    return v.lr;
}
