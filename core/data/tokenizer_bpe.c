/*
 * tokenizer_bpe.c - GPT-2's byte-level BPE (see tokenizer_bpe.h).
 *
 * Tokens are kept as raw bytes (the byte alphabet of the files is undone at load), so a
 * symbol is a vocabulary id and a merge is a pair of ids: (left, right) -> (rank, merged id)
 * in an open-addressing table. A piece is merged with a heap of candidate pairs ordered by
 * (rank, position) and processed one rank at a time, which is GPT-2's loop (take the lowest
 * ranked pair, merge all its occurrences left to right, repeat) in O(n log n) instead of
 * O(n^2), so a megabyte of one character class is no slower than a megabyte of words.
 * Each encode call keeps a cache of piece -> ids (most words repeat), so the loaded tokenizer
 * stays immutable and shareable between threads.
 */
#include "tokenizer_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"

/* The pre-tokeniser. \s is spelled out as Unicode's White_Space property, which is what \s
 * means in the `regex` module GPT-2's encoder.py uses: PCRE2's own UCP \s also matches U+180E
 * (PCRE2 10.42), and JavaScript's \s matches U+FEFF but not U+0085. */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

#define EMPTY_KEY UINT64_MAX
#define MAX_VOCAB (1 << 24)

struct loom_bpe {
    int32_t vocab_size;
    int32_t eot;
    size_t n_merges;
    int32_t byte_id[256];
    /* id -> bytes: tok_bytes + tok_off[id], tok_len[id] bytes; tok_len -1 for an unused id. */
    size_t *tok_off;
    int32_t *tok_len;
    char *tok_bytes;
    /* (left << 32 | right) -> rank, merged id. */
    uint64_t *pair_key;
    int32_t *pair_rank;
    int32_t *pair_merged;
    size_t pair_mask;
    pcre2_code *re;
};

/* ---- hashing --------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = mix64(h ^ w);
    }
    uint64_t w = 0;
    for (size_t k = 0; i < n; i++, k++) w |= (uint64_t)p[i] << (8 * k);
    return mix64(h ^ w ^ 0x9e3779b97f4a7c15ull);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int pair_lookup(const loom_bpe *b, int32_t left, int32_t right, int32_t *rank, int32_t *merged)
{
    const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = mix64(key) & b->pair_mask;; i = (i + 1) & b->pair_mask) {
        if (b->pair_key[i] == key) {
            *rank = b->pair_rank[i];
            *merged = b->pair_merged[i];
            return 1;
        }
        if (b->pair_key[i] == EMPTY_KEY) return 0;
    }
}

/* ---- GPT-2's byte alphabet --------------------------------------------------------------- */

/* bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100.. in order. */
static void byte_alphabet(int32_t byte_to_cp[256], int16_t cp_to_byte[324])
{
    int n = 0;
    for (int cp = 0; cp < 324; cp++) cp_to_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        const int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? b : 256 + n++;
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

/* Decode a token written in the byte alphabet (UTF-8) into raw bytes at out (at most len
 * bytes: every character is at least one byte). Returns the byte count, or -1 when the
 * string is not valid UTF-8 or has a character outside the alphabet. */
static long alphabet_to_bytes(const int16_t cp_to_byte[324], const char *s, size_t len, unsigned char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if (p[i] < 0x80) cp = p[i++];
        else if ((p[i] & 0xE0) == 0xC0 && i + 1 < len && (p[i + 1] & 0xC0) == 0x80) {
            cp = (uint32_t)(p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F);
            if (cp < 0x80) return -1;
            i += 2;
        } else return -1; /* the alphabet stops at U+0143: two bytes at most */
        if (cp >= 324 || cp_to_byte[cp] < 0) return -1;
        out[n++] = (unsigned char)cp_to_byte[cp];
    }
    return n;
}

/* ---- bytes -> id (load time only) --------------------------------------------------------- */

typedef struct vocab_index {
    const loom_bpe *b;
    int32_t *slot; /* id, or -1 */
    size_t mask;
} vocab_index;

static int32_t vocab_find(const vocab_index *vi, const unsigned char *s, size_t n)
{
    const loom_bpe *b = vi->b;
    for (size_t i = hash_bytes(s, n) & vi->mask;; i = (i + 1) & vi->mask) {
        const int32_t id = vi->slot[i];
        if (id < 0) return -1;
        if ((size_t)b->tok_len[id] == n && !memcmp(b->tok_bytes + b->tok_off[id], s, n)) return id;
    }
}

/* Insert id (bytes already stored); a second token with the same bytes replaces the first,
 * as a later key does in Python's dict. */
static void vocab_insert(vocab_index *vi, int32_t id)
{
    const loom_bpe *b = vi->b;
    const unsigned char *s = (const unsigned char *)b->tok_bytes + b->tok_off[id];
    const size_t n = (size_t)b->tok_len[id];
    for (size_t i = hash_bytes(s, n) & vi->mask;; i = (i + 1) & vi->mask) {
        const int32_t other = vi->slot[i];
        if (other < 0 || ((size_t)b->tok_len[other] == n && !memcmp(b->tok_bytes + b->tok_off[other], s, n))) {
            vi->slot[i] = id;
            return;
        }
    }
}

/* ---- loading ------------------------------------------------------------------------------ */

static loom_status load_vocab(loom_bpe *b, const char *path, const int16_t cp_to_byte[324], vocab_index *vi)
{
    char *text = NULL;
    size_t len = 0;
    loom_status st = loom_read_file(path, &text, &len);
    if (st != LOOM_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return loom_error(LOOM_E_FORMAT, "%s: not valid JSON", path);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return loom_error(LOOM_E_FORMAT, "%s: expected a JSON object {\"token\": id, ...}", path);
    }
    /* Pass 1: ids and the size of the byte blob. */
    int32_t max_id = -1;
    size_t n_tokens = 0, blob = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        const double v = it->valuedouble;
        const char *why = !cJSON_IsNumber(it)           ? "that is not a number"
                          : !(v >= 0 && v < MAX_VOCAB)   ? "out of range"
                          : v != (double)(int32_t)v      ? "that is not an integer"
                                                         : NULL;
        if (why) {
            st = loom_error(LOOM_E_FORMAT, "%s: token \"%s\" has id %s, expected an integer in [0, %d)", path,
                            it->string, why, MAX_VOCAB);
            goto done;
        }
        if ((int32_t)v > max_id) max_id = (int32_t)v;
        blob += strlen(it->string);
        n_tokens++;
    }
    if (n_tokens == 0) {
        st = loom_error(LOOM_E_FORMAT, "%s: the vocabulary is empty", path);
        goto done;
    }
    b->vocab_size = max_id + 1;
    b->tok_off = calloc((size_t)b->vocab_size, sizeof *b->tok_off);
    b->tok_len = malloc((size_t)b->vocab_size * sizeof *b->tok_len);
    b->tok_bytes = malloc(blob + 1);
    vi->mask = pow2_at_least(2 * n_tokens) - 1;
    vi->slot = malloc((vi->mask + 1) * sizeof *vi->slot);
    if (!b->tok_off || !b->tok_len || !b->tok_bytes || !vi->slot) {
        st = loom_error(LOOM_E_NOMEM, "%s: out of memory for %zu tokens", path, n_tokens);
        goto done;
    }
    for (int32_t i = 0; i < b->vocab_size; i++) b->tok_len[i] = -1;
    for (size_t i = 0; i <= vi->mask; i++) vi->slot[i] = -1;
    /* Pass 2: bytes of each token. */
    size_t used = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        const int32_t id = (int32_t)it->valuedouble;
        if (b->tok_len[id] >= 0) {
            st = loom_error(LOOM_E_FORMAT, "%s: id %d is given to two tokens", path, id);
            goto done;
        }
        const long n = alphabet_to_bytes(cp_to_byte, it->string, strlen(it->string),
                                         (unsigned char *)b->tok_bytes + used);
        if (n <= 0) {
            st = loom_error(LOOM_E_FORMAT, "%s: token %d \"%s\" is %s", path, id, it->string,
                            n == 0 ? "empty" : "not written in GPT-2's byte alphabet (bytes_to_unicode)");
            goto done;
        }
        b->tok_off[id] = used;
        b->tok_len[id] = (int32_t)n;
        used += (size_t)n;
        vocab_insert(vi, id);
    }
    for (int c = 0; c < 256; c++) {
        const unsigned char byte = (unsigned char)c;
        b->byte_id[c] = vocab_find(vi, &byte, 1);
        if (b->byte_id[c] < 0) {
            st = loom_error(LOOM_E_FORMAT, "%s: byte 0x%02x has no single-byte token (not a byte-level BPE vocabulary)",
                            path, c);
            goto done;
        }
    }
    b->eot = vocab_find(vi, (const unsigned char *)"<|endoftext|>", 13);
done:
    cJSON_Delete(root);
    return st;
}

static loom_status pair_insert(loom_bpe *b, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = mix64(key) & b->pair_mask;; i = (i + 1) & b->pair_mask) {
        if (b->pair_key[i] == EMPTY_KEY || b->pair_key[i] == key) {
            /* A repeated merge takes its later rank, as dict(zip(merges, range(...))) does. */
            b->pair_key[i] = key;
            b->pair_rank[i] = rank;
            b->pair_merged[i] = merged;
            return LOOM_OK;
        }
    }
}

static loom_status load_merges(loom_bpe *b, const char *path, const int16_t cp_to_byte[324], const vocab_index *vi)
{
    char *text = NULL;
    size_t len = 0;
    loom_status st = loom_read_file(path, &text, &len);
    if (st != LOOM_OK) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    b->pair_mask = pow2_at_least(2 * lines) - 1;
    b->pair_key = malloc((b->pair_mask + 1) * sizeof *b->pair_key);
    b->pair_rank = malloc((b->pair_mask + 1) * sizeof *b->pair_rank);
    b->pair_merged = malloc((b->pair_mask + 1) * sizeof *b->pair_merged);
    unsigned char *buf = malloc(2 * len + 1);
    if (!b->pair_key || !b->pair_rank || !b->pair_merged || !buf) {
        free(text);
        free(buf);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory for %zu merges", path, lines);
    }
    for (size_t i = 0; i <= b->pair_mask; i++) b->pair_key[i] = EMPTY_KEY;

    size_t line_no = 0;
    int32_t rank = 0;
    for (char *p = text, *end = text + len; p < end;) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        char *next = eol < end ? eol + 1 : end;
        line_no++;
        size_t n = (size_t)(eol - p);
        if (n && p[n - 1] == '\r') n--;
        if (line_no == 1 && n >= 8 && !memcmp(p, "#version", 8)) {
            p = next;
            continue;
        }
        /* Fields separated by spaces or tabs (Python's str.split()). */
        const char *field[3];
        size_t flen[3], nf = 0;
        for (size_t i = 0; i < n;) {
            while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
            if (i == n) break;
            const size_t s = i;
            while (i < n && p[i] != ' ' && p[i] != '\t') i++;
            if (nf < 3) field[nf] = p + s, flen[nf] = i - s;
            nf++;
        }
        if (nf == 0) { /* a blank line (the file's last newline, or a stray one) */
            p = next;
            continue;
        }
        if (nf != 2) {
            st = loom_error(LOOM_E_FORMAT, "%s:%zu: expected a merge \"a b\" (two tokens), found %zu field%s", path,
                            line_no, nf, nf == 1 ? "" : "s");
            goto done;
        }
        const long la = alphabet_to_bytes(cp_to_byte, field[0], flen[0], buf);
        const long lb = la > 0 ? alphabet_to_bytes(cp_to_byte, field[1], flen[1], buf + la) : -1;
        if (la <= 0 || lb <= 0) {
            st = loom_error(LOOM_E_FORMAT, "%s:%zu: token \"%.*s\" is not written in GPT-2's byte alphabet", path,
                            line_no, (int)flen[la <= 0 ? 0 : 1], field[la <= 0 ? 0 : 1]);
            goto done;
        }
        const int32_t left = vocab_find(vi, buf, (size_t)la), right = vocab_find(vi, buf + la, (size_t)lb);
        const int32_t merged = vocab_find(vi, buf, (size_t)(la + lb));
        if (left < 0 || right < 0) {
            const int bad = left < 0 ? 0 : 1;
            st = loom_error(LOOM_E_FORMAT, "%s:%zu: merge \"%.*s %.*s\": \"%.*s\" is not in the vocabulary", path,
                            line_no, (int)flen[0], field[0], (int)flen[1], field[1], (int)flen[bad], field[bad]);
            goto done;
        }
        if (merged < 0) {
            st = loom_error(LOOM_E_FORMAT,
                            "%s:%zu: merge \"%.*s %.*s\": the merged token \"%.*s%.*s\" is not in the vocabulary", path,
                            line_no, (int)flen[0], field[0], (int)flen[1], field[1], (int)flen[0], field[0],
                            (int)flen[1], field[1]);
            goto done;
        }
        pair_insert(b, left, right, rank++, merged);
        p = next;
    }
    b->n_merges = (size_t)rank;
done:
    free(buf);
    free(text);
    return st;
}

static loom_status compile_pattern(loom_bpe *b)
{
    int code = 0;
    PCRE2_SIZE offset = 0;
    b->re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return loom_error(LOOM_E_INTERNAL, "tokenizer: cannot compile the GPT-2 pattern at offset %zu: %s",
                          (size_t)offset, (const char *)msg);
    }
    (void)pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter still works */
    return LOOM_OK;
}

loom_status loom_bpe_load(const char *vocab_json, const char *merges_txt, loom_bpe **out)
{
    *out = NULL;
    if (!vocab_json || !merges_txt) return loom_error(LOOM_E_INVALID, "tokenizer: vocabulary or merges path is NULL");
    loom_bpe *b = calloc(1, sizeof *b);
    if (!b) return loom_error(LOOM_E_NOMEM, "tokenizer: out of memory");
    int32_t byte_to_cp[256];
    int16_t cp_to_byte[324];
    byte_alphabet(byte_to_cp, cp_to_byte);
    vocab_index vi = {.b = b, .slot = NULL, .mask = 0};
    loom_status st = load_vocab(b, vocab_json, cp_to_byte, &vi);
    if (st == LOOM_OK) st = load_merges(b, merges_txt, cp_to_byte, &vi);
    if (st == LOOM_OK) st = compile_pattern(b);
    free(vi.slot);
    if (st != LOOM_OK) {
        loom_bpe_free(b);
        return st;
    }
    *out = b;
    return LOOM_OK;
}

/* Without opening it: a FIFO under that name must not block here (loading refuses it). */
static int file_exists(const char *path) { return access(path, F_OK) == 0; }

loom_status loom_bpe_load_dir(const char *dir, loom_bpe **out)
{
    *out = NULL;
    if (!dir) return loom_error(LOOM_E_INVALID, "tokenizer: vocabulary folder is NULL");
    char vocab[4096], merges[4096];
    loom_status st = loom_path_join(vocab, sizeof vocab, dir, "vocab.json");
    if (st == LOOM_OK && !file_exists(vocab)) st = loom_path_join(vocab, sizeof vocab, dir, "encoder.json");
    if (st == LOOM_OK) st = loom_path_join(merges, sizeof merges, dir, "merges.txt");
    if (st == LOOM_OK && !file_exists(merges)) st = loom_path_join(merges, sizeof merges, dir, "vocab.bpe");
    if (st != LOOM_OK) return loom_error(LOOM_E_INVALID, "%s: path too long", dir);
    if (!file_exists(vocab) || !file_exists(merges))
        return loom_error(LOOM_E_NOT_FOUND, "%s: no GPT-2 vocabulary here (need vocab.json or encoder.json, and "
                                            "merges.txt or vocab.bpe; scripts/fetch-data.sh fetches them)", dir);
    return loom_bpe_load(vocab, merges, out);
}

void loom_bpe_free(loom_bpe *b)
{
    if (!b) return;
    free(b->tok_off);
    free(b->tok_len);
    free(b->tok_bytes);
    free(b->pair_key);
    free(b->pair_rank);
    free(b->pair_merged);
    pcre2_code_free(b->re);
    free(b);
}

int32_t loom_bpe_vocab_size(const loom_bpe *b) { return b ? b->vocab_size : 0; }
int32_t loom_bpe_eot(const loom_bpe *b) { return b ? b->eot : -1; }
size_t loom_bpe_merges_count(const loom_bpe *b) { return b ? b->n_merges : 0; }

/* ---- encoding ----------------------------------------------------------------------------- */

typedef struct heap_entry {
    int32_t rank, pos, left, right, merged;
} heap_entry;

typedef struct cache_entry {
    uint64_t hash;
    size_t key_off, ids_off;
    uint32_t key_len, n_ids;
} cache_entry;

/* One encode call's state: output, the word -> ids cache and the merge work arrays. */
typedef struct encoder {
    const loom_bpe *b;
    int32_t *out;
    size_t n, cap;
    /* cache */
    uint32_t *slot; /* entry index + 1, 0 empty */
    size_t slot_mask;
    cache_entry *entries;
    size_t n_entries, entries_cap;
    unsigned char *keys;
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
    /* merge work */
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    heap_entry *heap, *pending;
    size_t heap_cap, pending_cap;
} encoder;

#define CACHE_MAX_ENTRIES (1u << 20) /* then start over: memory stays bounded on any input */
#define CACHE_MAX_KEY 256            /* longer pieces rarely repeat */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

static int emit(encoder *e, const int32_t *ids, size_t n)
{
    if (!grow((void **)&e->out, &e->cap, e->n + n, sizeof *e->out)) return 0;
    memcpy(e->out + e->n, ids, n * sizeof *ids);
    e->n += n;
    return 1;
}

static int heap_less(const heap_entry *a, const heap_entry *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_entry *h, size_t *n, heap_entry v)
{
    size_t i = (*n)++;
    while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (!heap_less(&v, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static heap_entry heap_pop(heap_entry *h, size_t *n)
{
    const heap_entry top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* The candidate pair starting at symbol i (whose next is j), if it is a merge. */
static int candidate(const encoder *e, int32_t i, heap_entry *out)
{
    const int32_t j = e->next[i];
    int32_t rank, merged;
    if (j < 0 || !pair_lookup(e->b, e->sym[i], e->sym[j], &rank, &merged)) return 0;
    *out = (heap_entry){.rank = rank, .pos = i, .left = e->sym[i], .right = e->sym[j], .merged = merged};
    return 1;
}

/* BPE of one piece; appends its ids to e->out. */
static loom_status bpe_piece(encoder *e, const unsigned char *p, size_t m)
{
    const loom_bpe *b = e->b;
    if (m == 1) return emit(e, &b->byte_id[p[0]], 1) ? LOOM_OK : LOOM_E_NOMEM;
    if (m > INT32_MAX / 2) return loom_error(LOOM_E_INVALID, "tokenizer: a piece of %zu bytes is too long", m);
    if (m > e->sym_cap) {
        const size_t cap = pow2_at_least(m);
        int32_t *sym = realloc(e->sym, cap * sizeof *sym);
        if (sym) e->sym = sym;
        int32_t *prev = realloc(e->prev, cap * sizeof *prev);
        if (prev) e->prev = prev;
        int32_t *next = realloc(e->next, cap * sizeof *next);
        if (next) e->next = next;
        if (!sym || !prev || !next) return LOOM_E_NOMEM;
        e->sym_cap = cap;
    }
    /* The heap holds at most the m - 1 first pairs plus 2 per merge; a pass adds 2 per merge. */
    if (!grow((void **)&e->heap, &e->heap_cap, 3 * m, sizeof *e->heap) ||
        !grow((void **)&e->pending, &e->pending_cap, 2 * m, sizeof *e->pending))
        return LOOM_E_NOMEM;

    for (size_t i = 0; i < m; i++) {
        e->sym[i] = b->byte_id[p[i]];
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    size_t nh = 0;
    heap_entry c;
    for (size_t i = 0; i + 1 < m; i++)
        if (candidate(e, (int32_t)i, &c)) heap_push(e->heap, &nh, c);

    while (nh > 0) {
        const int32_t rank = e->heap[0].rank;
        size_t np_ = 0;
        /* One pass: every occurrence of this rank's pair, left to right. Pairs the pass creates
         * wait in `pending` until it ends, as GPT-2 rebuilds its pairs only after a pass. */
        while (nh > 0 && e->heap[0].rank == rank) {
            const heap_entry t = heap_pop(e->heap, &nh);
            const int32_t i = t.pos, j = e->next[i];
            if (e->sym[i] != t.left || j < 0 || e->sym[j] != t.right) continue; /* stale */
            e->sym[i] = t.merged;
            e->sym[j] = -1;
            e->next[i] = e->next[j];
            if (e->next[j] >= 0) e->prev[e->next[j]] = i;
            if (e->prev[i] >= 0 && candidate(e, e->prev[i], &c)) e->pending[np_++] = c;
            if (candidate(e, i, &c)) e->pending[np_++] = c;
        }
        for (size_t k = 0; k < np_; k++) heap_push(e->heap, &nh, e->pending[k]);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i]) {
        if (e->n == e->cap && !grow((void **)&e->out, &e->cap, e->n + 1, sizeof *e->out)) return LOOM_E_NOMEM;
        e->out[e->n++] = e->sym[i];
    }
    return LOOM_OK;
}

static void cache_reset(encoder *e)
{
    if (e->slot) memset(e->slot, 0, (e->slot_mask + 1) * sizeof *e->slot);
    e->n_entries = e->keys_len = e->ids_len = 0;
}

/* Look the piece up; on a hit append its ids and return 1. */
static int cache_get(encoder *e, const unsigned char *p, size_t m, uint64_t h)
{
    if (!e->slot) return 0;
    for (size_t i = h & e->slot_mask;; i = (i + 1) & e->slot_mask) {
        const uint32_t s = e->slot[i];
        if (!s) return 0;
        const cache_entry *c = &e->entries[s - 1];
        if (c->hash == h && c->key_len == m && !memcmp(e->keys + c->key_off, p, m))
            return emit(e, e->ids + c->ids_off, c->n_ids) ? 1 : -1;
    }
}

/* Remember the ids out[start..n) of piece p. Failure to cache is not an error. */
static void cache_put(encoder *e, const unsigned char *p, size_t m, uint64_t h, size_t start)
{
    const size_t k = e->n - start;
    if (e->n_entries >= CACHE_MAX_ENTRIES) cache_reset(e);
    if (2 * (e->n_entries + 1) > e->slot_mask + 1 || !e->slot) {
        const size_t cap = pow2_at_least(4 * (e->n_entries + 1));
        uint32_t *slot = calloc(cap, sizeof *slot);
        if (!slot) return;
        for (size_t q = 0; q < e->n_entries; q++)
            for (size_t i = e->entries[q].hash & (cap - 1);; i = (i + 1) & (cap - 1))
                if (!slot[i]) {
                    slot[i] = (uint32_t)q + 1;
                    break;
                }
        free(e->slot);
        e->slot = slot;
        e->slot_mask = cap - 1;
    }
    if (!grow((void **)&e->entries, &e->entries_cap, e->n_entries + 1, sizeof *e->entries) ||
        !grow((void **)&e->keys, &e->keys_cap, e->keys_len + m, 1) ||
        !grow((void **)&e->ids, &e->ids_cap, e->ids_len + k, sizeof *e->ids))
        return;
    cache_entry *c = &e->entries[e->n_entries];
    *c = (cache_entry){.hash = h, .key_off = e->keys_len, .ids_off = e->ids_len, .key_len = (uint32_t)m,
                       .n_ids = (uint32_t)k};
    memcpy(e->keys + e->keys_len, p, m);
    memcpy(e->ids + e->ids_len, e->out + start, k * sizeof *e->ids);
    e->keys_len += m;
    e->ids_len += k;
    for (size_t i = h & e->slot_mask;; i = (i + 1) & e->slot_mask)
        if (!e->slot[i]) {
            e->slot[i] = (uint32_t)++e->n_entries;
            break;
        }
}

static loom_status encode_piece(encoder *e, const unsigned char *p, size_t m)
{
    if (m == 0) return LOOM_OK;
    if (m == 1) return emit(e, &e->b->byte_id[p[0]], 1) ? LOOM_OK : LOOM_E_NOMEM;
    const int cacheable = m <= CACHE_MAX_KEY;
    const uint64_t h = cacheable ? hash_bytes(p, m) : 0;
    if (cacheable) {
        const int hit = cache_get(e, p, m, h);
        if (hit) return hit > 0 ? LOOM_OK : LOOM_E_NOMEM;
    }
    const size_t start = e->n;
    loom_status st = bpe_piece(e, p, m);
    if (st == LOOM_OK && cacheable) cache_put(e, p, m, h, start);
    return st;
}

static void encoder_free(encoder *e)
{
    free(e->slot);
    free(e->entries);
    free(e->keys);
    free(e->ids);
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->heap);
    free(e->pending);
}

/* Pre-tokenise and encode s[0, len): GPT-2's encoding of ordinary text. */
static loom_status encode_text(encoder *e, pcre2_match_data *md, const unsigned char *s, size_t len)
{
    const loom_bpe *b = e->b;
    loom_status st = LOOM_OK;
    size_t off = 0;
    while (off < len && st == LOOM_OK) {
        const int rc = pcre2_match(b->re, (PCRE2_SPTR)s, len, off, 0, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) { /* only invalid UTF-8 is left */
            st = encode_piece(e, s + off, len - off);
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = loom_error(LOOM_E_INTERNAL, "tokenizer: pre-tokenising at byte %zu: %s", off, (const char *)msg);
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0], end = ov[1];
        if (start > off) st = encode_piece(e, s + off, start - off); /* invalid bytes before the match */
        if (end <= start) end = start + 1;                           /* no empty match in this pattern; never loop */
        if (st == LOOM_OK) st = encode_piece(e, s + start, end - start);
        off = end;
    }
    return st;
}

#define EOT_TEXT "<|endoftext|>"

loom_status loom_bpe_encode(const loom_bpe *b, const char *text, size_t len, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!b || (!text && len)) return loom_error(LOOM_E_INVALID, "tokenizer: encode of NULL");
    encoder e = {.b = b};
    loom_status st = LOOM_OK;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(b->re, NULL);
    if (!md || !grow((void **)&e.out, &e.cap, len / 3 + 16, sizeof *e.out)) {
        st = loom_error(LOOM_E_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        goto done;
    }
    /* The special token in the text is its id, as HF's GPT2Tokenizer splits it out before
     * pre-tokenising (OpenAI's encoder.py would spell it out as seven pieces of text). */
    const unsigned char *s = (const unsigned char *)text;
    const size_t eot_len = sizeof EOT_TEXT - 1;
    size_t off = 0;
    while (st == LOOM_OK && off < len) {
        const unsigned char *at = b->eot >= 0 ? memmem(s + off, len - off, EOT_TEXT, eot_len) : NULL;
        const size_t stop = at ? (size_t)(at - s) : len;
        st = encode_text(&e, md, s + off, stop - off);
        if (st == LOOM_OK && at && !emit(&e, &b->eot, 1))
            st = loom_error(LOOM_E_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        off = at ? stop + eot_len : len;
    }
done:
    pcre2_match_data_free(md);
    if (st != LOOM_OK) {
        if (st == LOOM_E_NOMEM) loom_error(LOOM_E_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        free(e.out);
        encoder_free(&e);
        return st;
    }
    encoder_free(&e);
    *ids = e.out;
    *n = e.n;
    return LOOM_OK;
}

/* ---- decoding ----------------------------------------------------------------------------- */

loom_status loom_bpe_decode(const loom_bpe *b, const int32_t *ids, size_t n, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    if (!b || (!ids && n)) return loom_error(LOOM_E_INVALID, "tokenizer: decode of NULL");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= b->vocab_size || b->tok_len[ids[i]] < 0)
            return loom_error(LOOM_E_INVALID, "tokenizer: id %d (position %zu) is not in the vocabulary of %d", ids[i],
                              i, b->vocab_size);
        total += (size_t)b->tok_len[ids[i]];
    }
    char *out = malloc(total + 1);
    if (!out) return loom_error(LOOM_E_NOMEM, "tokenizer: out of memory decoding %zu ids", n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + k, b->tok_bytes + b->tok_off[ids[i]], (size_t)b->tok_len[ids[i]]);
        k += (size_t)b->tok_len[ids[i]];
    }
    out[k] = '\0';
    *text = out;
    *len = k;
    return LOOM_OK;
}
