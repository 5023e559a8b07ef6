/*
 * generation_config.c - the generation defaults a saved model carries: what HF's generate()
 * takes from the folder's generation_config.json (transformers >= 4.26) or, in older folders,
 * from config.json, whenever the run's arguments leave them unset (docs/seq2seq.md#generation).
 */
#include "generation_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "fileutil.h"
#include "json_util.h"

/* DIR/generation_config.json, else DIR/config.json; *json NULL when neither exists. */
static loom_status read_json(const char *dir, char *path, size_t size, cJSON **json)
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

loom_status loom_beam_config_from_model(const char *dir, const loom_args *a, loom_beam_config *c)
{
    if (!dir || !*dir) return LOOM_OK;
    char path[4096];
    cJSON *json = NULL;
    loom_status st = read_json(dir, path, sizeof path, &json);
    if (st != LOOM_OK || !json) return st;
    const int64_t none = LOOM_ARG_NONE_INT;
    if (a->generation_max_length == none && a->max_length == none)
        st = int_key(json, path, "max_length", 2, &c->max_length);
    if (st == LOOM_OK && a->generation_num_beams == none && a->num_beams == none)
        st = int_key(json, path, "num_beams", 1, &c->num_beams);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "early_stopping");
    if (st == LOOM_OK && a->early_stopping < 0 && v && !cJSON_IsNull(v)) {
        if (cJSON_IsBool(v))
            c->early_stopping = cJSON_IsTrue(v);
        else
            st = loom_error(LOOM_E_FORMAT, "%s: early_stopping must be true or false (\"never\" is not supported)",
                            path);
    }
    /* --length_penalty is a plain number whose default is HF's 1.0: where it came from tells an
     * unset one from an explicit 1.0, which wins over the folder's. */
    v = cJSON_GetObjectItemCaseSensitive(json, "length_penalty");
    if (st == LOOM_OK && a->origin[LOOM__ARG_length_penalty] == LOOM_ARG_FROM_DEFAULT && v && !cJSON_IsNull(v)) {
        if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
            c->length_penalty = v->valuedouble;
        else
            st = loom_error(LOOM_E_FORMAT, "%s: length_penalty must be a finite number", path);
    }
    cJSON_Delete(json);
    return st;
}
