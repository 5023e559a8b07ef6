/*
 * fake_nccl.h - a recorded fake of NCCL and the CUDA runtime behind nccl_ops.h, so the nccl
 * communicator's host logic (plugins/comm/nccl/nccl_comm.c) runs without a GPU. It moves no
 * data: it records what the communicator asked for, and behaves as `fake.mode` says.
 */
#ifndef LOOM_FAKE_NCCL_H
#define LOOM_FAKE_NCCL_H

#include <stddef.h>

#include "nccl_ops.h"

typedef enum fake_mode {
    FAKE_COMPLETE,        /* every collective is done when first asked                       */
    FAKE_FROZEN,          /* a peer stopped: events are never reached, NCCL reports nothing  */
    FAKE_REMOTE_ERROR,    /* a peer died: NCCL's async error turns to ncclRemoteError        */
    FAKE_INIT_FROZEN,     /* a rank never joins: init stays in progress                      */
    FAKE_ENQUEUE_PENDING, /* each enqueue returns in progress and settles after a few polls  */
} fake_mode;

#define FAKE_MAX_CALLS 64
#define FAKE_HOST_RANGES 8
#define FAKE_TRACE 2048

typedef struct fake_state {
    fake_mode mode;
    int missing;                  /* nccl_ops_load refuses, as without libnccl.so.2          */
    int unique_ids, inits, aborts, finalizes, destroys;
    int events_created, events_destroyed, streams_created, streams_destroyed;
    int allocs, frees;
    unsigned char made_id[NCCL_OPS_ID_BYTES]; /* what get_unique_id returned             */
    unsigned char init_id[NCCL_OPS_ID_BYTES]; /* what comm_init_rank was given            */
    int init_nranks, init_rank;
    nccl_call calls[FAKE_MAX_CALLS];
    void *call_streams[FAKE_MAX_CALLS];
    int n_calls;
    /* The order of stream work: "R(ready,C)" record on the compute stream, "W(S,ready)" the
     * communication stream waits, "I" a collective issued on S, "R(e,S)" its event. */
    char trace[FAKE_TRACE];
    void *comm_stream, *ready_event;
    int pending_polls; /* FAKE_ENQUEUE_PENDING: polls left before the enqueue settles */
    /* Pageable host memory (fake_mark_host); every other address is device memory. A
     * collective given host memory fails with ncclInvalidArgument, as NCCL does when it checks
     * its pointers (NCCL_CHECK_POINTERS=1; unchecked, its kernels fault). */
    struct {
        const void *begin;
        size_t bytes;
    } host[FAKE_HOST_RANGES];
    int n_host;
    int copies; /* copy() calls, traced "C(H2D)" / "C(D2H)" / "C(D2D)" */
    /* Move data as if every other rank held 1 (f64 sums: recv = send + 1) or its rank's block
     * (u8 gathers: block r = send + r); off, the fake moves nothing. */
    int move_data;
} fake_state;

extern fake_state fake;

void fake_reset(fake_mode mode);
void fake_mark_host(const void *begin, size_t bytes);

#endif
