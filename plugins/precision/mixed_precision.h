/*
 * mixed_precision.h - what amp, bf16 and apex share once their configuration is read: an
 * instance is a set of dtypes, a master-weight layout and a loss scaler, and every vtable
 * member but create() is the same function for all three (mp_vtable_*). A plugin's own file
 * parses its keys, fills an mp_setup and calls mp_create().
 */
#ifndef LOOM_PLUGINS_MIXED_PRECISION_H
#define LOOM_PLUGINS_MIXED_PRECISION_H

#include <loom/plugin.h>
#include <loom/precision.h>

#include "loss_scaler.h"
#include "master_weights.h"

typedef struct mp_setup {
    const char *name;     /* the plugin's name, for messages (static)                  */
    uint32_t param_dtype; /* LOOM_DTYPE_*                                               */
    uint32_t compute_dtype;
    uint32_t has_master;       /* what describe() reports                                    */
    int layout;                /* MW_*                                                       */
    loss_scaler_config scaler; /* checked by mp_create                                       */
} mp_setup;

struct loom_precision {
    loom_host *host;
    const loom_host_api *api;
    mp_setup setup;
    loss_scaler scaler;
    master_weights mw;
};

/* Allocate an instance; fails with the scaler's complaint if its configuration is unusable. */
loom_status mp_create(loom_host *host, const loom_host_api *api, const mp_setup *setup, loom_precision **out);

/* The shared vtable members. */
void mp_destroy(loom_precision *self);
loom_status mp_describe(const loom_precision *self, loom_precision_info *out);
loom_status mp_bind(loom_precision *self, const loom_precision_binding *binding);
uint64_t mp_master_bytes(const loom_precision *self);
loom_status mp_master(loom_precision *self, size_t range_index, void *owned_grad, float **master_params,
                      float **master_grads);
double mp_loss_scale(const loom_precision *self);
loom_status mp_unscale(loom_precision *self, void *const *owned_grads, size_t n, int32_t *overflow);
loom_status mp_update_scale(loom_precision *self, int32_t overflow);
loom_status mp_cast_to_model(loom_precision *self);
loom_status mp_unscale_piece(loom_precision *self, size_t range_index, const void *owned_grad, int64_t begin,
                             int64_t count, float *out, int32_t *overflow);
loom_status mp_cast_piece(loom_precision *self, size_t range_index, int64_t begin, int64_t count);
loom_status mp_get_state(const loom_precision *self, loom_precision_state *out);
loom_status mp_set_state(loom_precision *self, const loom_precision_state *state);

/* A vtable of the shared members with the plugin's create(). */
#define MP_VTABLE(create_fn)                                                                                           \
    {                                                                                                                  \
        LOOM_HEADER_INIT(loom_precision_vtable),                                                                       \
            .create = (create_fn), .destroy = mp_destroy, .describe = mp_describe, .bind = mp_bind,                    \
            .master_bytes = mp_master_bytes, .master = mp_master, .loss_scale = mp_loss_scale, .unscale = mp_unscale,  \
            .update_scale = mp_update_scale, .cast_to_model = mp_cast_to_model, .get_state = mp_get_state,             \
            .set_state = mp_set_state, .unscale_piece = mp_unscale_piece, .cast_piece = mp_cast_piece,                 \
    }

#endif
