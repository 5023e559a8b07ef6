/*
 * data_tokens.h - token shards in llm.c's format, and the language-modelling dataset over them.
 *
 * Shard layout (llm.c, dev/data/data_common.py write_datafile), little-endian:
 *
 *   offset  size              field
 *   0       4   int32         magic 20240520
 *   4       4   int32         version 1 (uint16 tokens)
 *   8       4   int32         n: number of tokens
 *   12      1012              the rest of the 256-int32 header, zero
 *   1024    2*n uint16        the tokens
 *
 * The file is exactly 1024 + 2*n bytes. Python, for reference:
 *   header = np.zeros(256, dtype=np.int32); header[:3] = (20240520, 1, len(toks))
 *   f.write(header.tobytes() + np.array(toks, dtype=np.uint16).tobytes())
 *
 * The dataset: example i of a shard of n tokens is tokens [i*B, i*B + B + 1) (B = block_size):
 * inputs are its first B tokens, labels the same shifted by one. Examples start every B
 * tokens, as llm.c's loader reads them, so a shard gives (n - 1) / B examples and every token
 * after the first (up to the last whole block) is a target exactly once. An example never
 * spans two shards. Shards are memory-mapped read-only, never read into memory.
 */
#ifndef LOOM_CORE_DATA_TOKENS_H
#define LOOM_CORE_DATA_TOKENS_H

#include <loom/loom.h>

#include <glob.h>

#include "dataset.h"

#define LOOM_TOKENS_MAGIC 20240520
#define LOOM_TOKENS_VERSION 1
#define LOOM_TOKENS_HEADER_INTS 256
#define LOOM_TOKENS_HEADER_BYTES (LOOM_TOKENS_HEADER_INTS * 4)

/* Write tokens[0..n) as one shard at `path`, atomically (a temporary file renamed into
 * place). n must fit the header's int32. Errors: LOOM_E_INVALID (n too large), LOOM_E_IO. */
loom_status loom_tokens_write(const char *path, const uint16_t *tokens, uint64_t n);

/* glob(3) for a data file argument (no error callback): a path that exists is that one file,
 * even when its name holds glob characters; anything else is a pattern. Free g with globfree
 * whatever it returns. */
int loom_data_glob(const char *pattern, int flags, glob_t *g);

/* Open the shards matching `pattern` (one path, or a glob(3) pattern; matches are taken in
 * sorted order) as a dataset of block_size-token examples (see above): input_dtype I32,
 * input_ndim 1, input_shape[0] = block_size, labels_per_example = block_size, n_classes and
 * n_features 0; fill() widens the tokens to int32 and reports n * block_size targets.
 * Every shard is validated; errors name the file (or the pattern when nothing matches):
 * LOOM_E_NOT_FOUND (no match), LOOM_E_IO, LOOM_E_FORMAT ("not an llm.c token shard (bad
 * magic)", an unsupported version, "truncated: header says N tokens, file holds M", trailing
 * bytes, an empty shard, no shard long enough for one example), LOOM_E_INVALID (block_size
 * < 1). Free with (*out)->destroy(*out). */
loom_status loom_token_dataset_open(const char *pattern, int64_t block_size, loom_dataset **out);

/* The number of shards and tokens of a dataset opened by loom_token_dataset_open (for logs);
 * 0 for any other dataset. */
int64_t loom_token_dataset_tokens(const loom_dataset *ds, int64_t *n_shards);

#endif
