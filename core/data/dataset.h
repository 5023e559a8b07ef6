/*
 * dataset.h - examples the trainer iterates over, and the data loader that batches them.
 *
 * A dataset is a numbered list of examples that can copy any subset of them into batch
 * buffers. The loader decides the order: a permutation per epoch drawn from (seed, epoch), so
 * the order of epoch e is the same in every run and on every rank, and resuming at step N
 * never needs to replay earlier batches (the order is recomputed, not iterated).
 */
#ifndef LOOM_CORE_DATASET_H
#define LOOM_CORE_DATASET_H

#include "error.h" /* LOOM_API */

#include <loom/model.h>

typedef struct loom_dataset loom_dataset;
struct loom_batch_buffer;
struct loom_dataset {
    int64_t n_examples;
    uint32_t input_dtype;            /* LOOM_DTYPE_* of inputs                                */
    uint32_t input_ndim;             /* dims of ONE example's inputs                          */
    int64_t input_shape[LOOM_MAX_DIMS];
    int64_t labels_per_example;      /* I32 labels per example (1 for classification)        */
    /* Copy examples indices[0..n) into inputs (n * example size) and labels (n *
     * labels_per_example); return the number of labels != -100 through *n_targets. */
    loom_status (*fill)(const loom_dataset *self, const int64_t *indices, int64_t n, void *inputs,
                        int32_t *labels, int64_t *n_targets);
    /* Free the dataset (and this struct). */
    void (*destroy)(loom_dataset *self);
    void *context;
    /* Classification only: number of features and classes (for the model's mapped config). */
    int64_t n_features;
    int64_t n_classes;
    /* Variable-length data (NULL: every example has input_shape and labels_per_example, and
     * fill() copies them): pads examples indices[0..n) into buf as one batch, each side to its
     * longest row (docs/seq2seq.md#batches), and sets buf->batch's shapes, attention mask and
     * n_targets. input_shape[0] and labels_per_example are then the longest row of the data,
     * which sizes the buffers. */
    loom_status (*collate)(const loom_dataset *self, const int64_t *indices, int64_t n,
                           struct loom_batch_buffer *buf);
    /* Token data: ids must be below this, the model's vocab_size (0: unchecked). Set by the
     * trainer once the model is known, so that an id out of range is named with its file and
     * position when its batch is read, not by the model with a row of the batch. */
    int64_t vocab_limit;
};

/* Data file formats. */
#define LOOM_DATA_CLASSIFICATION 1 /* LOOMCLS1 (core/data/data_classification.h)                 */
#define LOOM_DATA_TOKENS 2         /* llm.c token shards (core/data/data_tokens.h), one or a glob  */
#define LOOM_DATA_SEQ2SEQ 3        /* JSON lines of {"input_ids", "labels"} (core/data/data_seq2seq.h) */

/* Which format `path` holds (a glob: its first match), by the file's first bytes. */
LOOM_API loom_status loom_dataset_sniff(const char *path, int *format);

/* Open a data file: classification files as they are; token shards cut into examples of
 * block_size tokens (ignored for classification). */
LOOM_API loom_status loom_dataset_open(const char *path, int64_t block_size, loom_dataset **out);

/* A loader: batches of batch_size examples in the epoch's order. */
typedef struct loom_dataloader {
    const loom_dataset *dataset;
    int64_t batch_size;
    int32_t shuffle;
    int32_t drop_last;
    uint64_t seed;
    /* Ranks: this rank reads a disjoint shard, positions rank, rank + world, ... of the order. */
    int32_t rank;
    int32_t world_size;
    /* Current epoch's order (owned). */
    int64_t *order;
    int64_t order_len;
    int64_t epoch;
    /* The shuffled order (shuffle != 0): LOOM_SAMPLER_RANDOM (0, a permutation), or one that
     * batches similar lengths together (core/data/sampler_length.h). LOOM_SAMPLER_SEQUENTIAL
     * (with shuffle 0) is the training order of the file, the ranks taking whole batches in
     * turn (core/data/sampler_sequential.h). */
    int32_t sampler;
    /* 0 (training): every rank reads the same number of examples, the last ones wrapping
     * around to the start as DistributedSampler pads, so no rank waits for another at an
     * epoch's end. 1 (evaluation and prediction, where HF truncates to the dataset's length):
     * no padding, every example read once; ranks differ by one example at most, so by one
     * batch at most, and a rank may read none. */
    int32_t unpadded;
} loom_dataloader;

#define LOOM_SAMPLER_RANDOM 0          /* RandomSampler / DistributedSampler                 */
#define LOOM_SAMPLER_SORTISH 1         /* --sortish_sampler: SortishSampler                   */
#define LOOM_SAMPLER_GROUP_BY_LENGTH 2 /* --group_by_length: LengthGroupedSampler             */
#define LOOM_SAMPLER_SEQUENTIAL 3      /* --train_sampling_strategy sequential: SequentialSampler */

LOOM_API loom_status loom_dataloader_init(loom_dataloader *dl, const loom_dataset *ds, int64_t batch_size, int shuffle,
                                          int drop_last, uint64_t seed);
LOOM_API void loom_dataloader_free(loom_dataloader *dl);
/* Batches per epoch (HF: len(dataloader)). */
LOOM_API int64_t loom_dataloader_len(const loom_dataloader *dl);
/* Compute the order of `epoch` (a permutation of (seed, epoch) when shuffling). */
LOOM_API loom_status loom_dataloader_set_epoch(loom_dataloader *dl, int64_t epoch);

/* Buffers for one batch, sized for the loader's batch size (owned). */
typedef struct loom_batch_buffer {
    void *device_inputs, *device_labels; /* on a device run: where the batch is staged (owned) */
    int32_t *device_mask;                /* ... and the attention mask of variable-length data  */
    loom_batch batch;     /* views into the buffers below */
    void *inputs;
    int32_t *labels;
    int64_t capacity;     /* rows */
    int32_t *attention_mask; /* variable-length data only (dataset->collate): like inputs   */
} loom_batch_buffer;

LOOM_API loom_status loom_batch_buffer_init(loom_batch_buffer *buf, const loom_dataset *ds, int64_t capacity);
LOOM_API void loom_batch_buffer_free(loom_batch_buffer *buf);
/* Load batch `index` (0-based) of the current epoch into buf. */
LOOM_API loom_status loom_dataloader_load(const loom_dataloader *dl, int64_t index, loom_batch_buffer *buf);

#endif
