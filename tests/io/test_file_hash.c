/* test_file_hash.c - SHA-256 against FIPS 180-2's published values, and a file's checksum
 * against the buffer's for lengths that cross OpenSSL's 64-byte blocks and loom's 1 MiB reads. */
#include "error.h"
#include "file_hash.h"
#include "fileutil.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    static const struct {
        const char *text, *hex;
    } known[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        CHECK(loom_sha256_hex(known[i].text, strlen(known[i].text), hex) == LOOM_OK);
        CHECK(strcmp(hex, known[i].hex) == 0);
    }

    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX], path[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/loom-hash-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cannot create a scratch folder: %s\n", strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/data.bin", dir);
    const size_t big = ((size_t)1 << 20) + 77;
    unsigned char *bytes = malloc(big);
    CHECK(bytes != NULL);
    if (!bytes) return test_finish("test_file_hash");
    for (size_t i = 0; i < big; i++) bytes[i] = (unsigned char)(i * 37 + 11);
    const size_t lengths[] = {0, 1, 55, 56, 63, 64, 65, 100, ((size_t)1 << 20) - 1, (size_t)1 << 20, big};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
        char want[65];
        uint64_t size = 1;
        CHECK(loom_write_file_atomic(path, bytes, lengths[k]) == LOOM_OK);
        CHECK(loom_file_sha256(path, 0, hex, &size) == LOOM_OK);
        CHECK(loom_sha256_hex(bytes, lengths[k], want) == LOOM_OK);
        CHECK(strcmp(hex, want) == 0 && size == lengths[k]);
    }
    free(bytes);
    uint64_t size;
    unlink(path);
    CHECK(loom_file_sha256(path, 0, hex, &size) == LOOM_E_NOT_FOUND);
    CHECK(strstr(loom_error_message(), "data.bin: cannot open") != NULL);
    CHECK(loom_remove_tree(dir) == LOOM_OK);
    return test_finish("test_file_hash");
}
