/*
 * model_shapes.c - a model's word on its shapes (its parameters' and its outputs'), checked
 * against model.h before the host sizes anything from it (trainer_internal.h). Before, a model
 * that reported 0 dimensions, more than LOOM_MAX_DIMS or an extent below 1 had the host read
 * before or past its arrays and allocate from a negative size (a parameter's: heap corruption
 * before the first step), and two parameters of one name, or none, were found only by the first
 * save, after the training it was meant to keep.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "trainer_internal.h"

loom_status loom_trainer_output_shape(loom_trainer *t, int64_t shape[LOOM_MAX_DIMS], uint32_t *ndim, int64_t *row)
{
    const loom_model_vtable *mv = t->model.vtable;
    *ndim = 0;
    loom_status st = LOOM_PLUGIN_CALL(t->model, "output_shape", mv->output_shape(t->model.instance, shape, ndim));
    if (st != LOOM_OK) return st;
    const char *name = t->model.plugin->desc->name;
    if (*ndim < 1 || *ndim > LOOM_MAX_DIMS)
        return loom_error(LOOM_E_INVALID, "model '%s': output_shape reported %u dimensions (1 to %d)", name, *ndim,
                          LOOM_MAX_DIMS);
    int64_t product = 1;
    for (uint32_t d = 0; d < *ndim; d++) {
        if (shape[d] < 1 || product > INT32_MAX / shape[d])
            return loom_error(LOOM_E_INVALID,
                              "model '%s': output_shape reported extent %lld in dimension %u (1 or more, "
                              "a row of at most 2^31 - 1 values)",
                              name, (long long)shape[d], d);
        product *= shape[d];
    }
    if (row) *row = product;
    return LOOM_OK;
}

loom_status loom_trainer_check_param_info(const loom_trainer *t, size_t i, const loom_param_info *info)
{
    const char *model = t->model.plugin->desc->name;
    if (!info->name || !*info->name)
        return loom_error(LOOM_E_INVALID, "model '%s': param_info(%zu) gave no name", model, i);
    if (info->ndim < 1 || info->ndim > LOOM_MAX_DIMS)
        return loom_error(LOOM_E_INVALID, "model '%s': parameter '%s' has %u dimensions (1 to %d)", model, info->name,
                          info->ndim, LOOM_MAX_DIMS);
    int64_t numel = 1;
    for (uint32_t d = 0; d < info->ndim; d++) {
        if (info->shape[d] < 1 || numel > INT64_MAX / 4 / info->shape[d])
            return loom_error(LOOM_E_INVALID, "model '%s': parameter '%s' has extent %lld in dimension %u", model,
                              info->name, (long long)info->shape[d], d);
        numel *= info->shape[d];
    }
    return LOOM_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const loom_param_info *const *)a)->name, (*(const loom_param_info *const *)b)->name);
}

loom_status loom_trainer_check_param_names(const loom_trainer *t)
{
    const loom_param_info **sorted = malloc((t->n_tensors ? t->n_tensors : 1) * sizeof *sorted);
    if (!sorted) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_tensors; i++)
        sorted[i] = &t->tensors[i];
    qsort(sorted, t->n_tensors, sizeof *sorted, by_name);
    loom_status st = LOOM_OK;
    for (size_t i = 1; i < t->n_tensors && st == LOOM_OK; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            st = loom_error(LOOM_E_INVALID,
                            "model '%s': two parameters are called '%s' (a checkpoint could not hold both)",
                            t->model.plugin->desc->name, sorted[i]->name);
    free(sorted);
    return st;
}
