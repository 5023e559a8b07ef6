/*
 * t5_decode.c - generation with T5 (ABI 1.4, docs/seq2seq.md#generation): encode runs the
 * encoder once over a padded source batch and computes every decoder block's cross-attention
 * keys and values from its output, once per source; decode_rows feeds one token per decoder
 * row (B sources x num_beams rows) at the next position and writes each row's logits;
 * reorder_cache moves self-attention cache rows between the beams of a source.
 *
 * The decoder step is the decoder of t5.c for one query position: the self-attention query
 * at position pos attends to the cached keys 0..pos with the causal relative position bias of
 * (j - pos) for key j, the same bias t5_bias_forward gives the last row of a full forward;
 * the cross-attention of the num_beams rows of a source is one attention of num_beams
 * queries over that source's keys (mha_forward with B sources, Tq = num_beams), its padding
 * masked. Dropout is off, as in HF's model.eval().
 *
 * Memory, allocated by encode once per generation: the self-attention cache
 * [L][R, P, E] twice, the cross keys and values [L][B, S, E] twice, and the scratch of one
 * step for R rows.
 */
#include "t5.h"

#include <math.h>
#include <string.h>

#define T5_DECODE_ALIGN 16
static int64_t up(int64_t n)
{
    return (n + T5_DECODE_ALIGN - 1) / T5_DECODE_ALIGN * T5_DECODE_ALIGN;
}

void t5_decode_free(loom_model *self)
{
    self->api->free_memory(self->host, self->decode.memory);
    memset(&self->decode, 0, sizeof self->decode);
}

loom_status t5_generation_ids(const loom_model *self, loom_generation_ids *out)
{
    if (!out || !LOOM_HAS_FIELD(out, loom_generation_ids, pad_token_id))
        return self->api->fail(self->host, LOOM_E_ABI, "generation_ids: out missing or too small");
    out->decoder_start_token_id = self->start_id;
    out->eos_token_id = self->eos_id;
    out->pad_token_id = self->pad_id;
    return LOOM_OK;
}

static void linear(const loom_model *self, float *out, const float *inp, size_t w, int64_t N, int64_t IC, int64_t OC)
{
    self->k->linear_forward(out, inp, t5_p(self, w), NULL, N, IC, OC);
}

loom_status t5_encode(loom_model *self, const loom_batch *sources, int64_t num_beams, int64_t max_positions)
{
    const loom_host_api *api = self->api;
    if (!self->k) return api->fail(self->host, LOOM_E_INVALID, "encode before bind");
    /* decode_rows writes logits into the caller's host buffer, which device kernels cannot. */
    if (self->k->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "generation with t5 runs on the CPU only for now (docs/gpu.md#what-runs-where): evaluate "
                         "with --no_cuda for --predict_with_generate");
    if (!sources || !LOOM_HAS_FIELD(sources, loom_batch, n_targets))
        return api->fail(self->host, LOOM_E_ABI, "encode: sources missing or too small");
    const loom_tensor_view *in = &sources->inputs;
    const int64_t B = sources->batch_size;
    if (B < 1 || B > self->max_batch)
        return api->fail(self->host, LOOM_E_INVALID, "encode: %lld sources; must be in [1, %lld] (bound batch size)",
                         (long long)B, (long long)self->max_batch);
    if (!in->data || in->dtype != LOOM_DTYPE_I32 || in->ndim != 2 || in->shape[0] != B || in->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_INVALID, "encode: inputs must be i32 token ids [%lld, source length]",
                         (long long)B);
    const int64_t S = in->shape[1];
    if (S < 1 || S > self->max_T)
        return api->fail(self->host, LOOM_E_INVALID, "encode: source of %lld tokens; must be in [1, %lld]",
                         (long long)S, (long long)self->max_T);
    if (num_beams < 1 || num_beams > 1024)
        return api->fail(self->host, LOOM_E_INVALID, "encode: num_beams %lld must be in [1, 1024]",
                         (long long)num_beams);
    if (max_positions < 1 || max_positions > self->n_positions)
        return api->fail(self->host, LOOM_E_INVALID, "encode: max_positions %lld is outside [1, n_positions = %lld]",
                         (long long)max_positions, (long long)self->n_positions);
    const int32_t *ids = in->data, *mask = NULL;
    for (int64_t i = 0; i < B * S; i++)
        if (ids[i] < 0 || ids[i] >= self->V)
            return api->fail(self->host, LOOM_E_INVALID,
                             "encode: token id %d at row %lld, position %lld is outside the vocabulary [0, %lld)",
                             ids[i], (long long)(i / S), (long long)(i % S), (long long)self->V);
    if (LOOM_HAS_FIELD(sources, loom_batch, reserved1) && sources->attention_mask.data) {
        const loom_tensor_view *m = &sources->attention_mask;
        if (m->dtype != LOOM_DTYPE_I32 || m->ndim != 2 || m->shape[0] != B || m->shape[1] != S)
            return api->fail(self->host, LOOM_E_INVALID, "encode: attention_mask must be i32 [%lld, %lld]",
                             (long long)B, (long long)S);
        mask = m->data;
    }

    t5_decode_free(self);
    const int64_t L = self->dec.L, D = self->D, E = self->E, F = self->F, H = self->H, R = B * num_beams,
                  P = max_positions;
    const int64_t wide = F > D ? (F > E ? F : E) : (D > E ? D : E);
    const int64_t keys = P > S ? P : S;
    const int64_t total = 2 * L * up(R * P * E) + 2 * L * up(B * S * E) + up(B * S) + 3 * up(R * D) + up(R) +
                          3 * up(R * E) + up(R * wide) + 3 * up(R * F) + up(R * H * keys) + up(H * P) + up(R * P * E);
    float *p = api->alloc(self->host, (size_t)total * sizeof(float), 64, LOOM_DEVICE_CPU, 0);
    if (!p)
        return api->fail(self->host, LOOM_E_NOMEM,
                         "out of memory for the decoder's key/value cache (%lld bytes: %lld rows x %lld positions)",
                         (long long)(total * 4), (long long)R, (long long)P);
    t5_decode_state *d = &self->decode;
    d->memory = p;
#define TAKE(n) (p += up(n), p - up(n))
    d->self_k = TAKE(L * R * P * E);
    d->self_v = TAKE(L * R * P * E);
    d->cross_k = TAKE(L * B * S * E);
    d->cross_v = TAKE(L * B * S * E);
    d->mask = (int32_t *)TAKE(B * S);
    d->x = TAKE(R * D);
    d->ln = TAKE(R * D);
    d->tmp = TAKE(R * wide);
    d->rstd = TAKE(R);
    d->q = TAKE(R * E);
    d->kv = TAKE(R * E);
    d->ctx = TAKE(R * E);
    d->h0 = TAKE(R * F);
    d->h1 = TAKE(R * F);
    d->act = TAKE(R * F);
    d->att = TAKE(R * H * keys);
    d->bias = TAKE(H * P);
    d->moved = TAKE(R * P * E);
#undef TAKE
    d->B = B, d->beams = num_beams, d->R = R, d->S = S, d->P = P, d->pos = 0;
    for (int64_t i = 0; i < B * S; i++)
        d->mask[i] = mask ? (mask[i] != 0) : 1;

    loom_status st = t5_encoder_forward(self, ids, d->mask, B, S);
    if (st) return st;
    for (int64_t l = 0; l < L; l++) {
        const t5_block *w = &self->dec.blocks[l];
        linear(self, d->cross_k + l * B * S * E, self->enc.out, w->ck, B * S, D, E);
        linear(self, d->cross_v + l * B * S * E, self->enc.out, w->cv, B * S, D, E);
    }
    return LOOM_OK;
}

loom_status t5_decode_rows(loom_model *self, const int32_t *tokens, float *logits)
{
    const loom_host_api *api = self->api;
    t5_decode_state *d = &self->decode;
    if (!d->memory) return api->fail(self->host, LOOM_E_INVALID, "decode_rows before encode");
    if (!self->k) return api->fail(self->host, LOOM_E_INVALID, "decode_rows: the model is not bound");
    if (!tokens || !logits) return api->fail(self->host, LOOM_E_INVALID, "decode_rows: tokens or logits is NULL");
    if (d->pos >= d->P)
        return api->fail(self->host, LOOM_E_INVALID, "decode_rows: position %lld is beyond the %lld given to encode",
                         (long long)d->pos, (long long)d->P);
    const int64_t R = d->R, D = self->D, E = self->E, F = self->F, H = self->H, P = d->P, S = d->S, pos = d->pos;
    for (int64_t r = 0; r < R; r++)
        if (tokens[r] < 0 || tokens[r] >= self->V)
            return api->fail(self->host, LOOM_E_INVALID,
                             "decode_rows: token id %d of row %lld is outside the vocabulary [0, %lld)", tokens[r],
                             (long long)r, (long long)self->V);
    const loom_kernels_api *k = self->k;
    const float eps = (float)self->eps;
    const t5_side *dec = &self->dec;
    t5_embed_forward(d->x, tokens, t5_p(self, self->shared), R, D);
    /* The causal bias of the query at pos against keys 0..pos: one row of the full [T, T] bias. */
    if (dec->L > 0) t5_bias_forward(d->bias, t5_p(self, dec->blocks[0].rel), H, 1, pos + 1, 0, self->NB, self->MD);
    for (int64_t l = 0; l < dec->L; l++) {
        const t5_block *w = &dec->blocks[l];
        float *ck = d->self_k + l * R * P * E, *cv = d->self_v + l * R * P * E;
        k->rmsnorm_forward(d->ln, d->rstd, d->x, t5_p(self, w->ln_sa), R, D, eps);
        linear(self, d->q, d->ln, w->q, R, D, E);
        linear(self, d->kv, d->ln, w->k, R, D, E);
        for (int64_t r = 0; r < R; r++)
            memcpy(ck + (r * P + pos) * E, d->kv + r * E, (size_t)E * sizeof(float));
        linear(self, d->kv, d->ln, w->v, R, D, E);
        for (int64_t r = 0; r < R; r++)
            memcpy(cv + (r * P + pos) * E, d->kv + r * E, (size_t)E * sizeof(float));
        k->mha_forward(d->ctx, d->att, d->q, ck, cv, d->bias, NULL, R, H, 1, pos + 1, self->KV, P, 1.0f, 0, 0.0f, 0);
        linear(self, d->tmp, d->ctx, w->o, R, E, D);
        for (int64_t i = 0; i < R * D; i++)
            d->x[i] += d->tmp[i];

        k->rmsnorm_forward(d->ln, d->rstd, d->x, t5_p(self, w->ln_ca), R, D, eps);
        linear(self, d->q, d->ln, w->cq, R, D, E);
        k->mha_forward(d->ctx, d->att, d->q, d->cross_k + l * d->B * S * E, d->cross_v + l * d->B * S * E, NULL,
                       d->mask, d->B, H, d->beams, S, self->KV, S, 1.0f, 0, 0.0f, 0);
        linear(self, d->tmp, d->ctx, w->co, R, E, D);
        for (int64_t i = 0; i < R * D; i++)
            d->x[i] += d->tmp[i];

        k->rmsnorm_forward(d->ln, d->rstd, d->x, t5_p(self, w->ln_ff), R, D, eps);
        linear(self, d->h0, d->ln, w->wi0, R, D, F);
        if (self->gated) {
            linear(self, d->h1, d->ln, w->wi1, R, D, F);
            k->gelu_forward(d->act, d->h0, R * F);
            for (int64_t i = 0; i < R * F; i++)
                d->act[i] *= d->h1[i];
        } else {
            k->relu_forward(d->act, d->h0, R * F);
        }
        linear(self, d->tmp, d->act, w->wo, R, F, D);
        for (int64_t i = 0; i < R * D; i++)
            d->x[i] += d->tmp[i];
    }
    k->rmsnorm_forward(d->ln, d->rstd, d->x, t5_p(self, dec->final_norm), R, D, eps);
    if (self->tied) { /* the rescale before the tied LM head, as in the full forward */
        const float s = 1.0f / sqrtf((float)D);
        for (int64_t i = 0; i < R * D; i++)
            d->ln[i] *= s;
    }
    linear(self, logits, d->ln, self->lm_head, R, D, self->V);
    d->pos++;
    return LOOM_OK;
}

loom_status t5_reorder_cache(loom_model *self, const int32_t *rows)
{
    const loom_host_api *api = self->api;
    t5_decode_state *d = &self->decode;
    if (!d->memory) return api->fail(self->host, LOOM_E_INVALID, "reorder_cache before encode");
    if (!rows) return api->fail(self->host, LOOM_E_INVALID, "reorder_cache: rows is NULL");
    const int64_t R = d->R, P = d->P, E = self->E, n = d->pos;
    for (int64_t r = 0; r < R; r++)
        if (rows[r] < 0 || rows[r] >= R || rows[r] / d->beams != r / d->beams)
            return api->fail(self->host, LOOM_E_INVALID,
                             "reorder_cache: row %lld takes row %d, which is not a beam of the same source (%lld "
                             "beams per source)",
                             (long long)r, rows[r], (long long)d->beams);
    if (n == 0) return LOOM_OK;
    float *caches[2] = {d->self_k, d->self_v};
    for (int64_t l = 0; l < self->dec.L; l++)
        for (int c = 0; c < 2; c++) {
            float *cache = caches[c] + l * R * P * E;
            for (int64_t r = 0; r < R; r++)
                memcpy(d->moved + r * n * E, cache + (int64_t)rows[r] * P * E, (size_t)(n * E) * sizeof(float));
            for (int64_t r = 0; r < R; r++)
                memcpy(cache + r * P * E, d->moved + r * n * E, (size_t)(n * E) * sizeof(float));
        }
    return LOOM_OK;
}
