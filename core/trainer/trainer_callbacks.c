/*
 * trainer_callbacks.c - the trainer's list of callbacks: creating them with the trainer service
 * lent, HF's add_callback / pop_callback / remove_callback, and HF's stateful callbacks (what
 * trainer_state.json keeps under "stateful_callbacks" so a resumed run continues a callback
 * where it stood, e.g. EarlyStoppingCallback's patience counter).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "trainer_internal.h"

const char *loom_trainer_callback_name(const loom_plugin_instance *slot)
{
    return slot->plugin ? slot->plugin->desc->name : slot->name;
}

static const loom_callback_vtable *slot_vtable(const loom_plugin_instance *slot) { return slot->vtable; }

/* The key of a callback's entry in stateful_callbacks. */
static const char *state_name(const loom_plugin_instance *slot)
{
    const loom_callback_vtable *cv = slot_vtable(slot);
    return LOOM_HAS(cv, loom_callback_vtable, state_name) ? cv->state_name : loom_trainer_callback_name(slot);
}

/* A slot's instance (unless the program owns it), host context and configuration. */
static void release_slot(loom_plugin_instance *slot)
{
    if (slot->plugin && slot->instance) slot_vtable(slot)->destroy(slot->instance);
    loom_host_destroy(slot->host);
    loom_config_free(slot->config);
    memset(slot, 0, sizeof *slot);
}

void loom_trainer_callback_destroy(loom_plugin_instance *popped)
{
    if (popped) release_slot(popped);
}

loom_config *loom_trainer_callback_config(const loom_trainer *t, const loom_plugin *plugin, unsigned char *used)
{
    if (strcmp(plugin->desc->name, "tensorboard") != 0) return loom_config_build(plugin->desc, NULL, 0, &t->args, used);
    /* TensorBoard writes where HF's --logging_dir says, and records the arguments (text and
     * hparams) as HF's callback does. */
    char *args_json = NULL;
    size_t args_json_len = 0;
    FILE *stream = open_memstream(&args_json, &args_json_len);
    if (stream) {
        if (loom_args_write_json(&t->args, stream) != LOOM_OK) loom_error_clear();
        fclose(stream);
        if (args_json) cJSON_Minify(args_json); /* one line in the resolved configuration */
    }
    const loom_config_default mapped[] = {{"log_dir", t->args.logging_dir}, {"args_json", args_json ? args_json : ""}};
    loom_config *config = loom_config_build(plugin->desc, mapped, 2, &t->args, used);
    free(args_json);
    return config;
}

loom_status loom_trainer_create_callback(loom_trainer *t, loom_plugin_instance *slot, const loom_plugin *plugin)
{
    slot->host = loom_host_create(plugin->desc->name);
    if (!slot->host) return loom_error(LOOM_E_NOMEM, "out of memory");
    /* Lent before create(): a callback may check the run's arguments there (early_stopping). */
    loom_host_set_trainer(slot->host, t, loom_trainer_service_table());
    return loom_trainer_create_instance(slot, plugin, NULL);
}

/* ---- add / pop / remove ------------------------------------------------------------------ */

static loom_status room_for_one(const loom_trainer *t)
{
    if (t->n_callbacks < LOOM_MAX_CALLBACKS) return LOOM_OK;
    return loom_error(LOOM_E_INVALID, "more than %d callbacks", LOOM_MAX_CALLBACKS);
}

static void warn_if_present(const loom_trainer *t, const char *name)
{
    for (size_t i = 0; i < t->n_callbacks; i++) {
        if (strcmp(loom_trainer_callback_name(&t->callbacks[i]), name) != 0) continue;
        char list[1024] = "";
        size_t used = 0;
        for (size_t k = 0; k < t->n_callbacks && used < sizeof list; k++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "",
                                     loom_trainer_callback_name(&t->callbacks[k]));
        loom_log(LOOM_LOG_WARNING,
                 "adding callback '%s', but the trainer already has one; the callbacks are now: %s, %s", name, list,
                 name);
        return;
    }
}

loom_status loom_trainer_add_callback(loom_trainer *t, const char *plugin)
{
    if (!plugin || !*plugin) return loom_error(LOOM_E_INVALID, "add_callback: no plugin named");
    loom_status st = room_for_one(t);
    const loom_plugin *p = NULL;
    if (st == LOOM_OK) st = loom_plugin_load(plugin, LOOM_KIND_CALLBACK, &p);
    if (st != LOOM_OK) return st;
    warn_if_present(t, p->desc->name);
    unsigned char *used = calloc(t->args.unknown_keys.count + 1, 1);
    if (!used) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_plugin_instance slot = {0};
    slot.plugin = p;
    slot.config = loom_trainer_callback_config(t, p, used);
    free(used);
    if (!slot.config) return LOOM_E_INVALID;
    if ((st = loom_trainer_create_callback(t, &slot, p)) != LOOM_OK) {
        release_slot(&slot);
        return st;
    }
    t->callbacks[t->n_callbacks++] = slot;
    return LOOM_OK;
}

loom_status loom_trainer_add_callback_instance(loom_trainer *t, const char *name, const loom_callback_vtable *vtable,
                                               loom_callback *instance)
{
    if (!name || !*name || strlen(name) >= sizeof t->callbacks[0].name)
        return loom_error(LOOM_E_INVALID, "add_callback_instance: a name of 1 to %zu characters is required",
                          sizeof t->callbacks[0].name - 1);
    if (!vtable || !LOOM_HAS(vtable, loom_callback_vtable, on_event) || vtable->abi_major != LOOM_ABI_MAJOR)
        return loom_error(LOOM_E_ABI, "add_callback_instance '%s': the vtable has no on_event or another ABI major",
                          name);
    loom_status st = room_for_one(t);
    if (st != LOOM_OK) return st;
    warn_if_present(t, name);
    loom_plugin_instance *slot = &t->callbacks[t->n_callbacks++];
    memset(slot, 0, sizeof *slot);
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->vtable = vtable;
    slot->instance = instance;
    return LOOM_OK;
}

static loom_status find_callback(const loom_trainer *t, const char *name, const loom_callback *instance, size_t *at)
{
    if ((name == NULL) == (instance == NULL))
        return loom_error(LOOM_E_INVALID, "a callback is picked by name or by instance (exactly one of the two)");
    for (size_t i = 0; i < t->n_callbacks; i++) {
        const loom_plugin_instance *slot = &t->callbacks[i];
        if (name ? strcmp(loom_trainer_callback_name(slot), name) == 0 : slot->instance == (const void *)instance) {
            *at = i;
            return LOOM_OK;
        }
    }
    if (name) return loom_error(LOOM_E_NOT_FOUND, "no callback named '%s' in the trainer", name);
    return loom_error(LOOM_E_NOT_FOUND, "callback instance %p is not in the trainer", (const void *)instance);
}

loom_status loom_trainer_pop_callback(loom_trainer *t, const char *name, const loom_callback *instance,
                                      loom_plugin_instance *out)
{
    size_t at = 0;
    loom_status st = find_callback(t, name, instance, &at);
    if (st != LOOM_OK) return st;
    *out = t->callbacks[at];
    memmove(&t->callbacks[at], &t->callbacks[at + 1], (t->n_callbacks - at - 1) * sizeof t->callbacks[0]);
    memset(&t->callbacks[--t->n_callbacks], 0, sizeof t->callbacks[0]);
    return LOOM_OK;
}

loom_status loom_trainer_remove_callback(loom_trainer *t, const char *name, const loom_callback *instance)
{
    loom_plugin_instance popped;
    loom_status st = loom_trainer_pop_callback(t, name, instance, &popped);
    if (st == LOOM_OK) release_slot(&popped);
    return st;
}

/* ---- stateful callbacks ------------------------------------------------------------------ */

cJSON *loom_trainer_callbacks_state(const loom_trainer *t)
{
    cJSON *all = NULL;
    for (size_t i = 0; i < t->n_callbacks; i++) {
        const loom_plugin_instance *slot = &t->callbacks[i];
        const loom_callback_vtable *cv = slot_vtable(slot);
        if (!LOOM_HAS(cv, loom_callback_vtable, save_state)) continue;
        const char *text = NULL;
        loom_status st = cv->save_state(slot->instance, &text);
        cJSON *state = st == LOOM_OK && text ? cJSON_Parse(text) : NULL;
        if (!cJSON_IsObject(state)) {
            /* A checkpoint without one callback's state still resumes everything else. */
            loom_log(LOOM_LOG_WARNING, "callback '%s': its state is not saved (%s)", loom_trainer_callback_name(slot),
                     st != LOOM_OK ? loom_error_message() : "save_state gave no JSON object");
            cJSON_Delete(state);
            continue;
        }
        if (!all && !(all = cJSON_CreateObject())) {
            cJSON_Delete(state);
            return NULL;
        }
        /* HF keeps one object per name, and a list when several instances share it. */
        const char *key = state_name(slot);
        cJSON *present = cJSON_GetObjectItemCaseSensitive(all, key);
        if (!present) {
            cJSON_AddItemToObject(all, key, state);
        } else if (cJSON_IsArray(present)) {
            cJSON_AddItemToArray(present, state);
        } else {
            cJSON *list = cJSON_CreateArray();
            cJSON_AddItemToArray(list, cJSON_DetachItemViaPointer(all, present));
            cJSON_AddItemToArray(list, state);
            cJSON_AddItemToObject(all, key, list);
        }
    }
    return all;
}

loom_status loom_trainer_callbacks_restore(loom_trainer *t, const cJSON *stateful_callbacks)
{
    if (!stateful_callbacks || cJSON_IsNull(stateful_callbacks)) return LOOM_OK;
    if (!cJSON_IsObject(stateful_callbacks))
        return loom_error(LOOM_E_FORMAT, "trainer_state.json: stateful_callbacks is not an object");
    char ignored[1024] = "";
    size_t n_ignored = 0;
    for (const cJSON *entry = stateful_callbacks->child; entry; entry = entry->next) {
        const cJSON *item = cJSON_IsArray(entry) ? entry->child : entry;
        int matched = 0;
        for (size_t i = 0; i < t->n_callbacks; i++) {
            loom_plugin_instance *slot = &t->callbacks[i];
            if (strcmp(state_name(slot), entry->string) != 0) continue;
            matched = 1;
            if (!item) break; /* more instances than stored states: the rest start afresh */
            if (!cJSON_IsObject(item))
                return loom_error(LOOM_E_FORMAT, "trainer_state.json: stateful_callbacks.%s is not an object",
                                  entry->string);
            const loom_callback_vtable *cv = slot_vtable(slot);
            if (LOOM_HAS(cv, loom_callback_vtable, load_state)) {
                char *text = cJSON_PrintUnformatted(item);
                if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
                loom_error_clear();
                loom_status st = cv->load_state(slot->instance, text);
                cJSON_free(text);
                if (st != LOOM_OK) {
                    if (!*loom_error_message())
                        loom_error(st, "callback '%s': cannot restore its state (%s)", loom_trainer_callback_name(slot),
                                   loom_status_string(st));
                    return st;
                }
            }
            item = cJSON_IsArray(entry) ? item->next : NULL;
        }
        /* HF stores its TrainerControl there too; loom's control flags start clean on resume. */
        if (!matched && strcmp(entry->string, "TrainerControl") != 0) {
            size_t len = strlen(ignored);
            snprintf(ignored + len, sizeof ignored - len, "%s%s", n_ignored++ ? ", " : "", entry->string);
        }
    }
    if (n_ignored)
        loom_log(LOOM_LOG_WARNING, "the checkpoint keeps the state of callbacks this run does not have; ignored: %s",
                 ignored);
    return LOOM_OK;
}
