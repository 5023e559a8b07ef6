/*
 * command_tokenize.c - `loom tokenize`: encode a text file with GPT-2's BPE into llm.c token
 * shards (core/data/data_tokens.h): OUT/train.bin and OUT/validation.bin, the validation split
 * being the LAST fraction of the tokens. Also prints the ids of a string (--text) or decodes
 * ids (--decode), for debugging and tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "data_tokens.h"
#include "error.h"
#include "fileutil.h"
#include "json_util.h"
#include "stale_outputs.h"
#include "tokenizer_bpe.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: loom tokenize --input FILE.txt --vocab_dir DIR --output_dir OUT\n"
                 "                     [--validation_fraction 0.1] [--append_eot]\n"
                 "       loom tokenize --vocab_dir DIR --print (--text \"...\" | --input FILE)\n"
                 "       loom tokenize --vocab_dir DIR --decode \"ids...\"\n"
                 "\n"
                 "Encodes with GPT-2's byte-level BPE (DIR holds vocab.json + merges.txt, or\n"
                 "encoder.json + vocab.bpe; scripts/fetch-data.sh fetches them) and writes llm.c\n"
                 "token shards OUT/train.bin and OUT/validation.bin (the last\n"
                 "--validation_fraction of the tokens; without any, a validation.bin an earlier\n"
                 "run left in OUT is removed). --append_eot adds <|endoftext|> after the\n"
                 "text. --print writes the ids on one line; --decode writes the text.\n"
                 "--vocab_dir defaults to $LOOM_DATA_DIR/gpt2.\n"
                 "\n");
    loom_tokenize_pairs_usage(out);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static loom_status write_split(const char *dir, const char *name, const uint16_t *tokens, uint64_t n)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st == LOOM_OK) st = loom_tokens_write(path, tokens, n);
    if (st == LOOM_OK) printf("wrote %s: %llu tokens\n", path, (unsigned long long)n);
    return st;
}

void loom_print_text(FILE *out, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t ok = loom__utf8_invalid_at(s + i, len - i);
        fwrite(s + i, 1, ok, out);
        if ((i += ok) >= len) break;
        const unsigned char lead = (unsigned char)s[i];
        size_t follow = lead >= 0xC2 && lead <= 0xDF   ? 1
                        : lead >= 0xE0 && lead <= 0xEF ? 2
                        : lead >= 0xF0 && lead <= 0xF4 ? 3
                                                       : 0;
        i++; /* the lead, and the continuation bytes of its unfinished character */
        while (follow-- > 0 && i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        fputs("\xEF\xBF\xBD", out);
    }
}

/* --decode "15496 995": ids separated by spaces or commas. */
static int decode_ids(const loom_bpe *bpe, const char *text)
{
    size_t n = 0, cap = 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = text;
    while (ids) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') p++;
        if (!*p) break;
        char *end = NULL;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX) {
            free(ids);
            fprintf(stderr, "loom: error: tokenize: --decode: '%s' is not a list of token ids\n", text);
            return 2;
        }
        if (n == cap) {
            int32_t *more = realloc(ids, 2 * cap * sizeof *ids);
            if (!more) break;
            ids = more, cap *= 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (!ids) return loom_command_fail(loom_error(LOOM_E_NOMEM, "tokenize: out of memory"));
    char *out = NULL;
    size_t len = 0;
    loom_status st = loom_bpe_decode(bpe, ids, n, &out, &len);
    free(ids);
    if (st != LOOM_OK) return loom_command_fail(st);
    loom_print_text(stdout, out, len);
    fputc('\n', stdout);
    free(out);
    return 0;
}

static int print_ids(const loom_bpe *bpe, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    loom_status st = loom_bpe_encode(bpe, text, len, &ids, &n);
    if (st != LOOM_OK) return loom_command_fail(st);
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

int loom_command_tokenize(int argc, char **argv)
{
    /* Text pairs for sequence-to-sequence training (tokenize_pairs.c). */
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--train_file") || !strcmp(argv[i], "--validation_file") ||
            !strcmp(argv[i], "--test_file"))
            return loom_tokenize_pairs(argc, argv);
    const char *input = NULL, *vocab_dir = NULL, *output = NULL, *text = NULL, *decode = NULL;
    double validation_fraction = 0.1;
    int append_eot = 0, print = 0;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(flag, "--append_eot")) {
            append_eot = 1;
            continue;
        }
        if (!strcmp(flag, "--print")) {
            print = 1;
            continue;
        }
        const char **slot = !strcmp(flag, "--input")        ? &input
                            : !strcmp(flag, "--vocab_dir")  ? &vocab_dir
                            : !strcmp(flag, "--output_dir") ? &output
                            : !strcmp(flag, "--text")       ? &text
                            : !strcmp(flag, "--decode")     ? &decode
                                                            : NULL;
        const int fraction = !strcmp(flag, "--validation_fraction");
        if (!slot && !fraction)
            return loom_command_fail(
                loom_error(LOOM_E_INVALID, "tokenize: unknown argument '%s' (see loom tokenize --help)", flag));
        if (!value)
            return loom_command_fail(
                loom_error(LOOM_E_INVALID, "tokenize: %s needs a value (see loom tokenize --help)", flag));
        if (slot)
            *slot = value;
        else if (!loom_parse_fraction(value, &validation_fraction))
            return loom_command_fail(
                loom_error(LOOM_E_INVALID, "tokenize: --validation_fraction %s: must be a number in [0, 1)", value));
        i++;
    }
    char default_vocab[4096];
    if (!vocab_dir && getenv("LOOM_DATA_DIR") &&
        loom_path_join(default_vocab, sizeof default_vocab, getenv("LOOM_DATA_DIR"), "gpt2") == LOOM_OK)
        vocab_dir = default_vocab;
    if (!vocab_dir) {
        fprintf(stderr, "loom: error: tokenize: --vocab_dir is required (or set LOOM_DATA_DIR)\n");
        return 2;
    }
    if (text) print = 1;
    if (!decode && !input && !text) {
        fprintf(stderr, "loom: error: tokenize: give --input FILE (or --text \"...\" / --decode \"ids\")\n");
        usage(stderr);
        return 2;
    }
    if (!decode && !print && !output) {
        fprintf(stderr, "loom: error: tokenize: --output_dir is required\n");
        return 2;
    }

    loom_bpe *bpe = NULL;
    loom_status st = loom_bpe_load_dir(vocab_dir, &bpe);
    if (st != LOOM_OK) return loom_command_fail(st);
    int rc = 0;
    if (decode) {
        rc = decode_ids(bpe, decode);
        goto out;
    }
    if (text) {
        rc = print_ids(bpe, text, strlen(text));
        goto out;
    }

    char *data = NULL;
    size_t len = 0;
    static const char *const written[] = {"train.bin", "validation.bin"};
    if (output) st = loom_refuse_input_as_output("tokenize", "input", input, output, written, 2);
    if (st != LOOM_OK) {
        rc = loom_command_fail(st);
        goto out;
    }
    st = loom_read_file(input, &data, &len);
    if (st != LOOM_OK) {
        rc = loom_command_fail(st);
        goto out;
    }
    if (print) {
        rc = print_ids(bpe, data, len);
        free(data);
        goto out;
    }
    const double t0 = now_seconds();
    int32_t *ids = NULL;
    size_t n = 0;
    st = loom_bpe_encode(bpe, data, len, &ids, &n);
    free(data);
    if (st != LOOM_OK) {
        rc = loom_command_fail(loom_error_context(st, "%s", input));
        goto out;
    }
    const double seconds = now_seconds() - t0;
    const int32_t eot = loom_bpe_eot(bpe);
    if (append_eot && eot < 0) {
        free(ids);
        rc = loom_command_fail(
            loom_error(LOOM_E_INVALID, "%s: the vocabulary has no <|endoftext|> token for --append_eot", vocab_dir));
        goto out;
    }
    const size_t total = n + (append_eot ? 1 : 0);
    uint16_t *tokens = malloc((total ? total : 1) * sizeof *tokens);
    if (!tokens) {
        free(ids);
        rc = loom_command_fail(loom_error(LOOM_E_NOMEM, "tokenize: out of memory for %zu tokens", total));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] > UINT16_MAX) { /* a vocabulary of more than 65536 tokens */
            free(ids);
            free(tokens);
            rc = loom_command_fail(loom_error(LOOM_E_UNSUPPORTED, "%s: token id %d does not fit llm.c's uint16 shards",
                                              vocab_dir, (int)ids[i]));
            goto out;
        }
        tokens[i] = (uint16_t)ids[i];
    }
    free(ids);
    if (append_eot) tokens[n] = (uint16_t)eot;
    printf("tokenized %s: %zu bytes -> %zu tokens%s (%.2f bytes/token, %.2f s)\n", input, len, total,
           append_eot ? " incl. <|endoftext|>" : "", total ? (double)len / (double)total : 0.0, seconds);

    const uint64_t n_val = (uint64_t)(validation_fraction * (double)total);
    const uint64_t n_train = total - n_val;
    st = loom_mkdir_p(output);
    /* Without a validation split, one an earlier text left would be evaluated beside this
     * train.bin: it goes first, so an interrupted run leaves no mix of two texts either. */
    char why[128];
    snprintf(why, sizeof why, "no validation split: --validation_fraction %g of %zu tokens", validation_fraction,
             total);
    if (st == LOOM_OK && !n_val) st = loom_remove_stale_output("tokenize", output, "validation.bin", why);
    if (st == LOOM_OK && n_val) st = loom_clear_rewritten_outputs("tokenize", output, written + 1, 1);
    if (st == LOOM_OK) st = write_split(output, "train.bin", tokens, n_train);
    if (st == LOOM_OK && n_val) st = write_split(output, "validation.bin", tokens + n_train, n_val);
    if (st == LOOM_OK && !n_val) printf("%s\n", why);
    free(tokens);
    if (st != LOOM_OK) rc = loom_command_fail(st);
out:
    loom_bpe_free(bpe);
    return rc;
}
