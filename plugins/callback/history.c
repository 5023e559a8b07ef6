/*
 * history.c - every log entry (training logs and evaluation results) appended as it happens to
 * output_dir/log_history.jsonl, one JSON object a line, the same fields as trainer_state.json's
 * log_history: the metrics, epoch, step. Each line goes out in one write(2), so a run that is
 * killed (even by SIGKILL) leaves every line it logged, whole; log_history in
 * trainer_state.json reaches disk only at a save.
 *
 * A new run (global step 0 at train begin) starts the file afresh; a resumed one keeps the lines
 * up to the step it resumes from and drops those after it, which the checkpoint never saw.
 * Only the world's process zero writes. Loaded for every run; `loom plot` reads the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/callback.h>
#include <loom/plugin.h>

#include "make_dirs.h"

typedef struct history {
    loom_host *host;
    const loom_host_api *api;
    int fd;
    char path[4096];
} history;

static loom_status history_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                  loom_callback **out)
{
    (void)config;
    history *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->fd = -1;
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void history_destroy(loom_callback *self_)
{
    history *self = (history *)self_;
    if (!self) return;
    if (self->fd >= 0) close(self->fd);
    self->api->free_memory(self->host, self);
}

/* The step a line was logged at, -1 when it has none. */
static double line_step(const char *line)
{
    const char *at = strstr(line, "\"step\": ");
    return at ? strtod(at + 8, NULL) : -1;
}

/* Resumed at `step`: keep the lines up to it (rewritten through a temporary file). */
static loom_status keep_until(history *self, int64_t step)
{
    FILE *in = fopen(self->path, "r");
    if (!in) return LOOM_OK;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", self->path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return self->api->fail(self->host, LOOM_E_IO, "%s: cannot write: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0)
        if (strchr(line, '\n') && line_step(line) <= (double)step) fputs(line, out);
    free(line);
    fclose(in);
    if (fclose(out) != 0 || rename(tmp, self->path) != 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: cannot rewrite: %s", self->path, strerror(errno));
    return LOOM_OK;
}

static loom_status open_file(history *self, const loom_trainer_state *state, int fresh)
{
    if (self->fd >= 0) return LOOM_OK;
    if (!state->output_dir || !*state->output_dir) return LOOM_OK;
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", state->output_dir);
    if (make_dirs(folder) != 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: cannot create: %s", folder, strerror(errno));
    snprintf(self->path, sizeof self->path, "%s/log_history.jsonl", state->output_dir);
    if (!fresh && state->global_step > 0) {
        loom_status st = keep_until(self, state->global_step);
        if (st != LOOM_OK) return st;
    }
    self->fd = open(self->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (fresh ? O_TRUNC : 0), 0666);
    if (self->fd < 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: cannot write the log history: %s", self->path,
                               strerror(errno));
    return LOOM_OK;
}

static size_t put_number(char *buf, size_t cap, const char *key, double value, int first)
{
    size_t n = (size_t)snprintf(buf, cap, "%s\"", first ? "" : ", ");
    for (const char *k = key; *k && n + 2 < cap; k++) {
        if (*k == '"' || *k == '\\') buf[n++] = '\\';
        buf[n++] = *k;
    }
    if (n >= cap) return cap;
    if (isfinite(value)) {
        /* the shortest text that reads back as the same double, as Python's json writes it */
        char text[40];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, value);
            if (strtod(text, NULL) == value) break;
        }
        n += (size_t)snprintf(buf + n, cap - n, "\": %s", text);
    } else
        n += (size_t)snprintf(buf + n, cap - n, "\": null"); /* JSON has no NaN or infinity */
    return n < cap ? n : cap;
}

static loom_status append(history *self, const loom_trainer_state *state, const loom_event_payload *payload)
{
    char line[16384];
    size_t n = 1, cap = sizeof line - 2;
    int has_epoch = 0;
    line[0] = '{';
    for (size_t i = 0; payload && i < payload->n_metrics && n < cap; i++) {
        has_epoch |= !strcmp(payload->metrics[i].key, "epoch");
        n += put_number(line + n, cap - n, payload->metrics[i].key, payload->metrics[i].value, i == 0);
    }
    if (!has_epoch && n < cap) n += put_number(line + n, cap - n, "epoch", state->epoch, n == 1);
    if (n < cap) n += put_number(line + n, cap - n, "step", (double)state->global_step, n == 1);
    if (n >= cap) return self->api->fail(self->host, LOOM_E_INVALID, "a log entry is too long for %s", self->path);
    line[n++] = '}';
    line[n++] = '\n';
    for (size_t done = 0; done < n;) {
        ssize_t w = write(self->fd, line + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return self->api->fail(self->host, LOOM_E_IO, "%s: write failed: %s", self->path, strerror(errno));
        done += (size_t)w;
    }
    return LOOM_OK;
}

static loom_status history_on_event(loom_callback *self_, uint32_t event, const loom_trainer_state *state,
                                    loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)control;
    history *self = (history *)self_;
    if (!state->is_world_process_zero) return LOOM_OK;
    loom_status st = LOOM_OK;
    if (event == LOOM_EVENT_TRAIN_BEGIN && self->fd < 0) st = open_file(self, state, state->global_step == 0);
    if (event == LOOM_EVENT_LOG && (st = open_file(self, state, 0)) == LOOM_OK && self->fd >= 0)
        st = append(self, state, payload);
    return st;
}

static const loom_callback_vtable history_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = history_create,
    .destroy = history_destroy,
    .on_event = history_on_event,
};

static const loom_plugin_desc history_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "history",
    .version = "1.0.0",
    .summary = "appends each log entry to output_dir/log_history.jsonl as it happens (loom plot reads it)",
    .vtable = &history_vtable,
    .params = NULL,
};

LOOM_PLUGIN_EXPORT(&history_desc)
