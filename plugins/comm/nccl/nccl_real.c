/*
 * nccl_real.c - the nccl_ops table of the plugin: NCCL from libnccl.so.2, opened with dlopen
 * on first use, and the CUDA runtime the plugin links (as the cuda backend does).
 *
 * dlopen rather than linking: a machine with the CUDA runtime but without NCCL still loads the
 * plugin (`loom plugins` lists it) and a run that asks for it gets one line saying NCCL is
 * missing, not a loader error.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

#include "nccl_ops.h"

/* nccl_comm.c speaks NCCL's numbers without its header. */
_Static_assert(NCCL_OPS_SUCCESS == ncclSuccess && NCCL_OPS_IN_PROGRESS == ncclInProgress &&
                   NCCL_OPS_REMOTE_ERROR == ncclRemoteError && NCCL_OPS_INVALID_ARGUMENT == ncclInvalidArgument,
               "ncclResult_t");
_Static_assert(NCCL_OPS_FLOAT32 == ncclFloat32 && NCCL_OPS_FLOAT16 == ncclFloat16 &&
                   NCCL_OPS_BFLOAT16 == ncclBfloat16 && NCCL_OPS_FLOAT64 == ncclFloat64 &&
                   NCCL_OPS_INT32 == ncclInt32 && NCCL_OPS_INT64 == ncclInt64 && NCCL_OPS_UINT8 == ncclUint8 &&
                   NCCL_OPS_INT8 == ncclInt8,
               "ncclDataType_t");
_Static_assert(NCCL_OPS_SUM == ncclSum && NCCL_OPS_MAX == ncclMax && NCCL_OPS_MIN == ncclMin, "ncclRedOp_t");
_Static_assert(NCCL_OPS_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId");
_Static_assert(NCCL_OPS_NOT_READY != cudaSuccess && NCCL_OPS_NOT_READY < 0, "event_query");

/* The NCCL functions used, resolved from libnccl.so.2. */
static struct {
    ncclResult_t (*GetVersion)(int *);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommFinalize)(ncclComm_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    const char *(*GetErrorString)(ncclResult_t);
    const char *(*GetLastError)(ncclComm_t);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*ReduceScatter)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                  cudaStream_t);
    ncclResult_t (*AllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*Broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
} nccl;

static int real_get_unique_id(unsigned char id[NCCL_OPS_ID_BYTES])
{
    ncclUniqueId u;
    ncclResult_t r = nccl.GetUniqueId(&u);
    memcpy(id, u.internal, NCCL_OPS_ID_BYTES);
    return (int)r;
}

static int real_comm_init_rank(void **comm, int nranks, const unsigned char id[NCCL_OPS_ID_BYTES], int rank)
{
    ncclUniqueId u;
    memcpy(u.internal, id, NCCL_OPS_ID_BYTES);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0; /* init and collectives return at once: nccl_comm.c bounds every wait */
    ncclComm_t c = NULL;
    ncclResult_t r = nccl.CommInitRankConfig(&c, nranks, u, rank, &config);
    *comm = c;
    return (int)r;
}

static int real_comm_get_async_error(void *comm, int *async_error)
{
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = nccl.CommGetAsyncError((ncclComm_t)comm, &state);
    *async_error = (int)state;
    return (int)r;
}

static int real_comm_abort(void *comm) { return (int)nccl.CommAbort((ncclComm_t)comm); }
static int real_comm_finalize(void *comm) { return (int)nccl.CommFinalize((ncclComm_t)comm); }
static int real_comm_destroy(void *comm) { return (int)nccl.CommDestroy((ncclComm_t)comm); }
static const char *real_error_string(int result) { return nccl.GetErrorString((ncclResult_t)result); }
static const char *real_last_error(void *comm)
{
    return nccl.GetLastError ? nccl.GetLastError((ncclComm_t)comm) : NULL;
}

static int real_issue(void *comm_, const nccl_call *c, void *stream_)
{
    ncclComm_t comm = (ncclComm_t)comm_;
    cudaStream_t stream = (cudaStream_t)stream_;
    ncclDataType_t dt = (ncclDataType_t)c->dtype;
    ncclRedOp_t op = (ncclRedOp_t)c->op;
    switch (c->kind) {
    case NCCL_KIND_ALL_REDUCE: return (int)nccl.AllReduce(c->send, c->recv, c->count, dt, op, comm, stream);
    case NCCL_KIND_REDUCE_SCATTER: return (int)nccl.ReduceScatter(c->send, c->recv, c->count, dt, op, comm, stream);
    case NCCL_KIND_ALL_GATHER: return (int)nccl.AllGather(c->send, c->recv, c->count, dt, comm, stream);
    case NCCL_KIND_BROADCAST: return (int)nccl.Broadcast(c->send, c->recv, c->count, dt, c->root, comm, stream);
    case NCCL_KIND_REDUCE: return (int)nccl.Reduce(c->send, c->recv, c->count, dt, op, c->root, comm, stream);
    case NCCL_KIND_ALL_TO_ALL: {
        /* Send/receive pairs in one group (ncclAlltoAll is new in NCCL 2.28). */
        size_t block = c->count * (c->dtype == ncclFloat64 || c->dtype == ncclInt64   ? 8
                                   : c->dtype == ncclFloat32 || c->dtype == ncclInt32 ? 4
                                   : c->dtype == ncclUint8 || c->dtype == ncclInt8    ? 1
                                                                                      : 2);
        ncclResult_t r = nccl.GroupStart();
        for (int peer = 0; peer < c->nranks && (r == ncclSuccess || r == ncclInProgress); peer++) {
            r = nccl.Send((const char *)c->send + (size_t)peer * block, c->count, dt, peer, comm, stream);
            if (r == ncclSuccess || r == ncclInProgress)
                r = nccl.Recv((char *)c->recv + (size_t)peer * block, c->count, dt, peer, comm, stream);
        }
        ncclResult_t end = nccl.GroupEnd();
        return (int)(r != ncclSuccess && r != ncclInProgress ? r : end);
    }
    }
    return (int)ncclInvalidArgument;
}

static int real_stream_create(void **stream)
{
    cudaStream_t s = NULL;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    *stream = s;
    return (int)e;
}
static int real_stream_destroy(void *stream) { return (int)cudaStreamDestroy((cudaStream_t)stream); }

static int real_event_create(void **event)
{
    cudaEvent_t ev = NULL;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    *event = ev;
    return (int)e;
}
static int real_event_destroy(void *event) { return (int)cudaEventDestroy((cudaEvent_t)event); }

/* Stream NULL is the compute stream: the backend issues its kernels on the legacy default stream. */
static int real_event_record(void *event, void *stream)
{
    return (int)cudaEventRecord((cudaEvent_t)event, stream ? (cudaStream_t)stream : cudaStreamLegacy);
}
static int real_stream_wait_event(void *stream, void *event)
{
    return (int)cudaStreamWaitEvent(stream ? (cudaStream_t)stream : cudaStreamLegacy, (cudaEvent_t)event, 0);
}
static int real_event_query(void *event)
{
    cudaError_t e = cudaEventQuery((cudaEvent_t)event);
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return NCCL_OPS_NOT_READY;
    }
    return (int)e;
}
static int real_device_alloc(void **ptr, size_t bytes)
{
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e == cudaSuccess) e = cudaMemset(*ptr, 0, bytes);
    return (int)e;
}
static int real_device_free(void *ptr) { return (int)cudaFree(ptr); }
static const char *real_cuda_error_string(int error) { return cudaGetErrorString((cudaError_t)error); }
static int real_is_host_memory(const void *ptr)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return a.type == cudaMemoryTypeUnregistered || a.devicePointer == NULL;
}
/* On the legacy default stream, where the backend computes (stream NULL above), so after the
 * kernels that wrote the bytes; the stream is synchronized, so the copy is done on return. */
static int real_copy(void *dst, const void *src, size_t bytes)
{
    cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamLegacy);
    return (int)e;
}

static const nccl_ops real_ops = {
    .get_unique_id = real_get_unique_id,
    .comm_init_rank = real_comm_init_rank,
    .comm_get_async_error = real_comm_get_async_error,
    .comm_abort = real_comm_abort,
    .comm_finalize = real_comm_finalize,
    .comm_destroy = real_comm_destroy,
    .issue = real_issue,
    .error_string = real_error_string,
    .last_error = real_last_error,
    .stream_create = real_stream_create,
    .stream_destroy = real_stream_destroy,
    .event_create = real_event_create,
    .event_destroy = real_event_destroy,
    .event_record = real_event_record,
    .stream_wait_event = real_stream_wait_event,
    .event_query = real_event_query,
    .device_alloc = real_device_alloc,
    .device_free = real_device_free,
    .cuda_error_string = real_cuda_error_string,
    .is_host_memory = real_is_host_memory,
    .copy = real_copy,
};

#define NCCL_MIN_VERSION 21400 /* non-blocking communicators (ncclConfig_t.blocking) */

const nccl_ops *nccl_ops_load(char *why, size_t size)
{
    static void *lib;
    if (lib) return &real_ops;
    /* The library stays open for the process: NCCL's proxy threads may outlive a communicator. */
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, size,
                 "NCCL is not installed here (%s): install NCCL 2.14 or newer (Debian: libnccl2), or use "
                 "--ddp_backend gloo",
                 dlerror());
        return NULL;
    }
    struct {
        const char *name;
        void **slot;
        int optional;
    } syms[] = {
        {"ncclGetVersion", (void **)&nccl.GetVersion, 0},
        {"ncclGetUniqueId", (void **)&nccl.GetUniqueId, 0},
        {"ncclCommInitRankConfig", (void **)&nccl.CommInitRankConfig, 0},
        {"ncclCommGetAsyncError", (void **)&nccl.CommGetAsyncError, 0},
        {"ncclCommAbort", (void **)&nccl.CommAbort, 0},
        {"ncclCommFinalize", (void **)&nccl.CommFinalize, 0},
        {"ncclCommDestroy", (void **)&nccl.CommDestroy, 0},
        {"ncclGetErrorString", (void **)&nccl.GetErrorString, 0},
        {"ncclGetLastError", (void **)&nccl.GetLastError, 1},
        {"ncclAllReduce", (void **)&nccl.AllReduce, 0},
        {"ncclReduceScatter", (void **)&nccl.ReduceScatter, 0},
        {"ncclAllGather", (void **)&nccl.AllGather, 0},
        {"ncclBroadcast", (void **)&nccl.Broadcast, 0},
        {"ncclReduce", (void **)&nccl.Reduce, 0},
        {"ncclSend", (void **)&nccl.Send, 0},
        {"ncclRecv", (void **)&nccl.Recv, 0},
        {"ncclGroupStart", (void **)&nccl.GroupStart, 0},
        {"ncclGroupEnd", (void **)&nccl.GroupEnd, 0},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot && !syms[i].optional) {
            snprintf(why, size, "NCCL in libnccl.so.2 lacks %s: install NCCL 2.14 or newer, or use --ddp_backend gloo",
                     syms[i].name);
            dlclose(h);
            return NULL;
        }
    }
    int version = 0;
    if (nccl.GetVersion(&version) != ncclSuccess || version < NCCL_MIN_VERSION) {
        snprintf(why, size,
                 "NCCL %d.%d.%d is too old: loom needs 2.14 or newer (non-blocking communicators), or use "
                 "--ddp_backend gloo",
                 version / 10000, version / 100 % 100, version % 100);
        dlclose(h);
        return NULL;
    }
    lib = h;
    return &real_ops;
}
