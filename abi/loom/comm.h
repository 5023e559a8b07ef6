/*
 * comm.h - collectives between ranks (LOOM_KIND_COMM): local (one process), gloo.
 *
 * A comm plugin moves bytes and decides nothing. Buffers are on the device the plugin was
 * created for; the host's own blocking collectives (a few sums and flags, gathered predictions)
 * pass host memory whatever the device, so a plugin for a device stages host buffers (nccl
 * does, docs/gpu.md#nccl). Every collective can run blocking (request == NULL) or asynchronously (it
 * writes a request to wait on). Every wait honours the setup's timeout: a peer that is gone
 * or stuck becomes LOOM_E_TIMEOUT or LOOM_E_COMM with a message naming the peer, never a
 * hang. Collectives on one instance MUST be issued in the same order on every rank.
 *
 * Canonical order: a SUM over ranks is computed in rank order (((r0 + r1) + r2) + ...), so
 * the result is bitwise identical whatever the algorithm or world size; plugins that cannot
 * guarantee it for some operation say so by leaving LOOM_COMM_ORDERED_SUM out of `flags`.
 */
#ifndef LOOM_COMM_H
#define LOOM_COMM_H

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_REDUCE_SUM 1
#define LOOM_REDUCE_MAX 2
#define LOOM_REDUCE_MIN 3

/* Everything needed to join a group. Built by the host from RANK, WORLD_SIZE, MASTER_ADDR...;
 * borrowed during create() (copy what you keep). Read on the init thread. Every member
 * Required, since 1.0. */
typedef struct loom_comm_setup {
    LOOM_STRUCT_HEADER;
    int32_t rank;             /* this rank, 0 <= rank < world_size                         */
    int32_t world_size;       /* ranks in the group                                        */
    int32_t local_rank;       /* this rank among those of its machine                      */
    int32_t local_world_size; /* ranks on this machine                                     */
    const char *master_addr;  /* rendezvous host; NULL or "" only in a one-process run     */
    int32_t master_port;      /* rendezvous TCP port                                       */
    uint32_t device;          /* LOOM_DEVICE_* of the buffers                              */
    double timeout_seconds;   /* for rendezvous and every collective (--ddp_timeout)       */

    /* ABI 1.13+: append below. */
} loom_comm_setup;

/* The rendezvous store: a key-value store every rank of the run reaches, served by rank 0 at
 * MASTER_ADDR:MASTER_PORT (as torchrun's TCP store). A comm plugin exchanges its connection
 * details through it. Obtain it with api->service(host, LOOM_STORE_SERVICE, 0); NULL in a
 * one-process run. The table is owned by the host and valid for the run; all members MT-safe.
 * Every wait honours timeout_seconds and fails with LOOM_E_TIMEOUT naming the key and the
 * store's address, never hangs; a store that cannot be reached is LOOM_E_COMM. */
#define LOOM_STORE_SERVICE "loom.store/1"

/* Every member Required (set by the host, never NULL), MT-safe, since 1.0; keys and values
 * passed in are borrowed for the call and copied by the store. */
typedef struct loom_store_api {
    LOOM_STRUCT_HEADER;
    /* Set key (a NUL-terminated string) to size bytes of value (copied). */
    loom_status (*set)(loom_host *host, const char *key, const void *value, size_t size);
    /* Wait until key exists, then copy min(capacity, its size) bytes into value and write its
     * full size to *size (a caller with too small a buffer calls again). */
    loom_status (*get)(loom_host *host, const char *key, void *value, size_t capacity, size_t *size,
                       double timeout_seconds);
    /* Atomically add delta to the integer stored at key (a missing key counts as 0) and write
     * the new value to *value. */
    loom_status (*add)(loom_host *host, const char *key, int64_t delta, int64_t *value);
    /* Whether every key of keys[0..n) exists, waiting up to timeout_seconds for them (LOOM_OK:
     * all do). */
    loom_status (*wait)(loom_host *host, const char *const *keys, size_t n, double timeout_seconds);

    /* ABI 1.13+: append below. */
} loom_store_api;

typedef struct loom_comm loom_comm;                 /* plugin-private instance */
typedef struct loom_comm_request loom_comm_request; /* plugin-private pending operation */

/* loom_comm_vtable.flags */
#define LOOM_COMM_ORDERED_SUM 1u   /* SUM results are in canonical rank order               */

/* Filled by the plugin (static storage, never freed). Every member since 1.0. Buffers passed
 * to a collective are the caller's, borrowed until the collective is done (the call returns
 * when blocking; wait() returns otherwise); the caller must not touch them meanwhile. A
 * request is the plugin's until wait() frees it. */
typedef struct loom_comm_vtable {
    LOOM_STRUCT_HEADER;
    uint32_t flags;     /* Required (0: no promise). LOOM_COMM_*                              */
    uint32_t reserved1; /* 0                                                                */

    /* Required. Join the group (rendezvous, connect every peer). *out is owned by the host
     * until destroy(); on failure *out stays NULL and api->fail says why. Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          const loom_comm_setup *setup, loom_comm **out);
    /* Required. Leave the group; pending requests are abandoned. NULL is a no-op. Init
     * thread only. */
    void (*destroy)(loom_comm *self);

    /* Required. In-place all-reduce of count elements of dtype. `request`: NULL = blocking;
     * otherwise *request receives a handle for wait(). One thread per instance (a plugin
     * may run the transfer on its own threads). */
    loom_status (*all_reduce)(loom_comm *self, void *buffer, size_t count, uint32_t dtype,
                              uint32_t op, loom_comm_request **request);
    /* Required. send holds world_size * count elements; rank r receives the reduction of
     * block r into recv (count elements). `request` and threading as all_reduce. */
    loom_status (*reduce_scatter)(loom_comm *self, const void *send, void *recv, size_t count,
                                  uint32_t dtype, uint32_t op, loom_comm_request **request);
    /* Required. send holds count elements; recv receives world_size * count, rank order.
     * `request` and threading as all_reduce. */
    loom_status (*all_gather)(loom_comm *self, const void *send, void *recv, size_t count,
                              uint32_t dtype, loom_comm_request **request);
    /* Required. buffer of `root` is copied to every rank. `request` and threading as
     * all_reduce. */
    loom_status (*broadcast)(loom_comm *self, void *buffer, size_t count, uint32_t dtype,
                             int32_t root, loom_comm_request **request);
    /* Required. The reduction lands in `buffer` of `root`; other ranks' buffers are scratch.
     * `request` and threading as all_reduce. */
    loom_status (*reduce)(loom_comm *self, void *buffer, size_t count, uint32_t dtype,
                          uint32_t op, int32_t root, loom_comm_request **request);
    /* Required. send holds world_size blocks of count; block r goes to rank r; recv receives
     * block `rank` of every rank, in rank order. `request` and threading as all_reduce. */
    loom_status (*all_to_all)(loom_comm *self, const void *send, void *recv, size_t count,
                              uint32_t dtype, loom_comm_request **request);
    /* Required. Blocks until every rank has called it (or the timeout passes). One thread
     * per instance. */
    loom_status (*barrier)(loom_comm *self);
    /* Required. Block until the request is done (or the timeout passes) and free it, even
     * on failure; `request` is never NULL. One thread per instance. */
    loom_status (*wait)(loom_comm *self, loom_comm_request *request);

    /* ---- ABI 1.6: memory the peers reach in place (docs/architecture.md#shared-buffers).
     * A 1.5 plugin's vtable is 104 bytes: read these through LOOM_HAS(vt, loom_comm_vtable,
     * alloc_shared) && vt->free_shared. Both are set or both NULL. ---- */

    /* Optional, since 1.6 (NULL, or *memory left NULL: nothing to lend, and the caller uses
     * memory of its own as before). Collective and blocking: every rank calls it with the same
     * `bytes`, in the same order relative to the other collectives, and every rank gets memory
     * or every rank gets NULL. *memory receives `bytes` of zeroed host memory, 64-byte aligned,
     * that this rank's peers can read and write directly (shared memory between the ranks of
     * one machine). An all_reduce whose buffer lies inside it, at the same offset on every rank,
     * then reduces in place: each rank sums its block from every rank's copy and writes the sum
     * into every copy, with no copy through the transport. Any other use works as with the
     * caller's own memory. Peers write into it only inside such an all_reduce. Owned by the
     * plugin; valid until free_shared or destroy. One thread per instance. */
    loom_status (*alloc_shared)(loom_comm *self, size_t bytes, void **memory);
    /* Optional, since 1.6 (NULL with alloc_shared). Give back memory of alloc_shared (NULL: a
     * no-op); not collective, and no collective on it may be pending. Memory that alloc_shared
     * did not hand out is LOOM_E_INVALID. One thread per instance. */
    loom_status (*free_shared)(loom_comm *self, void *memory);

    /* ABI 1.13+: append below. */
} loom_comm_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_comm_setup) == 56, "loom_comm_setup layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_store_api) == 48, "loom_store_api layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_comm_vtable, create) == 24, "comm vtable layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_comm_vtable, alloc_shared) == 104, "comm vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_comm_vtable) == 120, "comm vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_COMM_H */
