/*
 * master_weights.h - the fp32 copy of this rank's owned parameter ranges that the optimizer
 * steps, its fp32 gradient buffers, and the two conversions between it and the model's
 * 16-bit parameters (unscale in, cast_to_model out). CPU only.
 *
 * Three layouts:
 *   MW_IN_PLACE   no copy: the model's parameters are fp32 (apex O0/O1). master() points into
 *                 the model's params and the owned gradients; unscale multiplies the owned
 *                 gradients in place.
 *   MW_PERSISTENT a separate fp32 copy that lives for the run (amp, bf16, apex O2): the
 *                 16-bit model parameters are only ever a rounded image of it.
 *   MW_ROUNDED    a separate fp32 buffer re-read from the 16-bit parameters at the start of
 *                 every step (apex O3, "pure fp16"): the update is computed in fp32 but
 *                 nothing below fp16 resolution survives from one step to the next.
 * Memory: master_bytes counts both the fp32 parameters and the fp32 gradients (4 + 4 bytes
 * per owned element), since both exist only because of this plugin; MW_IN_PLACE holds none.
 * When the host lends a gradient workspace (loom_precision_binding.grad_workspace, the model's
 * activations, dead during the step) the gradients live there and only the parameters count.
 * With a piecewise binding (ABI 1.7) there are no f32 gradients at all: the host asks for one
 * piece of them at a time into its own small buffer (mw_unscale_piece) and casts that piece
 * back after the optimizer stepped it (mw_cast_piece).
 */
#ifndef LOOM_PLUGINS_MASTER_WEIGHTS_H
#define LOOM_PLUGINS_MASTER_WEIGHTS_H

#include <loom/kernels.h>
#include <loom/precision.h>

#define MW_IN_PLACE 0
#define MW_PERSISTENT 1
#define MW_ROUNDED 2

typedef struct master_weights {
    loom_host *host;
    const loom_host_api *api;
    const char *who;      /* plugin name, for messages                              */
    int layout;           /* MW_*                                                   */
    uint32_t param_dtype; /* LOOM_DTYPE_F32, _F16 or _BF16                          */
    int threads;
    const loom_kernels_api *k; /* the host's CPU table: convert(), scale_check (ABI 1.5)   */
    void *params;              /* the model's flat parameters (lent for the run)         */
    const loom_range *owned;   /* lent for the run                                       */
    size_t n_owned;
    float **master_params; /* per range; NULL for MW_IN_PLACE                        */
    float **master_grads;  /* allocated, or pieces of the binding's grad_workspace   */
    int lent_grads;        /* master_grads are the host's workspace (not freed here)  */
    int piecewise;         /* no master_grads: the host steps piece by piece          */
    uint64_t bytes;
} master_weights;

/* Prepare an unbound instance (no memory yet). */
void mw_init(master_weights *mw, loom_host *host, const loom_host_api *api, const char *who, int layout,
             uint32_t param_dtype);

/* Take the host's binding: allocate the copies and fill them from the model's params. A second
 * bind releases the first. Fails (with a message) without the kernel table's convert when a
 * copy is needed, or on a device other than the CPU. */
loom_status mw_bind(master_weights *mw, const loom_precision_binding *binding);

/* Free what mw_bind allocated. */
void mw_release(master_weights *mw);

uint64_t mw_bytes(const master_weights *mw);

/* fp32 parameters and gradients of owned range i (owned_grad: the owned gradient of range i,
 * in param_dtype). */
loom_status mw_master(master_weights *mw, size_t i, void *owned_grad, float **params, float **grads);

/* owned_grads[i] (param_dtype) -> master gradients times 1/scale; *overflow = 1 if any
 * result is inf or NaN (0 otherwise). MW_ROUNDED first re-reads the fp32 parameters. */
loom_status mw_unscale(master_weights *mw, void *const *owned_grads, size_t n, double scale, int32_t *overflow);

/* Master parameters -> the model's params at the owned ranges (param_dtype, round to
 * nearest even). No-op for MW_IN_PLACE. */
loom_status mw_cast_to_model(master_weights *mw);

/* mw_unscale for elements [begin, begin + count) of owned range i only, into `out` (count
 * f32) instead of the master gradients; MW_ROUNDED first re-reads those master parameters.
 * LOOM_E_INVALID past the range. */
loom_status mw_unscale_piece(master_weights *mw, size_t i, const void *owned_grad, int64_t begin, int64_t count,
                             double scale, float *out, int32_t *overflow);

/* mw_cast_to_model for elements [begin, begin + count) of owned range i only. */
loom_status mw_cast_piece(master_weights *mw, size_t i, int64_t begin, int64_t count);

#endif
