/*
 * model_config.c - config.json of a saved model folder (model_config.h).
 */
#include "model_config.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileutil.h"

void loom_saved_model_config_free(loom_saved_model_config *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->texts[i]);
    free(c->texts);
    free(c->entries);
    free(c->model_type);
    cJSON_Delete(c->json);
    memset(c, 0, sizeof *c);
}

loom_status loom_saved_model_config_read(const char *dir, loom_saved_model_config *c)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, "config.json");
    if (st != LOOM_OK) return st;
    char *text = NULL;
    size_t len = 0;
    st = loom_read_file(path, &text, &len);
    if (st != LOOM_OK) return loom_error_context(st, "--model_name_or_path %s", dir);
    c->json = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(c->json)) return loom_error(LOOM_E_FORMAT, "%s: not a JSON object", path);
    size_t count = (size_t)cJSON_GetArraySize(c->json);
    c->entries = calloc(count + 1, sizeof *c->entries);
    c->texts = calloc(count + 1, sizeof *c->texts);
    if (!c->entries || !c->texts) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (cJSON *item = c->json->child; item; item = item->next) {
        if (strcmp(item->string, "model_type") == 0) {
            if (!cJSON_IsString(item)) return loom_error(LOOM_E_FORMAT, "%s: model_type is not a string", path);
            /* Written twice: the last one counts, as Python's json.load reads it. */
            free(c->model_type);
            c->model_type = strdup(item->valuestring);
            continue;
        }
        /* HF configs carry private keys, lists and nulls ("n_inner": null = the default). */
        if (strncmp(item->string, "_", 1) == 0 || cJSON_IsNull(item) || cJSON_IsArray(item) || cJSON_IsObject(item))
            continue;
        char *value = cJSON_IsString(item) ? strdup(item->valuestring) : cJSON_PrintUnformatted(item);
        if (cJSON_IsBool(item)) {
            free(value);
            value = strdup(cJSON_IsTrue(item) ? "true" : "false");
        }
        c->texts[c->n] = value;
        c->entries[c->n].key = item->string;
        c->entries[c->n].value = value;
        c->n++;
    }
    if (!c->model_type) return loom_error(LOOM_E_FORMAT, "%s: no model_type", path);
    return LOOM_OK;
}
