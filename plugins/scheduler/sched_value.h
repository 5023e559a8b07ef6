/*
 * sched_value.h - the checks at the top of value() that the HF schedules (sched_common.h) and
 * the DeepSpeed ones (ds_common.h) share, with the same messages.
 */
#ifndef LOOM_PLUGINS_SCHED_VALUE_H
#define LOOM_PLUGINS_SCHED_VALUE_H

#include <loom/scheduler.h>

/* LOOM_OK when step t and the host's `out` can be answered; else the status, its message
 * recorded through api->fail. */
static inline loom_status sched_check_value(loom_host *host, const loom_host_api *api, int64_t t,
                                            const loom_schedule_value *out)
{
    if (t < 0) return api->fail(host, LOOM_E_INVALID, "scheduler step %lld: must be >= 0", (long long)t);
    if (!LOOM_HAS_FIELD(out, loom_schedule_value, momentum))
        return api->fail(host, LOOM_E_ABI, "schedule value struct too small");
    return LOOM_OK;
}

#endif
