/*
 * gpt2.h - what the files of the "gpt2" model plugin share (not part of the ABI).
 *
 *   gpt2.c         bind, forward, backward, backward_outputs, the descriptor
 *   gpt2_params.c  configuration, the parameter list (HF names), init_params
 *   gpt2_decode.c  decode_begin / decode_step: generation with a key/value cache
 *   gpt2_mixed.c   products, embeddings and gradient accumulation in the bound dtypes
 *   gpt2_rows.c    wte's embedding gradient as the sink's late rows part (ABI 1.4)
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
/* Tokens a decoding pass runs at once (gpt2_decode.c). */
#define GPT2_DECODE_CHUNK 64

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
    /* ln1, atty, ln2, fch_gelu (and the model's lnf) are products' inputs: f32, or only their
     * 16-bit compute_dtype cast in a mixed-precision run (half the floats; gpt2_keep). A mixed
     * run keeps what autocast keeps: the products' outputs qkv (under the tiled attention,
     * which reads 16 bits) and fch, and the attention output, only in compute_dtype, GELU
     * reads the rounded fch, and fch_gelu is one buffer that every block shares, its GELU
     * recomputed in backward (docs/benchmarks.md#gpt2-long has the memory this saves).       */
    float *ln1, *ln1_mean, *ln1_rstd; /* [N, C], [N], [N]                                     */
    float *qkv;                       /* [N, 3C]                                              */
    float *atty;                      /* [N, C] attention output before c_proj                */
    float *att;                       /* [B, NH, T, T] softmax probabilities (stored attention)
                                         or [B, NH, T] row log-sum-exp (flash attention)      */
    float *residual2;                 /* [N, C] residual + attn.c_proj(atty)                  */
    float *ln2, *ln2_mean, *ln2_rstd; /* [N, C], [N], [N]                                     */
    float *fch, *fch_gelu;            /* [N, F] mlp.c_fc output, and its GELU                 */
    float *residual3;                 /* [N, C] residual2 + mlp.c_proj(fch_gelu): block out   */
} gpt2_layer_acts;

/* What the 16-bit precisions need besides the activations (gpt2_mixed.c): its scratch (the
 * casts, the f32 copies, the gradient scratch) lies in the activations' allocation, `memory`
 * holds what outlives a step. Layernorm, softmax, attention and the loss compute in f32 (what
 * is kept in 16 bits: gpt2_layer_acts); matrix products take their
 * inputs in compute_dtype and accumulate in f32; gradients are computed in f32 and added into
 * the param_dtype gradient memory once per block (one rounding per micro-batch). */
typedef struct gpt2_mixed_state {
    void *memory;
    size_t bytes;
    float *small;                /* f32 copies of every tensor that is not a matrix (wpe,
                                    biases, layernorms), refreshed before each use           */
    int64_t *small_at;           /* [n_tensors] offset in `small`, -1 for matrices            */
    int64_t rows;                /* rows of a batch (N): what cast_b holds                    */
    int64_t width;               /* columns of the casts: max(F, 3C)                           */
    void *cast_a;                /* [GPT2_DECODE_CHUNK, width] compute_dtype: a decoding
                                    chunk's product input (gpt2_cast)                         */
    void *cast_b;                /* [rows, width] compute_dtype: a product's output gradient  */
    void *cast_w;                /* [width, C] or [C, width] compute_dtype weights (only when
                                    param_dtype differs: apex O1)                             */
    float *grad;                 /* [grad_floats] f32 gradients of one block / head chunk     */
    int64_t grad_floats;
    int64_t head_chunk; /* vocabulary rows per LM-head product                       */
} gpt2_mixed_state;

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
    float smoothing;             /* label_smoothing_factor (HF's LabelSmoother epsilon)       */
    float resid_pdrop, embd_pdrop, attn_pdrop; /* dropout, training forwards only              */
    /* NEFTune's alpha: noise on wte's output in training forwards (gpt2.c embed_neftune). */
    double neftune_alpha;

    /* Parameter list: wte, wpe, L blocks of GPT2_LAYER_TENSORS, ln_f.weight, ln_f.bias. */
    gpt2_tensor *tensors;
    size_t n_tensors;
    int64_t n_params;            /* elements of the flat buffer                               */
    int64_t layer_size;          /* elements of one block's tensors                           */

    /* Set by bind(). */
    const loom_kernels_api *k;
    const void *params;          /* flat, param_dtype                                         */
    const loom_param_source *source; /* ZeRO-3 (ABI 1.12): params hold a range only while it is
                                    acquired (gpt2.c params_use); NULL: always whole           */
    uint32_t param_dtype, compute_dtype;
    int32_t mixed;               /* either dtype is not f32: the paths of gpt2_mixed.c        */
    size_t param_size;           /* bytes per parameter element                               */
    gpt2_mixed_state mixed_state;
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
    void *head_memory;           /* logits_ext when the fused classifier runs: allocated only
                                    by a call that needs the logits (outputs, doutputs)       */

    /* Attention and classifier for long sequences (kernels.h ABI 1.3), chosen at bind. */
    int32_t flash;               /* attention_flash_*: no [T, T] probabilities kept           */
    int32_t fused;               /* classifier: no [N, V] logits (f32 or bf16 compute, with
                                    f32 parameters or parameters in the compute dtype)        */
    int32_t fwd_fused;           /* the last forward ran the fused classifier's loss only     */
    int32_t recompute;           /* gradient checkpointing: one block's activations kept
                                    (layers[l] share them), recomputed in backward            */
    void *cls_scratch;           /* the classifier's chunk (inside dA/dB's region)            */
    int64_t cls_chunk;           /* its rows                                                  */
    size_t cls_scratch_bytes;    /* the region's size, for the classifier by columns          */
    int32_t cls_columns;         /* classifier_columns (ABI 1.8): 16-bit parameters, no dwte32 */
    float *cls_lse;              /* [N] its rows' log-sum-exp, from forward to backward       */
    int32_t gelu_cast;           /* gelu_forward_cast / gelu_backward_cast (ABI 1.9): GELU on
                                    the kept fch as stored, in one pass                       */
    void *wte_cd;                /* wte in compute_dtype when that is not param_dtype         */
    float *dwte32;               /* [V, C] f32 head gradient of wte, 16-bit parameters        */
    int64_t *emb_rows;           /* gpt2_rows.c: a batch's distinct tokens, sorted, and each  */
    int32_t *emb_slot;           /* position's index among them (allocated at first use)      */
    int64_t emb_rows_cap;
    float *losses;               /* [N]                                                       */
    float *dres;                 /* [N, C] gradient of the residual stream                    */
    float *dln;                  /* [N, C] gradient of a layernorm output                     */
    float *dA, *dB;              /* [N, max(F, 3C)] and [N, max(F, C)] block scratch; they lie
                                    right before logits_ext and hold its first R rows        */

    /* What the last forward left for backward. */
    int64_t fwd_B, fwd_T;        /* 0: nothing to run backward on                             */
    int32_t fwd_has_probs;       /* the CE softmax ran (labels given)                         */
    int32_t fwd_training;        /* the last forward was a training one: dropout on           */
    uint64_t fwd_seed;           /* its batch's dropout_seed: backward draws the same masks   */

    gpt2_decode_state decode;
};

/* gpt2_params.c */
loom_status gpt2_configure(loom_model *self, const loom_config *config);
void gpt2_free_tensors(loom_model *self);
size_t gpt2_param_count(const loom_model *self);
loom_status gpt2_param_info(const loom_model *self, size_t i, loom_param_info *out);
loom_status gpt2_init_params(loom_model *self, float *params);
extern const loom_param_spec gpt2_param_specs[];

/* Tensor indices: wte 0, wpe 1, block l's `which` (GPT2_LN1_W...), ln_f weight and bias. */
#define GPT2_WTE 0
#define GPT2_WPE 1
static inline size_t gpt2_layer_tensor(int64_t l, int which) { return (size_t)(2 + l * GPT2_LAYER_TENSORS + which); }
static inline size_t gpt2_lnf_tensor(const loom_model *self) { return self->n_tensors - 2; }

static inline int64_t gpt2_layer_offset(const loom_model *self, int64_t l)
{
    return self->tensors[gpt2_layer_tensor(l, 0)].offset;
}
static inline int64_t gpt2_lnf_offset(const loom_model *self)
{
    return self->tensors[gpt2_lnf_tensor(self)].offset;
}
/* Tensor i as stored (param_dtype), for the matrix products. */
static inline const void *gpt2_raw(const loom_model *self, size_t i)
{
    return (const char *)self->params + (size_t)self->tensors[i].offset * self->param_size;
}
/* Tensor i in f32: the parameters themselves in f32 runs, else the copy gpt2_mixed_stage made
 * (every tensor but the matrices). */
static inline const float *gpt2_f32(const loom_model *self, size_t i)
{
    if (self->param_dtype == LOOM_DTYPE_F32) return (const float *)self->params + self->tensors[i].offset;
    return self->mixed_state.small + self->mixed_state.small_at[i];
}
static inline const float *gpt2_lp(const loom_model *self, int64_t l, int which)
{
    return gpt2_f32(self, gpt2_layer_tensor(l, which));
}

/* gpt2_mixed.c: products and embeddings in whichever dtypes bind() chose. With f32 params and
 * compute they call exactly the f32 kernels; otherwise see gpt2_mixed_state. */
int gpt2_is_matrix(const loom_model *self, size_t i);
/* Bytes of the 16-bit products' scratch for a batch of `rows` rows (0 in f32 runs): bind
 * carves it out of the activations (it holds nothing between a backward and the next forward,
 * like them) and hands it to gpt2_mixed_bind, which allocates only what outlives a step. */
size_t gpt2_mixed_scratch_bytes(const loom_model *self, int64_t rows);
loom_status gpt2_mixed_bind(loom_model *self, int64_t rows, void *scratch);
void gpt2_mixed_free(loom_model *self);
void gpt2_mixed_stage(loom_model *self);
/* The same for the tensors inside [begin, end) only (a range acquired from a param source). */
void gpt2_mixed_stage_range(loom_model *self, int64_t begin, int64_t end);
/* A product's input (`inp`, `lnf` below) is in the run's input dtype: f32 in f32 runs,
 * compute_dtype in mixed runs. gpt2_keep makes it from f32 x into `kept` (n elements; returns x
 * itself in f32 runs); gpt2_cast casts into the scratch (decoding: at most rows x width). */
const void *gpt2_keep(loom_model *self, void *kept, const float *x, int64_t n);
const void *gpt2_cast(loom_model *self, const float *x, int64_t n);
/* The dtype a bound model keeps qkv in (gpt2.c): its compute dtype when a mixed run takes the
 * tiled attention, else f32. Decoding rounds to it too, so its logits are forward's. */
uint32_t gpt2_qkv_dtype(const loom_model *self);
/* out[N, OC] = inp[N, IC] @ W + bias (Conv1D layout W [IC, OC]); w, b are tensor indices. */
void gpt2_mm_forward(loom_model *self, float *out, const void *inp, size_t w, size_t b, int64_t N, int64_t IC,
                     int64_t OC);
/* dinp[N, IC] = dout @ W^T (overwritten; skipped when NULL); dW += inp^T dout; db += sum dout,
 * with dW, db f32 (see gpt2_grad_begin). */
void gpt2_mm_backward(loom_model *self, float *dinp, float *dW, float *db, const float *dout, const void *inp,
                      size_t w, int64_t N, int64_t IC, int64_t OC);
/* The tied head: logits[N, V] = lnf @ wte^T; backward: dlnf = dlogits @ wte (overwritten),
 * dwte += dlogits^T lnf into the param_dtype gradient memory. dlogits [N, V] are f32 in f32
 * runs and compute_dtype otherwise (gpt2.c casts them as it makes them). */
void gpt2_head_forward(loom_model *self, float *logits, const void *lnf, int64_t N);
void gpt2_head_backward(loom_model *self, float *dlnf, void *dwte, const void *dlogits, const void *lnf, int64_t N);
/* out[B, T, C] = wte[token] + wpe[position0 + t]; backward accumulates into the param_dtype
 * gradient memory of wte and wpe. */
void gpt2_embed_forward(loom_model *self, float *out, const int32_t *tokens, int64_t position0, int64_t B, int64_t T);
void gpt2_embed_backward(loom_model *self, void *dwte, void *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                         int64_t T);
/* The same through a two-part sink (LOOM_HAS(sink, loom_grad_sink, acquire_rows)): wpe through
 * acquire/release, wte's rows the batch touched through acquire_rows/release_rows (wte's dense
 * head part was released before). */
loom_status gpt2_embed_backward_rows(loom_model *self, const loom_grad_sink *sink, const float *dout,
                                     const int32_t *tokens, int64_t B, int64_t T);
void gpt2_rows_free(loom_model *self);
/* Gradients of `count` elements: f32 memory to accumulate them in (the sink's own memory in
 * f32 runs, a scratch otherwise), then added into the sink's memory by gpt2_grad_end.
 * gpt2_grad_fresh says whether that memory starts unwritten (a scratch: products may write it
 * with beta 0, and only what kernels accumulate into must be zeroed, by gpt2_grad_zero) or
 * holds earlier gradients to add to (the sink's own memory). */
float *gpt2_grad_begin(loom_model *self, void *sink_memory, int64_t count);
int gpt2_grad_fresh(const loom_model *self);
void gpt2_grad_zero(loom_model *self, float *g, int64_t count);
void gpt2_grad_end(loom_model *self, void *sink_memory, int64_t count);

/* gpt2_decode.c */
loom_status gpt2_decode_begin(loom_model *self, int64_t max_positions);
loom_status gpt2_decode_step(loom_model *self, const int32_t *tokens, int64_t n, float *logits);
void gpt2_decode_free(loom_model *self);

#endif
