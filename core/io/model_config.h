/*
 * model_config.h - config.json of a saved model (`--model_name_or_path DIR`): its model_type
 * picks the model plugin, every other scalar key becomes a default of the model's section (the
 * user's flags still win). HF's private keys ("_name_or_path"), nulls, lists and objects are
 * skipped.
 */
#ifndef LOOM_CORE_MODEL_CONFIG_H
#define LOOM_CORE_MODEL_CONFIG_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "plugin_config.h"

typedef struct loom_saved_model_config {
    char *model_type;
    loom_config_default *entries; /* n pairs; keys point into json, values into texts */
    size_t n;
    cJSON *json;
    char **texts;
} loom_saved_model_config;

/* Read DIR/config.json into *c (zeroed first; free with loom_saved_model_config_free, also on
 * failure). LOOM_E_FORMAT naming the file when it is not a JSON object, has no string
 * model_type; the errors of loom_read_file when it cannot be read. */
loom_status loom_saved_model_config_read(const char *dir, loom_saved_model_config *c);

/* Free what *c holds and zero it. */
void loom_saved_model_config_free(loom_saved_model_config *c);

#endif
