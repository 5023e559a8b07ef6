/* test_tokenizer_roundtrip.c - GPT-2's real vocabulary: decode(encode(x)) == x on Moby Dick
 * and on tricky strings (Unicode, emoji, CJK, combining marks, whitespace runs, invalid
 * UTF-8, NUL), a few ids everyone knows, and the speed on the whole book.
 * Needs scripts/fetch-data.sh (exit 77, skipped, without it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "test_util.h"
#include "tokenizer_bpe.h"
#include "tokenizer_test_util.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int roundtrip(const loom_bpe *bpe, const char *text, size_t len, size_t *n_tokens)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (loom_bpe_encode(bpe, text, len, &ids, &n) != LOOM_OK) {
        fprintf(stderr, "encode failed: %s\n", loom_error_message());
        return 0;
    }
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= ids[i] >= 0 && ids[i] < loom_bpe_vocab_size(bpe);
    char *back = NULL;
    size_t back_len = 0;
    ok &= loom_bpe_decode(bpe, ids, n, &back, &back_len) == LOOM_OK;
    ok &= back_len == len && (len == 0 || !memcmp(back, text, len));
    if (!ok) fprintf(stderr, "round trip failed for %zu bytes: \"%.*s\"\n", len, (int)(len < 200 ? len : 200), text);
    if (n_tokens) *n_tokens = n;
    free(back);
    free(ids);
    return ok;
}

static void check_ids(const loom_bpe *bpe, const char *text, const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(loom_bpe_encode(bpe, text, strlen(text), &ids, &n) == LOOM_OK);
    int same = n == n_want;
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    if (!same) {
        fprintf(stderr, "encode(\"%s\") = [", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, i ? " %d" : "%d", ids[i]);
        fprintf(stderr, "]\n");
    }
    CHECK(same);
    free(ids);
}

int main(void)
{
    char data[2048], path[4096];
    if (!tok_find_data(data, sizeof data)) return TOK_SKIP;
    snprintf(path, sizeof path, "%s/gpt2", data);
    loom_bpe *bpe = NULL;
    const double t_load = now();
    CHECK(loom_bpe_load_dir(path, &bpe) == LOOM_OK);
    if (!bpe) {
        fprintf(stderr, "%s\n", loom_error_message());
        return test_finish("test_tokenizer_roundtrip");
    }
    printf("loaded GPT-2 vocabulary in %.3f s\n", now() - t_load);
    CHECK(loom_bpe_vocab_size(bpe) == 50257);
    CHECK(loom_bpe_eot(bpe) == 50256);
    CHECK(loom_bpe_merges_count(bpe) == 50000);

    /* Ids anyone who has used GPT-2 has seen. */
    check_ids(bpe, "Hello world", (const int32_t[]){15496, 995}, 2);
    check_ids(bpe, "Hello, world!", (const int32_t[]){15496, 11, 995, 0}, 4);
    check_ids(bpe, " the", (const int32_t[]){262}, 1);
    check_ids(bpe, "\n", (const int32_t[]){198}, 1);
    /* The special token as HF's GPT2Tokenizer reads it (OpenAI's encoder.py: 27 91 437 1659 5239 91 29). */
    check_ids(bpe, "<|endoftext|>", (const int32_t[]){50256}, 1);
    check_ids(bpe, "Call <|endoftext|> me", (const int32_t[]){14134, 220, 50256, 502}, 4);
    {
        char *t = NULL;
        size_t l = 0;
        CHECK(loom_bpe_decode(bpe, (const int32_t[]){50256}, 1, &t, &l) == LOOM_OK);
        CHECK(l == 13 && !memcmp(t, "<|endoftext|>", 13));
        free(t);
    }

    static const char *const tricky[] = {
        "",
        "a",
        "Hello world",
        "héllo wörld naïve café",
        "Ελληνικά κείμενο",
        "Русский текст, ёжик",
        "日本語のテキストと漢字",
        "中文文本，标点符号。",
        "한국어 텍스트",
        "مرحبا بالعالم",
        "שלום עולם",
        "हिन्दी पाठ",
        "emoji 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽",
        "combining e\xcc\x81 a\xcc\x8a o\xcc\x88\xcc\x81 Z\xcd\x91\xcd\x97\xcd\x94",
        "zero\xe2\x80\x8bwidth\xe2\x80\x8cjoiner\xe2\x80\x8d",
        ("nbsp\xc2\xa0here and\xe2\x80\x83"
         "em space\xe3\x80\x80ideographic"),
        "nel\xc2\x85line bom\xef\xbb\xbf mark",
        "a   b",
        "a  ",
        "   leading",
        "trailing   ",
        "\t\t",
        "\ttab\tseparated\tvalues\t",
        "line1\nline2\r\nline3\rline4",
        "\n\n\n",
        " \n \n ",
        "don't I'll we've they're she's it'd I'm",
        "DON'T SHOUT'S 'quoted' ''",
        "1234567 3.14159 1,000,000 -42 +7e10",
        "٣٤٥ ①②③ Ⅻ ½",
        "$$$ %%% ^^^ &&& *** ((( ))) [[[ ]]]",
        "email@example.com https://example.com/path?q=1&r=2#frag",
        "def f(x):\n    return x ** 2  # comment\n",
        "{\"json\": [1, 2, {\"a\": null}]}",
        "<|endoftext|>",
        "   \t \n\t   x",
        "\xf0\x9f\x98\x80",
    };
    size_t n_tricky = 0;
    for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++)
        n_tricky += (size_t)roundtrip(bpe, tricky[i], strlen(tricky[i]), NULL);
    CHECK(n_tricky == sizeof tricky / sizeof tricky[0]);

    /* Bytes that are not UTF-8: every one survives. */
    static const struct {
        const char *s;
        size_t len;
    } raw[] = {
#define R(s) {s, sizeof s - 1}
        R("\xff"),
        R("abc\xff"
          "def"),
        R("\x80\x80\x80"),
        R("trunc\xe2\x82"),
        R("\xc0\x80 overlong"),
        R("\xed\xa0\x80 surrogate"),
        R("\xf4\x90\x80\x80 beyond"),
        R("mixed \xe6\x97\xa5\xff\xe6\x9c\xac \xfe\xfe ok"),
        R("nul\0inside\0"),
        R("\0"),
        R("\xe2\x82\xac\xe2\x82"),
#undef R
    };
    size_t n_raw = 0;
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++)
        n_raw += (size_t)roundtrip(bpe, raw[i].s, raw[i].len, NULL);
    CHECK(n_raw == sizeof raw / sizeof raw[0]);
    {
        unsigned char all[4096];
        for (size_t i = 0; i < sizeof all; i++)
            all[i] = (unsigned char)(i * 131 + (i >> 8));
        CHECK(roundtrip(bpe, (const char *)all, sizeof all, NULL));
    }
    /* Long runs of one class: one huge piece each, not quadratic. */
    {
        const size_t n = 1u << 20;
        char *s = malloc(n);
        const char fill[] = {' ', 'a', '7', '!', '\n'};
        for (size_t k = 0; k < sizeof fill; k++) {
            memset(s, fill[k], n);
            const double t0 = now();
            size_t n_tok = 0;
            CHECK(roundtrip(bpe, s, n, &n_tok));
            printf("1 MiB of '%s': %zu tokens in %.3f s\n", fill[k] == '\n' ? "\\n" : (char[]){fill[k], 0}, n_tok,
                   now() - t0);
        }
        free(s);
    }

    /* The whole book: round trip, and fast. */
    snprintf(path, sizeof path, "%s/moby-dick.txt", data);
    size_t len = 0;
    char *book = tok_read(path, &len);
    CHECK(book != NULL);
    if (book) {
        const double t0 = now();
        size_t n_tok = 0;
        CHECK(roundtrip(bpe, book, len, &n_tok));
        const double dt = now() - t0;
        printf("moby-dick.txt: %zu bytes -> %zu tokens, encode + decode %.3f s\n", len, n_tok, dt);
        CHECK(n_tok > len / 6 && n_tok < len / 3);
        CHECK(dt < 10.0); /* Debug and sanitizer builds included; a Release build takes ~0.2 s */
        free(book);
    }
    loom_bpe_free(bpe);
    return test_finish("test_tokenizer_roundtrip");
}
