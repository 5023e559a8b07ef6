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

/* The XXH64 of the file `pattern` names (core/io/file_hash.h), or, for a pattern that matches
 * several token shards (core/data/data_tokens.h), the XXH64 of their XXH64s in the order the
 * dataset reads them; *bytes: all their bytes, *files: how many. */
loom_status loom_data_checksum(const char *pattern, uint64_t *hash, uint64_t *bytes, size_t *files);

#endif
