/*
 * curves.c - `--report_to html`: output_dir/curves.html, the page `loom plot` writes (inline
 * SVG charts of every logged metric against the step), redrawn from log_history.jsonl at each
 * log entry, so a browser pointed at it follows the run (reload to refresh). Runs after the
 * history callback, which writes the line first. Only the world's process zero writes.
 */
#include <stdio.h>
#include <string.h>

#include <loom/callback.h>
#include <loom/plugin.h>

#include "plot.h"

typedef struct curves {
    loom_host *host;
    const loom_host_api *api;
} curves;

static loom_status curves_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                 loom_callback **out)
{
    (void)config;
    curves *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void curves_destroy(loom_callback *self_)
{
    curves *self = (curves *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static loom_status curves_on_event(loom_callback *self_, uint32_t event, const loom_trainer_state *state,
                                   loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)control, (void)payload;
    curves *self = (curves *)self_;
    if (!state->is_world_process_zero || event != LOOM_EVENT_LOG || !state->output_dir) return LOOM_OK;
    char path[4096], err[512] = "";
    const char *run = state->output_dir;
    plot_set set;
    snprintf(path, sizeof path, "%s/curves.html", run);
    int rc = plot_load(&set, &run, 1, err, sizeof err) || plot_write_html(&set, path, err, sizeof err);
    plot_free(&set);
    return rc ? self->api->fail(self->host, LOOM_E_IO, "--report_to html: %s", err) : LOOM_OK;
}

static const loom_callback_vtable curves_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = curves_create,
    .destroy = curves_destroy,
    .on_event = curves_on_event,
};

static const loom_plugin_desc curves_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "curves",
    .version = "1.0.0",
    .summary = "--report_to html: output_dir/curves.html (the charts of loom plot), redrawn at each log",
    .vtable = &curves_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&curves_desc)
