/* test_mlp.c - the mlp model plugin, loaded with dlopen() from the build's plugin folder and
 * driven through its vtable by the test host of test_host.h (no libloom needed): parameter
 * list, forward against a naive reference, every gradient against central finite differences
 * (through the real grad-sink protocol, with an ignored label), the sink's release order, and
 * the configuration and shape errors. */
#include <loom/model.h>

#include "test_host.h"
#include "open_plugin.h"
#include "test_util.h"

#ifndef MLP_PLUGIN_PATH
#error "MLP_PLUGIN_PATH must name the built mlp.so"
#endif

#define IN 5
#define CLASSES 3
#define BATCH 4

static const loom_model_vtable *vt;
static const loom_plugin_desc *desc;
static loom_host host;

/* ---- grad sink that records the protocol ---------------------------------------------- */

#include "sink_recorder.h"

/* ---- helpers --------------------------------------------------------------------------- */

/* label_smoothing_factor of the models make_cfg builds and of reference_forward's loss (HF's
 * LabelSmoother); 0: none. */
static double smoothing;

static loom_config make_cfg(const char *hidden, const char *activation)
{
    loom_config cfg = {.spec = desc->params};
    if (smoothing > 0) cfg.entries[cfg.n++] = (test_cfg_entry){"label_smoothing_factor", LOOM_PARAM_FLOAT, "0.25"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"input_size", LOOM_PARAM_INT, "5"};
    cfg.entries[cfg.n++] = (test_cfg_entry){"num_classes", LOOM_PARAM_INT, "3"};
    if (hidden) cfg.entries[cfg.n++] = (test_cfg_entry){"hidden_sizes", LOOM_PARAM_STRING, hidden};
    if (activation) cfg.entries[cfg.n++] = (test_cfg_entry){"activation", LOOM_PARAM_STRING, activation};
    return cfg;
}

static loom_tensor_view view(void *data, uint32_t dtype, uint32_t ndim, int64_t d0, int64_t d1)
{
    loom_tensor_view v = {LOOM_HEADER_INIT(loom_tensor_view), .data = data, .dtype = dtype,
                          .device = LOOM_DEVICE_CPU, .ndim = ndim};
    v.shape[0] = d0;
    v.shape[1] = d1;
    return v;
}

static loom_batch make_batch(float *x, int32_t *labels, int64_t rows)
{
    loom_batch b = {LOOM_HEADER_INIT(loom_batch), .batch_size = rows};
    b.inputs = view(x, LOOM_DTYPE_F32, 2, rows, IN);
    b.labels = view(labels, LOOM_DTYPE_I32, 1, rows, 0);
    for (int64_t i = 0; i < rows; i++) b.n_targets += labels && labels[i] != -100;
    return b;
}

static loom_model_binding make_binding(float *params, int64_t max_batch, const void *kernels)
{
    return (loom_model_binding){LOOM_HEADER_INIT(loom_model_binding), .params = params,
                                .param_dtype = LOOM_DTYPE_F32, .compute_dtype = LOOM_DTYPE_F32,
                                .device = LOOM_DEVICE_CPU, .max_batch_size = max_batch,
                                .kernels = kernels};
}

/* Layer sizes as the plugin declared them, for the reference forward. */
typedef struct net {
    int n_layers;
    int64_t in[8], out[8], offset[8], n_params;
} net;

static net describe(loom_model *m)
{
    net n = {0};
    const size_t count = vt->param_count(m);
    int64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        CHECK(vt->param_info(m, i, &info) == LOOM_OK);
        if (i % 2 == 0) {
            n.in[n.n_layers] = info.shape[1];
            n.out[n.n_layers] = info.shape[0];
            n.offset[n.n_layers] = offset;
            n.n_layers++;
            offset += info.shape[0] * info.shape[1];
        } else {
            offset += info.shape[0];
        }
    }
    n.n_params = offset;
    return n;
}

/* Naive double-precision forward: logits [rows, CLASSES] and the summed CE loss. */
static double reference_forward(const net *n, const float *params, const float *x, const int32_t *labels,
                                int rows, int gelu, double *logits, int64_t *n_correct)
{
    double loss = 0.0;
    *n_correct = 0;
    for (int b = 0; b < rows; b++) {
        double act[64], next[64];
        for (int i = 0; i < IN; i++) act[i] = x[b * IN + i];
        for (int l = 0; l < n->n_layers; l++) {
            const float *w = params + n->offset[l], *bias = w + n->out[l] * n->in[l];
            for (int64_t o = 0; o < n->out[l]; o++) {
                double s = bias[o];
                for (int64_t i = 0; i < n->in[l]; i++) s += (double)w[o * n->in[l] + i] * act[i];
                if (l + 1 < n->n_layers) {
                    s = gelu ? 0.5 * s * (1.0 + tanh(sqrt(2.0 / M_PI) * (s + 0.044715 * s * s * s)))
                             : (s > 0 ? s : 0);
                }
                next[o] = s;
            }
            memcpy(act, next, sizeof act);
        }
        double max = act[0], sum = 0.0;
        int64_t best = 0;
        for (int c = 0; c < CLASSES; c++) {
            logits[b * CLASSES + c] = act[c];
            if (act[c] > max) max = act[c], best = c;
        }
        double mean = 0.0;
        for (int c = 0; c < CLASSES; c++) sum += exp(act[c] - max), mean += act[c] / CLASSES;
        if (labels[b] != -100) {
            const double lse = log(sum) + max;
            loss += (1.0 - smoothing) * (lse - act[labels[b]]) + smoothing * (lse - mean);
            *n_correct += best == labels[b];
        }
    }
    return loss;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_descriptor(void)
{
    CHECK(desc->abi_major == LOOM_ABI_MAJOR);
    CHECK(desc->struct_size == sizeof(loom_plugin_desc));
    CHECK(desc->kind == LOOM_KIND_MODEL);
    CHECK(strcmp(desc->name, "mlp") == 0);
    CHECK(vt->struct_size == sizeof(loom_model_vtable));
    CHECK(vt->create && vt->destroy && vt->param_count && vt->param_info && vt->init_params &&
          vt->bind && vt->forward && vt->backward && vt->output_shape && vt->activation_bytes);
    int keys = 0;
    for (const loom_param_spec *s = desc->params; s->key; s++) keys++;
    CHECK(keys == 5); /* input_size, num_classes, hidden_sizes, activation, label_smoothing_factor */
}

static void test_params(void)
{
    loom_config cfg = make_cfg("4,3", NULL);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &test_host_api, &cfg, &m) == LOOM_OK);
    CHECK(vt->param_count(m) == 6);
    static const char *names[6] = {"layers.0.weight", "layers.0.bias", "layers.1.weight",
                                   "layers.1.bias", "classifier.weight", "classifier.bias"};
    static const int64_t shapes[6][2] = {{4, 5}, {4, 0}, {3, 4}, {3, 0}, {3, 3}, {3, 0}};
    for (size_t i = 0; i < 6; i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        CHECK(vt->param_info(m, i, &info) == LOOM_OK);
        CHECK(strcmp(info.name, names[i]) == 0);
        CHECK(info.ndim == (i % 2 ? 1u : 2u));
        CHECK(info.shape[0] == shapes[i][0]);
        if (i % 2 == 0) CHECK(info.shape[1] == shapes[i][1]);
        CHECK(info.flags == (i % 2 ? LOOM_PARAM_NO_DECAY : 0u));
        CHECK(info.struct_size == sizeof(loom_param_info)); /* header left as the host set it */
    }
    loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
    CHECK(vt->param_info(m, 6, &info) == LOOM_E_INVALID);
    int64_t shape[LOOM_MAX_DIMS] = {0};
    uint32_t ndim = 0;
    CHECK(vt->output_shape(m, shape, &ndim) == LOOM_OK);
    CHECK(ndim == 1 && shape[0] == CLASSES);

    /* init_params: deterministic, biases zero, weights ~ N(0, 2/fan_in). */
    const net n = describe(m);
    CHECK(n.n_params == 24 + 15 + 12);
    float a[51], b[51];
    for (int i = 0; i < 51; i++) a[i] = b[i] = NAN;
    CHECK(vt->init_params(m, a) == LOOM_OK);
    CHECK(vt->init_params(m, b) == LOOM_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    for (int l = 0; l < n.n_layers; l++) {
        const float *w = a + n.offset[l];
        const int64_t nw = n.out[l] * n.in[l];
        int zero_bias = 1, nonzero_w = 0;
        for (int64_t i = 0; i < nw; i++) nonzero_w += isfinite(w[i]) && w[i] != 0.0f;
        for (int64_t i = 0; i < n.out[l]; i++) zero_bias &= w[nw + i] == 0.0f;
        CHECK(nonzero_w == nw);
        CHECK(zero_bias);
    }
    /* Tensors get their own streams: the first two weights do not start with the same draws. */
    CHECK(a[n.offset[1]] / sqrtf(2.0f / 4.0f) != a[0] / sqrtf(2.0f / 5.0f));
    vt->destroy(m);

    /* Kaiming std on a wide layer, where the sample std is meaningful. */
    loom_config wide = make_cfg("", NULL);
    wide.entries[0].value = "4000";
    CHECK(vt->create(&host, &test_host_api, &wide, &m) == LOOM_OK);
    CHECK(vt->param_count(m) == 2);
    float *w = malloc(sizeof(float) * (3 * 4000 + 3));
    CHECK(vt->init_params(m, w) == LOOM_OK);
    double ss = 0.0;
    for (int i = 0; i < 3 * 4000; i++) ss += (double)w[i] * w[i];
    CHECK_CLOSE(sqrt(ss / (3 * 4000)), sqrt(2.0 / 4000), 0, 0.05);
    free(w);
    vt->destroy(m);
}

/* Forward against the reference, then every gradient against central differences of
 * seed * loss_sum, through the sink protocol. */
static void test_gradients(const char *hidden, const char *activation)
{
    loom_config cfg = make_cfg(hidden, activation);
    loom_model *m = NULL;
    CHECK(vt->create(&host, &test_host_api, &cfg, &m) == LOOM_OK);
    if (!m) return;
    const int gelu = activation && strcmp(activation, "gelu") == 0;
    const net n = describe(m);
    float *params = malloc(sizeof(float) * (size_t)n.n_params);
    float *grads = malloc(sizeof(float) * (size_t)n.n_params);
    float *grads0 = malloc(sizeof(float) * (size_t)n.n_params);
    CHECK(vt->init_params(m, params) == LOOM_OK);
    /* Non-zero biases, so a bias gradient routed to the wrong place shows. */
    for (int l = 0; l < n.n_layers; l++) {
        for (int64_t o = 0; o < n.out[l]; o++)
            params[n.offset[l] + n.out[l] * n.in[l] + o] = 0.1f * (float)(o + 1) * (l % 2 ? -1.0f : 1.0f);
    }
    loom_model_binding bind = make_binding(params, BATCH, NULL); /* kernels from service() */
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    CHECK(vt->activation_bytes(m) > 0);

    float x[BATCH * IN];
    for (int i = 0; i < BATCH * IN; i++) x[i] = (float)sin(1.3 * i + 0.5) * 1.5f;
    int32_t labels[BATCH] = {0, 2, -100, 1};
    loom_batch batch = make_batch(x, labels, BATCH);

    float logits[BATCH * CLASSES];
    for (int i = 0; i < BATCH * CLASSES; i++) logits[i] = NAN;
    loom_tensor_view outputs = view(logits, LOOM_DTYPE_F32, 2, BATCH, CLASSES);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &res, &outputs) == LOOM_OK);
    double ref_logits[BATCH * CLASSES];
    int64_t ref_correct;
    const double ref_loss = reference_forward(&n, params, x, labels, BATCH, gelu, ref_logits, &ref_correct);
    CHECK_CLOSE(res.loss_sum, ref_loss, 1e-5, 1e-5);
    CHECK(res.n_targets == 3);
    CHECK(res.n_correct == ref_correct);
    for (int i = 0; i < BATCH * CLASSES; i++) CHECK_CLOSE(logits[i], ref_logits[i], 1e-5, 1e-5);

    /* Backward into a sink whose memory already holds values: the model must add. */
    const float seed = 0.7f;
    for (int64_t i = 0; i < n.n_params; i++) grads0[i] = grads[i] = 0.01f * (float)(i % 7) - 0.03f;
    sink_ctx sc;
    loom_grad_sink sink;
    sink_init(&sc, grads, n.n_params, &sink);
    CHECK(vt->backward(m, &batch, seed, &sink) == LOOM_OK);

    /* Protocol: one release per layer, last layer first, each range exactly one layer's
     * weight+bias, together covering the whole buffer once; nothing left open. */
    CHECK(sc.violations == 0);
    CHECK(sc.n_open == 0);
    CHECK(sc.n_released == n.n_layers);
    for (int r = 0; r < sc.n_released && r < n.n_layers; r++) {
        const int l = n.n_layers - 1 - r;
        CHECK(sc.released[r].begin == n.offset[l]);
        CHECK(sc.released[r].end == n.offset[l] + n.out[l] * (n.in[l] + 1));
    }
    if (sc.n_released > 0) CHECK(sc.released[0].end == n.n_params);

    int bad = 0;
    const float eps = 1e-3f;
    for (int64_t i = 0; i < n.n_params; i++) {
        const float p0 = params[i];
        loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
        params[i] = p0 + eps;
        CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
        const double lp = r.loss_sum;
        params[i] = p0 - eps;
        CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
        const double lm = r.loss_sum;
        params[i] = p0;
        const double numeric = (double)seed * (lp - lm) / (2.0 * eps);
        const double analytic = (double)grads[i] - grads0[i];
        if (!(fabs(analytic - numeric) <= 1e-3 + 1e-2 * fabs(numeric))) {
            if (bad++ < 5)
                fprintf(stderr, "%s/%s grad[%ld]: analytic %.6g, numeric %.6g\n", hidden ? hidden : "default",
                        activation ? activation : "relu", (long)i, analytic, numeric);
        }
    }
    CHECK(bad == 0);

    /* Some gradient is non-trivial (the check above is not vacuous). */
    double gnorm = 0.0;
    for (int64_t i = 0; i < n.n_params; i++) gnorm += fabs((double)grads[i] - grads0[i]);
    CHECK(gnorm > 1e-2);

    /* A second bind with the kernels passed in the binding works the same. */
    bind.kernels = lk_cpu_kernel_table();
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    loom_forward_result r2 = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(vt->forward(m, &batch, &r2, NULL) == LOOM_OK);
    CHECK(r2.loss_sum == res.loss_sum);

    vt->destroy(m);
    free(params), free(grads), free(grads0);
}

static int fails_with(loom_status got, loom_status want, const char *needle)
{
    const int ok = got == want && strstr(host.last_error, needle) != NULL;
    if (!ok) fprintf(stderr, "expected status %d mentioning \"%s\", got %d: %s\n", want, needle, got, host.last_error);
    return ok;
}

static void test_errors(void)
{
    loom_model *m = NULL;
    /* Sizes left at 0 ("from the data") and never filled in. */
    loom_config cfg = {.spec = desc->params};
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "input_size"));
    CHECK(m == NULL);
    cfg.entries[cfg.n++] = (test_cfg_entry){"input_size", LOOM_PARAM_INT, "5"};
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "num_classes"));
    cfg = make_cfg("4,,3", NULL);
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "hidden_sizes"));
    cfg = make_cfg("4,-3", NULL);
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "hidden_sizes"));
    cfg = make_cfg("4 x", NULL);
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "hidden_sizes"));
    cfg = make_cfg(NULL, "tanh");
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "activation"));
    cfg = make_cfg(NULL, NULL);
    cfg.entries[0].type = LOOM_PARAM_STRING; /* input_size: "5" as a string */
    CHECK(fails_with(vt->create(&host, &test_host_api, &cfg, &m), LOOM_E_INVALID, "input_size"));
    CHECK(host.live_allocations == 0); /* failed creates leak nothing */

    /* hidden_sizes given as an integer is one hidden layer. */
    cfg = make_cfg(NULL, NULL);
    cfg.entries[cfg.n++] = (test_cfg_entry){"hidden_sizes", LOOM_PARAM_INT, "6"};
    CHECK(vt->create(&host, &test_host_api, &cfg, &m) == LOOM_OK);
    CHECK(m && vt->param_count(m) == 4);
    vt->destroy(m);

    /* Default widths "64,64". */
    cfg = make_cfg(NULL, NULL);
    CHECK(vt->create(&host, &test_host_api, &cfg, &m) == LOOM_OK);
    const net n = describe(m);
    CHECK(n.n_layers == 3 && n.out[0] == 64 && n.out[1] == 64 && n.in[0] == IN && n.out[2] == CLASSES);
    float *params = calloc((size_t)n.n_params, sizeof(float));
    loom_model_binding bind = make_binding(params, BATCH, NULL);
    bind.param_dtype = LOOM_DTYPE_BF16;
    CHECK(fails_with(vt->bind(m, &bind), LOOM_E_UNSUPPORTED, "bf16"));
    bind.param_dtype = LOOM_DTYPE_F32;
    bind.compute_dtype = LOOM_DTYPE_F16;
    CHECK(fails_with(vt->bind(m, &bind), LOOM_E_UNSUPPORTED, "f16"));
    bind.compute_dtype = LOOM_DTYPE_F32;

    float x[BATCH * IN] = {0};
    int32_t labels[BATCH] = {0, 1, 2, 0};
    loom_batch batch = make_batch(x, labels, BATCH);
    loom_forward_result res = {LOOM_HEADER_INIT(loom_forward_result)};
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "before bind"));
    CHECK(vt->bind(m, &bind) == LOOM_OK);

    sink_ctx sc;
    loom_grad_sink sink;
    float grads[1];
    sink_init(&sc, grads, 1, &sink);
    CHECK(fails_with(vt->backward(m, &batch, 1.0f, &sink), LOOM_E_INVALID, "forward"));

    batch.inputs.shape[1] = IN + 1;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "input_size"));
    batch.inputs.shape[1] = IN;
    batch.batch_size = BATCH + 1;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "batch of 5"));
    batch.batch_size = BATCH;
    labels[2] = 3;
    CHECK(fails_with(vt->forward(m, &batch, &res, NULL), LOOM_E_INVALID, "label 3 of row 2 outside [0, 3)"));
    labels[2] = -100;
    float small[2 * CLASSES];
    loom_tensor_view outputs = view(small, LOOM_DTYPE_F32, 2, 2, CLASSES);
    CHECK(fails_with(vt->forward(m, &batch, &res, &outputs), LOOM_E_INVALID, "outputs"));

    /* Without labels (prediction): logits only, no targets, and no backward. */
    batch.labels.data = NULL;
    float logits[BATCH * CLASSES];
    outputs = view(logits, LOOM_DTYPE_F32, 2, BATCH, CLASSES);
    CHECK(vt->forward(m, &batch, &res, &outputs) == LOOM_OK);
    CHECK(res.n_targets == 0 && res.loss_sum == 0.0);
    CHECK(fails_with(vt->backward(m, &batch, 1.0f, &sink), LOOM_E_INVALID, "forward"));

    vt->destroy(m);
    free(params);
    vt->destroy(NULL);
    CHECK(host.live_allocations == 0);
}

int main(void)
{
    void *so = NULL;
    desc = open_model_plugin(MLP_PLUGIN_PATH, &so);
    if (!desc) return test_finish("test_mlp");
    vt = desc->vtable;

    test_descriptor();
    test_params();
    test_gradients("4,3", NULL);
    test_gradients("4,3", "gelu");
    test_gradients("", NULL);
    test_gradients("7", "relu");
    smoothing = 0.25; /* make_cfg's "0.25": the smoothed loss and its finite differences */
    test_gradients("4,3", "gelu");
    smoothing = 0.0;
    test_errors();
    CHECK(host.live_allocations == 0);
    dlclose(so);
    return test_finish("test_mlp");
}
