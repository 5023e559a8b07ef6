/*
 * param_source.c - parameters partitioned between uses (ZeRO-3, docs/architecture.md#zero-3):
 * the model's loom_param_source, wired to the sharding plugin's param_acquire / param_release,
 * and the spans in which the host itself needs the whole buffer.
 *
 * The model's calls are collective (the plugin broadcasts each owner's piece), which holds in
 * training because every rank runs the same forward and backward, and in evaluation, where a
 * rank with fewer batches runs forwards that count for nothing (trainer_eval.c). Generation is
 * not in lockstep (hypotheses end at different lengths), so the host gathers the whole buffer
 * once around it and the model's calls return at once there. Saving and loading the best model
 * read or write every tensor: they go tensor by tensor, every rank taking part in each gather.
 */
#include "error.h"
#include "trainer_internal.h"

static loom_status source_acquire(void *context, int64_t begin, int64_t end)
{
    loom_trainer *t = context;
    if (t->whole_depth > 0) return LOOM_OK;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    return LOOM_PLUGIN_CALL(t->sharding, "param_acquire", sv->param_acquire(t->sharding.instance, begin, end));
}

static loom_status source_release(void *context, int64_t begin, int64_t end)
{
    loom_trainer *t = context;
    if (t->whole_depth > 0) return LOOM_OK;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    return LOOM_PLUGIN_CALL(t->sharding, "param_release", sv->param_release(t->sharding.instance, begin, end));
}

loom_status loom_trainer_param_source_setup(loom_trainer *t)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    const int acquire = LOOM_HAS(sv, loom_sharding_vtable, param_acquire) != 0;
    const int release = LOOM_HAS(sv, loom_sharding_vtable, param_release) != 0;
    t->params_partitioned = 0;
    if (!acquire && !release) return LOOM_OK;
    const char *sharding = t->sharding.plugin->desc->name, *model = t->model.plugin->desc->name;
    if (acquire != release)
        return loom_error(LOOM_E_INVALID, "sharding '%s' sets only one of param_acquire and param_release", sharding);
    const loom_model_vtable *mv = t->model.vtable;
    if (!LOOM_HAS_FIELD(mv, loom_model_vtable, flags) || !(mv->flags & LOOM_MODEL_PARAM_SOURCE))
        return loom_error(LOOM_E_UNSUPPORTED,
                          "sharding '%s' partitions the parameters between uses (ZeRO-3), and model '%s' reads them "
                          "whole (it has no parameter source, ABI 1.12): use zero2 (ZeRO stage 2) with this model",
                          sharding, model);
    t->params_partitioned = 1;
    t->whole_depth = 0;
    t->param_source = (loom_param_source){LOOM_HEADER_INIT(loom_param_source)};
    t->param_source.context = t;
    t->param_source.acquire = source_acquire;
    t->param_source.release = source_release;
    return LOOM_OK;
}

loom_status loom_trainer_params_whole(loom_trainer *t)
{
    if (!t->params_partitioned) return LOOM_OK;
    if (t->whole_depth++ > 0) return LOOM_OK;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    loom_status st =
        LOOM_PLUGIN_CALL(t->sharding, "param_acquire", sv->param_acquire(t->sharding.instance, 0, t->total_numel));
    if (st != LOOM_OK) t->whole_depth = 0;
    return st;
}

loom_status loom_trainer_params_done(loom_trainer *t)
{
    if (!t->params_partitioned || t->whole_depth == 0) return LOOM_OK;
    if (--t->whole_depth > 0) return LOOM_OK;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    return LOOM_PLUGIN_CALL(t->sharding, "param_release", sv->param_release(t->sharding.instance, 0, t->total_numel));
}

int loom_trainer_params_streamed(const loom_trainer *t)
{
    return t->params_partitioned && t->whole_depth == 0;
}

loom_status loom_trainer_params_tensor(loom_trainer *t, size_t i, int done)
{
    const int64_t begin = t->tensor_offsets[i], end = t->tensor_offsets[i + 1];
    if (begin == end) return LOOM_OK;
    return done ? source_release(t, begin, end) : source_acquire(t, begin, end);
}

loom_status loom_trainer_params_walk(loom_trainer *t, size_t from)
{
    for (size_t i = from; i < t->n_tensors; i++) {
        loom_status st = loom_trainer_params_tensor(t, i, 0);
        if (st == LOOM_OK) st = loom_trainer_params_tensor(t, i, 1);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}
