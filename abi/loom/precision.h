/*
 * precision.h - in what dtype (LOOM_KIND_PRECISION): fp32, amp (fp16 + dynamic loss scale),
 * bf16, apex O0-O3.
 *
 * A precision plugin decides the dtype of the model's parameters and gradients and of its
 * matrix products, holds the fp32 master weights for the ranges this rank owns (an fp32 plugin
 * holds none: the model's parameters are the master copy), owns the loss scale and decides
 * what an overflow does to it. The host does the collective: it all-reduces the local
 * overflow flags with MAX, then calls update_scale() with the global answer on every rank, so
 * every rank skips or takes the step together.
 */
#ifndef LOOM_PRECISION_H
#define LOOM_PRECISION_H

#include "loom.h"
#include "sharding.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Written by the plugin in describe(); owned by the host. Every member: Required (no zero
 * default), one thread per instance (the trainer's), since 1.0. */
typedef struct loom_precision_info {
    LOOM_STRUCT_HEADER;
    uint32_t param_dtype;    /* model parameters and gradients (LOOM_DTYPE_*)               */
    uint32_t compute_dtype;  /* matrix-product inputs (LOOM_DTYPE_*)                        */
    uint32_t master_dtype;   /* optimizer's copy: LOOM_DTYPE_F32 always in ABI 1            */
    uint32_t has_master;     /* 1: the plugin allocates separate master weights; 0: none    */

    /* ABI 1.13+: append below. */
} loom_precision_info;

/* Built by the host and passed to bind(); the struct is borrowed for that call, the memory
 * its pointers name is lent for the run (until destroy) and stays the host's: the plugin
 * never frees it. Written once, read on the trainer's thread only. */
typedef struct loom_precision_binding {
    LOOM_STRUCT_HEADER;
    /* Required, never NULL. Flat model-dtype parameters; lent for the run. Since 1.0. */
    void *params;
    /* Required, never NULL (n_owned >= 1). This rank's owned ranges, sorted; lent for the
     * run. Since 1.0. */
    const loom_range *owned;
    size_t n_owned;       /* Required. Entries of `owned`. Since 1.0.                    */
    uint32_t device;      /* Required. LOOM_DEVICE_* of params. Since 1.0.               */
    int32_t device_index; /* Required. Device ordinal (0 on the CPU). Since 1.0.         */
    /* Optional, since 1.1 (read with LOOM_HAS_FIELD). f32 memory of grad_workspace_floats
     * elements the plugin may use for its f32 master gradients instead of allocating its own
     * (NULL: allocate). Lent, still the host's: it holds the plugin's data only from
     * unscale() to the end of that step: between steps the host lends it to others (it is
     * the model's activation memory). Not counted in master_bytes(). */
    float *grad_workspace;
    size_t grad_workspace_floats; /* Optional, since 1.1. Elements of grad_workspace; 0 with NULL. */

    /* ---- ABI 1.7 (read with LOOM_HAS_FIELD) ---- */

    /* Optional (0, or absent in an older host: the whole-range step). 1: the host steps the
     * optimizer one piece of the owned ranges at a time (unscale_piece, the optimizer's step
     * on that piece, cast_piece) and never calls unscale() nor reads the f32 gradients
     * master() names, so the plugin keeps none (master() then writes NULL to *master_grads)
     * and grad_workspace is NULL. The host sets it only for a vtable with both unscale_piece
     * and cast_piece (docs/architecture.md#piecewise-step). Since 1.7. */
    uint32_t piecewise;
    uint32_t reserved1; /* 0 */

    /* ABI 1.13+: append below. */
} loom_precision_binding;

/* Loss-scaler state, for logs and checkpoints: written by the plugin in get_state() (owned
 * by the host), built by the host for set_state() on resume (borrowed for that call). Every
 * member: Required, one thread per instance, since 1.0. */
typedef struct loom_precision_state {
    LOOM_STRUCT_HEADER;
    double loss_scale;        /* the current scale (1.0 when not scaling)                   */
    int64_t iteration;        /* scaler's own step counter (taken + skipped steps)          */
    int64_t last_overflow;    /* iteration of the last overflow, -1 if none                 */
    int64_t growth_tracker;   /* clean steps since the last change (GradScaler style)       */
    int64_t hysteresis_left;  /* DeepSpeed's cur_hysteresis                                 */

    /* ABI 1.13+: append below. */
} loom_precision_state;

typedef struct loom_precision loom_precision; /* plugin-private instance */

/* Filled by the plugin (static storage, never freed). Members other than create() are called
 * on the trainer's thread, one call at a time per instance; `self` is the plugin's own. */
typedef struct loom_precision_vtable {
    LOOM_STRUCT_HEADER;
    /* Required, never NULL. Create an instance from the plugin's config section (borrowed
     * for the call); *out is owned by the host until it passes it to destroy(). On failure
     * returns a status, leaves *out NULL and reports through api->fail. Init thread only.
     * Since 1.0. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_precision **out);
    /* Required, never NULL. Free the instance and all it allocated; destroy(NULL) is a no-op.
     * Init thread only. Since 1.0. */
    void (*destroy)(loom_precision *self);
    /* Required, never NULL. The dtypes (the host sizes buffers from them before bind). `out`
     * is the host's, struct_size set by the host. One thread per instance. Since 1.0. */
    loom_status (*describe)(const loom_precision *self, loom_precision_info *out);
    /* Required, never NULL. Allocate fp32 master weights for the owned ranges, initialised
     * from params (which hold the model's initial values, converted to param_dtype by the
     * host). The masters are the plugin's until destroy. Called before the first step; the
     * host binds again after it binds the model again (--auto_find_batch_size), and a later
     * binding replaces the earlier one (since 1.10; a plugin built for an older minor is bound
     * once). One thread per instance. Since 1.0. */
    loom_status (*bind)(loom_precision *self, const loom_precision_binding *binding);
    /* Required, never NULL. Bytes the plugin allocated for master weights and their f32
     * gradients (0 for fp32; the gradients not counted when they live in the binding's
     * grad_workspace), for the memory budget. One thread per instance. Since 1.0. */
    uint64_t (*master_bytes)(const loom_precision *self);
    /* Required, never NULL. fp32 master parameters and the fp32 gradient buffer of owned
     * range i, written to *master_params / *master_grads (never NULL on success; the memory
     * stays the plugin's, or the binding's, valid until the next bind or destroy). Without a
     * master copy these point into the model's params and the owned gradients. `owned_grad`
     * is what sharding's owned_grads() returned for range i (param_dtype; borrowed). One
     * thread per instance. Since 1.0. */
    loom_status (*master)(loom_precision *self, size_t range_index, void *owned_grad,
                          float **master_params, float **master_grads);
    /* Required, never NULL. The current loss scale (1.0 when not scaling). One thread per
     * instance. Since 1.0. */
    double (*loss_scale)(const loom_precision *self);
    /* Required, never NULL. Unscale owned gradients into the fp32 master gradients (divide by
     * the scale, converting from param_dtype) and report whether any is inf or NaN through
     * *overflow (0/1, this rank only). owned_grads[i] is sharding's owned_grads() of range i
     * (n entries, borrowed for the call). The host also computes the global norm of the
     * master gradients and treats a non-finite norm as an overflow, so a plugin that converts
     * nothing may leave the check to that. One thread per instance. Since 1.0. */
    loom_status (*unscale)(loom_precision *self, void *const *owned_grads, size_t n,
                           int32_t *overflow);
    /* Required, never NULL. The global overflow decision (1: the step is skipped), the same
     * on every rank. Updates the scale. Returns LOOM_E_STOP when training cannot go on
     * (overflow at the minimum scale, as configured), with a message saying so. One thread
     * per instance. Since 1.0. */
    loom_status (*update_scale)(loom_precision *self, int32_t overflow);
    /* Required, never NULL. Copy the owned master weights into the model's params
     * (param_dtype). No-op without a master copy. One thread per instance. Since 1.0. */
    loom_status (*cast_to_model)(loom_precision *self);
    /* Required, never NULL. Scaler state for logs and checkpoints into the host's `out`.
     * One thread per instance. Since 1.0. */
    loom_status (*get_state)(const loom_precision *self, loom_precision_state *out);
    /* Required, never NULL. Restore the scaler state on resume (`state` borrowed for the
     * call), before the first step. One thread per instance. Since 1.0. */
    loom_status (*set_state)(loom_precision *self, const loom_precision_state *state);

    /* ---- ABI 1.7: the piecewise step (loom_precision_binding.piecewise) ---- */

    /* Optional (NULL: the host steps whole ranges through unscale and cast_to_model); set
     * together with cast_piece. Elements [begin, begin + count) of owned range range_index,
     * begin counted from the range's first element: owned_grad (sharding's owned_grads() of
     * that range, param_dtype, the whole range; borrowed) times 1/scale, converted to f32,
     * into out[0 .. count) (the host's, borrowed for the call): the same values unscale()
     * writes into the master gradients. *overflow = 1 when one of them is inf or NaN, else 0
     * (like unscale(), a plugin may leave the check to the host's norm at scale 1). The host
     * may ask for the same piece more than once in a step (once for the norm, once for the
     * update) and must not ask past the range (LOOM_E_INVALID). Whatever unscale() does to
     * the master parameters first (apex O3 re-reads them from the model) it does here to the
     * piece's. Only with a piecewise binding. One thread per instance. Since 1.7. */
    loom_status (*unscale_piece)(loom_precision *self, size_t range_index, const void *owned_grad, int64_t begin,
                                 int64_t count, float *out, int32_t *overflow);
    /* Optional, set together with unscale_piece. cast_to_model() for elements
     * [begin, begin + count) of owned range range_index only. LOOM_E_INVALID past the range.
     * One thread per instance. Since 1.7. */
    loom_status (*cast_piece)(loom_precision *self, size_t range_index, int64_t begin, int64_t count);

    /* ABI 1.13+: append below. */
} loom_precision_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_precision_info) == 32, "loom_precision_info layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_binding) == 72, "loom_precision_binding layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_state) == 56, "loom_precision_state layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_vtable) == 128, "precision vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_PRECISION_H */
