/* mixed_precision.c - see mixed_precision.h. */
#include "mixed_precision.h"

#include <string.h>

loom_status mp_create(loom_host *host, const loom_host_api *api, const mp_setup *setup, loom_precision **out)
{
    if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    const char *why = ls_config_error(&setup->scaler);
    if (why) return api->fail(host, LOOM_E_INVALID, "%s: %s", setup->name, why);
    loom_precision *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->setup = *setup;
    ls_init(&self->scaler, &setup->scaler);
    mw_init(&self->mw, host, api, setup->name, setup->layout, setup->param_dtype);
    *out = self;
    return LOOM_OK;
}

void mp_destroy(loom_precision *self)
{
    if (!self) return;
    mw_release(&self->mw);
    self->api->free_memory(self->host, self);
}

loom_status mp_describe(const loom_precision *self, loom_precision_info *out)
{
    out->param_dtype = self->setup.param_dtype;
    out->compute_dtype = self->setup.compute_dtype;
    out->master_dtype = LOOM_DTYPE_F32;
    out->has_master = self->setup.has_master;
    return LOOM_OK;
}

loom_status mp_bind(loom_precision *self, const loom_precision_binding *binding)
{
    return mw_bind(&self->mw, binding);
}

uint64_t mp_master_bytes(const loom_precision *self)
{
    return mw_bytes(&self->mw);
}

loom_status mp_master(loom_precision *self, size_t range_index, void *owned_grad, float **master_params,
                      float **master_grads)
{
    return mw_master(&self->mw, range_index, owned_grad, master_params, master_grads);
}

double mp_loss_scale(const loom_precision *self)
{
    return ls_scale(&self->scaler);
}

loom_status mp_unscale(loom_precision *self, void *const *owned_grads, size_t n, int32_t *overflow)
{
    return mw_unscale(&self->mw, owned_grads, n, ls_scale(&self->scaler), overflow);
}

loom_status mp_update_scale(loom_precision *self, int32_t overflow)
{
    double before = ls_scale(&self->scaler);
    loom_status st = ls_update(&self->scaler, overflow != 0);
    if (st == LOOM_E_STOP) {
        char why[320];
        ls_stop_message(&self->scaler, why, sizeof why);
        return self->api->fail(self->host, LOOM_E_STOP, "%s", why);
    }
    /* DeepSpeed's "OVERFLOW! ... Attempted loss scale: X, reducing to Y"; the host logs the
     * skipped step itself, so this is a debug line. */
    if (overflow)
        self->api->log(self->host, LOOM_LOG_DEBUG, "overflow: attempted loss scale %g, now %g", before,
                       ls_scale(&self->scaler));
    return st;
}

loom_status mp_cast_to_model(loom_precision *self)
{
    return mw_cast_to_model(&self->mw);
}

loom_status mp_unscale_piece(loom_precision *self, size_t range_index, const void *owned_grad, int64_t begin,
                             int64_t count, float *out, int32_t *overflow)
{
    return mw_unscale_piece(&self->mw, range_index, owned_grad, begin, count, ls_scale(&self->scaler), out, overflow);
}

loom_status mp_cast_piece(loom_precision *self, size_t range_index, int64_t begin, int64_t count)
{
    return mw_cast_piece(&self->mw, range_index, begin, count);
}

loom_status mp_get_state(const loom_precision *self, loom_precision_state *out)
{
    if (!out || !LOOM_HAS_FIELD(out, loom_precision_state, hysteresis_left))
        return self->api->fail(self->host, LOOM_E_ABI, "get_state: state missing or too small");
    ls_get_state(&self->scaler, out);
    return LOOM_OK;
}

loom_status mp_set_state(loom_precision *self, const loom_precision_state *state)
{
    if (!state || !LOOM_HAS_FIELD(state, loom_precision_state, hysteresis_left))
        return self->api->fail(self->host, LOOM_E_ABI, "set_state: state missing or too small");
    const char *why = ls_set_state(&self->scaler, state);
    return why ? self->api->fail(self->host, LOOM_E_FORMAT, "%s: loss-scaler state: %s", self->setup.name, why)
               : LOOM_OK;
}
