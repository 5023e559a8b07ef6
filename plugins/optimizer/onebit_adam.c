/*
 * onebit_adam.c - DeepSpeed's 1-bit Adam (OneBitAdam, docs/semantics/optimizers.md#onebit-adam;
 * deepspeed/runtime/fp16/onebit_adam.py, v0.3.10). With g = grad * grad_scale, b1 = beta1 (or
 * the scheduler's momentum), wd = span->weight_decay, lr = step->lr, t = step->step:
 *
 *   warm-up, t <= freeze_step: plain Adam WITHOUT bias correction on the reduced gradient
 *       m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
 *   compression, t > freeze_step: v is frozen; the gradient is this rank's own
 *       (local_gradients() asks the host not to reduce it) and
 *       m = b1*m + (1-b1)*g_local ;  m = CompressedAllreduce(m)
 *   both:  u = m / (sqrt(v) + eps) + wd*p ;  p -= lr*u
 *
 * CompressedAllreduce over W ranks, on m padded with zeros to N elements (N a multiple of
 * W * lcm(W, 8), as DeepSpeed pads), chunk j of N/W elements served by rank j:
 *   worker: x = m + worker_error ; s = ||x|| / sqrt(N) ; q = s*sign(x) (sign 0 -> +1) ;
 *           worker_error = x - q ; sign bits (8 per byte, first element in the high bit, as
 *           numpy.packbits) go chunk j -> rank j (all_to_all), s to everyone (all_gather)
 *   server: y = sum_r (s_r / W) * sign_r + server_error   (the MEAN over ranks, rank order)
 *           s' = ||y|| / sqrt(N/W) ; server_error = y - s'*sign(y) ;
 *           bits and s' all-gathered; every rank rebuilds m = concat_j s'_j * sign_j, first n.
 * All ranks therefore end a step with the same m, and the same parameters.
 *
 * Differences from DeepSpeed, on purpose:
 *   - DeepSpeed's first step() call only initialises: it moves m and v but not the
 *     parameters. Here step 1 is a full warm-up update like the others. The switch happens
 *     at the same call: steps 1..freeze_step use reduced gradients (exactly freeze_step
 *     warm-up updates; DeepSpeed's are freeze_step - 1 plus the initialisation) and step
 *     freeze_step + 1 is the first compressed one. DeepSpeed sets adam_freeze_key at the end
 *     of a call once state['step'] >= freeze_step, so its call freeze_step + 1 compresses too
 *     for freeze_step >= 2 (its initialisation call returns before that check, so freeze_step
 *     0 and 1 compress from call 3 there, from step 1 and 2 here).
 *   - Gradient normalisation: loom seeds backward with 1 / (targets of the WHOLE global batch)
 *     and reductions are sums, so a rank's local gradient is 1/W of DeepSpeed's local mean;
 *     the compressed stage multiplies it by W. The warm-up's reduced gradient is the global
 *     mean already.
 *   - server_error (and the padded tail of worker_error) live in the plugin, not in a state
 *     slot: they are not saved in checkpoints (DeepSpeed does not save them either; it pops
 *     them). exp_avg, exp_avg_sq and worker_error[0, n) are slots and are saved.
 *   - Param groups with DeepSpeed's non_freeze are not supported (no ds_config way to set it).
 *
 * State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v), 2 = worker_error. The compressed vector is
 * the concatenation of every span in order, which needs each slot to be one contiguous array
 * across the spans (the host lays them out so); step() checks it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <loom/comm.h>
#include <loom/optimizer.h>
#include <loom/plugin.h>

#include "adam_common.h"

#define ONEBIT_SLOTS 3

static const char *const onebit_state_names[ONEBIT_SLOTS] = {"exp_avg", "exp_avg_sq", "worker_error"};

static const loom_param_spec onebit_params[] = {
    {.key = "lr", .type = LOOM_PARAM_FLOAT, .default_value = "0.001",
     .doc = "accepted for ds_config; the scheduler gives the rate"},
    {.key = "beta1", .type = LOOM_PARAM_FLOAT, .default_value = "0.9", .doc = "first-moment decay"},
    {.key = "beta2", .type = LOOM_PARAM_FLOAT, .default_value = "0.999",
     .doc = "second-moment decay (warm-up only: v is frozen afterwards)"},
    {.key = "eps", .type = LOOM_PARAM_FLOAT, .default_value = "1e-08", .doc = "added to sqrt(v)"},
    {.key = "weight_decay", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "added to the update as wd*p (host resolves it per span)"},
    {.key = "freeze_step", .type = LOOM_PARAM_INT, .default_value = "100000",
     .doc = "steps 1..freeze_step are Adam on reduced gradients; later steps compress m to 1 bit "
            "(loom's step 1 updates; DeepSpeed's first call only initialises)"},
    {.key = "cuda_aware", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "DeepSpeed's CUDA-aware MPI switch; no effect on the CPU"},
    {.key = "comm_backend_name", .type = LOOM_PARAM_STRING, .default_value = "nccl",
     .doc = "DeepSpeed's backend for the compressed exchange; ignored: the run's communicator carries it"},
    {.key = NULL},
};

typedef struct onebit {
    loom_host *host;
    const loom_host_api *api;
    adam_hparams hp;
    int64_t freeze_step;
    int threads;
    /* Compression buffers, sized at the first compressed step for n elements over world ranks. */
    int64_t n, padded, chunk;
    int32_t world;
    float *worker_tail;      /* worker_error of the padding, padded - n values            */
    float *server_error;     /* this rank's chunk, chunk values                            */
    unsigned char *bits_a;   /* padded / 8 bytes each: the two ends of each exchange       */
    unsigned char *bits_b;
    float *scales;           /* 2 * world: workers' scales, then servers'                   */
    int announced;
} onebit;

static int32_t onebit_local_gradients(const loom_optimizer *self_, int64_t step)
{
    const onebit *self = (const onebit *)self_;
    return step > self->freeze_step;
}

static void onebit_free_buffers(onebit *self)
{
    self->api->free_memory(self->host, self->worker_tail);
    self->api->free_memory(self->host, self->server_error);
    self->api->free_memory(self->host, self->bits_a);
    self->api->free_memory(self->host, self->bits_b);
    self->api->free_memory(self->host, self->scales);
    self->worker_tail = self->server_error = self->scales = NULL;
    self->bits_a = self->bits_b = NULL;
}

static void onebit_destroy(loom_optimizer *self_)
{
    onebit *self = (onebit *)self_;
    if (!self) return;
    onebit_free_buffers(self);
    self->api->free_memory(self->host, self);
}

static loom_status onebit_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                 loom_optimizer **out)
{
    if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");
    *out = NULL;
    onebit o = {.host = host, .api = api, .threads = optim_threads(host, api)};
    int32_t cuda_aware = 0;
    const char *backend = NULL;
    loom_status st;
    if ((st = adam_read_hparams(host, api, config, &o.hp)) ||
        (st = loom_cfg_need_bool(host, api, config, "cuda_aware", &cuda_aware)))
        return st;
    if (api->cfg_i64(config, "freeze_step", &o.freeze_step) != LOOM_CFG_PRESENT)
        return api->fail(host, LOOM_E_INVALID, "config key 'freeze_step': not an integer");
    if (api->cfg_str(config, "comm_backend_name", &backend) != LOOM_CFG_PRESENT)
        return api->fail(host, LOOM_E_INVALID, "config key 'comm_backend_name': not a string");
    if (o.freeze_step < 0)
        return api->fail(host, LOOM_E_INVALID, "freeze_step = %lld: must be >= 0", (long long)o.freeze_step);
    /* Said once, so a DeepSpeed config that names them does not look silently obeyed. */
    api->log(host, LOOM_LOG_INFO, "comm_backend_name '%s'%s: no effect here, the run's communicator carries the "
             "compressed exchange", backend, cuda_aware ? " and cuda_aware" : "");
    if (o.freeze_step == 0)
        api->log(host, LOOM_LOG_WARNING, "freeze_step 0: no warm-up, v stays 0 and every update is m / eps");
    onebit *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    *self = o;
    *out = (loom_optimizer *)self;
    return LOOM_OK;
}

static loom_status onebit_get_hparam(loom_optimizer *self_, const char *name, double *out)
{
    const onebit *self = (const onebit *)self_;
    if (!self || !name || !out) return LOOM_E_INVALID;
    if (strcmp(name, "freeze_step")) return adam_hparam(&self->hp, name, out);
    *out = (double)self->freeze_step;
    return LOOM_OK;
}

/* ---- the update -------------------------------------------------------------------------- */

typedef struct onebit_coef {
    adam_moments base;
    float lr, weight_decay;
} onebit_coef;

/* Warm-up: Adam without bias correction. */
static void warmup_span(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                        const onebit_coef c)
{
#pragma omp parallel for simd if (parallel : n > LK_STEP_PARALLEL_MIN) num_threads(c.base.threads)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * c.base.grad_scale;
        float mi = c.base.beta1 * m[i] + c.base.one_minus_beta1 * gi;
        float vi = c.base.beta2 * v[i] + c.base.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= c.lr * (mi / (sqrtf(vi) + c.base.eps) + c.weight_decay * p[i]);
    }
}

static void momentum_span(const float *restrict g, float *restrict m, int64_t n, const onebit_coef c)
{
#pragma omp parallel for simd if (parallel : n > LK_STEP_PARALLEL_MIN) num_threads(c.base.threads)
    for (int64_t i = 0; i < n; i++)
        m[i] = c.base.beta1 * m[i] + c.base.one_minus_beta1 * (g[i] * c.base.grad_scale);
}

static void frozen_update_span(float *restrict p, const float *restrict m, const float *restrict v, int64_t n,
                               const onebit_coef c)
{
#pragma omp parallel for simd if (parallel : n > LK_STEP_PARALLEL_MIN) num_threads(c.base.threads)
    for (int64_t i = 0; i < n; i++)
        p[i] -= c.lr * (m[i] / (sqrtf(v[i]) + c.base.eps) + c.weight_decay * p[i]);
}

/* ---- 1-bit compression ------------------------------------------------------------------- */

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Size the buffers for n elements over world ranks (once; the spans never change). */
static loom_status onebit_buffers(onebit *self, int64_t n, int32_t world)
{
    if (self->bits_a) {
        if (self->n == n && self->world == world) return LOOM_OK;
        return self->api->fail(self->host, LOOM_E_INVALID, "the spans changed from %lld elements on %d ranks to "
                               "%lld on %d", (long long)self->n, self->world, (long long)n, world);
    }
    int64_t unit = (int64_t)world * (8 * world / gcd64(world, 8)); /* W * lcm(W, 8), DeepSpeed's */
    int64_t padded = (n + unit - 1) / unit * unit;
    if (padded == 0) padded = unit;
    self->n = n;
    self->world = world;
    self->padded = padded;
    self->chunk = padded / world;
    const loom_host_api *api = self->api;
    self->worker_tail = api->alloc(self->host, (size_t)(padded - n) * sizeof(float) + 1, 0, LOOM_DEVICE_CPU, 0);
    self->server_error = api->alloc(self->host, (size_t)self->chunk * sizeof(float), 0, LOOM_DEVICE_CPU, 0);
    self->bits_a = api->alloc(self->host, (size_t)padded / 8, 0, LOOM_DEVICE_CPU, 0);
    self->bits_b = api->alloc(self->host, (size_t)padded / 8, 0, LOOM_DEVICE_CPU, 0);
    self->scales = api->alloc(self->host, 2 * (size_t)world * sizeof(float), 0, LOOM_DEVICE_CPU, 0);
    if (!self->worker_tail || !self->server_error || !self->bits_a || !self->bits_b || !self->scales) {
        onebit_free_buffers(self);
        return api->fail(self->host, LOOM_E_NOMEM, "out of memory for the compression buffers (%lld elements)",
                         (long long)padded);
    }
    memset(self->worker_tail, 0, (size_t)(padded - n) * sizeof(float));
    memset(self->server_error, 0, (size_t)self->chunk * sizeof(float));
    return LOOM_OK;
}

static inline int bit_at(const unsigned char *bits, int64_t i)
{
    return (bits[i >> 3] >> (7 - (i & 7))) & 1;
}

/* Error feedback, first pass: e <- x = base + e (base NULL: zeros, the padding). Returns the
 * sum of squares of x, so the caller can take the norm of a vector held in two pieces. */
static double error_feedback_pass1(float *restrict e, const float *restrict base, int64_t n)
{
    double squares = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = (base ? base[i] : 0.0f) + e[i];
        e[i] = x;
        squares += (double)x * (double)x;
    }
    return squares;
}

/* Second pass, with the scale s of the whole vector: e holds x on entry and the error
 * x - s*sign(x) on exit; the signs become bits [first, first + n) of `bits`. */
static void error_feedback_pass2(float *restrict e, int64_t n, float s, unsigned char *bits, int64_t first)
{
    for (int64_t i = 0; i < n; i++) {
        int positive = e[i] >= 0.0f; /* sign 0 counts as +1, as DeepSpeed's sign().add_(1).bool() */
        e[i] -= positive ? s : -s;
        int64_t at = first + i;
        unsigned char mask = (unsigned char)(1u << (7 - (at & 7)));
        if (positive) bits[at >> 3] |= mask;
        else bits[at >> 3] &= (unsigned char)~mask;
    }
}

/* m (n values, contiguous) <- CompressedAllreduce(m), worker error in we (n) + worker_tail. */
static loom_status compressed_allreduce(onebit *self, float *m, float *we, const loom_optimizer_step *step)
{
    const loom_comm_vtable *cv = step->comm_vtable;
    loom_comm *comm = step->comm;
    const int64_t n = self->n, padded = self->padded, chunk = self->chunk;
    const int32_t world = self->world;
    float *worker_scales = self->scales, *server_scales = self->scales + world;
    loom_status st;

    /* Worker: compress m + error over the padded vector (the padding's m is 0). */
    double squares = error_feedback_pass1(we, m, n) + error_feedback_pass1(self->worker_tail, NULL, padded - n);
    float s = (float)(sqrt(squares) / sqrt((double)padded));
    error_feedback_pass2(we, n, s, self->bits_a, 0);
    error_feedback_pass2(self->worker_tail, padded - n, s, self->bits_a, n);
    size_t chunk_bytes = (size_t)chunk / 8;
    if ((st = cv->all_to_all(comm, self->bits_a, self->bits_b, chunk_bytes, LOOM_DTYPE_U8, NULL)) ||
        (st = cv->all_gather(comm, &s, worker_scales, 1, LOOM_DTYPE_F32, NULL)))
        return st;

    /* Server of chunk `rank`: the mean of the workers' decompressed chunks, plus its error. */
    float *y = self->server_error;
    for (int32_t r = 0; r < world; r++) worker_scales[r] /= (float)world;
    double server_squares = 0;
    for (int64_t i = 0; i < chunk; i++) {
        float sum = 0.0f;
        for (int32_t r = 0; r < world; r++) {
            float w = worker_scales[r];
            sum += bit_at(self->bits_b + (size_t)r * chunk_bytes, i) ? w : -w;
        }
        y[i] += sum;
        server_squares += (double)y[i] * (double)y[i];
    }
    float server_scale = (float)(sqrt(server_squares) / sqrt((double)chunk));
    error_feedback_pass2(y, chunk, server_scale, self->bits_a, 0);
    if ((st = cv->all_gather(comm, self->bits_a, self->bits_b, chunk_bytes, LOOM_DTYPE_U8, NULL)) ||
        (st = cv->all_gather(comm, &server_scale, server_scales, 1, LOOM_DTYPE_F32, NULL)))
        return st;

    /* Every rank rebuilds the same m from the servers' signs and scales. */
    const unsigned char *bits = self->bits_b;
#pragma omp parallel for if (n > LK_STEP_PARALLEL_MIN) num_threads(self->threads)
    for (int64_t i = 0; i < n; i++) {
        float sc = server_scales[i / chunk];
        m[i] = bit_at(bits, i) ? sc : -sc;
    }
    return LOOM_OK;
}

/* The compressed vector is every span's slot, concatenated: the host's layout must make it one
 * array per slot. */
static loom_status check_contiguous(const onebit *self, const loom_span *spans, size_t n_spans, int64_t *total)
{
    int64_t n = 0;
    for (size_t i = 0; i < n_spans; i++) {
        const loom_span *s = lk_span_at(spans, i);
        if (i + 1 < n_spans) {
            const loom_span *next = lk_span_at(spans, i + 1);
            for (int k = 0; k < ONEBIT_SLOTS; k++)
                if (s->state[k] + s->numel != next->state[k])
                    return self->api->fail(self->host, LOOM_E_INVALID,
                                           "state slot %s of span %zu ('%s') does not continue where span %zu ends: "
                                           "1-bit Adam compresses one contiguous vector per slot",
                                           onebit_state_names[k], i + 1, next->name, i);
        }
        n += s->numel;
    }
    *total = n;
    return LOOM_OK;
}

static loom_status onebit_step(loom_optimizer *self_, const loom_span *spans, size_t n_spans,
                               const loom_optimizer_step *step)
{
    onebit *self = (onebit *)self_;
    onebit_coef c;
    loom_status st = adam_moments_begin(self->host, self->api, &self->hp, self->threads, spans, n_spans, step,
                                        ONEBIT_SLOTS, &c.base);
    if (st) return st;
    c.lr = (float)step->lr;
    if (!onebit_local_gradients(self_, step->step)) {
        for (size_t i = 0; i < n_spans; i++) {
            const loom_span *s = lk_span_at(spans, i);
            c.weight_decay = (float)s->weight_decay;
            warmup_span(s->param, s->grad, s->state[0], s->state[1], s->numel, c);
        }
        return LOOM_OK;
    }

    if (!LOOM_HAS_FIELD(step, loom_optimizer_step, world_size) || !step->comm || !step->comm_vtable ||
        step->world_size < 1 || step->rank < 0 || step->rank >= step->world_size)
        return self->api->fail(self->host, LOOM_E_ABI, "step %lld compresses, but the host gives no communicator "
                               "(loom_optimizer_step.comm, ABI 1.1)", (long long)step->step);
    int64_t n = 0;
    if ((st = check_contiguous(self, spans, n_spans, &n)) || (st = onebit_buffers(self, n, step->world_size)))
        return st;
    if (!self->announced && step->rank == 0)
        self->api->log(self->host, LOOM_LOG_INFO, "step %lld: freeze_step %lld reached, v frozen; gradients stay local "
                       "and m is all-reduced 1-bit compressed (%lld elements padded to %lld, %d ranks)",
                       (long long)step->step, (long long)self->freeze_step, (long long)n, (long long)self->padded,
                       step->world_size);
    self->announced = 1;
    /* The local gradient carries 1 / (the host's divisor: the global count, or W x this rank's
     * without average_tokens_across_devices): times W it is DeepSpeed's local mean. */
    c.base.grad_scale = (float)(step->grad_scale * (double)step->world_size);
    for (size_t i = 0; i < n_spans; i++) {
        const loom_span *s = lk_span_at(spans, i);
        momentum_span(s->grad, s->state[0], s->numel, c);
    }
    /* A rank with nothing to update still takes part in the collectives. */
    const loom_span *first = n_spans > 0 ? lk_span_at(spans, 0) : NULL;
    if ((st = compressed_allreduce(self, first ? first->state[0] : NULL, first ? first->state[2] : NULL, step)))
        return st;
    for (size_t i = 0; i < n_spans; i++) {
        const loom_span *s = lk_span_at(spans, i);
        c.weight_decay = (float)s->weight_decay;
        frozen_update_span(s->param, s->state[0], s->state[1], s->numel, c);
    }
    return LOOM_OK;
}

static const loom_optimizer_vtable onebit_vtable = {
    LOOM_HEADER_INIT(loom_optimizer_vtable),
    .state_slots = ONEBIT_SLOTS,
    .flags = 0,
    .state_names = onebit_state_names,
    .create = onebit_create,
    .destroy = onebit_destroy,
    .step = onebit_step,
    .get_hparam = onebit_get_hparam,
    .local_gradients = onebit_local_gradients,
};

static const loom_plugin_desc onebit_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_OPTIMIZER,
    .name = "onebit_adam",
    .version = "1.0.0",
    .summary = "DeepSpeed's 1-bit Adam: Adam warm-up, then frozen v and 1-bit compressed momentum (ZeRO stage 0)",
    .vtable = &onebit_vtable,
    .params = onebit_params,
};

LOOM_PLUGIN_EXPORT(&onebit_desc)
