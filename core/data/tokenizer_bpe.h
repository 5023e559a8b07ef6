/*
 * tokenizer_bpe.h - GPT-2's byte-level BPE tokenizer (OpenAI's encoder.py, HF GPT2Tokenizer).
 *
 * Files: the vocabulary is a JSON object {"token": id, ...} (HF vocab.json, OpenAI
 * encoder.json) and the merges are a text file (HF merges.txt, OpenAI vocab.bpe): an optional
 * first line "#version: ...", then one merge "a b" per line, in rank order (rank 0 first).
 * Tokens are written in GPT-2's byte alphabet (bytes_to_unicode: every byte is one printable
 * character, e.g. ' ' -> 'Ġ', '\n' -> 'Ċ').
 *
 * Encoding is exactly GPT-2's:
 *   1. pre-tokenise with  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (PCRE2, UTF + UCP, JIT when available);
 *   2. each piece's bytes start as one symbol per byte; repeatedly take the adjacent pair of
 *      lowest merge rank and merge every occurrence of it, left to right, until no adjacent pair
 *      has a rank;
 *   3. emit the vocabulary id of each remaining symbol.
 * One special token: "<|endoftext|>" in the text is its id (loom_bpe_eot()), as HF's
 * GPT2Tokenizer splits it out before step 1 (OpenAI's encoder.py spells it as text); the text on
 * either side is encoded on its own, spaces included.
 *
 * Invalid UTF-8 (GPT-2's Python encoder cannot even receive it): the text is matched with
 * PCRE2_MATCH_INVALID_UTF, so a match never includes an invalid sequence; the bytes between
 * matches (the invalid sequences) are encoded as pieces of their own. Nothing is dropped, so
 * decode(encode(x)) == x for every byte string x. Valid UTF-8 encodes exactly as GPT-2 does.
 *
 * Decoding concatenates the tokens' bytes; the result is the raw bytes (ids that split a
 * multi-byte character give bytes that are not valid UTF-8; GPT-2's decode() would replace
 * them with U+FFFD, loom leaves that to the caller).
 *
 * Threading: a loaded loom_bpe is immutable; encode/decode may run concurrently on it.
 */
#ifndef LOOM_CORE_TOKENIZER_BPE_H
#define LOOM_CORE_TOKENIZER_BPE_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

typedef struct loom_bpe loom_bpe;

/* Load a vocabulary and its merges (see above for the formats). Errors name the file: a
 * missing file (LOOM_E_NOT_FOUND), malformed JSON, a token outside the byte alphabet, a
 * duplicate or negative id, a byte without a single-byte token, a merge line that is not two
 * tokens, a merge of tokens (or into a token) missing from the vocabulary (LOOM_E_FORMAT).
 * *out is freed with loom_bpe_free. */
loom_status loom_bpe_load(const char *vocab_json, const char *merges_txt, loom_bpe **out);

/* Find the two files in `dir`: vocab.json or encoder.json, merges.txt or vocab.bpe. */
loom_status loom_bpe_load_dir(const char *dir, loom_bpe **out);

/* Encode text[0..len) (any bytes; NUL is an ordinary byte). *ids is malloc'd (never NULL on
 * success, even for n == 0) and freed by the caller. */
loom_status loom_bpe_encode(const loom_bpe *bpe, const char *text, size_t len, int32_t **ids, size_t *n);

/* Decode ids[0..n) to the concatenation of their bytes. *text is malloc'd with a NUL after
 * the *len bytes (not counted). An id outside the vocabulary is LOOM_E_INVALID. */
loom_status loom_bpe_decode(const loom_bpe *bpe, const int32_t *ids, size_t n, char **text, size_t *len);

/* 1 + the largest id of the vocabulary (50257 for GPT-2). */
int32_t loom_bpe_vocab_size(const loom_bpe *bpe);

/* The id of "<|endoftext|>" (50256 for GPT-2), or -1 when the vocabulary has none. */
int32_t loom_bpe_eot(const loom_bpe *bpe);

/* Number of merges loaded. */
size_t loom_bpe_merges_count(const loom_bpe *bpe);

/* Free; NULL is a no-op. */
void loom_bpe_free(loom_bpe *bpe);

#endif
