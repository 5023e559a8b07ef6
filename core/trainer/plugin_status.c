/*
 * plugin_status.c - loom_trainer_plugin_status (trainer_internal.h): a plugin's failure is one
 * line that names the plugin even when the plugin said nothing. Before, a step that returned
 * an error without api->fail ended the run with "loom: error: internal error" and no word of
 * which of the run's plugins, or which of its members, had failed.
 */
#include "error.h"
#include "plugin_loader.h"
#include "trainer_internal.h"

loom_status loom_trainer_plugin_status(const loom_plugin_instance *slot, const char *member, loom_status st)
{
    if (st == LOOM_OK || *loom_error_message()) return st;
    /* A program's own callback has a name and no plugin (trainer.h). */
    const char *kind = slot->plugin ? loom_kind_name(slot->plugin->desc->kind) : "callback";
    const char *name = slot->plugin ? slot->plugin->desc->name : slot->name;
    return loom_error(st, "%s '%s': %s failed (%s) without a message", kind, name, member, loom_status_string(st));
}
