/*
 * host.c - the services a plugin gets from the core: memory, logging, errors, configuration
 * getters, named services (the kernel tables, the store, the trainer) and deterministic random
 * numbers.
 */
#include "host.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/callback.h>
#include <loom/comm.h>
#include <loom/kernels.h>

#include "device.h"
#include "error.h"
#include "lk_cpu.h"
#include "plugin_config.h"
#include "store.h"

struct loom_host {
    char plugin_name[64];
    void *trainer;              /* the trainer behind "loom.trainer/1", or NULL            */
    const loom_trainer_api *trainer_api;
};

static uint64_t run_seed = 42;
static int32_t run_threads = 0;
static int32_t run_rank = -1;
static uint32_t run_log_level = LOOM_LOG_INFO;
static _Atomic uint64_t allocated_bytes;
static _Atomic uint64_t peak_bytes;
static loom_store_client *_Atomic run_store;

void loom_host_set_seed(uint64_t seed) { run_seed = seed; }
void loom_host_set_threads(int32_t threads) { run_threads = threads; }
void loom_host_set_rank(int32_t rank) { run_rank = rank; }
void loom_host_set_log_level(uint32_t level) { run_log_level = level; }
uint32_t loom_host_log_level(void)
{
    return run_log_level;
}
void loom_host_set_store(loom_store_client *store) { atomic_store(&run_store, store); }
uint64_t loom_host_allocated_bytes(void) { return atomic_load(&allocated_bytes); }
uint64_t loom_host_peak_allocated_bytes(void) { return atomic_load(&peak_bytes); }

loom_host *loom_host_create(const char *plugin_name)
{
    loom_host *host = calloc(1, sizeof *host);
    if (host) snprintf(host->plugin_name, sizeof host->plugin_name, "%s", plugin_name ? plugin_name : "?");
    return host;
}

void loom_host_destroy(loom_host *host) { free(host); }

void loom_host_set_trainer(loom_host *host, void *trainer, const loom_trainer_api *table)
{
    host->trainer = trainer;
    host->trainer_api = table;
}

void *loom_host_trainer(const loom_host *host) { return host ? host->trainer : NULL; }

/* Each block carries its size and alignment just before the pointer handed out, so free needs
 * no lookup table and the run's byte count is exact. */
static void *host_alloc(loom_host *host, size_t bytes, size_t align, uint32_t device, int32_t device_index)
{
    (void)host;
    /* A device's memory comes from the bound backend (device.c), aligned to >= 256. */
    if (device != LOOM_DEVICE_CPU) return align <= 256 ? loom_device_alloc(bytes, device, device_index) : NULL;
    if (align == 0) align = 64;
    if (align < 16 || (align & (align - 1)) != 0) return NULL;
    /* The block carries `align` more bytes than asked: a request within `align` of SIZE_MAX
     * would wrap to a few bytes and be handed out as the whole size. */
    if (bytes > SIZE_MAX - align) return NULL;
    void *base = NULL;
    if (posix_memalign(&base, align, bytes + align) != 0) return NULL;
    unsigned char *user = (unsigned char *)base + align;
    ((uint64_t *)user)[-1] = align;
    ((uint64_t *)user)[-2] = bytes;
    uint64_t now = atomic_fetch_add(&allocated_bytes, bytes) + bytes;
    uint64_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
    return user;
}

static void host_free(loom_host *host, void *ptr)
{
    (void)host;
    if (!ptr || loom_device_free(ptr)) return;
    unsigned char *user = ptr;
    uint64_t align = ((uint64_t *)user)[-1];
    uint64_t bytes = ((uint64_t *)user)[-2];
    atomic_fetch_sub(&allocated_bytes, bytes);
    free(user - align);
}

static const char *level_name(uint32_t level)
{
    switch (level) {
    case LOOM_LOG_ERROR: return "error: ";
    case LOOM_LOG_WARNING: return "warning: ";
    default: return "";
    }
}

static void vlog_line(const char *who, uint32_t level, const char *fmt, va_list ap)
{
    if (level > run_log_level) return;
    char line[4096];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
    FILE *out = level <= LOOM_LOG_WARNING ? stderr : stdout;
    if (run_rank >= 0)
        fprintf(out, "[rank %d] %s: %s%s\n", run_rank, who, level_name(level), line);
    else
        fprintf(out, "%s: %s%s\n", who, level_name(level), line);
    fflush(out);
}

void loom_log(uint32_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_line("loom", level, fmt, ap);
    va_end(ap);
}

static void host_log(loom_host *host, uint32_t level, const char *fmt, ...)
{
    if (!fmt) return; /* nothing to say; vsnprintf would read address 0 */
    va_list ap;
    va_start(ap, fmt);
    vlog_line(host ? host->plugin_name : "plugin", level, fmt, ap);
    va_end(ap);
}

static loom_status host_fail(loom_host *host, loom_status code, const char *fmt, ...)
{
    const char *who = host ? host->plugin_name : "plugin";
    /* A failure must still be one line that names the plugin (docs/plugins.md#rules), even
     * from a plugin that forgot the message. */
    if (!fmt) return loom_error(code, "%s: failed (%s) without a message", who, loom_status_string(code));
    char message[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    for (char *c = message; *c; c++)
        if (*c == '\n') *c = ' ';
    return loom_error(code, "%s: %s", who, message);
}

/* The "loom.store/1" service: the run's store client (loom_host_set_store). Errors come
 * from the client through loom_error. */
static loom_store_client *store_or_fail(void)
{
    loom_store_client *store = atomic_load(&run_store);
    if (!store) loom_error(LOOM_E_COMM, "no rendezvous store is connected (a one-process run has none)");
    return store;
}

static loom_status store_set(loom_host *host, const char *key, const void *value, size_t size)
{
    (void)host;
    loom_store_client *store = store_or_fail();
    return store ? loom_store_set(store, key, value, size) : LOOM_E_COMM;
}

static loom_status store_get(loom_host *host, const char *key, void *value, size_t capacity, size_t *size,
                             double timeout_seconds)
{
    (void)host;
    loom_store_client *store = store_or_fail();
    return store ? loom_store_get(store, key, value, capacity, size, timeout_seconds) : LOOM_E_COMM;
}

static loom_status store_add(loom_host *host, const char *key, int64_t delta, int64_t *value)
{
    (void)host;
    loom_store_client *store = store_or_fail();
    return store ? loom_store_add(store, key, delta, value) : LOOM_E_COMM;
}

static loom_status store_wait(loom_host *host, const char *const *keys, size_t n, double timeout_seconds)
{
    (void)host;
    loom_store_client *store = store_or_fail();
    return store ? loom_store_wait(store, keys, n, timeout_seconds) : LOOM_E_COMM;
}

static const loom_store_api store_api = {
    LOOM_HEADER_INIT(loom_store_api),
    .set = store_set,
    .get = store_get,
    .add = store_add,
    .wait = store_wait,
};

static const void *host_service(loom_host *host, const char *name, uint32_t min_minor)
{
    if (!name) return NULL;
    if (strcmp(name, LOOM_TRAINER_SERVICE) == 0)
        return host && host->trainer_api && host->trainer_api->abi_minor >= min_minor ? host->trainer_api : NULL;
    if (strcmp(name, LOOM_KERNELS_CPU_SERVICE) == 0) {
        const loom_kernels_api *table = lk_cpu_kernel_table();
        return table->abi_minor >= min_minor ? table : NULL;
    }
    if (strcmp(name, LOOM_KERNELS_CUDA_SERVICE) == 0) {
        const loom_kernels_api *table = loom_device_current() == LOOM_DEVICE_CUDA ? loom_device_kernels() : NULL;
        return table && table->abi_minor >= min_minor ? table : NULL;
    }
    if (strcmp(name, LOOM_BACKEND_SERVICE) == 0) {
        const loom_backend_service *bound = loom_device_service();
        return bound && bound->abi_minor >= min_minor ? bound : NULL;
    }
    if (strcmp(name, LOOM_STORE_SERVICE) == 0)
        return atomic_load(&run_store) && store_api.abi_minor >= min_minor ? &store_api : NULL;
    return NULL;
}

/* splitmix64: a counter-based generator, so element i of a stream is the same number whatever
 * order or thread computes it, and any offset is reached in O(1). */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double unit_open(uint64_t bits) { return ((double)(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void loom_random_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n, float mean, float std)
{
    uint64_t key = mix64(seed ^ mix64(stream + 0x632be59bd9b4e019ull));
    for (size_t i = 0; i < n; i++) {
        uint64_t index = offset + i;
        double u1 = unit_open(mix64(key ^ mix64(2 * index)));
        double u2 = unit_open(mix64(key ^ mix64(2 * index + 1)));
        double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        out[i] = (float)(mean + std * z);
    }
}

static void host_random_normal(loom_host *host, uint64_t stream, uint64_t offset, float *out, size_t n, float mean,
                               float std)
{
    (void)host;
    loom_random_normal(run_seed, stream, offset, out, n, mean, std);
}

static int32_t host_num_threads(loom_host *host)
{
    (void)host;
    if (run_threads > 0) return run_threads;
    /* OMP_NUM_THREADS (which `loom launch` sets per rank) or all cores. */
    int threads = omp_get_max_threads();
    return threads > 0 ? threads : 1;
}

static const loom_host_api host_api = {
    LOOM_HEADER_INIT(loom_host_api),
    .alloc = host_alloc,
    .free_memory = host_free,
    .log = host_log,
    .fail = host_fail,
    .cfg_f64 = loom_config_f64,
    .cfg_i64 = loom_config_i64,
    .cfg_bool = loom_config_bool,
    .cfg_str = loom_config_str,
    .cfg_key = loom_config_key,
    .service = host_service,
    .random_normal = host_random_normal,
    .num_threads = host_num_threads,
};

const loom_host_api *loom_host_api_table(void) { return &host_api; }
