/*
 * tokenizer_chars.h - a vocabulary built from the data: characters, or whitespace-separated
 * tokens, per side of a pair (docs/seq2seq.md#tokenizers). For tasks whose symbols are their
 * own tokens, such as grapheme-to-phoneme: the letters of a word in, ARPAbet phones out.
 *
 * A side is split one of two ways: LOOM_SPLIT_CHAR, every Unicode character (UTF-8 code point,
 * spaces included) is a token; LOOM_SPLIT_SPACE, the tokens are the runs of non-whitespace
 * (ASCII space, tab, CR, LF, VT, FF) between whitespace. Both sides share one id space, as T5's
 * shared embedding wants. Ids 0, 1, 2 are T5's <pad>, </s>, <unk>; the symbols of the data
 * follow in byte order, so the same data gives the same vocabulary.
 *
 * The file (written next to the tokenized data, read back to tokenize more data the same way)
 * is JSON: {"format": "loom-char-vocab", "source_split": "char", "target_split": "space",
 *           "tokens": ["<pad>", "</s>", "<unk>", "A", ...]}   (id = position).
 *
 * Threading: a finished vocabulary is immutable; encode/decode may run concurrently on it.
 */
#ifndef LOOM_CORE_TOKENIZER_CHARS_H
#define LOOM_CORE_TOKENIZER_CHARS_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

#define LOOM_SPLIT_CHAR 0
#define LOOM_SPLIT_SPACE 1
#define LOOM_SIDE_SOURCE 0
#define LOOM_SIDE_TARGET 1
#define LOOM_CHARS_PAD 0
#define LOOM_CHARS_EOS 1
#define LOOM_CHARS_UNK 2

typedef struct loom_chars loom_chars;

/* An empty vocabulary to build: add the data's texts, then loom_chars_finish. */
loom_status loom_chars_new(int source_split, int target_split, loom_chars **out);

/* Add the symbols of text[0..len) on `side`. A symbol spelled like a special token ("<pad>",
 * "</s>", "<unk>") is LOOM_E_INVALID (the caller names the line). */
loom_status loom_chars_add(loom_chars *v, int side, const char *text, size_t len);

/* Number the symbols added (byte order, after the special tokens). */
loom_status loom_chars_finish(loom_chars *v);

/* Read / write the JSON file. Load errors name the file. */
loom_status loom_chars_load(const char *path, loom_chars **out);
loom_status loom_chars_save(const loom_chars *v, const char *path);

/* The split of a side (LOOM_SPLIT_*). */
int loom_chars_split(const loom_chars *v, int side);

/* Number of tokens, special tokens included. */
int32_t loom_chars_size(const loom_chars *v);

/* Encode text[0..len) of `side`: *ids malloc'd (never NULL on success) with room for one id
 * more than *n (for </s>). A symbol the
 * vocabulary lacks gets id -1; callers report it (loom_chars_symbol_at gives its spelling). */
loom_status loom_chars_encode(const loom_chars *v, int side, const char *text, size_t len, int32_t **ids, size_t *n);

/* The bytes of the i-th symbol of text[0..len) on `side` (for error messages): *at, *size. */
void loom_chars_symbol_at(const loom_chars *v, int side, const char *text, size_t len, size_t i, const char **at,
                          size_t *size);

/* Decode ids[0..n) of `side`: the symbols joined by nothing (char) or one space (space);
 * <pad> and </s> are left out. *text malloc'd, NUL-terminated. An unknown id is LOOM_E_INVALID. */
loom_status loom_chars_decode(const loom_chars *v, int side, const int32_t *ids, size_t n, char **text, size_t *len);

/* The spelling of token `id` (NULL outside the vocabulary). */
const char *loom_chars_token(const loom_chars *v, int32_t id);

void loom_chars_free(loom_chars *v);

#endif
