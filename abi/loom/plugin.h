/*
 * plugin.h - what every plugin writes the same way, written once: the entry symbol
 * (LOOM_PLUGIN_EXPORT) and configuration getters that record a message when a key is wrong.
 *
 * Header-only: macros and static inline functions, nothing to link and no struct, so it adds
 * nothing to the ABI (a plugin built with it is an ordinary ABI 1.x plugin). Since 1.2 of the
 * headers; it works against any 1.x host. A minimal plugin is its algorithm, a vtable, a
 * descriptor and one line:
 *
 *     #include <loom/optimizer.h>
 *     #include <loom/plugin.h>
 *     ...
 *     static const loom_plugin_desc lion_desc = { LOOM_HEADER_INIT(loom_plugin_desc), ... };
 *     LOOM_PLUGIN_EXPORT(&lion_desc)
 *
 * See docs/plugins.md for the whole walk-through.
 */
#ifndef LOOM_PLUGIN_H
#define LOOM_PLUGIN_H

#include "loom.h"
#include "model.h"

#ifdef __cplusplus
#define LOOM_EXTERN_C extern "C"
#else
#define LOOM_EXTERN_C
#endif

/* Defines loom_plugin_query, the one exported symbol, answering the descriptors given (their
 * addresses, in order: index 0 is the first). Use it once per shared object, at file scope.
 * The query is answered whatever the host's major, so a host that rejects the plugin can name
 * both versions in its message. */
#define LOOM_PLUGIN_EXPORT(...)                                                                                        \
    LOOM_EXTERN_C LOOM_EXPORT const loom_plugin_desc *loom_plugin_query(uint32_t host_abi_major, uint32_t index)       \
    {                                                                                                                  \
        static const loom_plugin_desc *const loom_plugin_descs_[] = {__VA_ARGS__};                                     \
        (void)host_abi_major;                                                                                          \
        return index < sizeof loom_plugin_descs_ / sizeof loom_plugin_descs_[0] ? loom_plugin_descs_[index] : 0;       \
    }

/* ---------------------------------------------------------------------------------------- */
/* Configuration getters. Each wraps one cfg_* member of loom_host_api:
 *   loom_cfg_need_*: the key must have a value (a default in the plugin's loom_param_spec
 *                    counts, so a key with a default is always there on a conforming host);
 *   loom_cfg_opt_*:  an absent key leaves *out as it was (the caller's default).
 * Both return LOOM_OK, or LOOM_E_INVALID after api->fail() recorded "config key 'K': ..."
 * naming the key. MT-safe (as the getters they call). */

/* The status for the result r of a cfg_* getter; `want` names the type ("a number"). */
static inline loom_status loom_cfg_result(loom_host *host, const loom_host_api *api, const char *key, int r,
                                          const char *want, int required)
{
    if (r == LOOM_CFG_PRESENT || (r == LOOM_CFG_ABSENT && !required)) return LOOM_OK;
    if (r == LOOM_CFG_WRONG_TYPE) return api->fail(host, LOOM_E_INVALID, "config key '%s': not %s", key, want);
    return api->fail(host, LOOM_E_INVALID, "config key '%s' is required", key);
}

static inline loom_status loom_cfg_need_f64(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                            const char *key, double *out)
{
    return loom_cfg_result(host, api, key, api->cfg_f64(cfg, key, out), "a number", 1);
}

static inline loom_status loom_cfg_need_i64(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                            const char *key, int64_t *out)
{
    return loom_cfg_result(host, api, key, api->cfg_i64(cfg, key, out), "an integer", 1);
}

static inline loom_status loom_cfg_need_bool(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                             const char *key, int32_t *out)
{
    return loom_cfg_result(host, api, key, api->cfg_bool(cfg, key, out), "a boolean", 1);
}

/* The string is valid while the config is (during create()): copy what you keep. */
static inline loom_status loom_cfg_need_str(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                            const char *key, const char **out)
{
    return loom_cfg_result(host, api, key, api->cfg_str(cfg, key, out), "a string", 1);
}

static inline loom_status loom_cfg_opt_f64(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                           const char *key, double *out)
{
    return loom_cfg_result(host, api, key, api->cfg_f64(cfg, key, out), "a number", 0);
}

static inline loom_status loom_cfg_opt_i64(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                           const char *key, int64_t *out)
{
    return loom_cfg_result(host, api, key, api->cfg_i64(cfg, key, out), "an integer", 0);
}

static inline loom_status loom_cfg_opt_bool(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                            const char *key, int32_t *out)
{
    return loom_cfg_result(host, api, key, api->cfg_bool(cfg, key, out), "a boolean", 0);
}

static inline loom_status loom_cfg_opt_str(loom_host *host, const loom_host_api *api, const loom_config *cfg,
                                           const char *key, const char **out)
{
    return loom_cfg_result(host, api, key, api->cfg_str(cfg, key, out), "a string", 0);
}

/* The checks every model makes first in forward(), backward() and train_step(), with the
 * host's messages: the model is bound (bound != 0), the batch is there and has the ABI 1.0
 * members, and 1 <= batch_size <= max_batch (the size bind() gave). Records the message through
 * api->fail and returns its status (LOOM_E_INVALID, or LOOM_E_ABI for a missing or short
 * batch); LOOM_OK when all hold. Header-only (not an ABI member), since 1.3 of the headers;
 * MT-safe (reads only its arguments). */
static inline loom_status loom_model_check_batch(loom_host *host, const loom_host_api *api, int bound,
                                                 const loom_batch *batch, int64_t max_batch)
{
    if (!bound) return api->fail(host, LOOM_E_INVALID, "forward/backward before bind");
    if (!batch || !LOOM_HAS_FIELD(batch, loom_batch, n_targets))
        return api->fail(host, LOOM_E_ABI, "batch missing or too small");
    if (batch->batch_size < 1 || batch->batch_size > max_batch)
        return api->fail(host, LOOM_E_INVALID, "batch of %lld rows: must be in [1, %lld] (bound size)",
                         (long long)batch->batch_size, (long long)max_batch);
    return LOOM_OK;
}

#endif /* LOOM_PLUGIN_H */
