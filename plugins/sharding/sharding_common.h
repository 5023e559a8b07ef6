/*
 * sharding_common.h - checks every sharding plugin makes (each plugin is its own .so, so this
 * is header-only).
 */
#ifndef LOOM_PLUGINS_SHARDING_COMMON_H
#define LOOM_PLUGINS_SHARDING_COMMON_H

#include <loom/sharding.h>

/* A gradient range handed to acquire/release must lie in the flat buffer. */
static inline loom_status sharding_check_range(loom_host *host, const loom_host_api *api, int64_t begin, int64_t end,
                                               int64_t total)
{
    if (begin < 0 || end > total || begin > end)
        return api->fail(host, LOOM_E_INVALID, "gradient range [%lld, %lld) outside [0, %lld)", (long long)begin,
                         (long long)end, (long long)total);
    return LOOM_OK;
}

/* owned_ranges for a plugin that gives rank r the single range ranges[r] (possibly empty). */
static inline loom_status sharding_one_range(loom_host *host, const loom_host_api *api, const loom_range *ranges,
                                             int32_t world, int32_t rank, const loom_range **out, size_t *n)
{
    if (rank < 0 || rank >= world) return api->fail(host, LOOM_E_INVALID, "no rank %d in a world of %d", rank, world);
    *out = &ranges[rank];
    *n = ranges[rank].end > ranges[rank].begin ? 1 : 0;
    return LOOM_OK;
}

#endif
