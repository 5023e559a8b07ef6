/*
 * file_hash.c - XXH64 (the xxHash specification, doc/xxhash_spec.md: 64-bit variant, seed 0) and
 * the checksum of a whole file through it (file_hash.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byte_order.h"
#include "error.h"
#include "file_hash.h"

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static uint64_t rotl(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

static uint64_t round64(uint64_t acc, uint64_t lane)
{
    return rotl(acc + lane * P2, 31) * P1;
}

static uint64_t merge(uint64_t acc, uint64_t v)
{
    return (acc ^ round64(0, v)) * P1 + P4;
}

uint64_t loom_xxh64(const void *data, size_t len)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = 0 - P1;
        for (; end - p >= 32; p += 32) {
            v1 = round64(v1, loom_get_le64(p));
            v2 = round64(v2, loom_get_le64(p + 8));
            v3 = round64(v3, loom_get_le64(p + 16));
            v4 = round64(v4, loom_get_le64(p + 24));
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = merge(merge(merge(merge(h, v1), v2), v3), v4);
    } else {
        h = P5;
    }
    h += (uint64_t)len;
    for (; end - p >= 8; p += 8)
        h = rotl(h ^ round64(0, loom_get_le64(p)), 27) * P1 + P4;
    if (end - p >= 4) {
        h = rotl(h ^ (uint64_t)loom_get_le32(p) * P1, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++)
        h = rotl(h ^ *p * P5, 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    return h ^ h >> 32;
}

loom_status loom_file_xxh64(const char *path, uint64_t *hash, uint64_t *bytes)
{
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return loom_error(LOOM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    loom_status st = LOOM_OK;
    if (fstat(fd, &sb) != 0) {
        st = loom_error(LOOM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (sb.st_size == 0) {
        *hash = loom_xxh64("", 0), *bytes = 0;
    } else {
        void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st = loom_error(LOOM_E_IO, "%s: cannot map: %s", path, strerror(errno));
        } else {
            /* One pass front to back: let the kernel read ahead. */
            madvise(map, (size_t)sb.st_size, MADV_SEQUENTIAL);
            *hash = loom_xxh64(map, (size_t)sb.st_size);
            *bytes = (uint64_t)sb.st_size;
            munmap(map, (size_t)sb.st_size);
        }
    }
    close(fd);
    return st;
}
