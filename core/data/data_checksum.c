/*
 * data_checksum.c - the checksum of a data file or of the token shards a pattern matches
 * (data_checksum.h).
 */
#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "byte_order.h"
#include "data_checksum.h"
#include "data_tokens.h"
#include "error.h"
#include "file_hash.h"

loom_status loom_data_checksum(const char *pattern, uint64_t *hash, uint64_t *bytes, size_t *files)
{
    glob_t g;
    memset(&g, 0, sizeof g);
    /* GLOB_NOCHECK: a classification or seq2seq file is a name, not a pattern. */
    const int grc = loom_data_glob(pattern, GLOB_ERR | GLOB_NOCHECK, &g);
    if (grc != 0) {
        globfree(&g);
        return loom_error(grc == GLOB_NOSPACE ? LOOM_E_NOMEM : LOOM_E_IO, "%s: cannot expand the pattern", pattern);
    }
    unsigned char *each = calloc(g.gl_pathc ? g.gl_pathc : 1, 8);
    loom_status st = each ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory");
    *bytes = 0;
    for (size_t i = 0; i < g.gl_pathc && st == LOOM_OK; i++) {
        uint64_t h = 0, n = 0;
        if ((st = loom_file_xxh64(g.gl_pathv[i], &h, &n)) != LOOM_OK) break;
        loom_put_le64(each + 8 * i, h);
        *bytes += n;
    }
    if (st == LOOM_OK) {
        /* One file: its own XXH64, which xxhsum shows. */
        *hash = g.gl_pathc == 1 ? loom_get_le64(each) : loom_xxh64(each, 8 * g.gl_pathc);
        *files = g.gl_pathc;
    }
    free(each);
    globfree(&g);
    return st;
}
