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

/* One parameter tensor, as the model declares it. Written by the plugin. */
typedef struct loom_param_info {
    LOOM_STRUCT_HEADER;
    const char *name;             /* HF-style, unique; static or owned by the instance     */
    uint32_t ndim;
    uint32_t flags;               /* LOOM_PARAM_*                                          */
    int64_t shape[LOOM_MAX_DIMS];
} loom_param_info;

/* What the model reads from a batch. Built by the host; borrowed per call.
 * inputs: model-specific (mlp: F32 [B, features]; token models: I32 [B, T]).
 * labels: I32, [B] or [B, T]; -100 marks a position that is not a target. For token models the
 * labels are ALREADY SHIFTED: labels[b, t] is the target of position t (the host's data loader
 * builds them so), and the model does not shift them again as HF's forward does. */
typedef struct loom_batch {
    LOOM_STRUCT_HEADER;
    loom_tensor_view inputs;
    loom_tensor_view labels;
    int64_t batch_size;          /* rows in this batch (<= the bound batch size)           */
    int64_t n_targets;           /* labels != -100 in this batch                           */

    /* ---- ABI 1.3: variable-length batches, encoder-decoder models, stochastic layers.
     * A 1.2 host builds a 240-byte batch: read these through LOOM_HAS_FIELD. A batch padded
     * to its longest row (docs/seq2seq.md#batches) has inputs [B, S] and labels [B, T] with S
     * and T this batch's lengths (row strides S and T), which may differ from each other and
     * from one batch to the next; both are at most the bound max_sequence_length. ---- */

    /* Optional (data NULL: every input position is a token). I32 [B, S] like inputs: 1 where
     * inputs[b, s] is a token, 0 where it is padding; a model attends to no padded key and
     * ignores padded positions. Built by the host; borrowed per call. */
    loom_tensor_view attention_mask;
    /* Optional (data NULL: an encoder-decoder model derives them from labels by shifting
     * right, decoder_start_token_id first and -100 read as the pad id, as HF's T5 does).
     * I32 [B, T] like labels: the decoder's input tokens, position t predicting labels[b, t].
     * Unused by decoder-only models. Built by the host; borrowed per call. */
    loom_tensor_view decoder_input_ids;
    /* Seed of this micro-batch's stochastic layers (dropout): a function of the run's seed,
     * the global step and the micro-batch index (docs/checkpoints.md#what-a-resume-restores),
     * so a resumed run draws the same masks. Meaningful only when `training` is 1. */
    uint64_t dropout_seed;
    /* 1: the forward of a training step (dropout on); 0: evaluation, prediction, generation
     * (dropout off, as HF's model.eval()). A 1.2 host leaves this out: treat it as 0. */
    uint32_t training;
    uint32_t reserved1;          /* 0                                                       */
} loom_batch;

/* How the host binds a model to memory and sizes before the first step. Borrowed. */
typedef struct loom_model_binding {
    LOOM_STRUCT_HEADER;
    void *params;                /* flat parameter buffer, param_dtype, on device; lent for
                                    the model's lifetime; the host updates it between steps */
    uint32_t param_dtype;        /* LOOM_DTYPE_* of params (and of gradients)              */
    uint32_t compute_dtype;      /* LOOM_DTYPE_* for matrix products                       */
    uint32_t device;             /* LOOM_DEVICE_*                                          */
    int32_t device_index;
    int64_t max_batch_size;      /* the largest batch forward/backward will see            */
    const void *kernels;         /* const loom_kernels_api * for `device`                  */
    int64_t max_sequence_length; /* sequence models: the longest T a batch will have
                                    (inputs [B, T]); 0 = the data is not sequences         */
} loom_model_binding;

/* Where backward puts gradients. Built by the host; borrowed during backward().
 * The model calls acquire for a range of the flat parameter index space [begin, end) (whole
 * tensors, in any order), ACCUMULATES (+=) the gradients of those elements into the returned
 * memory (param_dtype), then calls release for the same range once those gradients are final
 * for this micro-batch. Ranges acquired must not overlap until released. A model should
 * release the last layer first, as soon as it is done, so communication overlaps compute. */
typedef struct loom_grad_sink {
    LOOM_STRUCT_HEADER;
    void *context;  /* host's */
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

    /* Optional. Memory for a sparse contribution to rows of a range this micro-batch already
     * released: row i of `rows` (n_rows ids, strictly increasing, each >= 0) is the flat range
     * [begin + rows[i] row_size, + row_size), which must lie inside the parameter space.
     * *memory receives n_rows x row_size elements of param_dtype, zeroed, row i at i x
     * row_size, owned by the host and valid until release_rows; the model ACCUMULATES (+=)
     * into it. One rows part at a time per micro-batch, and the same (begin, row_size) on
     * every micro-batch and rank of a run. `rows` is borrowed for the call. One thread per
     * instance (the training thread). */
    loom_status (*acquire_rows)(void *context, int64_t begin, int64_t row_size, int64_t n_rows, const int64_t *rows,
                                void **memory);
    /* Optional. The rows acquired at `begin` are final for this micro-batch; the memory goes
     * back to the host. */
    loom_status (*release_rows)(void *context, int64_t begin);
} loom_grad_sink;

/* What forward reports. Written by the plugin. */
typedef struct loom_forward_result {
    LOOM_STRUCT_HEADER;
    double loss_sum;             /* sum of per-target losses (not a mean)                  */
    int64_t n_targets;           /* targets counted in loss_sum                            */
    int64_t n_correct;           /* targets whose argmax prediction equals the label; -1 if
                                    the model has no notion of accuracy                    */
} loom_forward_result;

typedef struct loom_model loom_model; /* plugin-private instance */

typedef struct loom_model_vtable {
    LOOM_STRUCT_HEADER;

    /* Required. Create from the config section (sizes: n_layer, hidden sizes...).
     * Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          loom_model **out);
    /* Required. NULL is a no-op. */
    void (*destroy)(loom_model *self);

    /* Required. Number of parameter tensors; their order is the flat buffer's order. */
    size_t (*param_count)(const loom_model *self);
    /* Required. Describe parameter tensor i (< param_count). out->struct_size set by host. */
    loom_status (*param_info)(const loom_model *self, size_t i, loom_param_info *out);

    /* Required. Fill a fresh initialisation of ALL parameters into `params` (fp32, flat
     * layout) using api->random_normal, so every rank and every run with the same seed gets
     * the same values. */
    loom_status (*init_params)(loom_model *self, float *params);

    /* Required. Bind to the flat parameters and allocate activations for max_batch_size. Called
     * once before the first forward. */
    loom_status (*bind)(loom_model *self, const loom_model_binding *binding);
    /* Optional (NULL: 0). Bytes of activations bind() allocated, for the memory budget. */
    size_t (*activation_bytes)(const loom_model *self);

    /* Required. Forward pass on a batch. Keeps what backward needs. If `outputs` is not NULL,
     * writes the per-row output (mlp: logits [B, classes]; token models: logits [B, S, V] with
     * S >= T the row stride, padded positions zeroed) as F32 into it; outputs->shape says its
     * capacity. One thread per instance. */
    loom_status (*forward)(loom_model *self, const loom_batch *batch, loom_forward_result *result,
                           loom_tensor_view *outputs);
    /* Required. Backward of the last forward on the same batch: d(objective)/d(loss_sum) is
     * `seed`. Gradients go to `sink` (see loom_grad_sink). One thread per instance. */
    loom_status (*backward)(loom_model *self, const loom_batch *batch, float seed,
                            const loom_grad_sink *sink);
    /* Required. Shape of one row of forward's outputs (mlp: [classes]; a language model:
     * [T, vocab_size]); fills out_shape and returns its ndim through *ndim. */
    loom_status (*output_shape)(const loom_model *self, int64_t *out_shape, uint32_t *ndim);

    /* Optional (NULL: the trainer's compute_loss hook cannot be overridden for this model).
     * Backward of the last forward from a gradient of its outputs instead of its own loss:
     * doutputs has the shape forward wrote into `outputs` and holds d(objective)/d(outputs)
     * (already multiplied by the seed). Gradients go to `sink` as in backward(). */
    loom_status (*backward_outputs)(loom_model *self, const loom_batch *batch,
                                    const loom_tensor_view *doutputs, const loom_grad_sink *sink);

    /* Optional (NULL: the model cannot generate). Incremental decoding with a key/value cache,
     * for generation. decode_begin clears the cache and makes room for max_positions tokens
     * (at most the model's context; memory allocated here, once per generation, through the
     * host). decode_step feeds n tokens at the next positions and writes the logits of the LAST
     * one into logits (vocab_size floats, the last dimension of output_shape). The parameters
     * are read as bound; a forward/backward in between invalidates nothing but is not allowed
     * to run concurrently. One thread per instance. */
    loom_status (*decode_begin)(loom_model *self, int64_t max_positions);
    loom_status (*decode_step)(loom_model *self, const int32_t *tokens, int64_t n, float *logits);

    /* Optional (NULL: the host assumes the whole parameter count). The most gradient elements
     * backward holds acquired at the same time (grad_sink ranges acquired and not yet released),
     * so a sharding plugin that keeps only a partition of the gradients (ZeRO-2) can size its
     * scratch before step 1. MT-safe. */
    int64_t (*max_grad_elements)(const loom_model *self);

    /* ---- ABI 1.1 ---- */

    /* Optional (NULL: none). Memory of the model's own that holds nothing from the end of
     * backward() / backward_outputs() until the next forward(), decode_begin() or bind(): its
     * activations. The host lends it out for the optimizer step (a mixed-precision plugin's
     * f32 gradients) instead of allocating more. Sets *bytes (0 and NULL: none). MT-safe. */
    void *(*step_scratch)(loom_model *self, size_t *bytes);

    /* ---- ABI 1.3 ---- */

    /* Optional (NULL: the host calls forward then backward). forward(batch, result, NULL)
     * followed by backward(batch, seed, sink), in one call: knowing the seed before the loss
     * lets a model fuse its loss with its gradient (gpt2: the classifier never holds the
     * logits). Same results and the same sink protocol as the two calls. One thread per
     * instance. */
    loom_status (*train_step)(loom_model *self, const loom_batch *batch, float seed,
                              const loom_grad_sink *sink, loom_forward_result *result);

    /* ABI 1.4+: append below. */
} loom_model_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_param_info) == 96, "loom_param_info layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_batch, attention_mask) == 240, "loom_batch layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_model_binding) == 64, "loom_model_binding layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_grad_sink, acquire_rows) == 40, "loom_grad_sink layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_grad_sink) == 56, "loom_grad_sink layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_forward_result) == 40, "loom_forward_result layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_model_vtable) == 144, "model vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_MODEL_H */
