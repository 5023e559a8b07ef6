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

/* Written by the plugin: the dtypes the run uses. */
typedef struct loom_precision_info {
    LOOM_STRUCT_HEADER;
    uint32_t param_dtype;    /* model parameters and gradients                              */
    uint32_t compute_dtype;  /* matrix-product inputs                                       */
    uint32_t master_dtype;   /* optimizer's copy: LOOM_DTYPE_F32 always in ABI 1            */
    uint32_t has_master;     /* 1: the plugin allocates separate master weights             */
} loom_precision_info;

/* Lent by the host at bind(). */
typedef struct loom_precision_binding {
    LOOM_STRUCT_HEADER;
    void *params;                  /* flat model-dtype parameters (lent for the run)        */
    const loom_range *owned;       /* this rank's owned ranges (lent for the run)            */
    size_t n_owned;
    uint32_t device;
    int32_t device_index;
    /* ABI 1.1 (check with LOOM_HAS_FIELD). Optional: f32 memory of grad_workspace_floats
     * elements the plugin may use for its f32 master gradients instead of allocating its own
     * (NULL: allocate). It holds them only from unscale() to the end of that step: between
     * steps the host lends it to others (it is the model's activation memory). Not counted in
     * master_bytes(). */
    float *grad_workspace;
    size_t grad_workspace_floats;
} loom_precision_binding;

/* Loss-scaler state, for logs and checkpoints. Written by the plugin / restored by host. */
typedef struct loom_precision_state {
    LOOM_STRUCT_HEADER;
    double loss_scale;        /* the current scale (1.0 when not scaling)                   */
    int64_t iteration;        /* scaler's own step counter (taken + skipped steps)          */
    int64_t last_overflow;    /* iteration of the last overflow, -1 if none                 */
    int64_t growth_tracker;   /* clean steps since the last change (GradScaler style)       */
    int64_t hysteresis_left;  /* DeepSpeed's cur_hysteresis                                 */
} loom_precision_state;

typedef struct loom_precision loom_precision; /* plugin-private instance */

typedef struct loom_precision_vtable {
    LOOM_STRUCT_HEADER;
    /* Required. Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_precision **out);
    /* Required. NULL is a no-op. */
    void (*destroy)(loom_precision *self);
    /* Required. The dtypes (the host sizes buffers from them before bind). */
    loom_status (*describe)(const loom_precision *self, loom_precision_info *out);
    /* Required. Allocate fp32 master weights for the owned ranges, initialised from params
     * (which hold the model's initial values, converted to param_dtype by the host). */
    loom_status (*bind)(loom_precision *self, const loom_precision_binding *binding);
    /* Required. Bytes the plugin allocated for master weights and their f32 gradients (0 for
     * fp32; the gradients not counted when they live in the binding's grad_workspace), for
     * the memory budget. */
    uint64_t (*master_bytes)(const loom_precision *self);
    /* Required. fp32 master parameters and the fp32 gradient buffer of owned range i.
     * Without a master copy these point into the model's params and the owned gradients.
     * `owned_grad` is what sharding's owned_grads() returned for range i (param_dtype). */
    loom_status (*master)(loom_precision *self, size_t range_index, void *owned_grad,
                          float **master_params, float **master_grads);
    /* Required. The current loss scale (1.0 when not scaling). One thread per instance. */
    double (*loss_scale)(const loom_precision *self);
    /* Required. Unscale owned gradients into the fp32 master gradients (divide by the scale,
     * converting from param_dtype) and report whether any is inf or NaN through *overflow
     * (0/1, this rank only). owned_grads[i] is sharding's owned_grads() of range i. The host
     * also computes the global norm of the master gradients and treats a non-finite norm as an
     * overflow, so a plugin that converts nothing may leave the check to that. */
    loom_status (*unscale)(loom_precision *self, void *const *owned_grads, size_t n,
                           int32_t *overflow);
    /* Required. The global overflow decision (1: the step is skipped). Updates the scale.
     * Returns LOOM_E_STOP when training cannot go on (overflow at the minimum scale, as
     * configured), with a message saying so. */
    loom_status (*update_scale)(loom_precision *self, int32_t overflow);
    /* Required. Copy the owned master weights into the model's params (param_dtype). No-op
     * without a master copy. */
    loom_status (*cast_to_model)(loom_precision *self);
    /* Required. Scaler state for logs and checkpoints; set_state restores it on resume. */
    loom_status (*get_state)(const loom_precision *self, loom_precision_state *out);
    loom_status (*set_state)(loom_precision *self, const loom_precision_state *state);

    /* ABI 1.4+: append below. */
} loom_precision_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_precision_info) == 32, "loom_precision_info layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_binding) == 64, "loom_precision_binding layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_state) == 56, "loom_precision_state layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_precision_vtable) == 112, "precision vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_PRECISION_H */
