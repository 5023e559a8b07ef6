/*
 * gpt2_params.c - the "gpt2" model's configuration (HF GPT2Config names and defaults), its
 * parameter list and their initialisation.
 *
 * Parameters, in flat-buffer order, with HF's names and shapes, so that saving the flat
 * buffer tensor by tensor gives the model.safetensors of HF's GPT2LMHeadModel:
 *   transformer.wte.weight [V, C], transformer.wpe.weight [P, C],
 *   per block i: transformer.h.i.ln_1.{weight,bias} [C], .attn.c_attn.weight [C, 3C] (Conv1D:
 *   [in, out]), .attn.c_attn.bias [3C], .attn.c_proj.weight [C, C], .attn.c_proj.bias [C],
 *   .ln_2.{weight,bias} [C], .mlp.c_fc.weight [C, F], .mlp.c_fc.bias [F],
 *   .mlp.c_proj.weight [F, C], .mlp.c_proj.bias [C],
 *   transformer.ln_f.{weight,bias} [C].
 * lm_head.weight is wte (tied), not a parameter of its own. A block's twelve tensors are
 * adjacent, so backward hands each block's gradients to the sink as one range.
 */
#include "gpt2.h"

#include <loom/plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

/* random_normal stream of parameter tensor i is GPT2_STREAM_BASE + i ("gpt\0"), so a
 * tensor's initial values do not depend on the sizes of the tensors before it. */
#define GPT2_STREAM_BASE 0x67707400u

/* clang-format off */
const loom_param_spec gpt2_param_specs[] = {
    {.key = "vocab_size", .type = LOOM_PARAM_INT, .default_value = "50257",
     .doc = "tokens in the vocabulary (V)"},
    {.key = "n_positions", .type = LOOM_PARAM_INT, .default_value = "1024",
     .doc = "the context: longest sequence the position embedding covers"},
    {.key = "n_embd", .type = LOOM_PARAM_INT, .default_value = "768",
     .doc = "width of the residual stream (C)"},
    {.key = "n_layer", .type = LOOM_PARAM_INT, .default_value = "12",
     .doc = "transformer blocks"},
    {.key = "n_head", .type = LOOM_PARAM_INT, .default_value = "12",
     .doc = "attention heads; must divide n_embd"},
    /* No default, as HF's None: unset, it stays out of a saved config.json (HF reads an
     * n_inner of 0 as a zero-width MLP). */
    {.key = "n_inner", .type = LOOM_PARAM_INT, .default_value = NULL,
     .doc = "width of the MLP's hidden layer; unset or 0: 4 * n_embd"},
    {.key = "layer_norm_epsilon", .type = LOOM_PARAM_FLOAT, .default_value = "1e-5",
     .doc = "epsilon of every LayerNorm"},
    {.key = "initializer_range", .type = LOOM_PARAM_FLOAT, .default_value = "0.02",
     .doc = "std of the normal initialisation (residual projections: / sqrt(2 * n_layer))"},
    {.key = "activation_function", .type = LOOM_PARAM_STRING, .default_value = "gelu_new",
     .doc = "MLP activation: gelu_new (GELU, tanh approximation) is the one supported"},
    {.key = "resid_pdrop", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "dropout on the attention and MLP outputs before each residual add (training only)"},
    {.key = "embd_pdrop", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "dropout on the embeddings (token + position; training only)"},
    {.key = "attn_pdrop", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "dropout on the attention probabilities (training only; runs the tiled attention)"},
    {.key = "tie_word_embeddings", .type = LOOM_PARAM_BOOL, .default_value = "true",
     .doc = "the LM head shares transformer.wte.weight (false is not supported)"},
    /* What HF writes in a GPT-2 config.json beside the sizes; informational here. */
    {.key = "architectures", .type = LOOM_PARAM_STRING, .default_value = "GPT2LMHeadModel",
     .doc = "HF class named in config.json's architectures (informational)"},
    {.key = "bos_token_id", .type = LOOM_PARAM_INT, .default_value = "50256",
     .doc = "beginning-of-text token id written to config.json (informational)"},
    {.key = "eos_token_id", .type = LOOM_PARAM_INT, .default_value = "50256",
     .doc = "end-of-text token id written to config.json (informational)"},
    {.key = "scale_attn_weights", .type = LOOM_PARAM_BOOL, .default_value = "true",
     .doc = "attention scores divided by sqrt(head size), as always here (false is not supported)"},
    {.key = "use_cache", .type = LOOM_PARAM_BOOL, .default_value = "true",
     .doc = "HF's key-value cache flag, written to config.json (informational)"},
    {.key = "gradient_checkpointing", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "recompute each block's activations in backward (keeps one block's): less memory, "
            "one more forward; --gradient_checkpointing sets it"},
    {.key = "label_smoothing_factor", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "HF's label smoothing epsilon for the loss (training and evaluation); "
            "--label_smoothing_factor sets it"},
    {.key = "neftune_noise_alpha", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "NEFTune: training forwards add uniform noise of +-alpha / sqrt(T n_embd) to wte's output "
            "(0: none); --neftune_noise_alpha sets it"},
    {.key = NULL},
};
/* clang-format on */

/* ---- configuration ------------------------------------------------------------------- */

static loom_status positive(loom_model *self, const char *key, int64_t v)
{
    if (v > 0) return LOOM_OK;
    return self->api->fail(self->host, LOOM_E_INVALID, "%s is %lld: must be positive", key, (long long)v);
}

/* Append tensor (name, shape) to the list, at the next offset of the flat buffer. */
static void add_tensor(loom_model *self, const char *name, int64_t d0, int64_t d1, uint32_t flags)
{
    gpt2_tensor *t = &self->tensors[self->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->flags = flags;
    t->size = d1 > 0 ? d0 * d1 : d0;
    t->offset = self->n_params;
    self->n_params += t->size;
}

loom_status gpt2_configure(loom_model *self, const loom_config *config)
{
    const loom_host_api *api = self->api;
    loom_host *host = self->host;
    int64_t V = 50257, P = 1024, C = 768, L = 12, NH = 12, F = 0;
    double eps = 1e-5, init = 0.02, dropout[3] = {0.0, 0.0, 0.0};
    static const char *const dropout_keys[3] = {"resid_pdrop", "embd_pdrop", "attn_pdrop"};
    loom_status st;
    if ((st = loom_cfg_opt_i64(host, api, config, "vocab_size", &V)) ||
        (st = loom_cfg_opt_i64(host, api, config, "n_positions", &P)) ||
        (st = loom_cfg_opt_i64(host, api, config, "n_embd", &C)) ||
        (st = loom_cfg_opt_i64(host, api, config, "n_layer", &L)) ||
        (st = loom_cfg_opt_i64(host, api, config, "n_head", &NH)) ||
        (st = loom_cfg_opt_i64(host, api, config, "n_inner", &F)) ||
        (st = loom_cfg_opt_f64(host, api, config, "layer_norm_epsilon", &eps)) ||
        (st = loom_cfg_opt_f64(host, api, config, "initializer_range", &init)))
        return st;
    for (int i = 0; i < 3; i++) {
        if ((st = loom_cfg_opt_f64(host, api, config, dropout_keys[i], &dropout[i]))) return st;
        if (!(dropout[i] >= 0.0 && dropout[i] < 1.0))
            return api->fail(host, LOOM_E_INVALID, "%s is %g: must be in [0, 1)", dropout_keys[i], dropout[i]);
    }
    if ((st = positive(self, "vocab_size", V)) || (st = positive(self, "n_positions", P)) ||
        (st = positive(self, "n_embd", C)) || (st = positive(self, "n_layer", L)) ||
        (st = positive(self, "n_head", NH)))
        return st;
    if (F < 0)
        return api->fail(host, LOOM_E_INVALID, "n_inner is %lld: must be positive, or 0 for 4 * n_embd", (long long)F);
    if (F == 0) F = 4 * C;
    if (C % NH != 0)
        return api->fail(host, LOOM_E_INVALID, "n_embd %lld is not a multiple of n_head %lld", (long long)C,
                         (long long)NH);
    if (V > INT32_MAX)
        return api->fail(host, LOOM_E_INVALID, "vocab_size %lld: token ids are 32-bit", (long long)V);
    if (!(eps > 0.0) || !isfinite(eps))
        return api->fail(host, LOOM_E_INVALID, "layer_norm_epsilon is %g: must be positive", eps);
    if (!(init >= 0.0) || !isfinite(init))
        return api->fail(host, LOOM_E_INVALID, "initializer_range is %g: must be >= 0", init);

    const char *activation = "gelu_new";
    if (api->cfg_str(config, "activation_function", &activation) == LOOM_CFG_WRONG_TYPE)
        return api->fail(host, LOOM_E_INVALID, "activation_function must be a string");
    /* gelu_pytorch_tanh is HF's name for the same function computed by PyTorch's kernel. */
    if (strcmp(activation, "gelu_new") != 0 && strcmp(activation, "gelu_pytorch_tanh") != 0)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "activation_function \"%s\" is not supported: gpt2 implements \"gelu_new\" "
                         "(GELU, tanh approximation) only", activation);
    int32_t tie = 1;
    if (api->cfg_bool(config, "tie_word_embeddings", &tie) == LOOM_CFG_WRONG_TYPE)
        return api->fail(host, LOOM_E_INVALID, "tie_word_embeddings must be true or false");
    if (!tie)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "tie_word_embeddings false is not supported: the LM head is transformer.wte.weight");
    int32_t scaled = 1;
    if (api->cfg_bool(config, "scale_attn_weights", &scaled) == LOOM_CFG_WRONG_TYPE || !scaled)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "scale_attn_weights must be true: attention divides by sqrt(head size)");
    int32_t recompute = 0;
    if (api->cfg_bool(config, "gradient_checkpointing", &recompute) == LOOM_CFG_WRONG_TYPE)
        return api->fail(host, LOOM_E_INVALID, "gradient_checkpointing must be true or false");
    self->recompute = recompute != 0;
    double smoothing = 0.0;
    if ((st = loom_cfg_opt_f64(host, api, config, "label_smoothing_factor", &smoothing))) return st;
    if (!(smoothing >= 0.0 && smoothing < 1.0))
        return api->fail(host, LOOM_E_INVALID, "label_smoothing_factor is %g: must be in [0, 1)", smoothing);
    self->smoothing = (float)smoothing;
    double neftune = 0.0;
    if ((st = loom_cfg_opt_f64(host, api, config, "neftune_noise_alpha", &neftune))) return st;
    if (!(neftune >= 0.0) || !isfinite(neftune))
        return api->fail(host, LOOM_E_INVALID, "neftune_noise_alpha is %g: must be >= 0", neftune);
    self->neftune_alpha = neftune;
    self->resid_pdrop = (float)dropout[0], self->embd_pdrop = (float)dropout[1], self->attn_pdrop = (float)dropout[2];

    /* Sizes: the parameter count (and every product of two sizes) must stay far from
     * int64's limit; 2^46 floats is more memory than any machine has. */
    const double total =
        (double)(V + P) * (double)C +
        (double)L * (4.0 * (double)C * (double)C + 2.0 * (double)C * (double)F + 9.0 * (double)C + (double)F) +
        2.0 * (double)C;
    if (total > 0x1p46 || (double)F * (double)C > 0x1p46)
        return api->fail(host, LOOM_E_INVALID, "gpt2 configuration too large (%.3g parameters)", total);
    self->V = V, self->P = P, self->C = C, self->L = L, self->NH = NH, self->F = F;
    self->eps = (float)eps;
    self->initializer_range = init;

    self->n_tensors = 0;
    self->n_params = 0;
    const size_t count = 2 + (size_t)L * GPT2_LAYER_TENSORS + 2;
    self->tensors = api->alloc(host, count * sizeof *self->tensors, 0, LOOM_DEVICE_CPU, 0);
    if (!self->tensors) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self->tensors, 0, count * sizeof *self->tensors);
    add_tensor(self, "transformer.wte.weight", V, C, LOOM_PARAM_EMBEDDING);
    add_tensor(self, "transformer.wpe.weight", P, C, LOOM_PARAM_EMBEDDING);
    for (int64_t l = 0; l < L; l++) {
        static const struct {
            const char *suffix;
            int in, out; /* 0: C, 1: 3C, 2: F, -1: none (1-D) */
            uint32_t flags;
        } block[GPT2_LAYER_TENSORS] = {
            {"ln_1.weight", 0, -1, LOOM_PARAM_NO_DECAY},   {"ln_1.bias", 0, -1, LOOM_PARAM_NO_DECAY},
            {"attn.c_attn.weight", 0, 1, 0},               {"attn.c_attn.bias", 1, -1, LOOM_PARAM_NO_DECAY},
            {"attn.c_proj.weight", 0, 0, 0},               {"attn.c_proj.bias", 0, -1, LOOM_PARAM_NO_DECAY},
            {"ln_2.weight", 0, -1, LOOM_PARAM_NO_DECAY},   {"ln_2.bias", 0, -1, LOOM_PARAM_NO_DECAY},
            {"mlp.c_fc.weight", 0, 2, 0},                  {"mlp.c_fc.bias", 2, -1, LOOM_PARAM_NO_DECAY},
            {"mlp.c_proj.weight", 2, 0, 0},                {"mlp.c_proj.bias", 0, -1, LOOM_PARAM_NO_DECAY},
        };
        const int64_t dim[3] = {C, 3 * C, F};
        for (int j = 0; j < GPT2_LAYER_TENSORS; j++) {
            char name[64];
            snprintf(name, sizeof name, "transformer.h.%lld.%s", (long long)l, block[j].suffix);
            add_tensor(self, name, dim[block[j].in], block[j].out < 0 ? 0 : dim[block[j].out], block[j].flags);
        }
    }
    add_tensor(self, "transformer.ln_f.weight", C, 0, LOOM_PARAM_NO_DECAY);
    add_tensor(self, "transformer.ln_f.bias", C, 0, LOOM_PARAM_NO_DECAY);
    /* The tensor after block 0 (block 1's first, or ln_f.weight) starts where block 0 ends. */
    self->layer_size = self->tensors[2 + GPT2_LAYER_TENSORS].offset - self->tensors[2].offset;
    return LOOM_OK;
}

void gpt2_free_tensors(loom_model *self)
{
    self->api->free_memory(self->host, self->tensors);
    self->tensors = NULL;
    self->n_tensors = 0;
}

/* ---- parameters ---------------------------------------------------------------------- */

size_t gpt2_param_count(const loom_model *self) { return self->n_tensors; }

loom_status gpt2_param_info(const loom_model *self, size_t i, loom_param_info *out)
{
    if (!out || i >= self->n_tensors)
        return self->api->fail(self->host, LOOM_E_INVALID, "param_info(%zu): gpt2 has %zu tensors", i,
                               self->n_tensors);
    const gpt2_tensor *t = &self->tensors[i];
    out->name = t->name;
    out->ndim = t->ndim;
    out->flags = t->flags;
    memset(out->shape, 0, sizeof out->shape);
    out->shape[0] = t->shape[0];
    if (t->ndim == 2) out->shape[1] = t->shape[1];
    return LOOM_OK;
}

/* HF's GPT2PreTrainedModel._init_weights: every weight (embeddings, Conv1D) ~ N(0, range),
 * except the residual projections attn.c_proj.weight and mlp.c_proj.weight, ~ N(0, range /
 * sqrt(2 * n_layer)) (GPT-2's scaled residual init); biases 0; LayerNorm weight 1, bias 0. */
loom_status gpt2_init_params(loom_model *self, float *params)
{
    if (!params) return self->api->fail(self->host, LOOM_E_INVALID, "init_params: params is NULL");
    const float std = (float)self->initializer_range;
    const float residual_std = (float)(self->initializer_range / sqrt(2.0 * (double)self->L));
    for (size_t i = 0; i < self->n_tensors; i++) {
        const gpt2_tensor *t = &self->tensors[i];
        float *p = params + t->offset;
        const size_t n = (size_t)t->size;
        const char *name = t->name;
        const size_t len = strlen(name);
        if (len >= 5 && strcmp(name + len - 5, ".bias") == 0) {
            memset(p, 0, n * sizeof *p);
        } else if (strstr(name, ".ln_") != NULL) {
            for (size_t j = 0; j < n; j++) p[j] = 1.0f;
        } else {
            const int residual = strstr(name, ".c_proj.weight") != NULL;
            self->api->random_normal(self->host, GPT2_STREAM_BASE + (uint64_t)i, 0, p, n, 0.0f,
                                     residual ? residual_std : std);
        }
    }
    return LOOM_OK;
}
