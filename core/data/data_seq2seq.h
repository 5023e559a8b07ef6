/*
 * data_seq2seq.h - the pair format of sequence-to-sequence data, and the dataset over it
 * (docs/seq2seq.md#pair-format).
 *
 * A pair file is JSON lines, one example per line, in the shape HF's tokenized datasets have:
 *
 *   {"input_ids": [13, 7, 42, 1], "labels": [5, 9, 1]}
 *
 * input_ids: the source tokens (at least one), labels: the target tokens (at least one; -100
 * marks a position that is not a target), each an integer in [0, 2^31). Other keys
 * ("attention_mask", ...) are ignored; blank lines are skipped. `loom tokenize` writes it from
 * text pairs; a file tokenized elsewhere is read as it is. The first non-blank byte of the
 * file is '{', which is how loom_dataset_sniff tells it from the binary formats.
 *
 * The dataset keeps every example in memory and pads at batch time, as HF's
 * DataCollatorForSeq2Seq does: inputs [n, S] padded with 0 (T5's pad id) and an attention
 * mask [n, S] (1 = token), labels [n, T] padded with -100, S and T the longest source and
 * target among the n rows. input_shape[0] and labels_per_example are the longest of the file.
 */
#ifndef LOOM_CORE_DATA_SEQ2SEQ_H
#define LOOM_CORE_DATA_SEQ2SEQ_H

#include <stddef.h>

#include "dataset.h"

/* The token pads input_ids with (its positions are masked out; T5's pad id). */
#define LOOM_SEQ2SEQ_PAD_ID 0

/* True when the first non-blank byte of head[0..n) is '{'. */
int loom_seq2seq_sniff(const unsigned char *head, size_t n);

/* Read and validate a pair file. Errors name the file and line: LOOM_E_NOT_FOUND, LOOM_E_IO,
 * LOOM_E_FORMAT (a line that is not a JSON object, a missing or empty "input_ids" or
 * "labels", a value that is not an integer id, no example at all), LOOM_E_NOMEM. Free with
 * (*out)->destroy(*out). */
loom_status loom_seq2seq_dataset_open(const char *path, loom_dataset **out);

/* Lengths of example i's source and target (for length-grouped sampling); -1 past the end or
 * for a dataset that is not a pair file. */
int64_t loom_seq2seq_source_length(const loom_dataset *ds, int64_t i);
int64_t loom_seq2seq_target_length(const loom_dataset *ds, int64_t i);

#endif
