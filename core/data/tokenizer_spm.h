/*
 * tokenizer_spm.h - SentencePiece models (the spiece.model of an HF T5 folder) through Debian's
 * libsentencepiece, behind a C interface (docs/seq2seq.md#tokenizers).
 *
 * The library is C++; tokenizer_spm.cpp wraps it and catches every exception at this boundary,
 * so a caller only ever sees a loom_status and a one-line message. A build without
 * libsentencepiece still has these functions: loom_spm_load then fails with
 * LOOM_E_UNSUPPORTED saying what to install.
 *
 * Encoding is T5Tokenizer's for plain text: the model's pieces (EncodeAsIds); the caller appends
 * loom_spm_eos(). Ids are the model's own; T5's <extra_id_N> sentinels, which HF adds above the
 * model's pieces, are not produced.
 *
 * Threading: a loaded loom_spm is immutable; encode/decode may run concurrently on it.
 */
#ifndef LOOM_CORE_TOKENIZER_SPM_H
#define LOOM_CORE_TOKENIZER_SPM_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_spm loom_spm;

/* Load a model file (a serialized ModelProto). Errors name the file: LOOM_E_NOT_FOUND,
 * LOOM_E_FORMAT (not a SentencePiece model), LOOM_E_UNSUPPORTED (built without the library).
 * Free with loom_spm_free. */
loom_status loom_spm_load(const char *path, loom_spm **out);

/* Encode text[0..len); *ids is malloc'd (never NULL on success) with room for one id more than
 * *n (for </s>), and freed by the caller. */
loom_status loom_spm_encode(const loom_spm *spm, const char *text, size_t len, int32_t **ids, size_t *n);

/* Decode ids[0..n) to text; *text is malloc'd, NUL-terminated, *len bytes. An id outside the
 * model is LOOM_E_INVALID. */
loom_status loom_spm_decode(const loom_spm *spm, const int32_t *ids, size_t n, char **text, size_t *len);

/* Number of pieces; the ids of </s>, <pad> and <unk> (-1 when the model has none). */
int32_t loom_spm_vocab_size(const loom_spm *spm);
int32_t loom_spm_eos(const loom_spm *spm);
int32_t loom_spm_pad(const loom_spm *spm);
int32_t loom_spm_unk(const loom_spm *spm);

/* Free; NULL is a no-op. */
void loom_spm_free(loom_spm *spm);

#ifdef __cplusplus
}
#endif

#endif
