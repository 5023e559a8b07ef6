/* fuzz_bpe.c - GPT-2 BPE files (core/data/tokenizer_bpe.c): vocab.json, then merges.txt after the
 * separator line; a vocabulary that loads encodes a text with every byte and decodes it back. */
#include "fuzz_util.h"
#include "tokenizer_bpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_part parts[2];
    size_t n = fuzz_split(data, size, parts, 2);
    char vocab[256], merges[256];
    fuzz_write(NULL, "vocab.json", parts[0].data, parts[0].size, vocab, sizeof vocab);
    fuzz_write(NULL, "merges.txt", n > 1 ? parts[1].data : NULL, n > 1 ? parts[1].size : 0, merges, sizeof merges);
    loom_bpe *bpe = NULL;
    if (loom_bpe_load(vocab, merges, &bpe) == LOOM_OK) {
        static const char text[] = "Hello, world! It's 2024 \xc3\xa9t\xc3\xa9\n\n  \xff\xfe tokens";
        int32_t *ids = NULL;
        size_t n_ids = 0, len = 0;
        char *back = NULL;
        if (loom_bpe_encode(bpe, text, sizeof text - 1, &ids, &n_ids) != LOOM_OK) abort();
        if (loom_bpe_decode(bpe, ids, n_ids, &back, &len) != LOOM_OK) abort();
        /* Every byte has a token, so the round trip is exact (tokenizer_bpe.h). */
        if (len != sizeof text - 1 || memcmp(back, text, len) != 0) abort();
        free(ids);
        free(back);
    }
    loom_error_clear();
    loom_bpe_free(bpe);
    return 0;
}
