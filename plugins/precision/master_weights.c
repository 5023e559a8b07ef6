/* master_weights.c - see master_weights.h. */
#include "master_weights.h"

#include <string.h>

#include "lk_step_loops.h"

static int64_t range_len(const master_weights *mw, size_t i)
{
    return mw->owned[i].end - mw->owned[i].begin;
}

static void *model_at(const master_weights *mw, size_t i)
{
    return (char *)mw->params + (size_t)mw->owned[i].begin * loom_dtype_size(mw->param_dtype);
}

void mw_init(master_weights *mw, loom_host *host, const loom_host_api *api, const char *who, int layout,
             uint32_t param_dtype)
{
    memset(mw, 0, sizeof *mw);
    mw->host = host;
    mw->api = api;
    mw->who = who;
    mw->layout = layout;
    mw->param_dtype = param_dtype;
    int32_t threads = api->num_threads ? api->num_threads(host) : 1;
    mw->threads = threads > 0 ? (int)threads : 1;
}

void mw_release(master_weights *mw)
{
    for (size_t i = 0; i < mw->n_owned; i++) {
        if (mw->master_params) mw->api->free_memory(mw->host, mw->master_params[i]);
        if (mw->master_grads && !mw->lent_grads) mw->api->free_memory(mw->host, mw->master_grads[i]);
    }
    mw->api->free_memory(mw->host, mw->master_params);
    mw->api->free_memory(mw->host, mw->master_grads);
    mw->master_params = mw->master_grads = NULL;
    mw->params = NULL;
    mw->owned = NULL;
    mw->n_owned = 0;
    mw->bytes = 0;
    mw->lent_grads = 0;
    mw->piecewise = 0;
}

static loom_status check_binding(master_weights *mw, const loom_precision_binding *b)
{
    const loom_host_api *api = mw->api;
    if (!b || !LOOM_HAS_FIELD(b, loom_precision_binding, device))
        return api->fail(mw->host, LOOM_E_ABI, "bind: binding missing or too small");
    /* Master weights stay in host memory whatever the device: the step that reads them runs
     * on the CPU, and ABI 1.3 promises a bound device's memory is CPU-addressable
     * (abi/loom/backend.h, docs/gpu.md#what-runs-where). */
    if (b->n_owned > 0 && (!b->owned || !b->params))
        return api->fail(mw->host, LOOM_E_INVALID, "bind: %zu owned ranges but no %s", b->n_owned,
                         b->owned ? "parameters" : "range array");
    for (size_t i = 0; i < b->n_owned; i++)
        if (b->owned[i].begin < 0 || b->owned[i].end < b->owned[i].begin)
            return api->fail(mw->host, LOOM_E_INVALID, "bind: owned range %zu is [%lld, %lld)", i,
                             (long long)b->owned[i].begin, (long long)b->owned[i].end);
    return LOOM_OK;
}


/* The host's CPU table: convert() for the master copies (required then) and, since ABI 1.5,
 * scale_check for the unscale (optional). The master weights are host memory, so the CPU
 * table is the one whose device holds them. */
static loom_status find_kernels(master_weights *mw)
{
    const loom_kernels_api *k = mw->api->service ? mw->api->service(mw->host, LOOM_KERNELS_CPU_SERVICE, 0) : NULL;
    if (mw->layout != MW_IN_PLACE && (!k || !LOOM_HAS(k, loom_kernels_api, convert)))
        return mw->api->fail(
            mw->host, LOOM_E_UNSUPPORTED,
            "%s needs the host's f32<->%s conversion kernel (loom_kernels_api.convert, ABI 1.1) for its "
            "fp32 master weights, and this host's CPU kernel table %s",
            mw->who, loom_dtype_name(mw->param_dtype), k ? "has none" : "is missing");
    mw->k = k;
    return LOOM_OK;
}

loom_status mw_bind(master_weights *mw, const loom_precision_binding *b)
{
    loom_status st = check_binding(mw, b);
    if (st) return st;
    if (mw->layout == MW_IN_PLACE && mw->param_dtype != LOOM_DTYPE_F32)
        return mw->api->fail(mw->host, LOOM_E_INTERNAL, "%s: no master copy of %s parameters", mw->who,
                             loom_dtype_name(mw->param_dtype));
    if ((st = find_kernels(mw))) return st;
    mw_release(mw);
    mw->params = b->params;
    mw->owned = b->owned;
    mw->n_owned = b->n_owned;
    mw->piecewise = LOOM_HAS_FIELD(b, loom_precision_binding, piecewise) && b->piecewise;
    if (mw->layout == MW_IN_PLACE || b->n_owned == 0) return LOOM_OK;

    const loom_host_api *api = mw->api;
    size_t n = b->n_owned;
    mw->master_params = api->alloc(mw->host, n * sizeof(float *), 0, LOOM_DEVICE_CPU, 0);
    mw->master_grads = api->alloc(mw->host, n * sizeof(float *), 0, LOOM_DEVICE_CPU, 0);
    if (!mw->master_params || !mw->master_grads) goto nomem;
    memset(mw->master_params, 0, n * sizeof(float *));
    memset(mw->master_grads, 0, n * sizeof(float *));
    /* The f32 gradients live in the host's workspace when it lends one large enough: they
     * are only needed from unscale to the end of the step. */
    int64_t owned_total = 0;
    for (size_t i = 0; i < n; i++) owned_total += range_len(mw, i);
    float *workspace = NULL;
    if (LOOM_HAS_FIELD(b, loom_precision_binding, grad_workspace_floats) && b->grad_workspace &&
        b->grad_workspace_floats >= (size_t)owned_total)
        workspace = b->grad_workspace;
    mw->lent_grads = workspace != NULL && !mw->piecewise;
    for (size_t i = 0; i < n; i++) {
        int64_t len = range_len(mw, i);
        size_t bytes = (size_t)(len > 0 ? len : 1) * sizeof(float); /* alloc(0) is not promised to work */
        mw->master_params[i] = api->alloc(mw->host, bytes, 0, LOOM_DEVICE_CPU, 0);
        if (mw->piecewise) {
            /* no f32 gradients: the host's buffer holds one piece at a time */
        } else if (workspace) {
            mw->master_grads[i] = workspace;
            workspace += len;
        } else {
            mw->master_grads[i] = api->alloc(mw->host, bytes, 0, LOOM_DEVICE_CPU, 0);
            if (mw->master_grads[i]) memset(mw->master_grads[i], 0, bytes);
            mw->bytes += (uint64_t)len * sizeof(float);
        }
        if (!mw->master_params[i] || (!mw->piecewise && !mw->master_grads[i])) goto nomem;
        if (len > 0) mw->k->convert(mw->master_params[i], LOOM_DTYPE_F32, model_at(mw, i), mw->param_dtype, len);
        mw->bytes += (uint64_t)len * sizeof(float);
    }
    return LOOM_OK;
nomem:;
    uint64_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += 2 * (uint64_t)range_len(mw, i) * sizeof(float);
    mw_release(mw);
    return api->fail(mw->host, LOOM_E_NOMEM, "out of memory for %llu bytes of fp32 master weights and gradients",
                     (unsigned long long)want);
}

uint64_t mw_bytes(const master_weights *mw)
{
    return mw->bytes;
}

loom_status mw_master(master_weights *mw, size_t i, void *owned_grad, float **params, float **grads)
{
    if (i >= mw->n_owned)
        return mw->api->fail(mw->host, LOOM_E_INVALID, "no owned range %zu (%zu bound)", i, mw->n_owned);
    if (mw->layout == MW_IN_PLACE) {
        *params = (float *)model_at(mw, i);
        *grads = owned_grad;
    } else {
        *params = mw->master_params[i];
        *grads = mw->master_grads[i];
    }
    return LOOM_OK;
}

/* g *= inv, and 1 when a result is inf or NaN: the table's scale_check (ABI 1.5) when the host
 * lends it, else the same loop here (kernels/step_loops/lk_step_loops.h). */
static int scale_and_check(const master_weights *mw, float *g, int64_t n, float inv)
{
    if (mw->k && LOOM_HAS(mw->k, loom_kernels_api, scale_check)) {
        int32_t found = 0;
        mw->k->scale_check(g, n, inv, &found);
        return found != 0;
    }
    return lk_scale_check_loop(g, n, inv, mw->threads);
}

loom_status mw_unscale(master_weights *mw, void *const *owned_grads, size_t n, double scale, int32_t *overflow)
{
    if (!overflow) return mw->api->fail(mw->host, LOOM_E_INVALID, "unscale: overflow is NULL");
    *overflow = 0;
    if (n != mw->n_owned)
        return mw->api->fail(mw->host, LOOM_E_INVALID, "unscale: %zu gradient ranges for %zu owned ranges", n,
                             mw->n_owned);
    if (mw->piecewise && mw->layout != MW_IN_PLACE)
        return mw->api->fail(mw->host, LOOM_E_INVALID,
                             "unscale: %s was bound for the piecewise step and keeps no f32 gradients "
                             "(unscale_piece)",
                             mw->who);
    /* torch's unscale_: multiply by the fp32 reciprocal (exact for the power-of-two scales
     * the dynamic rules produce). */
    float inv = (float)(1.0 / scale);
    /* fp32 parameters at scale 1 (apex O0): nothing to divide, and the host's global norm
     * already turns a non-finite gradient into an overflow, so skip the pass. */
    if (mw->layout == MW_IN_PLACE && inv == 1.0f) return LOOM_OK;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t len = range_len(mw, i);
        if (len == 0) continue;
        if (!owned_grads || !owned_grads[i])
            return mw->api->fail(mw->host, LOOM_E_INVALID, "unscale: no gradient for owned range %zu", i);
        float *g = owned_grads[i];
        if (mw->layout != MW_IN_PLACE) {
            if (mw->layout == MW_ROUNDED)
                mw->k->convert(mw->master_params[i], LOOM_DTYPE_F32, model_at(mw, i), mw->param_dtype, len);
            g = mw->master_grads[i];
            mw->k->convert(g, LOOM_DTYPE_F32, owned_grads[i], mw->param_dtype, len);
        }
        /* At scale 1 the widening keeps every inf and NaN, and the host's global norm turns
         * them into an overflow: a pass of its own would only repeat that. */
        if (inv != 1.0f) bad |= scale_and_check(mw, g, len, inv);
    }
    *overflow = bad;
    return LOOM_OK;
}

loom_status mw_cast_to_model(master_weights *mw)
{
    if (mw->layout == MW_IN_PLACE) return LOOM_OK;
    for (size_t i = 0; i < mw->n_owned; i++) {
        int64_t len = range_len(mw, i);
        if (len > 0) mw->k->convert(model_at(mw, i), mw->param_dtype, mw->master_params[i], LOOM_DTYPE_F32, len);
    }
    return LOOM_OK;
}

/* A piece [begin, begin + count) of owned range i, checked against the range. */
static loom_status check_piece(const master_weights *mw, const char *what, size_t i, int64_t begin, int64_t count)
{
    if (i >= mw->n_owned)
        return mw->api->fail(mw->host, LOOM_E_INVALID, "%s: no owned range %zu (%zu bound)", what, i, mw->n_owned);
    if (begin < 0 || count < 0 || begin > range_len(mw, i) - count)
        return mw->api->fail(mw->host, LOOM_E_INVALID, "%s: elements [%lld, %lld) are outside owned range %zu (%lld)",
                             what, (long long)begin, (long long)begin + (long long)count, i,
                             (long long)range_len(mw, i));
    return LOOM_OK;
}

loom_status mw_unscale_piece(master_weights *mw, size_t i, const void *owned_grad, int64_t begin, int64_t count,
                             double scale, float *out, int32_t *overflow)
{
    if (!overflow || !out || (count > 0 && !owned_grad))
        return mw->api->fail(mw->host, LOOM_E_INVALID, "unscale_piece: %s is NULL",
                             !overflow ? "overflow"
                             : !out    ? "out"
                                       : "owned_grad");
    *overflow = 0;
    loom_status st = check_piece(mw, "unscale_piece", i, begin, count);
    if (st || count == 0) return st;
    /* The same arithmetic as mw_unscale, on the piece: the same bits. */
    float inv = (float)(1.0 / scale);
    size_t size = loom_dtype_size(mw->param_dtype);
    const char *g = (const char *)owned_grad + (size_t)begin * size;
    if (mw->layout == MW_IN_PLACE) {
        memcpy(out, g, (size_t)count * sizeof(float));
    } else {
        if (mw->layout == MW_ROUNDED)
            mw->k->convert(mw->master_params[i] + begin, LOOM_DTYPE_F32, (char *)model_at(mw, i) + (size_t)begin * size,
                           mw->param_dtype, count);
        mw->k->convert(out, LOOM_DTYPE_F32, g, mw->param_dtype, count);
    }
    if (inv != 1.0f) *overflow = scale_and_check(mw, out, count, inv);
    return LOOM_OK;
}

loom_status mw_cast_piece(master_weights *mw, size_t i, int64_t begin, int64_t count)
{
    loom_status st = check_piece(mw, "cast_piece", i, begin, count);
    if (st || mw->layout == MW_IN_PLACE || count == 0) return st;
    size_t size = loom_dtype_size(mw->param_dtype);
    mw->k->convert((char *)model_at(mw, i) + (size_t)begin * size, mw->param_dtype, mw->master_params[i] + begin,
                   LOOM_DTYPE_F32, count);
    return LOOM_OK;
}
