/*
 * progress.c - HF's ProgressCallback: on a terminal, a live bar redrawn in place at most
 * `refresh_seconds` apart, with log entries printed above it; elsewhere (a file, a pipe, CI) a
 * plain line every `plain_every` steps and at each log entry, so logs stay readable. Only the
 * world's process zero prints.
 *
 * The bar is tqdm's:  45%|#####      | 45/100 [00:12<00:15, 3.61it/s, loss=0.6931, lr=5e-05]
 * It is fitted to the terminal's width, asked again at every redraw so a resize is followed
 * without a signal handler; what does not fit goes in this order: lr, loss, the bar itself. The
 * loss and learning rate are the last logged ones, absent before the first log. Evaluation and
 * prediction get a bar of their own on the same line while they run.
 *
 * A bar is written as "<text>ESC[K\r": the cursor rests at the start of the line, so the next
 * redraw, or a log line ("ESC[K" + text + "\n"), overwrites it, and a relay that passes on
 * output at each '\r' (loom launch) shows every redraw at once. The text stays one column
 * short of the width, so a terminal never wraps it.
 *
 * Under `loom launch` the ranks write into pipes. The launcher, when its own output is a
 * terminal, gives rank 0 LOOM_PROGRESS_TTY (that terminal's device, asked only for its width)
 * and LOOM_PROGRESS_INDENT (the columns its "[rank 0] " prefix takes).
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <loom/callback.h>
#include <loom/plugin.h>

#include "log_format.h"

typedef struct progress {
    loom_host *host;
    const loom_host_api *api;
    int terminal;
    int tty_fd;      /* the launcher's terminal, asked for its size; -1: stdout's */
    int indent;      /* columns taken before our text on the line */
    double refresh_seconds;
    int64_t plain_every;
    double last_draw;
    int have_loss, have_lr;
    double last_loss, last_lr;
    int bar_visible;
    double eval_start;   /* 0: not evaluating */
    int64_t eval_done;
} progress;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const loom_param_spec progress_params[] = {
    {"refresh_seconds", LOOM_PARAM_FLOAT, 0, "0.1", "minimum time between redraws of the bar on a terminal"},
    {"plain_every", LOOM_PARAM_INT, 0, "0",
     "without a terminal: a progress line every N steps (0 = at log entries only)"},
    {"force_terminal", LOOM_PARAM_BOOL, 0, "false",
     "draw the live bar even when stdout is not a terminal (width from COLUMNS, else 80)"},
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
    self->tty_fd = -1;
    int32_t force = 0;
    api->cfg_f64(config, "refresh_seconds", &self->refresh_seconds);
    api->cfg_i64(config, "plain_every", &self->plain_every);
    api->cfg_bool(config, "force_terminal", &force);
    const char *tty = getenv("LOOM_PROGRESS_TTY");
    if (tty && *tty) self->tty_fd = open(tty, O_RDONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    const char *indent = getenv("LOOM_PROGRESS_INDENT");
    if (indent) self->indent = atoi(indent) > 0 && atoi(indent) < 64 ? atoi(indent) : 0;
    self->terminal = force || isatty(STDOUT_FILENO) || self->tty_fd >= 0;
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void progress_destroy(loom_callback *self_)
{
    progress *self = (progress *)self_;
    if (!self) return;
    if (self->tty_fd >= 0) close(self->tty_fd);
    self->api->free_memory(self->host, self);
}

/* Columns our text may use: the terminal's, less the launcher's prefix, less one. */
static int text_width(const progress *self)
{
    struct winsize ws;
    int cols = 0;
    if (ioctl(self->tty_fd >= 0 ? self->tty_fd : STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) cols = ws.ws_col;
    if (cols <= 0 && getenv("COLUMNS")) cols = atoi(getenv("COLUMNS"));
    if (cols <= 0) cols = 80;
    cols -= self->indent + 1;
    return cols < 8 ? 8 : cols;
}

static void format_duration(char *buf, size_t size, double seconds)
{
    if (!(seconds >= 0) || seconds > 360000) {
        snprintf(buf, size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        snprintf(buf, size, "%02ld:%02ld", s / 60, s % 60);
}

/* tqdm's rate: it/s, or s/it when slower than one a second. */
static void format_rate(char *buf, size_t size, int64_t done, double elapsed)
{
    if (done <= 0 || elapsed <= 0)
        snprintf(buf, size, "?it/s");
    else if (done >= elapsed)
        snprintf(buf, size, done >= 100 * elapsed ? "%.0fit/s" : "%.2fit/s", (double)done / elapsed);
    else
        snprintf(buf, size, "%.2fs/it", elapsed / (double)done);
}

/* One bar of at most `width` columns: "[label: ]P%|###  | done/total [spent<left, rate, extras]".
 * total <= 0: no percentage or bar. When the bar would be under 5 columns the extras go, last
 * first; then the bar; then the text is cut. */
static void render(char *out, size_t cap, int width, const char *label, int64_t done, int64_t total,
                   double elapsed, const char *const *extras, int n_extras)
{
    char spent[32], left[32], rate[32], counts[64], prefix[64], tail[256];
    format_duration(spent, sizeof spent, elapsed);
    format_duration(left, sizeof left, total > 0 && done > 0 ? (double)(total - done) * elapsed / (double)done : -1);
    format_rate(rate, sizeof rate, done, elapsed);
    if (total > 0)
        snprintf(counts, sizeof counts, "%lld/%lld", (long long)done, (long long)total);
    else
        snprintf(counts, sizeof counts, "%lld", (long long)done);
    int pct = total > 0 ? (int)(100.0 * (double)done / (double)total) : 0;
    snprintf(prefix, sizeof prefix, "%s%s", label ? label : "", label ? ":" : "");
    if (total > 0)
        snprintf(prefix + strlen(prefix), sizeof prefix - strlen(prefix), "%s%3d%%", label ? " " : "",
                 pct > 100 ? 100 : pct);
    for (int keep = n_extras; keep >= 0; keep--) {
        size_t n = (size_t)snprintf(tail, sizeof tail, " %s [%s", counts, spent);
        if (total > 0) n += (size_t)snprintf(tail + n, sizeof tail - n, "<%s", left);
        n += (size_t)snprintf(tail + n, sizeof tail - n, ", %s", rate);
        for (int e = 0; e < keep && n < sizeof tail; e++)
            n += (size_t)snprintf(tail + n, sizeof tail - n, ", %s", extras[e]);
        if (n < sizeof tail) snprintf(tail + n, sizeof tail - n, "]");
        int bar = width - (int)strlen(prefix) - 2 - (int)strlen(tail);
        if (total > 0 && bar >= 5) {
            int filled = done >= total ? bar : (int)((double)bar * (double)done / (double)total);
            size_t at = (size_t)snprintf(out, cap, "%s|", prefix);
            for (int i = 0; i < bar && at + 1 < cap; i++) out[at++] = i < filled ? '#' : ' ';
            snprintf(out + at, cap - at, "|%s", tail);
            return;
        }
    }
    /* No room for a bar: the numbers alone (tail holds no extras now), the label cut to four
     * letters ("Eval"), then the times dropped (a fast evaluation's rate has six digits: cutting
     * the line instead would cut the rate), and the whole cut as a last resort. */
    snprintf(out, cap, "%s%s", prefix, tail);
    if ((int)strlen(out) > width && label && strlen(label) > 4) {
        char cut[64];
        snprintf(cut, sizeof cut, "%.4s%s", label, prefix + strlen(label));
        snprintf(prefix, sizeof prefix, "%s", cut);
        snprintf(out, cap, "%s%s", prefix, tail);
    }
    if ((int)strlen(out) > width) {
        snprintf(tail, sizeof tail, " %s %s", counts, rate);
        snprintf(out, cap, "%s%s", prefix, tail);
    }
    if (width >= 0 && (size_t)width < cap && (int)strlen(out) > width) out[width] = 0;
}

static void put_bar(progress *self, const char *text, int final)
{
    fputs(text, stdout);
    fputs(final ? "\033[K\n" : "\033[K\r", stdout);
    fflush(stdout);
    self->bar_visible = !final;
}

static void draw(progress *self, const loom_trainer_state *state, int final)
{
    char loss[48], lr[48], line[512];
    const char *extras[2];
    int n = 0;
    if (self->have_loss) {
        snprintf(loss, sizeof loss, "loss=%.4g", self->last_loss);
        extras[n++] = loss;
    }
    if (self->have_lr) {
        snprintf(lr, sizeof lr, "lr=%.3g", self->last_lr);
        extras[n++] = lr;
    }
    render(line, sizeof line, text_width(self), NULL, state->global_step, state->max_steps, state->elapsed_seconds,
           extras, n);
    put_bar(self, line, final);
}

static void draw_eval(progress *self, const loom_event_payload *payload)
{
    int64_t total = 0;
    const char *label = "Evaluating";
    for (size_t i = 0; payload && i < payload->n_metrics; i++) {
        const char *key = payload->metrics[i].key;
        size_t n = strlen(key);
        if (n < 8 || strcmp(key + n - 8, "_batches") != 0) continue;
        total = (int64_t)payload->metrics[i].value;
        if (!strncmp(key, "test_", 5)) label = "Predicting";
    }
    char line[512];
    render(line, sizeof line, text_width(self), label, self->eval_done, total, now_seconds() - self->eval_start, NULL,
           0);
    put_bar(self, line, 0);
}

static void clear_bar(progress *self)
{
    if (self->bar_visible) {
        fputs("\033[K", stdout);
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
    case LOOM_EVENT_PREDICTION_STEP:
        if (!self->terminal) break;
        if (self->eval_start == 0) self->eval_start = now_seconds(), self->eval_done = 0, self->last_draw = 0;
        self->eval_done++;
        if (now_seconds() - self->last_draw >= self->refresh_seconds) {
            draw_eval(self, payload);
            self->last_draw = now_seconds();
        }
        break;
    case LOOM_EVENT_EVALUATE:
    case LOOM_EVENT_PREDICT:
        self->eval_start = 0;
        clear_bar(self);
        if (self->terminal && event == LOOM_EVENT_EVALUATE && state->max_steps > 0 &&
            state->global_step < state->max_steps)
            draw(self, state, 0);
        break;
    case LOOM_EVENT_LOG:
        for (size_t i = 0; payload && i < payload->n_metrics; i++) {
            const loom_metric *m = &payload->metrics[i];
            if (!strcmp(m->key, "loss") && isfinite(m->value)) self->last_loss = m->value, self->have_loss = 1;
            if (!strcmp(m->key, "learning_rate")) self->last_lr = m->value, self->have_lr = 1;
        }
        clear_bar(self);
        loom_format_logs(stdout, payload);
        if (self->terminal && self->eval_start == 0 && state->global_step < state->max_steps) draw(self, state, 0);
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
    .version = "1.1.0",
    .summary = "live progress bar on a terminal, plain lines elsewhere (HF ProgressCallback)",
    .vtable = &progress_vtable,
    .params = progress_params,
};

LOOM_PLUGIN_EXPORT(&progress_desc)
