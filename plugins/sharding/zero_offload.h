/*
 * zero_offload.h - ZeRO-Offload's bytes in flight for zero2 (docs/semantics/deepspeed.md#offload):
 * this rank's partition of the parameters and of the summed gradients, each with a copy in
 * host memory, so that the optimizer step (master weights, optimizer states, the update) runs
 * on the CPU out of host memory only.
 *
 *   backward, last micro-batch: as each released range's reduction completes, this rank's
 *       finished piece of the gradient partition is copied device -> host on a copy stream,
 *       ordered after the compute stream by an event: the copies run while backward goes on;
 *   finish_grads: pieces no release touched in the last micro-batch are copied too, and the
 *       copy stream is waited for: the host copy is then the whole summed partition;
 *   publish: the host copy of the parameters (updated by the step) goes host -> device into
 *       the partition of the flat parameters, which zero2 then all-gathers as without offload.
 *
 * With a backend bound the two host copies are pinned (the only buffers DMA touches) and the
 * copies go through the backend's copy/stream/event members ("loom.backend/1"); on a CPU run
 * they are ordinary host memory and memcpy, the same bookkeeping. The copies move bits, so
 * training with and without offload gives the same bits. Header-only: each plugin is its own
 * .so.
 */
#ifndef LOOM_PLUGINS_ZERO_OFFLOAD_H
#define LOOM_PLUGINS_ZERO_OFFLOAD_H

#include <stdlib.h>
#include <string.h>

#include <loom/backend.h>
#include <loom/sharding.h>

/* Pieces copied in one step before finish_grads stops tracking them and copies the whole
 * partition once more (a model releasing more ranges than this still trains right). */
#define ZERO_OFFLOAD_MAX_PIECES 512

typedef struct zero_offload {
    loom_host *host;
    const loom_host_api *api;
    const loom_backend_service *backend; /* NULL: a CPU run, copies are memcpy          */
    loom_stream *stream;                 /* the copy stream                              */
    loom_event *ready;                   /* the compute stream's point a copy waits for  */
    int64_t begin, length;               /* the owned range [begin, begin + length)      */
    size_t element;
    unsigned char *params, *grads;       /* host copies of the partition                 */
    int64_t pieces[ZERO_OFFLOAD_MAX_PIECES][2]; /* [begin, end) copied this step, partition-relative */
    size_t n_pieces;
    int overflowed;                      /* more pieces than tracked: copy everything    */
} zero_offload;

static inline void *zero_offload_alloc(zero_offload *o, size_t bytes)
{
    if (o->backend) return o->backend->vtable->alloc_pinned(o->backend->instance, bytes ? bytes : 1);
    return o->api->alloc(o->host, bytes ? bytes : 1, 0, LOOM_DEVICE_CPU, 0);
}

static inline void zero_offload_free(zero_offload *o, void *p)
{
    if (!p) return;
    if (o->backend) o->backend->vtable->free_pinned(o->backend->instance, p);
    else o->api->free_memory(o->host, p);
}

/* bytes from src to dst in `direction`; with a backend on the copy stream after everything
 * issued so far on the compute stream. */
static inline loom_status zero_offload_copy(zero_offload *o, void *dst, const void *src, size_t bytes,
                                            uint32_t direction)
{
    if (bytes == 0) return LOOM_OK;
    if (!o->backend) {
        memcpy(dst, src, bytes);
        return LOOM_OK;
    }
    const loom_backend_vtable *b = o->backend->vtable;
    loom_backend *d = o->backend->instance;
    loom_status st = b->event_record(d, o->ready, NULL);
    if (st == LOOM_OK) st = b->stream_wait_event(d, o->stream, o->ready);
    if (st == LOOM_OK) st = b->copy(d, dst, src, bytes, direction, o->stream);
    return st;
}

static inline loom_status zero_offload_wait(zero_offload *o)
{
    return o->backend ? o->backend->vtable->stream_synchronize(o->backend->instance, o->stream) : LOOM_OK;
}

static inline void zero_offload_release(zero_offload *o)
{
    if (!o->api) return;
    zero_offload_wait(o);
    zero_offload_free(o, o->params);
    zero_offload_free(o, o->grads);
    if (o->backend && o->ready) o->backend->vtable->event_destroy(o->backend->instance, o->ready);
    if (o->backend && o->stream) o->backend->vtable->stream_destroy(o->backend->instance, o->stream);
    memset(o, 0, sizeof *o);
}

/* Host copies of the partition [begin, begin + length) of `params` (device memory when a backend
 * is bound), the parameters' filled from it. On failure the caller releases o. */
static inline loom_status zero_offload_init(zero_offload *o, loom_host *host, const loom_host_api *api,
                                            const void *params, int64_t begin, int64_t length, size_t element)
{
    memset(o, 0, sizeof *o);
    o->host = host;
    o->api = api;
    o->begin = begin;
    o->length = length;
    o->element = element;
    o->backend = api->service(host, LOOM_BACKEND_SERVICE, 4);
    loom_status st;
    if (o->backend) {
        const loom_backend_vtable *b = o->backend->vtable;
        if ((st = b->stream_create(o->backend->instance, &o->stream)) != LOOM_OK) return st;
        if ((st = b->event_create(o->backend->instance, &o->ready)) != LOOM_OK) return st;
    }
    const size_t bytes = (size_t)length * element;
    o->params = zero_offload_alloc(o, bytes);
    o->grads = zero_offload_alloc(o, bytes);
    if (!o->params || !o->grads)
        return api->fail(host, LOOM_E_NOMEM, "cpu_offload: out of %s memory for 2 x %zu bytes of host copies",
                         o->backend ? "pinned" : "host", bytes);
    memset(o->grads, 0, bytes);
    st = zero_offload_copy(o, o->params, (const unsigned char *)params + (size_t)begin * element, bytes,
                           LOOM_COPY_DEVICE_TO_HOST);
    return st == LOOM_OK ? zero_offload_wait(o) : st;
}

static inline uint64_t zero_offload_bytes(const zero_offload *o) { return 2 * (uint64_t)o->length * o->element; }

/* A new step's gradients: nothing copied yet. */
static inline void zero_offload_begin_step(zero_offload *o)
{
    o->n_pieces = 0;
    o->overflowed = 0;
}

/* Partition elements [b, e) (flat indices) of the device partition `owned` are final for this
 * step: start their copy to the host. */
static inline loom_status zero_offload_grad_piece(zero_offload *o, const unsigned char *owned, int64_t b, int64_t e)
{
    b -= o->begin;
    e -= o->begin;
    if (b >= e) return LOOM_OK;
    if (o->n_pieces < ZERO_OFFLOAD_MAX_PIECES) {
        o->pieces[o->n_pieces][0] = b;
        o->pieces[o->n_pieces][1] = e;
        o->n_pieces++;
    } else {
        o->overflowed = 1;
    }
    return zero_offload_copy(o, o->grads + (size_t)b * o->element, owned + (size_t)b * o->element,
                             (size_t)(e - b) * o->element, LOOM_COPY_DEVICE_TO_HOST);
}

static int zero_offload_by_begin(const void *x, const void *y)
{
    const int64_t *a = x, *b = y;
    return (a[0] > b[0]) - (a[0] < b[0]);
}

/* End of backward: copy what the last micro-batch did not release (parameters without a
 * gradient there keep what earlier micro-batches summed, or zero), then wait for every copy. */
static inline loom_status zero_offload_finish(zero_offload *o, const unsigned char *owned)
{
    loom_status st = LOOM_OK;
    if (o->overflowed) {
        st = zero_offload_copy(o, o->grads, owned, (size_t)o->length * o->element, LOOM_COPY_DEVICE_TO_HOST);
    } else {
        qsort(o->pieces, o->n_pieces, sizeof o->pieces[0], zero_offload_by_begin);
        int64_t covered = 0;
        for (size_t i = 0; i <= o->n_pieces && st == LOOM_OK; i++) {
            int64_t next = i < o->n_pieces ? o->pieces[i][0] : o->length;
            if (next > covered)
                st = zero_offload_copy(o, o->grads + (size_t)covered * o->element,
                                       owned + (size_t)covered * o->element, (size_t)(next - covered) * o->element,
                                       LOOM_COPY_DEVICE_TO_HOST);
            if (i < o->n_pieces && o->pieces[i][1] > covered) covered = o->pieces[i][1];
        }
    }
    loom_status w = zero_offload_wait(o);
    return st != LOOM_OK ? st : w;
}

/* The step updated the host copy of the parameters: into the device partition of `params`
 * (before zero2 gathers it), waited for. */
static inline loom_status zero_offload_publish(zero_offload *o, unsigned char *params)
{
    loom_status st = zero_offload_copy(o, params + (size_t)o->begin * o->element, o->params,
                                       (size_t)o->length * o->element, LOOM_COPY_HOST_TO_DEVICE);
    loom_status w = zero_offload_wait(o);
    return st != LOOM_OK ? st : w;
}

#endif
