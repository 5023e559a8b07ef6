/* test_host.h - a small loom_host_api for driving a model plugin without libloom: memory from
 * aligned_alloc (live allocations counted), a deterministic random_normal, the CPU kernel
 * table as the only service, and config getters over a key/value table that falls back to the
 * plugin's declared defaults, as the real host does. */
#ifndef LOOM_TEST_HOST_H
#define LOOM_TEST_HOST_H

#include <loom/kernels.h>
#include <loom/loom.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lk_cpu.h"

struct loom_host {
    int live_allocations;
    char last_error[1024];
    loom_status last_code;
};

typedef struct test_cfg_entry {
    const char *key;
    uint32_t type;      /* LOOM_PARAM_* of the value as a config file would type it */
    const char *value;
} test_cfg_entry;

struct loom_config {
    test_cfg_entry entries[16];
    int n;
    const loom_param_spec *spec; /* defaults */
};

static void *th_alloc(loom_host *host, size_t bytes, size_t align, uint32_t device, int32_t index)
{
    (void)index;
    if (device != LOOM_DEVICE_CPU) return NULL;
    if (align == 0) align = 64;
    void *p = aligned_alloc(align, (bytes + align - 1) / align * align + align);
    if (p) host->live_allocations++;
    return p;
}

static void th_free(loom_host *host, void *ptr)
{
    if (!ptr) return;
    host->live_allocations--;
    free(ptr);
}

static void th_log(loom_host *host, uint32_t level, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[plugin log %u] ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static loom_status th_fail(loom_host *host, loom_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(host->last_error, sizeof host->last_error, fmt, ap);
    va_end(ap);
    host->last_code = code;
    return code;
}

/* The value of key: set, else the spec default; NULL when neither. *type gets its type. */
static const char *th_lookup(const loom_config *cfg, const char *key, uint32_t *type)
{
    for (int i = 0; i < cfg->n; i++) {
        if (strcmp(cfg->entries[i].key, key) == 0) {
            *type = cfg->entries[i].type;
            return cfg->entries[i].value;
        }
    }
    for (const loom_param_spec *s = cfg->spec; s && s->key; s++) {
        if (strcmp(s->key, key) == 0 && s->default_value) {
            *type = s->type;
            return s->default_value;
        }
    }
    return NULL;
}

static int th_cfg_i64(const loom_config *cfg, const char *key, int64_t *out)
{
    uint32_t type;
    const char *v = th_lookup(cfg, key, &type);
    if (!v) return LOOM_CFG_ABSENT;
    if (type != LOOM_PARAM_INT) return LOOM_CFG_WRONG_TYPE;
    *out = strtoll(v, NULL, 10);
    return LOOM_CFG_PRESENT;
}

static int th_cfg_f64(const loom_config *cfg, const char *key, double *out)
{
    uint32_t type;
    const char *v = th_lookup(cfg, key, &type);
    if (!v) return LOOM_CFG_ABSENT;
    if (type != LOOM_PARAM_INT && type != LOOM_PARAM_FLOAT) return LOOM_CFG_WRONG_TYPE;
    *out = strtod(v, NULL);
    return LOOM_CFG_PRESENT;
}

static int th_cfg_bool(const loom_config *cfg, const char *key, int32_t *out)
{
    uint32_t type;
    const char *v = th_lookup(cfg, key, &type);
    if (!v) return LOOM_CFG_ABSENT;
    if (type != LOOM_PARAM_BOOL) return LOOM_CFG_WRONG_TYPE;
    *out = strcmp(v, "true") == 0;
    return LOOM_CFG_PRESENT;
}

static int th_cfg_str(const loom_config *cfg, const char *key, const char **out)
{
    uint32_t type;
    const char *v = th_lookup(cfg, key, &type);
    if (!v) return LOOM_CFG_ABSENT;
    if (type != LOOM_PARAM_STRING) return LOOM_CFG_WRONG_TYPE;
    *out = v;
    return LOOM_CFG_PRESENT;
}

static const char *th_cfg_key(const loom_config *cfg, size_t index)
{
    return index < (size_t)cfg->n ? cfg->entries[index].key : NULL;
}

static const void *th_service(loom_host *host, const char *name, uint32_t min_minor)
{
    (void)host;
    if (strcmp(name, LOOM_KERNELS_CPU_SERVICE) == 0 && min_minor <= LOOM_ABI_MINOR)
        return lk_cpu_kernel_table();
    return NULL;
}

static uint64_t th_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Draw k of (seed 42, stream) is a pure function of (stream, offset + k). */
static void th_random_normal(loom_host *host, uint64_t stream, uint64_t offset, float *out, size_t n,
                             float mean, float std)
{
    (void)host;
    for (size_t i = 0; i < n; i++) {
        const uint64_t h = th_mix(th_mix(42u ^ th_mix(stream)) + offset + i);
        const double u1 = ((double)(h >> 11) + 1.0) * 0x1.0p-53;
        const double u2 = (double)(th_mix(h) >> 11) * 0x1.0p-53;
        out[i] = mean + std * (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
}

static int32_t th_num_threads(loom_host *host)
{
    (void)host;
    return 1;
}

static const loom_host_api test_host_api = {
    LOOM_HEADER_INIT(loom_host_api),
    .alloc = th_alloc,
    .free_memory = th_free,
    .log = th_log,
    .fail = th_fail,
    .cfg_f64 = th_cfg_f64,
    .cfg_i64 = th_cfg_i64,
    .cfg_bool = th_cfg_bool,
    .cfg_str = th_cfg_str,
    .cfg_key = th_cfg_key,
    .service = th_service,
    .random_normal = th_random_normal,
    .num_threads = th_num_threads,
};

#endif
