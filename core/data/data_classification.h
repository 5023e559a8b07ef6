/*
 * data_classification.h - the binary classification data format ("LOOMCLS1") and a generator
 * of synthetic data sets in it.
 *
 * File layout, little-endian, no padding:
 *
 *   offset  size                 field
 *   0       8                    magic "LOOMCLS1" (ASCII, no terminator)
 *   8       4   uint32           version = 1
 *   12      4   uint32           n_features  (>= 1)
 *   16      4   uint32           n_classes   (>= 1)
 *   20      4   uint32           reserved = 0
 *   24      8   uint64           n_samples   (may be 0)
 *   32      4*n_samples*n_features  float32 features, row-major: sample i's features at
 *                                   32 + 4*i*n_features
 *   ...     4*n_samples          int32 labels, each in [0, n_classes)
 *
 * The file size is exactly 32 + 4*n_samples*(n_features + 1); anything else is an error.
 * Every feature must be finite. A reader validates everything it depends on (magic, version,
 * reserved, sizes against the file size, every feature and label) and reports which check
 * failed, naming the file.
 *
 * Python, for reference:
 *   hdr = struct.pack("<8sIIIIQ", b"LOOMCLS1", 1, n_features, n_classes, 0, n_samples)
 *   f.write(hdr + X.astype("<f4").tobytes() + y.astype("<i4").tobytes())
 */
#ifndef LOOM_CORE_DATA_CLASSIFICATION_H
#define LOOM_CORE_DATA_CLASSIFICATION_H

#include <loom/loom.h>

#define LOOM_CLASSIFICATION_MAGIC "LOOMCLS1"
#define LOOM_CLASSIFICATION_VERSION 1u
#define LOOM_CLASSIFICATION_HEADER_BYTES 32u

/* A data set in memory. features and labels are malloc'ed by load/generate and freed by
 * loom_classification_free; a caller building one by hand for save() owns its arrays. */
typedef struct loom_classification_data {
    uint64_t n_samples;
    uint32_t n_features;
    uint32_t n_classes;
    float *features;   /* [n_samples, n_features], row-major */
    int32_t *labels;   /* [n_samples], each in [0, n_classes) */
} loom_classification_data;

/* Read and validate a whole file into *out (overwritten; free with loom_classification_free).
 * Errors (the message, via loom_error, starts with the path): LOOM_E_IO (cannot open/read),
 * LOOM_E_FORMAT (bad magic, unsupported version, non-zero reserved field, zero sizes,
 * "truncated: expected N bytes, file has M", trailing bytes, a non-finite feature, a label
 * outside [0, n_classes)),
 * LOOM_E_NOMEM. On error *out is left empty (safe to free). */
loom_status loom_classification_load(const char *path, loom_classification_data *out);

/* Free the arrays of *data and zero it. NULL is a no-op. */
void loom_classification_free(loom_classification_data *data);

/* Validate *data as load() would and write it to `path`, through a temporary file renamed
 * into place so a reader never sees half a file. Errors: LOOM_E_INVALID (sizes, a non-finite
 * feature, a label out of range), LOOM_E_IO. */
loom_status loom_classification_save(const char *path, const loom_classification_data *data);

/* Generate a synthetic data set into *out (free with loom_classification_free). The same
 * (kind, sizes, seed) gives bit-identical data on every platform: the generator uses its own
 * RNG and only IEEE-exact arithmetic (no libm transcendental functions).
 *   "blobs":   n_classes Gaussian clusters (unit variance per feature) around random centres
 *              kept at least 3 standard deviations apart: a linear model reaches high but not
 *              perfect accuracy. n_classes >= 2, n_features >= 1.
 *   "spirals": n_classes interleaved 2-D spiral arms with Gaussian noise; they cannot be
 *              separated linearly. n_features must be 2, n_classes >= 2.
 * Labels are drawn uniformly. Errors: LOOM_E_INVALID (unknown kind, sizes), LOOM_E_NOMEM. */
loom_status loom_classification_generate(loom_classification_data *out, const char *kind,
                                         uint64_t n_samples, uint32_t n_features,
                                         uint32_t n_classes, uint64_t seed);

#endif
