/*
 * data_checksum.c - the checksum of a data file or of the token shards a pattern matches
 * (data_checksum.h).
 */
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "data_checksum.h"
#include "data_tokens.h"
#include "error.h"
#include "file_hash.h"

loom_status loom_data_checksum(const char *pattern, char hex[65], uint64_t *bytes, size_t *files)
{
    glob_t g;
    memset(&g, 0, sizeof g);
    /* GLOB_NOCHECK: a classification or seq2seq file is a name, not a pattern. */
    const int grc = loom_data_glob(pattern, GLOB_ERR | GLOB_NOCHECK, &g);
    if (grc != 0) {
        globfree(&g);
        return loom_error(grc == GLOB_NOSPACE ? LOOM_E_NOMEM : LOOM_E_IO, "%s: cannot expand the pattern", pattern);
    }
    char *each = calloc(g.gl_pathc ? g.gl_pathc : 1, 64);
    loom_status st = each ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory");
    *bytes = 0;
    for (size_t i = 0; i < g.gl_pathc && st == LOOM_OK; i++) {
        char one[65];
        uint64_t n = 0;
        if ((st = loom_file_sha256(g.gl_pathv[i], 1, one, &n)) != LOOM_OK) break;
        memcpy(each + 64 * i, one, 64);
        *bytes += n;
    }
    if (st == LOOM_OK) {
        /* One file: its own SHA-256, which sha256sum shows. */
        if (g.gl_pathc == 1) {
            memcpy(hex, each, 64);
            hex[64] = '\0';
        } else {
            st = loom_sha256_hex(each, 64 * g.gl_pathc, hex);
        }
        *files = g.gl_pathc;
    }
    free(each);
    globfree(&g);
    return st;
}
