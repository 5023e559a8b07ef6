/*
 * generation_config.c - the generation defaults a run decodes with where its arguments leave
 * them unset (docs/seq2seq.md#generation): what HF's generate() takes from the model's
 * generation config. That is --generation_config when given (HF's Seq2SeqTrainer puts it in
 * place of the model's), else the model folder's generation_config.json (transformers >= 4.26),
 * else, in older folders, its config.json.
 */
#include "generation_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args_internal.h"
#include "error.h"
#include "fileutil.h"
#include "generation_keys.h"
#include "host.h"
#include "json_util.h"

#define FLAG "--generation_config"

/* DIR/generation_config.json, else DIR/config.json (*model_config 1); *json NULL when neither
 * exists. */
static loom_status read_model_folder(const char *dir, char *path, size_t size, cJSON **json, int *model_config)
{
    static const char *const names[] = {"generation_config.json", "config.json"};
    *json = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, size, "%s/%s", dir, names[i]);
        char *text = NULL;
        size_t len = 0;
        loom_status st = loom_read_file(path, &text, &len);
        if (st == LOOM_E_NOT_FOUND) {
            loom_error_clear();
            continue;
        }
        if (st != LOOM_OK) return st;
        *model_config = i == 1;
        const char *end = NULL;
        *json = cJSON_ParseWithLengthOpts(text, len, &end, 0);
        if (!*json || !cJSON_IsObject(*json)) {
            st = loom__json_malformed(path, text, end);
            cJSON_Delete(*json);
            *json = NULL;
        }
        free(text);
        return st;
    }
    return LOOM_OK;
}

/* --generation_config as HF's load_generation_config takes it: a folder (its
 * generation_config.json, which must be there) or a JSON file; or, as loom's other dict-valued
 * arguments, the JSON object itself (a --config file's dict arrives so). `name` is what the
 * messages call it. */
static loom_status read_given(const char *arg, char *name, size_t size, cJSON **json)
{
    *json = NULL;
    loom_status st;
    if (arg[0] == '{') {
        snprintf(name, size, "%s", FLAG);
        st = loom__json_parse_strict(FLAG, arg, strlen(arg), json);
    } else {
        struct stat sb;
        if (stat(arg, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = loom_path_join(name, size, arg, "generation_config.json");
        else
            st = loom_path_join(name, size, "", arg);
        if (st == LOOM_OK) st = loom__json_read_file(FLAG, name, 1 << 20, json);
    }
    if (st == LOOM_OK && !cJSON_IsObject(*json))
        st = loom_error(LOOM_E_FORMAT, "%s: expected a JSON object of generation settings, got %s", name,
                        loom__json_type_name(*json));
    if (st != LOOM_OK) {
        cJSON_Delete(*json);
        *json = NULL;
    }
    return st;
}

/* An integer key >= min, or absent (null counts as absent, as HF writes unset values). */
static loom_status int_key(const cJSON *json, const char *path, const char *key, int64_t min, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, key);
    if (!v || cJSON_IsNull(v)) return LOOM_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)min ||
        v->valuedouble > 1e9)
        return loom_error(LOOM_E_FORMAT, "%s: %s must be an integer >= %lld", path, key, (long long)min);
    *out = (int64_t)v->valuedouble;
    return LOOM_OK;
}

/* HF's generate() makes max_new_tokens and min_new_tokens lengths that count the decoder start
 * token (_prepare_generated_length): max_new_tokens wins over every max_length, the one
 * Seq2SeqTrainer passes from --generation_max_length included (HF warns so, and so does
 * loom); min_new_tokens replaces min_length. */
static loom_status new_tokens(const cJSON *json, const char *path, const loom_args *a, loom_beam_config *c)
{
    int64_t n = -1;
    loom_status st = int_key(json, path, "max_new_tokens", 1, &n);
    if (st == LOOM_OK && n > 0) {
        const int64_t none = LOOM_ARG_NONE_INT;
        const int64_t given = !a ? none : a->generation_max_length != none ? a->generation_max_length : a->max_length;
        if (given != none && given != n + 1)
            loom_log(LOOM_LOG_WARNING,
                     "%s: max_new_tokens %lld wins over --generation_max_length %lld, as in HF's generate(): at "
                     "most %lld tokens are generated",
                     path, (long long)n, (long long)given, (long long)n);
        c->max_length = n + 1;
    }
    n = -1;
    if (st == LOOM_OK) st = int_key(json, path, "min_length", 0, &c->min_length);
    if (st == LOOM_OK) st = int_key(json, path, "min_new_tokens", 0, &n);
    if (st == LOOM_OK && n >= 0) c->min_length = n + 1;
    if (st == LOOM_OK) st = int_key(json, path, "no_repeat_ngram_size", 0, &c->no_repeat_ngram_size);
    return st;
}

/* The keys of `json` over *c where `a` leaves them unset (a NULL: every key, to check them);
 * every other key judged (generation_keys.h). */
static loom_status apply(const cJSON *json, const char *path, const loom_args *a, loom_beam_config *c, int model_config,
                         const loom_generation_ids *model_ids)
{
    const int64_t none = LOOM_ARG_NONE_INT;
    loom_status st = loom_generation_keys_check(json, path, model_config, model_ids);
    if (st == LOOM_OK && (!a || (a->generation_max_length == none && a->max_length == none)))
        st = int_key(json, path, "max_length", 2, &c->max_length);
    if (st == LOOM_OK && (!a || (a->generation_num_beams == none && a->num_beams == none)))
        st = int_key(json, path, "num_beams", 1, &c->num_beams);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "early_stopping");
    if (st == LOOM_OK && (!a || a->early_stopping < 0) && v && !cJSON_IsNull(v)) {
        if (cJSON_IsBool(v))
            c->early_stopping = cJSON_IsTrue(v);
        else
            st = loom_error(LOOM_E_FORMAT, "%s: early_stopping must be true or false (\"never\" is not supported)",
                            path);
    }
    /* --length_penalty is a plain number whose default is HF's 1.0: where it came from tells an
     * unset one from an explicit 1.0, which wins over the folder's. */
    v = cJSON_GetObjectItemCaseSensitive(json, "length_penalty");
    if (st == LOOM_OK && (!a || a->origin[LOOM__ARG_length_penalty] == LOOM_ARG_FROM_DEFAULT) && v &&
        !cJSON_IsNull(v)) {
        if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
            c->length_penalty = v->valuedouble;
        else
            st = loom_error(LOOM_E_FORMAT, "%s: length_penalty must be a finite number", path);
    }
    return st == LOOM_OK ? new_tokens(json, path, a, c) : st;
}

loom_status loom_generation_config_check(const char *arg)
{
    if (!arg || !*arg) return LOOM_OK;
    char name[4096];
    cJSON *json = NULL;
    loom_status st = read_given(arg, name, sizeof name, &json);
    loom_beam_config scratch = {0};
    if (st == LOOM_OK) st = apply(json, name, NULL, &scratch, 0, NULL);
    cJSON_Delete(json);
    return st;
}

loom_status loom_beam_config_from_model(const loom_args *a, const loom_generation_ids *model_ids, loom_beam_config *c)
{
    const char *given = a->generation_config, *dir = a->model_name_or_path;
    char path[4096];
    cJSON *json = NULL;
    loom_status st = LOOM_OK;
    int model_config = 0;
    if (given && *given)
        st = read_given(given, path, sizeof path, &json);
    else if (dir && *dir)
        st = read_model_folder(dir, path, sizeof path, &json, &model_config);
    if (st != LOOM_OK || !json) return st;
    st = apply(json, path, a, c, model_config, model_ids);
    cJSON_Delete(json);
    return st;
}
