/*
 * host.h - the host-services table the core lends to every plugin instance (loom_host_api of
 * abi/loom/loom.h), and the per-instance host context behind it.
 */
#ifndef LOOM_CORE_HOST_H
#define LOOM_CORE_HOST_H

#include <loom/loom.h>

/* The table passed to every plugin create(). Static; valid for the process. */
const loom_host_api *loom_host_api_table(void);

/* A host context for one plugin instance: log lines and errors are tagged with plugin_name.
 * Owned by the caller; destroy after the plugin instance. */
loom_host *loom_host_create(const char *plugin_name);
void loom_host_destroy(loom_host *host);

/* Lend the "loom.trainer/1" service to the instance behind `host` (callbacks): api->service
 * returns `table`, whose members find `trainer` again through loom_host_trainer. Set before
 * the instance's create(); NULL table (the default): no such service. */
typedef struct loom_trainer_api loom_trainer_api;
void loom_host_set_trainer(loom_host *host, void *trainer, const loom_trainer_api *table);
void *loom_host_trainer(const loom_host *host);

/* Process-wide settings the host services read. */
void loom_host_set_seed(uint64_t seed);                /* random_normal's run seed (default 42) */
void loom_host_set_threads(int32_t threads);           /* num_threads() (default: all cores)    */
void loom_host_set_rank(int32_t rank);                 /* log prefix in distributed runs; -1 off */
void loom_host_set_log_level(uint32_t level);          /* LOOM_LOG_*; default LOOM_LOG_INFO     */
uint32_t loom_host_log_level(void);
/* The run's rendezvous store client (store.h; NULL: none, the default). While set,
 * api->service(host, LOOM_STORE_SERVICE, 0) returns a loom_store_api that uses it. The
 * caller keeps ownership: set NULL before closing it. */
typedef struct loom_store_client loom_store_client;
void loom_host_set_store(loom_store_client *store);

/* Bytes currently allocated through api->alloc, and the peak, for the memory report. */
uint64_t loom_host_allocated_bytes(void);
uint64_t loom_host_peak_allocated_bytes(void);

/* The generator behind random_normal: counter-based, so element i of (seed, stream) is the
 * same whichever thread or rank computes it. */
void loom_random_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n, float mean,
                        float std);

/* The core's own logging, same format as plugins' ("loom: " prefix). */
void loom_log(uint32_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
