/*
 * data_checksum.h - one checksum for what a --train_file / --validation_file / --test_file names,
 * so that ranks on nodes with disks of their own can tell whether they train on the same bytes
 * (core/trainer/trainer_agree.c; docs/semantics/trainer.md#ranks-agree).
 */
#ifndef LOOM_CORE_DATA_CHECKSUM_H
#define LOOM_CORE_DATA_CHECKSUM_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

/* The SHA-256 (64 hex digits, core/io/file_hash.h) of the file `pattern` names, or, for a
 * pattern that matches several token shards (core/data/data_tokens.h), the SHA-256 of their
 * SHA-256s' hex digits in the order the dataset reads them; *bytes: all their bytes, *files: how
 * many. */
loom_status loom_data_checksum(const char *pattern, char hex[65], uint64_t *bytes, size_t *files);

#endif
