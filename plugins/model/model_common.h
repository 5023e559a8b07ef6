/*
 * model_common.h - what the in-tree model plugins (mlp, gpt2, t5) write the same way: the
 * create() preamble, the token-id check with its messages, the shape of a token model's
 * outputs, and a range of parameters from a ZeRO-3 source. Header-only; each plugin keeps its own instance struct,
 * which must start with loom_host *host; const loom_host_api *api; and its own checks of what differs (dtypes, shapes,
 * decoder inputs).
 */
#ifndef LOOM_PLUGINS_MODEL_COMMON_H
#define LOOM_PLUGINS_MODEL_COMMON_H

#include <math.h>
#include <string.h>

#include <loom/kernels.h>
#include <loom/model.h>

#define MODEL_IGNORE_INDEX (-100) /* HF's ignore index: a label that is not a target */

/* Defines `static loom_status fn(host, api, config, out)`, the model's create(): a zeroed
 * instance (struct loom_model of the including file) with host and api set, then
 * configure(self, config); on failure destroy(self) and its status. A macro because the
 * instance's type and size are the plugin's own. */
#define MODEL_DEFINE_CREATE(fn, configure, destroy)                                                                    \
    static loom_status fn(loom_host *host, const loom_host_api *api, const loom_config *config, loom_model **out)      \
    {                                                                                                                  \
        if (!out) return api->fail(host, LOOM_E_INVALID, "create: out is NULL");                                       \
        *out = NULL;                                                                                                   \
        loom_model *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);                                      \
        if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");                                              \
        memset(self, 0, sizeof *self);                                                                                 \
        self->host = host;                                                                                             \
        self->api = api;                                                                                               \
        const loom_status st = configure(self, config);                                                                \
        if (st != LOOM_OK) {                                                                                           \
            destroy(self);                                                                                             \
            return st;                                                                                                 \
        }                                                                                                              \
        *out = self;                                                                                                   \
        return LOOM_OK;                                                                                                \
    }

/* Every ids[i] (n ids, rows of T) must be in [0, V), or MODEL_IGNORE_INDEX where ignore_ok.
 * The kernels cannot report a bad id: it would read outside the embedding or give a NaN loss.
 * `what` names the ids in the message ("token id", "label"). */
static inline loom_status model_check_ids(loom_host *host, const loom_host_api *api, const int32_t *ids, int64_t n,
                                          int64_t T, int64_t V, const char *what, int ignore_ok)
{
    for (int64_t i = 0; i < n; i++) {
        if (ignore_ok && ids[i] == MODEL_IGNORE_INDEX) continue;
        if (ids[i] < 0 || ids[i] >= V)
            return api->fail(host, LOOM_E_INVALID,
                             "%s %d at row %lld, position %lld is outside the vocabulary [0, %lld)%s", what, ids[i],
                             (long long)(i / T), (long long)(i % T), (long long)V,
                             ignore_ok ? " (and not -100, the ignore index)" : "");
    }
    return LOOM_OK;
}

/* output_shape() of a token model: [T, V] per row, T the bound max_sequence_length (before
 * bind, or for data that is not sequences: the model's context). */
static inline loom_status model_token_output_shape(loom_host *host, const loom_host_api *api, int64_t max_T,
                                                   int64_t context, int64_t V, int64_t *out_shape, uint32_t *ndim)
{
    if (!out_shape || !ndim) return api->fail(host, LOOM_E_INVALID, "output_shape: NULL argument");
    out_shape[0] = max_T > 0 ? max_T : context;
    out_shape[1] = V;
    *ndim = 2;
    return LOOM_OK;
}

/* ---- NEFTune (HF's neftune_noise_alpha) ------------------------------------------------ */

/* The seed of the noise of the input embedding's `call`-th use in a micro-batch (a decoder-only
 * model: 0; an encoder-decoder: 0 the encoder's, 1 the decoder's), from the batch's
 * dropout_seed: a function of (seed, step, micro-batch, rank) like the masks, so a resumed run
 * draws the same noise. Its own stream: no dropout site's. */
static inline uint64_t model_neftune_seed(uint64_t dropout_seed, uint64_t call)
{
    uint64_t z = dropout_seed ^ 0x6e656674756e65ull /* "neftune" */ ^ (call + 1) * 0xa0761d6478bd642full;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* HF's neftune_post_forward_hook scale for an embedding output [B, T, C]: alpha / sqrt(T C),
 * T the length of this batch (padded), not of the longest the model could take. */
static inline float model_neftune_magnitude(double alpha, int64_t T, int64_t C)
{
    return (float)(alpha / sqrt((double)T * (double)C));
}

/* Element `index`'s noise, uniform in [-mag, mag): 2u - 1 is exact for u's 24 bits, and the
 * one rounded product keeps |noise| <= mag. */
static inline float model_neftune_noise(uint64_t seed, uint64_t index, float mag)
{
    return mag * (2.0f * loom_uniform(seed, index) - 1.0f);
}

/* [begin, end) of the parameters from a loom_param_source (ABI 1.12, ZeRO-3): acquired (done 0)
 * or given back (done 1); nothing without a source, where the parameters are always whole. */
static inline loom_status model_param_range(const loom_param_source *source, int64_t begin, int64_t end, int done)
{
    if (!source) return LOOM_OK;
    return done ? source->release(source->context, begin, end) : source->acquire(source->context, begin, end);
}

#endif
