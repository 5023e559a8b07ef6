/* test_tokenizer_bpe.c - the BPE algorithm and the file loaders on a tiny hand-made vocabulary
 * (needs no download): GPT-2's merge order (lowest rank first, a whole pass per rank), the
 * pre-tokeniser's whitespace rule, invalid UTF-8, and one error per malformed file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"
#include "test_util.h"
#include "tokenizer_bpe.h"
#include "tokenizer_test_util.h"

/* Raw bytes -> GPT-2's byte alphabet (UTF-8), as the files store tokens. */
static void to_alphabet(const char *raw, char *out)
{
    int n = 0, map[256];
    for (int b = 0; b < 256; b++) {
        const int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = printable ? b : 256 + n++;
    }
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
        const int cp = map[*p];
        if (cp < 0x80)
            *out++ = (char)cp;
        else {
            *out++ = (char)(0xC0 | cp >> 6);
            *out++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    *out = '\0';
}

/* A JSON string literal of alphabet text (only '"' and '\\' need escaping there). */
static void json_quote(const char *s, char *out)
{
    *out++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') *out++ = '\\';
        *out++ = *s;
    }
    *out++ = '"';
    *out = '\0';
}

/* Merges of the tiny vocabulary, raw bytes, rank order. Token ids: byte b is b, merge k is
 * 256 + k. */
static const char *const MERGES[][2] = {
    {"c", "d"},   /* 0 */
    {"ab", "a"},  /* 1: ranks below the merge that creates "ab" (only a hand-made file does that) */
    {"a", "b"},   /* 2 */
    {"x", "x"},   /* 3 */
    {"xx", "xx"}, /* 4 */
    {"  ", " "},  /* 5: ranks below the merge that creates "  ", like 1 */
    {" ", " "},   /* 6 */
    {" ", "b"},   /* 7 */
};
#define N_MERGES (sizeof MERGES / sizeof MERGES[0])

static void write_vocab(const char *dir, int skip_byte, const char *extra_entry)
{
    size_t cap = 1 << 16, len = 0;
    char *json = malloc(cap), key[64], quoted[160];
    len += (size_t)snprintf(json + len, cap - len, "{");
    for (int b = 0; b < 256; b++) {
        if (b == skip_byte) continue;
        const char raw[2] = {(char)b, 0};
        if (b == 0)
            strcpy(key, "\xc4\x80"); /* byte 0 maps to U+0100 */
        else
            to_alphabet(raw, key);
        json_quote(key, quoted);
        len += (size_t)snprintf(json + len, cap - len, "%s%s: %d", len > 1 ? ", " : "", quoted, b);
    }
    for (size_t k = 0; k < N_MERGES; k++) {
        char raw[16];
        snprintf(raw, sizeof raw, "%s%s", MERGES[k][0], MERGES[k][1]);
        to_alphabet(raw, key);
        json_quote(key, quoted);
        len += (size_t)snprintf(json + len, cap - len, ", %s: %d", quoted, 256 + (int)k);
    }
    len += (size_t)snprintf(json + len, cap - len, ", \"<|endoftext|>\": %d%s%s}", 256 + (int)N_MERGES,
                            extra_entry ? ", " : "", extra_entry ? extra_entry : "");
    char path[4096];
    loom_path_join(path, sizeof path, dir, "vocab.json");
    CHECK(loom_write_file_atomic(path, json, len) == LOOM_OK);
    free(json);
}

static void write_merges(const char *dir, const char *extra_line)
{
    char text[4096], a[32], b[32];
    size_t len = (size_t)snprintf(text, sizeof text, "#version: 0.2\n");
    for (size_t k = 0; k < N_MERGES; k++) {
        to_alphabet(MERGES[k][0], a);
        to_alphabet(MERGES[k][1], b);
        len += (size_t)snprintf(text + len, sizeof text - len, "%s %s\n", a, b);
    }
    if (extra_line) len += (size_t)snprintf(text + len, sizeof text - len, "%s\n", extra_line);
    char path[4096];
    loom_path_join(path, sizeof path, dir, "merges.txt");
    CHECK(loom_write_file_atomic(path, text, len) == LOOM_OK);
}

/* encode(text) == expected ids (terminated by -1), and decode gives text back. */
static void check_encode(const loom_bpe *bpe, const char *text, size_t len, const int32_t *expected)
{
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(loom_bpe_encode(bpe, text, len, &ids, &n) == LOOM_OK);
    CHECK(ids != NULL);
    size_t want = 0;
    while (expected && expected[want] >= 0)
        want++;
    int same = expected == NULL || n == want;
    for (size_t i = 0; same && expected && i < n; i++)
        same = ids[i] == expected[i];
    if (!same) {
        fprintf(stderr, "encode(\"%.*s\") = [", (int)len, text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, i ? " %d" : "%d", ids[i]);
        fprintf(stderr, "], expected [");
        for (size_t i = 0; i < want; i++)
            fprintf(stderr, i ? " %d" : "%d", expected[i]);
        fprintf(stderr, "]\n");
    }
    CHECK(same);
    char *back = NULL;
    size_t back_len = 0;
    CHECK(loom_bpe_decode(bpe, ids, n, &back, &back_len) == LOOM_OK);
    CHECK(back_len == len && !memcmp(back, text, len));
    CHECK(back && back[back_len] == '\0');
    free(back);
    free(ids);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__, -1})
#define M(k) (256 + (k))
#define S(s) s, sizeof s - 1

static void expect_load_error(const char *dir, loom_status code, const char *needle)
{
    loom_bpe *bpe = (loom_bpe *)1;
    const loom_status st = loom_bpe_load_dir(dir, &bpe);
    CHECK(st == code);
    CHECK(bpe == NULL);
    if (!strstr(loom_error_message(), needle))
        fprintf(stderr, "error \"%s\" does not contain \"%s\"\n", loom_error_message(), needle);
    CHECK(strstr(loom_error_message(), needle) != NULL);
}

int main(void)
{
    char dir[4096];
    if (!tok_make_temp_dir(dir, sizeof dir)) return 1;
    write_vocab(dir, -1, NULL);
    write_merges(dir, NULL);
    loom_bpe *bpe = NULL;
    CHECK(loom_bpe_load_dir(dir, &bpe) == LOOM_OK);
    if (!bpe) {
        fprintf(stderr, "load failed: %s\n", loom_error_message());
        return test_finish("test_tokenizer_bpe");
    }
    CHECK(loom_bpe_vocab_size(bpe) == 256 + (int)N_MERGES + 1);
    CHECK(loom_bpe_eot(bpe) == 256 + (int)N_MERGES);
    CHECK(loom_bpe_merges_count(bpe) == N_MERGES);

    check_encode(bpe, S(""), NULL);
    check_encode(bpe, S("q"), IDS('q'));
    check_encode(bpe, S("cd"), IDS(M(0)));
    /* One pass per rank: (a b) merges at both places before (ab a), of lower rank, may
     * merge the pair the first merge created. GPT-2: [ab, ab]. */
    check_encode(bpe, S("abab"), IDS(M(2), M(2)));
    check_encode(bpe, S("aba"), IDS(M(1)));
    /* Overlapping occurrences merge left to right. */
    check_encode(bpe, S("xxx"), IDS(M(3), 'x'));
    check_encode(bpe, S("xxxx"), IDS(M(4)));
    check_encode(bpe, S("xxxxx"), IDS(M(4), 'x'));
    /* "a   b": "a", "  " (\s+(?!\S) leaves the last space to the word), " b". */
    check_encode(bpe, S("a   b"), IDS('a', M(6), M(7)));
    check_encode(bpe, S("a \t b"), IDS('a', ' ', '\t', M(7)));
    check_encode(bpe, S("   "), IDS(M(5)));
    check_encode(bpe, S("\n\n"), IDS('\n', '\n'));
    /* Contractions split: "don't" -> "don", "'t". */
    check_encode(bpe, S("don't"), IDS('d', 'o', 'n', '\'', 't'));
    /* "<|endoftext|>" in the text is the special token (HF's GPT2Tokenizer), the text on each
     * side encoded on its own; a part of it is text. */
    const int eot = 256 + (int)N_MERGES;
    check_encode(bpe, S("<|endoftext|>"), IDS(eot));
    check_encode(bpe, S("ab<|endoftext|><|endoftext|> b"), IDS(M(2), eot, eot, M(7)));
    check_encode(bpe, S("<|endoftext|"), IDS('<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|'));
    /* Every byte round-trips, invalid UTF-8 and NUL included. */
    check_encode(bpe,
                 S("ab\xff"
                   "ab\xc3"
                   "cd\x80\x80 b\0a"),
                 IDS(M(2), 0xff, M(2), 0xc3, M(0), 0x80, 0x80, M(7), 0, 'a'));
    check_encode(bpe, S("\xc3\xa9t\xc3\xa9"), NULL);
    check_encode(bpe, S("\xed\xa0\x80 \xc0\x80 \xf4\x90\x80\x80 \xe2\x82"), NULL);
    {
        unsigned char all[512];
        for (int i = 0; i < 512; i++)
            all[i] = (unsigned char)(i * 7 + i / 256);
        check_encode(bpe, (const char *)all, sizeof all, NULL);
    }
    /* A long piece is not quadratic: 2^20 x's are 2^18 "xxxx" tokens. */
    {
        const size_t n = 1u << 20;
        char *xs = malloc(n);
        memset(xs, 'x', n);
        int32_t *ids = NULL;
        size_t k = 0;
        CHECK(loom_bpe_encode(bpe, xs, n, &ids, &k) == LOOM_OK);
        CHECK(k == n / 4);
        int all4 = 1;
        for (size_t i = 0; i < k; i++)
            all4 &= ids[i] == M(4);
        CHECK(all4);
        free(ids);
        free(xs);
    }
    /* Decode rejects an id outside the vocabulary. */
    {
        char *t = NULL;
        size_t l = 0;
        CHECK(loom_bpe_decode(bpe, IDS(1, 100000), 2, &t, &l) == LOOM_E_INVALID);
        CHECK(strstr(loom_error_message(), "100000") != NULL);
        CHECK(t == NULL);
    }
    loom_bpe_free(bpe);
    loom_bpe_free(NULL);

    /* Malformed files: one error each, naming the file. */
    write_vocab(dir, 'q', NULL);
    expect_load_error(dir, LOOM_E_FORMAT, "byte 0x71 has no single-byte token");
    write_vocab(dir, -1, "\"\\u3042\": 999");
    expect_load_error(dir, LOOM_E_FORMAT, "not written in GPT-2's byte alphabet");
    write_vocab(dir, -1, "\"zz\": 3");
    expect_load_error(dir, LOOM_E_FORMAT, "id 3 is given to two tokens");
    write_vocab(dir, -1, "\"zz\": -4");
    expect_load_error(dir, LOOM_E_FORMAT, "vocab.json: token \"zz\" has id out of range");
    write_vocab(dir, -1, NULL);
    write_merges(dir, "a b c");
    expect_load_error(dir, LOOM_E_FORMAT, "merges.txt:10: expected a merge \"a b\" (two tokens), found 3 fields");
    write_merges(dir, "q r");
    expect_load_error(dir, LOOM_E_FORMAT, "merges.txt:10: merge \"q r\": the merged token \"qr\"");
    write_merges(dir, "qq r");
    expect_load_error(dir, LOOM_E_FORMAT, "merge \"qq r\": \"qq\" is not in the vocabulary");
    write_merges(dir, NULL);
    {
        char path[4096];
        loom_path_join(path, sizeof path, dir, "vocab.json");
        CHECK(loom_write_file_atomic(path, "{\"a\": 1,", 8) == LOOM_OK);
        expect_load_error(dir, LOOM_E_FORMAT, "vocab.json: not valid JSON");
        CHECK(loom_write_file_atomic(path, "[1]", 3) == LOOM_OK);
        expect_load_error(dir, LOOM_E_FORMAT, "expected a JSON object");
        remove(path);
        expect_load_error(dir, LOOM_E_NOT_FOUND, "no GPT-2 vocabulary here");
        loom_bpe *b2 = (loom_bpe *)1;
        char merges[4096];
        loom_path_join(merges, sizeof merges, dir, "merges.txt");
        CHECK(loom_bpe_load(path, merges, &b2) == LOOM_E_NOT_FOUND);
        CHECK(b2 == NULL);
        CHECK(strstr(loom_error_message(), "vocab.json") != NULL);
    }
    /* OpenAI's file names are found too. */
    {
        char from[4096], to[4096];
        write_vocab(dir, -1, NULL);
        loom_path_join(from, sizeof from, dir, "vocab.json");
        loom_path_join(to, sizeof to, dir, "encoder.json");
        CHECK(rename(from, to) == 0);
        loom_path_join(from, sizeof from, dir, "merges.txt");
        loom_path_join(to, sizeof to, dir, "vocab.bpe");
        CHECK(rename(from, to) == 0);
        CHECK(loom_bpe_load_dir(dir, &bpe) == LOOM_OK);
        loom_bpe_free(bpe);
    }
    loom_remove_tree(dir);
    return test_finish("test_tokenizer_bpe");
}
