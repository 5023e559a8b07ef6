/*
 * dataset.c - datasets over data files, the per-epoch order, and batch loading.
 */
#include "dataset.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data_classification.h"
#include "data_seq2seq.h"
#include "data_tokens.h"
#include "device.h"
#include "error.h"
#include "fileutil.h"
#include "sampler_length.h"
#include "sampler_sequential.h"

/* ---- classification files ---------------------------------------------------------------- */

static loom_status classification_fill(const loom_dataset *self, const int64_t *indices, int64_t n, void *inputs,
                                       int32_t *labels, int64_t *n_targets)
{
    const loom_classification_data *data = self->context;
    float *out = inputs;
    int64_t features = (int64_t)data->n_features;
    int64_t targets = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t row = indices[i];
        if (row < 0 || row >= self->n_examples)
            return loom_error(LOOM_E_INTERNAL, "example %lld outside the dataset", (long long)row);
        memcpy(out + i * features, data->features + row * features, (size_t)features * sizeof(float));
        labels[i] = data->labels[row];
        targets += data->labels[row] != -100;
    }
    *n_targets = targets;
    return LOOM_OK;
}

static void classification_destroy(loom_dataset *self)
{
    if (!self) return;
    loom_classification_free(self->context);
    free(self->context);
    free(self);
}

loom_status loom_dataset_sniff(const char *path, int *format)
{
    if (!path || !*path) return loom_error(LOOM_E_INVALID, "no data file given");
    const char *first = path;
    glob_t matches = {0};
    if (strpbrk(path, "*?[")) {
        if (loom_data_glob(path, 0, &matches) != 0 || matches.gl_pathc == 0) {
            globfree(&matches);
            return loom_error(LOOM_E_NOT_FOUND, "%s: no file matches", path);
        }
        first = matches.gl_pathv[0];
    }
    unsigned char head[8] = {0};
    int fd = -1;
    uint64_t size = 0;
    loom_status st = loom_open_regular(first, &fd, &size);
    ssize_t got = 0;
    if (st == LOOM_OK) {
        got = pread(fd, head, sizeof head, 0);
        close(fd);
    }
    if (st == LOOM_OK && got == 8 && memcmp(head, "LOOMCLS1", 8) == 0)
        *format = LOOM_DATA_CLASSIFICATION;
    else if (st == LOOM_OK && got >= 4 &&
             (uint32_t)(head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24) == 20240520u)
        *format = LOOM_DATA_TOKENS;
    else if (st == LOOM_OK && got >= 1 && loom_seq2seq_sniff(head, (size_t)got))
        *format = LOOM_DATA_SEQ2SEQ;
    else if (st == LOOM_OK)
        st = loom_error(LOOM_E_FORMAT,
                        "%s: not a loom classification file (LOOMCLS1), an llm.c token shard (bad magic) nor JSON "
                        "lines of input_ids/labels",
                        first);
    globfree(&matches);
    return st;
}

loom_status loom_dataset_open(const char *path, int64_t block_size, loom_dataset **out)
{
    *out = NULL;
    int format = 0;
    loom_status st = loom_dataset_sniff(path, &format);
    if (st != LOOM_OK) return st;
    if (format == LOOM_DATA_SEQ2SEQ) return loom_seq2seq_dataset_open(path, out);
    if (format == LOOM_DATA_TOKENS) {
        if (block_size < 1) return loom_error(LOOM_E_INVALID, "%s: token data needs a block size >= 1", path);
        return loom_token_dataset_open(path, block_size, out);
    }
    loom_classification_data *data = calloc(1, sizeof *data);
    loom_dataset *ds = calloc(1, sizeof *ds);
    if (!data || !ds) {
        free(data);
        free(ds);
        return loom_error(LOOM_E_NOMEM, "out of memory opening %s", path);
    }
    st = loom_classification_load(path, data);
    if (st != LOOM_OK) {
        free(data);
        free(ds);
        return st;
    }
    ds->n_examples = (int64_t)data->n_samples;
    ds->input_dtype = LOOM_DTYPE_F32;
    ds->input_ndim = 1;
    ds->input_shape[0] = data->n_features;
    ds->labels_per_example = 1;
    ds->fill = classification_fill;
    ds->destroy = classification_destroy;
    ds->context = data;
    ds->n_features = data->n_features;
    ds->n_classes = data->n_classes;
    *out = ds;
    return LOOM_OK;
}

/* ---- loader ------------------------------------------------------------------------------ */

loom_status loom_dataloader_init(loom_dataloader *dl, const loom_dataset *ds, int64_t batch_size, int shuffle,
                                 int drop_last, uint64_t seed)
{
    memset(dl, 0, sizeof *dl);
    if (batch_size < 1) return loom_error(LOOM_E_INVALID, "batch size must be >= 1, got %lld", (long long)batch_size);
    dl->dataset = ds;
    dl->batch_size = batch_size;
    dl->shuffle = shuffle;
    dl->drop_last = drop_last;
    dl->seed = seed;
    dl->world_size = 1;
    dl->epoch = -1;
    return LOOM_OK;
}

void loom_dataloader_free(loom_dataloader *dl)
{
    free(dl->order);
    dl->order = NULL;
}

/* Examples this rank sees per epoch (dl->unpadded: positions rank + k * world below n only). */
static int64_t examples_per_rank(const loom_dataloader *dl)
{
    int64_t n = dl->dataset->n_examples;
    int64_t world = dl->world_size > 0 ? dl->world_size : 1;
    if (dl->unpadded) return n > dl->rank ? (n - dl->rank + world - 1) / world : 0;
    if (dl->sampler == LOOM_SAMPLER_SEQUENTIAL) return loom_sequential_per_rank(dl);
    return (n + world - 1) / world;
}

int64_t loom_dataloader_len(const loom_dataloader *dl)
{
    int64_t n = examples_per_rank(dl);
    return dl->drop_last ? n / dl->batch_size : (n + dl->batch_size - 1) / dl->batch_size;
}

/* The random order: this rank's positions rank, rank + world, ... of the (seed, epoch)
 * permutation (of 0..n-1 when not shuffling), wrapping around as DistributedSampler pads. */
static loom_status permuted_order(loom_dataloader *dl, int64_t epoch, int64_t per_rank)
{
    int64_t n = dl->dataset->n_examples;
    int64_t world = dl->world_size > 0 ? dl->world_size : 1;
    int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
    if (!perm) return loom_error(LOOM_E_NOMEM, "out of memory for the data order");
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    if (dl->shuffle) {
        uint64_t state = loom_order_state(dl->seed, epoch);
        loom_shuffle(perm, n, &state);
    }
    for (int64_t i = 0; i < per_rank; i++) {
        int64_t global = i * world + dl->rank;
        dl->order[i] = n > 0 ? perm[global % n] : 0;
    }
    free(perm);
    return LOOM_OK;
}

loom_status loom_dataloader_set_epoch(loom_dataloader *dl, int64_t epoch)
{
    int64_t per_rank = examples_per_rank(dl);
    if (!dl->order) {
        dl->order = malloc((size_t)(per_rank > 0 ? per_rank : 1) * sizeof *dl->order);
        if (!dl->order) return loom_error(LOOM_E_NOMEM, "out of memory for the data order");
    }
    loom_status st = LOOM_OK;
    if (!dl->unpadded && dl->sampler == LOOM_SAMPLER_SEQUENTIAL)
        loom_sequential_order(dl, dl->order);
    else if (dl->shuffle && dl->sampler != LOOM_SAMPLER_RANDOM)
        st = loom_length_order(dl, epoch, dl->order, per_rank);
    else
        st = permuted_order(dl, epoch, per_rank);
    if (st != LOOM_OK) return st;
    dl->order_len = per_rank;
    dl->epoch = epoch;
    return LOOM_OK;
}

loom_status loom_batch_buffer_init(loom_batch_buffer *buf, const loom_dataset *ds, int64_t capacity)
{
    memset(buf, 0, sizeof *buf);
    int64_t example = 1;
    for (uint32_t d = 0; d < ds->input_ndim; d++) example *= ds->input_shape[d];
    size_t elem = ds->input_dtype == LOOM_DTYPE_F32 || ds->input_dtype == LOOM_DTYPE_I32 ? 4 : 8;
    buf->inputs = calloc((size_t)(capacity * example), elem);
    buf->labels = calloc((size_t)(capacity * ds->labels_per_example), sizeof *buf->labels);
    if (ds->collate) buf->attention_mask = calloc((size_t)(capacity * example), sizeof *buf->attention_mask);
    if (!buf->inputs || !buf->labels || (ds->collate && !buf->attention_mask)) {
        loom_batch_buffer_free(buf);
        return loom_error(LOOM_E_NOMEM, "out of memory for a batch of %lld", (long long)capacity);
    }
    buf->capacity = capacity;
    /* A device run stages each batch into device memory allocated here, once: the model reads
     * the device copies (docs/gpu.md#data). */
    uint32_t device = loom_device_current();
    if (device != LOOM_DEVICE_CPU) {
        buf->device_inputs = loom_device_alloc((size_t)(capacity * example) * elem, device, loom_device_index());
        buf->device_labels = loom_device_alloc((size_t)(capacity * ds->labels_per_example) * sizeof *buf->labels,
                                               device, loom_device_index());
        if (ds->collate)
            buf->device_mask = loom_device_alloc((size_t)(capacity * example) * sizeof *buf->attention_mask, device,
                                                 loom_device_index());
        if (!buf->device_inputs || !buf->device_labels || (ds->collate && !buf->device_mask)) {
            loom_batch_buffer_free(buf);
            return loom_error(LOOM_E_NOMEM, "out of device memory for a batch of %lld", (long long)capacity);
        }
    }
    loom_batch *b = &buf->batch;
    b->struct_size = sizeof *b;
    b->abi_major = LOOM_ABI_MAJOR;
    b->abi_minor = LOOM_ABI_MINOR;
    b->inputs.struct_size = sizeof b->inputs;
    b->inputs.abi_major = LOOM_ABI_MAJOR;
    b->inputs.data = buf->device_inputs ? buf->device_inputs : buf->inputs;
    b->inputs.dtype = ds->input_dtype;
    b->inputs.device = device;
    b->inputs.device_index = loom_device_index();
    b->inputs.ndim = 1 + ds->input_ndim;
    for (uint32_t d = 0; d < ds->input_ndim; d++) b->inputs.shape[1 + d] = ds->input_shape[d];
    b->labels.struct_size = sizeof b->labels;
    b->labels.abi_major = LOOM_ABI_MAJOR;
    b->labels.data = buf->device_labels ? buf->device_labels : buf->labels;
    b->labels.dtype = LOOM_DTYPE_I32;
    b->labels.device = device;
    b->labels.device_index = loom_device_index();
    b->labels.ndim = ds->labels_per_example == 1 ? 1 : 2;
    b->labels.shape[1] = ds->labels_per_example;
    if (ds->collate) {
        b->attention_mask = b->inputs;
        b->attention_mask.data = buf->device_mask ? (void *)buf->device_mask : buf->attention_mask;
        b->attention_mask.dtype = LOOM_DTYPE_I32;
    }
    return LOOM_OK;
}

void loom_batch_buffer_free(loom_batch_buffer *buf)
{
    free(buf->inputs);
    free(buf->labels);
    free(buf->attention_mask);
    loom_device_free(buf->device_inputs);
    loom_device_free(buf->device_labels);
    loom_device_free(buf->device_mask);
    buf->inputs = NULL;
    buf->labels = NULL;
    buf->attention_mask = NULL;
    buf->device_inputs = NULL;
    buf->device_labels = NULL;
    buf->device_mask = NULL;
}

loom_status loom_dataloader_load(const loom_dataloader *dl, int64_t index, loom_batch_buffer *buf)
{
    int64_t begin = index * dl->batch_size;
    int64_t end = begin + dl->batch_size;
    if (end > dl->order_len) end = dl->order_len;
    if (begin >= end) return loom_error(LOOM_E_INTERNAL, "batch %lld past the end of the epoch", (long long)index);
    int64_t n = end - begin;
    if (n > buf->capacity)
        return loom_error(LOOM_E_INTERNAL, "batch of %lld rows > buffer of %lld", (long long)n,
                          (long long)buf->capacity);
    loom_status st;
    if (dl->dataset->collate) {
        /* Padded to this batch's longest rows on the host, then staged like the fixed-size data. */
        if ((st = dl->dataset->collate(dl->dataset, dl->order + begin, n, buf)) != LOOM_OK || !buf->device_inputs)
            return st;
        const loom_batch *b = &buf->batch;
        const size_t in_bytes = (size_t)(n * b->inputs.shape[1]) * sizeof(int32_t);
        const size_t label_bytes = (size_t)(n * b->labels.shape[1]) * sizeof *buf->labels;
        if ((st = loom_device_copy(buf->device_inputs, buf->inputs, in_bytes, LOOM_COPY_HOST_TO_DEVICE)) != LOOM_OK ||
            (st = loom_device_copy(buf->device_mask, buf->attention_mask, in_bytes, LOOM_COPY_HOST_TO_DEVICE)) !=
                LOOM_OK)
            return st;
        return loom_device_copy(buf->device_labels, buf->labels, label_bytes, LOOM_COPY_HOST_TO_DEVICE);
    }
    int64_t targets = 0;
    st = dl->dataset->fill(dl->dataset, dl->order + begin, n, buf->inputs, buf->labels, &targets);
    if (st != LOOM_OK) return st;
    if (buf->device_inputs) {
        /* Filled on the host, then staged (the copy waits: the batch is read next). */
        size_t in_bytes =
            (size_t)n *
            (buf->batch.inputs.dtype == LOOM_DTYPE_F32 || buf->batch.inputs.dtype == LOOM_DTYPE_I32 ? 4 : 8);
        for (uint32_t d = 1; d < buf->batch.inputs.ndim; d++) in_bytes *= (size_t)buf->batch.inputs.shape[d];
        size_t label_bytes = (size_t)n * (size_t)dl->dataset->labels_per_example * sizeof *buf->labels;
        if ((st = loom_device_copy(buf->device_inputs, buf->inputs, in_bytes, LOOM_COPY_HOST_TO_DEVICE)) != LOOM_OK ||
            (st = loom_device_copy(buf->device_labels, buf->labels, label_bytes, LOOM_COPY_HOST_TO_DEVICE)) != LOOM_OK)
            return st;
    }
    buf->batch.batch_size = n;
    buf->batch.n_targets = targets;
    buf->batch.inputs.shape[0] = n;
    buf->batch.labels.shape[0] = n;
    return LOOM_OK;
}
