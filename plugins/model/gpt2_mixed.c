/*
 * gpt2_mixed.c - what the precision plugin's dtypes change in gpt2: the matrix products, the
 * embeddings and where gradients are accumulated.
 *
 * In f32 runs every function here is the f32 kernel call gpt2.c made before 16-bit existed,
 * so f32 results do not depend on this file. Otherwise (param_dtype and/or compute_dtype f16
 * or bf16):
 *   - layernorm, attention, GELU, softmax and the loss compute in f32 (apex's "norms and
 *     losses in f32", what torch autocast does on the CPU too); the activations kept for
 *     backward are those autocast keeps, 16-bit where its are (gpt2.h, gpt2_layer_acts);
 *   - a product's inputs are cast to compute_dtype right before it (activations from f32,
 *     weights only when they are stored in another dtype: apex O1) and it accumulates in f32
 *     through the kernel table's gemm_mixed (oneDNN bf16 where the CPU has it);
 *   - a block's gradients are computed in an f32 scratch and added into the param_dtype
 *     gradient memory once, so each micro-batch rounds each gradient element once;
 *   - biases, layernorm parameters and wpe are read from an f32 copy refreshed before each
 *     forward (they are a few thousand elements per block; converting them is free).
 */
#include "gpt2.h"

#include <string.h>

static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }


int gpt2_is_matrix(const loom_model *self, size_t i)
{
    if (i == GPT2_WTE) return 1;
    if (i < 2 || i >= gpt2_lnf_tensor(self)) return 0;
    const int which = (int)((i - 2) % GPT2_LAYER_TENSORS);
    return which == GPT2_QKV_W || which == GPT2_ATTPROJ_W || which == GPT2_FC_W || which == GPT2_FCPROJ_W;
}

void gpt2_mixed_free(loom_model *self)
{
    self->api->free_memory(self->host, self->mixed_state.memory);
    memset(&self->mixed_state, 0, sizeof self->mixed_state);
}

/* The scratch's layout for a batch of `rows` rows (N) and for decoding chunks: byte offsets
 * of each part from its start; returns its size. Sets m's sizes. */
typedef struct mixed_layout {
    size_t small, a, b, w, grad;
} mixed_layout;

static size_t scratch_layout(const loom_model *self, int64_t rows, gpt2_mixed_state *m, mixed_layout *y)
{
    const int64_t C = self->C, width = max_i64(self->F, 3 * C);
    const size_t cs = loom_dtype_size(self->compute_dtype);
    int64_t small = 0;
    for (size_t i = 0; i < self->n_tensors; i++)
        if (!gpt2_is_matrix(self, i)) small += self->tensors[i].size;
    const int convert_weights = self->param_dtype != self->compute_dtype;
    m->rows = rows;
    m->width = width;
    /* f32 gradients of a block, of a chunk of the head's vocabulary rows, of wpe, of ln_f;
     * the head's chunks as large as that buffer allows (fewer, larger products). */
    m->grad_floats = max_i64(max_i64(self->layer_size, width * C), max_i64(self->P * C, 2 * C));
    m->head_chunk = convert_weights ? width : m->grad_floats / C; /* cast_w holds width x C */
    size_t at = 0;
#define ALIGN64(n) (((n) + 63) & ~(size_t)63)
    y->small = at;
    at += ALIGN64((size_t)small * sizeof(float));
    y->a = at;
    at += ALIGN64((size_t)(GPT2_DECODE_CHUNK * width) * cs);
    y->b = at;
    at += ALIGN64((size_t)(rows * width) * cs);
    y->w = at;
    if (convert_weights) at += ALIGN64((size_t)(width * C) * cs);
    y->grad = at;
    at += ALIGN64((size_t)m->grad_floats * sizeof(float));
#undef ALIGN64
    return at;
}

size_t gpt2_mixed_scratch_bytes(const loom_model *self, int64_t rows)
{
    if (!self->mixed) return 0;
    gpt2_mixed_state m;
    mixed_layout y;
    return scratch_layout(self, rows, &m, &y);
}

loom_status gpt2_mixed_bind(loom_model *self, int64_t rows, void *scratch)
{
    gpt2_mixed_free(self);
    if (!self->mixed) return LOOM_OK;
    gpt2_mixed_state *m = &self->mixed_state;
    mixed_layout y;
    scratch_layout(self, rows, m, &y);
    /* What must outlive a step (the index) apart from the scratch, which holds nothing between
     * a backward and the next forward. */
    const size_t bytes = (self->n_tensors * sizeof(int64_t) + 63) & ~(size_t)63;
    char *memory = self->api->alloc(self->host, bytes, 64, LOOM_DEVICE_CPU, 0);
    if (!memory)
        return self->api->fail(self->host, LOOM_E_NOMEM, "out of memory for the mixed-precision scratch (%zu bytes)",
                               bytes);
    m->memory = memory;
    m->bytes = bytes;
    m->small_at = (int64_t *)memory;
    char *base = scratch;
    m->small = (float *)(base + y.small);
    m->cast_a = base + y.a;
    m->cast_b = base + y.b;
    m->cast_w = self->param_dtype != self->compute_dtype ? base + y.w : NULL;
    m->grad = (float *)(base + y.grad);
    int64_t next = 0;
    for (size_t i = 0; i < self->n_tensors; i++) {
        if (gpt2_is_matrix(self, i)) {
            m->small_at[i] = -1;
            continue;
        }
        m->small_at[i] = next;
        next += self->tensors[i].size;
    }
    return LOOM_OK;
}

void gpt2_mixed_stage_range(loom_model *self, int64_t begin, int64_t end)
{
    if (self->param_dtype == LOOM_DTYPE_F32) return; /* gpt2_f32 reads the parameters */
    const gpt2_mixed_state *m = &self->mixed_state;
    for (size_t i = 0; i < self->n_tensors; i++)
        if (m->small_at[i] >= 0 && self->tensors[i].offset >= begin &&
            self->tensors[i].offset + self->tensors[i].size <= end)
            self->k->convert(m->small + m->small_at[i], LOOM_DTYPE_F32, gpt2_raw(self, i), self->param_dtype,
                             self->tensors[i].size);
}

void gpt2_mixed_stage(loom_model *self)
{
    gpt2_mixed_stage_range(self, 0, self->n_params);
}

/* n elements of tensor memory (param_dtype) as compute_dtype: the memory itself, or a copy. */
static const void *weights(loom_model *self, const void *stored, int64_t n)
{
    if (self->param_dtype == self->compute_dtype) return stored;
    self->k->convert(self->mixed_state.cast_w, self->compute_dtype, stored, self->param_dtype, n);
    return self->mixed_state.cast_w;
}

static void add_bias_rows(float *out, const float *bias, int64_t N, int64_t OC)
{
    for (int64_t n = 0; n < N; n++) memcpy(out + n * OC, bias, (size_t)OC * sizeof(float));
}

const void *gpt2_keep(loom_model *self, void *kept, const float *x, int64_t n)
{
    if (!self->mixed) return x;
    self->k->convert(kept, self->compute_dtype, x, LOOM_DTYPE_F32, n);
    return kept;
}

const void *gpt2_cast(loom_model *self, const float *x, int64_t n)
{
    if (!self->mixed) return x;
    self->k->convert(self->mixed_state.cast_a, self->compute_dtype, x, LOOM_DTYPE_F32, n);
    return self->mixed_state.cast_a;
}

void gpt2_mm_forward(loom_model *self, float *out, const void *inp, size_t w, size_t b, int64_t N, int64_t IC,
                     int64_t OC)
{
    const loom_kernels_api *k = self->k;
    if (!self->mixed) {
        k->conv1d_forward(out, inp, gpt2_f32(self, w), gpt2_f32(self, b), N, IC, OC);
        return;
    }
    const uint32_t cd = self->compute_dtype;
    /* Bias first, then the product adds to it (beta 1): no second pass over out. */
    add_bias_rows(out, gpt2_f32(self, b), N, OC);
    const void *W = weights(self, gpt2_raw(self, w), IC * OC);
    k->gemm_mixed(0, 0, N, OC, IC, 1.0f, inp, cd, IC, W, cd, OC, 1.0f, out, OC);
}

void gpt2_mm_backward(loom_model *self, float *dinp, float *dW, float *db, const float *dout, const void *inp,
                      size_t w, int64_t N, int64_t IC, int64_t OC)
{
    const loom_kernels_api *k = self->k;
    if (!self->mixed) {
        const float *W = gpt2_f32(self, w);
        if (dinp) k->sgemm(0, 1, N, IC, OC, 1.0f, dout, OC, W, OC, 0.0f, dinp, IC);
        k->conv1d_backward(NULL, dW, db, dout, inp, W, N, IC, OC);
        return;
    }
    gpt2_mixed_state *m = &self->mixed_state;
    const uint32_t cd = self->compute_dtype;
    const void *W = weights(self, gpt2_raw(self, w), IC * OC);
    /* N <= m->rows (bind sized the scratch for the whole batch). */
    k->convert(m->cast_b, cd, dout, LOOM_DTYPE_F32, N * OC);
    const void *dY = m->cast_b;
    if (dinp) k->gemm_mixed(0, 1, N, IC, OC, 1.0f, dY, cd, OC, W, cd, OC, 0.0f, dinp, IC);
    /* A fresh scratch is written, not added to: no zeroing pass over the weight gradient. */
    k->gemm_mixed(1, 0, IC, OC, N, 1.0f, inp, cd, IC, dY, cd, OC, gpt2_grad_fresh(self) ? 0.0f : 1.0f, dW, OC);
    /* db += the column sums of dout, by the f32 path's loop: a product 1^T dout would make
     * BLAS pack all of dout first. */
    k->conv1d_backward(NULL, NULL, db, dout, NULL, NULL, N, IC, OC);
}

/* The head's products over the whole vocabulary at once only where they run on 16-bit
 * operands as stored (bf16 on oneDNN): any other product widens its operands to f32 first,
 * and a whole [V, C] wte plus [N, V] dlogits widened would outweigh the 16-bit savings. */
static int whole_head(const loom_model *self)
{
    return self->param_dtype == self->compute_dtype && self->compute_dtype == LOOM_DTYPE_BF16;
}

void gpt2_head_forward(loom_model *self, float *logits, const void *lnf, int64_t N)
{
    const loom_kernels_api *k = self->k;
    const int64_t C = self->C, V = self->V;
    if (!self->mixed) {
        k->linear_forward(logits, lnf, gpt2_f32(self, GPT2_WTE), NULL, N, C, V);
        return;
    }
    gpt2_mixed_state *m = &self->mixed_state;
    const uint32_t cd = self->compute_dtype;
    const size_t ps = self->param_size;
    const char *wte = gpt2_raw(self, GPT2_WTE);
    if (whole_head(self)) { /* one product over the whole vocabulary */
        k->gemm_mixed(0, 1, N, V, C, 1.0f, lnf, cd, C, wte, cd, C, 0.0f, logits, V);
        return;
    }
    for (int64_t v0 = 0; v0 < V; v0 += m->head_chunk) {
        const int64_t vc = V - v0 < m->head_chunk ? V - v0 : m->head_chunk;
        const void *W = weights(self, wte + (size_t)(v0 * C) * ps, vc * C);
        k->gemm_mixed(0, 1, N, vc, C, 1.0f, lnf, cd, C, W, cd, C, 0.0f, logits + v0, V);
    }
}

void gpt2_head_backward(loom_model *self, float *dlnf, void *dwte, const void *dlogits, const void *lnf, int64_t N)
{
    const loom_kernels_api *k = self->k;
    const int64_t C = self->C, V = self->V;
    if (!self->mixed) {
        const float *wte = gpt2_f32(self, GPT2_WTE);
        k->linear_backward(NULL, dwte, NULL, dlogits, lnf, wte, N, C, V); /* dwte += dlogits^T lnf */
        k->sgemm(0, 0, N, C, V, 1.0f, dlogits, V, wte, C, 0.0f, dlnf, C);  /* dlnf = dlogits wte   */
        return;
    }
    gpt2_mixed_state *m = &self->mixed_state;
    const uint32_t cd = self->compute_dtype;
    const size_t ps = self->param_size, cs = loom_dtype_size(cd);
    const char *wte = gpt2_raw(self, GPT2_WTE), *dY = dlogits;
    const void *X = lnf;
    const int whole = whole_head(self);
    if (whole) k->gemm_mixed(0, 0, N, C, V, 1.0f, dY, cd, V, wte, cd, C, 0.0f, dlnf, C); /* dlnf = dlogits wte */
    /* dwte by chunks of vocabulary rows: an f32 chunk, then one rounding into the gradients. */
    for (int64_t v0 = 0; v0 < V; v0 += m->head_chunk) {
        const int64_t vc = V - v0 < m->head_chunk ? V - v0 : m->head_chunk;
        const void *dYc = dY + (size_t)v0 * cs;
        if (!whole) {
            const void *W = weights(self, wte + (size_t)(v0 * C) * ps, vc * C);
            k->gemm_mixed(0, 0, N, C, vc, 1.0f, dYc, cd, V, W, cd, C, v0 ? 1.0f : 0.0f, dlnf, C);
        }
        char *dst = (char *)dwte + (size_t)(v0 * C) * ps;
        float *g = gpt2_grad_begin(self, dst, vc * C);
        k->gemm_mixed(1, 0, vc, C, N, 1.0f, dYc, cd, V, X, cd, C, gpt2_grad_fresh(self) ? 0.0f : 1.0f, g, C);
        gpt2_grad_end(self, dst, vc * C);
    }
}

void gpt2_embed_forward(loom_model *self, float *out, const int32_t *tokens, int64_t position0, int64_t B, int64_t T)
{
    const loom_kernels_api *k = self->k;
    const int64_t C = self->C;
    const float *wpe = gpt2_f32(self, GPT2_WPE) + position0 * C;
    if (self->param_dtype == LOOM_DTYPE_F32) {
        k->encoder_forward(out, tokens, gpt2_f32(self, GPT2_WTE), wpe, B, T, C);
        return;
    }
    const char *wte = gpt2_raw(self, GPT2_WTE);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            float *row = out + (b * T + t) * C;
            k->convert(row, LOOM_DTYPE_F32, wte + (size_t)tokens[b * T + t] * (size_t)C * self->param_size,
                       self->param_dtype, C);
            k->add(row, row, wpe + t * C, C);
        }
}

void gpt2_embed_backward(loom_model *self, void *dwte, void *dwpe, const float *dout, const int32_t *tokens, int64_t B,
                         int64_t T)
{
    const loom_kernels_api *k = self->k;
    const int64_t C = self->C;
    if (self->param_dtype == LOOM_DTYPE_F32) {
        k->encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
        return;
    }
    /* wpe: the positions' sums in f32, then one rounding each. wte: a row per token, in the
     * batch's order (a repeated token rounds once per occurrence, the same on every run). */
    float *g = gpt2_grad_begin(self, dwpe, T * C);
    gpt2_grad_zero(self, g, T * C);
    for (int64_t b = 0; b < B; b++) k->accumulate(g, dout + b * T * C, T * C);
    gpt2_grad_end(self, dwpe, T * C);
    for (int64_t i = 0; i < B * T; i++)
        k->accumulate_f32((char *)dwte + (size_t)tokens[i] * (size_t)C * self->param_size, self->param_dtype,
                          dout + i * C, C);
}

float *gpt2_grad_begin(loom_model *self, void *sink_memory, int64_t count)
{
    (void)count;
    if (self->param_dtype == LOOM_DTYPE_F32) return sink_memory;
    return self->mixed_state.grad;
}

int gpt2_grad_fresh(const loom_model *self) { return self->param_dtype != LOOM_DTYPE_F32; }

void gpt2_grad_zero(loom_model *self, float *g, int64_t count)
{
    if (gpt2_grad_fresh(self)) memset(g, 0, (size_t)count * sizeof(float));
}

void gpt2_grad_end(loom_model *self, void *sink_memory, int64_t count)
{
    if (self->param_dtype == LOOM_DTYPE_F32) return;
    self->k->accumulate_f32(sink_memory, self->param_dtype, self->mixed_state.grad, count);
}
