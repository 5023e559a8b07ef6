/* test_tokenizer_reference.c - loom's GPT-2 encoder gives the same ids as a reference encoder
 * (npm gpt-3-encoder, a port of OpenAI's encoder.py, run by tests/data/reference_encode.js
 * under node) on every non-empty line of Moby Dick plus hand-written tricky texts.
 * Needs scripts/fetch-data.sh and node (exit 77, skipped, without them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "error.h"
#include "test_util.h"
#include "tokenizer_bpe.h"
#include "tokenizer_test_util.h"

/* Texts where GPT-2's encoder.py and the JS port agree (see README.md in this folder for the
 * few characters where they do not). Each may hold newlines: they travel as JSON lines. */
static const char *const TRICKY[] = {
    "Hello world",
    "a   b",
    "a    b    c",
    "trailing spaces   ",
    "   leading spaces",
    "\t\t",
    "a\t\tb",
    "tab\tseparated\tvalues",
    " \t \t ",
    "two\n\nparagraphs\n",
    "line\r\nwindows\r\n",
    "  \n  indented\n    more\n",
    "1234567",
    "3.14159265358979 2,718 1e-10 0x1F -42 +7",
    "12345678901234567890",
    "don't won't can't I'm you're we've they'll she'd it's",
    "DON'T 'single' \"double\" ''quotes'' `back`",
    "rock 'n' roll, ma'am, o'clock",
    "Emoji 😀😃😄😁 and 👍🏽 and 👨‍👩‍👧‍👦 family",
    "flags 🇺🇸🇯🇵 and 🏳️‍🌈",
    "日本語のテキスト、漢字とかな。",
    "中文：你好，世界！",
    "한국어 문장입니다",
    "Ελληνικά: γειά σου κόσμε",
    "Русский: съешь же ещё этих мягких французских булок",
    "العربية: مرحبا بالعالم",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया",
    "ไทย: สวัสดีชาวโลก",
    "combining: e\xcc\x81 n\xcc\x83 a\xcc\x8a Z\xcd\x91\xcd\x97\xcd\x94",
    "precomposed: é ñ å Ångström",
    ("nbsp\xc2\xa0"
     "between and\xe2\x80\x83"
     "em\xe2\x80\x89thin\xe3\x80\x80ideographic"),
    "zero\xe2\x80\x8bwidth\xe2\x80\x8cnon\xe2\x80\x8djoiner",
    "math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ ≈ π",
    "digits: ٣٤٥ ०१२ ①②③ Ⅻ ½ ¾",
    "$$$ %%% ^^^ &&& *** ((( ))) [[[ ]]] {{{ }}}",
    "email@example.com https://example.com/a/b?c=1&d=2#e",
    "def f(x):\n    return x ** 2  # square\n",
    /* Not "<|endoftext|>": the reference spells it as text, loom gives its id as HF's
     * GPT2Tokenizer does (test_tokenizer_bpe.c, test_tokenizer_roundtrip.c). */
    "<|endoftext",
    "Mr. Starbuck—he cried—“Moby Dick!” ’Tis so…",
    "   \t \n\t   x  ",
    "\n",
    " ",
    "!!!???...",
    "CamelCaseWords and snake_case_words and kebab-case-words",
};

/* out += JSON string literal of s (valid UTF-8 passes through). */
static void json_append(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputs("\"\n", f);
}

/* 'text' for the shell. */
static void shell_quote(char *out, size_t size, const char *s)
{
    size_t k = 0;
    out[k++] = '\'';
    for (; *s && k + 5 < size; s++) {
        if (*s == '\'') {
            memcpy(out + k, "'\\''", 4);
            k += 4;
        } else
            out[k++] = *s;
    }
    out[k++] = '\'';
    out[k] = '\0';
}

typedef struct text {
    const char *s;
    size_t len;
} text;

int main(void)
{
    char data[2048], path[4096];
    if (!tok_find_data(data, sizeof data)) return TOK_SKIP;
    snprintf(path, sizeof path, "%s/node_modules/gpt-3-encoder/Encoder.js", data);
    if (!tok_is_file(path)) {
        printf("SKIP: %s is missing: run scripts/fetch-data.sh\n", path);
        return TOK_SKIP;
    }
    const char *node = getenv("LOOM_NODE") && *getenv("LOOM_NODE") ? getenv("LOOM_NODE") : "node";
    char qnode[1024], cmd[20000];
    shell_quote(qnode, sizeof qnode, node);
    snprintf(cmd, sizeof cmd, "%s --version >/dev/null 2>&1", qnode);
    if (system(cmd) != 0) {
        printf("SKIP: %s (Node.js) is not available to run the reference encoder\n", node);
        return TOK_SKIP;
    }

    snprintf(path, sizeof path, "%s/gpt2", data);
    loom_bpe *bpe = NULL;
    if (loom_bpe_load_dir(path, &bpe) != LOOM_OK) {
        fprintf(stderr, "%s\n", loom_error_message());
        return 1;
    }

    /* The texts: every non-empty line of the book, then the tricky ones. */
    snprintf(path, sizeof path, "%s/moby-dick.txt", data);
    size_t book_len = 0;
    char *book = tok_read(path, &book_len);
    if (!book) return 1;
    size_t cap = 1024, n = 0, n_book = 0;
    text *texts = malloc(cap * sizeof *texts);
    for (char *p = book, *end = book + book_len; p < end;) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if (eol > p) {
            if (n == cap) texts = realloc(texts, (cap *= 2) * sizeof *texts);
            texts[n++] = (text){p, (size_t)(eol - p)};
            n_book++;
        }
        p = eol + 1;
    }
    for (size_t i = 0; i < sizeof TRICKY / sizeof TRICKY[0]; i++) {
        if (n == cap) texts = realloc(texts, (cap *= 2) * sizeof *texts);
        texts[n++] = (text){TRICKY[i], strlen(TRICKY[i])};
    }

    char dir[2048], in_path[2200], out_path[2200], q_script[4400], q_deps[4400], q_in[4400], q_out[4400];
    if (!tok_make_temp_dir(dir, sizeof dir)) return 1;
    snprintf(in_path, sizeof in_path, "%s/texts.jsonl", dir);
    snprintf(out_path, sizeof out_path, "%s/reference.txt", dir);
    FILE *f = fopen(in_path, "wb");
    if (!f) return 1;
    for (size_t i = 0; i < n; i++)
        json_append(f, texts[i].s, texts[i].len);
    fclose(f);
    snprintf(path, sizeof path, "%s/tests/data/reference_encode.js", tok_source_dir());
    shell_quote(q_script, sizeof q_script, path);
    shell_quote(q_deps, sizeof q_deps, data);
    shell_quote(q_in, sizeof q_in, in_path);
    shell_quote(q_out, sizeof q_out, out_path);
    snprintf(cmd, sizeof cmd, "%s %s %s %s > %s", qnode, q_script, q_deps, q_in, q_out);
    const int rc = system(cmd);
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    if (rc != 0) {
        fprintf(stderr, "reference encoder failed: %s\n", cmd);
        return test_finish("test_tokenizer_reference");
    }

    size_t ref_len = 0;
    char *ref = tok_read(out_path, &ref_len);
    CHECK(ref != NULL);
    size_t line = 0, mismatches = 0, tokens = 0;
    for (char *p = ref, *end = ref + (ref ? ref_len : 0); ref && p < end && line < n; line++) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        *eol = '\0';
        int32_t *ids = NULL;
        size_t k = 0;
        CHECK(loom_bpe_encode(bpe, texts[line].s, texts[line].len, &ids, &k) == LOOM_OK);
        size_t j = 0;
        int same = 1;
        for (char *q = p; *q;) {
            char *after = NULL;
            const long v = strtol(q, &after, 10);
            if (after == q) break;
            same &= j < k && ids[j] == v;
            j++;
            q = after;
        }
        same &= j == k;
        tokens += k;
        if (!same && ++mismatches <= 10) {
            fprintf(stderr, "mismatch on text %zu \"%.*s\"\n  reference: %s\n  loom:     ", line,
                    (int)(texts[line].len < 300 ? texts[line].len : 300), texts[line].s, p);
            for (size_t i = 0; i < k; i++)
                fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        free(ids);
        p = eol + 1;
    }
    CHECK(line == n);
    CHECK(mismatches == 0);
    CHECK(n >= 300);
    printf("compared %zu texts (%zu lines of Moby Dick, %zu tricky), %zu tokens: %zu mismatches\n", line, n_book,
           n - n_book, tokens, mismatches);
    free(ref);
    free(texts);
    free(book);
    loom_bpe_free(bpe);
    loom_remove_tree(dir);
    return test_finish("test_tokenizer_reference");
}
