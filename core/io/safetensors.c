#include "safetensors.h"

#include "error.h"
#include "fileutil.h"
#include "json_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes go to and from the file as they lie in memory; the format is little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

static const struct {
    uint32_t dtype;
    const char *name;
    size_t size;
} dtype_table[] = {
    {LOOM_DTYPE_F32, "F32", 4}, {LOOM_DTYPE_F16, "F16", 2}, {LOOM_DTYPE_BF16, "BF16", 2},
    {LOOM_DTYPE_I32, "I32", 4}, {LOOM_DTYPE_I64, "I64", 8}, {LOOM_DTYPE_U16, "U16", 2},
    {LOOM_DTYPE_U8, "U8", 1},   {LOOM_DTYPE_F64, "F64", 8},
};
#define N_DTYPES (sizeof dtype_table / sizeof dtype_table[0])
#define KNOWN_DTYPES "F32, F16, BF16, I32, I64, U16, U8, F64"
#define METADATA_KEY "__metadata__"

/* JSON numbers are doubles to cJSON: integers above 2^53 cannot be told apart. No real file
 * comes near 8 PiB, so larger values are rejected rather than silently rounded. */
#define MAX_JSON_INT 9007199254740992.0

size_t loom_st_dtype_size(uint32_t dtype)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == dtype)
            return dtype_table[i].size;
    return 0;
}

const char *loom_st_dtype_name(uint32_t dtype)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dtype == dtype)
            return dtype_table[i].name;
    return NULL;
}

static uint32_t dtype_from_name(const char *name)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return dtype_table[i].dtype;
    return LOOM_DTYPE_INVALID;
}

static int is_utf8(const char *s)
{
    return loom__utf8_invalid_at(s, strlen(s)) == strlen(s);
}

/* "[2, 3]" into buf (always NUL-terminated; long shapes are cut, which is fine in a message). */
static const char *format_shape(char *buf, size_t size, const int64_t *shape, uint32_t ndim)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (uint32_t i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* ======================================================================================= */
/* Writing                                                                                 */

static int compare_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static loom_status check_tensor(const char *path, const loom_st_tensor *t, size_t i)
{
    char sbuf[256];
    if (!t->name || !*t->name)
        return loom_error(LOOM_E_INVALID, "%s: tensor %zu has no name", path, i);
    if (!is_utf8(t->name))
        return loom_error(LOOM_E_INVALID, "%s: tensor %zu: name is not valid UTF-8", path, i);
    if (strcmp(t->name, METADATA_KEY) == 0)
        return loom_error(LOOM_E_INVALID, "%s: a tensor cannot be called '" METADATA_KEY "'", path);
    size_t esize = loom_st_dtype_size(t->dtype);
    if (!esize)
        return loom_error(LOOM_E_INVALID,
                          "%s: tensor '%s': dtype %" PRIu32 " cannot be stored (known: " KNOWN_DTYPES ")", path,
                          t->name, t->dtype);
    if (t->ndim > LOOM_MAX_DIMS)
        return loom_error(LOOM_E_INVALID, "%s: tensor '%s' has %" PRIu32 " dimensions, at most %d are supported", path,
                          t->name, t->ndim, LOOM_MAX_DIMS);
    uint64_t bytes = esize;
    for (uint32_t d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || (double)t->shape[d] > MAX_JSON_INT)
            return loom_error(LOOM_E_INVALID, "%s: tensor '%s': shape %s has a dimension outside [0, 2^53]", path,
                              t->name, format_shape(sbuf, sizeof sbuf, t->shape, t->ndim));
        if (__builtin_mul_overflow(bytes, (uint64_t)t->shape[d], &bytes))
            return loom_error(LOOM_E_INVALID, "%s: tensor '%s': shape %s overflows 64 bits of bytes", path,
                              t->name, format_shape(sbuf, sizeof sbuf, t->shape, t->ndim));
    }
    if (bytes != t->nbytes)
        return loom_error(LOOM_E_INVALID,
                          "%s: tensor '%s': shape %s of %s needs %" PRIu64 " bytes, nbytes says %" PRIu64, path,
                          t->name, format_shape(sbuf, sizeof sbuf, t->shape, t->ndim), loom_st_dtype_name(t->dtype),
                          bytes, t->nbytes);
    if (bytes > 0 && !t->data)
        return loom_error(LOOM_E_INVALID, "%s: tensor '%s' has %" PRIu64 " bytes but no data", path, t->name, bytes);
    if (bytes > (uint64_t)SIZE_MAX)
        return loom_error(LOOM_E_INVALID, "%s: tensor '%s' is larger than this machine's address space", path,
                          t->name);
    return LOOM_OK;
}

static loom_status check_names_unique(const char *path, const loom_st_tensor *tensors, size_t n)
{
    if (n < 2)
        return LOOM_OK;
    const char **names = malloc(n * sizeof *names);
    if (!names)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        names[i] = tensors[i].name;
    qsort(names, n, sizeof *names, compare_str_ptr);
    loom_status st = LOOM_OK;
    for (size_t i = 1; i < n && st == LOOM_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            st = loom_error(LOOM_E_INVALID, "%s: two tensors are called '%s'", path, names[i]);
    free(names);
    return st;
}

static cJSON *build_metadata(const char *path, const char *const *metadata, size_t n_pairs, loom_status *st)
{
    cJSON *meta = cJSON_CreateObject();
    if (!meta) {
        *st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    int has_format = 0;
    for (size_t i = 0; i < n_pairs; i++)
        if (metadata[2 * i] && strcmp(metadata[2 * i], "format") == 0)
            has_format = 1;
    if (!has_format && !cJSON_AddStringToObject(meta, "format", "pt"))
        goto nomem;
    for (size_t i = 0; i < n_pairs; i++) {
        const char *key = metadata[2 * i], *value = metadata[2 * i + 1];
        if (!key || !value) {
            *st = loom_error(LOOM_E_INVALID, "%s: metadata pair %zu has a NULL key or value", path, i);
            goto fail;
        }
        if (!is_utf8(key) || !is_utf8(value)) {
            *st = loom_error(LOOM_E_INVALID, "%s: metadata '%s' is not valid UTF-8", path, key);
            goto fail;
        }
        if (cJSON_GetObjectItemCaseSensitive(meta, key)) {
            *st = loom_error(LOOM_E_INVALID, "%s: metadata key '%s' given twice", path, key);
            goto fail;
        }
        if (!cJSON_AddStringToObject(meta, key, value))
            goto nomem;
    }
    return meta;
nomem:
    *st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
fail:
    cJSON_Delete(meta);
    return NULL;
}

/* The JSON header: metadata first, then the tensors in the order given with contiguous
 * offsets. Integers go in as raw text: cJSON would print them through a double. */
static char *build_header(const char *path, const loom_st_tensor *tensors, size_t n, const char *const *metadata,
                          size_t n_pairs, loom_status *st)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        *st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    cJSON *meta = build_metadata(path, metadata, n_pairs, st);
    if (!meta) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddItemToObject(root, METADATA_KEY, meta);

    uint64_t offset = 0;
    char text[LOOM_MAX_DIMS * 22 + 8];
    for (size_t i = 0; i < n; i++) {
        const loom_st_tensor *t = &tensors[i];
        cJSON *obj = cJSON_AddObjectToObject(root, t->name);
        if (!obj || !cJSON_AddStringToObject(obj, "dtype", loom_st_dtype_name(t->dtype)))
            goto nomem;
        size_t used = (size_t)snprintf(text, sizeof text, "[");
        for (uint32_t d = 0; d < t->ndim; d++)
            used += (size_t)snprintf(text + used, sizeof text - used, "%s%" PRId64, d ? "," : "", t->shape[d]);
        snprintf(text + used, sizeof text - used, "]");
        if (!cJSON_AddRawToObject(obj, "shape", text))
            goto nomem;
        uint64_t end;
        if (__builtin_add_overflow(offset, t->nbytes, &end) || (double)end > MAX_JSON_INT) {
            *st = loom_error(LOOM_E_INVALID, "%s: tensors add up to more than 2^53 bytes", path);
            cJSON_Delete(root);
            return NULL;
        }
        snprintf(text, sizeof text, "[%" PRIu64 ",%" PRIu64 "]", offset, end);
        if (!cJSON_AddRawToObject(obj, "data_offsets", text))
            goto nomem;
        offset = end;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        *st = loom_error(LOOM_E_NOMEM, "%s: out of memory printing the header", path);
    return json;
nomem:
    *st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    cJSON_Delete(root);
    return NULL;
}

/* Part 0 is the header and part i + 1 tensor i: the caller's stage sees tensor indices. */
typedef struct tensor_stage {
    loom_part_stage stage;
    void *context;
} tensor_stage;

static loom_status stage_tensor(void *context, size_t part, int done)
{
    const tensor_stage *s = context;
    return part == 0 ? LOOM_OK : s->stage(s->context, part - 1, done);
}

static loom_status write_tensors(const char *path, const loom_st_tensor *tensors, size_t n, const char *const *metadata,
                                 size_t n_metadata_pairs, loom_part_stage stage, void *context);

loom_status loom_safetensors_write(const char *path, const loom_st_tensor *tensors, size_t n,
                                   const char *const *metadata, size_t n_metadata_pairs)
{
    return write_tensors(path, tensors, n, metadata, n_metadata_pairs, NULL, NULL);
}

loom_status loom_safetensors_write_staged(const char *path, const loom_st_tensor *tensors, size_t n,
                                          const char *const *metadata, size_t n_metadata_pairs, loom_part_stage stage,
                                          void *context)
{
    return write_tensors(path, tensors, n, metadata, n_metadata_pairs, stage, context);
}

static loom_status write_tensors(const char *path, const loom_st_tensor *tensors, size_t n, const char *const *metadata,
                                 size_t n_metadata_pairs, loom_part_stage stage, void *context)
{
    if (!path || !*path)
        return loom_error(LOOM_E_INVALID, "safetensors: empty path");
    if (n > 0 && !tensors)
        return loom_error(LOOM_E_INVALID, "%s: %zu tensors but no array", path, n);
    if (n_metadata_pairs > 0 && !metadata)
        return loom_error(LOOM_E_INVALID, "%s: %zu metadata pairs but no array", path, n_metadata_pairs);
    for (size_t i = 0; i < n; i++) {
        loom_status st = check_tensor(path, &tensors[i], i);
        if (st != LOOM_OK)
            return st;
    }
    loom_status st = check_names_unique(path, tensors, n);
    if (st != LOOM_OK)
        return st;

    char *json = build_header(path, tensors, n, metadata, n_metadata_pairs, &st);
    if (!json)
        return st;
    size_t json_len = strlen(json);
    size_t header_len = (json_len + 7) & ~(size_t)7; /* 8 + header_len is then a multiple of 8 */
    uint8_t *header = malloc(8 + header_len);
    loom_file_part *parts = malloc((n + 1) * sizeof *parts);
    if (!header || !parts) {
        st = loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    } else {
        for (int b = 0; b < 8; b++)
            header[b] = (uint8_t)((uint64_t)header_len >> (8 * b));
        memcpy(header + 8, json, json_len);
        memset(header + 8 + json_len, ' ', header_len - json_len);
        size_t np = 0;
        parts[np++] = (loom_file_part){header, 8 + header_len};
        /* Staged, every tensor is a part (an empty one writes nothing), so part i + 1 is tensor i. */
        for (size_t i = 0; i < n; i++)
            if (tensors[i].nbytes > 0 || stage)
                parts[np++] = (loom_file_part){tensors[i].data, (size_t)tensors[i].nbytes};
        tensor_stage s = {stage, context};
        st = stage ? loom_write_file_atomicv_staged(path, parts, np, stage_tensor, &s)
                   : loom_write_file_atomicv(path, parts, np);
    }
    free(parts);
    free(header);
    cJSON_free(json);
    return st;
}

/* ======================================================================================= */
/* Reading                                                                                 */

typedef struct st_entry {
    const char *name; /* points into the cJSON tree */
    uint32_t dtype;
    uint32_t ndim;
    int64_t shape[LOOM_MAX_DIMS];
    uint64_t begin, end;
    size_t header_index; /* tie-break among empty tensors at one offset: keep header order */
} st_entry;

struct loom_safetensors {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *data; /* the data buffer, after the header */
    uint64_t data_len;
    cJSON *root;
    const cJSON *meta;   /* NULL when the file has no __metadata__ */
    size_t n;
    st_entry *entries;   /* data order */
    st_entry **by_name;  /* sorted by strcmp, for find */
};

static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double d = item->valuedouble;
    if (!(d >= 0.0 && d <= MAX_JSON_INT))
        return 0;
    uint64_t v = (uint64_t)d;
    if ((double)v != d)
        return 0;
    *out = v;
    return 1;
}

static loom_status parse_metadata(const char *path, const cJSON *meta)
{
    if (!cJSON_IsObject(meta))
        return loom_error(LOOM_E_FORMAT, "%s: \"" METADATA_KEY "\" is not an object", path);
    for (const cJSON *kv = meta->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return loom_error(LOOM_E_FORMAT, "%s: \"" METADATA_KEY "\" value of '%s' is not a string", path,
                              kv->string);
    return LOOM_OK;
}

static loom_status parse_entry(const char *path, const cJSON *item, st_entry *e)
{
    const char *name = item->string;
    char sbuf[256];
    e->name = name;
    if (!cJSON_IsObject(item))
        return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': entry is not an object", path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': \"dtype\" is missing or not a string", path, name);
    e->dtype = dtype_from_name(dtype->valuestring);
    if (e->dtype == LOOM_DTYPE_INVALID)
        return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': unknown dtype '%s' (loom reads " KNOWN_DTYPES ")", path,
                          name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': \"shape\" is missing or not an array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > LOOM_MAX_DIMS)
        return loom_error(LOOM_E_UNSUPPORTED, "%s: tensor '%s' has %d dimensions, loom supports at most %d", path,
                          name, ndim, LOOM_MAX_DIMS);
    e->ndim = (uint32_t)ndim;
    uint64_t bytes = loom_st_dtype_size(e->dtype);
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name,
                              d);
        e->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(bytes, v, &bytes))
            return loom_error(LOOM_E_FORMAT, "%s: tensor '%s': shape %s overflows 64 bits of bytes", path, name,
                              format_shape(sbuf, sizeof sbuf, e->shape, e->ndim));
    }

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, &e->begin) ||
        !json_uint(offsets->child->next, &e->end))
        return loom_error(LOOM_E_FORMAT,
                          "%s: tensor '%s': \"data_offsets\" is not an array of two non-negative integers", path, name);
    if (e->end < e->begin)
        return loom_error(LOOM_E_FORMAT,
                          "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", path, name,
                          e->begin, e->end);
    if (e->end - e->begin != bytes)
        return loom_error(LOOM_E_FORMAT,
                          "%s: tensor '%s': shape %s of %s needs %" PRIu64 " bytes, data_offsets [%" PRIu64
                          ", %" PRIu64 "] hold %" PRIu64,
                          path, name, format_shape(sbuf, sizeof sbuf, e->shape, e->ndim), dtype->valuestring, bytes,
                          e->begin, e->end, e->end - e->begin);
    return LOOM_OK;
}

static int compare_entry_offsets(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->header_index > y->header_index) - (x->header_index < y->header_index);
}

static int compare_entry_names(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

/* The format wants the tensors to tile the buffer exactly: sorted by offset, each begins where
 * the previous ended, the first at 0 and the last at the end of the file. */
static loom_status check_coverage(const loom_safetensors *st)
{
    const char *path = st->path;
    uint64_t max_end = 0;
    for (size_t i = 0; i < st->n; i++)
        if (st->entries[i].end > max_end)
            max_end = st->entries[i].end;
    if (max_end > st->data_len)
        return loom_error(LOOM_E_FORMAT, "%s: truncated: header says %" PRIu64 " data bytes, file has %" PRIu64, path,
                          max_end, st->data_len);
    uint64_t pos = 0;
    for (size_t i = 0; i < st->n; i++) {
        const st_entry *e = &st->entries[i];
        if (e->begin < pos)
            return loom_error(LOOM_E_FORMAT,
                              "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                              path, st->entries[i - 1].name, st->entries[i - 1].begin, st->entries[i - 1].end, e->name,
                              e->begin, e->end);
        if (e->begin > pos)
            return loom_error(LOOM_E_FORMAT,
                              "%s: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor (gap before '%s')", path,
                              pos, e->begin, e->name);
        pos = e->end;
    }
    if (pos != st->data_len)
        return loom_error(LOOM_E_FORMAT,
                          "%s: data bytes [%" PRIu64 ", %" PRIu64 ") after the last tensor belong to no tensor", path,
                          pos, st->data_len);
    return LOOM_OK;
}

static loom_status parse_header(loom_safetensors *st, const char *header, size_t header_len)
{
    const char *path = st->path;
    if (header_len == 0)
        return loom_error(LOOM_E_FORMAT, "%s: header length is 0", path);
    size_t bad = loom__utf8_invalid_at(header, header_len);
    if (bad != header_len)
        return loom_error(LOOM_E_FORMAT, "%s: header is not valid UTF-8 at byte %zu", path, 8 + bad);
    if (memchr(header, '\0', header_len))
        return loom_error(LOOM_E_FORMAT, "%s: header contains a NUL byte", path);

    const char *end = NULL;
    st->root = cJSON_ParseWithLengthOpts(header, header_len, &end, 0);
    if (!st->root)
        return loom_error(LOOM_E_FORMAT, "%s: header is not valid JSON (error near byte %td)", path,
                          end ? 8 + (end - header) : (ptrdiff_t)8);
    for (const char *p = end; p < header + header_len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return loom_error(LOOM_E_FORMAT, "%s: header has garbage after the JSON at byte %td", path,
                              8 + (p - header));
    if (!cJSON_IsObject(st->root))
        return loom_error(LOOM_E_FORMAT, "%s: header is not a JSON object", path);

    size_t n = 0;
    for (const cJSON *item = st->root->child; item; item = item->next) {
        if (strcmp(item->string, METADATA_KEY) != 0) {
            n++;
            continue;
        }
        if (st->meta)
            return loom_error(LOOM_E_FORMAT, "%s: \"" METADATA_KEY "\" appears twice", path);
        loom_status s = parse_metadata(path, item);
        if (s != LOOM_OK)
            return s;
        st->meta = item;
    }
    st->entries = calloc(n ? n : 1, sizeof *st->entries);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    if (!st->entries || !st->by_name)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory for %zu tensors", path, n);
    st->n = n;
    size_t i = 0;
    for (const cJSON *item = st->root->child; item; item = item->next) {
        if (item == st->meta)
            continue;
        st_entry *e = &st->entries[i];
        e->header_index = i;
        loom_status s = parse_entry(path, item, e);
        if (s != LOOM_OK)
            return s;
        i++;
    }
    if (n > 1)
        qsort(st->entries, n, sizeof *st->entries, compare_entry_offsets);
    for (i = 0; i < n; i++)
        st->by_name[i] = &st->entries[i];
    if (n > 1)
        qsort(st->by_name, n, sizeof *st->by_name, compare_entry_names);
    for (i = 1; i < n; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            return loom_error(LOOM_E_FORMAT, "%s: two tensors are called '%s'", path, st->by_name[i]->name);
    return check_coverage(st);
}

loom_status loom_safetensors_open(const char *path, loom_safetensors **out)
{
    *out = NULL;
    if (!path || !*path)
        return loom_error(LOOM_E_INVALID, "safetensors: empty path");
    loom_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    }
    loom_status s = LOOM_OK;
    /* O_NONBLOCK: a FIFO must reach the regular-file check below, not wait in open(). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat sb;
    if (fd < 0) {
        int err = errno;
        s = loom_error(err == ENOENT ? LOOM_E_NOT_FOUND : LOOM_E_IO, "%s: cannot open: %s", path, strerror(err));
    } else if (fstat(fd, &sb) != 0) {
        s = loom_error(LOOM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        s = loom_error(LOOM_E_IO, "%s: not a regular file (a FIFO, device or folder)", path);
    } else if (sb.st_size < 8) {
        s = loom_error(LOOM_E_FORMAT,
                       "%s: truncated: %jd bytes, a safetensors file starts with an 8-byte header length", path,
                       (intmax_t)sb.st_size);
    } else if ((uintmax_t)sb.st_size > SIZE_MAX) {
        s = loom_error(LOOM_E_IO, "%s: too large to map on this machine", path);
    } else {
        /* MAP_PRIVATE + PROT_READ: tensors are views into the file; nobody writes through them.
         * (Truncating the file while it is open would fault, as with any mapped file.) */
        st->map_len = (size_t)sb.st_size;
        st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (st->map == MAP_FAILED) {
            st->map = NULL;
            s = loom_error(LOOM_E_IO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    if (fd >= 0)
        close(fd);

    if (s == LOOM_OK) {
        const uint8_t *bytes = st->map;
        uint64_t header_len = 0;
        for (int b = 7; b >= 0; b--)
            header_len = (header_len << 8) | bytes[b];
        uint64_t after = (uint64_t)st->map_len - 8;
        if (header_len > after) {
            s = loom_error(LOOM_E_FORMAT,
                           "%s: truncated: header length is %" PRIu64 " bytes, only %" PRIu64
                           " follow the length field",
                           path, header_len, after);
        } else {
            st->data = bytes + 8 + header_len;
            st->data_len = after - header_len;
            s = parse_header(st, (const char *)bytes + 8, (size_t)header_len);
        }
    }
    if (s != LOOM_OK) {
        loom_safetensors_close(st);
        return s;
    }
    *out = st;
    return LOOM_OK;
}

size_t loom_safetensors_count(const loom_safetensors *st) { return st->n; }

const char *loom_safetensors_path(const loom_safetensors *st) { return st->path; }

static void fill_tensor(const loom_safetensors *st, const st_entry *e, loom_st_tensor *out)
{
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    memcpy(out->shape, e->shape, sizeof out->shape);
    out->data = st->data + e->begin;
    out->nbytes = e->end - e->begin;
}

loom_status loom_safetensors_tensor(const loom_safetensors *st, size_t index, loom_st_tensor *out)
{
    if (index >= st->n)
        return loom_error(LOOM_E_INVALID, "%s: tensor index %zu out of range (file has %zu)", st->path, index, st->n);
    fill_tensor(st, &st->entries[index], out);
    return LOOM_OK;
}

loom_status loom_safetensors_find(const loom_safetensors *st, const char *name, loom_st_tensor *out)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) {
            fill_tensor(st, st->by_name[mid], out);
            return LOOM_OK;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return loom_error(LOOM_E_NOT_FOUND, "%s: no tensor '%s'", st->path, name);
}

const char *loom_safetensors_metadata(const loom_safetensors *st, const char *key)
{
    if (!st->meta)
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->meta, key);
    return v ? v->valuestring : NULL;
}

void loom_safetensors_close(loom_safetensors *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_len);
    cJSON_Delete(st->root);
    free(st->entries);
    free(st->by_name);
    free(st->path);
    free(st);
}
