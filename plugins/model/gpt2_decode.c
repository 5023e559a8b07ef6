/*
 * gpt2_decode.c - generation with a key/value cache: decode_begin makes room for
 * max_positions tokens, decode_step runs the next n tokens through every block, attending to
 * the cached keys and values of all positions before them, and writes the logits of the last.
 *
 * The cache is [L][max_positions][2C] (k then v of each position, as c_attn lays them out
 * after q). Tokens run in chunks of at most GPT2_DECODE_CHUNK rows, so the scratch does not
 * grow with the prompt; causal attention makes a chunk's result independent of the split.
 * Attention against the cache is two matrix products per head through the kernel table's
 * sgemm (q k^T, then probabilities times v) with the row-wise softmax kernel in between
 * (the softmax of the cross-entropy kernel, every row marked "no target").
 */
#include "gpt2.h"

#include <math.h>
#include <string.h>

static int64_t round_up(int64_t n) { return (n + GPT2_ALIGN_FLOATS - 1) / GPT2_ALIGN_FLOATS * GPT2_ALIGN_FLOATS; }

void gpt2_decode_free(loom_model *self)
{
    self->api->free_memory(self->host, self->decode.memory);
    memset(&self->decode, 0, sizeof self->decode);
}

/* Scratch floats for one chunk: x, ln, qkv, atty, fch, fch_gelu, scores, mean, rstd, losses,
 * ignore (int32, same size). */
static int64_t chunk_floats(const loom_model *self, int64_t Q, int64_t max_positions)
{
    return 3 * round_up(Q * self->C) + round_up(3 * Q * self->C) + 2 * round_up(Q * self->F) +
           round_up(Q * max_positions) + 4 * round_up(Q);
}

loom_status gpt2_decode_begin(loom_model *self, int64_t max_positions)
{
    const loom_host_api *api = self->api;
    if (!self->k) return api->fail(self->host, LOOM_E_INVALID, "decode_begin before bind");
    if (max_positions < 1 || max_positions > self->P)
        return api->fail(self->host, LOOM_E_INVALID,
                         "decode_begin: max_positions %lld is outside [1, n_positions = %lld]",
                         (long long)max_positions, (long long)self->P);
    gpt2_decode_free(self);
    const int64_t C = self->C, L = self->L;
    const int64_t Q = max_positions < GPT2_DECODE_CHUNK ? max_positions : GPT2_DECODE_CHUNK;
    const int64_t kv = round_up(L * max_positions * 2 * C);
    const int64_t total = kv + chunk_floats(self, Q, max_positions);
    float *p = api->alloc(self->host, (size_t)total * sizeof(float), 64, LOOM_DEVICE_CPU, 0);
    if (!p)
        return api->fail(self->host, LOOM_E_NOMEM, "out of memory for the key/value cache (%lld bytes, %lld positions)",
                         (long long)(total * (int64_t)sizeof(float)), (long long)max_positions);
    gpt2_decode_state *d = &self->decode;
    d->memory = p;
    d->max_positions = max_positions;
    d->position = 0;
    d->chunk = Q;
#define TAKE(n) (p += round_up(n), p - round_up(n))
    d->kv = TAKE(L * max_positions * 2 * C);
    d->x = TAKE(Q * C);
    d->ln = TAKE(Q * C);
    d->atty = TAKE(Q * C);
    d->qkv = TAKE(3 * Q * C);
    d->fch = TAKE(Q * self->F);
    d->fch_gelu = TAKE(Q * self->F);
    d->scores = TAKE(Q * max_positions);
    d->mean = TAKE(Q);
    d->rstd = TAKE(Q);
    d->losses = TAKE(Q);
    d->ignore = (int32_t *)TAKE(Q);
#undef TAKE
    for (int64_t i = 0; i < Q; i++) d->ignore[i] = GPT2_IGNORE_INDEX;
    /* The f32 copies of the small tensors, once per generation (the parameters do not change
     * while it runs; a forward in between restages the same values). */
    gpt2_mixed_stage(self);
    return LOOM_OK;
}

/* x rounded to `dtype` in place (through the cast scratch), as forward keeps a product's
 * output in 16 bits before reading it (gpt2.c block_forward: qkv under the tiled attention,
 * c_fc's output in every mixed run); f32 leaves it alone. */
static void round_as_kept(loom_model *self, float *x, int64_t n, uint32_t dtype)
{
    if (dtype == LOOM_DTYPE_F32 || !self->mixed) return;
    self->k->convert(x, LOOM_DTYPE_F32, gpt2_cast(self, x, n), self->compute_dtype, n);
}

/* Run q tokens at positions pos .. pos + q - 1 through every block; the residual stream of
 * the chunk is left in d->x. */
static void run_chunk(loom_model *self, const int32_t *tokens, int64_t q, int64_t pos)
{
    const loom_kernels_api *k = self->k;
    gpt2_decode_state *d = &self->decode;
    const int64_t C = self->C, F = self->F, NH = self->NH, hs = C / NH, S = pos + q;
    const float eps = self->eps, scale = 1.0f / sqrtf((float)hs);

    gpt2_embed_forward(self, d->x, tokens, pos, 1, q);
    for (int64_t l = 0; l < self->L; l++) {
        float *kv = d->kv + l * d->max_positions * 2 * C;
        k->layernorm_forward(d->ln, d->mean, d->rstd, d->x, gpt2_lp(self, l, GPT2_LN1_W), gpt2_lp(self, l, GPT2_LN1_B),
                             q, C, eps);
        gpt2_mm_forward(self, d->qkv, gpt2_cast(self, d->ln, q * C), gpt2_layer_tensor(l, GPT2_QKV_W),
                        gpt2_layer_tensor(l, GPT2_QKV_B), q, C, 3 * C);
        round_as_kept(self, d->qkv, q * 3 * C, gpt2_qkv_dtype(self));
        for (int64_t i = 0; i < q; i++) /* k and v are adjacent in a qkv row: one copy */
            memcpy(kv + (pos + i) * 2 * C, d->qkv + i * 3 * C + C, (size_t)(2 * C) * sizeof(float));
        for (int64_t h = 0; h < NH; h++) {
            /* scores[i, j] = q_i . k_j / sqrt(hs) over all S cached positions; row i (position
             * pos + i) may attend to j <= pos + i only. */
            k->sgemm(0, 1, q, S, hs, scale, d->qkv + h * hs, 3 * C, kv + h * hs, 2 * C, 0.0f, d->scores, S);
            for (int64_t i = 0; i < q; i++) {
                float *row = d->scores + i * S;
                for (int64_t j = pos + i + 1; j < S; j++) row[j] = -INFINITY;
            }
            k->softmax_cross_entropy_forward(d->scores, d->losses, d->scores, d->ignore, q, S);
            k->sgemm(0, 0, q, hs, S, 1.0f, d->scores, S, kv + C + h * hs, 2 * C, 0.0f, d->atty + h * hs, C);
        }
        gpt2_mm_forward(self, d->ln, gpt2_cast(self, d->atty, q * C), gpt2_layer_tensor(l, GPT2_ATTPROJ_W),
                        gpt2_layer_tensor(l, GPT2_ATTPROJ_B), q, C, C);
        k->add(d->x, d->x, d->ln, q * C);
        k->layernorm_forward(d->ln, d->mean, d->rstd, d->x, gpt2_lp(self, l, GPT2_LN2_W), gpt2_lp(self, l, GPT2_LN2_B),
                             q, C, eps);
        gpt2_mm_forward(self, d->fch, gpt2_cast(self, d->ln, q * C), gpt2_layer_tensor(l, GPT2_FC_W),
                        gpt2_layer_tensor(l, GPT2_FC_B), q, C, F);
        round_as_kept(self, d->fch, q * F, self->compute_dtype);
        k->gelu_forward(d->fch_gelu, d->fch, q * F);
        gpt2_mm_forward(self, d->ln, gpt2_cast(self, d->fch_gelu, q * F), gpt2_layer_tensor(l, GPT2_FCPROJ_W),
                        gpt2_layer_tensor(l, GPT2_FCPROJ_B), q, F, C);
        k->add(d->x, d->x, d->ln, q * C);
    }
}

loom_status gpt2_decode_step(loom_model *self, const int32_t *tokens, int64_t n, float *logits)
{
    const loom_host_api *api = self->api;
    gpt2_decode_state *d = &self->decode;
    if (!d->memory) return api->fail(self->host, LOOM_E_INVALID, "decode_step before decode_begin");
    if (!self->k) return api->fail(self->host, LOOM_E_INVALID, "decode_step: the model is not bound");
    if (!tokens || !logits || n < 1)
        return api->fail(self->host, LOOM_E_INVALID, "decode_step: needs at least one token and a logits buffer");
    if (n > d->max_positions - d->position)
        return api->fail(self->host, LOOM_E_INVALID,
                         "decode_step: positions %lld..%lld are beyond the %lld given to decode_begin",
                         (long long)d->position, (long long)(d->position + n - 1), (long long)d->max_positions);
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= self->V)
            return api->fail(self->host, LOOM_E_INVALID, "decode_step: token id %d is outside the vocabulary [0, %lld)",
                             tokens[i], (long long)self->V);
    }
    int64_t q = 0;
    for (int64_t done = 0; done < n; done += q) {
        q = n - done < d->chunk ? n - done : d->chunk;
        run_chunk(self, tokens + done, q, d->position);
        d->position += q;
    }
    /* Only the last token's logits: ln_f of its row, then the tied head. */
    const int64_t C = self->C;
    const float *lnf_w = gpt2_f32(self, gpt2_lnf_tensor(self));
    self->k->layernorm_forward(d->ln, d->mean, d->rstd, d->x + (q - 1) * C, lnf_w, lnf_w + C, 1, C, self->eps);
    gpt2_head_forward(self, logits, gpt2_cast(self, d->ln, C), 1);
    return LOOM_OK;
}
