/*
 * file_hash.h - the SHA-256 of a file's bytes, through OpenSSL (already loom's for the
 * checkpoints' manifests): what `sha256sum FILE` prints, so a person can check a copy by hand.
 * The manifests use it to find a damaged checkpoint file, the ranks to tell whether their
 * copies of a data file are the same (core/trainer/trainer_agree.c).
 */
#ifndef LOOM_CORE_FILE_HASH_H
#define LOOM_CORE_FILE_HASH_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

/* SHA-256 of data[0..len) as 64 lowercase hex digits. */
loom_status loom_sha256_hex(const void *data, size_t len, char hex[65]);

/* SHA-256 of the regular file at `path` as 64 hex digits, and its size. follow: 0 refuses a
 * symbolic link (a folder being sealed holds only its own files), 1 follows it (a checkpoint a
 * user linked in place with cp -rs). */
loom_status loom_file_sha256(const char *path, int follow, char hex[65], uint64_t *size);

#endif
