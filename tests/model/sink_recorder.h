/* sink_recorder.h - a loom_grad_sink over a flat gradient buffer (any element size) that
 * records the protocol a model follows: what it acquired and released, in order, and every
 * violation (a bad range, overlapping open ranges, a release without its acquire). */
#ifndef LOOM_TEST_SINK_RECORDER_H
#define LOOM_TEST_SINK_RECORDER_H

#include <loom/model.h>
#include <string.h>

typedef struct range {
    int64_t begin, end;
} range;

typedef struct sink_ctx {
    unsigned char *grads;
    size_t element;      /* bytes per gradient element */
    int64_t n;
    range open[8];       /* acquired, not yet released */
    int n_open;
    range acquired[64];  /* in acquire order */
    int n_acquired;
    range released[64];  /* in release order */
    int n_released;
    int violations;      /* overlap, bad range, release without acquire */
    int64_t most_open;   /* the most elements held acquired at once */
} sink_ctx;

static loom_status sink_acquire(void *context, int64_t begin, int64_t end, void **memory)
{
    sink_ctx *s = context;
    if (begin < 0 || end > s->n || begin >= end || s->n_open == 8 || s->n_acquired == 64) {
        s->violations++;
        return LOOM_E_INVALID;
    }
    for (int i = 0; i < s->n_open; i++) {
        if (begin < s->open[i].end && s->open[i].begin < end) s->violations++;
    }
    s->open[s->n_open++] = (range){begin, end};
    s->acquired[s->n_acquired++] = (range){begin, end};
    int64_t held = 0;
    for (int i = 0; i < s->n_open; i++)
        held += s->open[i].end - s->open[i].begin;
    if (held > s->most_open) s->most_open = held;
    *memory = s->grads + (size_t)begin * s->element;
    return LOOM_OK;
}

static loom_status sink_release(void *context, int64_t begin, int64_t end)
{
    sink_ctx *s = context;
    int found = -1;
    for (int i = 0; i < s->n_open; i++) {
        if (s->open[i].begin == begin && s->open[i].end == end) found = i;
    }
    if (found < 0 || s->n_released == 64) {
        s->violations++;
        return LOOM_E_INVALID;
    }
    s->open[found] = s->open[--s->n_open];
    s->released[s->n_released++] = (range){begin, end};
    return LOOM_OK;
}

/* n elements of `element` bytes at grads. */
static void sink_init_bytes(sink_ctx *s, void *grads, size_t element, int64_t n, loom_grad_sink *sink)
{
    memset(s, 0, sizeof *s);
    s->grads = grads;
    s->element = element;
    s->n = n;
    *sink = (loom_grad_sink){LOOM_HEADER_INIT(loom_grad_sink), .context = s, .acquire = sink_acquire,
                             .release = sink_release};
}

static void sink_init(sink_ctx *s, float *grads, int64_t n, loom_grad_sink *sink)
{
    sink_init_bytes(s, grads, sizeof(float), n, sink);
}

#endif
