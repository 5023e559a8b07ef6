/*
 * test_tokenizer_chars.c - the character / whitespace vocabulary (core/data/tokenizer_chars.h):
 * ids in byte order after T5's specials, UTF-8 characters, whitespace tokens, a saved file that
 * loads back the same, decode(encode(x)) == x, unknown symbols, and malformed files named.
 */
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "test_util.h"
#include "tokenizer_chars.h"

#define CONTAINS(hay, needle) (strstr((hay), (needle)) != NULL)

static loom_chars *build(void)
{
    loom_chars *v = NULL;
    CHECK(loom_chars_new(LOOM_SPLIT_CHAR, LOOM_SPLIT_SPACE, &v) == LOOM_OK);
    const char *src[] = {"read", "café", "a-b"}, *tgt[] = {"R EH1 D", "K AE0  F\tEY1", "EY1"};
    for (int i = 0; i < 3; i++) {
        CHECK(loom_chars_add(v, LOOM_SIDE_SOURCE, src[i], strlen(src[i])) == LOOM_OK);
        CHECK(loom_chars_add(v, LOOM_SIDE_TARGET, tgt[i], strlen(tgt[i])) == LOOM_OK);
    }
    CHECK(loom_chars_finish(v) == LOOM_OK);
    return v;
}

static void test_ids_and_round_trip(void)
{
    loom_chars *v = build();
    /* <pad> </s> <unk>, then byte order: - A0.. ; letters; "é" (0xC3 0xA9) last */
    const char *expect[] = {"<pad>", "</s>", "<unk>", "-", "AE0", "D", "EH1", "EY1", "F",       "K",
                            "R",     "a",    "b",     "c", "d",   "e", "f",   "r",   "\xc3\xa9"};
    CHECK(loom_chars_size(v) == 19);
    for (int i = 0; i < 19; i++)
        CHECK(loom_chars_token(v, i) && !strcmp(loom_chars_token(v, i), expect[i]));
    CHECK(loom_chars_token(v, 19) == NULL);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(loom_chars_encode(v, LOOM_SIDE_SOURCE, "café", strlen("café"), &ids, &n) == LOOM_OK);
    CHECK(n == 4 && ids[0] == 13 && ids[1] == 11 && ids[2] == 16 && ids[3] == 18);
    char *text = NULL;
    size_t len = 0;
    CHECK(loom_chars_decode(v, LOOM_SIDE_SOURCE, ids, n, &text, &len) == LOOM_OK);
    CHECK(text && !strcmp(text, "café") && len == strlen("café"));
    free(text);
    free(ids);
    CHECK(loom_chars_encode(v, LOOM_SIDE_TARGET, " K AE0\nF  ", 10, &ids, &n) == LOOM_OK);
    CHECK(n == 3 && ids[0] == 9 && ids[1] == 4 && ids[2] == 8);
    int32_t with_eos[] = {9, 4, 8, 1, 0, 0};
    CHECK(loom_chars_decode(v, LOOM_SIDE_TARGET, with_eos, 6, &text, &len) == LOOM_OK);
    CHECK(text && !strcmp(text, "K AE0 F"));
    free(text);
    free(ids);
    /* unknown symbols are -1, and their spelling is found */
    CHECK(loom_chars_encode(v, LOOM_SIDE_SOURCE, "rxé", strlen("rxé"), &ids, &n) == LOOM_OK);
    CHECK(n == 3 && ids[0] == 17 && ids[1] == -1 && ids[2] == 18);
    const char *at = NULL;
    size_t size = 0;
    loom_chars_symbol_at(v, LOOM_SIDE_SOURCE, "rxé", strlen("rxé"), 2, &at, &size);
    CHECK(size == 2 && !memcmp(at, "é", 2));
    free(ids);
    int32_t bad = 19;
    CHECK(loom_chars_decode(v, LOOM_SIDE_SOURCE, &bad, 1, &text, &len) == LOOM_E_INVALID);
    /* a symbol spelled like a special token */
    CHECK(loom_chars_add(v, LOOM_SIDE_TARGET, "x </s>", 6) == LOOM_E_INVALID);
    CHECK(CONTAINS(loom_error_message(), "\"</s>\" is reserved"));
    /* an invalid UTF-8 byte is a symbol of its own, not a crash */
    CHECK(loom_chars_encode(v, LOOM_SIDE_SOURCE, "a\xff", 2, &ids, &n) == LOOM_OK && n == 2 && ids[1] == -1);
    free(ids);
    loom_chars_free(v);
}

static void test_file_round_trip_and_errors(void)
{
    loom_chars *v = build(), *w = NULL;
    char path[] = "/tmp/loom_chars_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(loom_chars_save(v, path) == LOOM_OK);
    CHECK(loom_chars_load(path, &w) == LOOM_OK);
    CHECK(w && loom_chars_size(w) == loom_chars_size(v));
    for (int32_t i = 0; w && i < loom_chars_size(v); i++)
        CHECK(!strcmp(loom_chars_token(v, i), loom_chars_token(w, i)));
    CHECK(w && loom_chars_split(w, LOOM_SIDE_SOURCE) == LOOM_SPLIT_CHAR);
    CHECK(w && loom_chars_split(w, LOOM_SIDE_TARGET) == LOOM_SPLIT_SPACE);
    loom_chars_free(w);
    loom_chars_free(v);
    unlink(path);
    const char *bad[][2] = {
        {"{\"tokens\": [\"<pad>\", \"</s>\", \"<unk>\"]}", "not a character vocabulary"},
        {"{\"format\": \"loom-char-vocab\", \"source_split\": \"char\", \"target_split\": \"word\", \"tokens\": "
         "[\"<pad>\", \"</s>\", \"<unk>\"]}",
         "not a character vocabulary"},
        {"{\"format\": \"loom-char-vocab\", \"source_split\": \"char\", \"target_split\": \"char\", \"tokens\": "
         "[\"<pad>\", \"<unk>\", \"</s>\"]}",
         "token 1 must be \"</s>\""},
        {"{\"format\": \"loom-char-vocab\", \"source_split\": \"char\", \"target_split\": \"char\", \"tokens\": "
         "[\"<pad>\", \"</s>\", \"<unk>\", \"a\", \"a\"]}",
         "token 4 (\"a\") appears twice"},
        {"{\"format\": \"loom-char-vocab\", \"source_split\": \"char\", \"target_split\": \"char\", \"tokens\": "
         "[\"<pad>\", \"</s>\", \"<unk>\", 7]}",
         "token 3 is not a non-empty string"},
        {"{\"format\": ", "not a character vocabulary"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *file = test_temp_file(bad[i][0]);
        w = NULL;
        CHECK(loom_chars_load(file, &w) == LOOM_E_FORMAT && w == NULL);
        CHECK(CONTAINS(loom_error_message(), file) && CONTAINS(loom_error_message(), bad[i][1]));
        unlink(file);
    }
    CHECK(loom_chars_load("/nonexistent/char_vocab.json", &w) == LOOM_E_NOT_FOUND);
}

int main(void)
{
    test_ids_and_round_trip();
    test_file_round_trip_and_errors();
    return test_finish("test_tokenizer_chars");
}
