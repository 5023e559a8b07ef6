/* test_file_hash.c - XXH64 against the reference implementation's published values (xxHash's
 * README and the Python binding's), and a file's checksum against the buffer's: every length
 * from 0 to 100 bytes crosses each tail path (the 32-byte stripes, 8-, 4- and 1-byte tails). */
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
        const char *text;
        uint64_t hash;
    } known[] = {
        {"", 0xEF46DB3751D8E999ull},
        {"a", 0xD24EC4F1A98C6E5Bull},
        {"abc", 0x44BC2CF5AD770999ull},
        {"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1ull},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        CHECK(loom_xxh64(known[i].text, strlen(known[i].text)) == known[i].hash);

    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX], path[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/loom-hash-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "cannot create a scratch folder: %s\n", strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/data.bin", dir);
    unsigned char bytes[100];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof bytes; n++) {
        uint64_t hash = 0, size = 1;
        CHECK(loom_write_file_atomic(path, bytes, n) == LOOM_OK);
        CHECK(loom_file_xxh64(path, &hash, &size) == LOOM_OK);
        CHECK(hash == loom_xxh64(bytes, n) && size == n);
    }
    uint64_t hash, size;
    unlink(path);
    CHECK(loom_file_xxh64(path, &hash, &size) == LOOM_E_IO);
    CHECK(strstr(loom_error_message(), "data.bin: cannot open") != NULL);
    CHECK(loom_remove_tree(dir) == LOOM_OK);
    return test_finish("test_file_hash");
}
