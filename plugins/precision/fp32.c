/*
 * fp32.c - full precision: parameters, gradients and matrix products in fp32, no master copy
 * (the model's parameters are the optimizer's), no loss scaling.
 *
 * A non-finite gradient cannot be fixed by a scale here, so instead of letting NaN spread into
 * every parameter (what plain PyTorch does) the run stops with a message naming the step.
 */
#include <string.h>

#include <loom/precision.h>
#include <loom/plugin.h>

typedef struct fp32_precision {
    loom_host *host;
    const loom_host_api *api;
    float *params;
    const loom_range *owned;
    size_t n_owned;
    int64_t iteration;
    int64_t last_overflow;
} fp32_precision;

static void fp32_destroy(loom_precision *self_)
{
    fp32_precision *self = (fp32_precision *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static loom_status fp32_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_precision **out)
{
    (void)config;
    fp32_precision *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->last_overflow = -1;
    *out = (loom_precision *)self;
    return LOOM_OK;
}

static loom_status fp32_describe(const loom_precision *self, loom_precision_info *out)
{
    (void)self;
    out->param_dtype = LOOM_DTYPE_F32;
    out->compute_dtype = LOOM_DTYPE_F32;
    out->master_dtype = LOOM_DTYPE_F32;
    out->has_master = 0;
    return LOOM_OK;
}

static loom_status fp32_bind(loom_precision *self_, const loom_precision_binding *binding)
{
    fp32_precision *self = (fp32_precision *)self_;
    self->params = binding->params;
    self->owned = binding->owned;
    self->n_owned = binding->n_owned;
    return LOOM_OK;
}

static uint64_t fp32_master_bytes(const loom_precision *self)
{
    (void)self;
    return 0;
}

static loom_status fp32_master(loom_precision *self_, size_t range_index, void *owned_grad, float **master_params,
                               float **master_grads)
{
    fp32_precision *self = (fp32_precision *)self_;
    if (range_index >= self->n_owned)
        return self->api->fail(self->host, LOOM_E_INVALID, "no owned range %zu", range_index);
    *master_params = self->params + self->owned[range_index].begin;
    *master_grads = owned_grad;
    return LOOM_OK;
}

static double fp32_loss_scale(const loom_precision *self)
{
    (void)self;
    return 1.0;
}

/* Nothing to unscale, and nothing to check here: the host computes the global gradient norm
 * anyway and treats a non-finite one as an overflow, which saves a pass over every gradient. */
static loom_status fp32_unscale(loom_precision *self, void *const *owned_grads, size_t n, int32_t *overflow)
{
    (void)self, (void)owned_grads, (void)n;
    *overflow = 0;
    return LOOM_OK;
}

static loom_status fp32_update_scale(loom_precision *self_, int32_t overflow)
{
    fp32_precision *self = (fp32_precision *)self_;
    self->iteration++;
    if (overflow) {
        self->last_overflow = self->iteration - 1;
        return self->api->fail(self->host, LOOM_E_STOP,
                               "non-finite gradient at optimizer step %lld in fp32: stopping before it reaches the "
                               "parameters (lower --learning_rate or set --max_grad_norm)",
                               (long long)self->iteration);
    }
    return LOOM_OK;
}

static loom_status fp32_cast_to_model(loom_precision *self)
{
    (void)self;
    return LOOM_OK;
}

static loom_status fp32_get_state(const loom_precision *self_, loom_precision_state *out)
{
    const fp32_precision *self = (const fp32_precision *)self_;
    out->loss_scale = 1.0;
    out->iteration = self->iteration;
    out->last_overflow = self->last_overflow;
    out->growth_tracker = 0;
    out->hysteresis_left = 0;
    return LOOM_OK;
}

static loom_status fp32_set_state(loom_precision *self_, const loom_precision_state *state)
{
    fp32_precision *self = (fp32_precision *)self_;
    self->iteration = state->iteration;
    self->last_overflow = state->last_overflow;
    return LOOM_OK;
}

static const loom_precision_vtable fp32_vtable = {
    LOOM_HEADER_INIT(loom_precision_vtable),
    .create = fp32_create,
    .destroy = fp32_destroy,
    .describe = fp32_describe,
    .bind = fp32_bind,
    .master_bytes = fp32_master_bytes,
    .master = fp32_master,
    .loss_scale = fp32_loss_scale,
    .unscale = fp32_unscale,
    .update_scale = fp32_update_scale,
    .cast_to_model = fp32_cast_to_model,
    .get_state = fp32_get_state,
    .set_state = fp32_set_state,
};

static const loom_plugin_desc fp32_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_PRECISION,
    .name = "fp32",
    .version = "1.0.0",
    .summary = "full fp32: no master copy, no loss scaling; stops on a non-finite gradient",
    .vtable = &fp32_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&fp32_desc)
