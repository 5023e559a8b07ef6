/*
 * printer.c - HF's PrinterCallback: prints every log entry and evaluation result, one line each,
 * on each node's local process zero (HF's `if state.is_local_process_zero: print(logs)`), so every
 * node's console shows the run's progress. HF's log_on_each_node does not enter into it: that flag
 * sets the log levels (TrainingArguments.should_log), and the printer prints whatever the level.
 * The default when --disable_tqdm is set.
 */
#include <stdio.h>

#include <loom/callback.h>
#include <loom/plugin.h>

#include "log_format.h"

typedef struct printer {
    loom_host *host;
    const loom_host_api *api;
} printer;

static loom_status printer_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  loom_callback **out)
{
    (void)config;
    printer *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    self->host = host;
    self->api = api;
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void printer_destroy(loom_callback *self_)
{
    printer *self = (printer *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static loom_status printer_on_event(loom_callback *self, uint32_t event, const loom_trainer_state *state,
                                    loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)self, (void)control;
    if (!state->is_local_process_zero) return LOOM_OK;
    if (event == LOOM_EVENT_LOG) loom_format_logs(stdout, payload);
    return LOOM_OK;
}

static const loom_callback_vtable printer_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = printer_create,
    .destroy = printer_destroy,
    .on_event = printer_on_event,
};

static const loom_plugin_desc printer_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "printer",
    .version = "1.0.0",
    .summary = "prints each log entry (HF PrinterCallback)",
    .vtable = &printer_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&printer_desc)
