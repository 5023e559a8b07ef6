/*
 * gpt2.h - what the files of the "gpt2" model plugin share (not part of the ABI).
 *
 *   gpt2.c         bind, forward, backward, backward_outputs, the descriptor
 *   gpt2_params.c  configuration, the parameter list (HF names), init_params
 *   gpt2_decode.c  decode_begin / decode_step: generation with a key/value cache
 *
 * Sizes follow llm.c: V vocab, P positions, C channels, L layers, NH heads, F = n_inner
 * (4C by default), B batch rows, T sequence length, N = B * T rows of activations.
 */
#ifndef LOOM_PLUGIN_GPT2_H
#define LOOM_PLUGIN_GPT2_H

#include <loom/kernels.h>
#include <loom/model.h>

#include <stddef.h>
#include <stdint.h>

#define GPT2_IGNORE_INDEX (-100)
/* Parameter tensors of one transformer block, in flat-buffer order. */
#define GPT2_LAYER_TENSORS 12
/* Every activation buffer starts on a 64-byte boundary (a cache line, an AVX-512 vector). */
#define GPT2_ALIGN_FLOATS 16

/* One parameter tensor: its HF name, shape and place in the flat buffer. */
typedef struct gpt2_tensor {
    char name[64];
    uint32_t ndim;
    uint32_t flags;              /* LOOM_PARAM_*                                              */
    int64_t shape[2];
    int64_t offset;              /* elements before it in the flat buffer                     */
    int64_t size;
} gpt2_tensor;

/* Index of a block's tensor inside its group of GPT2_LAYER_TENSORS. */
enum {
    GPT2_LN1_W, GPT2_LN1_B, GPT2_QKV_W, GPT2_QKV_B, GPT2_ATTPROJ_W, GPT2_ATTPROJ_B,
    GPT2_LN2_W, GPT2_LN2_B, GPT2_FC_W, GPT2_FC_B, GPT2_FCPROJ_W, GPT2_FCPROJ_B
};

/* Saved activations of one block for one forward (llm.c's list less attproj / fcproj, which
 * the backward never reads: the projections are written straight into the residuals). */
typedef struct gpt2_layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* [N, C], [N], [N]                                     */
    float *qkv;                       /* [N, 3C]                                              */
    float *atty;                      /* [N, C] attention output before c_proj                */
    float *att;                       /* [B, NH, T, T] softmax probabilities                  */
    float *residual2;                 /* [N, C] residual + attn.c_proj(atty)                  */
    float *ln2, *ln2_mean, *ln2_rstd; /* [N, C], [N], [N]                                     */
    float *fch, *fch_gelu;            /* [N, F] mlp.c_fc output, and its GELU                 */
    float *residual3;                 /* [N, C] residual2 + mlp.c_proj(fch_gelu): block out   */
} gpt2_layer_acts;

/* The key/value cache and scratch of generation (gpt2_decode.c); one allocation. */
typedef struct gpt2_decode_state {
    void *memory;
    int64_t max_positions;       /* room in the cache                                         */
    int64_t position;            /* tokens fed so far                                         */
    int64_t chunk;               /* rows of the scratch below (tokens run per pass)           */
    float *kv;                   /* [L][max_positions][2C]: k then v of every position        */
    float *x;                    /* [chunk, C] residual stream                                */
    float *ln;                   /* [chunk, C] layernorm output; also the projections' output */
    float *qkv;                  /* [chunk, 3C]                                               */
    float *atty;                 /* [chunk, C]                                                */
    float *fch, *fch_gelu;       /* [chunk, F]                                                */
    float *scores;               /* [chunk, max_positions] one head's attention rows          */
    float *mean, *rstd;          /* [chunk] layernorm statistics (not kept)                   */
    float *losses;               /* [chunk] unused output of the softmax kernel               */
    int32_t *ignore;             /* [chunk] all -100: the softmax kernel's "no target" rows   */
} gpt2_decode_state;

struct loom_model {
    loom_host *host;
    const loom_host_api *api;

    /* Configuration (GPT2Config names). */
    int64_t V, P, C, L, NH, F;
    float eps;
    double initializer_range;

    /* Parameter list: wte, wpe, L blocks of GPT2_LAYER_TENSORS, ln_f.weight, ln_f.bias. */
    gpt2_tensor *tensors;
    size_t n_tensors;
    int64_t n_params;            /* elements of the flat buffer                               */
    int64_t layer_size;          /* elements of one block's tensors                           */

    /* Set by bind(). */
    const loom_kernels_api *k;
    const float *params;
    int64_t max_batch, max_T;
    void *activations;           /* one allocation carved into everything below               */
    size_t activation_bytes;
    float *encoded;              /* [N, C] wte[token] + wpe[t]: the first block's input       */
    gpt2_layer_acts *layers;     /* [L]                                                       */
    float *lnf, *lnf_mean, *lnf_rstd;
    /* logits_ext: [R + N, V]. The logits (softmax in place: probs) are rows R.. of it; the
     * backward writes dlogits of rows r0..r0+R into rows r0.. while reading probs of the same
     * rows R further on, so dlogits end up in rows 0..N without a separate [N, V] buffer. */
    float *logits_ext, *logits;
    int64_t ce_chunk;            /* R                                                         */
    float *losses;               /* [N]                                                       */
    float *dres;                 /* [N, C] gradient of the residual stream                    */
    float *dln;                  /* [N, C] gradient of a layernorm output                     */
    float *dA, *dB;              /* [N, max(F, 3C)] and [N, max(F, C)] block scratch; they lie
                                    right before logits_ext and hold its first R rows        */

    /* What the last forward left for backward. */
    int64_t fwd_B, fwd_T;        /* 0: nothing to run backward on                             */
    int32_t fwd_has_probs;       /* the CE softmax ran (labels given)                         */

    gpt2_decode_state decode;
};

/* gpt2_params.c */
loom_status gpt2_configure(loom_model *self, const loom_config *config);
void gpt2_free_tensors(loom_model *self);
size_t gpt2_param_count(const loom_model *self);
loom_status gpt2_param_info(const loom_model *self, size_t i, loom_param_info *out);
loom_status gpt2_init_params(loom_model *self, float *params);
extern const loom_param_spec gpt2_param_specs[];

/* Parameter pointers, bound. */
static inline const float *gpt2_wte(const loom_model *self) { return self->params; }
static inline const float *gpt2_wpe(const loom_model *self) { return self->params + self->V * self->C; }
static inline int64_t gpt2_layer_offset(const loom_model *self, int64_t l)
{
    return self->tensors[2 + l * GPT2_LAYER_TENSORS].offset;
}
static inline const float *gpt2_lp(const loom_model *self, int64_t l, int which)
{
    return self->params + self->tensors[2 + l * GPT2_LAYER_TENSORS + which].offset;
}
static inline int64_t gpt2_lnf_offset(const loom_model *self)
{
    return self->tensors[self->n_tensors - 2].offset;
}

/* gpt2_decode.c */
loom_status gpt2_decode_begin(loom_model *self, int64_t max_positions);
loom_status gpt2_decode_step(loom_model *self, const int32_t *tokens, int64_t n, float *logits);
void gpt2_decode_free(loom_model *self);

#endif
