/*
 * model.h - parameters, forward and backward (LOOM_KIND_MODEL).
 *
 * The model declares its parameter list; the host lays the parameters out in ONE flat buffer
 * in that order (tensor i at the sum of the sizes before it) and lends the model a pointer
 * to it. The model never allocates parameters or gradients: gradients are written into memory
 * the host hands out range by range through a loom_grad_sink during backward, which is how the
 * sharding plugin overlaps communication with the rest of backward (DDP buckets, ZeRO-2
 * reduce-scatter) and why ZeRO-2 never needs a full gradient buffer.
 *
 * Loss convention (docs/architecture.md#loss-normalisation): forward returns the SUM of the per-target
 * losses and the number of targets; backward takes the seed d(total)/d(sum), which the host
 * computes once as loss_scale / (targets in the whole accumulated global batch). That is the
 * one place where accumulation, world size and loss scale meet.
 */
#ifndef LOOM_MODEL_H
#define LOOM_MODEL_H

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* loom_param_info.flags */
#define LOOM_PARAM_NO_DECAY 1u   /* bias / norm weight: excluded from weight decay (as HF) */
#define LOOM_PARAM_EMBEDDING 2u  /* an embedding table (token or position): left out of HF's
                                    floating_point_ops estimate, 6 x non-embedding parameters
                                    x tokens. Since ABI 1.2; a host of 1.0/1.1 ignores it. */

/* loom_model_vtable.flags (ABI 1.12) */
#define LOOM_MODEL_PARAM_SOURCE                                                                                        \
    1u /* reads its parameters through loom_model_binding.param_source                                                 \
          when the host binds one: it can train under a sharding                                                       \
          plugin that partitions the parameters (ZeRO-3)          */

/* One parameter tensor, as the model declares it in param_info(). Written by the plugin into
 * the host's struct. Every member Required, since 1.0. */
typedef struct loom_param_info {
    LOOM_STRUCT_HEADER;
    const char *name;             /* never NULL; HF-style, unique; static or owned by the
                                     instance (valid until destroy)                        */
    uint32_t ndim;                /* 1 <= ndim <= LOOM_MAX_DIMS                             */
    uint32_t flags;               /* LOOM_PARAM_* (0: none)                                 */
    int64_t shape[LOOM_MAX_DIMS]; /* the first ndim entries; the rest ignored               */

    /* ABI 1.13+: append below. */
} loom_param_info;

/* What the model reads from a batch. Built by the host; the struct and the memory its views
 * name are borrowed per call (copy what you keep). Read on the trainer's thread.
 * inputs: model-specific (mlp: F32 [B, features]; token models: I32 [B, T]).
 * labels: I32, [B] or [B, T]; -100 marks a position that is not a target. For token models the
 * labels are ALREADY SHIFTED: labels[b, t] is the target of position t (the host's data loader
 * builds them so), and the model does not shift them again as HF's forward does. */
typedef struct loom_batch {
    LOOM_STRUCT_HEADER;
    loom_tensor_view inputs; /* Required, data never NULL. Since 1.0.                   */
    loom_tensor_view labels; /* Required, data never NULL in training and evaluation.
                                Since 1.0.                                             */
    int64_t batch_size;      /* Required. Rows in this batch (<= the bound batch size).
                                Since 1.0.                                             */
    int64_t n_targets;       /* Required. labels != -100 in this batch. Since 1.0.      */

    /* ---- ABI 1.3: variable-length batches, encoder-decoder models, stochastic layers.
     * A 1.2 host builds a 240-byte batch: read these through LOOM_HAS_FIELD. A batch padded
     * to its longest row (docs/seq2seq.md#batches) has inputs [B, S] and labels [B, T] with S
     * and T this batch's lengths (row strides S and T), which may differ from each other and
     * from one batch to the next; both are at most the bound max_sequence_length. ---- */

    /* Optional, since 1.3 (data NULL or absent: every input position is a token). I32 [B, S]
     * like inputs: 1 where inputs[b, s] is a token, 0 where it is padding; a model attends to
     * no padded key and ignores padded positions. Borrowed per call. */
    loom_tensor_view attention_mask;
    /* Optional, since 1.3 (data NULL or absent: an encoder-decoder model derives them from
     * labels by shifting right, decoder_start_token_id first and -100 read as the pad id, as
     * HF's T5 does). I32 [B, T] like labels: the decoder's input tokens, position t
     * predicting labels[b, t]. Unused by decoder-only models. Borrowed per call. */
    loom_tensor_view decoder_input_ids;
    /* Optional, since 1.3 (absent: 0). Seed of this micro-batch's stochastic layers
     * (dropout): a function of the run's seed, the global step and the micro-batch index
     * (docs/checkpoints.md#what-a-resume-restores), so a resumed run draws the same masks.
     * Meaningful only when `training` is 1. */
    uint64_t dropout_seed;
    /* Optional, since 1.3 (absent: 0). 1: the forward of a training step (dropout on); 0:
     * evaluation, prediction, generation (dropout off, as HF's model.eval()). */
    uint32_t training;
    uint32_t reserved1; /* Since 1.3. 0; the model ignores it.                     */

    /* ABI 1.13+: append below. */
} loom_batch;

/* Where a model gets parameters that are not whole between uses (ABI 1.12; ZeRO-3,
 * docs/architecture.md#zero-3). Built by the host and lent for the model's lifetime through
 * loom_model_binding.param_source. With a source bound, binding->params keeps its layout (tensor
 * i at its flat offset), but what it holds outside the ranges acquired and not yet released is
 * unspecified (it may read as zeros): in forward(), backward(), backward_outputs() and
 * train_step() the model calls acquire for a range of whole tensors before it reads any of them,
 * reads them at their usual place in params, and calls release for the same range when it is done
 * with them. Ranges held at the same time must not overlap, and each call above releases all it
 * acquired before it returns, also on failure where it can. acquire and release may communicate:
 * every rank makes the same calls in the same order, which holds because the host runs these
 * calls in lockstep on every rank (in evaluation it makes the parameters whole for the pass, and
 * the calls return at once). Around init_params(), decode_begin()/decode_step() and
 * encode()/decode_rows()/reorder_cache() the host makes the parameters whole itself, and the
 * model calls no source there. Every member Required and never NULL, since 1.12; called on the
 * thread that runs the model, one call at a time. */
typedef struct loom_param_source {
    LOOM_STRUCT_HEADER;
    void *context; /* the host's; passed back unchanged as the first argument               */
    /* Make [begin, end) current in params until the matching release. */
    loom_status (*acquire)(void *context, int64_t begin, int64_t end);
    /* The model no longer reads [begin, end) (exactly a range it acquired). */
    loom_status (*release)(void *context, int64_t begin, int64_t end);

    /* ABI 1.13+: append below. */
} loom_param_source;

/* How the host binds a model to memory and sizes before the first step. Built by the host;
 * the struct is borrowed for bind(), the memory named "lent" stays the host's. Every member
 * Required, since 1.0. */
typedef struct loom_model_binding {
    LOOM_STRUCT_HEADER;
    void *params;                /* never NULL; flat parameter buffer, param_dtype, on
                                    device; lent for the model's lifetime; the host updates
                                    it between steps                                       */
    uint32_t param_dtype;        /* LOOM_DTYPE_* of params (and of gradients)              */
    uint32_t compute_dtype;      /* LOOM_DTYPE_* for matrix products                       */
    uint32_t device;             /* LOOM_DEVICE_*                                          */
    int32_t device_index;        /* device ordinal (0 on the CPU)                          */
    int64_t max_batch_size;      /* the largest batch forward/backward will see            */
    const void *kernels;         /* never NULL; const loom_kernels_api * for `device`; the
                                    host's, lent for the model's lifetime, MT-safe         */
    int64_t max_sequence_length; /* sequence models: the longest T a batch will have
                                    (inputs [B, T]); 0 = the data is not sequences         */

    /* ---- ABI 1.12 ---- */

    /* Optional, since 1.12 (NULL or absent: params hold every parameter for the model's
     * lifetime, as before). The host's, lent for the model's lifetime; bound only to a model
     * whose vtable sets LOOM_MODEL_PARAM_SOURCE. See loom_param_source. */
    const loom_param_source *param_source;

    /* ABI 1.13+: append below. */
} loom_model_binding;

/* Where backward puts gradients. Built by the host; borrowed during backward().
 * The model calls acquire for a range of the flat parameter index space [begin, end) (whole
 * tensors, in any order), ACCUMULATES (+=) the gradients of those elements into the returned
 * memory (param_dtype), then calls release for the same range once those gradients are final
 * for this micro-batch. Ranges acquired must not overlap until released. A model should
 * release the last layer first, as soon as it is done, so communication overlaps compute.
 * Every member Required and never NULL, since 1.0; acquire and release are called on the
 * thread that runs backward(), one call at a time. */
typedef struct loom_grad_sink {
    LOOM_STRUCT_HEADER;
    void *context; /* the host's; passed back unchanged as the first argument               */
    /* The memory written to *memory is the host's (its sharding plugin's), lent until the
     * matching release. */
    loom_status (*acquire)(void *context, int64_t begin, int64_t end, void **memory);
    loom_status (*release)(void *context, int64_t begin, int64_t end);

    /* ---- ABI 1.4: a gradient in two parts (docs/architecture.md#two-part-gradients) ----
     * A tensor whose gradient has a dense contribution early in backward and a sparse one at
     * the very end (a tied token embedding: the LM head first, the looked-up rows last) can
     * release its dense part at once, so the sharding plugin reduces it while backward goes on,
     * and hand the late rows over through these two members. The host reduces the rows part
     * itself (summed over micro-batches, then over ranks in canonical rank order, in
     * param_dtype) and adds it to the owned gradients after sharding.finish_grads():
     *     gradient = reduced(dense part) + reduced(rows part),
     * the same bits whatever the sharding plugin. Sharding plugins need nothing for this.
     * Both members are set or both NULL. A 1.3 host builds a 40-byte sink: read them through
     * LOOM_HAS(sink, loom_grad_sink, acquire_rows) && sink->release_rows. NULL (one-process
     * runs, older hosts): the model accumulates every contribution inside acquire/release. */

    /* Optional, since 1.4 (NULL: see above). Memory for a sparse contribution to rows of a
     * range this micro-batch already released: row i of `rows` (n_rows ids, strictly
     * increasing, each >= 0) is the flat range [begin + rows[i] row_size, + row_size), which
     * must lie inside the parameter space. *memory receives n_rows x row_size elements of
     * param_dtype, zeroed, row i at i x row_size, owned by the host and valid until
     * release_rows; the model ACCUMULATES (+=) into it. One rows part at a time per
     * micro-batch, and the same (begin, row_size) on every micro-batch and rank of a run.
     * `rows` is borrowed for the call. One thread per instance (the training thread). */
    loom_status (*acquire_rows)(void *context, int64_t begin, int64_t row_size, int64_t n_rows, const int64_t *rows,
                                void **memory);
    /* Optional, since 1.4 (NULL with acquire_rows). The rows acquired at `begin` are final
     * for this micro-batch; the memory goes back to the host. One thread per instance (the
     * training thread). */
    loom_status (*release_rows)(void *context, int64_t begin);

    /* ABI 1.13+: append below. */
} loom_grad_sink;

/* What forward reports. Written by the plugin into the host's struct. Every member Required,
 * since 1.0. */
typedef struct loom_forward_result {
    LOOM_STRUCT_HEADER;
    double loss_sum;             /* sum of per-target losses (not a mean)                  */
    int64_t n_targets;           /* targets counted in loss_sum                            */
    int64_t n_correct;           /* targets whose argmax prediction equals the label; -1 if
                                    the model has no notion of accuracy                    */

    /* ABI 1.13+: append below. */
} loom_forward_result;

/* The token ids generation needs from an encoder-decoder model (HF's config keys of the same
 * names). Written by the plugin through generation_ids into the host's struct (owned by the
 * host; out->struct_size set by it). Every member Required and since ABI 1.4. */
typedef struct loom_generation_ids {
    LOOM_STRUCT_HEADER;
    int32_t decoder_start_token_id; /* the decoder's first input token                     */
    int32_t eos_token_id;           /* ends a hypothesis; -1: the model has none           */
    int32_t pad_token_id;           /* fills a finished row                                */
    int32_t reserved1;              /* 0                                                   */

    /* ABI 1.13+: append below. */
} loom_generation_ids;

typedef struct loom_model loom_model; /* plugin-private instance */

/* Filled by the plugin (static storage, never freed). Every member but create and destroy is
 * called one call at a time per instance (the trainer's thread, or the thread that runs the
 * evaluation or generation); members marked MT-safe may be called from any thread. */
typedef struct loom_model_vtable {
    LOOM_STRUCT_HEADER;

    /* Required, never NULL. Create from the config section (sizes: n_layer, hidden
     * sizes...; borrowed for the call). *out is owned by the host until it passes it to
     * destroy(). On failure returns a status, leaves *out NULL and reports through
     * api->fail. Init thread only. Since 1.0. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_model **out);
    /* Required, never NULL. Free the instance and all it allocated (never the bound params);
     * destroy(NULL) is a no-op. Init thread only. Since 1.0. */
    void (*destroy)(loom_model *self);

    /* Required, never NULL. Number of parameter tensors; their order is the flat buffer's
     * order. MT-safe. Since 1.0. */
    size_t (*param_count)(const loom_model *self);
    /* Required, never NULL. Describe parameter tensor i (< param_count) into the host's
     * `out` (struct_size set by the host). MT-safe. Since 1.0. */
    loom_status (*param_info)(const loom_model *self, size_t i, loom_param_info *out);

    /* Required, never NULL. Fill a fresh initialisation of ALL parameters into `params`
     * (fp32, flat layout; the host's, borrowed for the call) using api->random_normal, so
     * every rank and every run with the same seed gets the same values. One thread per
     * instance. Since 1.0. */
    loom_status (*init_params)(loom_model *self, float *params);

    /* Required, never NULL. Bind to the flat parameters and allocate activations for
     * max_batch_size (the plugin's until destroy). Called before the first forward; the host
     * may call it again before then with other sizes (--auto_find_batch_size binds each size
     * it tries, to read activation_bytes), and a later binding replaces the earlier one, whose
     * activations the plugin frees (since 1.10; a plugin built for an older minor is bound
     * once). One thread per instance. Since 1.0. */
    loom_status (*bind)(loom_model *self, const loom_model_binding *binding);
    /* Optional (NULL: 0). Bytes of activations bind() allocated, for the memory budget.
     * MT-safe. Since 1.0. */
    size_t (*activation_bytes)(const loom_model *self);

    /* Required, never NULL. Forward pass on a batch. Keeps what backward needs. `result` is
     * the host's, never NULL. If `outputs` is not NULL (the host's memory, borrowed for the
     * call), writes the per-row output (mlp: logits [B, classes]; token models: logits
     * [B, S, V] with S >= T the row stride, padded positions zeroed) as F32 into it;
     * outputs->shape says its capacity. NULL: no outputs wanted. One thread per instance.
     * Since 1.0. */
    loom_status (*forward)(loom_model *self, const loom_batch *batch, loom_forward_result *result,
                           loom_tensor_view *outputs);
    /* Required, never NULL. Backward of the last forward on the same batch:
     * d(objective)/d(loss_sum) is `seed`. Gradients go to `sink` (never NULL, borrowed; see
     * loom_grad_sink). One thread per instance. Since 1.0. */
    loom_status (*backward)(loom_model *self, const loom_batch *batch, float seed,
                            const loom_grad_sink *sink);
    /* Required, never NULL. Shape of one row of forward's outputs (mlp: [classes]; a
     * language model: [T, vocab_size]); fills the caller's out_shape (LOOM_MAX_DIMS entries)
     * and returns its ndim through *ndim. MT-safe. Since 1.0. */
    loom_status (*output_shape)(const loom_model *self, int64_t *out_shape, uint32_t *ndim);

    /* Optional (NULL: the trainer's compute_loss hook cannot be overridden for this model).
     * Backward of the last forward from a gradient of its outputs instead of its own loss:
     * doutputs (the host's, borrowed for the call) has the shape forward wrote into
     * `outputs` and holds d(objective)/d(outputs) (already multiplied by the seed).
     * Gradients go to `sink` as in backward(). One thread per instance. Since 1.0. */
    loom_status (*backward_outputs)(loom_model *self, const loom_batch *batch,
                                    const loom_tensor_view *doutputs, const loom_grad_sink *sink);

    /* Optional, both or neither (NULL: the model cannot generate). Incremental decoding with
     * a key/value cache, for generation. decode_begin clears the cache and makes room for
     * max_positions tokens (at most the model's context; memory allocated here, once per
     * generation, through the host, the plugin's until destroy). decode_step feeds n tokens
     * (borrowed) at the next positions and writes the logits of the LAST one into the
     * caller's logits (vocab_size floats, the last dimension of output_shape). The
     * parameters are read as bound; a forward/backward in between invalidates nothing but is
     * not allowed to run concurrently. One thread per instance. Since 1.0. */
    loom_status (*decode_begin)(loom_model *self, int64_t max_positions);
    loom_status (*decode_step)(loom_model *self, const int32_t *tokens, int64_t n, float *logits);

    /* Optional (NULL: the host assumes the whole parameter count). The most gradient
     * elements backward holds acquired at the same time (grad_sink ranges acquired and not
     * yet released), so a sharding plugin that keeps only a partition of the gradients
     * (ZeRO-2) can size its scratch before step 1. MT-safe. Since 1.0. */
    int64_t (*max_grad_elements)(const loom_model *self);

    /* ---- ABI 1.1 ---- */

    /* Optional, since 1.1 (NULL or absent: none). Memory of the model's own that holds
     * nothing from the end of backward() / backward_outputs() until the next forward(),
     * decode_begin() or bind(): its activations. The host borrows it for the optimizer step
     * (a mixed-precision plugin's f32 gradients) instead of allocating more; it stays the
     * plugin's and is never freed by the host. Sets *bytes (0 and NULL: none). MT-safe. */
    void *(*step_scratch)(loom_model *self, size_t *bytes);

    /* ---- ABI 1.3 ---- */

    /* Optional, since 1.3 (NULL or absent: the host calls forward then backward).
     * forward(batch, result, NULL) followed by backward(batch, seed, sink), in one call:
     * knowing the seed before the loss lets a model fuse its loss with its gradient (gpt2:
     * the classifier never holds the logits). Same results and the same sink protocol as the
     * two calls; `sink` and `result` never NULL. One thread per instance. */
    loom_status (*train_step)(loom_model *self, const loom_batch *batch, float seed,
                              const loom_grad_sink *sink, loom_forward_result *result);

    /* ---- ABI 1.4: encoder-decoder generation with a key/value cache
     * (docs/seq2seq.md#generation). A model fills all four of these or none; a host checks
     * LOOM_HAS(v, loom_model_vtable, reorder_cache) and the other three before use (a 1.3
     * plugin's vtable is shorter). A model may run its encoder in the activations bind()
     * allocated, so a forward/backward in between may end the generation (encode again),
     * and none may run concurrently with another call. Errors (LOOM_E_INVALID for bad
     * arguments or order, LOOM_E_NOMEM) go through the host's fail(). One thread per
     * instance. ---- */

    /* Optional (NULL: the host cannot generate with this model as an encoder-decoder). The
     * decoder start, end-of-sequence and padding ids, as the model's configuration says.
     * out->struct_size set by the host. MT-safe. Since 1.4. */
    loom_status (*generation_ids)(const loom_model *self, loom_generation_ids *out);
    /* Optional (NULL with generation_ids). Run the encoder once over sources->inputs I32
     * [B, S] (and sources->attention_mask when its data is not NULL; labels and
     * decoder_input_ids are ignored; B and S within the bound sizes) and start a generation
     * of B * num_beams decoder rows: row r belongs to source r / num_beams. The cross-attention
     * keys and values of every decoder block are computed here, once per source; the
     * self-attention cache is emptied and sized for max_positions decoder tokens (at most the
     * model's context). Memory for the cache is allocated here through the host and kept
     * until the next encode or destroy. `sources` is borrowed for the call only. Dropout is
     * off. Since 1.4. */
    loom_status (*encode)(loom_model *self, const loom_batch *sources, int64_t num_beams, int64_t max_positions);
    /* Optional (NULL with generation_ids). Feed one token per row (tokens[B * num_beams],
     * borrowed) at the next decoder position (the first call: position 0, normally
     * decoder_start_token_id) and write every row's next-token logits (F32 [B * num_beams,
     * vocab_size], the caller's memory). Each row attends to its own cached tokens and to its
     * source. Fails past max_positions or before encode. Since 1.4. */
    loom_status (*decode_rows)(loom_model *self, const int32_t *tokens, float *logits);
    /* Optional (NULL with generation_ids). Beam reordering (HF's _reorder_cache): afterwards
     * row r holds the self-attention cache row rows[r] held before, for every decoder
     * position fed so far (rows may repeat; I32 [B * num_beams], borrowed). rows[r] must
     * belong to the same source as r (rows[r] / num_beams == r / num_beams): the cross-
     * attention keys and values are per source and never move. Since 1.4. */
    loom_status (*reorder_cache)(loom_model *self, const int32_t *rows);

    /* ---- ABI 1.12 ---- */

    /* Optional, since 1.12 (0 or absent: none). LOOM_MODEL_* capabilities. */
    uint64_t flags;

    /* ABI 1.13+: append below. */
} loom_model_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_param_info) == 96, "loom_param_info layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_batch, attention_mask) == 240, "loom_batch layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_model_binding) == 72, "loom_model_binding layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_param_source) == 40, "loom_param_source layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_grad_sink, acquire_rows) == 40, "loom_grad_sink layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_grad_sink) == 56, "loom_grad_sink layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_forward_result) == 40, "loom_forward_result layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_model_vtable, train_step) == 136, "model vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_model_vtable) == 184, "model vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_generation_ids) == 32, "loom_generation_ids layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_MODEL_H */
