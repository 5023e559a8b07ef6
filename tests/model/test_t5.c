/* test_t5.c - the t5 model plugin through dlopen() and the test host (test_host.h):
 *   (a) names and shapes of HF's T5ForConditionalGeneration, v1.0 (tied) and v1.1 (gated,
 *       lm_head); a config.json-style config that disagrees with itself is refused;
 *   (b) gradients of every tensor against central finite differences, on a padded batch
 *       (attention mask, -100 labels), with dropout off and on (the masks come from the
 *       batch's dropout_seed, so the perturbed forwards draw the same ones);
 *   (c) a short training run (Adam, a copy task) whose loss falls;
 *   (d) user errors: ids outside the vocabulary, a mask of the wrong shape;
 *   (e) generation (ABI 1.4): the encoder once and the decoder stepped over its key/value
 *       cache give the logits of the full forward on the same decoder inputs (1e-5), with
 *       beams whose cache rows are reordered between steps; the reorder's refusals.
 *   (f) NEFTune (neftune_noise_alpha): evaluation untouched, the noise a function of the seed,
 *       scaled by each side's length, gradients (b) with it on.
 * With --dump FILE CONFIG (relu|gated) [neftune] it writes the tiny model's parameters, batch,
 * logits and loss (with neftune: of a noisy training forward, and the noise) as JSON for
 * t5_reference_test.py, which checks them against numpy. */
#include <loom/model.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink_recorder.h"
#include "test_host.h"
#include "open_plugin.h"
#include "test_util.h"
#include "../../plugins/model/model_common.h" /* NEFTune's draws, to rebuild the noise */

static const loom_plugin_desc *desc;
static const loom_model_vtable *vt;
static loom_host host;

enum { B = 3, S = 5, T = 4, V = 11 };
static const int32_t inputs[B * S] = {3, 4, 5, 6, 1, 7, 2, 1, 0, 0, 9, 8, 10, 1, 0};
static const int32_t mask[B * S] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0};
static const int32_t labels[B * T] = {5, 6, 7, 1, 2, 1, -100, -100, 8, 9, 1, -100};
/* label_smoothing_factor and neftune_noise_alpha of the models make() builds. */
static const char *smoothing = "0.0";
static const char *neftune = "0.0";

static loom_model *make(int gated, const char *dropout)
{
    static loom_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.spec = desc->params;
    const test_cfg_entry e[] = {
        {"vocab_size", LOOM_PARAM_INT, "11"},
        {"d_model", LOOM_PARAM_INT, "8"},
        {"d_kv", LOOM_PARAM_INT, "3"},
        {"num_heads", LOOM_PARAM_INT, "2"},
        {"d_ff", LOOM_PARAM_INT, "12"},
        {"num_layers", LOOM_PARAM_INT, "2"},
        {"num_decoder_layers", LOOM_PARAM_INT, "2"},
        {"relative_attention_num_buckets", LOOM_PARAM_INT, "8"},
        {"relative_attention_max_distance", LOOM_PARAM_INT, "6"},
        {"dropout_rate", LOOM_PARAM_FLOAT, dropout},
        {"feed_forward_proj", LOOM_PARAM_STRING, gated ? "gated-gelu" : "relu"},
        {"tie_word_embeddings", LOOM_PARAM_BOOL, gated ? "false" : "true"},
        {"decoder_start_token_id", LOOM_PARAM_INT, "0"},
        {"label_smoothing_factor", LOOM_PARAM_FLOAT, smoothing},
        {"neftune_noise_alpha", LOOM_PARAM_FLOAT, neftune},
    };
    for (size_t i = 0; i < sizeof e / sizeof *e; i++) cfg.entries[cfg.n++] = e[i];
    loom_model *m = NULL;
    loom_status st = vt->create(&host, &test_host_api, &cfg, &m);
    if (st != LOOM_OK) fprintf(stderr, "create: %s\n", host.last_error);
    return m;
}

static int64_t n_params(loom_model *m)
{
    int64_t n = 0;
    for (size_t i = 0; i < vt->param_count(m); i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        vt->param_info(m, i, &info);
        int64_t s = 1;
        for (uint32_t d = 0; d < info.ndim; d++) s *= info.shape[d];
        n += s;
    }
    return n;
}

static float *bind_model(loom_model *m, int64_t max_batch, int64_t max_T)
{
    const int64_t n = n_params(m);
    float *params = malloc((size_t)n * sizeof *params);
    CHECK(vt->init_params(m, params) == LOOM_OK);
    loom_model_binding b = {LOOM_HEADER_INIT(loom_model_binding)};
    b.params = params;
    b.param_dtype = b.compute_dtype = LOOM_DTYPE_F32;
    b.device = LOOM_DEVICE_CPU;
    b.max_batch_size = max_batch;
    b.kernels = lk_cpu_kernel_table();
    b.max_sequence_length = max_T;
    CHECK(vt->bind(m, &b) == LOOM_OK);
    return params;
}

static void view(loom_tensor_view *v, const int32_t *data, int64_t rows, int64_t cols)
{
    *v = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
    v->data = (void *)data;
    v->dtype = LOOM_DTYPE_I32;
    v->ndim = 2;
    v->shape[0] = rows;
    v->shape[1] = cols;
}

static loom_batch make_batch(const int32_t *in, const int32_t *msk, const int32_t *lab, int64_t b, int64_t s, int64_t t)
{
    loom_batch batch = {LOOM_HEADER_INIT(loom_batch)};
    view(&batch.inputs, in, b, s);
    view(&batch.labels, lab, b, t);
    if (msk) view(&batch.attention_mask, msk, b, s);
    batch.batch_size = b;
    return batch;
}

static double loss_of(loom_model *m, const loom_batch *batch)
{
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, batch, &r, NULL) == LOOM_OK);
    return r.loss_sum;
}

/* (a) */
static void test_names(void)
{
    loom_model *m = make(0, "0.0");
    loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
    CHECK(vt->param_info(m, 0, &info) == LOOM_OK && strcmp(info.name, "shared.weight") == 0 && info.shape[0] == V &&
          info.shape[1] == 8);
    CHECK(vt->param_info(m, 5, &info) == LOOM_OK &&
          strcmp(info.name, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") == 0 &&
          info.shape[0] == 8 && info.shape[1] == 2);
    CHECK(vt->param_info(m, 1, &info) == LOOM_OK &&
          strcmp(info.name, "encoder.block.0.layer.0.SelfAttention.q.weight") == 0 && info.shape[0] == 6 &&
          info.shape[1] == 8);
    size_t n = vt->param_count(m);
    CHECK(vt->param_info(m, n - 1, &info) == LOOM_OK && strcmp(info.name, "decoder.final_layer_norm.weight") == 0);
    /* enc: 2 blocks x 8 + rel + final; dec: 2 x 13 + rel + final; shared */
    CHECK(n == 1 + (2 * 8 + 1 + 1) + (2 * 13 + 1 + 1));
    vt->destroy(m);
    m = make(1, "0.0");
    size_t n2 = vt->param_count(m);
    CHECK(n2 == n + 4 + 1);
    CHECK(vt->param_info(m, n2 - 1, &info) == LOOM_OK && strcmp(info.name, "lm_head.weight") == 0);
    CHECK(vt->param_info(m, 7, &info) == LOOM_OK &&
          strcmp(info.name, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight") == 0);
    vt->destroy(m);
    /* a config that contradicts itself */
    static loom_config bad;
    memset(&bad, 0, sizeof bad);
    bad.spec = desc->params;
    bad.entries[bad.n++] = (test_cfg_entry){"feed_forward_proj", LOOM_PARAM_STRING, "gated-gelu"};
    bad.entries[bad.n++] = (test_cfg_entry){"dense_act_fn", LOOM_PARAM_STRING, "relu"};
    m = NULL;
    CHECK(vt->create(&host, &test_host_api, &bad, &m) == LOOM_E_INVALID && strstr(host.last_error, "dense_act_fn"));
    bad.n = 0;
    bad.entries[bad.n++] = (test_cfg_entry){"feed_forward_proj", LOOM_PARAM_STRING, "swish"};
    CHECK(vt->create(&host, &test_host_api, &bad, &m) == LOOM_E_UNSUPPORTED && strstr(host.last_error, "swish"));
}

/* (b) */
static void test_gradients(int gated, const char *dropout)
{
    loom_model *m = make(gated, dropout);
    float *params = bind_model(m, B, 6);
    const int64_t n = n_params(m);
    loom_batch batch = make_batch(inputs, mask, labels, B, S, T);
    batch.training = 1;
    batch.dropout_seed = 1234;
    double l0 = loss_of(m, &batch);
    CHECK(isfinite(l0) && l0 > 0);
    float *grads = calloc((size_t)n, sizeof *grads);
    sink_ctx sc;
    loom_grad_sink sink;
    sink_init(&sc, grads, n, &sink);
    CHECK(vt->backward(m, &batch, 1.0f, &sink) == LOOM_OK);
    CHECK(sc.violations == 0 && sc.n_open == 0);
    /* The gradients are handed over a range at a time (`shared` first and last, a block or a
     * final norm in between), every element exactly once, each range given back before the next
     * is taken, so never more held at once than max_grad_elements says, which is less than the
     * model. */
    CHECK(sc.n_acquired > 2 && sc.acquired[0].begin == 0 && sc.released[sc.n_released - 1].begin == 0);
    {
        int64_t covered = 0;
        for (int i = 0; i < sc.n_acquired; i++)
            covered += sc.acquired[i].end - sc.acquired[i].begin;
        CHECK(covered == n);
        CHECK(sc.most_open <= vt->max_grad_elements(m) && vt->max_grad_elements(m) < n);
        const int64_t shared = sc.acquired[0].end - sc.acquired[0].begin;
        CHECK(sc.most_open < shared + (n - shared) / 2);
    }
    int bad = 0, checked = 0, skipped = 0;
    for (size_t i = 0; i < vt->param_count(m); i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        vt->param_info(m, i, &info);
        int64_t off = 0, size = 1;
        for (size_t j = 0; j < i; j++) {
            loom_param_info o = {LOOM_HEADER_INIT(loom_param_info)};
            vt->param_info(m, j, &o);
            int64_t s = 1;
            for (uint32_t d = 0; d < o.ndim; d++) s *= o.shape[d];
            off += s;
        }
        for (uint32_t d = 0; d < info.ndim; d++) size *= info.shape[d];
        for (int probe = 0; probe < 3; probe++) {
            /* Two step sizes: where they disagree the loss is not smooth at this point (a ReLU
             * unit crossing zero), and finite differences say nothing there. */
            const int64_t e = off + (probe * 7919 + 13) % size;
            double fd[2];
            for (int k = 0; k < 2; k++) {
                const float saved = params[e], h = k ? 5e-3f : 1e-2f;
                params[e] = saved + h;
                const double up = loss_of(m, &batch);
                params[e] = saved - h;
                const double down = loss_of(m, &batch);
                params[e] = saved;
                fd[k] = (up - down) / (2.0 * h);
            }
            if (fabs(fd[0] - fd[1]) > 1e-3 + 1e-2 * fabs(fd[1])) {
                skipped++;
                continue;
            }
            checked++;
            if (fabs(fd[1] - grads[e]) > 2e-3 + 1e-2 * fabs(fd[1])) {
                bad++;
                fprintf(stderr, "%s[%lld] (dropout %s): analytic %g, finite differences %g\n", info.name,
                        (long long)(e - off), dropout, grads[e], fd[1]);
            }
        }
    }
    fprintf(stderr, "%s, dropout %s, neftune %s: %d gradients checked, %d at a kink skipped\n",
            gated ? "gated-gelu" : "relu", dropout, neftune, checked, skipped);
    CHECK(bad == 0 && checked > 100 && skipped < checked / 3);
    /* dropout on: another seed changes the loss; in evaluation (training 0) it is off */
    if (strcmp(dropout, "0.0") != 0) {
        batch.dropout_seed = 99;
        CHECK(loss_of(m, &batch) != l0);
        batch.training = 0;
        const double e1 = loss_of(m, &batch);
        batch.dropout_seed = 1234;
        CHECK(loss_of(m, &batch) == e1);
    }
    vt->destroy(m);
    free(params);
    free(grads);
}

/* Label smoothing: the loss is HF's LabelSmoother of the model's own logits, computed here. */
static void test_smoothing(void)
{
    smoothing = "0.2";
    loom_model *m = make(1, "0.0");
    smoothing = "0.0";
    float *params = bind_model(m, B, 6);
    loom_batch batch = make_batch(inputs, mask, labels, B, S, T);
    float logits[B * T * V];
    loom_tensor_view out = {LOOM_HEADER_INIT(loom_tensor_view)};
    out.data = logits, out.dtype = LOOM_DTYPE_F32, out.ndim = 3;
    out.shape[0] = B, out.shape[1] = T, out.shape[2] = V;
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK);
    double want = 0.0;
    for (int i = 0; i < B * T; i++) {
        if (labels[i] == -100) continue;
        const float *x = logits + i * V;
        double max = x[0], sum = 0.0, mean = 0.0;
        for (int v = 1; v < V; v++) max = fmax(max, x[v]);
        for (int v = 0; v < V; v++) sum += exp(x[v] - max), mean += x[v] / (double)V;
        const double lse = max + log(sum);
        want += 0.8 * (lse - x[labels[i]]) + 0.2 * (lse - mean);
    }
    CHECK_CLOSE(r.loss_sum, want, 1e-5, 1e-5);
    CHECK(r.n_targets == 9);
    vt->destroy(m);
    free(params);
}

/* (c) copy a random sequence: the loss must fall well below its start */
static void test_training(void)
{
    loom_model *m = make(0, "0.0");
    enum { BB = 8, L = 5 };
    float *params = bind_model(m, BB, L + 1);
    const int64_t n = n_params(m);
    float *g = calloc((size_t)n, sizeof *g), *m1 = calloc((size_t)n, sizeof *m1), *m2 = calloc((size_t)n, sizeof *m2);
    int32_t in[BB * L], lab[BB * L];
    uint64_t state = 7;
    double first = 0, last = 0;
    for (int step = 1; step <= 150; step++) {
        for (int i = 0; i < BB * L; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            in[i] = lab[i] = 2 + (int32_t)((state >> 33) % 9);
        }
        loom_batch batch = make_batch(in, NULL, lab, BB, L, L);
        loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
        CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
        const double mean = r.loss_sum / (double)r.n_targets;
        if (step <= 10) first += mean / 10;
        if (step > 140) last += mean / 10;
        memset(g, 0, (size_t)n * sizeof *g);
        sink_ctx sc;
        loom_grad_sink sink;
        sink_init(&sc, g, n, &sink);
        CHECK(vt->backward(m, &batch, 1.0f / (float)r.n_targets, &sink) == LOOM_OK);
        for (int64_t i = 0; i < n; i++) { /* Adam, lr 1e-2 */
            m1[i] = 0.9f * m1[i] + 0.1f * g[i];
            m2[i] = 0.999f * m2[i] + 0.001f * g[i] * g[i];
            const double mh = m1[i] / (1 - pow(0.9, step)), vh = m2[i] / (1 - pow(0.999, step));
            params[i] -= (float)(1e-2 * mh / (sqrt(vh) + 1e-8));
        }
    }
    fprintf(stderr, "copy task: mean loss %.3f (first 10 steps) -> %.3f (last 10)\n", first, last);
    CHECK(last < 0.8 * first && last < log(9.0) - 0.3); /* well below chance (ln 9) */
    vt->destroy(m);
    free(params), free(g), free(m1), free(m2);
}

/* (d) */
static void test_errors(void)
{
    loom_model *m = make(0, "0.0");
    float *params = bind_model(m, B, 6);
    int32_t bad_in[B * S];
    memcpy(bad_in, inputs, sizeof bad_in);
    bad_in[7] = V;
    loom_batch batch = make_batch(bad_in, mask, labels, B, S, T);
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_E_INVALID &&
          strstr(host.last_error, "token id 11 at row 1, position 2"));
    int32_t bad_lab[B * T];
    memcpy(bad_lab, labels, sizeof bad_lab);
    bad_lab[2] = -5;
    batch = make_batch(inputs, mask, bad_lab, B, S, T);
    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_E_INVALID && strstr(host.last_error, "label -5"));
    batch = make_batch(inputs, mask, labels, B, S, T);
    batch.attention_mask.shape[1] = S - 1;
    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_E_INVALID && strstr(host.last_error, "attention_mask"));
    batch = make_batch(inputs, mask, labels, B, S, T);
    batch.labels.shape[1] = 7; /* longer than bound */
    CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_E_INVALID && strstr(host.last_error, "max_sequence_length"));
    vt->destroy(m);
    free(params);
}

/* NEFTune: the noise `shared`'s output gets on one side, [B, len, D] under dropout_seed `seed`
 * (call 0 the encoder, 1 the decoder), as the model draws it. */
enum { NEFTUNE_SEED = 2024, D = 8 };
static void neftune_noise(float *noise, double alpha, uint64_t seed, uint64_t call, int64_t len)
{
    const float mag = model_neftune_magnitude(alpha, len, D);
    for (int64_t i = 0; i < B * len * D; i++)
        noise[i] = model_neftune_noise(model_neftune_seed(seed, call), (uint64_t)i, mag);
}

/* n draws in [-a, a], not all zero, with a uniform's mean and variance (a^2 / 3) within five
 * standard deviations of their estimates. */
static void check_uniform(const float *x, int64_t n, float a)
{
    double sum = 0.0, sq = 0.0, lo = 0.0, hi = 0.0;
    int outside = 0;
    for (int64_t i = 0; i < n; i++) {
        outside += !(x[i] >= -a && x[i] <= a);
        sum += x[i], sq += (double)x[i] * x[i];
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
    }
    const double mean = sum / (double)n, var = sq / (double)n - mean * mean;
    CHECK(outside == 0);
    CHECK(lo < -0.8 * a && hi > 0.8 * a);
    CHECK(fabs(mean) < 5.0 * a / sqrt(3.0 * (double)n));
    CHECK(fabs(var / (a * a / 3.0) - 1.0) < 5.0 * 0.9 / sqrt((double)n));
}

/* neftune_noise_alpha 5 against the same weights without: evaluation bit for bit the plain
 * model's (logits and loss); a training forward another loss, the same for the same seed and
 * another for another seed; the encoder's noise scaled by its length (S), the decoder's by its
 * own (T); gradients: test_gradients with the noise on. Where the noise goes (the encoder's and
 * the decoder's embeddings, before dropout) t5_reference_test.py checks against numpy. */
static void test_neftune(void)
{
    loom_model *m0 = make(1, "0.0");
    neftune = "5";
    loom_model *m = make(1, "0.0");
    neftune = "0.0";
    float *params0 = bind_model(m0, B, 6), *params = bind_model(m, B, 6);
    CHECK(memcmp(params0, params, (size_t)n_params(m) * sizeof *params) == 0);
    loom_batch batch = make_batch(inputs, mask, labels, B, S, T);
    float logits[B * T * V], logits0[B * T * V];
    loom_tensor_view out = {LOOM_HEADER_INIT(loom_tensor_view)};
    out.dtype = LOOM_DTYPE_F32, out.ndim = 3;
    out.shape[0] = B, out.shape[1] = T, out.shape[2] = V;
    loom_tensor_view out0 = out;
    out.data = logits, out0.data = logits0;
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)}, r0 = r;
    batch.training = 1;
    batch.dropout_seed = NEFTUNE_SEED;
    const double noisy = loss_of(m, &batch), clean = loss_of(m0, &batch);
    CHECK(isfinite(noisy) && fabs(noisy - clean) > 1e-3);
    CHECK(loss_of(m, &batch) == noisy);
    batch.dropout_seed = NEFTUNE_SEED + 1;
    const double other = loss_of(m, &batch);
    CHECK(other != noisy && fabs(other - clean) > 1e-3);
    batch.training = 0;
    CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK && vt->forward(m0, &batch, &r0, &out0) == LOOM_OK);
    CHECK(r.loss_sum == r0.loss_sum && memcmp(logits, logits0, sizeof logits) == 0);
    CHECK(r0.loss_sum == clean); /* the plain model's training forward: no dropout, no noise */

    float enc[B * S * D], dec[B * T * D], enc2[B * S * D];
    neftune_noise(enc, 5.0, NEFTUNE_SEED, 0, S);
    neftune_noise(dec, 5.0, NEFTUNE_SEED, 1, T);
    neftune_noise(enc2, 5.0, NEFTUNE_SEED + 1, 0, S);
    check_uniform(enc, B * S * D, (float)(5.0 / sqrt(S * D)));
    check_uniform(dec, B * T * D, (float)(5.0 / sqrt(T * D)));
    int same = 0;
    for (int i = 0; i < B * S * D; i++)
        same += enc[i] == enc2[i];
    CHECK(same <= 2);
    vt->destroy(m);
    vt->destroy(m0);
    free(params);
    free(params0);
}

/* --dump FILE CONFIG [neftune]: with neftune, the model of neftune_noise_alpha 5 in a training
 * forward (dropout 0, dropout_seed NEFTUNE_SEED), and the noise both sides must have had. */
static void dump(const char *path, int gated, int with_neftune)
{
    if (with_neftune) neftune = "5";
    loom_model *m = make(gated, "0.0");
    neftune = "0.0";
    float *params = bind_model(m, B, 6);
    loom_batch batch = make_batch(inputs, mask, labels, B, S, T);
    batch.training = with_neftune;
    batch.dropout_seed = NEFTUNE_SEED;
    float *logits = calloc(B * T * V, sizeof *logits);
    loom_tensor_view out = {LOOM_HEADER_INIT(loom_tensor_view)};
    out.data = logits;
    out.dtype = LOOM_DTYPE_F32;
    out.ndim = 3;
    out.shape[0] = B, out.shape[1] = T, out.shape[2] = V;
    loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r, &out) == LOOM_OK);
    FILE *f = fopen(path, "w");
    if (!f) {
        CHECK(!"cannot write the dump");
        return;
    }
    fprintf(f, "{\"loss_sum\": %.17g, \"n_targets\": %lld, \"B\": %d, \"S\": %d, \"T\": %d,\n\"tensors\": {",
            r.loss_sum, (long long)r.n_targets, B, S, T);
    int64_t off = 0;
    for (size_t i = 0; i < vt->param_count(m); i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        vt->param_info(m, i, &info);
        int64_t size = 1;
        for (uint32_t d = 0; d < info.ndim; d++) size *= info.shape[d];
        fprintf(f, "%s\n\"%s\": {\"shape\": [%lld", i ? "," : "", info.name, (long long)info.shape[0]);
        if (info.ndim == 2) fprintf(f, ", %lld", (long long)info.shape[1]);
        fprintf(f, "], \"data\": [");
        for (int64_t j = 0; j < size; j++) fprintf(f, "%s%.9g", j ? "," : "", params[off + j]);
        fprintf(f, "]}");
        off += size;
    }
    fprintf(f, "},\n\"inputs\": [");
    for (int i = 0; i < B * S; i++) fprintf(f, "%s%d", i ? "," : "", inputs[i]);
    fprintf(f, "],\n\"mask\": [");
    for (int i = 0; i < B * S; i++) fprintf(f, "%s%d", i ? "," : "", mask[i]);
    fprintf(f, "],\n\"labels\": [");
    for (int i = 0; i < B * T; i++) fprintf(f, "%s%d", i ? "," : "", labels[i]);
    fprintf(f, "],\n\"logits\": [");
    for (int i = 0; i < B * T * V; i++) fprintf(f, "%s%.9g", i ? "," : "", logits[i]);
    fprintf(f, "]");
    if (with_neftune) {
        float enc[B * S * D], dec[B * T * D];
        neftune_noise(enc, 5.0, NEFTUNE_SEED, 0, S);
        neftune_noise(dec, 5.0, NEFTUNE_SEED, 1, T);
        fprintf(f, ",\n\"alpha\": 5, \"encoder_noise\": [");
        for (int i = 0; i < B * S * D; i++)
            fprintf(f, "%s%.9g", i ? "," : "", enc[i]);
        fprintf(f, "],\n\"decoder_noise\": [");
        for (int i = 0; i < B * T * D; i++)
            fprintf(f, "%s%.9g", i ? "," : "", dec[i]);
        fprintf(f, "]");
    }
    fprintf(f, "}\n");
    fclose(f);
    vt->destroy(m);
    free(params);
    free(logits);
}

/* (e) Rows r = source * BEAMS + beam; every step feeds row r a token of its own, and after
 * step 2 the rows are reordered within their sources. The logits of each step must equal the
 * full forward's last position on the row's history (inputs repeated per beam). */
enum { BEAMS = 2, STEPS = 6 };
static void test_cached_decoding(int gated)
{
    loom_model *m = make(gated, "0.1");
    CHECK(m != NULL);
    if (!m) return;
    float *params = bind_model(m, B * BEAMS, 8);
    enum { R = B * BEAMS };
    loom_generation_ids ids = {LOOM_HEADER_INIT(loom_generation_ids)};
    CHECK(vt->generation_ids(m, &ids) == LOOM_OK && ids.decoder_start_token_id == 0 && ids.eos_token_id == 1 &&
          ids.pad_token_id == 0);
    int32_t tokens[R], history[R * STEPS], moved[R * STEPS];
    float *cached = malloc((size_t)(STEPS * R * V) * sizeof(float));
    CHECK(vt->decode_rows(m, tokens, cached) != LOOM_OK); /* before encode */
    loom_batch sources = make_batch(inputs, mask, NULL, B, S, 0);
    sources.labels = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
    CHECK(vt->encode(m, &sources, BEAMS, STEPS) == LOOM_OK);
    const int32_t across[R] = {2, 1, 2, 3, 4, 5};
    CHECK(vt->reorder_cache(m, across) != LOOM_OK); /* row 0 may not take a row of source 1 */
    for (int t = 0; t < STEPS; t++) {
        for (int r = 0; r < R; r++)
            history[r * STEPS + t] = tokens[r] = t == 0 ? 0 : (r * 7 + t * 3) % V;
        CHECK(vt->decode_rows(m, tokens, cached + (int64_t)t * R * V) == LOOM_OK);
        if (t == 2) {
            const int32_t rows[R] = {1, 1, 3, 2, 4, 4};
            CHECK(vt->reorder_cache(m, rows) == LOOM_OK);
            memcpy(moved, history, sizeof history);
            for (int r = 0; r < R; r++)
                memcpy(history + r * STEPS, moved + rows[r] * STEPS, STEPS * sizeof(int32_t));
        }
    }
    CHECK(vt->decode_rows(m, tokens, cached) != LOOM_OK); /* past max_positions */
    /* The full forwards, after the generation (a forward ends it). */
    int32_t in_r[R * S], mask_r[R * S];
    for (int r = 0; r < R; r++) {
        memcpy(in_r + r * S, inputs + r / BEAMS * S, S * sizeof(int32_t));
        memcpy(mask_r + r * S, mask + r / BEAMS * S, S * sizeof(int32_t));
    }
    float *full = malloc((size_t)(R * STEPS * V) * sizeof(float));
    double worst = 0;
    for (int t = 0; t < STEPS; t++) {
        /* Histories as they were at step t: before the reorder, the rows' own. */
        const int32_t *h = t <= 2 ? moved : history;
        if (t <= 2) {
            for (int r = 0; r < R; r++)
                for (int u = 0; u <= t; u++)
                    moved[r * STEPS + u] = u == 0 ? 0 : (r * 7 + u * 3) % V;
        }
        int32_t dec[R * STEPS];
        for (int r = 0; r < R; r++)
            memcpy(dec + r * (t + 1), h + r * STEPS, (size_t)(t + 1) * sizeof(int32_t));
        loom_batch batch = make_batch(in_r, mask_r, NULL, R, S, 0);
        batch.labels = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
        view(&batch.decoder_input_ids, dec, R, t + 1);
        loom_tensor_view out = {LOOM_HEADER_INIT(loom_tensor_view)};
        out.data = full, out.dtype = LOOM_DTYPE_F32, out.ndim = 3;
        out.shape[0] = R, out.shape[1] = t + 1, out.shape[2] = V;
        CHECK(vt->forward(m, &batch, NULL, &out) == LOOM_OK);
        for (int r = 0; r < R; r++)
            for (int v = 0; v < V; v++) {
                const double a = full[(r * (t + 1) + t) * V + v], c = cached[((int64_t)t * R + r) * V + v];
                const double e = fabs(a - c) / (fabs(a) > 1 ? fabs(a) : 1);
                if (e > worst) worst = e;
            }
    }
    printf("t5 %s: cached decoding vs full forward, worst relative difference %.3g\n", gated ? "v1.1" : "v1.0", worst);
    CHECK(worst < 1e-5);
    free(full);
    free(cached);
    free(params);
    vt->destroy(m);
}

int main(int argc, char **argv)
{
    void *so = NULL;
    desc = open_model_plugin(T5_PLUGIN_PATH, &so);
    if (desc) CHECK(strcmp(desc->name, "t5") == 0);
    if (!desc) return test_finish("test_t5");
    vt = desc->vtable;
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "--dump") == 0) {
        dump(argv[2], strcmp(argv[3], "gated") == 0, argc == 5 && strcmp(argv[4], "neftune") == 0);
        return test_finish("test_t5 --dump");
    }
    test_names();
    /* ReLU without dropout is left out: in a model this small, a perturbation moves enough
     * units across zero that finite differences stop meaning a derivative (the kink check
     * cannot tell many tiny kinks from curvature). Dropout 0.3 silences a third of them. */
    test_gradients(1, "0.0");
    test_gradients(0, "0.3");
    test_gradients(1, "0.3");
    smoothing = "0.2"; /* the smoothed gradient, dlogits = p - 0.8 onehot - 0.2 / V */
    test_gradients(1, "0.0");
    smoothing = "0.0";
    neftune = "5"; /* the noise on both sides' embeddings, fixed by the seed */
    test_gradients(1, "0.0");
    test_gradients(0, "0.3");
    neftune = "0.0";
    test_neftune();
    test_smoothing();
    test_training();
    test_errors();
    test_cached_decoding(0);
    test_cached_decoding(1);
    CHECK(host.live_allocations == 0);
    return test_finish("test_t5");
}
