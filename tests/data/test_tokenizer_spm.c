/*
 * test_tokenizer_spm.c - the C boundary over libsentencepiece (core/data/tokenizer_spm.h): a
 * model trained here with Debian's spm_train loads, decode(encode(x)) == x for normalised text,
 * T5's special ids are reported, and bad ids or files are errors, never exceptions. Skipped (77)
 * without spm_train or without the library in this build.
 */
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "test_util.h"
#include "tokenizer_spm.h"

#define CONTAINS(hay, needle) (strstr((hay), (needle)) != NULL)

int main(void)
{
    if (system("command -v spm_train >/dev/null 2>&1") != 0) {
        printf("test_tokenizer_spm: skipped: spm_train (Debian's sentencepiece) is not installed\n");
        return 77;
    }
    char dir[] = "/tmp/loom_spm_XXXXXX", corpus[128], model[128], cmd[1024];
    if (!mkdtemp(dir)) return 1;
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(model, sizeof model, "%s/spiece.model", dir);
    FILE *f = fopen(corpus, "w");
    if (!f) return 1;
    const char *words[] = {"the", "house", "is", "small", "casa", "este", "mica", "green", "dog", "big"};
    for (int i = 0; i < 300; i++) {
        for (int j = 0; j < 2 + i % 5; j++)
            fprintf(f, "%s%s", j ? " " : "", words[(i * 3 + j * 7) % 10]);
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "spm_train --input=%s --model_prefix=%s/spiece --vocab_size=30 --hard_vocab_limit=false "
             "--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --minloglevel=2 --num_threads=1 >/dev/null 2>&1",
             corpus, dir);
    CHECK(system(cmd) == 0);

    loom_spm *spm = NULL;
    loom_status st = loom_spm_load(model, &spm);
    if (st == LOOM_E_UNSUPPORTED) {
        printf("test_tokenizer_spm: skipped: %s\n", loom_error_message());
        return 77;
    }
    CHECK(st == LOOM_OK && spm);
    if (spm) {
        CHECK(loom_spm_pad(spm) == 0 && loom_spm_eos(spm) == 1 && loom_spm_unk(spm) == 2);
        CHECK(loom_spm_vocab_size(spm) >= 10);
        int32_t *ids = NULL;
        size_t n = 0;
        const char *text = "the big house is green";
        CHECK(loom_spm_encode(spm, text, strlen(text), &ids, &n) == LOOM_OK && n > 0);
        char *back = NULL;
        size_t len = 0;
        CHECK(loom_spm_decode(spm, ids, n, &back, &len) == LOOM_OK);
        CHECK(back && !strcmp(back, text) && len == strlen(text));
        free(back);
        free(ids);
        int32_t bad[] = {3, loom_spm_vocab_size(spm)};
        CHECK(loom_spm_decode(spm, bad, 2, &back, &len) == LOOM_E_INVALID && back == NULL);
        CHECK(CONTAINS(loom_error_message(), "outside the SentencePiece model"));
        CHECK(loom_spm_encode(spm, "", 0, &ids, &n) == LOOM_OK && n == 0 && ids);
        free(ids);
        loom_spm_free(spm);
    }
    spm = NULL;
    CHECK(loom_spm_load(corpus, &spm) == LOOM_E_FORMAT && spm == NULL); /* a text file is no model */
    CHECK(CONTAINS(loom_error_message(), corpus) && CONTAINS(loom_error_message(), "not a SentencePiece model"));
    CHECK(loom_spm_load("/nonexistent/spiece.model", &spm) == LOOM_E_NOT_FOUND);
    loom_spm_free(NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("test_tokenizer_spm");
}
