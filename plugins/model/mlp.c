/*
 * mlp.c - the "mlp" model: a classifier over dense float features.
 *
 *   x [B, input_size] -> per hidden width h: linear -> activation -> ... -> linear (classifier)
 *   -> logits [B, num_classes] -> softmax cross-entropy against I32 labels (-100: no target)
 *
 * Parameters, in flat-buffer order (HF naming): layers.i.weight [out, in], layers.i.bias [out]
 * for each hidden layer, then classifier.weight and classifier.bias. A layer's weight and bias
 * are adjacent, so backward hands each layer's gradients to the sink as one range, last layer
 * first.
 *
 * Everything runs through the host's kernel table; the model reads labels and logits directly
 * (label checks, accuracy), so it binds to CPU memory only for now.
 */
#include <loom/kernels.h>
#include <loom/model.h>
#include <loom/plugin.h>

#include "model_common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MLP_IGNORE_INDEX (-100)
/* random_normal stream of parameter tensor i is MLP_STREAM_BASE + i ("mlp\0"), so tensor i's
 * initial values do not depend on the sizes of the tensors before it. */
#define MLP_STREAM_BASE 0x6d6c7000u
/* Every activation buffer starts on a 64-byte boundary (a cache line, an AVX-512 vector). */
#define MLP_ALIGN_FLOATS 16

typedef struct mlp_layer {
    int64_t in, out;
    int64_t offset;          /* of the weight in the flat buffer; the bias follows at + out*in */
    char weight_name[48];
    char bias_name[48];
    float *z;                /* bound: pre-activation [B, out]; the logits for the classifier */
    float *a;                /* bound: activation(z) [B, out]; NULL for the classifier       */
} mlp_layer;

struct loom_model {
    loom_host *host;
    const loom_host_api *api;
    int64_t input_size, num_classes;
    int32_t gelu;            /* 0: ReLU, 1: GELU (tanh)                                       */
    float smoothing;         /* label_smoothing_factor (HF's LabelSmoother epsilon)           */
    int64_t n_layers;        /* linear layers, the classifier included                        */
    mlp_layer *layers;
    int64_t n_params;        /* elements of the flat buffer                                   */

    /* Set by bind(). */
    const loom_kernels_api *k;
    const float *params;
    const loom_param_source *source; /* ZeRO-3 (ABI 1.12): a layer is whole only while acquired */
    int64_t max_batch;
    void *activations;       /* one allocation carved into the buffers below                 */
    size_t activation_bytes;
    float *probs;            /* [B, C] softmax, kept for backward                             */
    float *losses;           /* [B]                                                           */
    float *dz;               /* [B, max width] gradient w.r.t. the current layer's z          */
    float *da;               /* [B, max width] gradient w.r.t. the current layer's input      */
    int64_t forward_rows;    /* rows of the last forward that had labels; 0: nothing to back  */
    int64_t forward_any_rows; /* rows of the last forward, labels or not (backward_outputs)  */
};

/* ---- configuration ------------------------------------------------------------------- */

/* Parse "64,64" into widths (NULL: count only). "" or blanks only: no hidden layer. Returns
 * the count, or -1 (message recorded) for anything but positive integers between commas. */
static int64_t parse_widths(loom_model *self, const char *text, int64_t *widths)
{
    const char *p = text;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0') return 0;
    int64_t n = 0;
    for (;;) {
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        if (end == p || errno == ERANGE || v <= 0) {
            self->api->fail(self->host, LOOM_E_INVALID,
                            "hidden_sizes \"%s\": expected positive integers separated by commas "
                            "(\"64,64\"), or \"\" for no hidden layer", text);
            return -1;
        }
        if (widths) widths[n] = (int64_t)v;
        n++;
        p = end;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '\0') return n;
        if (*p != ',') {
            self->api->fail(self->host, LOOM_E_INVALID,
                            "hidden_sizes \"%s\": unexpected '%c' (expected positive integers "
                            "separated by commas)", text, *p);
            return -1;
        }
        p++;
    }
}

static void mlp_destroy(loom_model *self)
{
    if (!self) return;
    const loom_host_api *api = self->api;
    api->free_memory(self->host, self->activations);
    api->free_memory(self->host, self->layers);
    api->free_memory(self->host, self);
}

/* Sizes, activation and layers from the config section (create(): MODEL_DEFINE_CREATE below). */
static loom_status mlp_configure(loom_model *self, const loom_config *config)
{
    loom_host *host = self->host;
    const loom_host_api *api = self->api;
    loom_status st;
    if ((st = loom_cfg_opt_i64(host, api, config, "input_size", &self->input_size)) ||
        (st = loom_cfg_opt_i64(host, api, config, "num_classes", &self->num_classes)))
        return st;
    if (self->input_size <= 0)
        return api->fail(host, LOOM_E_INVALID,
                         "input_size is %lld: set it, or train on a data file (its header gives it)",
                         (long long)self->input_size);
    if (self->num_classes <= 0)
        return api->fail(host, LOOM_E_INVALID,
                         "num_classes is %lld: set it, or train on a data file (its header gives it)",
                         (long long)self->num_classes);

    /* hidden_sizes is a string; a lone integer (hidden_sizes: 128 in JSON) is one layer. */
    const char *hidden = "64,64";
    char one[32];
    if (api->cfg_str(config, "hidden_sizes", &hidden) == LOOM_CFG_WRONG_TYPE) {
        int64_t w = 0;
        if (api->cfg_i64(config, "hidden_sizes", &w) != LOOM_CFG_PRESENT)
            return api->fail(host, LOOM_E_INVALID, "hidden_sizes must be a string such as \"64,64\"");
        snprintf(one, sizeof one, "%lld", (long long)w);
        hidden = one;
    }
    double smoothing = 0.0;
    if ((st = loom_cfg_opt_f64(host, api, config, "label_smoothing_factor", &smoothing))) return st;
    if (!(smoothing >= 0.0 && smoothing < 1.0))
        return api->fail(host, LOOM_E_INVALID, "label_smoothing_factor is %g: must be in [0, 1)", smoothing);
    self->smoothing = (float)smoothing;
    const char *activation = "relu";
    if (api->cfg_str(config, "activation", &activation) == LOOM_CFG_WRONG_TYPE)
        activation = "(not a string)";
    if (strcmp(activation, "gelu") == 0) {
        self->gelu = 1;
    } else if (strcmp(activation, "relu") != 0) {
        return api->fail(host, LOOM_E_INVALID, "activation \"%s\": expected \"relu\" or \"gelu\"", activation);
    }

    const int64_t n_hidden = parse_widths(self, hidden, NULL);
    if (n_hidden < 0) return LOOM_E_INVALID;
    self->n_layers = n_hidden + 1;
    self->layers = api->alloc(host, (size_t)self->n_layers * sizeof *self->layers, 0, LOOM_DEVICE_CPU, 0);
    if (!self->layers) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self->layers, 0, (size_t)self->n_layers * sizeof *self->layers);
    int64_t *widths = api->alloc(host, (size_t)(n_hidden + 1) * sizeof *widths, 0, LOOM_DEVICE_CPU, 0);
    if (!widths) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    parse_widths(self, hidden, widths);
    int64_t in = self->input_size, offset = 0;
    for (int64_t l = 0; l < self->n_layers; l++) {
        mlp_layer *L = &self->layers[l];
        L->in = in;
        L->out = l < n_hidden ? widths[l] : self->num_classes;
        L->offset = offset;
        if (l < n_hidden) {
            snprintf(L->weight_name, sizeof L->weight_name, "layers.%lld.weight", (long long)l);
            snprintf(L->bias_name, sizeof L->bias_name, "layers.%lld.bias", (long long)l);
        } else {
            snprintf(L->weight_name, sizeof L->weight_name, "classifier.weight");
            snprintf(L->bias_name, sizeof L->bias_name, "classifier.bias");
        }
        int64_t size;
        if (__builtin_mul_overflow(L->out, L->in + 1, &size) ||
            __builtin_add_overflow(offset, size, &offset)) {
            api->free_memory(host, widths);
            return api->fail(host, LOOM_E_INVALID, "hidden_sizes \"%s\": too many parameters", hidden);
        }
        in = L->out;
    }
    api->free_memory(host, widths);
    self->n_params = offset;
    return LOOM_OK;
}

MODEL_DEFINE_CREATE(mlp_create, mlp_configure, mlp_destroy)

/* ---- parameters ---------------------------------------------------------------------- */

static size_t mlp_param_count(const loom_model *self) { return (size_t)(2 * self->n_layers); }

static loom_status mlp_param_info(const loom_model *self, size_t i, loom_param_info *out)
{
    if (!out || i >= mlp_param_count(self))
        return self->api->fail(self->host, LOOM_E_INVALID, "param_info(%zu): %zu tensors", i,
                               mlp_param_count(self));
    const mlp_layer *L = &self->layers[i / 2];
    memset(out->shape, 0, sizeof out->shape);
    if (i % 2 == 0) {
        out->name = L->weight_name;
        out->ndim = 2;
        out->flags = 0;
        out->shape[0] = L->out;
        out->shape[1] = L->in;
    } else {
        out->name = L->bias_name;
        out->ndim = 1;
        out->flags = LOOM_PARAM_NO_DECAY;
        out->shape[0] = L->out;
    }
    return LOOM_OK;
}

/* Kaiming-normal weights, std = sqrt(2 / fan_in): keeps the activation variance constant
 * through ReLU layers. Biases start at zero. */
static loom_status mlp_init_params(loom_model *self, float *params)
{
    if (!params) return self->api->fail(self->host, LOOM_E_INVALID, "init_params: params is NULL");
    for (int64_t l = 0; l < self->n_layers; l++) {
        const mlp_layer *L = &self->layers[l];
        float *w = params + L->offset;
        self->api->random_normal(self->host, MLP_STREAM_BASE + 2 * (uint64_t)l, 0, w,
                                 (size_t)(L->out * L->in), 0.0f, sqrtf(2.0f / (float)L->in));
        memset(w + L->out * L->in, 0, (size_t)L->out * sizeof *w);
    }
    return LOOM_OK;
}

/* ---- binding ------------------------------------------------------------------------- */


static int64_t round_up(int64_t n) { return (n + MLP_ALIGN_FLOATS - 1) / MLP_ALIGN_FLOATS * MLP_ALIGN_FLOATS; }

static loom_status mlp_bind(loom_model *self, const loom_model_binding *binding)
{
    const loom_host_api *api = self->api;
    if (!binding || !LOOM_HAS_FIELD(binding, loom_model_binding, kernels))
        return api->fail(self->host, LOOM_E_ABI, "bind: binding missing or too small");
    if (binding->param_dtype != LOOM_DTYPE_F32 || binding->compute_dtype != LOOM_DTYPE_F32)
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "parameters in %s, compute in %s: mlp runs in f32 only for now",
                         loom_dtype_name(binding->param_dtype), loom_dtype_name(binding->compute_dtype));
    if (binding->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_UNSUPPORTED, "device %u: mlp runs on the CPU only for now",
                         binding->device);
    if (!binding->params) return api->fail(self->host, LOOM_E_INVALID, "bind: params is NULL");
    if (binding->max_batch_size < 1)
        return api->fail(self->host, LOOM_E_INVALID, "bind: max_batch_size is %lld",
                         (long long)binding->max_batch_size);

    const loom_kernels_api *k = binding->kernels;
    if (!k) k = api->service(self->host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (!k || !LOOM_HAS(k, loom_kernels_api, softmax_cross_entropy_backward) || !k->linear_forward ||
        !k->linear_backward || !k->relu_forward || !k->relu_backward || !k->gelu_forward ||
        !k->gelu_backward || !k->softmax_cross_entropy_forward)
        return api->fail(self->host, LOOM_E_UNSUPPORTED, "the host lends no complete %s kernel table",
                         LOOM_KERNELS_CPU_SERVICE);
    if (self->smoothing > 0.0f &&
        !(LOOM_HAS(k, loom_kernels_api, softmax_cross_entropy_smoothed_backward) &&
          k->softmax_cross_entropy_smoothed_forward && k->softmax_cross_entropy_smoothed_backward))
        return api->fail(self->host, LOOM_E_UNSUPPORTED,
                         "label_smoothing_factor needs the kernel table's smoothed cross-entropy (ABI 1.4)");
    if (k->device != binding->device)
        return api->fail(self->host, LOOM_E_INVALID, "kernels for device %u, parameters on device %u",
                         k->device, binding->device);

    /* Sizes in floats: z (and a, for hidden layers) per layer, probs, losses, dz, da. */
    const int64_t B = binding->max_batch_size, C = self->num_classes;
    int64_t max_width = 0, total = 0, part;
    for (int64_t l = 0; l < self->n_layers; l++) {
        const mlp_layer *L = &self->layers[l];
        max_width = L->out > max_width ? L->out : max_width;
        if (__builtin_mul_overflow(B, L->out, &part)) goto too_big;
        total += round_up(part) * (l + 1 < self->n_layers ? 2 : 1);
    }
    if (__builtin_mul_overflow(B, max_width, &part)) goto too_big;
    total += round_up(B * C) + round_up(B) + 2 * round_up(part);
    if (total < 0 || (uint64_t)total > SIZE_MAX / sizeof(float)) goto too_big;

    api->free_memory(self->host, self->activations); /* a second bind replaces the first */
    self->activations = NULL;
    self->activation_bytes = 0;
    float *p = api->alloc(self->host, (size_t)total * sizeof(float), 64, binding->device,
                          binding->device_index);
    if (!p)
        return api->fail(self->host, LOOM_E_NOMEM, "out of memory for activations (%lld bytes, batch %lld)",
                         (long long)(total * (int64_t)sizeof(float)), (long long)B);
    self->activations = p;
    self->activation_bytes = (size_t)total * sizeof(float);
    for (int64_t l = 0; l < self->n_layers; l++) {
        mlp_layer *L = &self->layers[l];
        L->z = p;
        p += round_up(B * L->out);
        L->a = NULL;
        if (l + 1 < self->n_layers) {
            L->a = p;
            p += round_up(B * L->out);
        }
    }
    self->probs = p, p += round_up(B * C);
    self->losses = p, p += round_up(B);
    self->dz = p, p += round_up(B * max_width);
    self->da = p;
    self->k = k;
    self->params = binding->params;
    self->source = LOOM_HAS(binding, loom_model_binding, param_source) ? binding->param_source : NULL;
    self->max_batch = B;
    self->forward_rows = 0;
    return LOOM_OK;
too_big:
    return api->fail(self->host, LOOM_E_INVALID, "activations for a batch of %lld do not fit in memory",
                     (long long)binding->max_batch_size);
}

static size_t mlp_activation_bytes(const loom_model *self) { return self->activation_bytes; }

/* ---- forward / backward -------------------------------------------------------------- */

static loom_status check_batch(loom_model *self, const loom_batch *batch)
{
    const loom_host_api *api = self->api;
    loom_status st = loom_model_check_batch(self->host, api, self->k != NULL, batch, self->max_batch);
    if (st != LOOM_OK) return st;
    const int64_t B = batch->batch_size;
    const loom_tensor_view *x = &batch->inputs;
    if (x->dtype != LOOM_DTYPE_F32 || x->ndim != 2 || !x->data || x->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_INVALID,
                         "inputs must be f32 [batch, input_size] on the CPU (got dtype %u, ndim %u)",
                         x->dtype, x->ndim);
    if (x->shape[0] != B || x->shape[1] != self->input_size)
        return api->fail(self->host, LOOM_E_INVALID,
                         "inputs shape [%lld, %lld]: expected [%lld, %lld] (batch, input_size)",
                         (long long)x->shape[0], (long long)x->shape[1], (long long)B,
                         (long long)self->input_size);
    const loom_tensor_view *y = &batch->labels;
    if (!y->data) return LOOM_OK; /* prediction: no labels */
    if (y->dtype != LOOM_DTYPE_I32 || y->ndim != 1 || y->shape[0] != B || y->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_INVALID,
                         "labels must be i32 [%lld] on the CPU (got dtype %u, ndim %u, %lld rows)",
                         (long long)B, y->dtype, y->ndim, (long long)y->shape[0]);
    return LOOM_OK;
}

/* Layer l's weight and bias current in params (a no-op without a param source): acquired for
 * its product in forward and again in backward, released right after each. */
static loom_status layer_use(loom_model *self, const mlp_layer *L, int done)
{
    return model_param_range(self->source, L->offset, L->offset + L->out * L->in + L->out, done);
}

static loom_status mlp_forward(loom_model *self, const loom_batch *batch, loom_forward_result *result,
                               loom_tensor_view *outputs)
{
    loom_status st = check_batch(self, batch);
    if (st) return st;
    const loom_kernels_api *k = self->k;
    const int64_t B = batch->batch_size, C = self->num_classes;
    const int32_t *labels = batch->labels.data;
    self->forward_rows = 0;
    self->forward_any_rows = 0;

    if (labels) {
        /* The CE kernel cannot report a bad label; it would only show up as a NaN loss. */
        for (int64_t b = 0; b < B; b++) {
            if (labels[b] != MLP_IGNORE_INDEX && (labels[b] < 0 || labels[b] >= C))
                return self->api->fail(self->host, LOOM_E_INVALID,
                                       "label %d of row %lld outside [0, %lld) (and not -100, the "
                                       "ignore index)", labels[b], (long long)b, (long long)C);
        }
    }
    if (outputs) {
        if (outputs->dtype != LOOM_DTYPE_F32 || outputs->ndim != 2 || !outputs->data ||
            outputs->shape[0] < B || outputs->shape[1] != C || outputs->device != LOOM_DEVICE_CPU)
            return self->api->fail(self->host, LOOM_E_INVALID,
                                   "outputs must be f32 [>= %lld, %lld] on the CPU", (long long)B,
                                   (long long)C);
    }

    const float *inp = batch->inputs.data;
    for (int64_t l = 0; l < self->n_layers; l++) {
        const mlp_layer *L = &self->layers[l];
        const float *w = self->params + L->offset;
        if ((st = layer_use(self, L, 0))) return st;
        k->linear_forward(L->z, inp, w, w + L->out * L->in, B, L->in, L->out);
        if ((st = layer_use(self, L, 1))) return st;
        if (L->a) {
            if (self->gelu)
                k->gelu_forward(L->a, L->z, B * L->out);
            else
                k->relu_forward(L->a, L->z, B * L->out);
            inp = L->a;
        }
    }
    const float *logits = self->layers[self->n_layers - 1].z;

    double loss_sum = 0.0;
    int64_t n_targets = 0, n_correct = 0;
    if (labels) {
        if (self->smoothing > 0.0f)
            k->softmax_cross_entropy_smoothed_forward(self->probs, self->losses, logits, labels, self->smoothing, B, C);
        else
            k->softmax_cross_entropy_forward(self->probs, self->losses, logits, labels, B, C);
        for (int64_t b = 0; b < B; b++) {
            if (labels[b] == MLP_IGNORE_INDEX) continue;
            loss_sum += self->losses[b];
            n_targets++;
            const float *row = logits + b * C;
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++) best = row[c] > row[best] ? c : best;
            n_correct += best == labels[b];
        }
        self->forward_rows = B;
    }
    if (result) {
        result->loss_sum = loss_sum;
        result->n_targets = n_targets;
        result->n_correct = n_correct;
    }
    if (outputs) memcpy(outputs->data, logits, (size_t)(B * C) * sizeof *logits);
    self->forward_any_rows = B;
    return LOOM_OK;
}

/* From self->dz = d(objective)/d(logits), layer by layer down to the inputs. */
static loom_status backward_layers(loom_model *self, const loom_batch *batch, const loom_grad_sink *sink)
{
    const loom_host_api *api = self->api;
    const loom_kernels_api *k = self->k;
    const int64_t B = batch->batch_size;
    loom_status st;
    for (int64_t l = self->n_layers - 1; l >= 0; l--) {
        const mlp_layer *L = &self->layers[l];
        const int64_t wsize = L->out * L->in;
        const int64_t begin = L->offset, end = L->offset + wsize + L->out;
        void *memory = NULL;
        if ((st = sink->acquire(sink->context, begin, end, &memory))) return st;
        if (!memory)
            return api->fail(self->host, LOOM_E_INTERNAL, "grad sink gave no memory for [%lld, %lld)",
                             (long long)begin, (long long)end);
        float *dw = memory;
        const float *inp = l > 0 ? self->layers[l - 1].a : batch->inputs.data;
        float *dinp = NULL;
        if (l > 0) {
            dinp = self->da;
            memset(dinp, 0, (size_t)(B * L->in) * sizeof(float));
        }
        if ((st = layer_use(self, L, 0))) return st;
        k->linear_backward(dinp, dw, dw + wsize, self->dz, inp, self->params + L->offset, B, L->in,
                           L->out);
        if ((st = layer_use(self, L, 1))) return st;
        /* This layer's gradients are final: hand them over before computing the next layer's,
         * so the sink's communication overlaps the rest of backward. */
        if ((st = sink->release(sink->context, begin, end))) return st;
        if (l > 0) {
            const mlp_layer *prev = &self->layers[l - 1];
            memset(self->dz, 0, (size_t)(B * prev->out) * sizeof(float));
            if (self->gelu)
                k->gelu_backward(self->dz, prev->z, self->da, B * prev->out);
            else
                k->relu_backward(self->dz, prev->z, self->da, B * prev->out);
        }
    }
    return LOOM_OK;
}


static loom_status mlp_backward(loom_model *self, const loom_batch *batch, float seed,
                                const loom_grad_sink *sink)
{
    const loom_host_api *api = self->api;
    loom_status st = check_batch(self, batch);
    if (st) return st;
    const int64_t B = batch->batch_size, C = self->num_classes;
    const int32_t *labels = batch->labels.data;
    if (!labels || self->forward_rows != B)
        return api->fail(self->host, LOOM_E_INVALID,
                         "backward needs a forward with labels on the same batch first");
    if (!sink || !LOOM_HAS_FIELD(sink, loom_grad_sink, release) || !sink->acquire || !sink->release)
        return api->fail(self->host, LOOM_E_INVALID, "backward: no gradient sink");
    const loom_kernels_api *k = self->k;

    memset(self->dz, 0, (size_t)(B * C) * sizeof(float));
    if (self->smoothing > 0.0f)
        k->softmax_cross_entropy_smoothed_backward(self->dz, self->probs, labels, seed, self->smoothing, B, C);
    else
        k->softmax_cross_entropy_backward(self->dz, self->probs, labels, seed, B, C);

    return backward_layers(self, batch, sink);
}

static loom_status mlp_backward_outputs(loom_model *self, const loom_batch *batch,
                                        const loom_tensor_view *doutputs, const loom_grad_sink *sink)
{
    const loom_host_api *api = self->api;
    loom_status st = check_batch(self, batch);
    if (st) return st;
    const int64_t B = batch->batch_size, C = self->num_classes;
    if (self->forward_any_rows != B)
        return api->fail(self->host, LOOM_E_INVALID, "backward_outputs needs a forward on the same batch first");
    if (!doutputs || doutputs->dtype != LOOM_DTYPE_F32 || doutputs->ndim != 2 || !doutputs->data ||
        doutputs->shape[0] != B || doutputs->shape[1] != C || doutputs->device != LOOM_DEVICE_CPU)
        return api->fail(self->host, LOOM_E_INVALID, "doutputs must be f32 [%lld, %lld] on the CPU", (long long)B,
                         (long long)C);
    if (!sink || !LOOM_HAS_FIELD(sink, loom_grad_sink, release) || !sink->acquire || !sink->release)
        return api->fail(self->host, LOOM_E_INVALID, "backward_outputs: no gradient sink");
    memcpy(self->dz, doutputs->data, (size_t)(B * C) * sizeof(float));
    return backward_layers(self, batch, sink);
}

static loom_status mlp_output_shape(const loom_model *self, int64_t *out_shape, uint32_t *ndim)
{
    if (!out_shape || !ndim)
        return self->api->fail(self->host, LOOM_E_INVALID, "output_shape: NULL argument");
    out_shape[0] = self->num_classes;
    *ndim = 1;
    return LOOM_OK;
}

/* ---- descriptor ---------------------------------------------------------------------- */

/* backward holds one layer's range at a time. */
static int64_t mlp_max_grad_elements(const loom_model *self)
{
    int64_t most = 0;
    for (int64_t l = 0; l < self->n_layers; l++) {
        int64_t n = self->layers[l].out * self->layers[l].in + self->layers[l].out;
        if (n > most) most = n;
    }
    return most;
}

/* A fixture built from this file for an older ABI sets its own (tests/trainer/fixtures). */
#ifndef MLP_VTABLE_FLAGS
#define MLP_VTABLE_FLAGS LOOM_MODEL_PARAM_SOURCE
#endif

static const loom_model_vtable mlp_vtable = {
    LOOM_HEADER_INIT(loom_model_vtable),
    .create = mlp_create,
    .destroy = mlp_destroy,
    .param_count = mlp_param_count,
    .param_info = mlp_param_info,
    .init_params = mlp_init_params,
    .bind = mlp_bind,
    .activation_bytes = mlp_activation_bytes,
    .forward = mlp_forward,
    .backward = mlp_backward,
    .output_shape = mlp_output_shape,
    .backward_outputs = mlp_backward_outputs,
    .max_grad_elements = mlp_max_grad_elements,
    .flags = MLP_VTABLE_FLAGS,
};

static const loom_param_spec mlp_params[] = {
    {.key = "input_size", .type = LOOM_PARAM_INT, .default_value = "0",
     .doc = "features per example; 0: taken from the data file's header"},
    {.key = "num_classes", .type = LOOM_PARAM_INT, .default_value = "0",
     .doc = "number of classes; 0: taken from the data file's header"},
    {.key = "hidden_sizes", .type = LOOM_PARAM_STRING, .default_value = "64,64",
     .doc = "widths of the hidden layers, comma-separated; \"\" for none (logistic regression)"},
    {.key = "activation", .type = LOOM_PARAM_STRING, .default_value = "relu",
     .doc = "activation after each hidden layer: relu or gelu (tanh approximation)"},
    {.key = "label_smoothing_factor", .type = LOOM_PARAM_FLOAT, .default_value = "0.0",
     .doc = "HF's label smoothing epsilon for the loss; --label_smoothing_factor sets it"},
    {.key = NULL},
};

static const loom_plugin_desc mlp_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_MODEL,
    .name = "mlp",
    .version = "1.0.0",
    .summary = "classifier on dense features: linear layers with ReLU/GELU, softmax cross-entropy",
    .vtable = &mlp_vtable,
    .params = mlp_params,
};

LOOM_PLUGIN_EXPORT(&mlp_desc)
