/*
 * model_output.c - loom_trainer_output_shape (trainer_internal.h): the model's output_shape,
 * checked once for every caller. The host sizes buffers from it and reads its last extent (the
 * vocabulary when generating); before, a model that reported 0 dimensions, more than
 * LOOM_MAX_DIMS or an extent below 1 had the host read before or past the array, or allocate a
 * negative size, wherever it asked.
 */
#include <stdint.h>

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
