/*
 * trainer_generate.c - --predict_with_generate (trainer_generate.h; docs/seq2seq.md#generation)
 * and the default decode_tokens hook.
 */
#include "trainer_generate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"
#include "generation_config.h"
#include "plugin_config.h"
#include "tokenizer_bpe.h"
#include "tokenizer_chars.h"
#include "tokenizer_spm.h"
#include "trainer_internal.h"

enum { TEXT_NONE, TEXT_BPE, TEXT_SPM, TEXT_CHARS };

static int readable(const char *dir, const char *name, char *path, size_t size)
{
    return loom_path_join(path, size, dir, name) == LOOM_OK && access(path, R_OK) == 0;
}

const char *loom_tokenizer_file_role(const char *path)
{
    struct stat info;
    if (!path || stat(path, &info) != 0 || !S_ISREG(info.st_mode)) return NULL;
    size_t n = strlen(path);
    return n > 6 && strcmp(path + n - 6, ".model") == 0 ? "spiece.model" : "char_vocab.json";
}

/* The tokenizer --tokenizer_name (else the model folder) holds, tried in HF's order of files:
 * GPT-2's vocab.json + merges.txt, T5's spiece.model, loom tokenize's char_vocab.json; or a
 * .model / char-vocabulary file named directly. None: the ids are written as numbers. */
static loom_status load_text_tokenizer(loom_trainer *t)
{
    const char *src =
        t->args.tokenizer_name && *t->args.tokenizer_name ? t->args.tokenizer_name : t->args.model_name_or_path;
    if (!src || !*src) return LOOM_OK;
    char path[4096];
    loom_status st = LOOM_OK;
    const char *role = loom_tokenizer_file_role(src);
    if (role && strcmp(role, "spiece.model") == 0) {
        st = loom_spm_load(src, (loom_spm **)&t->text_tokenizer);
        t->text_tokenizer_kind = TEXT_SPM;
    } else if (role) {
        st = loom_chars_load(src, (loom_chars **)&t->text_tokenizer);
        t->text_tokenizer_kind = TEXT_CHARS;
    } else if (readable(src, "vocab.json", path, sizeof path)) {
        st = loom_bpe_load_dir(src, (loom_bpe **)&t->text_tokenizer);
        t->text_tokenizer_kind = TEXT_BPE;
    } else if (readable(src, "spiece.model", path, sizeof path)) {
        st = loom_spm_load(path, (loom_spm **)&t->text_tokenizer);
        t->text_tokenizer_kind = TEXT_SPM;
    } else if (readable(src, "char_vocab.json", path, sizeof path)) {
        st = loom_chars_load(path, (loom_chars **)&t->text_tokenizer);
        t->text_tokenizer_kind = TEXT_CHARS;
    }
    if (st != LOOM_OK) t->text_tokenizer_kind = TEXT_NONE;
    return st;
}

void loom_trainer_text_tokenizer_free(loom_trainer *t)
{
    switch (t->text_tokenizer_kind) {
    case TEXT_BPE: loom_bpe_free(t->text_tokenizer); break;
    case TEXT_SPM: loom_spm_free(t->text_tokenizer); break;
    case TEXT_CHARS: loom_chars_free(t->text_tokenizer); break;
    default: break;
    }
    t->text_tokenizer = NULL;
    t->text_tokenizer_kind = TEXT_NONE;
}

loom_status loom_default_decode_tokens(loom_trainer *t, const int32_t *ids, size_t n, char **text)
{
    if (!t->text_tokenizer_tried) {
        t->text_tokenizer_tried = 1;
        loom_status st = load_text_tokenizer(t);
        if (st != LOOM_OK) return st;
    }
    size_t len = 0;
    switch (t->text_tokenizer_kind) {
    case TEXT_BPE: return loom_bpe_decode(t->text_tokenizer, ids, n, text, &len);
    case TEXT_SPM: return loom_spm_decode(t->text_tokenizer, ids, n, text, &len);
    case TEXT_CHARS: return loom_chars_decode(t->text_tokenizer, LOOM_SIDE_TARGET, ids, n, text, &len);
    default: break;
    }
    char *s = malloc(n * 12 + 1), *w = s;
    if (!s) return loom_error(LOOM_E_NOMEM, "out of memory for generated text");
    *w = 0;
    for (size_t i = 0; i < n; i++)
        w += sprintf(w, i ? " %" PRId32 : "%" PRId32, ids[i]);
    *text = s;
    return LOOM_OK;
}

/* Each rank decodes its own rows, with the tokenizer on its own disk: a rank whose disk lacks the
 * files would write ids where the others write words, and score them so into the summed metrics
 * (docs/checkpoints.md#files-on-one-node). So the default hook loads it up front and the ranks
 * compare what they loaded with rank 0's. Collective. */
static loom_status ranks_decode_alike(loom_trainer *t)
{
    if (t->hooks.decode_tokens != loom_default_decode_tokens) return LOOM_OK;
    loom_status st = LOOM_OK;
    if (!t->text_tokenizer_tried) {
        t->text_tokenizer_tried = 1;
        st = load_text_tokenizer(t);
    }
    if (t->world_size < 2 || (st = loom_trainer_fail_together(t, st)) != LOOM_OK) return st;
    double theirs = t->text_tokenizer_kind;
    const loom_comm_vtable *cv = t->comm.vtable;
    if ((st = cv->broadcast(t->comm.instance, &theirs, 1, LOOM_DTYPE_F64, 0, NULL)) != LOOM_OK) return st;
    static const char *const kinds[] = {"none", "vocab.json + merges.txt", "spiece.model", "char_vocab.json"};
    const char *src =
        t->args.tokenizer_name && *t->args.tokenizer_name ? t->args.tokenizer_name : t->args.model_name_or_path;
    const int mine = t->text_tokenizer_kind, rank0 = (int)theirs;
    if (mine != rank0 && mine == TEXT_NONE)
        st = loom_error(LOOM_E_NOT_FOUND,
                        "no tokenizer in %s (vocab.json + merges.txt, spiece.model or char_vocab.json), where rank 0 "
                        "decodes with %s: every node needs the tokenizer files to decode its share of the texts",
                        src ? src : "the model folder", kinds[rank0]);
    else if (mine != rank0)
        st = loom_error(LOOM_E_INVALID,
                        "the tokenizer in %s is %s, where rank 0 decodes with %s: every node needs the same "
                        "tokenizer files",
                        src ? src : "the model folder", kinds[mine], kinds[rank0]);
    return loom_trainer_fail_together(t, st);
}

/* The generation defaults come from each rank's own disk too (--generation_config, else the
 * model folder's generation_config.json, else config.json): a node whose copy lacks the file or
 * holds another would search otherwise than the rest, and its share of the texts would be
 * another decoding's. Collective. */
static loom_status ranks_search_alike(loom_trainer *t, const loom_beam_config *c)
{
    if (t->world_size < 2) return LOOM_OK;
    const double mine[] = {(double)c->num_beams,      (double)c->max_length, c->length_penalty,
                           (double)c->early_stopping, (double)c->min_length, (double)c->no_repeat_ngram_size};
    double theirs[sizeof mine / sizeof *mine];
    memcpy(theirs, mine, sizeof mine);
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->broadcast(t->comm.instance, theirs, sizeof mine / sizeof *mine, LOOM_DTYPE_F64, 0, NULL);
    if (st != LOOM_OK) return st;
    static const char *const names[] = {"num_beams",      "max_length", "length_penalty",
                                        "early_stopping", "min_length", "no_repeat_ngram_size"};
    const char *given = t->args.generation_config && *t->args.generation_config ? t->args.generation_config : NULL;
    char source[4200];
    if (given)
        snprintf(source, sizeof source, "--generation_config %s", given);
    else
        snprintf(source, sizeof source, "the model folder %s: generation_config.json, else config.json",
                 t->args.model_name_or_path ? t->args.model_name_or_path : "(none)");
    for (size_t i = 0; i < sizeof mine / sizeof *mine && st == LOOM_OK; i++)
        if (mine[i] != theirs[i])
            st = loom_error(LOOM_E_INVALID,
                            "generation setting %s is %g here and %g on rank 0 (from %s): every node needs the same "
                            "copy of it",
                            names[i], mine[i], theirs[i], source);
    return loom_trainer_fail_together(t, st);
}

loom_status loom_generation_settings(loom_trainer *t, loom_beam_config *config, loom_generation_ids *ids)
{
    loom_beam_config_from_args(&t->args, config);
    /* The model's ids first: the file's must be the same. */
    loom_status st = loom_trainer_generation_ids(t, ids);
    if (st == LOOM_OK) st = ranks_decode_alike(t);
    if (st == LOOM_OK) st = loom_trainer_fail_together(t, loom_beam_config_from_model(&t->args, ids, config));
    if (st == LOOM_OK) st = ranks_search_alike(t, config);
    if (st != LOOM_OK) return st;
    if (config->num_beams < 1)
        return loom_error(LOOM_E_INVALID, "--generation_num_beams / --num_beams must be >= 1 (got %lld)",
                          (long long)config->num_beams);
    if (config->max_length < 2)
        return loom_error(LOOM_E_INVALID,
                          "--generation_max_length / --max_length must be >= 2 (got %lld): it counts the decoder "
                          "start token",
                          (long long)config->max_length);
    int64_t context = 0;
    if (loom_config_i64(t->model.config, "n_positions", &context) == LOOM_CFG_PRESENT &&
        config->max_length - 1 > context)
        return loom_error(LOOM_E_INVALID,
                          "the generation length %lld (--generation_max_length / --max_length, or the generation "
                          "config's max_length, or its max_new_tokens + 1) is longer than the model's n_positions + 1 "
                          "= %lld",
                          (long long)config->max_length, (long long)(context + 1));
    return LOOM_OK;
}

loom_status loom_generation_pass_init(loom_trainer *t, loom_generation_pass *g, int64_t rows)
{
    memset(g, 0, sizeof *g);
    loom_status st = loom_generation_settings(t, &g->config, &g->ids);
    if (st != LOOM_OK) return st;
    g->rows = rows;
    g->out = malloc((size_t)(rows * (g->config.max_length - 1)) * sizeof *g->out);
    g->lengths = malloc((size_t)rows * sizeof *g->lengths);
    if (!g->out || !g->lengths) return loom_error(LOOM_E_NOMEM, "out of memory for generation");
    return LOOM_OK;
}

/* ids without the special tokens (HF's skip_special_tokens): start, eos, pad and -100. */
static size_t strip(const loom_generation_ids *ids, const int32_t *in, int64_t n, int32_t *out)
{
    size_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t v = in[i];
        if (v < 0 || v == ids->eos_token_id || v == ids->pad_token_id || v == ids->decoder_start_token_id) continue;
        out[m++] = v;
    }
    return m;
}

static loom_status keep_row(loom_predictions *keep, const int32_t *seq, int64_t len, int64_t stride, char *text)
{
    if (keep->generated_stride == 0) keep->generated_stride = stride;
    const int64_t i = keep->n_generated;
    if ((i & (i - 1)) == 0) { /* grow at powers of two */
        const int64_t cap = i ? 2 * i : 1;
        int32_t *g = realloc(keep->generated, (size_t)(cap * stride) * sizeof *g);
        if (g) keep->generated = g;
        int64_t *l = realloc(keep->generated_lengths, (size_t)cap * sizeof *l);
        if (l) keep->generated_lengths = l;
        char **tx = realloc(keep->generated_texts, (size_t)cap * sizeof *tx);
        if (tx) keep->generated_texts = tx;
        if (!g || !l || !tx) return free(text), loom_error(LOOM_E_NOMEM, "out of memory for generated predictions");
    }
    memcpy(keep->generated + i * stride, seq, (size_t)stride * sizeof *seq);
    keep->generated_lengths[i] = len;
    keep->generated_texts[i] = text;
    keep->n_generated++;
    return LOOM_OK;
}

loom_status loom_generation_pass_batch(loom_trainer *t, loom_generation_pass *g, const loom_batch *batch,
                                       loom_predictions *keep)
{
    const int64_t B = batch->batch_size, G = g->config.max_length - 1;
    if (B > g->rows)
        return loom_error(LOOM_E_INTERNAL, "generation: batch of %lld rows, room for %lld", (long long)B,
                          (long long)g->rows);
    loom_status st = loom_trainer_generate_batch(t, batch, &g->config, g->out, g->lengths);
    if (st != LOOM_OK) return st;
    const int64_t T = batch->labels.data ? batch->labels.shape[1] : 0;
    const int64_t longest = G > T ? G : T;
    int32_t *ids = malloc((size_t)(longest + 1) * sizeof *ids);
    if (!ids) return loom_error(LOOM_E_NOMEM, "out of memory for generation");
    for (int64_t b = 0; b < B && st == LOOM_OK; b++) {
        char *hyp = NULL, *ref = NULL;
        const int32_t *seq = g->out + b * G;
        st = t->hooks.decode_tokens(t, ids, strip(&g->ids, seq, g->lengths[b], ids), &hyp);
        if (st == LOOM_OK && T > 0) {
            const int32_t *labels = (const int32_t *)batch->labels.data + b * T;
            st = t->hooks.decode_tokens(t, ids, strip(&g->ids, labels, T, ids), &ref);
            if (st == LOOM_OK) st = loom_text_scores_add(&g->scores, hyp, ref, (double)g->lengths[b]);
        }
        free(ref);
        if (st == LOOM_OK && keep) {
            st = keep_row(keep, seq, g->lengths[b], G, hyp);
            hyp = NULL;
        }
        free(hyp);
    }
    free(ids);
    return st;
}

loom_status loom_generation_pass_finish(loom_trainer *t, loom_generation_pass *g, const char *prefix,
                                        loom_metrics *metrics)
{
    double sums[LOOM_TEXT_SCORES_N];
    memcpy(sums, &g->scores, sizeof sums);
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->all_reduce(t->comm.instance, sums, LOOM_TEXT_SCORES_N, LOOM_DTYPE_F64, LOOM_REDUCE_SUM, NULL);
    if (st != LOOM_OK) return st;
    memcpy(&g->scores, sums, sizeof sums);
    return loom_text_scores_metrics(&g->scores, prefix, metrics);
}

void loom_generation_pass_free(loom_generation_pass *g)
{
    free(g->out);
    free(g->lengths);
    memset(g, 0, sizeof *g);
}

static void print_generated(FILE *f, const void *context)
{
    const loom_predictions *p = context;
    for (int64_t i = 0; i < p->n_generated; i++) {
        /* One line per example: a newline inside a text would break the count. */
        for (const char *c = p->generated_texts[i]; *c; c++)
            fputc(*c == '\n' ? ' ' : *c, f);
        fputc('\n', f);
    }
}

loom_status loom_write_generated_predictions(const loom_predictions *p, const char *path)
{
    return loom_write_text_atomic(path, print_generated, p);
}
