/*
 * data_tokens.c - llm.c token shards and the token dataset (see data_tokens.h).
 */
#include "data_tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byte_order.h"
#include "error.h"
#include "fileutil.h"

/* ---- writing ------------------------------------------------------------------------------ */

loom_status loom_tokens_write(const char *path, const uint16_t *tokens, uint64_t n)
{
    if (n > INT32_MAX)
        return loom_error(LOOM_E_INVALID, "%s: %llu tokens do not fit one llm.c shard (at most %d)", path,
                          (unsigned long long)n, INT32_MAX);
    if (n && !tokens) return loom_error(LOOM_E_INVALID, "%s: tokens is NULL", path);
    unsigned char header[LOOM_TOKENS_HEADER_BYTES] = {0};
    loom_put_le32(header, LOOM_TOKENS_MAGIC);
    loom_put_le32(header + 4, LOOM_TOKENS_VERSION);
    loom_put_le32(header + 8, (uint32_t)n);
    loom_file_part parts[2] = {{header, sizeof header}, {tokens, (size_t)n * 2}};
    if (loom_host_is_little_endian()) return loom_write_file_atomicv(path, parts, n ? 2 : 1);
    unsigned char *swapped = malloc(n ? (size_t)n * 2 : 1);
    if (!swapped) return loom_error(LOOM_E_NOMEM, "%s: out of memory for %llu tokens", path, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++)
        swapped[2 * i] = (unsigned char)tokens[i], swapped[2 * i + 1] = (unsigned char)(tokens[i] >> 8);
    parts[1].data = swapped;
    loom_status st = loom_write_file_atomicv(path, parts, n ? 2 : 1);
    free(swapped);
    return st;
}

/* ---- the dataset --------------------------------------------------------------------------- */

typedef struct shard {
    char *path;
    void *map;          /* the whole file, PROT_READ */
    size_t map_len;
    const unsigned char *tokens; /* map + 1024: n little-endian uint16 */
    int64_t n_tokens;
    int64_t first_example; /* global index of this shard's example 0 */
    int64_t n_examples;
} shard;

typedef struct token_context {
    shard *shards;
    size_t n_shards;
    int64_t block_size;
    int64_t n_tokens;
} token_context;

static void token_destroy(loom_dataset *self)
{
    if (!self) return;
    token_context *c = self->context;
    if (c) {
        for (size_t i = 0; i < c->n_shards; i++) {
            if (c->shards[i].map) munmap(c->shards[i].map, c->shards[i].map_len);
            free(c->shards[i].path);
        }
        free(c->shards);
        free(c);
    }
    free(self);
}

static loom_status token_fill(const loom_dataset *self, const int64_t *indices, int64_t n, void *inputs,
                              int32_t *labels, int64_t *n_targets)
{
    const token_context *c = self->context;
    const int64_t bs = c->block_size;
    int32_t *in = inputs;
    const int little = loom_host_is_little_endian();
    for (int64_t k = 0; k < n; k++) {
        const int64_t idx = indices[k];
        if (idx < 0 || idx >= self->n_examples)
            return loom_error(LOOM_E_INVALID, "token dataset: example %lld out of range [0, %lld)", (long long)idx,
                              (long long)self->n_examples);
        /* The last shard whose first example is <= idx. */
        size_t lo = 0, hi = c->n_shards;
        while (hi - lo > 1) {
            const size_t mid = lo + (hi - lo) / 2;
            if (c->shards[mid].first_example <= idx) lo = mid;
            else hi = mid;
        }
        const shard *s = &c->shards[lo];
        const int64_t start = (idx - s->first_example) * bs;
        const unsigned char *t = s->tokens + 2 * start;
        int32_t *x = in + k * bs, *y = labels + k * bs;
        int32_t top = 0;
        if (little) {
            const uint16_t *u = (const uint16_t *)(const void *)t; /* 1024-byte offset: aligned */
            for (int64_t i = 0; i < bs; i++) {
                x[i] = u[i];
                y[i] = u[i + 1];
                top = x[i] > top ? x[i] : top;
            }
        } else {
            for (int64_t i = 0; i < bs; i++) {
                x[i] = t[2 * i] | t[2 * i + 1] << 8;
                y[i] = t[2 * i + 2] | t[2 * i + 3] << 8;
                top = x[i] > top ? x[i] : top;
            }
        }
        top = y[bs - 1] > top ? y[bs - 1] : top;
        if (self->vocab_limit > 0 && top >= self->vocab_limit) {
            int64_t i = 0;
            while (i < bs && x[i] < self->vocab_limit)
                i++;
            const int32_t id = i < bs ? x[i] : y[bs - 1];
            return loom_error(LOOM_E_FORMAT,
                              "%s: token id %d at token %lld is outside the model's vocabulary [0, %lld) "
                              "(tokenized for another model?)",
                              s->path, (int)id, (long long)(start + i), (long long)self->vocab_limit);
        }
    }
    if (n_targets) *n_targets = n * bs;
    return LOOM_OK;
}

static int has_glob_magic(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* `path` with each glob(3) special character backslash-escaped, so it matches only itself;
 * malloc'd, NULL when out of memory. */
static char *glob_escape(const char *path)
{
    char *out = malloc(2 * strlen(path) + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = path; *p; p++) {
        if (strchr("*?[\\", *p)) *o++ = '\\';
        *o++ = *p;
    }
    *o = '\0';
    return out;
}

int loom_data_glob(const char *pattern, int flags, glob_t *g)
{
    struct stat sb;
    /* A file that exists under this very name ("c[1].bin") is meant as is: taken as a pattern
     * it would match other files, or none. */
    if (!has_glob_magic(pattern) || stat(pattern, &sb) != 0) return glob(pattern, flags, NULL, g);
    char *escaped = glob_escape(pattern);
    if (!escaped) return GLOB_NOSPACE;
    int rc = glob(escaped, flags, NULL, g);
    free(escaped);
    return rc;
}

/* Map and validate one shard. */
static loom_status open_shard(const char *path, shard *s)
{
    /* O_NONBLOCK: a FIFO must reach the regular-file check below, not wait in open(). */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return loom_error(errno == ENOENT ? LOOM_E_NOT_FOUND : LOOM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    loom_status st = LOOM_OK;
    if (fstat(fd, &sb) != 0) {
        st = loom_error(LOOM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = loom_error(LOOM_E_IO, "%s: not a regular file (a FIFO, device or folder)", path);
        goto done;
    }
    const uint64_t size = (uint64_t)sb.st_size;
    unsigned char hdr[12];
    const size_t have = size < sizeof hdr ? (size_t)size : sizeof hdr;
    if (have && pread(fd, hdr, have, 0) != (ssize_t)have) {
        st = loom_error(LOOM_E_IO, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    if (have < 4 || loom_get_le32(hdr) != LOOM_TOKENS_MAGIC) {
        st = size == 0 ? loom_error(LOOM_E_FORMAT, "%s: empty file, not an llm.c token shard", path)
                       : loom_error(LOOM_E_FORMAT, "%s: not an llm.c token shard (bad magic)", path);
        goto done;
    }
    if (size < LOOM_TOKENS_HEADER_BYTES) {
        st = loom_error(LOOM_E_FORMAT, "%s: truncated: %llu bytes, shorter than the %d-byte header", path,
                        (unsigned long long)size, LOOM_TOKENS_HEADER_BYTES);
        goto done;
    }
    const int32_t version = (int32_t)loom_get_le32(hdr + 4), count = (int32_t)loom_get_le32(hdr + 8);
    if (version != LOOM_TOKENS_VERSION) {
        st = loom_error(LOOM_E_FORMAT, "%s: unsupported llm.c shard version %d (loom reads version %d: uint16 tokens)",
                        path, version, LOOM_TOKENS_VERSION);
        goto done;
    }
    const uint64_t held = (size - LOOM_TOKENS_HEADER_BYTES) / 2;
    if (count < 0) {
        st = loom_error(LOOM_E_FORMAT, "%s: header says %d tokens", path, count);
        goto done;
    }
    if ((uint64_t)count > held || (size - LOOM_TOKENS_HEADER_BYTES) % 2 != 0) {
        if ((uint64_t)count > held)
            st = loom_error(LOOM_E_FORMAT, "%s: truncated: header says %d tokens, file holds %llu", path, count,
                            (unsigned long long)held);
        else
            st = loom_error(LOOM_E_FORMAT, "%s: odd number of token bytes (%llu) after the header", path,
                            (unsigned long long)(size - LOOM_TOKENS_HEADER_BYTES));
        goto done;
    }
    if ((uint64_t)count < held) {
        st = loom_error(LOOM_E_FORMAT, "%s: header says %d tokens, file holds %llu (trailing data)", path, count,
                        (unsigned long long)held);
        goto done;
    }
    if (count == 0) {
        st = loom_error(LOOM_E_FORMAT, "%s: empty shard (0 tokens)", path);
        goto done;
    }
    if (size > SIZE_MAX) {
        st = loom_error(LOOM_E_IO, "%s: too large to map", path);
        goto done;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = loom_error(LOOM_E_IO, "%s: cannot mmap %llu bytes: %s", path, (unsigned long long)size, strerror(errno));
        goto done;
    }
    /* Examples are drawn in shuffled order: read-ahead would mostly fetch pages not needed yet. */
    (void)madvise(map, (size_t)size, MADV_RANDOM);
    s->map = map;
    s->map_len = (size_t)size;
    s->tokens = (const unsigned char *)map + LOOM_TOKENS_HEADER_BYTES;
    s->n_tokens = count;
done:
    close(fd);
    return st;
}

loom_status loom_token_dataset_open(const char *pattern, int64_t block_size, loom_dataset **out)
{
    *out = NULL;
    if (!pattern || !*pattern) return loom_error(LOOM_E_INVALID, "token dataset: no file or pattern given");
    if (block_size < 1 || block_size > INT32_MAX)
        return loom_error(LOOM_E_INVALID, "%s: block_size must be in [1, %d], got %lld", pattern, INT32_MAX,
                          (long long)block_size);
    glob_t g;
    memset(&g, 0, sizeof g);
    const int grc = loom_data_glob(pattern, GLOB_ERR, &g);
    if (grc != 0) {
        globfree(&g);
        if (grc == GLOB_NOMATCH)
            return has_glob_magic(pattern)
                       ? loom_error(LOOM_E_NOT_FOUND, "%s: no file matches this pattern", pattern)
                       : loom_error(LOOM_E_NOT_FOUND, "%s: no such file", pattern);
        return loom_error(grc == GLOB_NOSPACE ? LOOM_E_NOMEM : LOOM_E_IO, "%s: cannot expand the pattern (%s)", pattern,
                          grc == GLOB_NOSPACE ? "out of memory" : "read error");
    }
    loom_dataset *ds = calloc(1, sizeof *ds);
    token_context *c = calloc(1, sizeof *c);
    shard *shards = calloc(g.gl_pathc, sizeof *shards);
    if (!ds || !c || !shards) {
        free(ds);
        free(c);
        free(shards);
        globfree(&g);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", pattern);
    }
    ds->context = c;
    ds->destroy = token_destroy;
    ds->fill = token_fill;
    c->shards = shards;
    c->block_size = block_size;
    loom_status st = LOOM_OK;
    int64_t total = 0;
    for (size_t i = 0; i < g.gl_pathc && st == LOOM_OK; i++) {
        shard *s = &shards[i];
        c->n_shards = i + 1; /* so destroy frees what is opened so far */
        s->path = strdup(g.gl_pathv[i]);
        if (!s->path) st = loom_error(LOOM_E_NOMEM, "%s: out of memory", pattern);
        else st = open_shard(s->path, s);
        if (st != LOOM_OK) break;
        s->first_example = total;
        s->n_examples = (s->n_tokens - 1) / block_size;
        total += s->n_examples;
        c->n_tokens += s->n_tokens;
    }
    globfree(&g);
    if (st == LOOM_OK && total == 0)
        st = loom_error(LOOM_E_FORMAT, "%s: no example: no shard holds block_size + 1 = %lld tokens", pattern,
                        (long long)block_size + 1);
    if (st != LOOM_OK) {
        token_destroy(ds);
        return st;
    }
    ds->n_examples = total;
    ds->input_dtype = LOOM_DTYPE_I32;
    ds->input_ndim = 1;
    ds->input_shape[0] = block_size;
    ds->labels_per_example = block_size;
    ds->n_classes = 0;
    ds->n_features = 0;
    *out = ds;
    return LOOM_OK;
}

int64_t loom_token_dataset_tokens(const loom_dataset *ds, int64_t *n_shards)
{
    if (n_shards) *n_shards = 0;
    if (!ds || ds->fill != token_fill) return 0;
    const token_context *c = ds->context;
    if (n_shards) *n_shards = (int64_t)c->n_shards;
    return c->n_tokens;
}
