/*
 * optimizer.h - the update rule (LOOM_KIND_OPTIMIZER).
 *
 * An optimizer sees spans: contiguous pieces of one parameter tensor in fp32 (the master
 * copy), with the tensor's name and full shape, the span's offset inside it, its gradient
 * (already unscaled, NOT yet clipped: multiply by step->grad_scale) and its state slots.
 * Under ZeRO a tensor may be split across ranks, so a rank sees only part of it; an
 * optimizer that needs whole tensors or per-tensor norms says so in `flags`.
 *
 * State memory belongs to the host: the optimizer declares how many fp32 values it keeps per
 * parameter element (state_slots, e.g. 2 for Adam's m and v) and the host allocates them,
 * zero-initialised, exactly for the owned spans, saves them in checkpoints under
 * state_names[i], and restores them on resume. This is what makes optimizer memory follow the
 * ZeRO formulas by construction.
 */
#ifndef LOOM_OPTIMIZER_H
#define LOOM_OPTIMIZER_H

#include "comm.h"
#include "kernels.h"
#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_MAX_STATE_SLOTS 4

/* loom_span.flags */
#define LOOM_SPAN_NO_DECAY 1u   /* bias or norm weight: weight decay does not apply          */

/* One contiguous piece of one parameter tensor. Built by the host; borrowed per call. */
typedef struct loom_span {
    LOOM_STRUCT_HEADER;
    const char *name;               /* the tensor's name, HF-style ("fc1.weight")           */
    int64_t tensor_numel;           /* elements in the whole tensor                         */
    int64_t offset;                 /* first element of the span inside the tensor          */
    int64_t numel;                  /* elements in the span                                 */
    uint32_t ndim;                  /* the whole tensor's shape                             */
    uint32_t flags;                 /* LOOM_SPAN_*                                          */
    int64_t shape[LOOM_MAX_DIMS];
    float *param;                   /* fp32 master values of the span, updated in place     */
    const float *grad;              /* fp32 gradient of the span (unscaled, unclipped)      */
    float *state[LOOM_MAX_STATE_SLOTS]; /* state_slots arrays of numel floats; rest NULL    */
    double weight_decay;            /* this span's group value (0 for LOOM_SPAN_NO_DECAY)   */
    uint32_t group;                 /* parameter group index (0 = decay, 1 = no decay)      */
    uint32_t tensor_index;          /* the tensor's index in the model's parameter list     */

    /* Never appended to: step() receives an array of spans (the stride is fixed). */
} loom_span;

/* What one optimizer step needs besides the spans. Built by the host; borrowed per call. */
typedef struct loom_optimizer_step {
    LOOM_STRUCT_HEADER;
    int64_t step;          /* 1 for the first update; counts only steps actually taken       */
    double lr;             /* learning rate from the scheduler for this step                 */
    double grad_scale;     /* multiply every gradient by this (clipping, 1.0 = none)         */
    double momentum;       /* scheduler's momentum (beta1 for Adam family); NaN = keep own   */
    /* Per-tensor statistics over the WHOLE tensors, for optimizers with tensor_stats > 0:
     * tensor_stats[i * tensor_stats + k] is statistic k of tensor i (partial_stats' sums over
     * every rank, added in rank order); NULL otherwise. n_tensors entries of tensor_stats. */
    const double *tensor_stats;
    uint64_t n_tensors;

    /* ---- ABI 1.1 (check with LOOM_HAS_FIELD) ---- */

    /* The run's communicator, for optimizers that communicate themselves (see
     * local_gradients below); lent for this call only, NULL in a host that does not give one.
     * Collectives issued on it from step() run on the trainer's thread, between the host's own
     * collectives, so every rank MUST issue the same ones in the same order. world_size is the
     * number of ranks (1 in a one-process run, where comm is the "local" communicator). */
    loom_comm *comm;
    const loom_comm_vtable *comm_vtable;
    int32_t rank;
    int32_t world_size;

    /* ---- ABI 1.5 (check with LOOM_HAS_FIELD) ---- */

    /* Optional (NULL, or absent in an older host: step with your own loops on the CPU). The
     * kernel table of the device that holds every span's param, grad and state memory this
     * step (the CPU table in a CPU run and under ZeRO-Offload, whose partitions are host
     * memory): an update rule that finds its member there (adam_update) runs it instead of
     * its own loop, so the step runs where the memory is (docs/architecture.md#device-step).
     * A member that is NULL in it: your own loop, which the host's memory promise
     * (docs/gpu.md#what-runs-where) still allows. Lent by the host for this call; static. */
    const loom_kernels_api *kernels;

    /* ABI 1.13+: append below. */
} loom_optimizer_step;

/* loom_optimizer_vtable.flags */
/* Spans are whole tensors (a factored second moment needs the whole matrix): a sharding plugin
 * that would split tensors cuts at tensor boundaries instead (zero1/zero2) or refuses. */
#define LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS 1u
#define LOOM_OPTIMIZER_NEEDS_TENSOR_NORMS 2u  /* per-tensor statistics (lamb): see
                                                 tensor_stats / partial_stats below        */
/* Since 1.7. The update of an element reads only that element's param, grad and state slots
 * and the step's values (adam, adamw, adamw_hf, sgd): step() may then be called several times
 * in one optimizer step, each time with pieces of the owned spans (offset and numel narrowed,
 * param, grad and state advanced to the piece), in flat order, every owned element exactly
 * once per step, with the same loom_optimizer_step. The host uses it to convert the gradients
 * to f32 a piece at a time instead of all at once (docs/architecture.md#piecewise-step).
 * Not with NEEDS_TENSOR_NORMS, tensor_stats or local_gradients (the host ignores it then). */
#define LOOM_OPTIMIZER_ELEMENTWISE 4u

typedef struct loom_optimizer loom_optimizer; /* plugin-private instance */

typedef struct loom_optimizer_vtable {
    LOOM_STRUCT_HEADER;
    uint32_t state_slots;            /* fp32 values of state per parameter element, <= 4    */
    uint32_t flags;                  /* LOOM_OPTIMIZER_*                                    */
    const char *const *state_names;  /* state_slots names for checkpoints ("exp_avg", ...)  */

    /* Required. Create an instance from the plugin's config section (borrowed during the
     * call). On failure returns a status, leaves *out NULL and reports through api->fail.
     * Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_optimizer **out);
    /* Required. Free the instance; NULL is a no-op. Init thread only. */
    void (*destroy)(loom_optimizer *self);
    /* Required. Update every span in place: param and state. `spans` are the owned spans of
     * this rank, in flat-buffer order, the same list at every step (for an optimizer with
     * LOOM_OPTIMIZER_ELEMENTWISE, pieces of it: see there). One thread per instance. */
    loom_status (*step)(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                        const loom_optimizer_step *step);
    /* Optional (NULL: the hyper-parameters are not logged). Write the value of a named
     * hyper-parameter ("beta1", "eps", "weight_decay") for the resolved-config log. Returns
     * LOOM_E_NOT_FOUND for a name it does not have. One thread per instance. */
    loom_status (*get_hparam)(loom_optimizer *self, const char *name, double *out);

    /* Optional (0 / NULL: none). Statistics the update needs over whole tensors when a rank may
     * hold only part of one (LAMB's ||p|| and ||update|| for its trust ratio): tensor_stats
     * doubles per tensor. Before each step the host zeroes n_tensors * tensor_stats doubles,
     * calls partial_stats with the spans this rank is responsible for (each element is counted
     * by exactly one rank) and the step's values, which ADDS each span's partial sums at
     * sums[span.tensor_index * tensor_stats + k]; it then sums them over ranks and passes the
     * totals to step() in loom_optimizer_step.tensor_stats. partial_stats must not change any
     * state. One thread per instance. */
    uint32_t tensor_stats;
    uint32_t reserved2;
    loom_status (*partial_stats)(loom_optimizer *self, const loom_span *spans, size_t n_spans,
                                 const loom_optimizer_step *step, double *sums);

    /* ---- ABI 1.1 ---- */

    /* Optional (NULL: always 0). Returns 1 when optimizer step `step` (1-based, counting steps
     * taken, the loom_optimizer_step.step that step() will receive) wants each rank's OWN
     * gradients instead of their sum over ranks: the host then keeps that step's gradients
     * local (loom_sharding_vtable.set_reduction(0)) and the optimizer exchanges what it needs
     * itself through loom_optimizer_step.comm (1-bit Adam after its warm-up). A local gradient
     * keeps the global normalisation: it is this rank's sum over its examples divided by the
     * targets of the WHOLE global batch. Asked before the first micro-batch of every step;
     * must depend on `step` and the configuration only, so every rank answers the same. The
     * host refuses a sharding plugin without set_reduction for an optimizer that has this
     * member. Must not change any state. One thread per instance. */
    int32_t (*local_gradients)(const loom_optimizer *self, int64_t step);

    /* ABI 1.13+: append below. */
} loom_optimizer_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(offsetof(loom_span, shape) == 56, "loom_span layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_span, param) == 120, "loom_span layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_span) == 184, "loom_span layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_optimizer_step, comm) == 64, "loom_optimizer_step layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_optimizer_step, kernels) == 88, "loom_optimizer_step layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_optimizer_step) == 96, "loom_optimizer_step layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_optimizer_vtable, create) == 32, "optimizer vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_optimizer_vtable) == 88, "optimizer vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_OPTIMIZER_H */
