/*
 * trainer_steps.c - the per-batch hooks: data loaders, training_step (forward + backward into
 * the sharding plugin's gradient memory) and prediction_step, and the custom-loss path.
 */
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "error.h"
#include "grad_rows.h"
#include "trainer_internal.h"

static loom_status make_loader(loom_trainer *t, const loom_dataset *ds, const char *flag, int64_t batch_size,
                               int shuffle, int drop_last, loom_dataloader *out)
{
    if (!ds) return loom_error(LOOM_E_INVALID, "no data: give --%s", flag);
    loom_status st =
        loom_dataloader_init(out, ds, batch_size, shuffle, drop_last,
                             (uint64_t)(t->args.data_seed != LOOM_ARG_NONE_INT ? t->args.data_seed : t->args.seed));
    if (st != LOOM_OK) return st;
    out->rank = t->rank;
    out->world_size = t->world_size;
    return LOOM_OK;
}

loom_status loom_default_get_train_dataloader(loom_trainer *t, loom_dataloader *out)
{
    const int sequential = t->args.train_sampling_strategy && !strcmp(t->args.train_sampling_strategy, "sequential");
    loom_status st = make_loader(t, t->train_dataset, "train_file", t->train_batch_size, !sequential,
                                 t->args.dataloader_drop_last, out);
    out->sampler = sequential                ? LOOM_SAMPLER_SEQUENTIAL
                   : t->args.sortish_sampler ? LOOM_SAMPLER_SORTISH
                   : t->args.group_by_length ? LOOM_SAMPLER_GROUP_BY_LENGTH
                                             : LOOM_SAMPLER_RANDOM;
    return st;
}

/* Evaluation reads every example once, without DistributedSampler's padding: HF truncates the
 * gathered predictions to the dataset's length, so the metrics do not depend on the ranks. */
loom_status loom_default_get_eval_dataloader(loom_trainer *t, loom_dataloader *out)
{
    loom_status st = make_loader(t, t->eval_dataset, "validation_file", t->args.per_device_eval_batch_size, 0,
                                 t->args.dataloader_drop_last, out);
    out->unpadded = 1;
    return st;
}

loom_status loom_default_get_test_dataloader(loom_trainer *t, loom_dataloader *out)
{
    loom_status st = make_loader(t, t->test_dataset, "test_file", t->args.per_device_eval_batch_size, 0, 0, out);
    out->unpadded = 1;
    return st;
}

/* ---- gradients: the model's sink is the sharding plugin ---------------------------------- */

static loom_status sink_acquire(void *context, int64_t begin, int64_t end, void **memory)
{
    loom_trainer *t = context;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    return LOOM_PLUGIN_CALL(t->sharding, "grad_acquire", sv->grad_acquire(t->sharding.instance, begin, end, memory));
}

static loom_status sink_release(void *context, int64_t begin, int64_t end)
{
    loom_trainer *t = context;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    return LOOM_PLUGIN_CALL(t->sharding, "grad_release", sv->grad_release(t->sharding.instance, begin, end));
}

void loom_trainer_grad_sink(loom_trainer *t, loom_grad_sink *sink)
{
    *sink = (loom_grad_sink){LOOM_HEADER_INIT(loom_grad_sink)};
    sink->context = t;
    sink->acquire = sink_acquire;
    sink->release = sink_release;
    if (loom_grad_rows_offered(t)) { /* ABI 1.4: a gradient in two parts */
        sink->acquire_rows = loom_grad_rows_acquire;
        sink->release_rows = loom_grad_rows_release;
    }
}

/* Outputs of one batch, for a custom loss (lazily sized from the model's output shape). */
typedef struct output_buffers {
    float *outputs;
    float *doutputs;
    int64_t row_size;
    int64_t rows;
} output_buffers;

static _Thread_local output_buffers scratch;

static loom_status output_view(loom_trainer *t, const loom_batch *batch, loom_tensor_view *view)
{
    int64_t shape[LOOM_MAX_DIMS];
    uint32_t ndim = 0;
    int64_t row = 0;
    loom_status st = loom_trainer_output_shape(t, shape, &ndim, &row);
    if (st != LOOM_OK) return st;
    if (scratch.row_size != row || scratch.rows < batch->batch_size) {
        free(scratch.outputs);
        free(scratch.doutputs);
        int64_t rows = t->max_batch_size > batch->batch_size ? t->max_batch_size : batch->batch_size;
        scratch.outputs = malloc((size_t)(rows * row) * sizeof(float));
        scratch.doutputs = malloc((size_t)(rows * row) * sizeof(float));
        if (!scratch.outputs || !scratch.doutputs) return loom_error(LOOM_E_NOMEM, "out of memory for outputs");
        scratch.row_size = row;
        scratch.rows = rows;
    }
    *view = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
    view->data = scratch.outputs;
    view->dtype = LOOM_DTYPE_F32;
    view->device = LOOM_DEVICE_CPU;
    view->ndim = ndim + 1;
    view->shape[0] = batch->batch_size;
    memcpy(view->shape + 1, shape, ndim * sizeof *shape);
    return LOOM_OK;
}

loom_status loom_default_training_step(loom_trainer *t, const loom_batch *batch, float seed, double *loss_sum)
{
    const loom_model_vtable *mv = t->model.vtable;
    loom_model *model = t->model.instance;
    loom_grad_sink sink;
    loom_trainer_grad_sink(t, &sink);
    loom_forward_result result = {LOOM_HEADER_INIT(loom_forward_result)};
    loom_status st;
    if (!t->hooks.compute_loss) {
        if (LOOM_HAS(mv, loom_model_vtable, train_step)) { /* the same as the two calls, fused */
            st = LOOM_PLUGIN_CALL(t->model, "train_step", mv->train_step(model, batch, seed, &sink, &result));
            *loss_sum = result.loss_sum;
            return st;
        }
        if ((st = LOOM_PLUGIN_CALL(t->model, "forward", mv->forward(model, batch, &result, NULL))) != LOOM_OK)
            return st;
        *loss_sum = result.loss_sum;
        if ((st = LOOM_PLUGIN_CALL(t->model, "backward", mv->backward(model, batch, seed, &sink))) != LOOM_OK)
            return st;
        /* The step reads the gradients on the host; a kernel's error surfaces here. */
        return loom_device_synchronize();
    }
    /* A custom loss: the model gives outputs, the hook the loss and its gradient. */
    if (!LOOM_HAS(mv, loom_model_vtable, backward_outputs))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "model '%s' has no backward_outputs: compute_loss cannot be overridden for it",
                          t->model.plugin->desc->name);
    loom_tensor_view outputs;
    if ((st = output_view(t, batch, &outputs)) != LOOM_OK) return st;
    if ((st = LOOM_PLUGIN_CALL(t->model, "forward", mv->forward(model, batch, &result, &outputs))) != LOOM_OK)
        return st;
    int64_t n = batch->batch_size * scratch.row_size;
    memset(scratch.doutputs, 0, (size_t)n * sizeof(float));
    if ((st = t->hooks.compute_loss(t, batch, &outputs, loss_sum, scratch.doutputs)) != LOOM_OK) return st;
    for (int64_t i = 0; i < n; i++) scratch.doutputs[i] *= seed;
    loom_tensor_view doutputs = outputs;
    doutputs.data = scratch.doutputs;
    return LOOM_PLUGIN_CALL(t->model, "backward_outputs", mv->backward_outputs(model, batch, &doutputs, &sink));
}

loom_status loom_default_prediction_step(loom_trainer *t, const loom_batch *batch, loom_forward_result *result,
                                         loom_tensor_view *outputs)
{
    const loom_model_vtable *mv = t->model.vtable;
    loom_tensor_view own;
    loom_status st;
    if (t->hooks.compute_loss && !outputs) {
        if ((st = output_view(t, batch, &own)) != LOOM_OK) return st;
        outputs = &own;
    }
    if ((st = LOOM_PLUGIN_CALL(t->model, "forward", mv->forward(t->model.instance, batch, result, outputs))) != LOOM_OK)
        return st;
    if ((st = loom_device_synchronize()) != LOOM_OK) return st;
    if (t->hooks.compute_loss) {
        double loss_sum = 0;
        if ((st = t->hooks.compute_loss(t, batch, outputs, &loss_sum, NULL)) != LOOM_OK) return st;
        result->loss_sum = loss_sum;
    }
    return LOOM_OK;
}
