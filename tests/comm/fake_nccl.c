/* fake_nccl.c - the recorded fake of fake_nccl.h: nccl_ops_load for the test build. */
#include "fake_nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

fake_state fake;

static int comm_token, stream_tokens[8], event_tokens[4096];
static int n_streams, n_events;

void fake_reset(fake_mode mode)
{
    memset(&fake, 0, sizeof fake);
    fake.mode = mode;
}

static void trace(const char *fmt, const char *a, const char *b)
{
    size_t len = strlen(fake.trace);
    if (len + 32 < sizeof fake.trace) snprintf(fake.trace + len, sizeof fake.trace - len, fmt, a, b);
}

void fake_mark_host(const void *begin, size_t bytes)
{
    if (fake.n_host == FAKE_HOST_RANGES) abort();
    fake.host[fake.n_host].begin = begin;
    fake.host[fake.n_host++].bytes = bytes;
}

static int f_is_host_memory(const void *ptr)
{
    for (int i = 0; i < fake.n_host; i++)
        if ((const char *)ptr >= (const char *)fake.host[i].begin &&
            (const char *)ptr < (const char *)fake.host[i].begin + fake.host[i].bytes)
            return 1;
    return 0;
}

static int f_copy(void *dst, const void *src, size_t bytes)
{
    fake.copies++;
    int from_host = f_is_host_memory(src), to_host = f_is_host_memory(dst);
    trace("C(%s%s) ", from_host ? "H2" : "D2", to_host ? "H" : "D");
    memmove(dst, src, bytes);
    return 0;
}

static void move_data(const nccl_call *call)
{
    if (call->kind == NCCL_KIND_ALL_REDUCE && call->dtype == NCCL_OPS_FLOAT64 && call->op == NCCL_OPS_SUM)
        for (size_t i = 0; i < call->count; i++)
            ((double *)call->recv)[i] = ((const double *)call->send)[i] + 1.0;
    if (call->kind == NCCL_KIND_ALL_GATHER && call->dtype == NCCL_OPS_UINT8)
        for (int r = 0; r < fake.init_nranks; r++)
            for (size_t i = 0; i < call->count; i++)
                ((unsigned char *)call->recv)[(size_t)r * call->count + i] =
                    (unsigned char)(((const unsigned char *)call->send)[i] + r);
}

static int f_get_unique_id(unsigned char id[NCCL_OPS_ID_BYTES])
{
    fake.unique_ids++;
    if (getrandom(id, NCCL_OPS_ID_BYTES, 0) != NCCL_OPS_ID_BYTES) return 2;
    memcpy(fake.made_id, id, NCCL_OPS_ID_BYTES);
    return NCCL_OPS_SUCCESS;
}

static int f_comm_init_rank(void **comm, int nranks, const unsigned char id[NCCL_OPS_ID_BYTES], int rank)
{
    fake.inits++;
    memcpy(fake.init_id, id, NCCL_OPS_ID_BYTES);
    fake.init_nranks = nranks;
    fake.init_rank = rank;
    *comm = &comm_token;
    return NCCL_OPS_IN_PROGRESS; /* non-blocking, as the real one usually answers */
}

static int f_comm_get_async_error(void *comm, int *state)
{
    if (comm != &comm_token) return NCCL_OPS_INVALID_ARGUMENT;
    *state = NCCL_OPS_SUCCESS;
    if (fake.mode == FAKE_INIT_FROZEN) *state = NCCL_OPS_IN_PROGRESS;
    if (fake.mode == FAKE_REMOTE_ERROR && fake.n_calls > 0) *state = NCCL_OPS_REMOTE_ERROR;
    if (fake.mode == FAKE_ENQUEUE_PENDING && fake.pending_polls > 0) {
        fake.pending_polls--;
        *state = NCCL_OPS_IN_PROGRESS;
    }
    return NCCL_OPS_SUCCESS;
}

static int f_comm_abort(void *comm)
{
    fake.aborts += comm == &comm_token;
    return NCCL_OPS_SUCCESS;
}
static int f_comm_finalize(void *comm)
{
    fake.finalizes += comm == &comm_token;
    return NCCL_OPS_SUCCESS;
}
static int f_comm_destroy(void *comm)
{
    fake.destroys += comm == &comm_token;
    return NCCL_OPS_SUCCESS;
}

static int f_issue(void *comm, const nccl_call *call, void *stream)
{
    if (comm != &comm_token || fake.n_calls == FAKE_MAX_CALLS) return NCCL_OPS_INVALID_ARGUMENT;
    if (f_is_host_memory(call->send) || f_is_host_memory(call->recv)) return NCCL_OPS_INVALID_ARGUMENT;
    if (fake.move_data) move_data(call);
    fake.call_streams[fake.n_calls] = stream;
    fake.calls[fake.n_calls++] = *call;
    trace("I(%s%s) ", stream == fake.comm_stream ? "S" : "?", "");
    if (fake.mode == FAKE_ENQUEUE_PENDING) {
        fake.pending_polls = 3;
        return NCCL_OPS_IN_PROGRESS;
    }
    return NCCL_OPS_SUCCESS;
}

static const char *f_error_string(int result)
{
    return result == NCCL_OPS_REMOTE_ERROR ? "remote process exited or there was a network error" : "fake NCCL error";
}
static const char *f_last_error(void *comm)
{
    (void)comm;
    return fake.mode == FAKE_REMOTE_ERROR ? "fake: peer rank 1 closed its connection" : "";
}

static int f_stream_create(void **stream)
{
    if (n_streams == 8) n_streams = 0;
    *stream = &stream_tokens[n_streams++];
    fake.comm_stream = *stream;
    fake.streams_created++;
    return 0;
}
static int f_stream_destroy(void *stream)
{
    fake.streams_destroyed += stream != NULL;
    return 0;
}
static int f_event_create(void **event)
{
    if (n_events == 4096) n_events = 0;
    *event = &event_tokens[n_events++];
    if (!fake.ready_event) fake.ready_event = *event; /* the first one is the instance's "ready" */
    fake.events_created++;
    return 0;
}
static int f_event_destroy(void *event)
{
    fake.events_destroyed += event != NULL;
    return 0;
}
static int f_event_record(void *event, void *stream)
{
    trace("R(%s,%s) ", event == fake.ready_event ? "ready" : "e",
          stream == NULL ? "C" : stream == fake.comm_stream ? "S" : "?");
    return 0;
}
static int f_stream_wait_event(void *stream, void *event)
{
    trace("W(%s,%s) ", stream == fake.comm_stream ? "S" : "?", event == fake.ready_event ? "ready" : "e");
    return 0;
}
static int f_event_query(void *event)
{
    (void)event;
    return fake.mode == FAKE_COMPLETE || fake.mode == FAKE_ENQUEUE_PENDING ? 0 : NCCL_OPS_NOT_READY;
}
static int f_device_alloc(void **ptr, size_t bytes)
{
    *ptr = calloc(1, bytes);
    fake.allocs++;
    return *ptr ? 0 : 2;
}
static int f_device_free(void *ptr)
{
    fake.frees += ptr != NULL;
    if (ptr) trace("F%s%s ", "", "");
    free(ptr);
    return 0;
}
static const char *f_cuda_error_string(int error)
{
    (void)error;
    return "fake CUDA error";
}

static const nccl_ops fake_ops = {
    .get_unique_id = f_get_unique_id,
    .comm_init_rank = f_comm_init_rank,
    .comm_get_async_error = f_comm_get_async_error,
    .comm_abort = f_comm_abort,
    .comm_finalize = f_comm_finalize,
    .comm_destroy = f_comm_destroy,
    .issue = f_issue,
    .error_string = f_error_string,
    .last_error = f_last_error,
    .stream_create = f_stream_create,
    .stream_destroy = f_stream_destroy,
    .event_create = f_event_create,
    .event_destroy = f_event_destroy,
    .event_record = f_event_record,
    .stream_wait_event = f_stream_wait_event,
    .event_query = f_event_query,
    .device_alloc = f_device_alloc,
    .device_free = f_device_free,
    .cuda_error_string = f_cuda_error_string,
    .is_host_memory = f_is_host_memory,
    .copy = f_copy,
};

const nccl_ops *nccl_ops_load(char *why, size_t size)
{
    if (fake.missing) {
        snprintf(why, size, "NCCL is not installed here (libnccl.so.2: cannot open shared object file): install NCCL "
                            "2.14 or newer (Debian: libnccl2), or use --ddp_backend gloo");
        return NULL;
    }
    return &fake_ops;
}
