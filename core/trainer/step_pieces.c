/* step_pieces.c - see step_pieces.h. */
#include "step_pieces.h"

#include <stdlib.h>
#include <string.h>

#include <loom/kernels.h>

#include "error.h"
#include "host.h"

int loom_step_pieces_wanted(const loom_trainer *t)
{
    const loom_precision_vtable *pv = t->precision.vtable;
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    /* The pieces are host memory the CPU widens and steps; a device run's master weights and
     * ZeRO-Offload's partitions keep the whole-range step. */
    if (!t->has_master || t->device != LOOM_DEVICE_CPU || t->offload_params) return 0;
    if (!LOOM_HAS(pv, loom_precision_vtable, unscale_piece) || !LOOM_HAS(pv, loom_precision_vtable, cast_piece))
        return 0;
    /* Whole-tensor statistics and self-communicating optimizers need every gradient at once. */
    if (!(ov->flags & LOOM_OPTIMIZER_ELEMENTWISE) || (ov->flags & LOOM_OPTIMIZER_NEEDS_TENSOR_NORMS) ||
        ov->tensor_stats || LOOM_HAS(ov, loom_optimizer_vtable, local_gradients))
        return 0;
    const char *off = getenv("LOOM_STEP_PIECES");
    return !(off && strcmp(off, "0") == 0);
}

loom_status loom_step_pieces_prepare(loom_trainer *t, float *scratch, size_t scratch_floats)
{
    const loom_host_api *api = loom_host_api_table();
    t->piece_buffer_lent = scratch && scratch_floats >= LOOM_STEP_PIECE;
    t->piece_buffer = t->piece_buffer_lent
                          ? scratch
                          : api->alloc(t->core_host, LOOM_STEP_PIECE * sizeof(float), 0, LOOM_DEVICE_CPU, 0);
    t->piece_bounds = malloc(2 * (t->n_norm_work ? t->n_norm_work : 1) * sizeof *t->piece_bounds);
    if (!t->piece_buffer || !t->piece_bounds) return loom_error(LOOM_E_NOMEM, "out of memory for the step's buffer");
    t->step_pieces = 1;
    return LOOM_OK;
}

void loom_step_pieces_free(loom_trainer *t)
{
    if (t->piece_buffer && !t->piece_buffer_lent) loom_host_api_table()->free_memory(t->core_host, t->piece_buffer);
    free(t->piece_bounds);
    free(t->piece_spans);
    t->piece_buffer = NULL;
    t->piece_bounds = NULL;
    t->piece_spans = NULL;
}

static const loom_kernels_api *cpu_kernels(const loom_trainer *t)
{
    return loom_host_api_table()->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
}

/* The first flat index past the piece that holds flat index `at`. */
static int64_t piece_end(int64_t at)
{
    return (at / LOOM_STEP_PIECE + 1) * LOOM_STEP_PIECE;
}

loom_status loom_step_pieces_norm(loom_trainer *t, void *const *owned_grads, int32_t *overflow)
{
    const loom_precision_vtable *pv = t->precision.vtable;
    const loom_kernels_api *k = cpu_kernels(t);
    const struct loom_norm_work *work = t->norm_work;
    const size_t n = t->n_norm_work;
    *overflow = 0;
    /* Work items are in flat order and each lies inside one norm block, so inside one piece:
     * a run of them that shares an owned range and a piece is one widening and one kernel
     * call, and each item's sum is computed over the same values as the whole-range step's. */
    for (size_t w0 = 0, w1; w0 < n; w0 = w1) {
        const size_t r = work[w0].owned_index;
        const int64_t end = piece_end(work[w0].begin);
        for (w1 = w0 + 1; w1 < n && work[w1].owned_index == r && work[w1].begin < end;)
            w1++;
        const int64_t lo = work[w0].begin, hi = work[w1 - 1].end, base = t->owned[r].begin;
        int32_t bad = 0;
        loom_status st = LOOM_PLUGIN_CALL(
            t->precision, "unscale_piece",
            pv->unscale_piece(t->precision.instance, r, owned_grads[r], lo - base, hi - lo, t->piece_buffer, &bad));
        if (st != LOOM_OK) return st;
        *overflow |= bad != 0;
        for (size_t w = w0; w < w1; w++) {
            t->piece_bounds[2 * (w - w0)] = work[w].begin - lo;
            t->piece_bounds[2 * (w - w0) + 1] = work[w].end - lo;
        }
        k->sum_squares(t->norm_work_sums + w0, t->piece_buffer, t->piece_bounds, (int64_t)(w1 - w0));
    }
    return LOOM_OK;
}

loom_status loom_step_pieces_update(loom_trainer *t, void *const *owned_grads, float *const *master_params,
                                    const loom_optimizer_step *step)
{
    const loom_precision_vtable *pv = t->precision.vtable;
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    if (!t->piece_spans) {
        t->piece_spans = calloc(t->n_spans ? t->n_spans : 1, sizeof *t->piece_spans);
        if (!t->piece_spans) return loom_error(LOOM_E_NOMEM, "out of memory");
    }
    const uint32_t slots = ov->state_slots;
    size_t s0 = 0; /* the first span that may reach into the current piece */
    for (size_t r = 0; r < t->n_owned; r++) {
        const int64_t base = t->owned[r].begin;
        for (int64_t lo = base; lo < t->owned[r].end;) {
            int64_t hi = piece_end(lo);
            if (hi > t->owned[r].end) hi = t->owned[r].end;
            int32_t ignored = 0; /* the norm pass decided the overflow */
            loom_status st = LOOM_PLUGIN_CALL(t->precision, "unscale_piece",
                                              pv->unscale_piece(t->precision.instance, r, owned_grads[r], lo - base,
                                                                hi - lo, t->piece_buffer, &ignored));
            if (st != LOOM_OK) return st;
            /* The spans of range r over [lo, hi), narrowed to it. */
            size_t n = 0;
            while (s0 < t->n_spans && (t->span_range[s0] < r ||
                                       (t->span_range[s0] == r && t->span_flat_begin[s0] + t->spans[s0].numel <= lo)))
                s0++;
            for (size_t s = s0; s < t->n_spans && t->span_range[s] == r && t->span_flat_begin[s] < hi; s++) {
                const loom_span *whole = &t->spans[s];
                const int64_t a = lo > t->span_flat_begin[s] ? lo : t->span_flat_begin[s];
                const int64_t z = hi < t->span_flat_begin[s] + whole->numel ? hi : t->span_flat_begin[s] + whole->numel;
                const int64_t skip = a - t->span_flat_begin[s];
                loom_span *piece = &t->piece_spans[n++];
                *piece = *whole;
                piece->offset = whole->offset + skip;
                piece->numel = z - a;
                piece->param = master_params[r] + (a - base);
                piece->grad = t->piece_buffer + (a - lo);
                for (uint32_t k = 0; k < slots && k < LOOM_MAX_STATE_SLOTS; k++)
                    piece->state[k] = whole->state[k] + skip;
            }
            if (n > 0 && (st = LOOM_PLUGIN_CALL(t->optimizer, "step",
                                                ov->step(t->optimizer.instance, t->piece_spans, n, step))) != LOOM_OK)
                return st;
            if ((st = LOOM_PLUGIN_CALL(t->precision, "cast_piece",
                                       pv->cast_piece(t->precision.instance, r, lo - base, hi - lo))) != LOOM_OK)
                return st;
            lo = hi;
        }
    }
    return LOOM_OK;
}
