/*
 * progress.c - HF's ProgressCallback: on a terminal, a live bar with the step, the latest loss,
 * the rate and the time left, redrawn in place at most `refresh_seconds` apart, with log
 * entries printed above it; elsewhere (a file, a pipe, CI) a plain line every `plain_every`
 * steps and at each log entry, so logs stay readable. Only the world's process zero prints.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <loom/callback.h>

#include "log_format.h"

typedef struct progress {
    loom_host *host;
    const loom_host_api *api;
    int terminal;
    double refresh_seconds;
    int64_t plain_every;
    double last_draw;
    double last_loss;
    int bar_visible;
    int64_t eval_batches;
} progress;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const loom_param_spec progress_params[] = {
    {"refresh_seconds", LOOM_PARAM_FLOAT, 0, "0.1", "minimum time between redraws of the bar on a terminal"},
    {"plain_every", LOOM_PARAM_INT, 0, "0", "without a terminal: a progress line every N steps (0 = at log entries only)"},
    {"force_terminal", LOOM_PARAM_BOOL, 0, "false", "draw the live bar even when stdout is not a terminal"},
    {NULL, 0, 0, NULL, NULL},
};

static loom_status progress_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                   loom_callback **out)
{
    progress *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    int32_t force = 0;
    api->cfg_f64(config, "refresh_seconds", &self->refresh_seconds);
    api->cfg_i64(config, "plain_every", &self->plain_every);
    api->cfg_bool(config, "force_terminal", &force);
    self->terminal = force || isatty(STDOUT_FILENO);
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void progress_destroy(loom_callback *self_)
{
    progress *self = (progress *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static void format_duration(char *buf, size_t size, double seconds)
{
    if (seconds < 0 || seconds > 360000) {
        snprintf(buf, size, "--:--");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        snprintf(buf, size, "%02ld:%02ld", s / 60, s % 60);
}

static void draw(progress *self, const loom_trainer_state *state, int final)
{
    int64_t done = state->global_step, total = state->max_steps > 0 ? state->max_steps : 1;
    double elapsed = state->elapsed_seconds;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    char eta[32], spent[32];
    format_duration(spent, sizeof spent, elapsed);
    format_duration(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : -1);
    int width = 30, filled = (int)(width * (double)done / (double)total);
    if (filled > width) filled = width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    printf("\r%3d%% [%s] %lld/%lld  loss %.4f  %.2f it/s  %s<%s  ", (int)(100.0 * done / total), bar,
           (long long)done, (long long)total, self->last_loss, rate, spent, eta);
    if (final) printf("\n");
    fflush(stdout);
    self->bar_visible = !final;
}

static void clear_bar(progress *self)
{
    if (self->bar_visible) {
        printf("\r\033[K");
        self->bar_visible = 0;
    }
}

static loom_status progress_on_event(loom_callback *self_, uint32_t event, const loom_trainer_state *state,
                                     loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)control;
    progress *self = (progress *)self_;
    if (!state->is_world_process_zero) return LOOM_OK;
    switch (event) {
    case LOOM_EVENT_STEP_END: {
        if (self->terminal) {
            double t = now_seconds();
            if (t - self->last_draw >= self->refresh_seconds || state->global_step == state->max_steps) {
                draw(self, state, 0);
                self->last_draw = t;
            }
        } else if (self->plain_every > 0 && state->global_step % self->plain_every == 0) {
            printf("step %lld/%lld  %.1fs\n", (long long)state->global_step, (long long)state->max_steps,
                   state->elapsed_seconds);
            fflush(stdout);
        }
        break;
    }
    case LOOM_EVENT_LOG:
        for (size_t i = 0; payload && i < payload->n_metrics; i++)
            if (strcmp(payload->metrics[i].key, "loss") == 0) self->last_loss = payload->metrics[i].value;
        clear_bar(self);
        loom_format_logs(stdout, payload);
        if (self->terminal && state->global_step < state->max_steps) draw(self, state, 0);
        break;
    case LOOM_EVENT_TRAIN_END:
        if (self->terminal) draw(self, state, 1);
        break;
    default: break;
    }
    return LOOM_OK;
}

static const loom_callback_vtable progress_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = progress_create,
    .destroy = progress_destroy,
    .on_event = progress_on_event,
};

static const loom_plugin_desc progress_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "progress",
    .version = "1.0.0",
    .summary = "live progress bar on a terminal, plain lines elsewhere (HF ProgressCallback)",
    .vtable = &progress_vtable,
    .params = progress_params,
};

LOOM_EXPORT const loom_plugin_desc *loom_plugin_query(uint32_t host_abi_major, uint32_t index)
{
    (void)host_abi_major;
    return index == 0 ? &progress_desc : NULL;
}
