/*
 * sharding_common.h - checks every sharding plugin makes (each plugin is its own .so, so this
 * is header-only).
 */
#ifndef LOOM_PLUGINS_SHARDING_COMMON_H
#define LOOM_PLUGINS_SHARDING_COMMON_H

#include <loom/sharding.h>

/* Bytes per element of the model dtype (parameters and gradients), 0 for a dtype no sharding
 * plugin stores. Buffers are sized with it; bucket sizes stay element counts, as in DeepSpeed. */
static inline size_t sharding_dtype_size(uint32_t dtype)
{
    return loom_dtype_is_param(dtype) ? loom_dtype_size(dtype) : 0;
}

/* The element size of setup->param_dtype, or a failure that names the dtype (the host
 * prefixes the plugin's name). */
static inline loom_status sharding_element_size(loom_host *host, const loom_host_api *api, uint32_t dtype,
                                                size_t *element)
{
    *element = sharding_dtype_size(dtype);
    if (!*element)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "unsupported parameter dtype %u (%s): parameters and gradients must be f32, f16 or bf16",
                         (unsigned)dtype, loom_dtype_name(dtype));
    return LOOM_OK;
}

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
