/*
 * nccl_ops.h - the NCCL and CUDA calls the nccl communicator makes, as a table of function
 * pointers, so its logic (nccl_comm.c) is plain C that links neither library.
 *
 * The plugin fills the table from libnccl.so.2 (opened with dlopen) and the CUDA runtime
 * (nccl_real.c); tests/comm/fake_nccl.c fills it with a recorded fake, which is how the logic
 * (argument checks, dtype and op mapping, the unique id through the store, the timeout and
 * abort loop, the failure state) runs in CI on a machine without a GPU.
 *
 * Conventions: NCCL members return an NCCL result (NCCL_OPS_* below, NCCL's own numbers);
 * CUDA members return 0 for success and a CUDA error code otherwise (event_query returns
 * NCCL_OPS_NOT_READY while the event's work runs). Handles are opaque pointers. Stream NULL is
 * the compute stream (the backend's stream NULL, CUDA's legacy default stream).
 */
#ifndef LOOM_NCCL_OPS_H
#define LOOM_NCCL_OPS_H

#include <stddef.h>

/* ncclResult_t values (nccl_real.c checks them against nccl.h). */
#define NCCL_OPS_SUCCESS 0
#define NCCL_OPS_INVALID_ARGUMENT 4
#define NCCL_OPS_REMOTE_ERROR 6
#define NCCL_OPS_IN_PROGRESS 7

/* ncclDataType_t and ncclRedOp_t values. */
#define NCCL_OPS_INT8 0
#define NCCL_OPS_UINT8 1
#define NCCL_OPS_INT32 2
#define NCCL_OPS_INT64 4
#define NCCL_OPS_FLOAT16 6
#define NCCL_OPS_FLOAT32 7
#define NCCL_OPS_FLOAT64 8
#define NCCL_OPS_BFLOAT16 9
#define NCCL_OPS_SUM 0
#define NCCL_OPS_MAX 2
#define NCCL_OPS_MIN 3

/* event_query's "still running" (cudaErrorNotReady's meaning, a value of our own). */
#define NCCL_OPS_NOT_READY (-1)

#define NCCL_OPS_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

/* The collectives issue() can start. */
typedef enum nccl_op_kind {
    NCCL_KIND_ALL_REDUCE,
    NCCL_KIND_REDUCE_SCATTER,
    NCCL_KIND_ALL_GATHER,
    NCCL_KIND_BROADCAST,
    NCCL_KIND_REDUCE,
    NCCL_KIND_ALL_TO_ALL
} nccl_op_kind;

/* One collective as NCCL takes it: count is per rank (NCCL's recvcount of reduce_scatter,
 * sendcount of all_gather, the block of all_to_all). */
typedef struct nccl_call {
    nccl_op_kind kind;
    const void *send;
    void *recv;
    size_t count;
    int dtype;  /* NCCL_OPS_FLOAT32, ... */
    int op;     /* NCCL_OPS_SUM, ...; reductions only */
    int root;   /* broadcast, reduce */
    int nranks; /* all_to_all: one send and one receive per rank in a group */
} nccl_call;

typedef struct nccl_ops {
    /* NCCL. `comm` is an ncclComm_t. */
    int (*get_unique_id)(unsigned char id[NCCL_OPS_ID_BYTES]);
    /* A non-blocking init (ncclConfig_t.blocking = 0): returns at once, possibly
     * NCCL_OPS_IN_PROGRESS; comm_get_async_error says when it is done. */
    int (*comm_init_rank)(void **comm, int nranks, const unsigned char id[NCCL_OPS_ID_BYTES], int rank);
    int (*comm_get_async_error)(void *comm, int *async_error);
    int (*comm_abort)(void *comm);
    int (*comm_finalize)(void *comm); /* non-blocking: done when the async error is success */
    int (*comm_destroy)(void *comm);
    /* Enqueue one collective on `stream`. */
    int (*issue)(void *comm, const nccl_call *call, void *stream);
    const char *(*error_string)(int result);
    const char *(*last_error)(void *comm); /* NCCL's own detail of the last failure, or NULL */

    /* CUDA. */
    int (*stream_create)(void **stream); /* a non-blocking stream: ordered only through events */
    int (*stream_destroy)(void *stream);
    int (*event_create)(void **event);
    int (*event_destroy)(void *event);
    int (*event_record)(void *event, void *stream);
    int (*stream_wait_event)(void *stream, void *event);
    int (*event_query)(void *event); /* 0 done, NCCL_OPS_NOT_READY, or a CUDA error */
    int (*device_alloc)(void **ptr, size_t bytes);
    int (*device_free)(void *ptr);
    const char *(*cuda_error_string)(int error);
    /* 1 when no device can address ptr (pageable host memory: cudaMemoryTypeUnregistered, or a
     * pointer CUDA does not know), 0 for device, managed and pinned host memory. */
    int (*is_host_memory)(const void *ptr);
    /* A copy between any two addresses (cudaMemcpyDefault), ordered after the compute stream's
     * work and finished when it returns. */
    int (*copy)(void *dst, const void *src, size_t bytes);
} nccl_ops;

/* The table of this build: nccl_real.c's (libnccl + the CUDA runtime), or a test's fake.
 * Returns NULL with a one-line reason in why when the libraries cannot be used here. */
const nccl_ops *nccl_ops_load(char *why, size_t size);

#endif
