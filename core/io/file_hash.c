/*
 * file_hash.c - SHA-256 of a buffer or of a file, through OpenSSL's EVP (file_hash.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "file_hash.h"

static void to_hex(const unsigned char digest[32], char hex[65])
{
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

loom_status loom_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char digest[32];
    unsigned int n = 0;
    if (EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return loom_error(LOOM_E_INTERNAL, "SHA-256 failed");
    to_hex(digest, hex);
    return LOOM_OK;
}

loom_status loom_file_sha256(const char *path, int follow, char hex[65], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0)
        return loom_error(errno == ENOENT ? LOOM_E_NOT_FOUND : LOOM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return loom_error(LOOM_E_FORMAT, "%s: not a regular file", path);
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const size_t chunk = (size_t)1 << 20;
    unsigned char *buf = malloc(chunk);
    loom_status st = LOOM_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        st = loom_error(LOOM_E_NOMEM, "%s: cannot start a checksum", path);
    uint64_t total = 0;
    while (st == LOOM_OK) {
        ssize_t n = read(fd, buf, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) st = loom_error(LOOM_E_IO, "%s: read failed: %s", path, strerror(errno));
        if (n <= 0) break;
        total += (uint64_t)n;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) st = loom_error(LOOM_E_INTERNAL, "%s: checksum failed", path);
    }
    unsigned char digest[32];
    unsigned int len = 0;
    if (st == LOOM_OK && (EVP_DigestFinal_ex(ctx, digest, &len) != 1 || len != 32))
        st = loom_error(LOOM_E_INTERNAL, "%s: checksum failed", path);
    if (st == LOOM_OK) {
        to_hex(digest, hex);
        *size = total;
    }
    free(buf);
    EVP_MD_CTX_free(ctx);
    close(fd);
    return st;
}
