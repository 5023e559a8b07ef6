/*
 * safetensors.h - read and write Hugging Face safetensors files, the format checkpoints keep
 * model weights in, so that `transformers`, `safetensors` and loom read each other's files.
 *
 * Layout: an 8-byte little-endian uint64 N, N bytes of UTF-8 JSON
 *   {"__metadata__": {"format": "pt", ...string values},
 *    "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
 * padded with spaces so the data starts 8-byte aligned, then the data buffer. Offsets are
 * relative to the buffer; the tensors' ranges cover it exactly, without gaps or overlaps.
 * Supported dtypes: F32 F16 BF16 I32 I64 U16 U8 F64 (LOOM_DTYPE_*). Data is stored as the
 * machine has it: loom targets little-endian hosts, which is what the format prescribes.
 */
#ifndef LOOM_CORE_SAFETENSORS_H
#define LOOM_CORE_SAFETENSORS_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

#include "fileutil.h" /* loom_part_stage */

typedef struct loom_st_tensor {
    const char *name;
    uint32_t dtype;   /* LOOM_DTYPE_*                                                       */
    uint32_t ndim;    /* 0..LOOM_MAX_DIMS; 0 is a scalar                                    */
    int64_t shape[8];
    const void *data; /* row-major, nbytes long                                             */
    uint64_t nbytes;  /* product(shape) * element size                                      */
} loom_st_tensor;

/* Bytes per element of a LOOM_DTYPE_*, 0 for one safetensors I/O does not know. */
size_t loom_st_dtype_size(uint32_t dtype);

/* "F32", "BF16", ... for a LOOM_DTYPE_*; NULL for one safetensors I/O does not know. */
const char *loom_st_dtype_name(uint32_t dtype);

/* Write n tensors, laid out in the order given, and the metadata pairs
 * (metadata[2*i] = key, metadata[2*i+1] = value; metadata may be NULL when n_metadata_pairs
 * is 0). "format": "pt" is added unless a "format" key is given, because transformers refuses
 * files without it. Data goes to "<path>.tmp", which is fsync'd and renamed to path: a crash
 * leaves the old file or the complete new one.
 * A tensor whose byte size is not a multiple of 8 shifts the ones after it off 8-byte
 * alignment; put the widest dtypes first when readers will use the data in place.
 * LOOM_E_INVALID for a bad tensor description (unknown dtype, ndim > 8, negative dimension,
 * nbytes != product(shape) * element size, duplicate or empty name, the name "__metadata__",
 * names or metadata that are not UTF-8), LOOM_E_IO if the file cannot be written. */
loom_status loom_safetensors_write(const char *path, const loom_st_tensor *tensors, size_t n,
                                   const char *const *metadata, size_t n_metadata_pairs);
/* The same with stage(context, i, 0) before tensor i's bytes are written and stage(context, i, 1)
 * after (tensors of 0 bytes included, in order): its data need only be ready from the first call
 * on (loom_part_stage, fileutil.h). */
loom_status loom_safetensors_write_staged(const char *path, const loom_st_tensor *tensors, size_t n,
                                          const char *const *metadata, size_t n_metadata_pairs, loom_part_stage stage,
                                          void *context);

/* An opened file: mapped read-only; tensor data points into the mapping. */
typedef struct loom_safetensors loom_safetensors;

/* Map and validate a whole file: every defect the format can have is LOOM_E_FORMAT with
 * "<path>: <what>" (truncation, bad header length, malformed JSON or UTF-8, missing or
 * ill-typed fields, unknown dtype, size/shape mismatch, ranges outside the buffer,
 * overlapping, leaving gaps or not covering it, duplicate names). A tensor of more than 8
 * dimensions is LOOM_E_UNSUPPORTED; a file that cannot be opened LOOM_E_NOT_FOUND or
 * LOOM_E_IO. */
loom_status loom_safetensors_open(const char *path, loom_safetensors **out);

size_t loom_safetensors_count(const loom_safetensors *st);

/* The index-th tensor in data order (the order the writer laid them out). The name, shape
 * and data stay valid until close. data is aligned to the element size when every tensor
 * before it has a byte size that is a multiple of it (as when written widest first);
 * otherwise read it with memcpy. LOOM_E_INVALID if index >= count. */
loom_status loom_safetensors_tensor(const loom_safetensors *st, size_t index, loom_st_tensor *out);

/* The tensor called name; LOOM_E_NOT_FOUND ("<path>: no tensor '<name>'") if there is none. */
loom_status loom_safetensors_find(const loom_safetensors *st, const char *name, loom_st_tensor *out);

/* The metadata value for key, valid until close, or NULL if absent. */
const char *loom_safetensors_metadata(const loom_safetensors *st, const char *key);

/* The path the file was opened from. */
const char *loom_safetensors_path(const loom_safetensors *st);

/* Unmap and free; NULL is fine. */
void loom_safetensors_close(loom_safetensors *st);

#endif
