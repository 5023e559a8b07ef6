/* The host table (core/plugin/host.c) called as a careless plugin calls it: a NULL format for
 * fail and log, a size near SIZE_MAX for alloc, a NULL out for a config getter. Each must be a
 * refusal or a one-line message naming the plugin, never a crash nor a block smaller than asked. */
#include <stdint.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "test_util.h"

static const loom_param_spec params[] = {
    {"beta", LOOM_PARAM_FLOAT, 0, "0.5", "a key with a default"},
    {NULL, 0, 0, NULL, NULL},
};

static const loom_plugin_desc desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "careless",
    .version = "1.0.0",
    .summary = "test: a plugin that calls the host carelessly",
    .params = params,
};

int main(void)
{
    const loom_host_api *api = loom_host_api_table();
    loom_host *host = loom_host_create("careless");
    CHECK(host != NULL);

    /* The block carries `align` bytes more than asked: a size within `align` of SIZE_MAX used
     * to wrap to a few bytes and come back as if it were the whole size. */
    CHECK(api->alloc(host, SIZE_MAX, 64, LOOM_DEVICE_CPU, 0) == NULL);
    CHECK(api->alloc(host, SIZE_MAX - 63, 64, LOOM_DEVICE_CPU, 0) == NULL);
    void *fine = api->alloc(host, 100, 64, LOOM_DEVICE_CPU, 0);
    CHECK(fine != NULL);
    api->free_memory(host, fine);

    /* A NULL format used to reach vsnprintf. */
    loom_error_clear();
    CHECK(api->fail(host, LOOM_E_INVALID, NULL) == LOOM_E_INVALID);
    printf("  fail(NULL) -> %s\n", loom_error_message());
    CHECK(strstr(loom_error_message(), "careless: failed (invalid argument) without a message") != NULL);
    api->log(host, LOOM_LOG_ERROR, NULL);

    /* A getter with nowhere to write still answers whether the key is set. */
    loom_config *config = loom_config_from_spec(&desc);
    CHECK(config != NULL);
    CHECK(api->cfg_f64(config, "beta", NULL) == LOOM_CFG_PRESENT);
    double beta = 0;
    CHECK(api->cfg_f64(config, "beta", &beta) == LOOM_CFG_PRESENT && beta == 0.5);
    loom_config_free(config);
    loom_host_destroy(host);

    printf("test_host_api: %d checks, %d failed\n", test_checks, test_failures);
    return test_failures ? 1 : 0;
}
