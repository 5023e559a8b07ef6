/*
 * sharding.h - who owns which parameters, gradients and optimizer states, and which
 * collectives move them (LOOM_KIND_SHARDING): none, ddp, sharded_ddp, zero1, zero2, zero3.
 *
 * Everything is expressed on the flat parameter index space [0, total_numel) of the model's
 * parameter list (model.h). A sharding plugin:
 *   1. partitions that space: each rank owns a list of ranges (zero1/zero2: an even split of
 *      the flat buffer, tensors may straddle ranks, or runs of whole tensors when the
 *      optimizer sets LOOM_OPTIMIZER_NEEDS_WHOLE_TENSORS; sharded_ddp: whole tensors assigned
 *      greedily by size; ddp/none: every rank owns everything). The host allocates fp32
 *      master params (precision) and optimizer state exactly for the owned ranges.
 *   2. serves gradient memory during backward (grad_acquire / grad_release, wired to the
 *      model's loom_grad_sink) and starts the collective for a bucket as soon as it is full:
 *      ddp all-reduces on the last micro-batch, zero2 reduce-scatters into the owner at once,
 *      sharded_ddp reduces to the owner;
 *   3. finish_grads(): waits for every collective; the owned gradients are then complete in
 *      the memory owned_grads() points to;
 *   4. publish_params(): after the update, makes every rank's model-dtype copy whole again
 *      (zero1/zero2: all-gather; sharded_ddp: broadcast from owners; ddp: nothing);
 *   5. since 1.12, optionally (zero3): keeps only the owned ranges of the parameters between
 *      uses and makes a range whole when the model acquires it (param_acquire / param_release,
 *      wired to the model's loom_param_source).
 * Reductions are SUMs in canonical rank order (comm.h); the loss seed already carries the
 * 1/global-count factor, so no plugin divides by the world size.
 */
#ifndef LOOM_SHARDING_H
#define LOOM_SHARDING_H

#include "comm.h"
#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A range [begin, end) of the flat parameter index space. Plain data (no header), since 1.0:
 * both members Required, begin <= end. Whoever builds an array of them owns it. */
typedef struct loom_range {
    int64_t begin;
    int64_t end;

    /* Never appended to: no header, and arrays of it cross the boundary. */
} loom_range;

/* What the host tells the plugin at creation. Built by the host; the struct is borrowed
 * during create() only, the memory named "lent for the run" stays the host's and valid until
 * destroy (the plugin never frees it). Read on the init thread. Members since 1.0 unless
 * marked; every member Required unless marked. */
typedef struct loom_sharding_setup {
    LOOM_STRUCT_HEADER;
    int32_t rank;                     /* this rank, 0 <= rank < world_size                 */
    int32_t world_size;               /* ranks in the run (1: no communication)            */
    int64_t total_numel;              /* elements in the flat parameter buffer             */
    size_t n_tensors;                 /* parameter tensors of the model                    */
    const int64_t *tensor_offsets;    /* never NULL; n_tensors + 1 offsets: tensor i is
                                         [o[i], o[i+1]); borrowed (copy what you keep)     */
    void *params;                     /* never NULL; flat model-dtype parameters; lent for
                                         the run                                           */
    uint32_t param_dtype;             /* dtype of params and of gradients                  */
    uint32_t device;                  /* LOOM_DEVICE_* of params and gradients             */
    loom_comm *comm;                  /* never NULL (the "local" comm in a one-process
                                         run); lent for the run                            */
    const loom_comm_vtable *comm_vtable; /* never NULL; comm's table; lent for the run     */
    int32_t gradient_accumulation_steps; /* micro-batches per optimizer step, >= 1         */
    uint32_t optimizer_flags;         /* LOOM_OPTIMIZER_* of the chosen optimizer          */
    int64_t max_grad_elements;        /* the model's max_grad_elements (or total_numel)    */
    /* Optional, since 1.1 (read with LOOM_HAS_FIELD). Elements `params` has room for
     * (>= total_numel; the host rounds it up to a multiple of world_size x 16384 and zeroes
     * the tail), so a plugin whose partitions are contiguous can all-gather them in place.
     * 0 or absent: total_numel. */
    int64_t params_capacity;

    /* ABI 1.13+: append below. */
} loom_sharding_setup;

/* The memory the plugin holds, for the budget printed before step 1. Written by the plugin
 * in memory() into the host's struct. Both members Required (0 is a valid answer), since
 * 1.0. */
typedef struct loom_sharding_memory {
    LOOM_STRUCT_HEADER;
    uint64_t gradient_bytes;   /* gradient storage of this rank (full or owned partition)     */
    uint64_t bucket_bytes;     /* communication buckets                                       */
    /* ---- ABI 1.4 ---- */

    /* Optional, since 1.4 (a 1.3 host's struct ends above: check LOOM_HAS_FIELD before
     * writing; 0: none). Host memory the plugin holds beside the above for ZeRO-Offload: its
     * host copies of the owned parameters and gradients (host_params, owned_grads). The two
     * members above are on setup->device. */
    uint64_t host_bytes;

    /* ---- ABI 1.12 ---- */

    /* Optional, since 1.12 (check LOOM_HAS_FIELD before writing; 0: the whole parameter
     * buffer). Bytes of setup->params this rank keeps at most, for a plugin with param_acquire:
     * its owned ranges plus what the model holds acquired at once. */
    uint64_t param_bytes;

    /* ABI 1.13+: append below. */
} loom_sharding_memory;

typedef struct loom_sharding loom_sharding; /* plugin-private instance */

/* Filled by the plugin (static storage, never freed). Every member but create, destroy and
 * owned_ranges is called on the trainer's thread, one call at a time per instance (the
 * plugin may run collectives on its comm's threads meanwhile). */
typedef struct loom_sharding_vtable {
    LOOM_STRUCT_HEADER;

    /* Required, never NULL. Decide the partition and allocate gradient storage and buckets
     * (the plugin's until destroy). *out is owned by the host until it passes it to destroy().
     * On failure returns a status, leaves *out NULL and reports through api->fail. Init
     * thread only. Since 1.0. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          const loom_sharding_setup *setup, loom_sharding **out);
    /* Required, never NULL. Free the instance and all it allocated; destroy(NULL) is a
     * no-op. Init thread only. Since 1.0. */
    void (*destroy)(loom_sharding *self);

    /* Required, never NULL. The ranges `rank` owns (any rank, so the host can compute every
     * rank's budget and checkpoint layout), sorted, non-overlapping. *ranges stays owned by
     * the instance and valid until destroy. MT-safe. Since 1.0. */
    loom_status (*owned_ranges)(const loom_sharding *self, int32_t rank, const loom_range **ranges,
                                size_t *n_ranges);
    /* Required, never NULL. Memory report into the host's `out`. One thread per instance.
     * Since 1.0. */
    loom_status (*memory)(const loom_sharding *self, loom_sharding_memory *out);

    /* Required, never NULL. Start of a micro-batch: micro (0-based) of the accumulation,
     * last != 0 on the final micro-batch before an optimizer step. One thread per instance.
     * Since 1.0. */
    loom_status (*begin_micro_batch)(loom_sharding *self, int32_t micro, int32_t last);
    /* Required, never NULL. Gradient memory for [begin, end) (param_dtype) into *memory:
     * holds what earlier micro-batches accumulated there, or zeros. The plugin's memory,
     * lent to the model until grad_release of the same range. See loom_grad_sink. One thread
     * per instance. Since 1.0. */
    loom_status (*grad_acquire)(loom_sharding *self, int64_t begin, int64_t end, void **memory);
    /* Required, never NULL. The gradients of [begin, end) are final for this micro-batch;
     * the plugin may start communicating them. One thread per instance. Since 1.0. */
    loom_status (*grad_release)(loom_sharding *self, int64_t begin, int64_t end);
    /* Required, never NULL. Wait for every collective of the step. Afterwards owned_grads()
     * is complete. One thread per instance. Since 1.0. */
    loom_status (*finish_grads)(loom_sharding *self);
    /* Required, never NULL. Gradient memory of owned range i (param_dtype, the range's
     * length) into *memory: the summed gradient after finish_grads. The plugin's memory,
     * valid until the next begin_micro_batch(micro=0). One thread per instance. Since 1.0. */
    loom_status (*owned_grads)(loom_sharding *self, size_t range_index, void **memory);
    /* Required, never NULL. Zero the gradients for the next accumulation (after the
     * optimizer step). One thread per instance. Since 1.0. */
    loom_status (*zero_grads)(loom_sharding *self);
    /* Required, never NULL. The owned ranges of `params` were updated: make every rank's
     * copy whole. Collective: every rank calls it. One thread per instance. Since 1.0. */
    loom_status (*publish_params)(loom_sharding *self);

    /* ---- ABI 1.1 ---- */

    /* Optional, since 1.1 (NULL or absent: gradients are always reduced; the host then
     * refuses optimizers that ask for local gradients, see
     * loom_optimizer_vtable.local_gradients). Called by the host before the first micro-batch
     * of an optimizer step (before begin_micro_batch(micro=0)), on every rank alike; the
     * setting holds until the next call. enabled = 1: the normal reduction. enabled = 0: this
     * step's gradients stay local: grad_release and finish_grads communicate nothing and
     * owned_grads returns this rank's own accumulated gradients (still carrying the seed's
     * 1 / global-count factor). Only meaningful where every rank owns everything (ddp, none).
     * One thread per instance. */
    loom_status (*set_reduction)(loom_sharding *self, int32_t enabled);

    /* ---- ABI 1.4 ---- */

    /* Optional, since 1.4 (NULL, or *memory left NULL: no offload; the host steps the owned
     * ranges of setup->params where they are). ZeRO-Offload (docs/semantics/deepspeed.md#offload):
     * host memory, lent until destroy, holding this rank's copy of its owned ranges one after
     * another (param_dtype, the sum of their lengths), filled from setup->params at create().
     * The host then runs the optimizer step out of host memory only: it binds the precision
     * plugin to this copy (its owned ranges rebased to [0, length)), keeps optimizer states in
     * host memory, and owned_grads() returns host memory. publish_params() copies it into the
     * owned ranges of setup->params before making them whole. Called once, after create(), on
     * the init thread. */
    loom_status (*host_params)(loom_sharding *self, void **memory);

    /* ---- ABI 1.12: parameters partitioned between uses (ZeRO-3, docs/architecture.md#zero-3) */

    /* Optional, since 1.12 (NULL or absent: params are whole on every rank between steps, as
     * every plugin before ZeRO-3 keeps them). Set, the plugin owns what setup->params holds
     * outside its owned ranges from create() on, and may discard it (it then reads as zeros);
     * the host keeps the owned ranges current, as with every plugin. param_acquire makes
     * [begin, end) (a range of whole tensors) hold the current parameters on this rank until
     * the matching param_release, which lets the plugin discard the part of it that this rank
     * does not own. Collective: every rank makes the same calls in the same order. The host
     * binds these to the model's loom_param_source, calls them itself around what reads the
     * whole buffer (evaluation, saving, generation: param_acquire(0, total_numel)), never with
     * overlapping ranges held at once, and calls publish_params after each update as before.
     * One thread per instance. */
    loom_status (*param_acquire)(loom_sharding *self, int64_t begin, int64_t end);
    /* Optional (NULL with param_acquire), since 1.12. */
    loom_status (*param_release)(loom_sharding *self, int64_t begin, int64_t end);

    /* ABI 1.13+: append below. */
} loom_sharding_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_sharding_setup) == 104, "loom_sharding_setup layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_sharding_memory) == 48, "loom_sharding_memory layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_sharding_vtable) == 136, "sharding vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_SHARDING_H */
