/*
 * t5.c - the "t5" model: HF's T5ForConditionalGeneration (docs/seq2seq.md#t5), forward and
 * backward on the host's kernels, over padded batches with attention masks.
 *
 *   encoder: x = dropout(shared[input_ids]); per block
 *            x += dropout(o(attention(rms(x), bias_bidirectional, key mask)));
 *            x += dropout(wo(dropout(act(wi(rms(x))))));
 *            enc = dropout(rms_final(x))
 *   decoder: y = dropout(shared[shift_right(labels)]); per block self-attention (causal bias),
 *            cross-attention on enc (no bias, the encoder's mask), feed-forward, as above;
 *            logits = lm_head(dropout(rms_final(y)) [* d_model^-0.5 when tied])
 *   loss:    softmax cross-entropy against labels (-100 ignored), summed.
 * Attention is unscaled (T5 folds 1/sqrt(d_kv) into its initialisation); every block reads the
 * relative position bias of block 0. Dropout is on only in a training forward and draws its
 * masks from the batch's dropout_seed (loom_dropout_keep), so backward recomputes them.
 *
 * Memory: bind allocates every activation once for max_batch_size x max_sequence_length on
 * both sides; nothing is allocated per step. Parameters and gradients are f32; the model
 * holds the whole gradient range during backward (the shared embedding collects gradients
 * from the LM head first and from both embeddings last).
 */
#include "model_common.h"
#include "t5.h"

#include <loom/plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define T5_ALIGN 16
static int64_t round_up(int64_t n) { return (n + T5_ALIGN - 1) / T5_ALIGN * T5_ALIGN; }
static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Dropout sites: one stream per (side, block, place). */
enum { SITE_EMBED, SITE_FINAL, SITE_SA_PROBS, SITE_SA_OUT, SITE_CA_PROBS, SITE_CA_OUT, SITE_FF_HIDDEN, SITE_FF_OUT };
static uint64_t site(const loom_model *self, int side, int64_t block, int which)
{
    return t5_site_seed(self->fwd_seed, (uint64_t)side << 40 | (uint64_t)(block + 1) << 8 | (uint64_t)which);
}
static float drop_p(const loom_model *self) { return self->fwd_training ? (float)self->dropout : 0.0f; }

/* ---- lifetime ------------------------------------------------------------------------ */

static void t5_destroy(loom_model *self)
{
    if (!self) return;
    const loom_host_api *api = self->api;
    t5_decode_free(self);
    api->free_memory(self->host, self->activations);
    t5_free_tensors(self);
    api->free_memory(self->host, self);
}

MODEL_DEFINE_CREATE(t5_create, t5_configure, t5_destroy)

/* ---- binding ------------------------------------------------------------------------- */

static int64_t block_floats(const loom_model *self, int decoder, int64_t B, int64_t T)
{
    const int64_t N = B * T, D = self->D, E = self->E, F = self->F, H = self->H;
    int64_t n = 4 * round_up(N * D) + 2 * round_up(N) + 4 * round_up(N * E) + round_up(B * H * T * T) +
                (self->gated ? 3 : 2) * round_up(N * F);
    if (decoder) n += 2 * round_up(N * D) + round_up(N) + 4 * round_up(N * E) + round_up(B * H * T * T);
    return n;
}

static float *take(float **p, int64_t n)
{
    float *r = *p;
    *p += round_up(n);
    return r;
}

static void carve_side(loom_model *self, t5_side *side, int decoder, float **p, int64_t B, int64_t T)
{
    const int64_t N = B * T, D = self->D, E = self->E, F = self->F, H = self->H;
    for (int64_t l = 0; l < side->L; l++) {
        t5_block_acts *a = &side->acts[l];
        memset(a, 0, sizeof *a);
        a->in = take(p, N * D);
        a->ln_sa = take(p, N * D);
        a->rstd_sa = take(p, N);
        a->q = take(p, N * E);
        a->k = take(p, N * E);
        a->v = take(p, N * E);
        a->ctx = take(p, N * E);
        a->att = take(p, B * H * T * T);
        a->mid = take(p, N * D);
        a->ln_ff = take(p, N * D);
        a->rstd_ff = take(p, N);
        a->h0 = take(p, N * F);
        a->h1 = self->gated ? take(p, N * F) : NULL;
        a->act = take(p, N * F);
        if (decoder) {
            a->ln_ca = take(p, N * D);
            a->rstd_ca = take(p, N);
            a->cq = take(p, N * E);
            a->ck = take(p, N * E);
            a->cv = take(p, N * E);
            a->cctx = take(p, N * E);
            a->catt = take(p, B * H * T * T);
            a->mid2 = take(p, N * D);
        }
    }
    memset(&side->acts[side->L], 0, sizeof side->acts[side->L]);
    side->acts[side->L].in = take(p, N * D);
    side->final_ln = take(p, N * D);
    side->final_rstd = take(p, N);
    side->out = take(p, N * D);
    side->bias = take(p, H * T * T);
}

static int64_t side_floats(const loom_model *self, const t5_side *side, int decoder, int64_t B, int64_t T)
{
    const int64_t N = B * T;
    return side->L * block_floats(self, decoder, B, T) + 3 * round_up(N * self->D) + round_up(N) +
           round_up(self->H * T * T);
}

static loom_status t5_bind(loom_model *self, const loom_model_binding *binding)
{
    const loom_host_api *api = self->api;
    if (!binding || !LOOM_HAS_FIELD(binding, loom_model_binding, kernels))
        return api->fail(self->host, LOOM_E_ABI, "bind: binding missing or too small");
    if (binding->param_dtype != LOOM_DTYPE_F32 || binding->compute_dtype != LOOM_DTYPE_F32)
        return api->fail(self->host, LOOM_E_UNSUPPORTED, "parameters in %s, compute in %s: t5 runs in f32 only for now",
                         loom_dtype_name(binding->param_dtype), loom_dtype_name(binding->compute_dtype));
    /* Any device whose kernel table the host lends with T5's members (checked below). The
     * host-side work here (embeddings, position bias, dropout of the residual stream, the loss
     * sum) reads and writes the activations directly: ABI 1.3 promises that a bound device's
     * memory is CPU-addressable between kernel calls (abi/loom/backend.h, docs/gpu.md). */
    if (!binding->params) return api->fail(self->host, LOOM_E_INVALID, "bind: params is NULL");
    if (binding->max_batch_size < 1)
        return api->fail(self->host, LOOM_E_INVALID, "bind: max_batch_size is %lld",
                         (long long)binding->max_batch_size);
    int64_t T = LOOM_HAS_FIELD(binding, loom_model_binding, max_sequence_length) ? binding->max_sequence_length : 0;
    if (T == 0) T = self->n_positions;
    if (T < 0 || T > self->n_positions)
        return api->fail(self->host, LOOM_E_INVALID,
                         "bind: max_sequence_length %lld is outside [1, n_positions = %lld]", (long long)T,
                         (long long)self->n_positions);
    const loom_kernels_api *k = binding->kernels;
    if (!k) k = api->service(self->host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (!k || !LOOM_HAS(k, loom_kernels_api, mha_backward) || !k->rmsnorm_forward || !k->rmsnorm_backward ||
        !k->mha_forward || !k->linear_forward || !k->linear_backward || !k->relu_forward || !k->gelu_forward ||
        !k->softmax_cross_entropy_forward ||
        (self->smoothing > 0 && !(LOOM_HAS(k, loom_kernels_api, softmax_cross_entropy_smoothed_forward) &&
                                  k->softmax_cross_entropy_smoothed_forward)))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "the host's kernel table lacks T5's kernels (rmsnorm, mha: ABI 1.3; label smoothing: 1.4)");
    if (k->device != binding->device)
        return api->fail(self->host, LOOM_E_INVALID, "kernels for device %u, parameters on device %u", k->device,
                         binding->device);
    const int64_t B = binding->max_batch_size, N = B * T, D = self->D, E = self->E, F = self->F, V = self->V;
    const double estimate =
        (double)N * ((double)V + (double)(self->enc.L + self->dec.L) *
                                     (20.0 * (double)(D + E + F) + 2.0 * (double)self->H * (double)T));
    if (estimate > 0x1p40)
        return api->fail(self->host, LOOM_E_INVALID, "activations for batch %lld x %lld tokens do not fit in memory",
                         (long long)B, (long long)T);
    const int64_t wide = max_i64(F, max_i64(D, E));
    const int64_t total = side_floats(self, &self->enc, 0, B, T) + side_floats(self, &self->dec, 1, B, T) +
                          round_up(N * V) + round_up(N) + round_up(N) /* dec_ids */ +
                          3 * round_up(N * D) /* dy dln denc */ + 3 * round_up(N * wide) /* dA dB tmp */ +
                          4 * round_up(N * E) /* dq dk dv dctx */ + round_up(self->H * T * T);
    api->free_memory(self->host, self->activations);
    self->activations = NULL;
    self->k = NULL;
    self->fwd_B = 0;
    float *p = api->alloc(self->host, (size_t)total * sizeof(float), 64, binding->device, binding->device_index);
    if (!p)
        return api->fail(self->host, LOOM_E_NOMEM,
                         "out of memory for activations (%lld bytes: batch %lld x %lld tokens)", (long long)(total * 4),
                         (long long)B, (long long)T);
    self->activations = p;
    self->activation_bytes = (size_t)total * sizeof(float);
    carve_side(self, &self->enc, 0, &p, B, T);
    carve_side(self, &self->dec, 1, &p, B, T);
    self->logits = take(&p, N * V);
    self->losses = take(&p, N);
    self->dec_ids = (int32_t *)take(&p, N);
    self->dy = take(&p, N * D);
    self->dln = take(&p, N * D);
    self->denc = take(&p, N * D);
    self->dA = take(&p, N * wide);
    self->dB = take(&p, N * wide);
    self->tmp = take(&p, N * wide);
    self->dq = take(&p, N * E);
    self->dk = take(&p, N * E);
    self->dv = take(&p, N * E);
    self->dctx = take(&p, N * E);
    self->dbias = take(&p, self->H * T * T);
    if (p != (float *)self->activations + total)
        return api->fail(self->host, LOOM_E_INTERNAL, "activation layout does not add up");
    self->params = binding->params;
    self->source = LOOM_HAS(binding, loom_model_binding, param_source) ? binding->param_source : NULL;
    self->k = k;
    self->max_batch = B;
    self->max_T = T;
    return LOOM_OK;
}

static size_t t5_activation_bytes(const loom_model *self) { return self->activation_bytes; }

static void *t5_step_scratch(loom_model *self, size_t *bytes)
{
    *bytes = self->activations ? self->activation_bytes : 0;
    return self->activations;
}

static loom_status t5_output_shape(const loom_model *self, int64_t *out_shape, uint32_t *ndim)
{
    return model_token_output_shape(self->host, self->api, self->max_T, self->n_positions, self->V, out_shape, ndim);
}

/* ---- checks -------------------------------------------------------------------------- */

static loom_status check_ids(loom_model *self, const int32_t *ids, int64_t n, int64_t T, const char *what,
                             int ignore_ok)
{
    return model_check_ids(self->host, self->api, ids, n, T, self->V, what, ignore_ok);
}

/* Ids, labels and the mask on the model's device: the kernels read labels and the mask. */
static int view_ok(const loom_model *self, const loom_tensor_view *v, int64_t B)
{
    return v->data && v->dtype == LOOM_DTYPE_I32 && v->ndim == 2 && v->shape[0] == B && v->device == self->k->device;
}

/* Check the batch and read its shapes: inputs [B, S] (mask alike), labels and/or decoder inputs
 * [B, T]. Fills self->dec_ids. */
static loom_status check_batch(loom_model *self, const loom_batch *batch, int64_t *B_out, int64_t *S_out,
                               int64_t *T_out, const int32_t **mask_out)
{
    const loom_host_api *api = self->api;
    loom_status st = loom_model_check_batch(self->host, api, self->k != NULL, batch, self->max_batch);
    if (st != LOOM_OK) return st;
    const int64_t B = batch->batch_size;
    if (!view_ok(self, &batch->inputs, B))
        return api->fail(self->host, LOOM_E_INVALID,
                         "inputs must be i32 token ids [%lld, source length] on the model's device", (long long)B);
    const int64_t S = batch->inputs.shape[1];
    const int has13 = LOOM_HAS_FIELD(batch, loom_batch, reserved1);
    const loom_tensor_view *dv = has13 && batch->decoder_input_ids.data ? &batch->decoder_input_ids : NULL;
    const loom_tensor_view *lv = batch->labels.data ? &batch->labels : NULL;
    if (!dv && !lv)
        return api->fail(self->host, LOOM_E_INVALID, "an encoder-decoder batch needs labels or decoder_input_ids");
    if (lv && !view_ok(self, lv, B))
        return api->fail(self->host, LOOM_E_INVALID, "labels must be i32 [%lld, target length] on the model's device",
                         (long long)B);
    if (dv && !view_ok(self, dv, B))
        return api->fail(self->host, LOOM_E_INVALID,
                         "decoder_input_ids must be i32 [%lld, target length] on the model's device", (long long)B);
    const int64_t T = dv ? dv->shape[1] : lv->shape[1];
    if (lv && lv->shape[1] != T)
        return api->fail(self->host, LOOM_E_INVALID, "labels have %lld positions, decoder_input_ids %lld",
                         (long long)lv->shape[1], (long long)T);
    if (S < 1 || T < 1 || S > self->max_T || T > self->max_T)
        return api->fail(
            self->host, LOOM_E_INVALID,
            "source of %lld and target of %lld tokens: each must be in [1, %lld] (the bound max_sequence_length)",
            (long long)S, (long long)T, (long long)self->max_T);
    const int32_t *mask = NULL;
    if (has13 && batch->attention_mask.data) {
        const loom_tensor_view *m = &batch->attention_mask;
        if (!view_ok(self, m, B) || m->shape[1] != S)
            return api->fail(self->host, LOOM_E_INVALID, "attention_mask must be i32 [%lld, %lld] like the inputs",
                             (long long)B, (long long)S);
        mask = m->data;
    }
    if ((st = check_ids(self, batch->inputs.data, B * S, S, "token id", 0))) return st;
    if (lv && (st = check_ids(self, lv->data, B * T, T, "label", 1))) return st;
    if (dv) {
        if ((st = check_ids(self, dv->data, B * T, T, "decoder input id", 0))) return st;
        memcpy(self->dec_ids, dv->data, (size_t)(B * T) * sizeof(int32_t));
    } else {
        /* HF's _shift_right: decoder_start_token_id first, -100 read as the pad id. */
        const int32_t *labels = lv->data;
        for (int64_t b = 0; b < B; b++) {
            self->dec_ids[b * T] = self->start_id;
            for (int64_t t = 1; t < T; t++) {
                const int32_t y = labels[b * T + t - 1];
                self->dec_ids[b * T + t] = y == T5_IGNORE_INDEX ? self->pad_id : y;
            }
        }
    }
    *B_out = B, *S_out = S, *T_out = T, *mask_out = mask;
    return LOOM_OK;
}

/* ---- forward ------------------------------------------------------------------------- */

static void linear(const loom_model *self, float *out, const float *inp, size_t w, int64_t N, int64_t IC, int64_t OC)
{
    self->k->linear_forward(out, inp, t5_p(self, w), NULL, N, IC, OC);
}

/* dst = res + dropout(inp @ weight^T): without dropout the product adds straight onto the
 * copied residual (beta 1, the same sums as adding tmp after), saving the pass over tmp. */
static void residual_linear(loom_model *self, float *dst, const float *res, const float *inp, size_t w, int64_t N,
                            int64_t IC, int64_t OC, float p, uint64_t seed)
{
    memcpy(dst, res, (size_t)(N * OC) * sizeof(float));
    if (p > 0.0f) {
        linear(self, self->tmp, inp, w, N, IC, OC);
        t5_add_dropout(dst, self->tmp, N * OC, p, seed);
    } else {
        self->k->sgemm(0, 1, N, OC, IC, 1.0f, inp, IC, t5_p(self, w), IC, 1.0f, dst, OC);
    }
}

/* One block of `side` over a [B, T] side; enc/enc_mask/S: the encoder output for the decoder's
 * cross-attention. Writes the next block's input. */
static void block_forward(loom_model *self, int decoder, int64_t l, int64_t B, int64_t T, const int32_t *mask,
                          const float *enc, const int32_t *enc_mask, int64_t S)
{
    const loom_kernels_api *k = self->k;
    t5_side *side = decoder ? &self->dec : &self->enc;
    const t5_block *w = &side->blocks[l];
    t5_block_acts *a = &side->acts[l];
    const int64_t N = B * T, D = self->D, E = self->E, F = self->F, H = self->H;
    const float eps = (float)self->eps, p = drop_p(self);
    const int sd = decoder;

    k->rmsnorm_forward(a->ln_sa, a->rstd_sa, a->in, t5_p(self, w->ln_sa), N, D, eps);
    linear(self, a->q, a->ln_sa, w->q, N, D, E);
    linear(self, a->k, a->ln_sa, w->k, N, D, E);
    linear(self, a->v, a->ln_sa, w->v, N, D, E);
    k->mha_forward(a->ctx, a->att, a->q, a->k, a->v, side->bias, decoder ? NULL : mask, B, H, T, T, self->KV, T, 1.0f,
                   decoder, p, site(self, sd, l, SITE_SA_PROBS));
    residual_linear(self, a->mid, a->in, a->ctx, w->o, N, E, D, p, site(self, sd, l, SITE_SA_OUT));
    const float *res = a->mid;
    if (decoder) {
        k->rmsnorm_forward(a->ln_ca, a->rstd_ca, a->mid, t5_p(self, w->ln_ca), N, D, eps);
        linear(self, a->cq, a->ln_ca, w->cq, N, D, E);
        linear(self, a->ck, enc, w->ck, B * S, D, E);
        linear(self, a->cv, enc, w->cv, B * S, D, E);
        k->mha_forward(a->cctx, a->catt, a->cq, a->ck, a->cv, NULL, enc_mask, B, H, T, S, self->KV, S, 1.0f, 0, p,
                       site(self, sd, l, SITE_CA_PROBS));
        residual_linear(self, a->mid2, a->mid, a->cctx, w->co, N, E, D, p, site(self, sd, l, SITE_CA_OUT));
        res = a->mid2;
    }
    k->rmsnorm_forward(a->ln_ff, a->rstd_ff, res, t5_p(self, w->ln_ff), N, D, eps);
    linear(self, a->h0, a->ln_ff, w->wi0, N, D, F);
    if (self->gated) {
        linear(self, a->h1, a->ln_ff, w->wi1, N, D, F);
        k->gelu_forward(a->act, a->h0, N * F);
        for (int64_t i = 0; i < N * F; i++) a->act[i] *= a->h1[i];
    } else {
        k->relu_forward(a->act, a->h0, N * F);
    }
    t5_dropout(a->act, N * F, p, site(self, sd, l, SITE_FF_HIDDEN));
    residual_linear(self, side->acts[l + 1].in, res, a->act, w->wo, N, F, D, p, site(self, sd, l, SITE_FF_OUT));
}

/* Embeddings, blocks and the final norm of one side; side->out gets its output. */
/* ---- parameters under ZeRO-3 (loom_param_source, ABI 1.12) ------------------------------
 * `shared` (the embedding, and the LM head when tied) is acquired for a forward and kept through
 * it (both stacks look tokens up in it, the tied head reads it last); backward reads it for the
 * head only. Each block, final norm and an untied lm_head is acquired only while it runs.
 * A block's range runs from its first tensor to the next block's (block 0 holds the stack's
 * relative position bias, read once before the blocks). Without a source these do nothing. */
static loom_status tensor_use(loom_model *self, size_t i, int done)
{
    const int64_t begin = self->tensors[i].offset;
    return model_param_range(self->source, begin, begin + self->tensors[i].size, done);
}
/* The flat range of block l of a side: from its first tensor to the next block's (or the final
 * norm); block 0 holds the stack's relative position bias. */
static void block_range(const loom_model *self, const t5_side *side, int64_t l, int64_t *begin, int64_t *end)
{
    *begin = self->tensors[side->blocks[l].q].offset;
    *end = l + 1 < side->L ? self->tensors[side->blocks[l + 1].q].offset : self->tensors[side->final_norm].offset;
}
static loom_status block_use(loom_model *self, const t5_side *side, int64_t l, int done)
{
    int64_t begin = 0, end = 0;
    block_range(self, side, l, &begin, &end);
    return model_param_range(self->source, begin, end, done);
}
/* `st` unless it is LOOM_OK, else how giving `shared` back went. */
static loom_status shared_done(loom_model *self, loom_status st)
{
    loom_status released = tensor_use(self, self->shared, 1);
    return st ? st : released;
}

static loom_status side_forward(loom_model *self, int decoder, const int32_t *ids, int64_t B, int64_t T,
                                const int32_t *mask, const float *enc, const int32_t *enc_mask, int64_t S)
{
    t5_side *side = decoder ? &self->dec : &self->enc;
    const int64_t N = B * T, D = self->D;
    const float p = drop_p(self);
    t5_embed_forward(side->acts[0].in, ids, t5_p(self, self->shared), N, D);
    /* NEFTune: HF hooks get_input_embeddings(), `shared`, which both stacks call, so each side's
     * embeddings get noise of alpha / sqrt(its length x D), before the embedding dropout, as
     * the hook's output enters T5Stack. The noise does not depend on the weights: backward
     * reads the noisy acts[0].in the forward kept. */
    if (self->fwd_training && self->neftune_alpha > 0.0) {
        const float mag = model_neftune_magnitude(self->neftune_alpha, T, D);
        const uint64_t seed = model_neftune_seed(self->fwd_seed, (uint64_t)decoder);
        float *x = side->acts[0].in;
        for (int64_t i = 0; i < N * D; i++)
            x[i] += model_neftune_noise(seed, (uint64_t)i, mag);
    }
    t5_dropout(side->acts[0].in, N * D, p, site(self, decoder, -1, SITE_EMBED));
    loom_status st;
    for (int64_t l = 0; l < side->L; l++) {
        if ((st = block_use(self, side, l, 0))) return st;
        if (l == 0)
            t5_bias_forward(side->bias, t5_p(self, side->blocks[0].rel), self->H, T, T, !decoder, self->NB, self->MD);
        block_forward(self, decoder, l, B, T, mask, enc, enc_mask, S);
        if ((st = block_use(self, side, l, 1))) return st;
    }
    if ((st = tensor_use(self, side->final_norm, 0))) return st;
    self->k->rmsnorm_forward(side->final_ln, side->final_rstd, side->acts[side->L].in, t5_p(self, side->final_norm), N,
                             D, (float)self->eps);
    if ((st = tensor_use(self, side->final_norm, 1))) return st;
    memcpy(side->out, side->final_ln, (size_t)(N * D) * sizeof(float));
    t5_dropout(side->out, N * D, p, site(self, decoder, -1, SITE_FINAL));
    if (decoder && self->tied) { /* Mesh TensorFlow's rescale before the tied LM head */
        const float s = 1.0f / sqrtf((float)D);
        for (int64_t i = 0; i < N * D; i++) side->out[i] *= s;
    }
    return LOOM_OK;
}

/* Generation's encoder: the host makes the parameters whole around generation, so the source's
 * calls inside return at once. */
loom_status t5_encoder_forward(loom_model *self, const int32_t *ids, const int32_t *mask, int64_t B, int64_t S)
{
    self->fwd_B = 0;
    self->fwd_training = 0;
    self->fwd_seed = 0;
    loom_status st = tensor_use(self, self->shared, 0);
    return st ? st : shared_done(self, side_forward(self, 0, ids, B, S, mask, NULL, NULL, 0));
}

static loom_status t5_forward(loom_model *self, const loom_batch *batch, loom_forward_result *result,
                              loom_tensor_view *outputs)
{
    int64_t B = 0, S = 0, T = 0;
    const int32_t *mask = NULL;
    loom_status st = check_batch(self, batch, &B, &S, &T, &mask);
    if (st) return st;
    const int64_t V = self->V, Nd = B * T;
    if (outputs && (outputs->dtype != LOOM_DTYPE_F32 || outputs->ndim != 3 || !outputs->data ||
                    outputs->shape[0] != B || outputs->shape[1] < T || outputs->shape[2] != V))
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "outputs must be f32 [%lld, >= %lld, %lld] (batch, positions, vocab)", (long long)B,
                               (long long)T, (long long)V);
    self->fwd_B = 0;
    self->fwd_training = LOOM_HAS_FIELD(batch, loom_batch, reserved1) && batch->training == 1;
    self->fwd_seed = self->fwd_training ? batch->dropout_seed : 0;
    if ((st = tensor_use(self, self->shared, 0))) return st;
    if ((st = side_forward(self, 0, batch->inputs.data, B, S, mask, NULL, NULL, 0)) ||
        (st = side_forward(self, 1, self->dec_ids, B, T, NULL, self->enc.out, mask, S)))
        return shared_done(self, st);
    if (!self->tied && (st = tensor_use(self, self->lm_head, 0))) return shared_done(self, st);
    linear(self, self->logits, self->dec.out, self->lm_head, Nd, self->D, V);
    if ((st = shared_done(self, self->tied ? LOOM_OK : tensor_use(self, self->lm_head, 1)))) return st;
    if (outputs) {
        const int64_t stride = outputs->shape[1];
        float *out = outputs->data;
        for (int64_t b = 0; b < B; b++) {
            memcpy(out + b * stride * V, self->logits + b * T * V, (size_t)(T * V) * sizeof(float));
            if (stride > T) memset(out + (b * stride + T) * V, 0, (size_t)((stride - T) * V) * sizeof(float));
        }
    }
    double loss_sum = 0;
    int64_t n_targets = 0;
    self->fwd_probs = 0;
    const int32_t *labels = batch->labels.data;
    if (labels) {
        if (self->smoothing > 0) /* HF's label smoothing (ABI 1.4 kernel) */
            self->k->softmax_cross_entropy_smoothed_forward(self->logits, self->losses, self->logits, labels,
                                                            self->smoothing, Nd, V);
        else
            self->k->softmax_cross_entropy_forward(self->logits, self->losses, self->logits, labels, Nd, V);
        for (int64_t i = 0; i < Nd; i++) {
            if (labels[i] == T5_IGNORE_INDEX) continue;
            loss_sum += self->losses[i];
            n_targets++;
        }
        self->fwd_probs = 1;
    }
    if (result) {
        result->loss_sum = loss_sum;
        result->n_targets = n_targets;
        result->n_correct = -1;
    }
    self->fwd_B = B, self->fwd_S = S, self->fwd_T = T;
    return LOOM_OK;
}

/* ---- backward ------------------------------------------------------------------------ */

static void zero(float *p, int64_t n) { memset(p, 0, (size_t)n * sizeof *p); }

/* The gradients of one range the sink lent: tensor i's (inside it) at mem + (offset - begin). */
typedef struct grad_range {
    float *mem;
    int64_t begin, end;
} grad_range;

static float *gd(const loom_model *self, const grad_range *g, size_t i)
{
    return g->mem + (self->tensors[i].offset - g->begin);
}

/* [begin, end)'s gradient memory from the sink into *g. */
static loom_status grad_take(loom_model *self, const loom_grad_sink *sink, int64_t begin, int64_t end, grad_range *g)
{
    void *memory = NULL;
    loom_status st = sink->acquire(sink->context, begin, end, &memory);
    if (st) return st;
    if (!memory)
        return self->api->fail(self->host, LOOM_E_INTERNAL, "grad sink gave no memory for [%lld, %lld)",
                               (long long)begin, (long long)end);
    *g = (grad_range){memory, begin, end};
    return LOOM_OK;
}
static loom_status grad_give(const loom_grad_sink *sink, const grad_range *g)
{
    return sink->release(sink->context, g->begin, g->end);
}
static loom_status tensor_grad(loom_model *self, const loom_grad_sink *sink, size_t i, grad_range *g)
{
    return grad_take(self, sink, self->tensors[i].offset, self->tensors[i].offset + self->tensors[i].size, g);
}

static void lin_back(const loom_model *self, const grad_range *G, float *dinp, size_t w, const float *dout,
                     const float *inp, int64_t N, int64_t IC, int64_t OC)
{
    self->k->linear_backward(dinp, gd(self, G, w), NULL, dout, inp, t5_p(self, w), N, IC, OC);
}

/* lin_back that WRITES dinp (= dout @ weight, a product with beta 0) instead of adding to it:
 * saves zeroing dinp first and reading it back. */
static void lin_back_set(const loom_model *self, const grad_range *G, float *dinp, size_t w, const float *dout,
                         const float *inp, int64_t N, int64_t IC, int64_t OC)
{
    self->k->sgemm(0, 0, N, IC, OC, 1.0f, dout, OC, t5_p(self, w), IC, 0.0f, dinp, IC);
    lin_back(self, G, NULL, w, dout, inp, N, IC, OC);
}

/* dy: d(block output) in, d(block input) out; denc collects the cross-attention's gradient
 * of the encoder output, dbias the relative bias's. */
static void block_backward(loom_model *self, const grad_range *G, int decoder, int64_t l, int64_t B, int64_t T,
                           const float *enc, int64_t S)
{
    const loom_kernels_api *k = self->k;
    t5_side *side = decoder ? &self->dec : &self->enc;
    const t5_block *w = &side->blocks[l];
    const t5_block_acts *a = &side->acts[l];
    const int64_t N = B * T, D = self->D, E = self->E, F = self->F, H = self->H, KV = self->KV;
    const float p = drop_p(self);
    const int sd = decoder;
    float *dy = self->dy, *dln = self->dln, *tmp = self->tmp, *dA = self->dA, *dB = self->dB;
    const float *res = decoder ? a->mid2 : a->mid;

    /* feed-forward */
    memcpy(tmp, dy, (size_t)(N * D) * sizeof *tmp);
    t5_dropout(tmp, N * D, p, site(self, sd, l, SITE_FF_OUT));
    lin_back_set(self, G, dA, w->wo, tmp, a->act, N, F, D);
    t5_dropout(dA, N * F, p, site(self, sd, l, SITE_FF_HIDDEN));
    if (self->gated) {
        k->gelu_forward(dB, a->h0, N * F); /* gelu(h0), then d h1 */
        for (int64_t i = 0; i < N * F; i++) {
            const float g = dA[i];
            dA[i] = g * a->h1[i];
            dB[i] = g * dB[i];
        }
        zero(tmp, N * F);
        k->gelu_backward(tmp, a->h0, dA, N * F);
        lin_back_set(self, G, dln, w->wi0, tmp, a->ln_ff, N, D, F);
        lin_back(self, G, dln, w->wi1, dB, a->ln_ff, N, D, F);
    } else {
        zero(dB, N * F);
        k->relu_backward(dB, a->h0, dA, N * F);
        lin_back_set(self, G, dln, w->wi0, dB, a->ln_ff, N, D, F);
    }
    k->rmsnorm_backward(dy, gd(self, G, w->ln_ff), dln, res, t5_p(self, w->ln_ff), a->rstd_ff, N, D);

    if (decoder) { /* cross-attention */
        memcpy(tmp, dy, (size_t)(N * D) * sizeof *tmp);
        t5_dropout(tmp, N * D, p, site(self, sd, l, SITE_CA_OUT));
        lin_back_set(self, G, self->dctx, w->co, tmp, a->cctx, N, E, D);
        zero(self->dq, N * E);
        zero(self->dk, B * S * E);
        zero(self->dv, B * S * E);
        k->mha_backward(self->dq, self->dk, self->dv, NULL, self->dctx, a->cq, a->ck, a->cv, a->catt, B, H, T, S, KV, S,
                        1.0f, p, site(self, sd, l, SITE_CA_PROBS));
        lin_back_set(self, G, dln, w->cq, self->dq, a->ln_ca, N, D, E);
        lin_back(self, G, self->denc, w->ck, self->dk, enc, B * S, D, E);
        lin_back(self, G, self->denc, w->cv, self->dv, enc, B * S, D, E);
        k->rmsnorm_backward(dy, gd(self, G, w->ln_ca), dln, a->mid, t5_p(self, w->ln_ca), a->rstd_ca, N, D);
    }

    /* self-attention */
    memcpy(tmp, dy, (size_t)(N * D) * sizeof *tmp);
    t5_dropout(tmp, N * D, p, site(self, sd, l, SITE_SA_OUT));
    lin_back_set(self, G, self->dctx, w->o, tmp, a->ctx, N, E, D);
    zero(self->dq, N * E);
    zero(self->dk, N * E);
    zero(self->dv, N * E);
    k->mha_backward(self->dq, self->dk, self->dv, self->dbias, self->dctx, a->q, a->k, a->v, a->att, B, H, T, T, KV, T,
                    1.0f, p, site(self, sd, l, SITE_SA_PROBS));
    lin_back_set(self, G, dln, w->q, self->dq, a->ln_sa, N, D, E);
    lin_back(self, G, dln, w->k, self->dk, a->ln_sa, N, D, E);
    lin_back(self, G, dln, w->v, self->dv, a->ln_sa, N, D, E);
    k->rmsnorm_backward(dy, gd(self, G, w->ln_sa), dln, a->in, t5_p(self, w->ln_sa), a->rstd_sa, N, D);
}

/* d(side->out) in dln -> parameters of the side; returns with dy = d(embeddings), added into
 * `shared`'s gradient (gs, held by the caller). Each block's gradients are taken from the sink
 * and given back as soon as they are final, last block first, so a sharding plugin reduces them
 * while backward goes on; block 0's wait for the relative bias's, summed over every block. */
static loom_status side_backward(loom_model *self, const loom_grad_sink *sink, const grad_range *gs, int decoder,
                                 const int32_t *ids, int64_t B, int64_t T, const float *enc, int64_t S)
{
    t5_side *side = decoder ? &self->dec : &self->enc;
    const int64_t N = B * T, D = self->D, H = self->H;
    const float p = drop_p(self);
    t5_dropout(self->dln, N * D, p, site(self, decoder, -1, SITE_FINAL));
    zero(self->dy, N * D);
    grad_range g = {NULL, 0, 0};
    loom_status st = tensor_use(self, side->final_norm, 0);
    if (st || (st = tensor_grad(self, sink, side->final_norm, &g))) return st;
    self->k->rmsnorm_backward(self->dy, gd(self, &g, side->final_norm), self->dln, side->acts[side->L].in,
                              t5_p(self, side->final_norm), side->final_rstd, N, D);
    if ((st = grad_give(sink, &g)) || (st = tensor_use(self, side->final_norm, 1))) return st;
    zero(self->dbias, H * T * T);
    for (int64_t l = side->L - 1; l >= 0; l--) {
        int64_t begin = 0, end = 0;
        block_range(self, side, l, &begin, &end);
        if ((st = block_use(self, side, l, 0)) || (st = grad_take(self, sink, begin, end, &g))) return st;
        block_backward(self, &g, decoder, l, B, T, enc, S);
        if (l == 0)
            t5_bias_backward(gd(self, &g, side->blocks[0].rel), self->dbias, H, T, T, !decoder, self->NB, self->MD);
        if ((st = grad_give(sink, &g)) || (st = block_use(self, side, l, 1))) return st;
    }
    t5_dropout(self->dy, N * D, p, site(self, decoder, -1, SITE_EMBED));
    t5_embed_backward(gd(self, gs, self->shared), self->dy, ids, N, D);
    return LOOM_OK;
}

/* Everything after d(loss)/d(logits), which is in self->logits [B*T, V]. `shared`'s gradient is
 * held from the head (tied) to the encoder's embedding lookup, the last to add to it. */
static loom_status backward_from_logits(loom_model *self, const loom_batch *batch, const loom_grad_sink *sink)
{
    const int64_t B = self->fwd_B, S = self->fwd_S, T = self->fwd_T, Nd = B * T, D = self->D;
    grad_range gs = {NULL, 0, 0}, gl = {NULL, 0, 0};
    loom_status st = tensor_grad(self, sink, self->shared, &gs);
    if (st) return st;
    /* The head is the last read of `shared` (tied) in backward: the embeddings' backward only
     * writes their gradient. */
    if ((st = tensor_use(self, self->lm_head, 0))) return st;
    if (!self->tied && (st = tensor_grad(self, sink, self->lm_head, &gl))) return st;
    lin_back_set(self, self->tied ? &gs : &gl, self->dln, self->lm_head, self->logits, self->dec.out, Nd, D, self->V);
    if (!self->tied && (st = grad_give(sink, &gl))) return st;
    if ((st = tensor_use(self, self->lm_head, 1))) return st;
    if (self->tied) {
        const float s = 1.0f / sqrtf((float)D);
        for (int64_t i = 0; i < Nd * D; i++) self->dln[i] *= s;
    }
    zero(self->denc, B * S * D);
    if ((st = side_backward(self, sink, &gs, 1, self->dec_ids, B, T, self->enc.out, S))) return st;
    memcpy(self->dln, self->denc, (size_t)(B * S * D) * sizeof(float));
    if ((st = side_backward(self, sink, &gs, 0, batch->inputs.data, B, S, NULL, 0))) return st;
    self->fwd_B = 0;
    return grad_give(sink, &gs);
}

static loom_status check_backward(loom_model *self, const loom_batch *batch, const loom_grad_sink *sink)
{
    int64_t B = 0, S = 0, T = 0;
    const int32_t *mask = NULL;
    const int64_t fB = self->fwd_B, fS = self->fwd_S, fT = self->fwd_T;
    loom_status st = check_batch(self, batch, &B, &S, &T, &mask);
    if (st) return st;
    if (fB != B || fS != S || fT != T)
        return self->api->fail(self->host, LOOM_E_INVALID, "backward needs a forward on the same batch first");
    if (!sink || !LOOM_HAS_FIELD(sink, loom_grad_sink, release) || !sink->acquire || !sink->release)
        return self->api->fail(self->host, LOOM_E_INVALID, "backward: no gradient sink");
    return LOOM_OK;
}

static loom_status t5_backward(loom_model *self, const loom_batch *batch, float seed, const loom_grad_sink *sink)
{
    loom_status st = check_backward(self, batch, sink);
    if (st) return st;
    const int32_t *labels = batch->labels.data;
    if (!labels || !self->fwd_probs)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "backward needs a forward with labels on the same batch first");
    const int64_t N = self->fwd_B * self->fwd_T, V = self->V;
    /* dlogits = seed (probs - (1 - eps) onehot - eps / V), in place (eps: label smoothing) */
    const float uniform = self->smoothing / (float)V, target = seed * (1.0f - self->smoothing);
    /* [N, V] is the largest buffer of the step: split its rows over the threads */
#pragma omp parallel for schedule(static) if (N * V >= 65536)
    for (int64_t i = 0; i < N; i++) {
        float *row = self->logits + i * V;
        if (labels[i] == T5_IGNORE_INDEX) {
            zero(row, V);
            continue;
        }
        for (int64_t v = 0; v < V; v++) row[v] = seed * (row[v] - uniform);
        row[labels[i]] -= target;
    }
    self->fwd_probs = 0;
    return backward_from_logits(self, batch, sink);
}

static loom_status t5_backward_outputs(loom_model *self, const loom_batch *batch, const loom_tensor_view *doutputs,
                                       const loom_grad_sink *sink)
{
    loom_status st = check_backward(self, batch, sink);
    if (st) return st;
    const int64_t B = self->fwd_B, T = self->fwd_T, V = self->V;
    if (!doutputs || doutputs->dtype != LOOM_DTYPE_F32 || doutputs->ndim != 3 || !doutputs->data ||
        doutputs->shape[0] != B || doutputs->shape[1] < T || doutputs->shape[2] != V)
        return self->api->fail(self->host, LOOM_E_INVALID, "doutputs must be f32 [%lld, >= %lld, %lld]", (long long)B,
                               (long long)T, (long long)V);
    const float *d = doutputs->data;
    for (int64_t b = 0; b < B; b++)
        memcpy(self->logits + b * T * V, d + b * doutputs->shape[1] * V, (size_t)(T * V) * sizeof(float));
    self->fwd_probs = 0;
    return backward_from_logits(self, batch, sink);
}

/* backward holds `shared`'s gradient throughout, and beside it an untied lm_head's, a final
 * norm's or one block's. */
static int64_t t5_max_grad_elements(const loom_model *self)
{
    int64_t held = self->tied ? 0 : self->tensors[self->lm_head].size;
    const t5_side *sides[] = {&self->enc, &self->dec};
    for (int k = 0; k < 2; k++) {
        const t5_side *side = sides[k];
        if (self->tensors[side->final_norm].size > held) held = self->tensors[side->final_norm].size;
        for (int64_t l = 0; l < side->L; l++) {
            int64_t begin = 0, end = 0;
            block_range(self, side, l, &begin, &end);
            if (end - begin > held) held = end - begin;
        }
    }
    return self->tensors[self->shared].size + held;
}

/* ---- descriptor ---------------------------------------------------------------------- */

static const loom_model_vtable t5_vtable = {
    LOOM_HEADER_INIT(loom_model_vtable),
    .create = t5_create,
    .destroy = t5_destroy,
    .param_count = t5_param_count,
    .param_info = t5_param_info,
    .init_params = t5_init_params,
    .bind = t5_bind,
    .activation_bytes = t5_activation_bytes,
    .forward = t5_forward,
    .backward = t5_backward,
    .output_shape = t5_output_shape,
    .backward_outputs = t5_backward_outputs,
    .max_grad_elements = t5_max_grad_elements,
    .flags = LOOM_MODEL_PARAM_SOURCE,
    .step_scratch = t5_step_scratch,
    .generation_ids = t5_generation_ids,
    .encode = t5_encode,
    .decode_rows = t5_decode_rows,
    .reorder_cache = t5_reorder_cache,
};

static const loom_plugin_desc t5_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_MODEL,
    .name = "t5",
    .version = "0.1.0",
    .summary = "T5 encoder-decoder (HF T5ForConditionalGeneration: v1.0 and v1.1 names, shapes, init), padded batches, "
               "dropout, "
               "KV-cache generation",
    .vtable = &t5_vtable,
    .params = t5_param_specs,
};

LOOM_PLUGIN_EXPORT(&t5_desc)
