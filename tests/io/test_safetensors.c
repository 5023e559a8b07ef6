/* test_safetensors.c - safetensors round trips, the writer's layout, and one malformed file per
 * defect the reader must catch.
 *
 *   test_safetensors                          the unit tests
 *   test_safetensors --python PYTHON3 SCRIPT  write a known file and have the independent
 *                                             reader SCRIPT check it; exit 77 (skip) when
 *                                             PYTHON3 does not exist
 */
#include "error.h"
#include "fileutil.h"
#include "safetensors.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char base[PATH_MAX];

static const char *at(const char *rel)
{
    static char bufs[4][PATH_MAX];
    static int next = 0;
    char *b = bufs[next++ % 4];
    if (snprintf(b, PATH_MAX, "%s/%s", base, rel) >= PATH_MAX)
        abort(); /* the scratch folder name is short; this cannot happen */
    return b;
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = (v << 8) | p[b];
    return v;
}

static loom_st_tensor tensor(const char *name, uint32_t dtype, uint32_t ndim, const int64_t *shape, const void *data)
{
    loom_st_tensor t = {.name = name, .dtype = dtype, .ndim = ndim, .data = data};
    uint64_t count = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        count *= (uint64_t)shape[i];
    }
    t.nbytes = count * loom_st_dtype_size(dtype);
    return t;
}

/* ------------------------------------------------------------------------------------- */

static float f32_vals[12];
static double f64_vals[5] = {0.1, -2.5, 1e300, -0.0, 3.0};
static int64_t i64_vals[4] = {INT64_MIN, -1, 0, INT64_MAX};
static uint16_t f16_bits[6] = {0x3C00, 0x4000, 0xBC00, 0x7C00, 0x0001, 0x7BFF};
static uint16_t bf16_bits[4] = {0x3F80, 0xC000, 0x7F80, 0x0000};
static int32_t i32_scalar = -123456;
static uint16_t u16_vals[3] = {0, 1, 65535};
static uint8_t u8_vals[7] = {0, 1, 2, 127, 128, 254, 255};

/* The round-trip set: every dtype, a scalar, an empty tensor, an odd byte size. */
static size_t sample_tensors(loom_st_tensor *t)
{
    for (int i = 0; i < 12; i++)
        f32_vals[i] = (float)i * 0.5f - 2.0f;
    static const int64_t s_f32[] = {3, 4}, s_f64[] = {5}, s_i64[] = {2, 2}, s_f16[] = {2, 1, 3}, s_bf16[] = {4},
                         s_u16[] = {3}, s_u8[] = {7}, s_empty[] = {0, 4};
    size_t n = 0;
    t[n++] = tensor("model.embed.weight", LOOM_DTYPE_F32, 2, s_f32, f32_vals);
    t[n++] = tensor("bias", LOOM_DTYPE_F64, 1, s_f64, f64_vals);
    t[n++] = tensor("ids", LOOM_DTYPE_I64, 2, s_i64, i64_vals);
    t[n++] = tensor("half", LOOM_DTYPE_F16, 3, s_f16, f16_bits);
    t[n++] = tensor("brain", LOOM_DTYPE_BF16, 1, s_bf16, bf16_bits);
    t[n++] = tensor("count", LOOM_DTYPE_I32, 0, NULL, &i32_scalar);
    t[n++] = tensor("empty", LOOM_DTYPE_F32, 2, s_empty, NULL);
    t[n++] = tensor("u16", LOOM_DTYPE_U16, 1, s_u16, u16_vals);
    t[n++] = tensor("bytes \xc3\xa9", LOOM_DTYPE_U8, 1, s_u8, u8_vals); /* non-ASCII name */
    return n;
}

static int same_tensor(const loom_st_tensor *a, const loom_st_tensor *b)
{
    if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype || a->ndim != b->ndim || a->nbytes != b->nbytes) return 0;
    for (uint32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0;
}

static void test_round_trip(void)
{
    loom_st_tensor in[16];
    size_t n = sample_tensors(in);
    const char *meta[] = {"step", "100", "note", "caf\xc3\xa9 \"quoted\"\n"};
    const char *path = at("model.safetensors");
    CHECK(loom_safetensors_write(path, in, n, meta, 2) == LOOM_OK);
    CHECK(!exists(at("model.safetensors.tmp")));

    loom_safetensors *st = NULL;
    CHECK(loom_safetensors_open(path, &st) == LOOM_OK);
    if (!st) {
        fprintf(stderr, "open: %s\n", loom_error_message());
        return;
    }
    CHECK(strcmp(loom_safetensors_path(st), path) == 0);
    CHECK(loom_safetensors_count(st) == n);
    for (size_t i = 0; i < n && i < loom_safetensors_count(st); i++) {
        loom_st_tensor got, found;
        CHECK(loom_safetensors_tensor(st, i, &got) == LOOM_OK);
        CHECK(same_tensor(&got, &in[i])); /* index order is the order written */
        CHECK(loom_safetensors_find(st, in[i].name, &found) == LOOM_OK);
        CHECK(same_tensor(&found, &in[i]));
        CHECK(found.data == got.data);
    }
    loom_st_tensor t;
    CHECK(loom_safetensors_tensor(st, n, &t) == LOOM_E_INVALID);
    CHECK(loom_safetensors_find(st, "nope", &t) == LOOM_E_NOT_FOUND);
    CHECK(strstr(loom_error_message(), path) && strstr(loom_error_message(), "'nope'"));

    /* The first four tensors are multiples of 8 bytes, so the first tensors' data is aligned in place. */
    CHECK(loom_safetensors_find(st, "ids", &t) == LOOM_OK && (uintptr_t)t.data % 8 == 0);

    CHECK(loom_safetensors_metadata(st, "format") && strcmp(loom_safetensors_metadata(st, "format"), "pt") == 0);
    CHECK(loom_safetensors_metadata(st, "step") && strcmp(loom_safetensors_metadata(st, "step"), "100") == 0);
    CHECK(loom_safetensors_metadata(st, "note") && strcmp(loom_safetensors_metadata(st, "note"), meta[3]) == 0);
    CHECK(loom_safetensors_metadata(st, "absent") == NULL);
    loom_safetensors_close(st);

    /* The bytes themselves: length field, aligned data start, space padding, exact size. */
    char *raw = NULL;
    size_t len = 0;
    CHECK(loom_read_file(path, &raw, &len) == LOOM_OK);
    if (raw && len >= 8) {
        uint64_t hl = le64((unsigned char *)raw);
        uint64_t data_bytes = 0;
        for (size_t i = 0; i < n; i++)
            data_bytes += in[i].nbytes;
        CHECK((8 + hl) % 8 == 0);
        CHECK(8 + hl + data_bytes == len);
        CHECK(raw[8] == '{');
        CHECK(raw[8 + hl - 1] == '}' || raw[8 + hl - 1] == ' ');
        /* The writer lays tensors out in the order given. */
        CHECK(memcmp(raw + 8 + hl, f32_vals, sizeof f32_vals) == 0);
        CHECK(memcmp(raw + len - sizeof u8_vals, u8_vals, sizeof u8_vals) == 0);
    }
    free(raw);

    /* Writing again replaces the file whole; a caller's own "format" is kept, not doubled. */
    const char *meta2[] = {"format", "np"};
    CHECK(loom_safetensors_write(path, in, 1, meta2, 1) == LOOM_OK);
    CHECK(loom_safetensors_open(path, &st) == LOOM_OK);
    if (st) {
        CHECK(loom_safetensors_count(st) == 1);
        CHECK(loom_safetensors_metadata(st, "format") && strcmp(loom_safetensors_metadata(st, "format"), "np") == 0);
        loom_safetensors_close(st);
    }
    CHECK(loom_read_file(path, &raw, &len) == LOOM_OK);
    const char *first = raw && len > 8 ? strstr(raw + 8, "\"format\"")
                                       : NULL; /* past the length field, whose zero bytes would end the search */
    CHECK(first && strstr(first + 1, "\"format\"") == NULL);
    free(raw);

    /* No tensors at all is a valid file. */
    CHECK(loom_safetensors_write(at("none.safetensors"), NULL, 0, NULL, 0) == LOOM_OK);
    CHECK(loom_safetensors_open(at("none.safetensors"), &st) == LOOM_OK);
    if (st) {
        CHECK(loom_safetensors_count(st) == 0);
        CHECK(loom_safetensors_find(st, "x", &t) == LOOM_E_NOT_FOUND);
        CHECK(strcmp(loom_safetensors_metadata(st, "format"), "pt") == 0);
        loom_safetensors_close(st);
    }
}

/* Every residue of the JSON length mod 8 must come out padded to an aligned data start. */
/* A staged write (ZeRO-3's save): each tensor's bytes are made in its stage call before they are
 * written, the calls come in order (empty tensors too), and the file equals the plain write of
 * the finished bytes; a failing stage stops the write and leaves no file. */
typedef struct stage_log {
    loom_st_tensor *tensors;
    size_t calls, fail_at;
    int in_order;
    unsigned char scratch[16][64];
} stage_log;

static loom_status stage_fill(void *context, size_t i, int done)
{
    stage_log *log = context;
    if (log->calls != 2 * i + (size_t)done) log->in_order = 0;
    log->calls++;
    if (log->calls == log->fail_at) return loom_error(LOOM_E_IO, "stage %zu refused", i);
    unsigned char *bytes = log->scratch[i];
    const size_t n = (size_t)log->tensors[i].nbytes;
    if (!done) /* ready now, garbage after: only what is there at the write counts */
        for (size_t k = 0; k < n && k < sizeof log->scratch[i]; k++)
            bytes[k] = (unsigned char)(7 * i + k);
    else
        memset(bytes, 0xee, n < sizeof log->scratch[i] ? n : sizeof log->scratch[i]);
    return LOOM_OK;
}

static void test_staged(void)
{
    loom_st_tensor in[16], staged[16];
    size_t n = sample_tensors(in);
    stage_log log = {staged, 0, 0, 1, {{0}}};
    for (size_t i = 0; i < n; i++) {
        staged[i] = in[i];
        CHECK(in[i].nbytes <= sizeof log.scratch[i]);
        staged[i].data = log.scratch[i];
        memset(log.scratch[i], 0xee, sizeof log.scratch[i]);
    }
    CHECK(loom_safetensors_write_staged(at("staged.safetensors"), staged, n, NULL, 0, stage_fill, &log) == LOOM_OK);
    CHECK(log.calls == 2 * n && log.in_order);
    unsigned char ready[16][64];
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < (size_t)in[i].nbytes; k++)
            ready[i][k] = (unsigned char)(7 * i + k);
        staged[i].data = ready[i];
    }
    CHECK(loom_safetensors_write(at("plain.safetensors"), staged, n, NULL, 0) == LOOM_OK);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    CHECK(loom_read_file(at("staged.safetensors"), &a, &la) == LOOM_OK);
    CHECK(loom_read_file(at("plain.safetensors"), &b, &lb) == LOOM_OK);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a), free(b);
    for (size_t i = 0; i < n; i++)
        staged[i].data = log.scratch[i];
    log = (stage_log){staged, 0, 5, 1, {{0}}};
    CHECK(loom_safetensors_write_staged(at("failed.safetensors"), staged, n, NULL, 0, stage_fill, &log) == LOOM_E_IO);
    CHECK(strstr(loom_error_message(), "refused") != NULL);
    CHECK(log.calls == 5);
    CHECK(!exists(at("failed.safetensors")) && !exists(at("failed.safetensors.tmp")));
}

static void test_alignment(void)
{
    static const uint8_t byte = 7;
    static const int64_t one[] = {1};
    char name[16];
    for (int k = 1; k <= 8; k++) {
        memset(name, 'a', (size_t)k);
        name[k] = '\0';
        loom_st_tensor t = tensor(name, LOOM_DTYPE_U8, 1, one, &byte);
        const char *path = at("align.safetensors");
        CHECK(loom_safetensors_write(path, &t, 1, NULL, 0) == LOOM_OK);
        char *raw = NULL;
        size_t len = 0;
        CHECK(loom_read_file(path, &raw, &len) == LOOM_OK);
        if (raw && len >= 8) {
            uint64_t hl = le64((unsigned char *)raw);
            CHECK((8 + hl) % 8 == 0);
            CHECK(len == 8 + hl + 1);
            CHECK((unsigned char)raw[len - 1] == byte);
        }
        free(raw);
        loom_safetensors *st = NULL;
        CHECK(loom_safetensors_open(path, &st) == LOOM_OK);
        loom_st_tensor got;
        CHECK(st && loom_safetensors_find(st, name, &got) == LOOM_OK && got.nbytes == 1 &&
              (uintptr_t)got.data % 8 == 0 && *(const uint8_t *)got.data == byte);
        loom_safetensors_close(st);
    }
}

static void test_write_errors(void)
{
    static const float v[4] = {1, 2, 3, 4};
    static const int64_t s4[] = {4}, s3[] = {3}, neg[] = {-4};
    const char *path = at("bad-write.safetensors");
    loom_st_tensor t[2];

    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    t[0].nbytes = 12;
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), path) != NULL);

    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    t[1] = tensor("a", LOOM_DTYPE_F32, 1, s3, v);
    CHECK(loom_safetensors_write(path, t, 2, NULL, 0) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "'a'") != NULL);

    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    t[0].dtype = 99;
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("__metadata__", LOOM_DTYPE_F32, 1, s4, v);
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("", LOOM_DTYPE_F32, 1, s4, v);
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("bad\xff", LOOM_DTYPE_F32, 1, s4, v);
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    t[0].shape[0] = neg[0];
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    static const int64_t beyond_json[] = {(int64_t)1 << 60, 0}; /* empty, but not exact as a JSON number */
    t[0] = tensor("a", LOOM_DTYPE_F32, 2, beyond_json, v);
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    t[0].ndim = 9;
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, NULL);
    CHECK(loom_safetensors_write(path, t, 1, NULL, 0) == LOOM_E_INVALID);
    t[0] = tensor("a", LOOM_DTYPE_F32, 1, s4, v);
    const char *dup_meta[] = {"k", "1", "k", "2"};
    CHECK(loom_safetensors_write(path, t, 1, dup_meta, 2) == LOOM_E_INVALID);
    const char *null_meta[] = {"k", NULL};
    CHECK(loom_safetensors_write(path, t, 1, null_meta, 1) == LOOM_E_INVALID);
    CHECK(!exists(path) && !exists(at("bad-write.safetensors.tmp")));

    CHECK(loom_safetensors_write(at("no/such/dir/x.safetensors"), t, 1, NULL, 0) == LOOM_E_IO);
    CHECK(strstr(loom_error_message(), at("no/such/dir/x.safetensors")) != NULL);
}

/* ------------------------------------------------------------------------------------- */
/* Malformed files, crafted byte by byte.                                                 */

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(data, 1, len, f) == len);
        fclose(f);
    }
}

/* A file with the given header length field, header text and data_len data bytes. */
static void craft(const char *path, uint64_t header_len, const char *header, size_t header_bytes, size_t data_len)
{
    size_t len = 8 + header_bytes + data_len;
    unsigned char *buf = calloc(1, len);
    for (int b = 0; b < 8; b++)
        buf[b] = (unsigned char)(header_len >> (8 * b));
    memcpy(buf + 8, header, header_bytes);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + header_bytes + i] = (unsigned char)i;
    write_bytes(path, buf, len);
    free(buf);
}

static void craft_json(const char *path, const char *json, size_t data_len)
{
    craft(path, strlen(json), json, strlen(json), data_len);
}

/* Open must fail with `code`, a message naming the path and containing `what`. */
#define EXPECT_BAD(code, what)                                                                                         \
    do {                                                                                                               \
        loom_safetensors *st_ = (loom_safetensors *)1;                                                                 \
        loom_status s_ = loom_safetensors_open(path, &st_);                                                            \
        CHECK(s_ == (code));                                                                                           \
        CHECK(st_ == NULL);                                                                                            \
        CHECK(strncmp(loom_error_message(), path, strlen(path)) == 0);                                                 \
        CHECK(strstr(loom_error_message(), (what)) != NULL);                                                           \
        if (s_ != (code) || !strstr(loom_error_message(), (what)))                                                     \
            fprintf(stderr, "  line %d: status %d, message '%s'\n", __LINE__, s_, loom_error_message());               \
        if (s_ == LOOM_OK) loom_safetensors_close(st_);                                                                \
    } while (0)

#define T(name, dtype, shape, b, e)                                                                                    \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed(void)
{
    const char *path = at("bad.safetensors");

    write_bytes(path, "", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "truncated");
    write_bytes(path, "\x10\0\0\0\0", 5);
    EXPECT_BAD(LOOM_E_FORMAT, "truncated");

    craft(path, 5000, "{}", 2, 90);
    EXPECT_BAD(LOOM_E_FORMAT, "truncated: header length is 5000 bytes, only 92 follow");
    craft(path, UINT64_MAX, "{}", 2, 0);
    EXPECT_BAD(LOOM_E_FORMAT, "truncated");
    craft(path, 0, "", 0, 0);
    EXPECT_BAD(LOOM_E_FORMAT, "header length is 0");

    craft_json(path, "{\"a\":{\"dtype\":\"F32\",", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "not valid JSON");
    craft_json(path, "[1,2]", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "not a JSON object");
    craft_json(path, "{} x", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "garbage after the JSON");
    craft_json(path, "{\"a\xff\":{}}", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "UTF-8");
    craft_json(path, "{\"\xed\xa0\x80\":{}}", 0); /* an encoded UTF-16 surrogate */
    EXPECT_BAD(LOOM_E_FORMAT, "UTF-8");
    craft(path, 10, "{\"a\0\":1}  ", 10, 0);
    EXPECT_BAD(LOOM_E_FORMAT, "NUL");

    craft_json(path, "{\"a\":5}", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "tensor 'a': entry is not an object");
    craft_json(path, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"dtype\" is missing");
    craft_json(path, "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"dtype\" is missing or not a string");
    craft_json(path, "{" T("a", "Q7", "[1]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "unknown dtype 'Q7'");
    craft_json(path, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"shape\" is missing");
    craft_json(path, "{" T("a", "F32", "\"1\"", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"shape\" is missing or not an array");
    craft_json(path, "{" T("a", "F32", "[-1]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "shape[0] is not a non-negative integer");
    craft_json(path, "{" T("a", "F32", "[1, 1.5]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "shape[1] is not a non-negative integer");
    craft_json(path, "{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_UNSUPPORTED, "9 dimensions");
    craft_json(path, "{" T("a", "U8", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "overflows");
    craft_json(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"data_offsets\" is not an array of two");
    craft_json(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8);
    EXPECT_BAD(LOOM_E_FORMAT, "\"data_offsets\" is not an array of two");
    craft_json(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"data_offsets\"");
    craft_json(path, "{" T("a", "U8", "[4]", 18014398509481984, 18014398509481988) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "\"data_offsets\"");
    craft_json(path, "{" T("a", "F32", "[1]", 8, 4) "}", 8);
    EXPECT_BAD(LOOM_E_FORMAT, "end before they begin");
    craft_json(path, "{" T("a", "F32", "[2]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "shape [2] of F32 needs 8 bytes, data_offsets [0, 4] hold 4");

    craft_json(path, "{" T("a", "F32", "[1024]", 0, 4096) "}", 1000);
    EXPECT_BAD(LOOM_E_FORMAT, "truncated: header says 4096 data bytes, file has 1000");
    craft_json(path, "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12);
    EXPECT_BAD(LOOM_E_FORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    craft_json(path, "{" T("b", "U8", "[0]", 2, 2) "," T("a", "U8", "[4]", 0, 4) "}", 4);
    EXPECT_BAD(LOOM_E_FORMAT, "overlap"); /* an empty tensor inside another still overlaps it */
    craft_json(path, "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12);
    EXPECT_BAD(LOOM_E_FORMAT, "data bytes [4, 8) belong to no tensor (gap before 'b')");
    craft_json(path, "{" T("a", "F32", "[1]", 4, 8) "}", 8);
    EXPECT_BAD(LOOM_E_FORMAT, "data bytes [0, 4) belong to no tensor");
    craft_json(path, "{" T("a", "F32", "[1]", 0, 4) "}", 8);
    EXPECT_BAD(LOOM_E_FORMAT, "data bytes [4, 8) after the last tensor");
    craft_json(path, "{}", 3);
    EXPECT_BAD(LOOM_E_FORMAT, "data bytes [0, 3) after the last tensor");
    craft_json(path, "{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8);
    EXPECT_BAD(LOOM_E_FORMAT, "two tensors are called 'a'");

    craft_json(path, "{\"__metadata__\":[]}", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "\"__metadata__\" is not an object");
    craft_json(path, "{\"__metadata__\":{\"step\":5}}", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "\"__metadata__\" value of 'step' is not a string");
    craft_json(path, "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
    EXPECT_BAD(LOOM_E_FORMAT, "appears twice");

    const char *missing = at("missing.safetensors");
    loom_safetensors *st = NULL;
    CHECK(loom_safetensors_open(missing, &st) == LOOM_E_NOT_FOUND && st == NULL);
    CHECK(strstr(loom_error_message(), missing) != NULL);
    CHECK(loom_safetensors_open(base, &st) == LOOM_E_IO && st == NULL);
}

/* Files from other writers need not be padded or ordered like ours: an unpadded header, tensors
 * listed out of data order, an empty tensor and extra fields are all valid. */
static void test_foreign_layout(void)
{
    const char *path = at("foreign.safetensors");
    const char *json = "{\"z\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3],\"extra\":true},"
                       "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[3,3]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}\n ";
    craft_json(path, json, 3);
    loom_safetensors *st = NULL;
    CHECK(loom_safetensors_open(path, &st) == LOOM_OK);
    if (!st) {
        fprintf(stderr, "open: %s\n", loom_error_message());
        return;
    }
    CHECK(loom_safetensors_count(st) == 3);
    CHECK(loom_safetensors_metadata(st, "format") == NULL);
    loom_st_tensor t;
    const char *order[] = {"a", "z", "e"}; /* data order */
    for (size_t i = 0; i < 3; i++)
        CHECK(loom_safetensors_tensor(st, i, &t) == LOOM_OK && strcmp(t.name, order[i]) == 0);
    CHECK(loom_safetensors_find(st, "a", &t) == LOOM_OK && t.ndim == 0 && t.nbytes == 1 &&
          *(const uint8_t *)t.data == 0);
    CHECK(loom_safetensors_find(st, "z", &t) == LOOM_OK && t.ndim == 1 && t.shape[0] == 2 &&
          memcmp(t.data, "\x01\x02", 2) == 0);
    CHECK(loom_safetensors_find(st, "e", &t) == LOOM_OK && t.nbytes == 0 && t.shape[0] == 0);
    loom_safetensors_close(st);
}

/* ------------------------------------------------------------------------------------- */
/* The independent Python reader.                                                         */

static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int python_main(const char *python, const char *script)
{
    if (access(python, X_OK) != 0) {
        printf("SKIP: python3 not found ('%s'); the independent reader check did not run\n", python);
        return 77;
    }
    static const float w[6] = {1, 2, 3, 4, 5, 6};
    static const float b[3] = {0.5f, -1.25f, 4.0f};
    static const uint16_t h[2] = {0x3C00, 0x4100};  /* 1.0, 2.5 */
    static const uint16_t bf[2] = {0x3FC0, 0xC000}; /* 1.5, -2.0 */
    static const int64_t i[3] = {10, -20, (int64_t)1 << 40};
    static const uint8_t u[5] = {1, 2, 3, 4, 5};
    static const double d[2] = {0.25, -8.0};
    static const int32_t s = 7;
    static const uint16_t k[2] = {1000, 65535};
    static const int64_t s23[] = {2, 3}, s3[] = {3}, s2[] = {2}, s5[] = {5}, s0[] = {0};
    loom_st_tensor t[] = {
        tensor("w", LOOM_DTYPE_F32, 2, s23, w), tensor("b", LOOM_DTYPE_F32, 1, s3, b),
        tensor("h", LOOM_DTYPE_F16, 1, s2, h),  tensor("bf", LOOM_DTYPE_BF16, 1, s2, bf),
        tensor("i", LOOM_DTYPE_I64, 1, s3, i),  tensor("u", LOOM_DTYPE_U8, 1, s5, u),
        tensor("d", LOOM_DTYPE_F64, 1, s2, d),  tensor("s", LOOM_DTYPE_I32, 0, NULL, &s),
        tensor("k", LOOM_DTYPE_U16, 1, s2, k),  tensor("layer.0:none", LOOM_DTYPE_F32, 1, s0, NULL),
    };
    const char *meta[] = {"step", "42", "who", "loom"};
    const char *path = at("python.safetensors");
    CHECK(loom_safetensors_write(path, t, sizeof t / sizeof t[0], meta, 2) == LOOM_OK);

    char *good[] = {(char *)python,
                    (char *)script,
                    "--check",
                    (char *)path,
                    "--expect",
                    "w:F32:2x3:21",
                    "--expect",
                    "b:F32:3:3.25",
                    "--expect",
                    "h:F16:2:3.5",
                    "--expect",
                    "bf:BF16:2:-0.5",
                    "--expect",
                    "i:I64:3:1099511627766",
                    "--expect",
                    "u:U8:5:15",
                    "--expect",
                    "d:F64:2:-7.75",
                    "--expect",
                    "s:I32::7",
                    "--expect",
                    "k:U16:2:66535",
                    "--expect",
                    "layer.0:none:F32:0:0",
                    "--meta",
                    "format=pt",
                    "--meta",
                    "step=42",
                    "--meta",
                    "who=loom",
                    NULL};
    enum { N_ARGS = sizeof good / sizeof good[0], W_AT = 5, LAYER_AT = 23, STEP_AT = 27 };
    CHECK(strcmp(good[W_AT], "w:F32:2x3:21") == 0 && strcmp(good[STEP_AT], "step=42") == 0 &&
          strcmp(good[LAYER_AT], "layer.0:none:F32:0:0") == 0);
    CHECK(run(good) == 0);

    /* The checker must be able to fail, or its passing proves nothing: one wrong fact each. */
    static const struct {
        int at;
        const char *value;
    } wrong[] = {{W_AT, "w:F32:2x3:22"},
                 {W_AT, "w:F32:3x2:21"},
                 {W_AT, "w:F16:2x3:21"},
                 {LAYER_AT, "ghost:F32:0:0"},
                 {STEP_AT, "step=41"}};
    for (size_t c = 0; c < sizeof wrong / sizeof wrong[0]; c++) {
        char *args[N_ARGS];
        memcpy(args, good, sizeof args);
        args[wrong[c].at] = (char *)wrong[c].value;
        CHECK(run(args) == 1);
    }
    craft_json(at("broken.safetensors"), "{" T("a", "F32", "[1]", 0, 4) "}", 8);
    char *broken[] = {(char *)python, (char *)script, (char *)at("broken.safetensors"), NULL};
    CHECK(run(broken) == 1);
    return 0;
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/loom-safetensors-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        fprintf(stderr, "cannot create a scratch folder under %s: %s\n", tmp ? tmp : "/tmp", strerror(errno));
        return 1;
    }
    const char *name = "test_safetensors";
    if (argc == 4 && strcmp(argv[1], "--python") == 0) {
        name = "test_safetensors --python";
        if (python_main(argv[2], argv[3]) == 77) {
            loom_remove_tree(base);
            return 77;
        }
    } else if (argc == 1) {
        test_round_trip();
        test_staged();
        test_alignment();
        test_write_errors();
        test_malformed();
        test_foreign_layout();
    } else {
        fprintf(stderr, "usage: %s [--python PYTHON3 SCRIPT]\n", argv[0]);
        return 2;
    }
    CHECK(loom_remove_tree(base) == LOOM_OK);
    return test_finish(name);
}
