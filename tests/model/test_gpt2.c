/* test_gpt2.c - the gpt2 model plugin, loaded with dlopen() from the build's plugin folder and
 * driven through its vtable by the test host of test_host.h (no libloom needed):
 *   (a) the parameter list: HF names, shapes, no-decay flags, flat layout;
 *   (b) forward loss and logits against a naive double-precision GPT-2 written here;
 *   (c) every parameter tensor's gradient against central differences of seed * loss_sum,
 *       through the real grad-sink protocol, with an ignored label and gradients accumulated
 *       onto non-zero memory; backward_outputs against backward;
 *   (d) the sink's order: wte/wpe acquired first, ln_f released, then block 1, block 0, and
 *       wte/wpe last; through a two-part sink (ABI 1.4) wte released first, its lookup rows
 *       handed over at the end, and the same gradients;
 *   (e) decode_step one token at a time and in chunks against the full forward's logits;
 *   (f) init statistics (scaled residual projections), biases 0, LayerNorm weights 1;
 *   (g) errors: bad token, bad label, too long a sequence, bad configurations, binding. */
#include <math.h>
#include <loom/kernels.h>
#include <loom/model.h>

#include "test_host.h"
#include "open_plugin.h"
#include "test_util.h"
#include "../../plugins/model/model_common.h" /* NEFTune's draws, to rebuild the noise */

#ifndef GPT2_PLUGIN_PATH
#error "GPT2_PLUGIN_PATH must name the built gpt2.so"
#endif

static const loom_model_vtable *vt;
static const loom_plugin_desc *desc;
static loom_host host;

/* ---- a host log that counts warnings ----------------------------------------------------- */

static int warnings;
static char last_warning[512];

static void counting_log(loom_host *h, uint32_t level, const char *fmt, ...)
{
    (void)h;
    va_list ap;
    va_start(ap, fmt);
    if (level == LOOM_LOG_WARNING) {
        warnings++;
        vsnprintf(last_warning, sizeof last_warning, fmt, ap);
    }
    va_end(ap);
}

static loom_host_api api;

/* ---- grad sink that records the protocol ------------------------------------------------- */

#include "sink_recorder.h"

/* ---- configurations and views ------------------------------------------------------------ */

typedef struct gcfg {
    const char *vocab, *positions, *embd, *layer, *head;
} gcfg;

static const gcfg TINY = {"37", "16", "12", "2", "3"};

/* label_smoothing_factor of the models make_cfg builds and of reference_forward's loss (HF's
 * LabelSmoother: (1 - eps) nll + eps mean over the vocabulary of -log p); 0: none. */
static double smoothing;
static char smoothing_text[32];

static loom_config make_cfg(gcfg g)
{
    loom_config cfg = {.spec = desc->params};
    cfg.entries[cfg.n++] = (test_cfg_entry){"vocab_size", LOOM_PARAM_INT, g.vocab};
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_positions", LOOM_PARAM_INT, g.positions};
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_embd", LOOM_PARAM_INT, g.embd};
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_layer", LOOM_PARAM_INT, g.layer};
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_head", LOOM_PARAM_INT, g.head};
    if (smoothing > 0.0) {
        snprintf(smoothing_text, sizeof smoothing_text, "%.17g", smoothing);
        cfg.entries[cfg.n++] = (test_cfg_entry){"label_smoothing_factor", LOOM_PARAM_FLOAT, smoothing_text};
    }
    return cfg;
}

static loom_tensor_view view(void *data, uint32_t dtype, uint32_t ndim, int64_t d0, int64_t d1, int64_t d2)
{
    loom_tensor_view v = {LOOM_HEADER_INIT(loom_tensor_view), .data = data, .dtype = dtype,
                          .device = LOOM_DEVICE_CPU, .ndim = ndim};
    v.shape[0] = d0;
    v.shape[1] = d1;
    v.shape[2] = d2;
    return v;
}

static loom_batch make_batch(int32_t *tokens, int32_t *labels, int64_t B, int64_t T)
{
    loom_batch b = {LOOM_HEADER_INIT(loom_batch), .batch_size = B};
    b.inputs = view(tokens, LOOM_DTYPE_I32, 2, B, T, 0);
    b.labels = view(labels, LOOM_DTYPE_I32, 2, B, T, 0);
    for (int64_t i = 0; labels && i < B * T; i++) b.n_targets += labels[i] != -100;
    return b;
}

static loom_model_binding make_binding(float *params, int64_t max_batch, int64_t max_T)
{
    return (loom_model_binding){LOOM_HEADER_INIT(loom_model_binding), .params = params,
                                .param_dtype = LOOM_DTYPE_F32, .compute_dtype = LOOM_DTYPE_F32,
                                .device = LOOM_DEVICE_CPU, .max_batch_size = max_batch,
                                .kernels = NULL, .max_sequence_length = max_T};
}

/* The model as the test sees it: sizes and every tensor's offset, from param_info alone. */
typedef struct net {
    int64_t V, P, C, L, F, NH;
    size_t n_tensors;
    int64_t offset[256], size[256];
    int64_t n_params;
} net;

static net describe(loom_model *m, int64_t NH)
{
    net n = {0};
    n.n_tensors = vt->param_count(m);
    int64_t offset = 0;
    for (size_t i = 0; i < n.n_tensors && i < 256; i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        CHECK(vt->param_info(m, i, &info) == LOOM_OK);
        n.offset[i] = offset;
        n.size[i] = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
        offset += n.size[i];
        if (i == 0) n.V = info.shape[0], n.C = info.shape[1];
        if (i == 1) n.P = info.shape[0];
        if (i == 2 + 8) n.F = info.shape[1]; /* mlp.c_fc.weight [C, F] */
    }
    n.L = ((int64_t)n.n_tensors - 4) / 12;
    n.NH = NH;
    n.n_params = offset;
    return n;
}

/* ---- the reference: a naive double-precision GPT-2 ---------------------------------------- */

static void ref_layernorm(double *out, const double *x, const float *w, const float *b, int64_t C)
{
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < C; c++) mean += x[c];
    mean /= (double)C;
    for (int64_t c = 0; c < C; c++) var += (x[c] - mean) * (x[c] - mean);
    var /= (double)C;
    const double rstd = 1.0 / sqrt(var + 1e-5);
    for (int64_t c = 0; c < C; c++) out[c] = (x[c] - mean) * rstd * w[c] + b[c];
}

/* out[OC] = in[IC] @ w[IC, OC] + b (HF Conv1D) */
static void ref_conv1d(double *out, const double *in, const float *w, const float *b, int64_t IC, int64_t OC)
{
    for (int64_t o = 0; o < OC; o++) {
        double s = b[o];
        for (int64_t i = 0; i < IC; i++) s += in[i] * w[i * OC + o];
        out[o] = s;
    }
}

/* NEFTune's noise [B, T, C] that reference_forward adds to wte's output before wpe, as HF's
 * hook on get_input_embeddings() does; NULL: none. */
static const float *ref_noise;

/* Logits [B, T, V] (may be NULL) and the summed CE loss over labels != -100. */
static double reference_forward(const net *n, const float *params, const int32_t *tokens, const int32_t *labels,
                                int64_t B, int64_t T, double *logits_out)
{
    const int64_t C = n->C, F = n->F, V = n->V, NH = n->NH, hs = C / NH;
    double *x = calloc((size_t)(T * C), sizeof *x), *ln = calloc((size_t)(T * C), sizeof *x);
    double *qkv = calloc((size_t)(T * 3 * C), sizeof *x), *y = calloc((size_t)(T * C), sizeof *x);
    double *h = calloc((size_t)F, sizeof *x), *tmp = calloc((size_t)(C > V ? C : V), sizeof *x);
    double loss = 0.0;
    const float *wte = params + n->offset[0], *wpe = params + n->offset[1];
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < C; c++)
                x[t * C + c] = (double)wte[tokens[b * T + t] * C + c] +
                               (ref_noise ? (double)ref_noise[(b * T + t) * C + c] : 0.0) + wpe[t * C + c];
        for (int64_t l = 0; l < n->L; l++) {
            const float *p[12];
            for (int j = 0; j < 12; j++) p[j] = params + n->offset[2 + l * 12 + j];
            for (int64_t t = 0; t < T; t++) {
                ref_layernorm(ln + t * C, x + t * C, p[0], p[1], C);
                ref_conv1d(qkv + t * 3 * C, ln + t * C, p[2], p[3], C, 3 * C);
            }
            for (int64_t hd = 0; hd < NH; hd++) {
                for (int64_t t = 0; t < T; t++) {
                    double att[64], max = -INFINITY, sum = 0.0;
                    for (int64_t s = 0; s <= t; s++) {
                        double d = 0.0;
                        for (int64_t i = 0; i < hs; i++)
                            d += qkv[t * 3 * C + hd * hs + i] * qkv[s * 3 * C + C + hd * hs + i];
                        att[s] = d / sqrt((double)hs);
                        max = att[s] > max ? att[s] : max;
                    }
                    for (int64_t s = 0; s <= t; s++) sum += att[s] = exp(att[s] - max);
                    for (int64_t i = 0; i < hs; i++) {
                        double acc = 0.0;
                        for (int64_t s = 0; s <= t; s++) acc += att[s] / sum * qkv[s * 3 * C + 2 * C + hd * hs + i];
                        y[t * C + hd * hs + i] = acc;
                    }
                }
            }
            for (int64_t t = 0; t < T; t++) {
                ref_conv1d(tmp, y + t * C, p[4], p[5], C, C);
                for (int64_t c = 0; c < C; c++) x[t * C + c] += tmp[c];
                ref_layernorm(ln + t * C, x + t * C, p[6], p[7], C);
                ref_conv1d(h, ln + t * C, p[8], p[9], C, F);
                for (int64_t i = 0; i < F; i++) {
                    const double u = h[i];
                    h[i] = 0.5 * u * (1.0 + tanh(sqrt(2.0 / M_PI) * (u + 0.044715 * u * u * u)));
                }
                ref_conv1d(tmp, h, p[10], p[11], F, C);
                for (int64_t c = 0; c < C; c++) x[t * C + c] += tmp[c];
            }
        }
        const float *lnf = params + n->offset[n->n_tensors - 2];
        for (int64_t t = 0; t < T; t++) {
            ref_layernorm(ln + t * C, x + t * C, lnf, lnf + C, C);
            double max = -INFINITY, sum = 0.0, mean = 0.0;
            for (int64_t v = 0; v < V; v++) {
                double s = 0.0;
                for (int64_t c = 0; c < C; c++) s += ln[t * C + c] * wte[v * C + c];
                tmp[v] = s;
                mean += s / (double)V;
                max = s > max ? s : max;
                if (logits_out) logits_out[(b * T + t) * V + v] = s;
            }
            for (int64_t v = 0; v < V; v++) sum += exp(tmp[v] - max);
            const int32_t label = labels ? labels[b * T + t] : -100;
            const double lse = log(sum) + max;
            if (label != -100) loss += (1.0 - smoothing) * (lse - tmp[label]) + smoothing * (lse - mean);
        }
    }
    free(x), free(ln), free(qkv), free(y), free(h), free(tmp);
    return loss;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Parameters worth testing with: the init, plus non-trivial biases and LayerNorm weights (so
 * a bias or gain routed to the wrong place shows), and weights large enough that gradients
 * are well above float noise. */
static void interesting_params(loom_model *m, const net *n, float *params)
{
    CHECK(vt->init_params(m, params) == LOOM_OK);
    for (size_t i = 0; i < n->n_tensors; i++) {
        float *p = params + n->offset[i];
        for (int64_t j = 0; j < n->size[i]; j++) {
            const float wiggle = (float)sin(0.37 * (double)j + 1.3 * (double)i);
            if (i < 2) p[j] *= 10.0f;                      /* wte, wpe: std 0.2 */
            else if (p[j] == 1.0f) p[j] = 1.0f + 0.2f * wiggle; /* LayerNorm weights */
            else if (p[j] == 0.0f) p[j] = 0.1f * wiggle;        /* biases */
            else p[j] *= 8.0f;
        }
    }
}

static void make_tokens(int32_t *tokens, int32_t *labels, int64_t B, int64_t T, int64_t V)
{
    for (int64_t i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)((i * 7 + 3) % V);
        labels[i] = (int32_t)((i * 11 + 5) % V);
    }
    labels[2] = -100; /* one position that is not a target */
}

static int fails_with(loom_status got, loom_status want, const char *needle)
{
    const int ok = got == want && strstr(host.last_error, needle) != NULL;
    if (!ok)
        fprintf(stderr, "expected status %d mentioning \"%s\", got %d: %s\n", want, needle, got, host.last_error);
    return ok;
}

/* ---- (a) descriptor and parameter list ----------------------------------------------------- */

static void test_descriptor(void)
{
    CHECK(desc->abi_major == LOOM_ABI_MAJOR);
    CHECK(desc->kind == LOOM_KIND_MODEL);
    CHECK(strcmp(desc->name, "gpt2") == 0);
    CHECK(vt->struct_size == sizeof(loom_model_vtable));
    CHECK(vt->create && vt->destroy && vt->param_count && vt->param_info && vt->init_params && vt->bind &&
          vt->forward && vt->backward && vt->output_shape && vt->activation_bytes && vt->backward_outputs &&
          vt->decode_begin && vt->decode_step);
    static const char *const keys[] = {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                                       "layer_norm_epsilon", "initializer_range", "activation_function",
                                       "resid_pdrop", "embd_pdrop", "attn_pdrop", "tie_word_embeddings"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        int found = 0;
        for (const loom_param_spec *s = desc->params; s->key; s++) found += strcmp(s->key, keys[i]) == 0;
        CHECK(found == 1);
    }
}

static void test_params(void)
{
    loom_config cfg = make_cfg(TINY);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    CHECK(vt->param_count(m) == 2 + 2 * 12 + 2);
    const int64_t C = 12, V = 37, P = 16, F = 48;
    typedef struct wanted {
        const char *name;
        uint32_t ndim;
        int64_t d0, d1;
        uint32_t flags;
    } wanted;
    wanted want[28] = {{"transformer.wte.weight", 2, V, C, LOOM_PARAM_EMBEDDING},
                       {"transformer.wpe.weight", 2, P, C, LOOM_PARAM_EMBEDDING}};
    for (int l = 0; l < 2; l++) {
        static const char *const suffix[12] = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                                               "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                                               "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                                               "mlp.c_proj.bias"};
        const int64_t shape[12][2] = {{C, 0}, {C, 0}, {C, 3 * C}, {3 * C, 0}, {C, C}, {C, 0},
                                      {C, 0}, {C, 0}, {C, F},     {F, 0},     {F, C}, {C, 0}};
        static char names[2][12][64];
        for (int j = 0; j < 12; j++) {
            snprintf(names[l][j], 64, "transformer.h.%d.%s", l, suffix[j]);
            want[2 + l * 12 + j].name = names[l][j];
            want[2 + l * 12 + j].ndim = shape[j][1] ? 2 : 1;
            want[2 + l * 12 + j].d0 = shape[j][0];
            want[2 + l * 12 + j].d1 = shape[j][1];
            /* HF's rule: no decay for biases and LayerNorm weights. */
            want[2 + l * 12 + j].flags = (shape[j][1] == 0) ? LOOM_PARAM_NO_DECAY : 0;
        }
    }
    want[26] = (wanted){"transformer.ln_f.weight", 1, C, 0, LOOM_PARAM_NO_DECAY};
    want[27] = (wanted){"transformer.ln_f.bias", 1, C, 0, LOOM_PARAM_NO_DECAY};
    for (size_t i = 0; i < 28; i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        CHECK(vt->param_info(m, i, &info) == LOOM_OK);
        if (strcmp(info.name, want[i].name) != 0)
            fprintf(stderr, "tensor %zu: %s, want %s\n", i, info.name, want[i].name);
        CHECK(strcmp(info.name, want[i].name) == 0);
        CHECK(info.ndim == want[i].ndim);
        CHECK(info.shape[0] == want[i].d0);
        CHECK(info.shape[1] == want[i].d1);
        CHECK(info.flags == want[i].flags);
        CHECK(info.struct_size == sizeof(loom_param_info));
    }
    loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
    CHECK(vt->param_info(m, 28, &info) == LOOM_E_INVALID);
    const net n = describe(m, 3);
    CHECK(n.n_params ==
          (V + P) * C + 2 * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + C * F + F + F * C + C) + 2 * C);
    int64_t shape[LOOM_MAX_DIMS] = {0};
    uint32_t ndim = 0;
    CHECK(vt->output_shape(m, shape, &ndim) == LOOM_OK);
    CHECK(ndim == 2 && shape[0] == P && shape[1] == V); /* before bind: the whole context */
    vt->destroy(m);
}

/* ---- (b) forward, (c) gradients, (d) sink order ------------------------------------------- */

static void test_forward_backward(gcfg g, int64_t B, int64_t T, int64_t max_T)
{
    loom_config cfg = make_cfg(g);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const int64_t NH = atoi(g.head);
    const net n = describe(m, NH);
    const int64_t V = n.V;
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    float *grads = malloc(sizeof(float) * (size_t)n.n_params);
    float *grads0 = malloc(sizeof(float) * (size_t)n.n_params);
    float *grads_out = malloc(sizeof(float) * (size_t)n.n_params);
    interesting_params(m, &n, params);
    loom_model_binding bind = make_binding(params, B, max_T);
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    CHECK(vt->activation_bytes(m) > 0);
    int64_t shape[LOOM_MAX_DIMS] = {0};
    uint32_t ndim = 0;
    CHECK(vt->output_shape(m, shape, &ndim) == LOOM_OK);
    CHECK(ndim == 2 && shape[0] == (max_T ? max_T : n.P) && shape[1] == V);

    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(B * T)), *labels = malloc(sizeof(int32_t) * (size_t)(B * T));
    make_tokens(tokens, labels, B, T, V);
    loom_batch batch = make_batch(tokens, labels, B, T);

    /* (b) forward, with the logits written to a [B, T + 2, V] outputs view (padded rows). */
    const int64_t S = T + 2;
    float *logits = malloc(sizeof(float) * (size_t)(B * S * V));
    for (int64_t i = 0; i < B * S * V; i++) logits[i] = NAN;
    loom_tensor_view outputs = view(logits, LOOM_DTYPE_F32, 3, B, S, V);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &res, &outputs) == LOOM_OK);
    double *ref_logits = malloc(sizeof(double) * (size_t)(B * T * V));
    const double ref_loss = reference_forward(&n, params, tokens, labels, B, T, ref_logits);
    CHECK_CLOSE(res.loss_sum, ref_loss, 1e-4, 1e-5);
    CHECK(res.n_targets == B * T - 1);
    CHECK(res.n_correct == -1);
    int bad = 0;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < S; t++) {
            for (int64_t v = 0; v < V; v++) {
                const float got = logits[(b * S + t) * V + v];
                const double want = t < T ? ref_logits[(b * T + t) * V + v] : 0.0;
                bad += !(fabs(got - want) <= 1e-4 + 1e-4 * fabs(want));
            }
        }
    }
    CHECK(bad == 0);

    /* (c) backward into a sink whose memory already holds values: the model must add. */
    const float seed = 0.7f;
    for (int64_t i = 0; i < n.n_params; i++) grads0[i] = grads[i] = 0.01f * (float)(i % 7) - 0.03f;
    sink_ctx sc;
    loom_grad_sink sink;
    sink_init(&sc, grads, n.n_params, &sink);
    CHECK(vt->backward(m, &batch, seed, &sink) == LOOM_OK);

    /* (d) protocol: wte+wpe (adjacent) acquired first and released last; ln_f released
     * first; then block L-1 .. 0, each as one range of its twelve tensors; nothing open. */
    const int64_t emb_end = n.offset[2], lnf_begin = n.offset[n.n_tensors - 2];
    CHECK(sc.violations == 0);
    CHECK(sc.n_open == 0);
    CHECK(sc.n_released == (int)n.L + 2);
    CHECK(sc.n_acquired == (int)n.L + 2);
    CHECK(sc.acquired[0].begin == 0 && sc.acquired[0].end == emb_end);
    CHECK(sc.released[0].begin == lnf_begin && sc.released[0].end == n.n_params);
    for (int64_t r = 1; r <= n.L && r < sc.n_released; r++) {
        const int64_t l = n.L - r;
        CHECK(sc.released[r].begin == n.offset[2 + l * 12]);
        CHECK(sc.released[r].end == n.offset[2 + (l + 1) * 12]);
    }
    if (sc.n_released == n.L + 2) {
        CHECK(sc.released[n.L + 1].begin == 0 && sc.released[n.L + 1].end == emb_end);
    }

    /* Every tensor: all entries of small ones, a spread sample of large ones. */
    bad = 0;
    int checked = 0;
    double gnorm = 0.0;
    const float eps = 1e-2f;
    for (size_t ti = 0; ti < n.n_tensors; ti++) {
        const int64_t size = n.size[ti], samples = size <= 48 ? size : 24;
        double tensor_norm = 0.0;
        for (int64_t s = 0; s < samples; s++) {
            const int64_t j = size <= 48 ? s : (s * 7919 + (int64_t)ti * 31) % size;
            const int64_t i = n.offset[ti] + j;
            const float p0 = params[i];
            loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
            params[i] = p0 + eps;
            CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
            const double lp = r.loss_sum;
            params[i] = p0 - eps;
            CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
            const double lm = r.loss_sum;
            params[i] = p0;
            const double numeric = (double)seed * (lp - lm) / (2.0 * (double)eps);
            const double analytic = (double)grads[i] - grads0[i];
            tensor_norm += fabs(analytic);
            checked++;
            if (!(fabs(analytic - numeric) <= 2e-3 + 2e-2 * fabs(numeric))) {
                if (bad++ < 10)
                    fprintf(stderr, "V=%lld grad of %zu[%lld]: analytic %.6g, numeric %.6g\n", (long long)V, ti,
                            (long long)j, analytic, numeric);
            }
        }
        if (!(tensor_norm > 0.0)) fprintf(stderr, "tensor %zu has no gradient\n", ti);
        CHECK(tensor_norm > 0.0); /* no tensor left out of backward */
        gnorm += tensor_norm;
    }
    CHECK(bad == 0);
    CHECK(checked > 300);
    CHECK(gnorm > 1.0);

    /* backward_outputs with d(outputs) = seed * (softmax - onehot) equals backward(seed),
     * both from the padded [B, T + 2, V] layout and from a dense [B, T, V] one. */
    for (int dense = 0; dense < 2; dense++) {
        const int64_t SS = dense ? T : S;
        float *dout = calloc((size_t)(B * SS * V), sizeof(float));
        loom_tensor_view out2 = view(logits, LOOM_DTYPE_F32, 3, B, SS, V);
        CHECK(vt->forward(m, &batch, &res, &out2) == LOOM_OK);
        for (int64_t b = 0; b < B; b++) {
            for (int64_t t = 0; t < T; t++) {
                const int32_t label = labels[b * T + t];
                if (label == -100) continue;
                const float *row = logits + (b * SS + t) * V;
                double max = -INFINITY, sum = 0.0;
                for (int64_t v = 0; v < V; v++) max = row[v] > max ? row[v] : max;
                for (int64_t v = 0; v < V; v++) sum += exp(row[v] - max);
                for (int64_t v = 0; v < V; v++)
                    dout[(b * SS + t) * V + v] =
                        (float)(seed *
                                (exp(row[v] - max) / sum - (1.0 - smoothing) * (v == label) - smoothing / (double)V));
            }
        }
        memcpy(grads_out, grads0, sizeof(float) * (size_t)n.n_params);
        sink_init(&sc, grads_out, n.n_params, &sink);
        loom_tensor_view dview = view(dout, LOOM_DTYPE_F32, 3, B, SS, V);
        CHECK(vt->backward_outputs(m, &batch, &dview, &sink) == LOOM_OK);
        CHECK(sc.violations == 0 && sc.n_open == 0 && sc.n_released == (int)n.L + 2);
        bad = 0;
        for (int64_t i = 0; i < n.n_params; i++) {
            const double a = (double)grads_out[i] - grads0[i], b = (double)grads[i] - grads0[i];
            bad += !(fabs(a - b) <= 1e-4 + 1e-3 * fabs(b));
        }
        CHECK(bad == 0);
        /* A second backward without a new forward is refused (its state is consumed). */
        CHECK(fails_with(vt->backward_outputs(m, &batch, &dview, &sink), LOOM_E_INVALID, "forward"));
        free(dout);
    }

    /* The fused classifier (ABI 1.3): a forward without outputs keeps no logits and backward
     * recomputes them chunk by chunk; train_step does both in one pass. The first equals the
     * unfused backward above up to round-off, train_step equals the first bit for bit, with
     * the same sink protocol. */
    if (LOOM_HAS(vt, loom_model_vtable, train_step)) {
        float *grads_fused = malloc(sizeof(float) * (size_t)n.n_params);
        memcpy(grads_fused, grads0, sizeof(float) * (size_t)n.n_params);
        sink_init(&sc, grads_fused, n.n_params, &sink);
        loom_forward_result rf = {LOOM_HEADER_INIT(loom_forward_result)};
        CHECK(vt->forward(m, &batch, &rf, NULL) == LOOM_OK);
        CHECK_CLOSE(rf.loss_sum, ref_loss, 1e-4, 1e-5);
        CHECK(vt->backward(m, &batch, seed, &sink) == LOOM_OK);
        CHECK(sc.violations == 0 && sc.n_open == 0 && sc.n_released == (int)n.L + 2);
        bad = 0;
        for (int64_t i = 0; i < n.n_params; i++) {
            const double a = (double)grads_fused[i] - grads0[i], b = (double)grads[i] - grads0[i];
            bad += !(fabs(a - b) <= 1e-5 + 1e-4 * fabs(b));
        }
        CHECK(bad == 0);
        memcpy(grads_out, grads0, sizeof(float) * (size_t)n.n_params);
        sink_init(&sc, grads_out, n.n_params, &sink);
        loom_forward_result rt = {LOOM_HEADER_INIT(loom_forward_result)};
        CHECK(vt->train_step(m, &batch, seed, &sink, &rt) == LOOM_OK);
        CHECK(rt.loss_sum == rf.loss_sum && rt.n_targets == rf.n_targets);
        CHECK(sc.violations == 0 && sc.n_open == 0 && sc.n_released == (int)n.L + 2);
        CHECK(sc.acquired[0].begin == 0 && sc.acquired[0].end == emb_end);
        CHECK(memcmp(grads_out, grads_fused, sizeof(float) * (size_t)n.n_params) == 0);
        /* train_step consumed its state too. */
        CHECK(fails_with(vt->backward(m, &batch, seed, &sink), LOOM_E_INVALID, "forward"));
        free(grads_fused);
    }

    /* A forward without labels predicts; backward then has nothing to start from. */
    loom_batch predict = make_batch(tokens, NULL, B, T);
    CHECK(vt->forward(m, &predict, &res, &outputs) == LOOM_OK);
    CHECK(res.loss_sum == 0.0 && res.n_targets == 0);
    CHECK_CLOSE(logits[V + 1], ref_logits[V + 1], 1e-4, 1e-4);
    CHECK(fails_with(vt->backward(m, &batch, seed, &sink), LOOM_E_INVALID, "forward with labels"));

    /* Same losses after a second bind with the kernels passed in the binding. */
    bind.kernels = lk_cpu_kernel_table();
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    loom_forward_result r2 = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r2, NULL) == LOOM_OK);
    CHECK_CLOSE(r2.loss_sum, ref_loss, 1e-4, 1e-5);

    vt->destroy(m);
    free(params), free(grads), free(grads0), free(grads_out), free(tokens), free(labels), free(logits);
    free(ref_logits);
}

/* ---- (e) decoding ------------------------------------------------------------------------- */

static void test_decode(gcfg g, int64_t T, const int64_t *chunks, int n_chunks)
{
    loom_config cfg = make_cfg(g);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const net n = describe(m, atoi(g.head));
    const int64_t V = n.V, B = 2;
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    interesting_params(m, &n, params);
    loom_model_binding bind = make_binding(params, B, T);
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    CHECK(fails_with(vt->decode_step(m, (int32_t[]){1}, 1, (float[64]){0}), LOOM_E_INVALID, "decode_begin"));

    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(B * T)), *labels = malloc(sizeof(int32_t) * (size_t)(B * T));
    make_tokens(tokens, labels, B, T, V);
    loom_batch batch = make_batch(tokens, NULL, B, T);
    float *full = malloc(sizeof(float) * (size_t)(B * T * V)), *logits = malloc(sizeof(float) * (size_t)V);
    loom_tensor_view outputs = view(full, LOOM_DTYPE_F32, 3, B, T, V);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &res, &outputs) == LOOM_OK);

    for (int64_t b = 0; b < B; b++) {
        /* One token at a time: every position's logits. */
        CHECK(vt->decode_begin(m, T) == LOOM_OK);
        int bad = 0;
        for (int64_t t = 0; t < T; t++) {
            CHECK(vt->decode_step(m, tokens + b * T + t, 1, logits) == LOOM_OK);
            for (int64_t v = 0; v < V; v++) {
                const float want = full[(b * T + t) * V + v];
                bad += !(fabs(logits[v] - want) <= 1e-4 + 1e-4 * fabs(want));
            }
        }
        CHECK(bad == 0);
        /* The cache is full: one more position is refused. */
        CHECK(fails_with(vt->decode_step(m, tokens, 1, logits), LOOM_E_INVALID, "beyond"));

        /* In chunks (a fresh begin clears the cache): the last token of each chunk. */
        CHECK(vt->decode_begin(m, T) == LOOM_OK);
        int64_t at = 0;
        bad = 0;
        for (int c = 0; c < n_chunks; c++) {
            CHECK(vt->decode_step(m, tokens + b * T + at, chunks[c], logits) == LOOM_OK);
            at += chunks[c];
            for (int64_t v = 0; v < V; v++) {
                const float want = full[(b * T + at - 1) * V + v];
                bad += !(fabs(logits[v] - want) <= 1e-4 + 1e-4 * fabs(want));
            }
        }
        CHECK(at == T);
        CHECK(bad == 0);
    }
    CHECK(fails_with(vt->decode_begin(m, n.P + 1), LOOM_E_INVALID, "n_positions"));
    CHECK(vt->decode_begin(m, 4) == LOOM_OK);
    CHECK(fails_with(vt->decode_step(m, tokens, 5, logits), LOOM_E_INVALID, "beyond"));
    int32_t bad_token = (int32_t)V;
    CHECK(fails_with(vt->decode_step(m, &bad_token, 1, logits), LOOM_E_INVALID, "vocabulary"));
    vt->destroy(m);
    free(params), free(tokens), free(labels), free(full), free(logits);
}

/* Decoding in a mixed run rounds what forward keeps in 16 bits (qkv under the tiled attention,
 * c_fc's output always) before reading it, so its logits are the forward's up to f32
 * round-off: 0 and 7e-8 of the largest logit measured, against 4e-3 to 6e-3 when decoding read
 * those values in f32. Token by token over T positions, against one forward of the sequence. */
static double decode_mixed_error(uint32_t param_dtype, uint32_t compute_dtype)
{
    const gcfg g = {"300", "32", "16", "2", "2"};
    const int64_t T = 20;
    loom_config cfg = make_cfg(g);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return INFINITY;
    const net n = describe(m, 2);
    const loom_kernels_api *k = api.service(&host, LOOM_KERNELS_CPU_SERVICE, 0);
    const size_t es = loom_dtype_size(param_dtype);
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    unsigned char *params16 = malloc(es * (size_t)n.n_params);
    interesting_params(m, &n, params);
    k->convert(params16, param_dtype, params, LOOM_DTYPE_F32, n.n_params);
    loom_model_binding b = make_binding((float *)params16, 1, T);
    b.param_dtype = param_dtype;
    b.compute_dtype = compute_dtype;
    CHECK(vt->bind(m, &b) == LOOM_OK);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)T), *labels = malloc(sizeof(int32_t) * (size_t)T);
    make_tokens(tokens, labels, 1, T, n.V);
    loom_batch batch = make_batch(tokens, NULL, 1, T);
    float *full = malloc(sizeof(float) * (size_t)(T * n.V)), *logits = malloc(sizeof(float) * (size_t)n.V);
    loom_tensor_view outputs = view(full, LOOM_DTYPE_F32, 3, 1, T, n.V);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &res, &outputs) == LOOM_OK);
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < T * n.V; i++)
        scale = fmax(scale, fabs(full[i]));
    CHECK(vt->decode_begin(m, T) == LOOM_OK);
    for (int64_t t = 0; t < T; t++) {
        CHECK(vt->decode_step(m, tokens + t, 1, logits) == LOOM_OK);
        for (int64_t v = 0; v < n.V; v++)
            worst = fmax(worst, fabs(logits[v] - full[t * n.V + v]) / scale);
    }
    vt->destroy(m);
    free(params), free(params16), free(tokens), free(labels), free(full), free(logits);
    return worst;
}

static void test_decode_mixed(void)
{
    const struct {
        uint32_t pd, cd;
        const char *what;
    } runs[] = {{LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, "bf16"}, {LOOM_DTYPE_F32, LOOM_DTYPE_BF16, "bf16 products"}};
    for (int tiled = 0; tiled < 2; tiled++) {
        if (tiled) setenv("LOOM_GPT2_ATTENTION", "flash", 1);
        for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
            const double e = decode_mixed_error(runs[r].pd, runs[r].cd);
            printf("decode vs forward, %s%s: worst logit difference %.3g of the largest logit\n", runs[r].what,
                   tiled ? ", tiled attention" : "", e);
            CHECK(e < 1e-4);
        }
        unsetenv("LOOM_GPT2_ATTENTION");
    }
}

/* ---- (f) initialisation -------------------------------------------------------------------- */

static double sample_std(const float *p, int64_t n, double *mean_out)
{
    double s = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) s += p[i], ss += (double)p[i] * p[i];
    const double mean = s / (double)n;
    *mean_out = mean;
    return sqrt(ss / (double)n - mean * mean);
}

static void test_init(void)
{
    loom_config cfg = make_cfg((gcfg){"300", "64", "64", "8", "4"});
    cfg.entries[cfg.n++] = (test_cfg_entry){"initializer_range", LOOM_PARAM_FLOAT, "0.05"};
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const net n = describe(m, 4);
    float *a = malloc(sizeof(float) * (size_t)n.n_params), *b = malloc(sizeof(float) * (size_t)n.n_params);
    for (int64_t i = 0; i < n.n_params; i++) a[i] = b[i] = NAN;
    CHECK(vt->init_params(m, a) == LOOM_OK);
    CHECK(vt->init_params(m, b) == LOOM_OK);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)n.n_params) == 0); /* deterministic, all written */

    const double init_std = 0.05, residual = 0.05 / sqrt(2.0 * 8);
    /* Pool each kind over the layers; 8 x 4096 draws pin the std to about 1%. */
    float *pool = malloc(sizeof(float) * (size_t)n.n_params);
    for (int j = 0; j < 12; j++) {
        int64_t count = 0;
        for (int64_t l = 0; l < n.L; l++) {
            const size_t ti = 2 + (size_t)l * 12 + (size_t)j;
            memcpy(pool + count, a + n.offset[ti], sizeof(float) * (size_t)n.size[ti]);
            count += n.size[ti];
        }
        double mean, std = sample_std(pool, count, &mean);
        int all_one = 1, all_zero = 1;
        for (int64_t i = 0; i < count; i++) all_one &= pool[i] == 1.0f, all_zero &= pool[i] == 0.0f;
        switch (j) {
        case 0: case 6: CHECK(all_one); break;                          /* ln_1/ln_2 weight */
        case 1: case 3: case 5: case 7: case 9: case 11: CHECK(all_zero); break; /* biases */
        case 4: case 10: /* attn.c_proj.weight, mlp.c_proj.weight: scaled residual init */
            CHECK_CLOSE(std, residual, 0, 0.03);
            CHECK(fabs(mean) < 0.05 * residual);
            break;
        default: /* c_attn, c_fc */
            CHECK_CLOSE(std, init_std, 0, 0.03);
            CHECK(fabs(mean) < 0.05 * init_std);
        }
    }
    double mean;
    CHECK_CLOSE(sample_std(a + n.offset[0], n.size[0], &mean), init_std, 0, 0.03); /* wte */
    CHECK_CLOSE(sample_std(a + n.offset[1], n.size[1], &mean), init_std, 0, 0.05); /* wpe */
    const float *lnf = a + n.offset[n.n_tensors - 2];
    int lnf_ok = 1;
    for (int64_t c = 0; c < n.C; c++) lnf_ok &= lnf[c] == 1.0f && lnf[n.C + c] == 0.0f;
    CHECK(lnf_ok);
    /* Tensors draw from their own streams: two layers' c_attn weights differ. */
    CHECK(a[n.offset[2 + 2]] != a[n.offset[2 + 12 + 2]]);
    free(a), free(b), free(pool);
    vt->destroy(m);
}

/* ---- (g) errors ------------------------------------------------------------------------------ */

static void test_errors(void)
{
    loom_model *m = NULL;
    loom_config cfg = make_cfg((gcfg){"37", "16", "10", "2", "3"});
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "multiple of n_head"));
    CHECK(m == NULL);
    cfg = make_cfg((gcfg){"0", "16", "12", "2", "3"});
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "vocab_size"));
    cfg = make_cfg((gcfg){"37", "16", "12", "-1", "3"});
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "n_layer"));
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"activation_function", LOOM_PARAM_STRING, "relu"};
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_UNSUPPORTED, "activation_function \"relu\""));
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"tie_word_embeddings", LOOM_PARAM_BOOL, "false"};
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_UNSUPPORTED, "tie_word_embeddings"));
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_inner", LOOM_PARAM_INT, "-4"};
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "n_inner"));
    cfg = make_cfg(TINY);
    cfg.entries[0].type = LOOM_PARAM_STRING; /* vocab_size "37" as a string */
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "vocab_size"));
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"attn_pdrop", LOOM_PARAM_FLOAT, "1.5"};
    CHECK(fails_with(vt->create(&host, &api, &cfg, &m), LOOM_E_INVALID, "attn_pdrop"));
    CHECK(host.live_allocations == 0); /* failed creates leak nothing */

    /* HF configs carry dropout 0.1: implemented (test_dropout), so no warning. */
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"resid_pdrop", LOOM_PARAM_FLOAT, "0.1"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"embd_pdrop", LOOM_PARAM_FLOAT, "0.1"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"attn_pdrop", LOOM_PARAM_FLOAT, "0.1"};
    warnings = 0;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    CHECK(warnings == 0);
    vt->destroy(m);
    m = NULL;
    warnings = 0;
    cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"n_inner", LOOM_PARAM_INT, "20"};
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    CHECK(warnings == 0);
    loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
    CHECK(m && vt->param_info(m, 2 + 8, &info) == LOOM_OK && info.shape[1] == 20); /* c_fc [C, n_inner] */
    vt->destroy(m);

    /* Defaults are GPT-2 124M's. */
    loom_config defaults = {.spec = desc->params};
    CHECK(vt->create(&host, &api, &defaults, &m) == LOOM_OK);
    if (m) {
        int64_t total = 0;
        for (size_t i = 0; i < vt->param_count(m); i++) {
            CHECK(vt->param_info(m, i, &info) == LOOM_OK);
            total += info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
        }
        CHECK(vt->param_count(m) == 2 + 12 * 12 + 2);
        CHECK(total == 124439808); /* HF's GPT2LMHeadModel("gpt2").num_parameters() */
        vt->destroy(m);
    }

    cfg = make_cfg(TINY);
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const net n = describe(m, 3);
    float *params = calloc((size_t)n.n_params, sizeof(float));
    CHECK(vt->init_params(m, params) == LOOM_OK);
    int32_t tokens[2 * 7], labels[2 * 7];
    make_tokens(tokens, labels, 2, 7, 37);
    loom_batch batch = make_batch(tokens, labels, 2, 7);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "before bind"));
    CHECK(fails_with(vt->decode_begin(m, 4), LOOM_E_INVALID, "before bind"));

    loom_model_binding bind = make_binding(params, 2, 7);
    bind.param_dtype = LOOM_DTYPE_F64;
    CHECK(fails_with(vt->bind(m, &bind), LOOM_E_UNSUPPORTED, "f64"));
    bind.param_dtype = LOOM_DTYPE_F32;
    bind.device = LOOM_DEVICE_CUDA; /* the CPU table for parameters on a GPU */
    CHECK(fails_with(vt->bind(m, &bind), LOOM_E_INVALID, "kernels for device"));
    bind.device = LOOM_DEVICE_CPU;
    bind.max_sequence_length = 17;
    CHECK(fails_with(vt->bind(m, &bind), LOOM_E_INVALID, "n_positions"));
    bind.max_sequence_length = 0; /* 0: the whole context */
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    int64_t shape[LOOM_MAX_DIMS];
    uint32_t ndim;
    CHECK(vt->output_shape(m, shape, &ndim) == LOOM_OK && ndim == 2 && shape[0] == 16 && shape[1] == 37);
    bind.max_sequence_length = 7;
    CHECK(vt->bind(m, &bind) == LOOM_OK);

    sink_ctx sc;
    loom_grad_sink sink;
    float grads[1];
    sink_init(&sc, grads, 1, &sink);
    CHECK(fails_with(vt->backward(m, &batch, 1.0f, &sink), LOOM_E_INVALID, "forward"));

    tokens[9] = 37;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "token id 37 at row 1, position 2"));
    tokens[9] = -1;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "token id -1"));
    tokens[9] = 3;
    labels[4] = 40;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "label 40 at row 0, position 4"));
    labels[4] = 1;
    batch.batch_size = 3;
    batch.inputs.shape[0] = 3;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "batch of 3"));
    batch.batch_size = 2;
    batch.inputs.shape[0] = 2;
    batch.labels.shape[1] = 6;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "labels"));
    batch.labels.shape[1] = 7;
    batch.inputs.dtype = LOOM_DTYPE_F32;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "i32"));
    batch.inputs.dtype = LOOM_DTYPE_I32;
    float small[2 * 7 * 36];
    loom_tensor_view outputs = view(small, LOOM_DTYPE_F32, 3, 2, 7, 36);
    CHECK(fails_with(vt->forward(m, &batch, &res, &outputs), LOOM_E_INVALID, "outputs"));
    CHECK(vt->forward(m, &batch, &res, NULL) == LOOM_OK);

    /* Longer than the context (n_positions 16) and than the bound length. */
    int32_t long_tokens[17] = {0};
    loom_batch longer = make_batch(long_tokens, NULL, 1, 17);
    CHECK(fails_with(vt->forward(m, &longer, &res, NULL), LOOM_E_INVALID, "n_positions = 16"));
    longer = make_batch(long_tokens, NULL, 1, 8);
    CHECK(fails_with(vt->forward(m, &longer, &res, NULL), LOOM_E_INVALID, "max_sequence_length"));

    vt->destroy(m);
    free(params);
    vt->destroy(NULL);
    CHECK(host.live_allocations == 0);
}

/* The activation memory of GPT-2 124M at B = 4, T = 64 (bind only: nothing is computed). */
static void report_gpt2_124m_memory(void)
{
    loom_config defaults = {.spec = desc->params};
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &defaults, &m) == LOOM_OK);
    if (!m) return;
    float dummy[16];
    loom_model_binding bind = make_binding(dummy, 4, 64); /* params are only read by forward */
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    const size_t bytes = vt->activation_bytes(m);
    printf("gpt2 124M activations at B=4, T=64: %zu bytes (%.1f MiB)\n", bytes, (double)bytes / (1 << 20));
    CHECK(bytes > 0 && bytes < (size_t)400 << 20);
    vt->destroy(m);
}

/* ---- mixed precision: the same step in 16-bit ---------------------------------------------- */

/* One forward/backward with parameters in param_dtype and products in compute_dtype against
 * the f32 model on the same (rounded) parameters: the loss within 1%, every tensor's gradient
 * within 1% (relative L2; bf16 measures 0.55% at worst, a stale scratch ~1.3%) and pointing the
 * same way; a second micro-batch adds onto the 16-bit gradients. A vocabulary of 3000 makes
 * the head's vocabulary chunks, and 60 rows the chunked 16-bit dlogits, run more than once. */
static void test_mixed_cfg(gcfg g, uint32_t param_dtype, uint32_t compute_dtype, const char *what)
{
    const int64_t B = 4, T = 15;
    loom_config cfg = make_cfg(g);
    loom_model *m32 = NULL, *m16 = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m32) == LOOM_OK && vt->create(&host, &api, &cfg, &m16) == LOOM_OK);
    if (!m32 || !m16) return;
    const net n = describe(m32, 2);
    const loom_kernels_api *k = api.service(&host, LOOM_KERNELS_CPU_SERVICE, 0);
    const size_t es = param_dtype == LOOM_DTYPE_F32 ? 4 : 2;
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    unsigned char *params16 = malloc(es * (size_t)n.n_params);
    interesting_params(m32, &n, params);
    /* Both models see the same values: the 16-bit rounding of the parameters. */
    k->convert(params16, param_dtype, params, LOOM_DTYPE_F32, n.n_params);
    k->convert(params, LOOM_DTYPE_F32, params16, param_dtype, n.n_params);
    loom_model_binding b32 = make_binding(params, B, T), b16 = make_binding((float *)params16, B, T);
    b16.param_dtype = param_dtype;
    b16.compute_dtype = compute_dtype;
    CHECK(vt->bind(m32, &b32) == LOOM_OK);
    CHECK(vt->bind(m16, &b16) == LOOM_OK);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(B * T)), *labels = malloc(sizeof(int32_t) * (size_t)(B * T));
    make_tokens(tokens, labels, B, T, n.V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    loom_forward_result r32 = {LOOM_HEADER_INIT(loom_forward_result)}, r16 = r32;
    CHECK(vt->forward(m32, &batch, &r32, NULL) == LOOM_OK);
    CHECK(vt->forward(m16, &batch, &r16, NULL) == LOOM_OK);
    CHECK_CLOSE(r16.loss_sum, r32.loss_sum, 0.0, 1e-2);

    float *g32 = calloc((size_t)n.n_params, sizeof(float)), *g16 = malloc(sizeof(float) * (size_t)n.n_params);
    float *twice = malloc(sizeof(float) * (size_t)n.n_params);
    unsigned char *raw = calloc((size_t)n.n_params, es);
    sink_ctx s32;
    loom_grad_sink sink32;
    sink_init(&s32, g32, n.n_params, &sink32);
    sink_ctx s16;
    loom_grad_sink sink;
    sink_init_bytes(&s16, raw, es, n.n_params, &sink);
    const float seed = 1.0f / (float)batch.n_targets;
    CHECK(vt->backward(m32, &batch, seed, &sink32) == LOOM_OK);
    CHECK(vt->backward(m16, &batch, seed, &sink) == LOOM_OK);
    k->convert(g16, LOOM_DTYPE_F32, raw, param_dtype, n.n_params);
    /* A second micro-batch (the same one) adds onto the 16-bit gradients: about twice. */
    CHECK(vt->forward(m16, &batch, &r16, NULL) == LOOM_OK);
    CHECK(vt->backward(m16, &batch, seed, &sink) == LOOM_OK);
    k->convert(twice, LOOM_DTYPE_F32, raw, param_dtype, n.n_params);
    CHECK(s16.violations == 0 && s16.n_open == 0 && s16.n_released == s16.n_acquired); /* the same protocol */
    int bad = 0;
    for (size_t t = 0; t < n.n_tensors; t++) {
        double diff = 0, norm = 0, dot = 0, norm16 = 0, diff2 = 0;
        for (int64_t j = n.offset[t]; j < n.offset[t] + n.size[t]; j++) {
            const double got = g16[j], want = g32[j];
            diff += (got - want) * (got - want);
            norm += want * want;
            norm16 += got * got;
            dot += got * want;
            diff2 += (twice[j] - 2.0 * got) * (twice[j] - 2.0 * got);
        }
        const int close = sqrt(diff) <= 1e-2 * sqrt(norm) + 1e-6 && dot >= 0.999 * sqrt(norm * norm16) &&
                          sqrt(diff2) <= 1e-2 * 2.0 * sqrt(norm16) + 1e-6;
        if (getenv("GPT2_TEST_VERBOSE"))
            fprintf(stderr, "%s: tensor %zu: relative L2 error %.3g\n", what, t, sqrt(diff / (norm + 1e-30)));
        if (!close) {
            bad++;
            fprintf(stderr, "%s: tensor %zu: relative L2 error %.3g, accumulation %.3g\n", what, t,
                    sqrt(diff / (norm + 1e-30)), sqrt(diff2 / (4 * norm16 + 1e-30)));
        }
    }
    CHECK(bad == 0);
    vt->destroy(m32);
    vt->destroy(m16);
    free(params), free(params16), free(tokens), free(labels), free(g32), free(g16), free(raw), free(twice);
}

/* ABI 1.9's one-pass GELU (gelu_forward_cast, gelu_backward_cast) changes no bit: the same
 * model bound to a 1.8 table (struct_size ending before them, as an older host lends it) and to
 * a 1.9 table whose two members count their calls gives the same loss and gradients, byte for
 * byte, over two micro-batches (the second adds onto the first). */
static int gelu_cast_calls;
static void counting_gelu_forward_cast(void *out, uint32_t od, const void *inp, uint32_t id, int64_t n)
{
    gelu_cast_calls++;
    lk_gelu_forward_cast(out, od, inp, id, n);
}
static void counting_gelu_backward_cast(float *dinp, const void *inp, uint32_t id, const float *dout, int64_t n)
{
    gelu_cast_calls++;
    lk_gelu_backward_cast(dinp, inp, id, dout, n);
}

static void test_gelu_cast(uint32_t param_dtype, uint32_t compute_dtype, int recompute, const char *what)
{
    const int64_t B = 3, T = 11;
    loom_config cfg = make_cfg((gcfg){"300", "16", "32", "2", "2"});
    if (recompute) cfg.entries[cfg.n++] = (test_cfg_entry){"gradient_checkpointing", LOOM_PARAM_BOOL, "true"};
    loom_kernels_api old_table = *lk_cpu_kernel_table(), new_table = old_table;
    old_table.abi_minor = 8;
    old_table.struct_size = (uint32_t)offsetof(loom_kernels_api, gelu_forward_cast);
    new_table.gelu_forward_cast = counting_gelu_forward_cast;
    new_table.gelu_backward_cast = counting_gelu_backward_cast;
    loom_model *m[2] = {NULL, NULL};
    CHECK(vt->create(&host, &api, &cfg, &m[0]) == LOOM_OK && vt->create(&host, &api, &cfg, &m[1]) == LOOM_OK);
    if (!m[0] || !m[1]) return;
    const net n = describe(m[0], 2);
    const size_t es = param_dtype == LOOM_DTYPE_F32 ? 4 : 2;
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    unsigned char *stored = malloc(es * (size_t)n.n_params), *grads[2];
    interesting_params(m[0], &n, params);
    lk_convert(stored, param_dtype, params, LOOM_DTYPE_F32, n.n_params);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(B * T)), *labels = malloc(sizeof(int32_t) * (size_t)(B * T));
    make_tokens(tokens, labels, B, T, n.V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    double loss[2] = {0, 0};
    gelu_cast_calls = 0;
    for (int i = 0; i < 2; i++) {
        loom_model_binding b = make_binding((float *)stored, B, T);
        b.param_dtype = param_dtype;
        b.compute_dtype = compute_dtype;
        b.kernels = i ? &new_table : &old_table;
        CHECK(vt->bind(m[i], &b) == LOOM_OK);
        grads[i] = calloc((size_t)n.n_params, es);
        sink_ctx sc;
        loom_grad_sink sink;
        sink_init_bytes(&sc, grads[i], es, n.n_params, &sink);
        for (int rep = 0; rep < 2; rep++) {
            loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
            CHECK(vt->forward(m[i], &batch, &r, NULL) == LOOM_OK);
            CHECK(vt->backward(m[i], &batch, 1.0f / (float)batch.n_targets, &sink) == LOOM_OK);
            loss[i] += r.loss_sum;
        }
        if (i == 0) CHECK(gelu_cast_calls == 0);
    }
    /* Per block and micro-batch: the backward's derivative; in mixed runs the forward's GELU
     * and the backward's again; with checkpointing, the block's recomputed forward too. */
    const int per_block = param_dtype == LOOM_DTYPE_F32 && compute_dtype == LOOM_DTYPE_F32 ? 1 : 3;
    const int calls = 2 * ((int)n.L * per_block + (recompute ? (int)n.L - 1 : 0));
    const int differ =
        memcmp(&loss[0], &loss[1], sizeof loss[0]) != 0 || memcmp(grads[0], grads[1], es * (size_t)n.n_params) != 0;
    if (differ || gelu_cast_calls != calls)
        fprintf(stderr, "%s: the one-pass GELU differs from the 1.8 table's (%d calls)\n", what, gelu_cast_calls);
    CHECK(!differ);
    CHECK(gelu_cast_calls == calls);
    vt->destroy(m[0]);
    vt->destroy(m[1]);
    free(params), free(stored), free(tokens), free(labels), free(grads[0]), free(grads[1]);
}

static void test_mixed(uint32_t param_dtype, uint32_t compute_dtype, const char *what)
{
    test_mixed_cfg((gcfg){"3000", "16", "16", "1", "2"}, param_dtype, compute_dtype, what);
}

/* ---- gradient checkpointing ------------------------------------------------------------- */

/* gradient_checkpointing = true keeps one block's activations and recomputes the others in
 * backward: the same loss and the same gradient bits as without, with less activation memory,
 * through forward + backward and through train_step; in f32 and with bf16 products. */
static void test_checkpointing(uint32_t param_dtype, uint32_t compute_dtype)
{
    const gcfg g = {"41", "16", "12", "3", "3"};
    const int64_t B = 2, T = 9;
    loom_model *m[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        loom_config cfg = make_cfg(g);
        if (i) cfg.entries[cfg.n++] = (test_cfg_entry){"gradient_checkpointing", LOOM_PARAM_BOOL, "true"};
        CHECK(vt->create(&host, &api, &cfg, &m[i]) == LOOM_OK);
        if (!m[i]) return;
    }
    const net n = describe(m[0], 3);
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    interesting_params(m[0], &n, params);
    const size_t es = loom_dtype_size(param_dtype);
    void *stored = malloc(es * (size_t)n.n_params);
    lk_cpu_kernel_table()->convert(stored, param_dtype, params, LOOM_DTYPE_F32, n.n_params);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(B * T)), *labels = malloc(sizeof(int32_t) * (size_t)(B * T));
    make_tokens(tokens, labels, B, T, n.V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    unsigned char *grads[2][2];
    double loss[2][2];
    size_t bytes[2];
    for (int i = 0; i < 2; i++) {
        loom_model_binding bind = make_binding(stored, B, T);
        bind.param_dtype = param_dtype;
        bind.compute_dtype = compute_dtype;
        CHECK(vt->bind(m[i], &bind) == LOOM_OK);
        bytes[i] = vt->activation_bytes(m[i]);
        for (int via_step = 0; via_step < 2; via_step++) {
            grads[i][via_step] = calloc((size_t)n.n_params, es);
            sink_ctx sc;
            loom_grad_sink sink;
            sink_init_bytes(&sc, grads[i][via_step], es, n.n_params, &sink);
            loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
            if (via_step && LOOM_HAS(vt, loom_model_vtable, train_step)) {
                CHECK(vt->train_step(m[i], &batch, 0.3f, &sink, &r) == LOOM_OK);
            } else {
                CHECK(vt->forward(m[i], &batch, &r, NULL) == LOOM_OK);
                CHECK(vt->backward(m[i], &batch, 0.3f, &sink) == LOOM_OK);
            }
            CHECK(sc.violations == 0 && sc.n_open == 0 && sc.n_released == (int)n.L + 2);
            loss[i][via_step] = r.loss_sum;
        }
    }
    CHECK(bytes[1] < bytes[0]);
    for (int via_step = 0; via_step < 2; via_step++) {
        CHECK(loss[0][via_step] == loss[1][via_step] && loss[0][via_step] > 0.0);
        CHECK(memcmp(grads[0][via_step], grads[1][via_step], es * (size_t)n.n_params) == 0);
    }
    int nonzero = 0;
    for (int64_t j = 0; j < (int64_t)es * n.n_params; j++) nonzero += grads[1][0][j] != 0;
    CHECK(nonzero > n.n_params / 2);
    for (int i = 0; i < 2; i++) vt->destroy(m[i]), free(grads[i][0]), free(grads[i][1]);
    free(params), free(stored), free(tokens), free(labels);
}

/* ---- dropout (resid_pdrop, embd_pdrop, attn_pdrop) ---------------------------------------- */

/* Every tensor's gradient of a training forward (dropout on, a fixed dropout_seed: a fixed
 * mask) against central differences of the model's own loss with the same seed; evaluation
 * (training 0) equal bit for bit to the model without dropout; the same seed the same loss,
 * another seed another; gradient checkpointing (forward again in backward) the same gradients. */
/* backward's gradients (seed x d loss_sum) of a sample of every tensor against central
 * differences of forward's loss_sum, the model's parameters bound to `params`. */
static void check_fd_gradients(loom_model *m, const loom_batch *batch, const net *n, float *params, float *grads,
                               float seed, const char *what)
{
    sink_ctx sc;
    loom_grad_sink sink;
    sink_init(&sc, grads, n->n_params, &sink);
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, batch, &r, NULL) == LOOM_OK);
    CHECK(vt->backward(m, batch, seed, &sink) == LOOM_OK);
    CHECK(sc.violations == 0 && sc.n_open == 0);
    int bad = 0, checked = 0;
    for (size_t ti = 0; ti < n->n_tensors; ti++) {
        const int64_t step = n->size[ti] > 40 ? n->size[ti] / 40 : 1;
        for (int64_t j = 0; j < n->size[ti]; j += step) {
            const int64_t i = n->offset[ti] + j;
            const float p0 = params[i], eps = 1e-2f;
            loom_forward_result a = {LOOM_HEADER_INIT(loom_forward_result)}, b = a;
            params[i] = p0 + eps;
            CHECK(vt->forward(m, batch, &a, NULL) == LOOM_OK);
            params[i] = p0 - eps;
            CHECK(vt->forward(m, batch, &b, NULL) == LOOM_OK);
            params[i] = p0;
            const double numeric = (double)seed * (a.loss_sum - b.loss_sum) / (2.0 * (double)eps);
            checked++;
            if (!(fabs(grads[i] - numeric) <= 2e-3 + 2e-2 * fabs(numeric))) {
                if (bad++ < 10)
                    fprintf(stderr, "%s: grad of %zu[%lld]: analytic %.6g, numeric %.6g\n", what, ti, (long long)j,
                            grads[i], numeric);
            }
        }
    }
    CHECK(bad == 0);
    CHECK(checked > 300);
}

static void test_dropout(int recompute)
{
    loom_config cfg = make_cfg(TINY), plain = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"resid_pdrop", LOOM_PARAM_FLOAT, "0.2"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"embd_pdrop", LOOM_PARAM_FLOAT, "0.1"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"attn_pdrop", LOOM_PARAM_FLOAT, "0.3"};
    if (recompute) cfg.entries[cfg.n++] = (test_cfg_entry){"gradient_checkpointing", LOOM_PARAM_BOOL, "true"};
    loom_model *m = NULL, *m0 = NULL;
    const int before = warnings;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK && vt->create(&host, &api, &plain, &m0) == LOOM_OK);
    CHECK(warnings == before); /* implemented: no "ignored" warning any more */
    if (!m || !m0) return;
    const net n = describe(m, 3);
    const int64_t B = 2, T = 7;
    float *params = malloc(sizeof(float) * (size_t)n.n_params), *grads = calloc((size_t)n.n_params, sizeof(float));
    interesting_params(m, &n, params);
    loom_model_binding bind = make_binding(params, B, 9);
    /* attn_pdrop makes gpt2 take the tiled attention; the plain model takes it too, so that
     * evaluation can be compared bit for bit. */
    setenv("LOOM_GPT2_ATTENTION", "flash", 1);
    CHECK(vt->bind(m, &bind) == LOOM_OK && vt->bind(m0, &bind) == LOOM_OK);
    unsetenv("LOOM_GPT2_ATTENTION");
    int32_t tokens[14], labels[14];
    make_tokens(tokens, labels, B, T, n.V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)}, r0 = r, r1 = r;

    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK); /* training 0: evaluation */
    CHECK(vt->forward(m0, &batch, &r0, NULL) == LOOM_OK);
    CHECK(r.loss_sum == r0.loss_sum);
    batch.training = 1;
    batch.dropout_seed = 1234;
    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
    CHECK(vt->forward(m, &batch, &r1, NULL) == LOOM_OK);
    CHECK(r.loss_sum == r1.loss_sum && r.loss_sum != r0.loss_sum);
    batch.dropout_seed = 1235;
    CHECK(vt->forward(m, &batch, &r1, NULL) == LOOM_OK);
    CHECK(r1.loss_sum != r.loss_sum);
    batch.dropout_seed = 1234;

    const float seed = 0.5f;
    check_fd_gradients(m, &batch, &n, params, grads, seed, "dropout");
    vt->destroy(m);
    vt->destroy(m0);
    free(params), free(grads);
}

/* ---- NEFTune (neftune_noise_alpha) ------------------------------------------------------- */

/* The noise the model must add for a batch [B, T] of C channels under dropout_seed `seed`. */
static void neftune_noise(float *noise, double alpha, uint64_t seed, int64_t B, int64_t T, int64_t C)
{
    const float mag = model_neftune_magnitude(alpha, T, C);
    for (int64_t i = 0; i < B * T * C; i++)
        noise[i] = model_neftune_noise(model_neftune_seed(seed, 0), (uint64_t)i, mag);
}

/* Max |a - b| over n logits. */
static double max_diff(const float *a, const double *b, int64_t n)
{
    double d = 0.0;
    for (int64_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* A model with neftune_noise_alpha 5 against the same model without:
 *   - evaluation (training 0) is bit for bit the plain model's, logits and loss;
 *   - a training forward's logits are the double reference's with the noise rebuilt here added
 *     to wte's output (so the noisy minus the clean embedding output is that noise), and far
 *     from the clean reference's; the noise lies in [-a, a], a = alpha / sqrt(T C) with T this
 *     batch's length (two lengths, both shorter than the bound one), fills the range, and has
 *     a uniform's mean and variance (a^2 / 3);
 *   - the same seed draws the same noise (logits bit for bit), another seed other noise;
 *   - every tensor's gradient matches central differences of the noisy loss (the seed fixed),
 *     with gradient checkpointing too (block 0 recomputed from the kept noisy embeddings);
 *   - train_step (the fused classifier in one call) has the noisy forward's loss. */
static void test_neftune(int recompute)
{
    const double alpha = 5.0;
    loom_config cfg = make_cfg(TINY), plain = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"neftune_noise_alpha", LOOM_PARAM_FLOAT, "5"};
    if (recompute) {
        cfg.entries[cfg.n++] = (test_cfg_entry){"gradient_checkpointing", LOOM_PARAM_BOOL, "true"};
        plain.entries[plain.n++] = (test_cfg_entry){"gradient_checkpointing", LOOM_PARAM_BOOL, "true"};
    }
    loom_model *m = NULL, *m0 = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK && vt->create(&host, &api, &plain, &m0) == LOOM_OK);
    if (!m || !m0) return;
    const net n = describe(m, 3);
    const int64_t B = 3, maxT = 16, C = n.C, V = n.V;
    float *params = malloc(sizeof(float) * (size_t)n.n_params), *grads = calloc((size_t)n.n_params, sizeof(float));
    interesting_params(m, &n, params);
    loom_model_binding bind = make_binding(params, B, maxT);
    CHECK(vt->bind(m, &bind) == LOOM_OK && vt->bind(m0, &bind) == LOOM_OK);
    int32_t tokens[3 * 16], labels[3 * 16];
    float logits[3 * 16 * 37], logits0[3 * 16 * 37], again[3 * 16 * 37], noise[3 * 16 * 12], other[3 * 16 * 12];
    double ref[3 * 16 * 37];

    const int64_t lengths[2] = {13, 5};
    for (int li = 0; li < 2; li++) {
        const int64_t T = lengths[li], N = B * T;
        make_tokens(tokens, labels, B, T, V);
        loom_batch batch = make_batch(tokens, labels, B, T);
        loom_tensor_view out = view(logits, LOOM_DTYPE_F32, 3, B, T, V),
                         out0 = view(logits0, LOOM_DTYPE_F32, 3, B, T, V);
        loom_tensor_view out_again = view(again, LOOM_DTYPE_F32, 3, B, T, V);
        loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)}, r0 = r, r1 = r;

        /* Evaluation: no noise, bit for bit (a training forward before it changes nothing). */
        batch.training = 1;
        batch.dropout_seed = 77;
        CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
        batch.training = 0;
        CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK);
        CHECK(vt->forward(m0, &batch, &r0, &out0) == LOOM_OK);
        CHECK(r.loss_sum == r0.loss_sum && memcmp(logits, logits0, sizeof(float) * (size_t)(N * V)) == 0);

        /* Training: the plain model's logits are its evaluation's (no dropout), the noisy
         * model's the reference's with the noise added to wte's output. */
        batch.training = 1;
        batch.dropout_seed = 1234;
        CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK);
        CHECK(vt->forward(m0, &batch, &r0, &out0) == LOOM_OK);
        neftune_noise(noise, alpha, 1234, B, T, C);
        const float mag = model_neftune_magnitude(alpha, T, C);
        CHECK(mag == (float)(5.0 / sqrt((double)(T * C))));
        double sum = 0.0, sq = 0.0, lo = 0.0, hi = 0.0;
        int outside = 0;
        for (int64_t i = 0; i < N * C; i++) {
            outside += !(noise[i] >= -mag && noise[i] <= mag);
            sum += noise[i];
            sq += (double)noise[i] * noise[i];
            lo = fmin(lo, noise[i]);
            hi = fmax(hi, noise[i]);
        }
        const double count = (double)(N * C), mean = sum / count, var = sq / count - mean * mean;
        CHECK(outside == 0);
        CHECK(lo < -0.9 * mag && hi > 0.9 * mag); /* not all zero: the whole range */
        /* Uniform on [-a, a]: mean 0 (sd a / sqrt(3 count)), variance a^2 / 3 (relative sd
         * about 0.9 / sqrt(count): 4% at 468 draws, 7% at 180); five sd either way. */
        CHECK(fabs(mean) < 5.0 * mag / sqrt(3.0 * count));
        CHECK(fabs(var / (mag * mag / 3.0) - 1.0) < 5.0 * 0.9 / sqrt(count));
        ref_noise = noise;
        const double ref_loss = reference_forward(&n, params, tokens, labels, B, T, ref);
        ref_noise = NULL;
        CHECK(max_diff(logits, ref, N * V) < 1e-4);
        CHECK_CLOSE(r.loss_sum, ref_loss, 1e-4, 1e-5);
        const double clean_loss = reference_forward(&n, params, tokens, labels, B, T, ref);
        CHECK(max_diff(logits0, ref, N * V) < 1e-4);
        CHECK(max_diff(logits, ref, N * V) > 1e-2); /* the noise is visible in the logits */
        CHECK(fabs(r.loss_sum - clean_loss) > 1e-3);

        /* The same seed: the same noise; another micro-batch's seed: other noise. */
        CHECK(vt->forward(m, &batch, &r1, &out_again) == LOOM_OK);
        CHECK(r1.loss_sum == r.loss_sum && memcmp(logits, again, sizeof(float) * (size_t)(N * V)) == 0);
        batch.dropout_seed = 1235;
        CHECK(vt->forward(m, &batch, &r1, &out_again) == LOOM_OK);
        CHECK(r1.loss_sum != r.loss_sum && memcmp(logits, again, sizeof(float) * (size_t)(N * V)) != 0);
        neftune_noise(other, alpha, 1235, B, T, C);
        int same = 0;
        for (int64_t i = 0; i < N * C; i++)
            same += other[i] == noise[i];
        CHECK(same < N * C / 100 + 1);
        ref_noise = other;
        reference_forward(&n, params, tokens, labels, B, T, ref);
        ref_noise = NULL;
        CHECK(max_diff(again, ref, N * V) < 1e-4);
        batch.dropout_seed = 1234;

        /* train_step: the same noisy loss in one call. */
        memset(grads, 0, sizeof(float) * (size_t)n.n_params);
        sink_ctx sc;
        loom_grad_sink sink;
        sink_init(&sc, grads, n.n_params, &sink);
        CHECK(vt->train_step(m, &batch, 0.5f, &sink, &r1) == LOOM_OK);
        CHECK_CLOSE(r1.loss_sum, r.loss_sum, 1e-5, 1e-6);
    }

    /* Gradients with the noise on, against central differences of the noisy loss. */
    const int64_t T = 7;
    make_tokens(tokens, labels, B, T, V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    batch.training = 1;
    batch.dropout_seed = 4321;
    memset(grads, 0, sizeof(float) * (size_t)n.n_params);
    const float seed = 0.5f;
    check_fd_gradients(m, &batch, &n, params, grads, seed, "neftune");
    vt->destroy(m);
    vt->destroy(m0);
    free(params), free(grads);
}

/* 16-bit parameters: wte's rows widened, then the noise and wpe added in f32, as the f32 model
 * does; its noisy logits stay within bf16's error of the f32 reference with the same noise and
 * away from the clean one. */
static void test_neftune_bf16(void)
{
    loom_config cfg = make_cfg(TINY);
    cfg.entries[cfg.n++] = (test_cfg_entry){"neftune_noise_alpha", LOOM_PARAM_FLOAT, "5"};
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const net n = describe(m, 3);
    const int64_t B = 2, T = 9, C = n.C, V = n.V, N = B * T;
    const loom_kernels_api *k = api.service(&host, LOOM_KERNELS_CPU_SERVICE, 0);
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    uint16_t *params16 = malloc(sizeof(uint16_t) * (size_t)n.n_params);
    interesting_params(m, &n, params);
    k->convert(params16, LOOM_DTYPE_BF16, params, LOOM_DTYPE_F32, n.n_params);
    k->convert(params, LOOM_DTYPE_F32, params16, LOOM_DTYPE_BF16, n.n_params);
    loom_model_binding b16 = make_binding((float *)params16, B, T);
    b16.param_dtype = b16.compute_dtype = LOOM_DTYPE_BF16;
    CHECK(vt->bind(m, &b16) == LOOM_OK);
    int32_t tokens[2 * 9], labels[2 * 9];
    float logits[2 * 9 * 37], noise[2 * 9 * 12];
    double ref[2 * 9 * 37], clean[2 * 9 * 37];
    make_tokens(tokens, labels, B, T, V);
    loom_batch batch = make_batch(tokens, labels, B, T);
    batch.training = 1;
    batch.dropout_seed = 99;
    loom_tensor_view out = view(logits, LOOM_DTYPE_F32, 3, B, T, V);
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK);
    neftune_noise(noise, 5.0, 99, B, T, C);
    ref_noise = noise;
    reference_forward(&n, params, tokens, labels, B, T, ref);
    ref_noise = NULL;
    reference_forward(&n, params, tokens, labels, B, T, clean);
    double scale = 0.0;
    for (int64_t i = 0; i < N * V; i++)
        scale = fmax(scale, fabs(ref[i]));
    const double err = max_diff(logits, ref, N * V), off = max_diff(logits, clean, N * V);
    CHECK(err < 0.05 * scale);
    CHECK(off > 4.0 * err);
    vt->destroy(m);
    free(params), free(params16);
}

/* ---- a two-part sink (ABI 1.4 acquire_rows) ---------------------------------------------- */

/* The recorder plus a rows part: the rows are added into the flat gradients at release_rows,
 * as the host adds its reduced rows after the dense part (16-bit: in f32, one rounding). */
typedef struct rows_ctx {
    sink_ctx base; /* first: the dense members cast to it */
    uint32_t dtype;
    int64_t begin, row_size, n_rows, rows[256];
    unsigned char values[256 * 64 * 4];
    int parts, held, bad;
    int64_t released_before_rows; /* dense releases when the rows part was acquired */
} rows_ctx;

static loom_status rows_acquire(void *context, int64_t begin, int64_t row_size, int64_t n_rows, const int64_t *rows,
                                void **memory)
{
    rows_ctx *r = context;
    if (r->held || n_rows > 256 || row_size > 64) return r->bad++, LOOM_E_INVALID;
    for (int64_t i = 1; i < n_rows; i++)
        r->bad += rows[i] <= rows[i - 1];
    r->begin = begin, r->row_size = row_size, r->n_rows = n_rows;
    memcpy(r->rows, rows, (size_t)n_rows * sizeof *rows);
    memset(r->values, 0, sizeof r->values);
    r->held = 1;
    r->parts++;
    r->released_before_rows = r->base.n_released;
    *memory = r->values;
    return LOOM_OK;
}

static loom_status rows_release(void *context, int64_t begin)
{
    rows_ctx *r = context;
    if (!r->held || begin != r->begin) return r->bad++, LOOM_E_INVALID;
    r->held = 0;
    const loom_kernels_api *k = lk_cpu_kernel_table();
    const size_t es = loom_dtype_size(r->dtype);
    float wide[64];
    for (int64_t i = 0; i < r->n_rows; i++) {
        unsigned char *dst = r->base.grads + (size_t)(begin + r->rows[i] * r->row_size) * es;
        k->convert(wide, LOOM_DTYPE_F32, r->values + (size_t)(i * r->row_size) * es, r->dtype, r->row_size);
        if (r->dtype == LOOM_DTYPE_F32)
            for (int64_t j = 0; j < r->row_size; j++)
                ((float *)dst)[j] += wide[j];
        else
            k->accumulate_f32(dst, r->dtype, wide, r->row_size);
    }
    return LOOM_OK;
}

/* Through a two-part sink wte is acquired alone and released right after the head (before ln_f),
 * wpe at the end, and the rows part holds exactly the batch's distinct tokens. The gradients
 * equal the one-part sink's: bit for bit everywhere but the wte rows of repeated tokens, whose
 * lookups are summed before being added (round-off there; with 16-bit parameters every
 * looked-up row, rounded once more). Through forward + backward and
 * train_step, twice in a row (accumulating onto the first micro-batch). */
static void test_two_part(uint32_t param_dtype, uint32_t compute_dtype, const char *what)
{
    const gcfg g = {"41", "16", "12", "2", "3"};
    const int64_t B = 2, T = 9;
    loom_config cfg = make_cfg(g);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const net n = describe(m, 3);
    const int64_t VC = n.V * n.C, emb_end = n.offset[2], lnf_begin = n.offset[n.n_tensors - 2];
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    interesting_params(m, &n, params);
    const size_t es = loom_dtype_size(param_dtype);
    void *stored = malloc(es * (size_t)n.n_params);
    lk_cpu_kernel_table()->convert(stored, param_dtype, params, LOOM_DTYPE_F32, n.n_params);
    int32_t tokens[18], labels[18];
    make_tokens(tokens, labels, B, T, n.V);
    tokens[4] = tokens[1], tokens[9] = tokens[1], tokens[12] = tokens[7]; /* repeated tokens */
    loom_batch batch = make_batch(tokens, labels, B, T);
    loom_model_binding bind = make_binding(stored, B, T);
    bind.param_dtype = param_dtype;
    bind.compute_dtype = compute_dtype;
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    int repeated[64] = {0};
    for (int64_t i = 0; i < B * T; i++)
        repeated[tokens[i]]++;
    int64_t distinct = 0;
    for (int64_t v = 0; v < n.V; v++)
        distinct += repeated[v] > 0;
    for (int via_step = 0; via_step < 2; via_step++) {
        unsigned char *one = calloc((size_t)n.n_params, es), *two = calloc((size_t)n.n_params, es);
        sink_ctx sc;
        loom_grad_sink sink;
        sink_init_bytes(&sc, one, es, n.n_params, &sink);
        rows_ctx rc;
        loom_grad_sink split;
        sink_init_bytes(&rc.base, two, es, n.n_params, &split);
        rc.dtype = param_dtype, rc.parts = rc.held = rc.bad = 0;
        split.context = &rc;
        split.acquire_rows = rows_acquire;
        split.release_rows = rows_release;
        for (int micro = 0; micro < 2; micro++) {
            for (int which = 0; which < 2; which++) {
                const loom_grad_sink *s = which ? &split : &sink;
                loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
                if (via_step) {
                    CHECK(vt->train_step(m, &batch, 0.3f, s, &r) == LOOM_OK);
                } else {
                    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
                    CHECK(vt->backward(m, &batch, 0.3f, s) == LOOM_OK);
                }
            }
        }
        CHECK(sc.violations == 0 && rc.base.violations == 0 && rc.bad == 0 && rc.held == 0 && rc.base.n_open == 0);
        CHECK(rc.parts == 2 && rc.begin == 0 && rc.row_size == n.C && rc.n_rows == distinct);
        for (int64_t i = 0; i < rc.n_rows; i++)
            CHECK(repeated[rc.rows[i]] > 0);
        /* Per micro-batch: wte, ln_f, the blocks, then wpe just before the rows. */
        const int per = (int)n.L + 3;
        CHECK(rc.base.n_released == 2 * per);
        CHECK(rc.released_before_rows == 2 * per - 1);
        CHECK(rc.base.acquired[0].begin == 0 && rc.base.acquired[0].end == VC);
        CHECK(rc.base.released[0].begin == 0 && rc.base.released[0].end == VC);
        CHECK(rc.base.released[1].begin == lnf_begin && rc.base.released[1].end == n.n_params);
        CHECK(rc.base.released[per - 1].begin == VC && rc.base.released[per - 1].end == emb_end);
        int differ = 0, far = 0;
        float *a = malloc(sizeof(float) * (size_t)n.n_params), *b = malloc(sizeof(float) * (size_t)n.n_params);
        lk_cpu_kernel_table()->convert(a, LOOM_DTYPE_F32, one, param_dtype, n.n_params);
        lk_cpu_kernel_table()->convert(b, LOOM_DTYPE_F32, two, param_dtype, n.n_params);
        /* Round-off of sums that may cancel: against the table's largest gradient. */
        double scale = 0;
        for (int64_t i = 0; i < VC; i++)
            scale = fmax(scale, fabs(a[i]));
        for (int64_t i = 0; i < n.n_params; i++) {
            if (memcmp(one + (size_t)i * es, two + (size_t)i * es, es) == 0) continue;
            /* 16-bit: a looked-up row is rounded into its own memory before it is added. */
            const int shared_row = i < VC && repeated[i / n.C] > (param_dtype == LOOM_DTYPE_F32 ? 1 : 0);
            differ += !shared_row;
            far += !(fabs((double)a[i] - b[i]) <= (param_dtype == LOOM_DTYPE_F32 ? 1e-6 : 1e-2) * scale);
        }
        if (differ || far)
            fprintf(stderr, "%s (via %s): %d elements differ outside repeated rows, %d far\n", what,
                    via_step ? "train_step" : "backward", differ, far);
        CHECK(differ == 0 && far == 0);
        free(a), free(b), free(one), free(two);
    }
    vt->destroy(m);
    free(params), free(stored);
}

int main(void)
{
    void *so = NULL;
    desc = open_model_plugin(GPT2_PLUGIN_PATH, &so);
    if (!desc) return test_finish("test_gpt2");
    vt = desc->vtable;
    api = test_host_api;
    api.log = counting_log;

    test_descriptor();
    test_params();
    /* The brief's tiny model, B = 2, T = 7, bound for T up to 9 (shorter batches work); with
     * the stored attention (what short sequences take) and with the tiled one. */
    test_forward_backward(TINY, 2, 7, 9);
    setenv("LOOM_GPT2_ATTENTION", "flash", 1);
    test_forward_backward(TINY, 2, 7, 9);
    test_checkpointing(LOOM_DTYPE_F32, LOOM_DTYPE_BF16);
    unsetenv("LOOM_GPT2_ATTENTION");
    /* A vocabulary large enough that the cross-entropy backward runs in several chunks. */
    test_forward_backward((gcfg){"500", "16", "12", "1", "2"}, 2, 7, 7);
    test_decode(TINY, 7, (const int64_t[]){3, 3, 1}, 3);
    /* More tokens in one step than the decoder's chunk (64), and a 4-layer model. */
    test_decode((gcfg){"37", "80", "8", "4", "2"}, 70, (const int64_t[]){66, 1, 3}, 3);
    test_decode_mixed();
    test_mixed(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, "bf16");
    test_mixed(LOOM_DTYPE_F16, LOOM_DTYPE_F16, "f16 (amp)");
    test_mixed(LOOM_DTYPE_F32, LOOM_DTYPE_F16, "f32 weights, f16 products (apex O1)");
    test_mixed(LOOM_DTYPE_F32, LOOM_DTYPE_BF16, "f32 weights, bf16 products (autocast; fused classifier)");
    /* The tiled attention reads the kept 16-bit qkv and widens the 16-bit output in backward. */
    setenv("LOOM_GPT2_ATTENTION", "flash", 1);
    test_mixed(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, "bf16, tiled attention");
    test_mixed(LOOM_DTYPE_F16, LOOM_DTYPE_F16, "f16 (amp), tiled attention");
    test_mixed(LOOM_DTYPE_F32, LOOM_DTYPE_BF16, "f32 weights, bf16 products, tiled attention");
    /* Head size 32: the tiled attention on AMX tiles where the CPU has them (attention_amx.c). */
    test_mixed_cfg((gcfg){"3000", "16", "64", "1", "2"}, LOOM_DTYPE_BF16, LOOM_DTYPE_BF16,
                   "bf16, tiled attention, head size 32");
    unsetenv("LOOM_GPT2_ATTENTION");
    test_gelu_cast(LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0, "gelu cast, f32");
    test_gelu_cast(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 0, "gelu cast, bf16");
    test_gelu_cast(LOOM_DTYPE_F16, LOOM_DTYPE_F16, 0, "gelu cast, f16 (amp)");
    test_gelu_cast(LOOM_DTYPE_F32, LOOM_DTYPE_BF16, 0, "gelu cast, f32 weights, bf16 products");
    test_gelu_cast(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 1, "gelu cast, bf16, gradient checkpointing");
    setenv("LOOM_GPT2_ATTENTION", "flash", 1);
    test_gelu_cast(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 0, "gelu cast, bf16, tiled attention");
    unsetenv("LOOM_GPT2_ATTENTION");
    test_checkpointing(LOOM_DTYPE_F32, LOOM_DTYPE_F32);
    test_checkpointing(LOOM_DTYPE_F32, LOOM_DTYPE_BF16);
    test_dropout(0);
    test_dropout(1);
    test_neftune(0);
    test_neftune(1);
    test_neftune_bf16();
    /* Label smoothing: the loss against the reference and finite differences of every tensor,
     * through the fused classifier and the unfused softmax cross-entropy, and mixed precision's
     * cast backward. */
    smoothing = 0.1;
    test_forward_backward(TINY, 2, 7, 9);
    setenv("LOOM_GPT2_CLASSIFIER", "unfused", 1);
    test_forward_backward((gcfg){"500", "16", "12", "1", "2"}, 2, 7, 7);
    test_mixed(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, "bf16, label smoothing (unfused)");
    unsetenv("LOOM_GPT2_CLASSIFIER");
    test_mixed(LOOM_DTYPE_F32, LOOM_DTYPE_BF16, "f32 weights, bf16 products, label smoothing (fused)");
    smoothing = 0.0;
    test_two_part(LOOM_DTYPE_F32, LOOM_DTYPE_F32, "f32");
    test_two_part(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, "bf16");
    setenv("LOOM_GPT2_CLASSIFIER", "unfused", 1);
    test_two_part(LOOM_DTYPE_F32, LOOM_DTYPE_F32, "f32, unfused classifier");
    unsetenv("LOOM_GPT2_CLASSIFIER");
    test_checkpointing(LOOM_DTYPE_BF16, LOOM_DTYPE_BF16);
    test_init();
    test_errors();
    report_gpt2_124m_memory();
    CHECK(host.live_allocations == 0);
    dlclose(so);
    return test_finish("test_gpt2");
}
