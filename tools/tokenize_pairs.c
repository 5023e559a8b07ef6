/*
 * tokenize_pairs.c - `loom tokenize --train_file ...`: text pairs in HF's JSON-lines shapes to
 * pair files (docs/seq2seq.md#tokenize), as HF's run_translation.py preprocesses them:
 *
 *   {"translation": {"en": "...", "ro": "..."}}   with --source_lang en --target_lang ro
 *   {"source": "...", "target": "..."}
 *
 * source = --source_prefix + the source text; each side is tokenized, cut to its maximum
 * length less one and closed with </s> (T5Tokenizer with truncation=True), or refused when
 * longer with --truncation false. The tokenizer is a SentencePiece model (--tokenizer_name: the
 * spiece.model of an HF T5 folder) or a character / whitespace vocabulary built from the files
 * of the command, written next to the output and reused when it is there (--char_vocab).
 * Every error names the file and line.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "commands.h"
#include "stale_outputs.h"
#include "error.h"
#include "fileutil.h"
#include "json_util.h"
#include "tokenizer_chars.h"
#include "tokenizer_spm.h"

enum { TRAIN, VALIDATION, TEST, N_SPLITS };
static const char *const g_flag[N_SPLITS] = {"train_file", "validation_file", "test_file"};
static const char *const g_out[N_SPLITS] = {"train.jsonl", "validation.jsonl", "test.jsonl"};

typedef struct pair_text {
    char *side[2]; /* source (prefix included), target */
    int64_t line;
} pair_text;

typedef struct pair_file {
    const char *path;
    pair_text *pairs;
    int64_t n, cap;
} pair_file;

typedef struct options {
    const char *files[N_SPLITS], *output_dir, *tokenizer, *vocab_file, *source_lang, *target_lang, *prefix;
    int char_vocab, truncation, split[2], split_given[2];
    long max_length[2], val_max_target_length;
} options;

void loom_tokenize_pairs_usage(FILE *out)
{
    fprintf(out, "usage: loom tokenize --train_file FILE.jsonl [--validation_file FILE.jsonl]\n"
                 "         [--test_file FILE.jsonl] --output_dir OUT\n"
                 "         (--tokenizer_name T5_DIR|spiece.model | --char_vocab)\n"
                 "         [--source_lang en --target_lang ro] [--source_prefix TEXT]\n"
                 "         [--max_source_length 1024] [--max_target_length 128]\n"
                 "         [--val_max_target_length N] [--truncation true|false]\n"
                 "         [--vocab_file FILE] [--source_split char|space]\n"
                 "         [--target_split char|space]\n"
                 "\n"
                 "Tokenizes text pairs, JSON lines of {\"translation\": {\"en\": ..., \"ro\": ...}}\n"
                 "(with --source_lang/--target_lang) or {\"source\": ..., \"target\": ...}, into\n"
                 "the pair files `loom train` reads: OUT/train.jsonl, OUT/validation.jsonl,\n"
                 "OUT/test.jsonl of {\"input_ids\": [...], \"labels\": [...]}. Each side ends with\n"
                 "</s>; a side longer than its maximum is cut (or refused with --truncation\n"
                 "false). --val_max_target_length (default: --max_target_length) applies to the\n"
                 "validation and test files. --source_prefix goes before every source.\n"
                 "--tokenizer_name: a SentencePiece model (the spiece.model of an HF T5 folder).\n"
                 "--char_vocab: a vocabulary of the data's characters (--source_split and\n"
                 "--target_split char, the default) or whitespace-separated tokens (space),\n"
                 "written to OUT/char_vocab.json (or --vocab_file) and reused when it exists.\n"
                 "Files already tokenized ({\"input_ids\", \"labels\"}) need no tokenizing: give\n"
                 "them to `loom train --train_file` as they are. See docs/seq2seq.md.\n");
}

static const char g_unknown[] = "unknown";

static const char *parse_split(const char *value, int *split)
{
    if (!strcmp(value, "char"))
        *split = LOOM_SPLIT_CHAR;
    else if (!strcmp(value, "space"))
        *split = LOOM_SPLIT_SPACE;
    else
        return "must be char or space";
    return NULL;
}

static const char *parse_length(const char *value, long *out)
{
    char *end = NULL;
    errno = 0;
    const long v = isdigit((unsigned char)*value) ? strtol(value, &end, 10) : 0;
    if (!end || *end || errno || v < 1 || v > INT32_MAX / 2) return "must be a whole number from 1 to 1073741823";
    *out = v;
    return NULL;
}

/* Set one flag's value; NULL, or what is wrong with the value (g_unknown: no such flag). */
static const char *set_option(options *o, const char *flag, const char *value)
{
    for (int s = 0; s < N_SPLITS; s++)
        if (!strncmp(flag, "--", 2) && !strcmp(flag + 2, g_flag[s])) {
            o->files[s] = value;
            return *value ? NULL : "must name a file";
        }
    if (!strcmp(flag, "--output_dir"))
        o->output_dir = value;
    else if (!strcmp(flag, "--tokenizer_name") || !strcmp(flag, "--model_name_or_path"))
        o->tokenizer = value;
    else if (!strcmp(flag, "--vocab_file"))
        o->vocab_file = value, o->char_vocab = 1;
    else if (!strcmp(flag, "--source_lang"))
        o->source_lang = value;
    else if (!strcmp(flag, "--target_lang"))
        o->target_lang = value;
    else if (!strcmp(flag, "--source_prefix"))
        o->prefix = value;
    else if (!strcmp(flag, "--max_source_length"))
        return parse_length(value, &o->max_length[0]);
    else if (!strcmp(flag, "--max_target_length"))
        return parse_length(value, &o->max_length[1]);
    else if (!strcmp(flag, "--val_max_target_length"))
        return parse_length(value, &o->val_max_target_length);
    else if (!strcmp(flag, "--source_split"))
        return o->split_given[0] = 1, parse_split(value, &o->split[0]);
    else if (!strcmp(flag, "--target_split"))
        return o->split_given[1] = 1, parse_split(value, &o->split[1]);
    else if (!strcmp(flag, "--truncation")) {
        o->truncation = !strcmp(value, "true");
        return o->truncation || !strcmp(value, "false") ? NULL : "must be true or false";
    } else
        return g_unknown;
    return NULL;
}

/* One line naming the flag and what is wrong; the usage is --help's. */
static int bad_argument(const char *flag, const char *value, const char *why)
{
    if (why == g_unknown)
        fprintf(stderr, "loom: error: tokenize: unknown argument '%s' (see loom tokenize --help)\n", flag);
    else if (!value)
        fprintf(stderr, "loom: error: tokenize: %s needs a value (see loom tokenize --help)\n", flag);
    else
        fprintf(stderr, "loom: error: tokenize: %s %s: %s\n", flag, value, why);
    return 2;
}

static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.truncation = 1, .max_length = {1024, 128}, .val_max_target_length = -1};
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            loom_tokenize_pairs_usage(stdout);
            return 0;
        }
        if (!strcmp(flag, "--char_vocab")) {
            o->char_vocab = 1;
            continue;
        }
        /* "" for a missing value still tells a known flag from an unknown one. */
        const char *why = set_option(o, flag, value ? value : "");
        if (why || !value) return bad_argument(flag, value, why);
        i++;
    }
    if (o->val_max_target_length < 0) o->val_max_target_length = o->max_length[1];
    const char *missing = !o->files[TRAIN] && !o->files[VALIDATION] && !o->files[TEST]
                              ? "give --train_file (and/or --validation_file, --test_file)"
                          : !o->output_dir ? "--output_dir is required"
                          : !o->tokenizer && !o->char_vocab
                              ? "give --tokenizer_name (a SentencePiece model) or --char_vocab"
                          : o->tokenizer && o->char_vocab ? "--tokenizer_name and --char_vocab are both set: pick one"
                          : !o->source_lang != !o->target_lang ? "--source_lang and --target_lang go together"
                                                               : NULL;
    if (missing) {
        fprintf(stderr, "loom: error: tokenize: %s\n", missing);
        return 2;
    }
    return -1;
}

/* ---- reading text pairs ------------------------------------------------------------------ */

static loom_status side_text(const char *path, int64_t line, const cJSON *obj, const char *key, const char *where,
                             const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        char keys[256] = "";
        size_t k = 0;
        for (const cJSON *c = obj->child; c && k + 4 < sizeof keys; c = c->next)
            k += (size_t)snprintf(keys + k, sizeof keys - k, "%s%s", k ? ", " : "", c->string);
        return loom_error(LOOM_E_FORMAT, "%s:%lld: no \"%s\" in %s (it has: %s)", path, (long long)line, key, where,
                          k ? keys : "nothing");
    }
    if (!cJSON_IsString(v))
        return loom_error(LOOM_E_FORMAT, "%s:%lld: \"%s\" in %s is %s, not a string", path, (long long)line, key, where,
                          loom__json_type_name(v));
    *out = v->valuestring;
    return LOOM_OK;
}

static loom_status read_pair(const options *o, const char *path, int64_t line, const cJSON *obj, const char **source,
                             const char **target)
{
    const cJSON *translation = cJSON_GetObjectItemCaseSensitive(obj, "translation");
    if (translation) {
        if (!cJSON_IsObject(translation))
            return loom_error(LOOM_E_FORMAT, "%s:%lld: \"translation\" must be an object of language: text", path,
                              (long long)line);
        if (!o->source_lang)
            return loom_error(LOOM_E_INVALID, "%s:%lld: a \"translation\" pair needs --source_lang and --target_lang",
                              path, (long long)line);
        loom_status st = side_text(path, line, translation, o->source_lang, "\"translation\" (--source_lang)", source);
        return st == LOOM_OK
                   ? side_text(path, line, translation, o->target_lang, "\"translation\" (--target_lang)", target)
                   : st;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, "input_ids") && !cJSON_GetObjectItemCaseSensitive(obj, "source"))
        return loom_error(LOOM_E_INVALID,
                          "%s:%lld: already tokenized (\"input_ids\"): give the file to `loom train --train_file` as "
                          "it is",
                          path, (long long)line);
    loom_status st =
        side_text(path, line, obj, "source", "the pair (\"source\" and \"target\", or \"translation\")", source);
    return st == LOOM_OK ? side_text(path, line, obj, "target", "the pair (\"source\" and \"target\")", target) : st;
}

static char *concat(const char *a, const char *b)
{
    const size_t na = a ? strlen(a) : 0, nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (!s) return NULL;
    if (na) memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

static loom_status read_pairs(const options *o, pair_file *f)
{
    char *text = NULL;
    size_t size = 0;
    loom_status st = loom_read_file(f->path, &text, &size);
    if (st != LOOM_OK) return st;
    int64_t line = 0;
    for (char *p = text; st == LOOM_OK && p < text + size;) {
        char *end = memchr(p, '\n', (size_t)(text + size - p));
        if (!end) end = text + size;
        line++;
        char *q = p;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q == end) {
            p = end + 1;
            continue;
        }
        cJSON *obj = NULL;
        st = loom__json_object_line(f->path, text, line, p, end, "a pair is {\"source\": ..., \"target\": ...}", &obj);
        if (st != LOOM_OK) break;
        const char *source = NULL, *target = NULL;
        st = read_pair(o, f->path, line, obj, &source, &target);
        if (st == LOOM_OK && f->n == f->cap) {
            int64_t cap = f->cap ? 2 * f->cap : 1024;
            pair_text *grown = realloc(f->pairs, (size_t)cap * sizeof *grown);
            if (!grown)
                st = loom_error(LOOM_E_NOMEM, "%s: out of memory", f->path);
            else
                f->pairs = grown, f->cap = cap;
        }
        if (st == LOOM_OK) {
            pair_text *pt = &f->pairs[f->n];
            pt->line = line;
            pt->side[0] = concat(o->prefix, source);
            pt->side[1] = concat(NULL, target);
            f->n++;
            if (!pt->side[0] || !pt->side[1]) st = loom_error(LOOM_E_NOMEM, "%s: out of memory", f->path);
        }
        cJSON_Delete(obj);
        p = end + 1;
    }
    free(text);
    if (st == LOOM_OK && f->n == 0) st = loom_error(LOOM_E_FORMAT, "%s: no pair (one JSON object per line)", f->path);
    return st;
}

static void free_pairs(pair_file *f)
{
    for (int64_t i = 0; i < f->n; i++)
        free(f->pairs[i].side[0]), free(f->pairs[i].side[1]);
    free(f->pairs);
}

/* ---- tokenizing ---------------------------------------------------------------------------- */

typedef struct tokenizer {
    loom_spm *spm;
    loom_chars *chars;
    const char *name; /* for messages */
    int32_t eos, size;
} tokenizer;

/* The vocabulary file: reused when there, else built from every file of the command. */
static loom_status open_chars(const options *o, pair_file *files, const char *path, tokenizer *t, int *built)
{
    struct stat sb;
    *built = 0;
    if (stat(path, &sb) == 0) {
        loom_status st = loom_chars_load(path, &t->chars);
        for (int side = 0; st == LOOM_OK && side < 2; side++)
            if (o->split_given[side] && o->split[side] != loom_chars_split(t->chars, side))
                st = loom_error(LOOM_E_INVALID, "%s splits the %s by %s, not as --%s_split says: remove it to rebuild",
                                path, side ? "target" : "source",
                                loom_chars_split(t->chars, side) == LOOM_SPLIT_SPACE ? "whitespace" : "character",
                                side ? "target" : "source");
        return st;
    }
    loom_status st = loom_chars_new(o->split[0], o->split[1], &t->chars);
    for (int s = 0; st == LOOM_OK && s < N_SPLITS; s++)
        for (int64_t i = 0; st == LOOM_OK && files[s].path && i < files[s].n; i++)
            for (int side = 0; st == LOOM_OK && side < 2; side++) {
                const char *text = files[s].pairs[i].side[side];
                if ((st = loom_chars_add(t->chars, side, text, strlen(text))) != LOOM_OK)
                    st = loom_error_context(st, "%s:%lld", files[s].path, (long long)files[s].pairs[i].line);
            }
    if (st == LOOM_OK) st = loom_chars_finish(t->chars);
    if (st == LOOM_OK) st = loom_chars_save(t->chars, path);
    *built = st == LOOM_OK;
    return st;
}

typedef struct unknowns {
    int64_t first_line, last_line, lines;
    char list[512];
    size_t len;
    int count, more;
} unknowns;

/* Note the spelling of an unknown symbol once. */
static void note_unknown(unknowns *u, const char *at, size_t size)
{
    char quoted[96];
    if (size > 64) size = 64;
    snprintf(quoted, sizeof quoted, "\"%.*s\"", (int)size, at);
    for (const char *p = u->list; (p = strstr(p, quoted)) != NULL; p++)
        if ((p == u->list || p[-1] == ' ') && (p[strlen(quoted)] == '\0' || p[strlen(quoted)] == ' ')) return;
    if (u->len + strlen(quoted) + 2 >= sizeof u->list || u->count >= 20) {
        u->more = 1;
        return;
    }
    u->len += (size_t)snprintf(u->list + u->len, sizeof u->list - u->len, "%s%s", u->len ? " " : "", quoted);
    u->count++;
}

/* ids of one side, cut to max - 1 (truncation) and closed with </s>. */
static loom_status encode_side(const options *o, const tokenizer *t, const char *path, const pair_text *pt, int side,
                               long max, unknowns *u, int32_t **ids, size_t *n, int *truncated)
{
    *truncated = 0;
    const char *text = pt->side[side];
    const size_t len = strlen(text);
    loom_status st =
        t->spm ? loom_spm_encode(t->spm, text, len, ids, n) : loom_chars_encode(t->chars, side, text, len, ids, n);
    if (st != LOOM_OK) return loom_error_context(st, "%s:%lld", path, (long long)pt->line);
    int unknown = 0;
    for (size_t i = 0; t->chars && i < *n; i++)
        if ((*ids)[i] < 0) {
            const char *at;
            size_t size;
            loom_chars_symbol_at(t->chars, side, text, len, i, &at, &size);
            note_unknown(u, at, size);
            unknown = 1;
        }
    if (unknown && !u->first_line) u->first_line = pt->line;
    if (unknown && u->last_line != pt->line) u->lines++, u->last_line = pt->line;
    if ((long)*n + 1 > max) {
        if (!o->truncation) {
            free(*ids);
            *ids = NULL;
            return loom_error(LOOM_E_INVALID,
                              "%s:%lld: the %s is %zu tokens with </s>, longer than --max_%s_length %ld "
                              "(--truncation false)",
                              path, (long long)pt->line, side ? "target" : "source", *n + 1, side ? "target" : "source",
                              max);
        }
        *n = (size_t)max - 1;
        *truncated = 1;
    }
    (*ids)[(*n)++] = t->eos; /* both encoders leave room for one more id */
    return LOOM_OK;
}

typedef struct text_buffer {
    char *data;
    size_t len, cap;
} text_buffer;

static int append_text(text_buffer *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return 0;
        b->data = grown, b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 1;
}

static int append_ids(text_buffer *b, const char *key, const int32_t *ids, size_t n)
{
    char num[32];
    int ok = append_text(b, key, strlen(key));
    for (size_t i = 0; ok && i < n; i++) {
        int k = snprintf(num, sizeof num, i ? ", %d" : "%d", ids[i]);
        ok = append_text(b, num, (size_t)k);
    }
    return ok && append_text(b, "]", 1);
}

static loom_status tokenize_file(const options *o, const tokenizer *t, const pair_file *f, int split)
{
    const long max[2] = {o->max_length[0], split == TRAIN ? o->max_length[1] : o->val_max_target_length};
    text_buffer out = {0};
    unknowns u = {0};
    int64_t cut[2] = {0, 0}, tokens[2] = {0, 0};
    loom_status st = LOOM_OK;
    for (int64_t i = 0; st == LOOM_OK && i < f->n; i++) {
        int32_t *ids[2] = {NULL, NULL};
        size_t n[2] = {0, 0};
        for (int side = 0; st == LOOM_OK && side < 2; side++) {
            int truncated = 0;
            st = encode_side(o, t, f->path, &f->pairs[i], side, max[side], &u, &ids[side], &n[side], &truncated);
            tokens[side] += (int64_t)n[side];
            cut[side] += truncated;
        }
        if (st == LOOM_OK && !(append_ids(&out, "{\"input_ids\": [", ids[0], n[0]) &&
                               append_ids(&out, ", \"labels\": [", ids[1], n[1]) && append_text(&out, "}\n", 2)))
            st = loom_error(LOOM_E_NOMEM, "%s: out of memory", f->path);
        free(ids[0]);
        free(ids[1]);
    }
    if (st == LOOM_OK && u.lines)
        st = loom_error(LOOM_E_INVALID, "%s:%lld: not in the vocabulary %s: %s%s (%lld line%s)", f->path,
                        (long long)u.first_line, t->name, u.list, u.more ? " ..." : "", (long long)u.lines,
                        u.lines == 1 ? "" : "s");
    char path[4096];
    if (st == LOOM_OK) st = loom_path_join(path, sizeof path, o->output_dir, g_out[split]);
    if (st == LOOM_OK) st = loom_write_file_atomic(path, out.data ? out.data : "", out.len);
    if (st == LOOM_OK)
        printf("wrote %s: %lld pairs from %s; %lld source and %lld target tokens (with </s>); "
               "%lld sources cut to %ld, %lld targets cut to %ld\n",
               path, (long long)f->n, f->path, (long long)tokens[0], (long long)tokens[1], (long long)cut[0], max[0],
               (long long)cut[1], max[1]);
    free(out.data);
    return st;
}

int loom_tokenize_pairs(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0) return rc;
    pair_file files[N_SPLITS] = {{0}};
    tokenizer t = {0};
    char vocab_path[4096];
    loom_status st = loom_mkdir_p(o.output_dir);
    /* The model first: a missing one is reported before any data is read. */
    if (st == LOOM_OK && o.tokenizer) {
        struct stat sb;
        if (stat(o.tokenizer, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = loom_path_join(vocab_path, sizeof vocab_path, o.tokenizer, "spiece.model");
        else if (strlen(o.tokenizer) < sizeof vocab_path)
            strcpy(vocab_path, o.tokenizer);
        else
            st = loom_error(LOOM_E_INVALID, "--tokenizer_name: path too long");
        if (st == LOOM_OK) st = loom_spm_load(vocab_path, &t.spm);
        if (st == LOOM_OK) {
            t.eos = loom_spm_eos(t.spm);
            t.size = loom_spm_vocab_size(t.spm);
            if (t.eos < 0) st = loom_error(LOOM_E_FORMAT, "%s: the SentencePiece model has no </s>", vocab_path);
        }
    }
    for (int s = 0; st == LOOM_OK && s < N_SPLITS; s++) {
        files[s].path = o.files[s];
        if (!o.files[s]) continue;
        /* Any split's output, not only its own: --validation_file OUT/train.jsonl is as gone. */
        static const char *const written[] = {"train.jsonl", "validation.jsonl", "test.jsonl", "char_vocab.json"};
        st = loom_refuse_input_as_output("tokenize", g_flag[s], o.files[s], o.output_dir, written,
                                         sizeof written / sizeof *written);
        if (st == LOOM_OK) st = read_pairs(&o, &files[s]);
    }
    if (st == LOOM_OK && !o.tokenizer) {
        int built = 0;
        if (o.vocab_file && strlen(o.vocab_file) < sizeof vocab_path)
            strcpy(vocab_path, o.vocab_file);
        else if (!o.vocab_file)
            st = loom_path_join(vocab_path, sizeof vocab_path, o.output_dir, "char_vocab.json");
        else
            st = loom_error(LOOM_E_INVALID, "--vocab_file: path too long");
        if (st == LOOM_OK) st = open_chars(&o, files, vocab_path, &t, &built);
        if (st == LOOM_OK) {
            t.eos = LOOM_CHARS_EOS;
            t.size = loom_chars_size(t.chars);
            printf("%s %s: %d tokens\n", built ? "wrote" : "reusing", vocab_path, (int)t.size);
        }
    }
    t.name = vocab_path;
    for (int s = 0; st == LOOM_OK && s < N_SPLITS; s++)
        if (files[s].path) st = tokenize_file(&o, &t, &files[s], s);
    if (st == LOOM_OK)
        printf("vocabulary: %d tokens (train with --vocab_size %d or more; <pad> %d, </s> %d)\n", (int)t.size,
               (int)t.size, t.spm ? (int)loom_spm_pad(t.spm) : LOOM_CHARS_PAD, (int)t.eos);
    for (int s = 0; s < N_SPLITS; s++)
        free_pairs(&files[s]);
    loom_spm_free(t.spm);
    loom_chars_free(t.chars);
    return st == LOOM_OK ? 0 : loom_command_fail(st);
}
