/*
 * t5.h - the "t5" model plugin's private state, shared by its files (docs/seq2seq.md#t5):
 *   t5_params.c  configuration (HF T5Config keys), parameter list (HF names), initialisation
 *   t5.c         binding, forward, backward, the descriptor
 *   t5_ops.c     relative position buckets, dropout, embeddings
 *   t5_decode.c  generation: the encoder once, the decoder over a key/value cache (ABI 1.4)
 */
#ifndef LOOM_PLUGIN_T5_H
#define LOOM_PLUGIN_T5_H

#include <loom/kernels.h>
#include <loom/model.h>

#define T5_IGNORE_INDEX (-100)
#define T5_NO_TENSOR ((size_t)-1)

typedef struct t5_tensor {
    char name[96];
    uint32_t ndim;
    uint32_t flags;
    int64_t shape[2];
    int64_t offset; /* in the flat buffer */
    int64_t size;
} t5_tensor;

/* Indices into the tensor list of one block's tensors; T5_NO_TENSOR when the block has none
 * (relative bias past block 0, cross-attention in the encoder, wi_1 without gating). */
typedef struct t5_block {
    size_t q, k, v, o, rel, ln_sa;
    size_t cq, ck, cv, co, ln_ca;
    size_t wi0, wi1, wo, ln_ff;
} t5_block;

/* Activations of one block for the last forward (decoder blocks use the cross members). */
typedef struct t5_block_acts {
    float *in;                  /* residual entering the block [N, D]                      */
    float *ln_sa, *rstd_sa;     /* [N, D], [N]                                             */
    float *q, *k, *v, *ctx;     /* [N, E]                                                  */
    float *att;                 /* [B, H, T, T]                                            */
    float *mid;                 /* residual after self-attention [N, D]                    */
    float *ln_ca, *rstd_ca, *cq, *ck, *cv, *cctx, *catt, *mid2; /* cross-attention          */
    float *ln_ff, *rstd_ff;     /* [N, D], [N]                                             */
    float *h0, *h1, *act;       /* wi_0 / wi (pre-activation), wi_1, activation [N, F]     */
} t5_block_acts;

/* One side (encoder or decoder) of the last forward. */
typedef struct t5_side {
    int64_t L;                  /* blocks                                                  */
    t5_block *blocks;
    t5_block_acts *acts;
    float *embedded;            /* embeddings after dropout [N, D]                         */
    float *final_ln, *final_rstd; /* final layer norm [N, D], [N]                          */
    float *out;                 /* after the final dropout (encoder: cross-attention input;
                                   decoder: the LM head's input, rescaled when tied) [N, D] */
    float *bias;                /* relative position bias [H, T, T]                         */
    size_t final_norm;          /* tensor index of final_layer_norm.weight                 */
} t5_side;

/* A generation (t5_decode.c): B sources, R = B * beams decoder rows, P positions of cache. */
typedef struct t5_decode_state {
    void *memory;
    int64_t B, beams, R, S, P, pos;
    float *self_k, *self_v;   /* [L][R, P, E]: the decoder's self-attention cache          */
    float *cross_k, *cross_v; /* [L][B, S, E]: computed once from the encoder output       */
    int32_t *mask;            /* [B, S] the source mask (1 = token)                        */
    float *x, *ln, *rstd, *q, *kv, *ctx, *tmp, *h0, *h1, *act, *att, *bias, *moved;
} t5_decode_state;

struct loom_model {
    loom_host *host;
    const loom_host_api *api;

    /* configuration */
    int64_t V, D, KV, F, H, E, NB, MD, n_positions;
    double eps, dropout, init_factor;
    float smoothing;            /* label_smoothing_factor (HF's LabelSmoother epsilon)     */
    double neftune_alpha;       /* NEFTune's alpha: noise on `shared`'s output, both sides,
                                   training forwards only                                  */
    int gated, tied;
    int32_t start_id, pad_id, eos_id;
    const char *proj;           /* "relu" or "gated-gelu" (static) */

    t5_tensor *tensors;
    size_t n_tensors;
    int64_t total;
    size_t shared, lm_head;     /* lm_head == shared when tied */
    t5_side enc, dec;

    /* binding */
    float *params;
    const loom_param_source *source; /* ZeRO-3 (ABI 1.12): a range is whole only while acquired
                                        (t5.c params_use); NULL: always whole                 */
    const loom_kernels_api *k;
    int64_t max_batch, max_T;
    void *activations;
    size_t activation_bytes;
    float *logits, *losses;
    float *dy, *dln, *dA, *dB, *dq, *dk, *dv, *dctx, *denc, *dbias, *tmp;
    int32_t *dec_ids;           /* decoder inputs [B, T] of the last forward                */

    /* the last forward */
    int64_t fwd_B, fwd_S, fwd_T;
    int fwd_probs, fwd_training;
    uint64_t fwd_seed;

    t5_decode_state decode;
};

extern const loom_param_spec t5_param_specs[];

/* t5_params.c */
loom_status t5_configure(loom_model *self, const loom_config *config);
void t5_free_tensors(loom_model *self);
size_t t5_param_count(const loom_model *self);
loom_status t5_param_info(const loom_model *self, size_t i, loom_param_info *out);
loom_status t5_init_params(loom_model *self, float *params);

static inline float *t5_p(const loom_model *self, size_t i) { return self->params + self->tensors[i].offset; }

/* t5_ops.c */
int64_t t5_relative_bucket(int64_t relative_position, int bidirectional, int64_t num_buckets, int64_t max_distance);
/* bias[h, i, j] = table[bucket(j - i + offset), h] for i < Tq, j < Tk (queries are the last Tq
 * positions: offset = Tk - Tq). */
void t5_bias_forward(float *bias, const float *table, int64_t H, int64_t Tq, int64_t Tk, int bidirectional,
                     int64_t NB, int64_t MD);
void t5_bias_backward(float *dtable, const float *dbias, int64_t H, int64_t Tq, int64_t Tk, int bidirectional,
                      int64_t NB, int64_t MD);
/* The seed of dropout site `site` in a micro-batch. */
uint64_t t5_site_seed(uint64_t seed, uint64_t site);
/* x[i] = x[i] * keep(i) / (1 - p) (in place; p <= 0: nothing). The backward is the same call. */
void t5_dropout(float *x, int64_t n, float p, uint64_t seed);
/* dst += dropout(src) (src untouched). */
void t5_add_dropout(float *dst, const float *src, int64_t n, float p, uint64_t seed);
void t5_embed_forward(float *out, const int32_t *ids, const float *table, int64_t N, int64_t D);
void t5_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t N, int64_t D);

/* t5.c: the encoder over [B, S] into self->enc.out (dropout off; forward state cleared). */
loom_status t5_encoder_forward(loom_model *self, const int32_t *ids, const int32_t *mask, int64_t B, int64_t S);

/* t5_decode.c (ABI 1.4 members) */
void t5_decode_free(loom_model *self);
loom_status t5_generation_ids(const loom_model *self, loom_generation_ids *out);
loom_status t5_encode(loom_model *self, const loom_batch *sources, int64_t num_beams, int64_t max_positions);
loom_status t5_decode_rows(loom_model *self, const int32_t *tokens, float *logits);
loom_status t5_reorder_cache(loom_model *self, const int32_t *rows);

#endif
