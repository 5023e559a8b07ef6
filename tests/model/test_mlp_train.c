/* test_mlp_train.c - the pieces of this folder working together, without libloom: generate a
 * data set (core/data/data_classification.c), train the mlp plugin on it with plain momentum SGD
 * through the test host, and check what the generator promises: "spirals" defeats a linear
 * model (hidden_sizes "") but not an MLP, "blobs" is learnt well by either. */
#include <loom/model.h>

#include "data_classification.h"
#include "test_host.h"
#include "open_plugin.h"
#include "test_util.h"

#ifndef MLP_PLUGIN_PATH
#error "MLP_PLUGIN_PATH must name the built mlp.so"
#endif

static const loom_model_vtable *vt;
static const loom_plugin_desc *desc;
static loom_host host;

static loom_status plain_acquire(void *context, int64_t begin, int64_t end, void **memory)
{
    (void)end;
    *memory = (float *)context + begin;
    return LOOM_OK;
}

static loom_status plain_release(void *context, int64_t begin, int64_t end)
{
    (void)context, (void)begin, (void)end;
    return LOOM_OK;
}

/* Train for `epochs` passes in mini-batches of 50 (fixed order) and return the accuracy on
 * the training set. */
static double train(const loom_classification_data *d, const char *hidden, int epochs, float lr)
{
    char in_text[16], classes_text[16];
    snprintf(in_text, sizeof in_text, "%u", d->n_features);
    snprintf(classes_text, sizeof classes_text, "%u", d->n_classes);
    loom_config cfg = {.spec = desc->params};
    cfg.entries[cfg.n++] = (test_cfg_entry){"input_size", LOOM_PARAM_INT, in_text};
    cfg.entries[cfg.n++] = (test_cfg_entry){"num_classes", LOOM_PARAM_INT, classes_text};
    cfg.entries[cfg.n++] = (test_cfg_entry){"hidden_sizes", LOOM_PARAM_STRING, hidden};
    loom_model *m = NULL;
    CHECK(vt->create(&host, &test_host_api, &cfg, &m) == LOOM_OK);
    if (!m) return 0.0;
    int64_t n_params = 0;
    for (size_t i = 0; i < vt->param_count(m); i++) {
        loom_param_info info = {LOOM_HEADER_INIT(loom_param_info)};
        vt->param_info(m, i, &info);
        int64_t numel = 1;
        for (uint32_t j = 0; j < info.ndim; j++) numel *= info.shape[j];
        n_params += numel;
    }
    float *params = malloc(sizeof(float) * (size_t)n_params);
    float *grads = malloc(sizeof(float) * (size_t)n_params);
    float *velocity = calloc((size_t)n_params, sizeof(float));
    CHECK(vt->init_params(m, params) == LOOM_OK);
    const int64_t batch_rows = 50;
    loom_model_binding bind = {LOOM_HEADER_INIT(loom_model_binding), .params = params,
                               .param_dtype = LOOM_DTYPE_F32, .compute_dtype = LOOM_DTYPE_F32,
                               .device = LOOM_DEVICE_CPU, .max_batch_size = batch_rows};
    CHECK(vt->bind(m, &bind) == LOOM_OK);
    loom_grad_sink sink = {LOOM_HEADER_INIT(loom_grad_sink), .context = grads,
                           .acquire = plain_acquire, .release = plain_release};

    const int64_t n = (int64_t)d->n_samples, D = d->n_features;
    for (int e = 0; e < epochs; e++) {
        for (int64_t b0 = 0; b0 + batch_rows <= n; b0 += batch_rows) {
            loom_batch batch = {LOOM_HEADER_INIT(loom_batch), .batch_size = batch_rows,
                                .n_targets = batch_rows};
            batch.inputs = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view),
                                              .data = d->features + b0 * D, .dtype = LOOM_DTYPE_F32,
                                              .ndim = 2, .shape = {batch_rows, D}};
            batch.labels = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view),
                                              .data = d->labels + b0, .dtype = LOOM_DTYPE_I32,
                                              .ndim = 1, .shape = {batch_rows}};
            loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
            memset(grads, 0, sizeof(float) * (size_t)n_params);
            CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
            CHECK(vt->backward(m, &batch, 1.0f / (float)r.n_targets, &sink) == LOOM_OK);
            for (int64_t i = 0; i < n_params; i++) {
                velocity[i] = 0.9f * velocity[i] + grads[i];
                params[i] -= lr * velocity[i];
            }
        }
    }
    int64_t correct = 0, targets = 0;
    for (int64_t b0 = 0; b0 + batch_rows <= n; b0 += batch_rows) {
        loom_batch batch = {LOOM_HEADER_INIT(loom_batch), .batch_size = batch_rows};
        batch.inputs = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view), .data = d->features + b0 * D,
                                          .dtype = LOOM_DTYPE_F32, .ndim = 2, .shape = {batch_rows, D}};
        batch.labels = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view), .data = d->labels + b0,
                                          .dtype = LOOM_DTYPE_I32, .ndim = 1, .shape = {batch_rows}};
        loom_forward_result r = {LOOM_HEADER_INIT(loom_forward_result)};
        CHECK(vt->forward(m, &batch, &r, NULL) == LOOM_OK);
        correct += r.n_correct;
        targets += r.n_targets;
    }
    vt->destroy(m);
    free(params), free(grads), free(velocity);
    return targets ? (double)correct / (double)targets : 0.0;
}

int main(void)
{
    void *so = NULL;
    desc = open_model_plugin(MLP_PLUGIN_PATH, &so);
    if (!desc) return test_finish("test_mlp_train");
    vt = desc->vtable;

    loom_classification_data spirals, blobs;
    CHECK(loom_classification_generate(&spirals, "spirals", 1500, 2, 3, 1) == LOOM_OK);
    CHECK(loom_classification_generate(&blobs, "blobs", 1500, 6, 4, 1) == LOOM_OK);
    const double spiral_linear = train(&spirals, "", 60, 0.05f);
    const double spiral_mlp = train(&spirals, "64,64", 60, 0.05f);
    const double blob_linear = train(&blobs, "", 20, 0.05f);
    printf("spirals: linear %.3f, mlp %.3f; blobs: linear %.3f\n", spiral_linear, spiral_mlp, blob_linear);
    CHECK(spiral_linear < 0.7);
    CHECK(spiral_mlp > 0.9);
    CHECK(blob_linear > 0.9);
    loom_classification_free(&spirals);
    loom_classification_free(&blobs);
    CHECK(host.live_allocations == 0);
    dlclose(so);
    return test_finish("test_mlp_train");
}
