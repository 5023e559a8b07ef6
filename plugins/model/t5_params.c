/*
 * t5_params.c - the "t5" model's configuration (HF T5Config keys and defaults, t5-small's
 * sizes), its parameter list with HF T5ForConditionalGeneration's names and shapes, and its
 * initialisation (HF's T5PreTrainedModel._init_weights).
 *
 * Flat order (HF's state dict): shared.weight [V, D]; per encoder block i:
 *   encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight [E, D], .o.weight [D, E],
 *   (block 0 only) .relative_attention_bias.weight [num_buckets, H], .layer.0.layer_norm.weight [D],
 *   .layer.1.DenseReluDense.wi.weight [F, D] (gated: wi_0 and wi_1), .wo.weight [D, F],
 *   .layer.1.layer_norm.weight [D];
 * encoder.final_layer_norm.weight; decoder blocks alike with layer.1 = EncDecAttention
 * (q, k, v, o, layer_norm) and layer.2 = the feed-forward; decoder.final_layer_norm.weight;
 * lm_head.weight [V, D] when the embeddings are not tied. E = num_heads * d_kv.
 */
#include "t5.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* random_normal stream of tensor i is T5_STREAM_BASE + i. */
#define T5_STREAM_BASE 0x74350000u

const loom_param_spec t5_param_specs[] = {
    {.key = "vocab_size", .type = LOOM_PARAM_INT, .default_value = "32128", .doc = "tokens in the vocabulary (V)"},
    {.key = "d_model", .type = LOOM_PARAM_INT, .default_value = "512", .doc = "width of the residual stream (D)"},
    {.key = "d_kv", .type = LOOM_PARAM_INT, .default_value = "64", .doc = "width of one attention head"},
    {.key = "d_ff", .type = LOOM_PARAM_INT, .default_value = "2048", .doc = "width of the feed-forward hidden layer"},
    {.key = "num_layers", .type = LOOM_PARAM_INT, .default_value = "6", .doc = "encoder blocks"},
    {.key = "num_decoder_layers",
     .type = LOOM_PARAM_INT,
     .default_value = NULL,
     .doc = "decoder blocks; unset: num_layers"},
    {.key = "num_heads", .type = LOOM_PARAM_INT, .default_value = "8", .doc = "attention heads"},
    {.key = "relative_attention_num_buckets",
     .type = LOOM_PARAM_INT,
     .default_value = "32",
     .doc = "relative position buckets (half per direction in the encoder)"},
    {.key = "relative_attention_max_distance",
     .type = LOOM_PARAM_INT,
     .default_value = "128",
     .doc = "distance from which all relative positions share the last bucket"},
    {.key = "dropout_rate",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.1",
     .doc = "dropout of embeddings, attention probabilities, residual branches and the FFN (training only)"},
    {.key = "layer_norm_epsilon",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1e-6",
     .doc = "epsilon of every RMS norm"},
    {.key = "initializer_factor",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "1.0",
     .doc = "scale of every initial std (HF's T5 init)"},
    {.key = "feed_forward_proj",
     .type = LOOM_PARAM_STRING,
     .default_value = "relu",
     .doc = "relu (T5 v1.0) or gated-gelu (v1.1: gelu_new(wi_0 x) * wi_1 x)"},
    {.key = "tie_word_embeddings",
     .type = LOOM_PARAM_BOOL,
     .default_value = "true",
     .doc = "LM head = shared.weight, its input scaled by d_model^-0.5 (v1.0); false: lm_head.weight (v1.1)"},
    {.key = "decoder_start_token_id",
     .type = LOOM_PARAM_INT,
     .default_value = "0",
     .doc = "first decoder input (labels are shifted right behind it)"},
    {.key = "pad_token_id", .type = LOOM_PARAM_INT, .default_value = "0", .doc = "padding id (-100 labels read as it)"},
    {.key = "eos_token_id",
     .type = LOOM_PARAM_INT,
     .default_value = "1",
     .doc = "end-of-sequence id (generation stops at it)"},
    {.key = "n_positions",
     .type = LOOM_PARAM_INT,
     .default_value = "512",
     .doc = "longest source or target a batch may have (T5 itself has no position limit)"},
    /* What HF writes in a T5 config.json beside the sizes; informational here. */
    {.key = "architectures",
     .type = LOOM_PARAM_STRING,
     .default_value = "T5ForConditionalGeneration",
     .doc = "HF class named in config.json's architectures (informational)"},
    {.key = "is_encoder_decoder", .type = LOOM_PARAM_BOOL, .default_value = "true", .doc = "informational"},
    {.key = "use_cache", .type = LOOM_PARAM_BOOL, .default_value = "true", .doc = "informational"},
    {.key = "dense_act_fn",
     .type = LOOM_PARAM_STRING,
     .default_value = NULL,
     .doc = "newer HF configs' activation name (relu, gelu_new); must agree with feed_forward_proj"},
    {.key = "is_gated_act",
     .type = LOOM_PARAM_BOOL,
     .default_value = NULL,
     .doc = "newer HF configs' gating flag; must agree with feed_forward_proj"},
    {.key = "output_past",
     .type = LOOM_PARAM_BOOL,
     .default_value = NULL,
     .doc = "old HF configs' cache flag (informational)"},
    {.key = "gradient_checkpointing", .type = LOOM_PARAM_BOOL, .default_value = NULL, .doc = "informational (ignored)"},
    {.key = "classifier_dropout", .type = LOOM_PARAM_FLOAT, .default_value = NULL, .doc = "informational (ignored)"},
    {.key = "label_smoothing_factor",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.0",
     .doc = "HF's label smoothing epsilon for the loss; --label_smoothing_factor sets it"},
    {.key = "neftune_noise_alpha",
     .type = LOOM_PARAM_FLOAT,
     .default_value = "0.0",
     .doc = "NEFTune: training forwards add uniform noise of +-alpha / sqrt(length d_model) to the shared "
            "embedding's output, the encoder's and the decoder's (0: none); --neftune_noise_alpha sets it"},
    {.key = "transformers_version", .type = LOOM_PARAM_STRING, .default_value = NULL, .doc = "informational"},
    {.key = "torch_dtype", .type = LOOM_PARAM_STRING, .default_value = NULL, .doc = "informational"},
    {.key = NULL},
};

static loom_status read_int(loom_model *self, const loom_config *cfg, const char *key, int64_t *out, int64_t lo)
{
    if (self->api->cfg_i64(cfg, key, out) == LOOM_CFG_WRONG_TYPE)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s must be an integer", key);
    if (*out < lo)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s = %lld: must be >= %lld", key, (long long)*out,
                               (long long)lo);
    return LOOM_OK;
}

__attribute__((format(printf, 6, 7)))
static loom_status add_tensor(loom_model *self, size_t *index, uint32_t flags, int64_t rows, int64_t cols,
                              const char *fmt, ...)
{
    t5_tensor *t = &self->tensors[self->n_tensors];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->flags = flags;
    t->size = rows * (cols ? cols : 1);
    t->offset = self->total;
    self->total += t->size;
    *index = self->n_tensors++;
    return LOOM_OK;
}

/* The tensors of one side's blocks and its final norm. */
static void add_side(loom_model *self, t5_side *side, const char *prefix, int decoder)
{
    const int64_t D = self->D, E = self->E, F = self->F;
    for (int64_t l = 0; l < side->L; l++) {
        t5_block *b = &side->blocks[l];
        memset(b, 0xff, sizeof *b); /* every index T5_NO_TENSOR */
        add_tensor(self, &b->q, 0, E, D, "%s.block.%lld.layer.0.SelfAttention.q.weight", prefix, (long long)l);
        add_tensor(self, &b->k, 0, E, D, "%s.block.%lld.layer.0.SelfAttention.k.weight", prefix, (long long)l);
        add_tensor(self, &b->v, 0, E, D, "%s.block.%lld.layer.0.SelfAttention.v.weight", prefix, (long long)l);
        add_tensor(self, &b->o, 0, D, E, "%s.block.%lld.layer.0.SelfAttention.o.weight", prefix, (long long)l);
        if (l == 0)
            /* "bias" in its name: HF's decay rule (v4.2's no_decay list and its successor) leaves
             * it out of weight decay. */
            add_tensor(self, &b->rel, LOOM_PARAM_EMBEDDING | LOOM_PARAM_NO_DECAY, self->NB, self->H,
                       "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", prefix);
        add_tensor(self, &b->ln_sa, LOOM_PARAM_NO_DECAY, D, 0, "%s.block.%lld.layer.0.layer_norm.weight", prefix,
                   (long long)l);
        int ff = 1;
        if (decoder) {
            ff = 2;
            add_tensor(self, &b->cq, 0, E, D, "%s.block.%lld.layer.1.EncDecAttention.q.weight", prefix, (long long)l);
            add_tensor(self, &b->ck, 0, E, D, "%s.block.%lld.layer.1.EncDecAttention.k.weight", prefix, (long long)l);
            add_tensor(self, &b->cv, 0, E, D, "%s.block.%lld.layer.1.EncDecAttention.v.weight", prefix, (long long)l);
            add_tensor(self, &b->co, 0, D, E, "%s.block.%lld.layer.1.EncDecAttention.o.weight", prefix, (long long)l);
            add_tensor(self, &b->ln_ca, LOOM_PARAM_NO_DECAY, D, 0, "%s.block.%lld.layer.1.layer_norm.weight", prefix,
                       (long long)l);
        }
        if (self->gated) {
            add_tensor(self, &b->wi0, 0, F, D, "%s.block.%lld.layer.%d.DenseReluDense.wi_0.weight", prefix,
                       (long long)l, ff);
            add_tensor(self, &b->wi1, 0, F, D, "%s.block.%lld.layer.%d.DenseReluDense.wi_1.weight", prefix,
                       (long long)l, ff);
        } else {
            add_tensor(self, &b->wi0, 0, F, D, "%s.block.%lld.layer.%d.DenseReluDense.wi.weight", prefix, (long long)l,
                       ff);
        }
        add_tensor(self, &b->wo, 0, D, F, "%s.block.%lld.layer.%d.DenseReluDense.wo.weight", prefix, (long long)l, ff);
        add_tensor(self, &b->ln_ff, LOOM_PARAM_NO_DECAY, D, 0, "%s.block.%lld.layer.%d.layer_norm.weight", prefix,
                   (long long)l, ff);
    }
    add_tensor(self, &side->final_norm, LOOM_PARAM_NO_DECAY, D, 0, "%s.final_layer_norm.weight", prefix);
}

loom_status t5_configure(loom_model *self, const loom_config *cfg)
{
    const loom_host_api *api = self->api;
    loom_status st;
    int64_t V = 32128, D = 512, KV = 64, F = 2048, L = 6, LD = -1, H = 8, NB = 32, MD = 128, start = 0, pad = 0,
            eos = 1, P = 512;
    if ((st = read_int(self, cfg, "vocab_size", &V, 1)) || (st = read_int(self, cfg, "d_model", &D, 1)) ||
        (st = read_int(self, cfg, "d_kv", &KV, 1)) || (st = read_int(self, cfg, "d_ff", &F, 1)) ||
        (st = read_int(self, cfg, "num_layers", &L, 0)) || (st = read_int(self, cfg, "num_heads", &H, 1)) ||
        (st = read_int(self, cfg, "relative_attention_num_buckets", &NB, 2)) ||
        (st = read_int(self, cfg, "relative_attention_max_distance", &MD, 2)) ||
        (st = read_int(self, cfg, "decoder_start_token_id", &start, 0)) ||
        (st = read_int(self, cfg, "pad_token_id", &pad, 0)) || (st = read_int(self, cfg, "eos_token_id", &eos, 0)) ||
        (st = read_int(self, cfg, "n_positions", &P, 1)))
        return st;
    if (api->cfg_i64(cfg, "num_decoder_layers", &LD) == LOOM_CFG_WRONG_TYPE)
        return api->fail(self->host, LOOM_E_INVALID, "num_decoder_layers must be an integer");
    if (LD < 0) LD = L;
    if (V > INT32_MAX || D > 65536 || KV > 65536 || F > 1 << 20 || H > 1024 || L > 1024 || LD > 1024 || NB > 1 << 20)
        return api->fail(self->host, LOOM_E_INVALID,
                         "sizes out of range (vocab_size %lld, d_model %lld, d_ff %lld, ...)", (long long)V,
                         (long long)D, (long long)F);
    if (start >= V || pad >= V || eos >= V)
        return api->fail(
            self->host, LOOM_E_INVALID,
            "decoder_start_token_id %lld, pad_token_id %lld, eos_token_id %lld: each must be < vocab_size %lld",
            (long long)start, (long long)pad, (long long)eos, (long long)V);
    double dropout = 0.1, eps = 1e-6, factor = 1.0;
    if (api->cfg_f64(cfg, "dropout_rate", &dropout) == LOOM_CFG_WRONG_TYPE || !(dropout >= 0 && dropout < 1))
        return api->fail(self->host, LOOM_E_INVALID, "dropout_rate must be a number in [0, 1)");
    if (api->cfg_f64(cfg, "layer_norm_epsilon", &eps) == LOOM_CFG_WRONG_TYPE || !(eps > 0))
        return api->fail(self->host, LOOM_E_INVALID, "layer_norm_epsilon must be a number > 0");
    if (api->cfg_f64(cfg, "initializer_factor", &factor) == LOOM_CFG_WRONG_TYPE || !(factor > 0))
        return api->fail(self->host, LOOM_E_INVALID, "initializer_factor must be a number > 0");
    double smoothing = 0.0;
    if (api->cfg_f64(cfg, "label_smoothing_factor", &smoothing) == LOOM_CFG_WRONG_TYPE ||
        !(smoothing >= 0 && smoothing < 1))
        return api->fail(self->host, LOOM_E_INVALID, "label_smoothing_factor must be a number in [0, 1)");
    self->smoothing = (float)smoothing;
    double neftune = 0.0;
    if (api->cfg_f64(cfg, "neftune_noise_alpha", &neftune) == LOOM_CFG_WRONG_TYPE || !(neftune >= 0) ||
        !isfinite(neftune))
        return api->fail(self->host, LOOM_E_INVALID, "neftune_noise_alpha must be a number >= 0");
    self->neftune_alpha = neftune;
    const char *proj = "relu";
    if (api->cfg_str(cfg, "feed_forward_proj", &proj) == LOOM_CFG_WRONG_TYPE) proj = "?";
    if (strcmp(proj, "relu") == 0) {
        self->gated = 0;
        self->proj = "relu";
    } else if (strcmp(proj, "gated-gelu") == 0) {
        self->gated = 1;
        self->proj = "gated-gelu";
    } else {
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "feed_forward_proj '%s': relu (T5) and gated-gelu (T5 v1.1) are supported", proj);
    }
    const char *act = NULL;
    if (api->cfg_str(cfg, "dense_act_fn", &act) == LOOM_CFG_PRESENT &&
        strcmp(act, self->gated ? "gelu_new" : "relu") != 0)
        return api->fail(self->host, LOOM_E_INVALID, "dense_act_fn '%s' disagrees with feed_forward_proj '%s'", act,
                         self->proj);
    int32_t flag = 0;
    if (api->cfg_bool(cfg, "is_gated_act", &flag) == LOOM_CFG_PRESENT && flag != self->gated)
        return api->fail(self->host, LOOM_E_INVALID, "is_gated_act disagrees with feed_forward_proj '%s'", self->proj);
    int32_t tied = 1;
    if (api->cfg_bool(cfg, "tie_word_embeddings", &tied) == LOOM_CFG_WRONG_TYPE)
        return api->fail(self->host, LOOM_E_INVALID, "tie_word_embeddings must be true or false");

    self->V = V, self->D = D, self->KV = KV, self->F = F, self->H = H, self->E = H * KV, self->NB = NB, self->MD = MD;
    self->n_positions = P;
    self->eps = eps, self->dropout = dropout, self->init_factor = factor, self->tied = tied != 0;
    self->start_id = (int32_t)start, self->pad_id = (int32_t)pad, self->eos_id = (int32_t)eos;
    self->enc.L = L;
    self->dec.L = LD;

    const size_t per_block = 16;
    const size_t max_tensors = 4 + (size_t)(L + LD) * per_block;
    self->tensors = api->alloc(self->host, max_tensors * sizeof *self->tensors, 0, LOOM_DEVICE_CPU, 0);
    self->enc.blocks = api->alloc(self->host, (size_t)(L + 1) * sizeof(t5_block), 0, LOOM_DEVICE_CPU, 0);
    self->dec.blocks = api->alloc(self->host, (size_t)(LD + 1) * sizeof(t5_block), 0, LOOM_DEVICE_CPU, 0);
    self->enc.acts = api->alloc(self->host, (size_t)(L + 1) * sizeof(t5_block_acts), 0, LOOM_DEVICE_CPU, 0);
    self->dec.acts = api->alloc(self->host, (size_t)(LD + 1) * sizeof(t5_block_acts), 0, LOOM_DEVICE_CPU, 0);
    if (!self->tensors || !self->enc.blocks || !self->dec.blocks || !self->enc.acts || !self->dec.acts)
        return api->fail(self->host, LOOM_E_NOMEM, "out of memory");
    memset(self->tensors, 0, max_tensors * sizeof *self->tensors);
    add_tensor(self, &self->shared, LOOM_PARAM_EMBEDDING, V, D, "shared.weight");
    add_side(self, &self->enc, "encoder", 0);
    add_side(self, &self->dec, "decoder", 1);
    self->lm_head = self->shared;
    if (!self->tied) add_tensor(self, &self->lm_head, 0, V, D, "lm_head.weight");
    return LOOM_OK;
}

void t5_free_tensors(loom_model *self)
{
    const loom_host_api *api = self->api;
    api->free_memory(self->host, self->tensors);
    api->free_memory(self->host, self->enc.blocks);
    api->free_memory(self->host, self->dec.blocks);
    api->free_memory(self->host, self->enc.acts);
    api->free_memory(self->host, self->dec.acts);
    self->tensors = NULL;
}

size_t t5_param_count(const loom_model *self) { return self->n_tensors; }

loom_status t5_param_info(const loom_model *self, size_t i, loom_param_info *out)
{
    if (!out || i >= self->n_tensors)
        return self->api->fail(self->host, LOOM_E_INVALID, "param_info: index %zu of %zu", i, self->n_tensors);
    const t5_tensor *t = &self->tensors[i];
    out->name = t->name;
    out->ndim = t->ndim;
    out->flags = t->flags;
    for (uint32_t d = 0; d < LOOM_MAX_DIMS; d++) out->shape[d] = d < t->ndim ? t->shape[d] : 0;
    return LOOM_OK;
}

/* HF's _init_weights: the std of tensor i (0: ones, a norm weight). */
static float init_std(const loom_model *self, size_t i)
{
    const double f = self->init_factor, D = (double)self->D, E = (double)self->E, KV = (double)self->KV;
    const char *name = self->tensors[i].name;
    size_t n = strlen(name);
#define ENDS(s) (n >= sizeof(s) - 1 && strcmp(name + n - (sizeof(s) - 1), s) == 0)
    if (ENDS("layer_norm.weight")) return 0.0f;
    if (ENDS("Attention.q.weight")) return (float)(f / sqrt(D * KV));
    if (ENDS("Attention.k.weight") || ENDS("Attention.v.weight")) return (float)(f / sqrt(D));
    if (ENDS("Attention.o.weight")) return (float)(f / sqrt(E));
    if (ENDS("relative_attention_bias.weight")) return (float)(f / sqrt(D));
    if (ENDS(".wo.weight")) return (float)(f / sqrt((double)self->F));
    if (ENDS(".wi.weight") || ENDS(".wi_0.weight") || ENDS(".wi_1.weight")) return (float)(f / sqrt(D));
#undef ENDS
    return (float)f; /* shared.weight, lm_head.weight */
}

loom_status t5_init_params(loom_model *self, float *params)
{
    if (!params) return self->api->fail(self->host, LOOM_E_INVALID, "init_params: params is NULL");
    for (size_t i = 0; i < self->n_tensors; i++) {
        const t5_tensor *t = &self->tensors[i];
        const float std = init_std(self, i);
        if (std == 0.0f) {
            for (int64_t j = 0; j < t->size; j++) params[t->offset + j] = 1.0f;
        } else {
            self->api->random_normal(self->host, T5_STREAM_BASE + i, 0, params + t->offset, (size_t)t->size, 0.0f, std);
        }
    }
    return LOOM_OK;
}
