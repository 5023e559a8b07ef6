/*
 * gpt2.c - the "gpt2" model: HF's GPT2LMHeadModel, written the llm.c way (forward/backward
 * pairs over activations carved out of one allocation), computed with the host's kernels.
 *
 *   tokens [B, T] -> wte[token] + wpe[t] -> L x { x += attn.c_proj(attention(ln_1(x)));
 *   x += mlp.c_proj(gelu(mlp.c_fc(ln_2(x)))) } -> ln_f -> logits = x @ wte^T [B, T, V]
 *   -> softmax cross-entropy against I32 labels [B, T] (-100: not a target).
 *
 * Labels are aligned with the positions (llm.c's targets): labels[b, t] is the token that
 * should follow inputs[b, t]. The data pipeline shifts; the model does not (HF shifts inside
 * GPT2LMHeadModel.forward because its labels are a copy of input_ids). That keeps the host's
 * count of targets (labels != -100 in the batch) equal to the model's.
 *
 * Memory (bind, once): llm.c's activations less attproj/fcproj (the projections are written
 * into the residual buffers and the residual added in place), and a backward scratch of
 * 2 N C + N (max(F, 3C) + max(F, C)) floats. Two things that grow fast are gone where the
 * kernel table has the ABI 1.3 kernels: the attention keeps each row's log-sum-exp instead of
 * the [B, NH, T, T] probabilities (from T = GPT2_FLASH_MIN_T), and the fused classifier works
 * through the logits in chunks of GPT2_CLASSIFIER_ROWS rows inside the backward scratch instead
 * of holding [N, V] (16-bit parameters: in slabs of vocabulary columns where the table has
 * classifier_columns, ABI 1.8, so wte's head gradient needs no f32 [V, C] copy;
 * docs/architecture.md#classifier-columns). Otherwise the logits [N, V] are kept with the softmax
 * done in place, the dlogits reusing them (logits_ext in gpt2.h). With gradient checkpointing
 * the blocks share one set of activations (each block's output is kept) and backward recomputes
 * them. Nothing is allocated per step; the logits only once, by the calls that return them.
 */
#include <loom/plugin.h>

#include "gpt2.h"
#include "model_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fewest rows per softmax-cross-entropy backward call: the kernel parallelises over rows. */
#define GPT2_MIN_CE_CHUNK 8

static int64_t round_up(int64_t n) { return (n + GPT2_ALIGN_FLOATS - 1) / GPT2_ALIGN_FLOATS * GPT2_ALIGN_FLOATS; }
static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- dropout ------------------------------------------------------------------------- */

/* HF's GPT-2 dropout sites (docs/semantics/trainer.md#dropout). Masks come from
 * loom_dropout_keep keyed by the micro-batch's dropout_seed, the layer and the site, and the
 * element's index: backward and gradient checkpointing draw them again, nothing is stored, and
 * a resumed run (the same seeds) draws the same ones. */
enum { GPT2_SITE_EMBD, GPT2_SITE_ATTN, GPT2_SITE_ATTN_RESID, GPT2_SITE_MLP_RESID };

static uint64_t site_seed(const loom_model *self, int64_t layer, int site)
{
    uint64_t z =
        self->fwd_seed ^ (uint64_t)(layer + 2) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(site + 1) * 0xd1b54a32d192ed03ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float drop_p(const loom_model *self, float p) { return self->fwd_training ? p : 0.0f; }

/* x = dropout(x) in place: kept elements times 1 / (1 - p). The backward applies the same. */
static void dropout_apply(float *x, int64_t n, float p, uint64_t seed)
{
    if (p <= 0.0f) return;
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) x[i] = loom_dropout_keep(seed, (uint64_t)i, p) ? x[i] * scale : 0.0f;
}

/* The gradient of a dropped-out residual branch: dres masked into `scratch`, or dres itself. */
static const float *branch_grad(const loom_model *self, const float *dres, float *scratch, int64_t n, int64_t layer,
                                int site)
{
    const float p = drop_p(self, self->resid_pdrop);
    if (p <= 0.0f) return dres;
    memcpy(scratch, dres, (size_t)n * sizeof *scratch);
    dropout_apply(scratch, n, p, site_seed(self, layer, site));
    return scratch;
}

static void set_dropout(loom_model *self, const loom_batch *batch)
{
    self->fwd_training = LOOM_HAS_FIELD(batch, loom_batch, training) && batch->training != 0;
    self->fwd_seed = self->fwd_training ? batch->dropout_seed : 0;
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void gpt2_destroy(loom_model *self)
{
    if (!self) return;
    const loom_host_api *api = self->api;
    gpt2_decode_free(self);
    gpt2_mixed_free(self);
    gpt2_rows_free(self);
    api->free_memory(self->host, self->activations);
    api->free_memory(self->host, self->head_memory);
    api->free_memory(self->host, self->layers);
    gpt2_free_tensors(self);
    api->free_memory(self->host, self);
}

MODEL_DEFINE_CREATE(gpt2_create, gpt2_configure, gpt2_destroy)

/* ---- binding ------------------------------------------------------------------------- */


static int complete_kernels(const loom_kernels_api *k)
{
    return k && LOOM_HAS(k, loom_kernels_api, accumulate) && k->sgemm && k->linear_forward &&
           k->linear_backward && k->gelu_forward && k->gelu_backward && k->softmax_cross_entropy_forward &&
           k->softmax_cross_entropy_backward && k->encoder_forward && k->encoder_backward &&
           k->layernorm_forward && k->layernorm_backward && k->conv1d_forward && k->conv1d_backward &&
           k->attention_forward && k->attention_backward && k->add;
}

/* Floats that n elements of a product's input take: half as many in a mixed-precision run,
 * which keeps them (ln1, atty, ln2, fch_gelu, lnf) only in the 16-bit compute dtype. */
static int64_t input_floats(int mixed, int64_t n) { return mixed ? (n + 1) / 2 : n; }

/* Sequences from which the tiled attention runs (bind's max_sequence_length): at T = 64 both
 * take well under a millisecond per layer, at T = 256 the tiled one is ~1.5x faster in backward,
 * at T = 1024 2.5-4x, and it never holds [T, T]. */
#define GPT2_FLASH_MIN_T 128

/* Rows of the fused classifier's chunk: [128, V] f32 is 26 MB for GPT-2's vocabulary (the
 * [N, V] logits are 206 MB at N = 1024), and 128-row products still run at the GEMM's rate. */
#define GPT2_CLASSIFIER_ROWS 128

/* Floats of the fused classifier's scratch for chunks of R rows (kernels.h: classifier). */
static int64_t classifier_floats(int mixed, int64_t R, int64_t V) { return R * V + (mixed ? (R * V + 1) / 2 : 0); }

/* Fewest vocabulary columns per slab of the classifier by columns: the region it shares with
 * dA/dB usually holds thousands (N x max(F, 3C) floats twice); below, it grows to this many. */
#define GPT2_CLASSIFIER_COLUMNS 512

/* The sizes of everything bind() carves; TAKE in bind follows the same order. self->flash,
 * fused and recompute are set. */
typedef struct gpt2_layout {
    int64_t layer_sets;          /* blocks whose activations are kept: L, or 1 recomputing   */
    int64_t att;                 /* floats of a block's att                                  */
    int64_t qkv;                 /* floats of a block's qkv: 16-bit under the tiled attention
                                    in a mixed run                                           */
    int64_t shared;              /* mixed runs: the 16-bit fch_gelu that every block shares
                                    (recomputed in backward), and the f32 half-rows of fch
                                    that GELU's backward reads; 0 in f32 runs                */
    int64_t region;              /* dA, dB and the head's scratch                            */
    int64_t logits;              /* [N, V] when the classifier is not fused                  */
    int64_t wte_cd;              /* compute_dtype wte (fused, compute dtype != param dtype)  */
    int64_t dwte32;              /* f32 head gradient of wte (fused by rows, 16-bit
                                    parameters)                                              */
    int64_t lse;                 /* the rows' log-sum-exp (fused by columns)                 */
    int64_t R;                   /* ce_chunk                                                 */
    int64_t total;
} gpt2_layout;

static gpt2_layout layout(const loom_model *self, int mixed, int64_t B, int64_t T)
{
    const int64_t C = self->C, F = self->F, V = self->V, N = B * T;
    gpt2_layout y = {0};
    y.layer_sets = self->recompute ? 1 : self->L;
    y.att = self->flash ? B * self->NH * T : B * self->NH * T * T;
    y.qkv = self->flash ? input_floats(mixed, 3 * N * C) : 3 * N * C;
    y.shared = mixed ? max_i64(input_floats(mixed, N * F), (N + 1) / 2 * F) : 0;
    /* residual2, ln1, atty, ln2, the layernorms' statistics, qkv, att, fch (and fch_gelu in
     * f32 runs) */
    const int64_t per_layer = round_up(N * C) + 3 * round_up(input_floats(mixed, N * C)) + 4 * round_up(N) +
                              round_up(y.qkv) + round_up(y.att) + round_up(input_floats(mixed, N * F)) +
                              (mixed ? 0 : round_up(N * F));
    const int64_t ab = round_up(N * max_i64(F, 3 * C)) + round_up(N * max_i64(F, C));
    y.R = min_i64(N, max_i64(GPT2_MIN_CE_CHUNK, ab / V));
    if (self->fused && self->cls_columns) { /* slabs as wide as the backward's region allows */
        const size_t bytes = loom_classifier_columns_bytes(N, C, GPT2_CLASSIFIER_COLUMNS, self->compute_dtype);
        y.region = max_i64(ab, (int64_t)((bytes + sizeof(float) - 1) / sizeof(float)));
        y.lse = N;
    } else if (self->fused) {
        y.region = max_i64(ab, classifier_floats(mixed, min_i64(N, GPT2_CLASSIFIER_ROWS), V));
        y.wte_cd = mixed && self->param_dtype != self->compute_dtype ? (V * C + 1) / 2 : 0;
        y.dwte32 = self->param_dtype != LOOM_DTYPE_F32 ? V * C : 0;
    } else {
        y.region = max_i64(ab, y.R * V);
        y.logits = N * V;
    }
    y.total = round_up(N * C) + y.layer_sets * per_layer + self->L * round_up(N * C) /* encoded, blocks, residual3 */
              + round_up(input_floats(mixed, N * C)) + 2 * round_up(N) + round_up(N) /* lnf, ...   */
              + 2 * round_up(N * C)                                                  /* dres, dln  */
              + round_up(y.region) + round_up(y.logits) + round_up(y.wte_cd) + round_up(y.dwte32) + round_up(y.shared) +
              round_up(y.lse);
    return y;
}

static loom_status gpt2_bind(loom_model *self, const loom_model_binding *binding)
{
    const loom_host_api *api = self->api;
    if (!binding || !LOOM_HAS_FIELD(binding, loom_model_binding, kernels))
        return api->fail(self->host, LOOM_E_ABI, "bind: binding missing or too small");
    const uint32_t pd = binding->param_dtype, cd = binding->compute_dtype;
    if (!loom_dtype_is_param(pd) || !loom_dtype_is_param(cd))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "parameters in %s, compute in %s: gpt2 takes f32, f16 or bf16 for each",
                         loom_dtype_name(pd), loom_dtype_name(cd));
    /* Any device whose kernel table the host lends (checked below). The host-side reads here
     * (token ids, the loss sum) rely on ABI 1.3's promise that a bound device's memory is
     * CPU-addressable between kernel calls (abi/loom/backend.h). */
    if (!binding->params) return api->fail(self->host, LOOM_E_INVALID, "bind: params is NULL");
    if (binding->max_batch_size < 1)
        return api->fail(self->host, LOOM_E_INVALID, "bind: max_batch_size is %lld",
                         (long long)binding->max_batch_size);
    int64_t T = LOOM_HAS_FIELD(binding, loom_model_binding, max_sequence_length) ? binding->max_sequence_length : 0;
    if (T == 0) T = self->P;
    if (T < 0 || T > self->P)
        return api->fail(self->host, LOOM_E_INVALID,
                         "bind: max_sequence_length %lld is outside [1, n_positions = %lld]", (long long)T,
                         (long long)self->P);

    const loom_kernels_api *k = binding->kernels;
    if (!k) k = api->service(self->host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (!complete_kernels(k))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "the host lends no complete %s kernel table (gpt2 needs the transformer kernels)",
                         LOOM_KERNELS_CPU_SERVICE);
    if (k->device != binding->device)
        return api->fail(self->host, LOOM_E_INVALID, "kernels for device %u, parameters on device %u",
                         k->device, binding->device);
    if (self->smoothing > 0.0f &&
        !(LOOM_HAS(k, loom_kernels_api, softmax_cross_entropy_smoothed_backward_cast) &&
          k->softmax_cross_entropy_smoothed_forward && k->softmax_cross_entropy_smoothed_backward &&
          k->softmax_cross_entropy_smoothed_backward_cast))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "label_smoothing_factor %g needs the kernel table's smoothed cross-entropy (ABI 1.4), "
                         "which this host's table lacks",
                         (double)self->smoothing);
    const int mixed = pd != LOOM_DTYPE_F32 || cd != LOOM_DTYPE_F32;
    if (mixed && !(LOOM_HAS(k, loom_kernels_api, softmax_cross_entropy_backward_cast) && k->gemm_mixed && k->convert &&
                   k->accumulate_f32))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "parameters in %s, compute in %s need the kernel table's 16-bit functions (ABI 1.1), "
                         "which this host's %s lacks",
                         loom_dtype_name(pd), loom_dtype_name(cd), LOOM_KERNELS_CPU_SERVICE);

    const int64_t B = binding->max_batch_size;
    /* Everything below is a product of at most three sizes; check the largest in double. */
    const double per_token = 2.0 * (double)self->V +
                             (double)self->L * ((double)self->NH * (double)T + 12.0 * (double)(self->C + self->F));
    const double estimate = (double)B * (double)T * per_token;
    if (estimate > 0x1p44)
        return api->fail(self->host, LOOM_E_INVALID,
                         "activations for batch %lld x %lld tokens do not fit in memory", (long long)B, (long long)T);
    /* The tiled attention and the fused classifier where the kernel table has them (ABI 1.3).
     * The tiled attention from GPT2_FLASH_MIN_T tokens on: below, the stored probabilities are
     * small and the row loops slightly faster. LOOM_GPT2_ATTENTION=flash|stored and
     * LOOM_GPT2_CLASSIFIER=unfused choose a path, for tests, comparisons and benchmarks. The
     * classifier accumulates dwte in f32: into the gradients themselves when they are f32, else
     * into an f32 [V, C] copy rounded into them once. */
    const char *env_att = getenv("LOOM_GPT2_ATTENTION"), *env_cls = getenv("LOOM_GPT2_CLASSIFIER");
    /* Attention dropout runs in the tiled kernel only (its mask is drawn again in backward). */
    const int want_flash =
        self->attn_pdrop > 0.0f || (env_att && *env_att ? strcmp(env_att, "flash") == 0 : T >= GPT2_FLASH_MIN_T);
    if (self->attn_pdrop > 0.0f && !(LOOM_HAS(k, loom_kernels_api, attention_flash_backward_dropout) &&
                                     k->attention_flash_forward_dropout && k->attention_flash_backward_dropout))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "attn_pdrop %g needs the kernel table's attention dropout (ABI 1.4), which this host's "
                         "table lacks",
                         (double)self->attn_pdrop);
    self->flash = LOOM_HAS(k, loom_kernels_api, attention_flash_backward) && k->attention_flash_forward && want_flash;
    self->fused =
        LOOM_HAS(k, loom_kernels_api, classifier) && k->classifier && (cd == LOOM_DTYPE_F32 || cd == LOOM_DTYPE_BF16) &&
        (pd == LOOM_DTYPE_F32 || pd == cd) && !(env_cls && strcmp(env_cls, "unfused") == 0) &&
        (self->smoothing == 0.0f || (LOOM_HAS(k, loom_kernels_api, classifier_smoothed) && k->classifier_smoothed));
    /* 16-bit parameters: the classifier by vocabulary columns where the table has it (ABI
     * 1.8), whose head gradient is final slab by slab, so no f32 [V, C] accumulator (dwte32)
     * is kept through backward; LOOM_GPT2_CLASSIFIER=rows keeps the row chunks. */
    self->cls_columns = self->fused && pd != LOOM_DTYPE_F32 && LOOM_HAS(k, loom_kernels_api, classifier_columns) &&
                        !(env_cls && strcmp(env_cls, "rows") == 0);
    /* GELU on fch as kept, one pass (ABI 1.9); LOOM_GPT2_GELU=unfused takes the f32 passes, for
     * comparisons and benchmarks (the same bits). */
    const char *env_gelu = getenv("LOOM_GPT2_GELU");
    self->gelu_cast = LOOM_HAS(k, loom_kernels_api, gelu_backward_cast) && k->gelu_forward_cast &&
                      !(env_gelu && strcmp(env_gelu, "unfused") == 0);
    self->param_dtype = pd;
    self->compute_dtype = cd;
    self->mixed = mixed;
    const gpt2_layout y = layout(self, mixed, B, T);
    const int64_t R = y.R, N = B * T;
    /* The mixed-precision scratch after the activations: free for the step too. */
    const int64_t mixed_floats = round_up((int64_t)(gpt2_mixed_scratch_bytes(self, N) / sizeof(float)));
    const int64_t total = y.total + mixed_floats;

    /* A second bind replaces the first; until it succeeds the model is unbound. */
    api->free_memory(self->host, self->activations);
    api->free_memory(self->host, self->head_memory);
    self->head_memory = NULL;
    self->activations = NULL;
    self->activation_bytes = 0;
    self->k = NULL;
    self->fwd_B = 0;
    if (!self->layers) {
        self->layers = api->alloc(self->host, (size_t)self->L * sizeof *self->layers, 0, LOOM_DEVICE_CPU, 0);
        if (!self->layers) return api->fail(self->host, LOOM_E_NOMEM, "out of memory");
    }
    float *p = api->alloc(self->host, (size_t)total * sizeof(float), 64, binding->device, binding->device_index);
    if (!p)
        return api->fail(self->host, LOOM_E_NOMEM,
                         "out of memory for activations (%lld bytes: batch %lld x %lld tokens)",
                         (long long)(total * (int64_t)sizeof(float)), (long long)B, (long long)T);
    self->activations = p;
    self->activation_bytes = (size_t)total * sizeof(float);

    const int64_t C = self->C, F = self->F, V = self->V;
#define TAKE(n) (p += round_up(n), p - round_up(n))
    self->encoded = TAKE(N * C);
    for (int64_t l = 0; l < self->L; l++) {
        gpt2_layer_acts *a = &self->layers[l];
        a->residual3 = TAKE(N * C); /* every block's output: the next one's input */
    }
    float *shared = y.shared ? TAKE(y.shared) : NULL;
    for (int64_t l = 0; l < y.layer_sets; l++) {
        gpt2_layer_acts *a = &self->layers[l];
        a->ln1 = TAKE(input_floats(mixed, N * C));
        a->ln1_mean = TAKE(N);
        a->ln1_rstd = TAKE(N);
        a->qkv = TAKE(y.qkv);
        a->atty = TAKE(input_floats(mixed, N * C));
        a->att = TAKE(y.att);
        a->residual2 = TAKE(N * C);
        a->ln2 = TAKE(input_floats(mixed, N * C));
        a->ln2_mean = TAKE(N);
        a->ln2_rstd = TAKE(N);
        a->fch = TAKE(input_floats(mixed, N * F));
        a->fch_gelu = shared ? shared : TAKE(N * F);
    }
    for (int64_t l = y.layer_sets; l < self->L; l++) { /* recomputing: one set for all blocks */
        float *residual3 = self->layers[l].residual3;
        self->layers[l] = self->layers[0];
        self->layers[l].residual3 = residual3;
    }
    self->lnf = TAKE(input_floats(mixed, N * C));
    self->lnf_mean = TAKE(N);
    self->lnf_rstd = TAKE(N);
    self->losses = TAKE(N);
    self->dres = TAKE(N * C);
    self->dln = TAKE(N * C);
    float *region = TAKE(y.region);
    self->dA = region;
    self->dB = region + round_up(N * max_i64(F, 3 * C));
    self->cls_scratch = region;
    self->cls_chunk = min_i64(N, GPT2_CLASSIFIER_ROWS);
    self->cls_scratch_bytes = (size_t)y.region * sizeof(float);
    self->logits = y.logits ? TAKE(y.logits) : NULL;
    self->wte_cd = y.wte_cd ? TAKE(y.wte_cd) : NULL;
    self->dwte32 = y.dwte32 ? TAKE(y.dwte32) : NULL;
    self->cls_lse = y.lse ? TAKE(y.lse) : NULL;
    float *mixed_scratch = mixed_floats ? TAKE(mixed_floats) : NULL;
#undef TAKE
    /* Unfused: logits_ext starts inside `region` (R * V <= its size); fused: set when a call
     * needs the logits (head_buffer). */
    self->logits_ext = self->logits ? self->logits - R * V : NULL;
    self->ce_chunk = R;
    if (p != (float *)self->activations + total)
        return api->fail(self->host, LOOM_E_INTERNAL, "activation layout does not add up");

    self->params = binding->params;
    self->source = LOOM_HAS(binding, loom_model_binding, param_source) ? binding->param_source : NULL;
    self->param_size = loom_dtype_size(pd);
    self->k = k;
    loom_status st = gpt2_mixed_bind(self, N, mixed_scratch);
    if (st != LOOM_OK) {
        self->k = NULL;
        return st;
    }
    self->activation_bytes += self->mixed_state.bytes;
    self->max_batch = B;
    self->max_T = T;
    return LOOM_OK;
}

static size_t gpt2_activation_bytes(const loom_model *self) { return self->activation_bytes; }

/* Every activation is rewritten by the next forward before it is read: between a backward and
 * the next forward the whole buffer is free for the host's optimizer step. */
static void *gpt2_step_scratch(loom_model *self, size_t *bytes)
{
    *bytes = self->activations ? (size_t)(self->activation_bytes - self->mixed_state.bytes) : 0;
    return self->activations;
}

static loom_status gpt2_output_shape(const loom_model *self, int64_t *out_shape, uint32_t *ndim)
{
    return model_token_output_shape(self->host, self->api, self->max_T, self->P, self->V, out_shape, ndim);
}

/* ---- forward ------------------------------------------------------------------------- */

/* Check the batch: I32 inputs [B, T] (and labels [B, T] when given) on the CPU, within the
 * bound sizes, token ids in [0, V), labels in [0, V) or -100 (B * T reads: nothing next to a
 * step). Sets *B and *T. */
static loom_status check_batch(loom_model *self, const loom_batch *batch, int64_t *B_out, int64_t *T_out)
{
    const loom_host_api *api = self->api;
    loom_status st = loom_model_check_batch(self->host, api, self->k != NULL, batch, self->max_batch);
    if (st != LOOM_OK) return st;
    /* Padded pair data (JSON lines of input_ids and labels): this model neither masks padding
     * nor shifts labels (the token loader does), so HF's run_clm rows, labels equal to
     * input_ids, would score each token against itself with a normal-looking loss. */
    if (LOOM_HAS_FIELD(batch, loom_batch, attention_mask) && batch->attention_mask.data)
        return api->fail(self->host, LOOM_E_INVALID,
                         "pair data (JSON lines of input_ids and labels) is for encoder-decoder models: GPT-2 trains "
                         "on token shards, whose blocks the loader shifts into labels (loom tokenize --input TEXT "
                         "writes them)");
    const loom_tensor_view *x = &batch->inputs;
    if (x->dtype != LOOM_DTYPE_I32 || x->ndim != 2 || !x->data || x->device != self->k->device)
        return api->fail(self->host, LOOM_E_INVALID,
                         "inputs must be i32 token ids [batch, sequence] on the model's device (got dtype %u, ndim %u, "
                         "device %u)",
                         x->dtype, x->ndim, x->device);
    const int64_t B = batch->batch_size, T = x->shape[1];
    if (x->shape[0] != B)
        return api->fail(self->host, LOOM_E_INVALID, "inputs have %lld rows, the batch says %lld",
                         (long long)x->shape[0], (long long)B);
    if (T > self->P)
        return api->fail(self->host, LOOM_E_INVALID,
                         "sequence of %lld tokens is longer than n_positions = %lld (the model's context)",
                         (long long)T, (long long)self->P);
    if (T < 1 || T > self->max_T)
        return api->fail(self->host, LOOM_E_INVALID,
                         "sequence of %lld tokens: must be in [1, %lld] (the bound max_sequence_length)",
                         (long long)T, (long long)self->max_T);
    const loom_tensor_view *y = &batch->labels;
    if (y->data && (y->dtype != LOOM_DTYPE_I32 || y->ndim != 2 || y->shape[0] != B || y->shape[1] != T ||
                    y->device != x->device))
        return api->fail(self->host, LOOM_E_INVALID,
                         "labels must be i32 [%lld, %lld] on the device of the inputs (got dtype %u, ndim %u)",
                         (long long)B, (long long)T, y->dtype, y->ndim);
    if ((st = model_check_ids(self->host, api, x->data, B * T, T, self->V, "token id", 0)) ||
        (y->data && (st = model_check_ids(self->host, api, y->data, B * T, T, self->V, "label", 1))))
        return st;
    *B_out = B;
    *T_out = T;
    return LOOM_OK;
}

/* Check a [B, >= T, V] f32 view of per-position outputs (or their gradient); *stride gets the
 * rows per batch entry (its shape[1]). */
static loom_status check_outputs(loom_model *self, const loom_tensor_view *v, const char *what, int64_t B,
                                 int64_t T, int64_t *stride)
{
    if (v->dtype != LOOM_DTYPE_F32 || v->ndim != 3 || !v->data || v->device != LOOM_DEVICE_CPU ||
        v->shape[0] != B || v->shape[1] < T || v->shape[2] != self->V)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "%s must be f32 [%lld, >= %lld, %lld] on the CPU (batch, positions, vocab)", what,
                               (long long)B, (long long)T, (long long)self->V);
    *stride = v->shape[1];
    return LOOM_OK;
}

/* The dtype of the kept qkv: the tiled attention reads 16 bits, the stored one f32. */
uint32_t gpt2_qkv_dtype(const loom_model *self)
{
    return self->mixed && self->flash ? self->compute_dtype : LOOM_DTYPE_F32;
}

/* A mixed run's GELU, from the kept 16-bit fch into the shared 16-bit fch_gelu (the c_proj
 * product's input): in one pass where the table has gelu_forward_cast (ABI 1.9), else through
 * dB (fch widened) and dA (its GELU), which it clobbers. Forward and backward call it on the
 * same bits, so backward's fch_gelu is forward's. */
static void mixed_gelu(loom_model *self, const gpt2_layer_acts *a, int64_t N)
{
    const int64_t n = N * self->F;
    if (self->gelu_cast) {
        self->k->gelu_forward_cast(a->fch_gelu, self->compute_dtype, a->fch, self->compute_dtype, n);
        return;
    }
    self->k->convert(self->dB, LOOM_DTYPE_F32, a->fch, self->compute_dtype, n);
    self->k->gelu_forward(self->dA, self->dB, n);
    gpt2_keep(self, a->fch_gelu, self->dA, n);
}

/* Block l's layernorm `which` (GPT2_LN1_W or GPT2_LN2_W) of x into its kept output (a mixed
 * run: through f32 `scratch`, keeping the 16-bit cast) and statistics; returns the output. */
static const void *block_layernorm(loom_model *self, int64_t l, int which, const float *x, float *scratch, int64_t N)
{
    gpt2_layer_acts *a = &self->layers[l];
    const int first = which == GPT2_LN1_W;
    float *kept = first ? a->ln1 : a->ln2, *out = self->mixed ? scratch : kept;
    self->k->layernorm_forward(out, first ? a->ln1_mean : a->ln2_mean, first ? a->ln1_rstd : a->ln2_rstd, x,
                               gpt2_lp(self, l, which), gpt2_lp(self, l, which + 1), N, self->C, self->eps);
    return gpt2_keep(self, kept, out, N * self->C);
}

/* Block l's forward from `residual` (its input) into its activations and residual3. A product's
 * input (ln1, atty, ln2, fch_gelu) is kept in the dtype the product reads: a mixed run makes it
 * in f32 in dA or dB (free outside a block's backward) and keeps the 16-bit cast only, and so
 * for qkv (tiled attention) and fch (gpt2.h). Deterministic: gradient checkpointing runs it
 * again in backward and gets the same bits. */
static void block_forward(loom_model *self, int64_t l, const float *residual, int64_t B, int64_t T)
{
    const loom_kernels_api *k = self->k;
    const int64_t C = self->C, F = self->F, NH = self->NH, N = B * T;
    gpt2_layer_acts *a = &self->layers[l];
    float *scratch = self->dA;
#define OUT(kept) (self->mixed ? scratch : (kept))
    const void *ln1 = block_layernorm(self, l, GPT2_LN1_W, residual, scratch, N);
    const int qkv16 = gpt2_qkv_dtype(self) != LOOM_DTYPE_F32;
    gpt2_mm_forward(self, qkv16 ? scratch : a->qkv, ln1, gpt2_layer_tensor(l, GPT2_QKV_W),
                    gpt2_layer_tensor(l, GPT2_QKV_B), N, C, 3 * C);
    if (qkv16) gpt2_keep(self, a->qkv, scratch, 3 * N * C);
    const void *atty;
    const float pa = drop_p(self, self->attn_pdrop);
    if (self->flash) {
        float *out = self->mixed ? self->dB : a->atty;
        if (pa > 0.0f)
            k->attention_flash_forward_dropout(out, a->att, a->qkv, gpt2_qkv_dtype(self), B, T, C, NH, pa,
                                               site_seed(self, l, GPT2_SITE_ATTN));
        else
            k->attention_flash_forward(out, a->att, a->qkv, gpt2_qkv_dtype(self), B, T, C, NH);
        atty = gpt2_keep(self, a->atty, out, N * C);
    } else {
        k->attention_forward(OUT(a->atty), a->att, a->qkv, B, T, C, NH);
        atty = gpt2_keep(self, a->atty, OUT(a->atty), N * C);
    }
    gpt2_mm_forward(self, a->residual2, atty, gpt2_layer_tensor(l, GPT2_ATTPROJ_W),
                    gpt2_layer_tensor(l, GPT2_ATTPROJ_B), N, C, C);
    dropout_apply(a->residual2, N * C, drop_p(self, self->resid_pdrop), site_seed(self, l, GPT2_SITE_ATTN_RESID));
    k->add(a->residual2, a->residual2, residual, N * C);
    const void *ln2 = block_layernorm(self, l, GPT2_LN2_W, a->residual2, scratch, N);
    gpt2_mm_forward(self, self->mixed ? self->dB : a->fch, ln2, gpt2_layer_tensor(l, GPT2_FC_W),
                    gpt2_layer_tensor(l, GPT2_FC_B), N, C, F);
    if (self->mixed) {
        gpt2_keep(self, a->fch, self->dB, N * F);
        mixed_gelu(self, a, N);
    } else {
        k->gelu_forward(a->fch_gelu, a->fch, N * F);
    }
    gpt2_mm_forward(self, a->residual3, a->fch_gelu, gpt2_layer_tensor(l, GPT2_FCPROJ_W),
                    gpt2_layer_tensor(l, GPT2_FCPROJ_B), N, F, C);
    dropout_apply(a->residual3, N * C, drop_p(self, self->resid_pdrop), site_seed(self, l, GPT2_SITE_MLP_RESID));
    k->add(a->residual3, a->residual3, a->residual2, N * C);
#undef OUT
}

/* NEFTune (HF's neftune_post_forward_hook on get_input_embeddings(), which is wte): a training
 * forward's embeddings are (wte[token] + noise) + wpe[t], in HF's order, the noise uniform in
 * +-alpha / sqrt(T C) for this batch's T and drawn from the batch's seed (model_common.h). It
 * does not depend on the weights, so backward is unchanged: it reads the noisy activations the
 * forward kept (gradient checkpointing recomputes from `encoded`, noise included). A loop on
 * the host like embd_pdrop's dropout: a bound device's memory is CPU-addressable. */
static void embed_neftune(loom_model *self, float *out, const int32_t *tokens, int64_t B, int64_t T)
{
    const int64_t C = self->C;
    const float mag = model_neftune_magnitude(self->neftune_alpha, T, C);
    const uint64_t seed = model_neftune_seed(self->fwd_seed, 0);
    const float *wpe = gpt2_f32(self, GPT2_WPE);
    for (int64_t n = 0; n < B * T; n++) {
        float *row = out + n * C;
        const float *pos = wpe + (n % T) * C;
        const float *tok = row;
        if (self->param_dtype == LOOM_DTYPE_F32)
            tok = gpt2_f32(self, GPT2_WTE) + (int64_t)tokens[n] * C;
        else
            self->k->convert(row, LOOM_DTYPE_F32,
                             (const char *)gpt2_raw(self, GPT2_WTE) + (size_t)(tokens[n] * C) * self->param_size,
                             self->param_dtype, C);
        for (int64_t c = 0; c < C; c++)
            row[c] = (tok[c] + model_neftune_noise(seed, (uint64_t)(n * C + c), mag)) + pos[c];
    }
}

/* ---- parameters under ZeRO-3 (loom_param_source, ABI 1.12) ------------------------------
 * The embeddings (wte and wpe, adjacent) are acquired when a forward starts and kept until its
 * backward ends (the tied head reads wte in both); each block and ln_f only while it runs, in
 * forward and again in backward (recomputing a checkpointed block included). Without a source
 * the parameters are always whole and these calls do nothing. */

static int64_t emb_end(const loom_model *self)
{
    return (self->V + self->P) * self->C;
}

/* [begin, end) current in params, and in a mixed run its f32 copies staged from it. */
static loom_status params_use(loom_model *self, int64_t begin, int64_t end)
{
    if (!self->source) return LOOM_OK;
    loom_status st = model_param_range(self->source, begin, end, 0);
    if (st == LOOM_OK) gpt2_mixed_stage_range(self, begin, end);
    return st;
}
static loom_status params_done(loom_model *self, int64_t begin, int64_t end)
{
    return model_param_range(self->source, begin, end, 1);
}
static loom_status block_use(loom_model *self, int64_t l)
{
    const int64_t begin = gpt2_layer_offset(self, l);
    return params_use(self, begin, begin + self->layer_size);
}
static loom_status block_done(loom_model *self, int64_t l)
{
    const int64_t begin = gpt2_layer_offset(self, l);
    return params_done(self, begin, begin + self->layer_size);
}
/* `st` unless it is LOOM_OK, else how releasing the embeddings went: a failed call still gives
 * back what it holds. */
static loom_status emb_done(loom_model *self, loom_status st)
{
    loom_status released = params_done(self, 0, emb_end(self));
    return st ? st : released;
}

/* Embeddings, the blocks and ln_f into *lnf_out, ln_f's output as the head reads it. With a
 * param source the embeddings stay acquired when this returns LOOM_OK (emb_done gives them back). */
static loom_status forward_trunk(loom_model *self, const int32_t *tokens, int64_t B, int64_t T, const void **lnf_out)
{
    const int64_t C = self->C, N = B * T;
    loom_status st;
    if (self->source) {
        if ((st = params_use(self, 0, emb_end(self)))) return st;
    } else {
        gpt2_mixed_stage(self); /* the optimizer changed the parameters since the last forward */
    }
    if (self->wte_cd) /* the fused classifier's weight in compute_dtype, once per step */
        self->k->convert(self->wte_cd, self->compute_dtype, gpt2_raw(self, GPT2_WTE), self->param_dtype, self->V * C);
    if (self->fwd_training && self->neftune_alpha > 0.0)
        embed_neftune(self, self->encoded, tokens, B, T);
    else
        gpt2_embed_forward(self, self->encoded, tokens, 0, B, T);
    dropout_apply(self->encoded, N * C, drop_p(self, self->embd_pdrop), site_seed(self, -1, GPT2_SITE_EMBD));
    const float *residual = self->encoded;
    for (int64_t l = 0; l < self->L; l++) {
        if ((st = block_use(self, l))) return emb_done(self, st);
        block_forward(self, l, residual, B, T);
        if ((st = block_done(self, l))) return emb_done(self, st);
        residual = self->layers[l].residual3;
    }
    const int64_t lnf_begin = gpt2_lnf_offset(self);
    if ((st = params_use(self, lnf_begin, lnf_begin + 2 * C))) return emb_done(self, st);
    const float *lnf_w = gpt2_f32(self, gpt2_lnf_tensor(self));
    float *out = self->mixed ? self->dA : self->lnf;
    self->k->layernorm_forward(out, self->lnf_mean, self->lnf_rstd, residual, lnf_w, lnf_w + C, N, C, self->eps);
    *lnf_out = gpt2_keep(self, self->lnf, out, N * C);
    if ((st = params_done(self, lnf_begin, lnf_begin + 2 * C))) return emb_done(self, st);
    return LOOM_OK;
}

/* The fused classifier's operands: wte and the ln_f output in the dtype the head computes in. */
static const void *head_weight(const loom_model *self)
{
    if (!self->mixed) return gpt2_f32(self, GPT2_WTE);
    return self->wte_cd ? self->wte_cd : gpt2_raw(self, GPT2_WTE);
}
static uint32_t head_dtype(const loom_model *self) { return self->mixed ? self->compute_dtype : LOOM_DTYPE_F32; }

/* The loss kernels, with label smoothing when the run asks for it (the smoothed members are
 * ABI 1.4; bind checked them; without smoothing the 1.0-1.3 members, as before). */
static void run_classifier(const loom_model *self, float *dinp, void *dweight, const void *lnf, const int32_t *labels,
                           float scale, int64_t N)
{
    const loom_kernels_api *k = self->k;
    if (self->cls_columns) /* dweight: the param_dtype gradient */
        k->classifier_columns(self->losses, self->cls_lse, dinp, dweight, self->param_dtype, self->cls_scratch,
                              self->cls_scratch_bytes, lnf, head_weight(self), head_dtype(self), labels, scale,
                              self->smoothing, N, self->C, self->V);
    else if (self->smoothing > 0.0f)
        k->classifier_smoothed(self->losses, dinp, dweight, self->cls_scratch, lnf, head_weight(self), head_dtype(self),
                               labels, scale, self->smoothing, N, self->C, self->V, self->cls_chunk);
    else
        k->classifier(self->losses, dinp, dweight, self->cls_scratch, lnf, head_weight(self), head_dtype(self), labels,
                      scale, N, self->C, self->V, self->cls_chunk);
}
static void ce_backward_cast(const loom_model *self, void *dlogits, const float *probs, const int32_t *labels,
                             float scale, int64_t rows)
{
    if (self->smoothing > 0.0f)
        self->k->softmax_cross_entropy_smoothed_backward_cast(dlogits, self->compute_dtype, probs, labels, scale,
                                                              self->smoothing, rows, self->V);
    else
        self->k->softmax_cross_entropy_backward_cast(dlogits, self->compute_dtype, probs, labels, scale, rows, self->V);
}

/* The unfused head's [R + N, V] buffer (logits_ext): inside the activations when the
 * classifier is not fused; otherwise allocated once, by the first call that needs all logits
 * (outputs for a custom loss, backward_outputs). */
static loom_status head_buffer(loom_model *self)
{
    if (self->logits_ext) return LOOM_OK;
    const int64_t V = self->V, R = self->ce_chunk, N = self->max_batch * self->max_T;
    const size_t bytes = (size_t)((R + N) * V) * sizeof(float);
    self->head_memory = self->api->alloc(self->host, bytes, 64, LOOM_DEVICE_CPU, 0);
    if (!self->head_memory)
        return self->api->fail(self->host, LOOM_E_NOMEM, "out of memory for the logits (%zu bytes)", bytes);
    self->logits_ext = self->head_memory;
    self->logits = self->logits_ext + R * V;
    return LOOM_OK;
}

static void sum_losses(const loom_model *self, const int32_t *labels, int64_t N, loom_forward_result *result)
{
    double loss_sum = 0.0;
    int64_t n_targets = 0;
    for (int64_t i = 0; labels && i < N; i++) {
        if (labels[i] == GPT2_IGNORE_INDEX) continue;
        loss_sum += self->losses[i];
        n_targets++;
    }
    if (result) {
        result->loss_sum = loss_sum;
        result->n_targets = n_targets;
        result->n_correct = -1;
    }
}

static loom_status gpt2_forward(loom_model *self, const loom_batch *batch, loom_forward_result *result,
                                loom_tensor_view *outputs)
{
    int64_t B = 0, T = 0, stride = 0;
    loom_status st = check_batch(self, batch, &B, &T);
    if (st) return st;
    if (outputs && (st = check_outputs(self, outputs, "outputs", B, T, &stride))) return st;
    if ((!self->fused || outputs) && (st = head_buffer(self))) return st;
    self->fwd_B = 0;
    self->fwd_has_probs = 0;
    self->fwd_fused = 0;
    set_dropout(self, batch);
    const loom_kernels_api *k = self->k;
    const int64_t V = self->V, N = B * T;
    const int32_t *tokens = batch->inputs.data, *labels = batch->labels.data;
    const void *lnf = NULL;
    if ((st = forward_trunk(self, tokens, B, T, &lnf))) return st;

    if (self->fused && !outputs) {
        /* The loss alone, chunk by chunk; backward runs the classifier again with the seed
         * (train_step runs it once). */
        if (labels) {
            run_classifier(self, NULL, NULL, lnf, labels, 0.0f, N);
            self->fwd_has_probs = 1;
        }
        self->fwd_fused = 1;
    } else {
        /* The tied LM head: logits[N, V] = lnf @ wte^T, wte being [V, C] = linear's [OC, IC]. */
        gpt2_head_forward(self, self->logits, lnf, N);
        if (outputs) { /* before the softmax overwrites the logits */
            float *out = outputs->data;
            for (int64_t b = 0; b < B; b++) {
                memcpy(out + b * stride * V, self->logits + b * T * V, (size_t)(T * V) * sizeof(float));
                if (stride > T) memset(out + (b * stride + T) * V, 0, (size_t)((stride - T) * V) * sizeof(float));
            }
        }
        if (labels) {
            if (self->smoothing > 0.0f)
                k->softmax_cross_entropy_smoothed_forward(self->logits, self->losses, self->logits, labels,
                                                          self->smoothing, N, V);
            else
                k->softmax_cross_entropy_forward(self->logits, self->losses, self->logits, labels, N, V);
            self->fwd_has_probs = 1;
        }
    }
    sum_losses(self, labels, N, result);
    self->fwd_B = B;
    self->fwd_T = T;
    return emb_done(self, LOOM_OK); /* a backward acquires them again */
}

/* ---- backward ------------------------------------------------------------------------ */

static loom_status acquire(loom_model *self, const loom_grad_sink *sink, int64_t begin, int64_t end, void **g)
{
    void *memory = NULL;
    const loom_status st = sink->acquire(sink->context, begin, end, &memory);
    if (st) return st;
    if (!memory)
        return self->api->fail(self->host, LOOM_E_INTERNAL, "grad sink gave no memory for [%lld, %lld)",
                               (long long)begin, (long long)end);
    *g = memory;
    return LOOM_OK;
}

/* wte gets gradients from the LM head first and from the encoder at the very end: its range
 * (with wpe's, adjacent: emb_end) is acquired before the head and released last. */

/* A two-part sink (ABI 1.4; gpt2_rows.c): wte alone is acquired before the head and released
 * as soon as the head's part is in, and the embedding rows go to acquire_rows at the end. */
static int two_part(const loom_grad_sink *sink)
{
    return LOOM_HAS(sink, loom_grad_sink, acquire_rows) && sink->release_rows;
}
static int64_t head_end(const loom_model *self, const loom_grad_sink *sink)
{
    return two_part(sink) ? self->V * self->C : emb_end(self);
}
static loom_status head_done(const loom_model *self, const loom_grad_sink *sink)
{
    return two_part(sink) ? sink->release(sink->context, 0, self->V * self->C) : LOOM_OK;
}

/* Everything after d(loss)/d(ln_f output) = dln, with the embeddings' range acquired (demb);
 * through a two-part sink wte's head part is already released and demb is not used. */
static loom_status backward_trunk(loom_model *self, const loom_batch *batch, void *demb, const loom_grad_sink *sink)
{
    const loom_kernels_api *k = self->k;
    const int64_t B = self->fwd_B, T = self->fwd_T, N = B * T;
    const int64_t C = self->C, F = self->F, V = self->V, NH = self->NH;
    const int32_t *tokens = batch->inputs.data;
    float *dres = self->dres, *dln = self->dln, *dA = self->dA, *dB = self->dB;
    void *dwte = demb, *dwpe = (char *)demb + (size_t)(V * C) * self->param_size;
    loom_status st;

    const int64_t lnf_begin = gpt2_lnf_offset(self);
    void *lnf_memory = NULL;
    if ((st = params_use(self, lnf_begin, lnf_begin + 2 * C))) return st;
    if ((st = acquire(self, sink, lnf_begin, lnf_begin + 2 * C, &lnf_memory))) return st;
    memset(dres, 0, (size_t)(N * C) * sizeof *dres);
    const float *lnf_w = gpt2_f32(self, gpt2_lnf_tensor(self));
    float *dlnf_w = gpt2_grad_begin(self, lnf_memory, 2 * C);
    gpt2_grad_zero(self, dlnf_w, 2 * C);
    k->layernorm_backward(dres, dlnf_w, dlnf_w + C, dln, self->layers[self->L - 1].residual3, lnf_w,
                          self->lnf_mean, self->lnf_rstd, N, C);
    gpt2_grad_end(self, lnf_memory, 2 * C);
    if ((st = sink->release(sink->context, lnf_begin, lnf_begin + 2 * C))) return st;
    if ((st = params_done(self, lnf_begin, lnf_begin + 2 * C))) return st;

    for (int64_t l = self->L - 1; l >= 0; l--) {
        const gpt2_layer_acts *a = &self->layers[l];
        const float *residual = l > 0 ? self->layers[l - 1].residual3 : self->encoded;
        if ((st = block_use(self, l))) return st;
        /* Gradient checkpointing: the blocks share one set of activations, which the forward
         * left holding the last block's; the others are recomputed from their saved input. */
        if (self->recompute && l < self->L - 1) block_forward(self, l, residual, B, T);
        const int64_t begin = gpt2_layer_offset(self, l), end = begin + self->layer_size;
        void *memory = NULL;
        if ((st = acquire(self, sink, begin, end, &memory))) return st;
        float *g = gpt2_grad_begin(self, memory, end - begin);
        /* Biases and layernorm parameters are accumulated into; the weight products write
         * theirs whole. */
        for (int which = 0; which < GPT2_LAYER_TENSORS; which++) {
            const size_t i = gpt2_layer_tensor(l, which);
            if (!gpt2_is_matrix(self, i))
                gpt2_grad_zero(self, g + (self->tensors[i].offset - begin), self->tensors[i].size);
        }
#define DP(which) (g + (self->tensors[2 + l * GPT2_LAYER_TENSORS + (which)].offset - begin))
#define P(which) gpt2_lp(self, l, which)
#define W(which) gpt2_layer_tensor(l, which)
        /* MLP. dres is d(residual3) here, which is also d(c_proj output). */
        if (self->mixed) mixed_gelu(self, a, N); /* fch_gelu again, as forward made it */
        /* dln is free until the MLP's first product writes it: the masked dres, with dropout. */
        gpt2_mm_backward(self, dA, DP(GPT2_FCPROJ_W), DP(GPT2_FCPROJ_B),
                         branch_grad(self, dres, dln, N * C, l, GPT2_SITE_MLP_RESID), a->fch_gelu, W(GPT2_FCPROJ_W), N,
                         F, C); /* dA = d fch_gelu */
        if (self->gelu_cast) {  /* dB written from fch as kept: no zeroing, no f32 copy */
            k->gelu_backward_cast(dB, a->fch, self->mixed ? self->compute_dtype : LOOM_DTYPE_F32, dA, N * F);
        } else if (self->mixed) { /* GELU reads f32: fch widened half the rows at a time into
                                     the shared buffer (free now), not a third [N, F] f32 buffer */
            memset(dB, 0, (size_t)(N * F) * sizeof *dB);
            float *half = a->fch_gelu;
            const size_t cs = loom_dtype_size(self->compute_dtype);
            for (int64_t r0 = 0, rows = (N + 1) / 2; r0 < N; r0 += rows) {
                const int64_t n = min_i64(rows, N - r0) * F;
                k->convert(half, LOOM_DTYPE_F32, (const char *)a->fch + (size_t)(r0 * F) * cs, self->compute_dtype, n);
                k->gelu_backward(dB + r0 * F, half, dA + r0 * F, n);
            }
        } else {
            memset(dB, 0, (size_t)(N * F) * sizeof *dB);
            k->gelu_backward(dB, a->fch, dA, N * F);
        }
        gpt2_mm_backward(self, dln, DP(GPT2_FC_W), DP(GPT2_FC_B), dB, a->ln2, W(GPT2_FC_W), N, C, F); /* d ln2 */
        k->layernorm_backward(dres, DP(GPT2_LN2_W), DP(GPT2_LN2_B), dln, a->residual2, P(GPT2_LN2_W), a->ln2_mean,
                              a->ln2_rstd, N, C);
        /* Attention. dres is now d(residual2), also d(attn.c_proj output). */
        gpt2_mm_backward(self, dB, DP(GPT2_ATTPROJ_W), DP(GPT2_ATTPROJ_B),
                         branch_grad(self, dres, dln, N * C, l, GPT2_SITE_ATTN_RESID), a->atty, W(GPT2_ATTPROJ_W), N,
                         C, C); /* dB = d atty */
        memset(dA, 0, (size_t)(N * 3 * C) * sizeof *dA);
        const float pa = drop_p(self, self->attn_pdrop);
        /* The tiled backward reads the output in f32: a mixed run's kept 16 bits widened into
         * dln, free until the qkv product below writes it. */
        const float *out = a->atty;
        if (self->flash && self->mixed) {
            k->convert(dln, LOOM_DTYPE_F32, a->atty, self->compute_dtype, N * C);
            out = dln;
        }
        if (self->flash && pa > 0.0f) /* d qkv */
            k->attention_flash_backward_dropout(dA, dB, a->qkv, gpt2_qkv_dtype(self), out, a->att, B, T, C, NH, pa,
                                                site_seed(self, l, GPT2_SITE_ATTN));
        else if (self->flash)
            k->attention_flash_backward(dA, dB, a->qkv, gpt2_qkv_dtype(self), out, a->att, B, T, C, NH);
        else
            k->attention_backward(dA, dB, a->qkv, a->att, B, T, C, NH);
        gpt2_mm_backward(self, dln, DP(GPT2_QKV_W), DP(GPT2_QKV_B), dA, a->ln1, W(GPT2_QKV_W), N, C,
                         3 * C); /* d ln1 */
        k->layernorm_backward(dres, DP(GPT2_LN1_W), DP(GPT2_LN1_B), dln, residual, P(GPT2_LN1_W), a->ln1_mean,
                              a->ln1_rstd, N, C);
#undef DP
#undef P
#undef W
        gpt2_grad_end(self, memory, end - begin);
        /* This block's gradients are final: hand them over before the next block's, so the
         * sink's communication overlaps the rest of backward. */
        if ((st = sink->release(sink->context, begin, end))) return st;
        if ((st = block_done(self, l))) return st;
    }
    dropout_apply(dres, N * C, drop_p(self, self->embd_pdrop), site_seed(self, -1, GPT2_SITE_EMBD));
    if (two_part(sink)) return gpt2_embed_backward_rows(self, sink, dres, tokens, B, T);
    gpt2_embed_backward(self, dwte, dwpe, dres, tokens, B, T);
    return sink->release(sink->context, 0, emb_end(self));
}

/* Everything after d(loss)/d(logits) = dlogits [N, V] (row-major, contiguous; f32, or
 * compute_dtype in a mixed-precision run). */
static loom_status backward_from_logits(loom_model *self, const loom_batch *batch, const void *dlogits,
                                        const loom_grad_sink *sink)
{
    void *demb = NULL;
    loom_status st = params_use(self, 0, emb_end(self));
    if (st) return st;
    if ((st = acquire(self, sink, 0, head_end(self, sink), &demb))) return emb_done(self, st);
    gpt2_head_backward(self, self->dln, demb, dlogits, self->lnf, self->fwd_B * self->fwd_T);
    if ((st = head_done(self, sink))) return emb_done(self, st);
    return emb_done(self, backward_trunk(self, batch, demb, sink));
}

/* The fused classifier with gradients: losses, dln = dlogits wte (written) and wte's head
 * gradient added into dwte (the sink's param_dtype memory; through dwte32 and one rounding when
 * that is 16-bit, or rounded into slab by slab by the classifier by columns). has_lse: a
 * forward of this batch left the rows' log-sum-exp the columns' backward reads; train_step runs
 * that forward here. */
static void head_gradients(loom_model *self, const void *lnf, const int32_t *labels, float seed, int64_t N, void *dwte,
                           int has_lse)
{
    const int64_t C = self->C, V = self->V;
    memset(self->dln, 0, (size_t)(N * C) * sizeof(float));
    if (self->cls_columns) {
        if (!has_lse) run_classifier(self, NULL, NULL, lnf, labels, 0.0f, N);
        run_classifier(self, self->dln, dwte, lnf, labels, seed, N);
        return;
    }
    float *g = self->dwte32 ? self->dwte32 : dwte;
    if (self->dwte32) memset(g, 0, (size_t)(V * C) * sizeof(float));
    run_classifier(self, self->dln, g, lnf, labels, seed, N);
    if (self->dwte32) self->k->accumulate_f32(dwte, self->param_dtype, g, V * C);
}

/* The fused classifier's backward: dln = dlogits wte and dwte += dlogits^T lnf, chunk by chunk
 * (recomputing the logits), then the rest. The loss is recomputed too (the same values). */
static loom_status backward_fused(loom_model *self, const loom_batch *batch, float seed, const loom_grad_sink *sink)
{
    const int64_t N = self->fwd_B * self->fwd_T;
    void *demb = NULL;
    loom_status st = params_use(self, 0, emb_end(self));
    if (st) return st;
    if ((st = acquire(self, sink, 0, head_end(self, sink), &demb))) return emb_done(self, st);
    head_gradients(self, self->lnf, batch->labels.data, seed, N, demb, 1);
    if ((st = head_done(self, sink))) return emb_done(self, st);
    return emb_done(self, backward_trunk(self, batch, demb, sink));
}

static loom_status check_sink(loom_model *self, const loom_grad_sink *sink)
{
    if (!sink || !LOOM_HAS_FIELD(sink, loom_grad_sink, release) || !sink->acquire || !sink->release)
        return self->api->fail(self->host, LOOM_E_INVALID, "backward: no gradient sink");
    return LOOM_OK;
}

/* Mixed precision: dlogits in compute_dtype, made from the f32 probabilities into the same
 * buffer from its start. 16-bit rows [r0, r0 + rows) take the bytes of f32 rows [r0 / 2,
 * (r0 + rows) / 2), all consumed already when rows <= r0; so the chunks grow with r0 (each call
 * reads and writes disjoint memory), and the first one goes through logits_ext's first rows,
 * free scratch, before it is copied into place. */
static void mixed_dlogits(loom_model *self, const int32_t *labels, float seed, int64_t N)
{
    const int64_t V = self->V;
    const size_t cs = loom_dtype_size(self->compute_dtype);
    char *out = (char *)self->logits;
    const int64_t first = min_i64(N, max_i64(1, min_i64(2 * self->ce_chunk, 64)));
    ce_backward_cast(self, self->logits_ext, self->logits, labels, seed, first);
    memcpy(out, self->logits_ext, (size_t)(first * V) * cs);
    for (int64_t r0 = first; r0 < N;) {
        const int64_t rows = min_i64(N - r0, r0);
        ce_backward_cast(self, out + (size_t)(r0 * V) * cs, self->logits + r0 * V, labels + r0, seed, rows);
        r0 += rows;
    }
}

static loom_status gpt2_backward(loom_model *self, const loom_batch *batch, float seed, const loom_grad_sink *sink)
{
    int64_t B = 0, T = 0;
    loom_status st = check_batch(self, batch, &B, &T);
    if (st) return st;
    const int32_t *labels = batch->labels.data;
    if (!labels || !self->fwd_has_probs || self->fwd_B != B || self->fwd_T != T)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "backward needs a forward with labels on the same batch first");
    if ((st = check_sink(self, sink))) return st;
    const int64_t V = self->V, N = B * T, R = self->ce_chunk;
    if (self->fwd_fused) {
        self->fwd_has_probs = 0;
        st = backward_fused(self, batch, seed, sink);
        self->fwd_B = 0;
        return st;
    }

    /* dlogits = seed * (probs - onehot(labels)), R rows at a time, each chunk written R rows
     * before the probs it reads (rows already consumed): dlogits end in logits_ext rows
     * [0, N), with no [N, V] buffer of their own and no aliasing inside a kernel call. */
    if (self->mixed) {
        mixed_dlogits(self, labels, seed, N);
        self->fwd_has_probs = 0;
        st = backward_from_logits(self, batch, self->logits, sink);
        self->fwd_B = 0;
        return st;
    }
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        const int64_t rows = min_i64(R, N - r0);
        float *d = self->logits_ext + r0 * V;
        memset(d, 0, (size_t)(rows * V) * sizeof *d);
        if (self->smoothing > 0.0f)
            self->k->softmax_cross_entropy_smoothed_backward(d, self->logits + r0 * V, labels + r0, seed,
                                                             self->smoothing, rows, V);
        else
            self->k->softmax_cross_entropy_backward(d, self->logits + r0 * V, labels + r0, seed, rows, V);
    }
    self->fwd_has_probs = 0; /* the probabilities are gone */
    st = backward_from_logits(self, batch, self->mixed ? (const void *)self->logits : self->logits_ext, sink);
    self->fwd_B = 0;
    return st;
}

static loom_status gpt2_backward_outputs(loom_model *self, const loom_batch *batch,
                                         const loom_tensor_view *doutputs, const loom_grad_sink *sink)
{
    int64_t B = 0, T = 0, stride = 0;
    loom_status st = check_batch(self, batch, &B, &T);
    if (st) return st;
    if (self->fwd_B != B || self->fwd_T != T)
        return self->api->fail(self->host, LOOM_E_INVALID, "backward_outputs needs a forward on the same batch first");
    if (!doutputs) return self->api->fail(self->host, LOOM_E_INVALID, "backward_outputs: doutputs is NULL");
    if ((st = check_outputs(self, doutputs, "doutputs", B, T, &stride))) return st;
    if ((st = check_sink(self, sink))) return st;
    if ((st = head_buffer(self))) return st;
    const int64_t V = self->V;
    const float *dlogits = doutputs->data;
    if (self->mixed) { /* cast into the logits buffer, row by row of the batch */
        const size_t cs = loom_dtype_size(self->compute_dtype);
        for (int64_t b = 0; b < B; b++)
            self->k->convert((char *)self->logits + (size_t)(b * T * V) * cs, self->compute_dtype,
                             dlogits + b * stride * V, LOOM_DTYPE_F32, T * V);
        self->fwd_has_probs = 0;
        st = backward_from_logits(self, batch, self->logits, sink);
        self->fwd_B = 0;
        return st;
    }
    if (stride != T) { /* padded positions: gather the rows the forward had */
        for (int64_t b = 0; b < B; b++)
            memcpy(self->logits_ext + b * T * V, dlogits + b * stride * V, (size_t)(T * V) * sizeof(float));
        dlogits = self->logits_ext;
        self->fwd_has_probs = 0;
    }
    st = backward_from_logits(self, batch, dlogits, sink);
    self->fwd_B = 0;
    return st;
}

/* forward + backward with the seed known first: the fused classifier runs once, making the
 * loss, dln and wte's head gradient from each chunk of logits while it is in cache. */
static loom_status gpt2_train_step(loom_model *self, const loom_batch *batch, float seed, const loom_grad_sink *sink,
                                   loom_forward_result *result)
{
    if (!self->k || !self->fused) {
        loom_status st = gpt2_forward(self, batch, result, NULL);
        return st ? st : gpt2_backward(self, batch, seed, sink);
    }
    int64_t B = 0, T = 0;
    loom_status st = check_batch(self, batch, &B, &T);
    if (st) return st;
    const int32_t *labels = batch->labels.data;
    if (!labels) return self->api->fail(self->host, LOOM_E_INVALID, "train_step needs labels");
    if ((st = check_sink(self, sink))) return st;
    self->fwd_B = 0;
    self->fwd_has_probs = 0;
    self->fwd_fused = 0;
    set_dropout(self, batch);
    const int64_t N = B * T;
    const void *lnf = NULL;
    if ((st = forward_trunk(self, batch->inputs.data, B, T, &lnf))) return st;
    void *demb = NULL;
    if ((st = acquire(self, sink, 0, head_end(self, sink), &demb))) return emb_done(self, st);
    head_gradients(self, lnf, labels, seed, N, demb, 0);
    if ((st = head_done(self, sink))) return emb_done(self, st);
    sum_losses(self, labels, N, result);
    self->fwd_B = B;
    self->fwd_T = T;
    st = emb_done(self, backward_trunk(self, batch, demb, sink));
    self->fwd_B = 0;
    return st;
}

/* ---- descriptor ---------------------------------------------------------------------- */

/* backward holds the embeddings' range the whole time, plus ln_f's or one block's. */
static int64_t gpt2_max_grad_elements(const loom_model *self)
{
    int64_t held = self->layer_size > 2 * self->C ? self->layer_size : 2 * self->C;
    return (self->V + self->P) * self->C + held;
}

static const loom_model_vtable gpt2_vtable = {
    LOOM_HEADER_INIT(loom_model_vtable),
    .create = gpt2_create,
    .destroy = gpt2_destroy,
    .param_count = gpt2_param_count,
    .param_info = gpt2_param_info,
    .init_params = gpt2_init_params,
    .bind = gpt2_bind,
    .activation_bytes = gpt2_activation_bytes,
    .forward = gpt2_forward,
    .backward = gpt2_backward,
    .output_shape = gpt2_output_shape,
    .max_grad_elements = gpt2_max_grad_elements,
    .flags = LOOM_MODEL_PARAM_SOURCE,
    .backward_outputs = gpt2_backward_outputs,
    .decode_begin = gpt2_decode_begin,
    .decode_step = gpt2_decode_step,
    .step_scratch = gpt2_step_scratch,
    .train_step = gpt2_train_step,
};

static const loom_plugin_desc gpt2_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_MODEL,
    .name = "gpt2",
    .version = "1.0.0",
    .summary = "GPT-2 language model (HF GPT2LMHeadModel: names, shapes, init), tied LM head, KV-cache decoding",
    .vtable = &gpt2_vtable,
    .params = gpt2_param_specs,
};

LOOM_PLUGIN_EXPORT(&gpt2_desc)
