/*
 * file_hash.h - a fast checksum of a file's bytes, for ranks to tell whether their copies of a
 * data file are the same (core/trainer/trainer_agree.c). XXH64 (Yann Collet's xxHash, 64-bit,
 * seed 0): non-cryptographic, several GB/s, and the value `xxhsum -H1 FILE` prints, so a person
 * can check a node's copy by hand. Not a defence against a file altered on purpose (the
 * checkpoints' manifests use SHA-256 for that).
 */
#ifndef LOOM_CORE_FILE_HASH_H
#define LOOM_CORE_FILE_HASH_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

/* XXH64 of data[0..len) with seed 0. */
uint64_t loom_xxh64(const void *data, size_t len);

/* XXH64 of the whole file at `path` (mapped, read once) and its size. */
loom_status loom_file_xxh64(const char *path, uint64_t *hash, uint64_t *bytes);

#endif
