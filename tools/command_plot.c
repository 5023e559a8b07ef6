/*
 * command_plot.c - `loom plot RUN_DIR [RUN_DIR...]`: the training curves of one or several
 * runs (their log_history.jsonl) as one PNG per metric, curves_<metric>.png, and one HTML page,
 * curves.html, with the same charts as inline SVG. Written into --output_dir, by default the
 * first run's folder; every file written is named on stdout.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "plot.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: loom plot RUN_DIR [RUN_DIR...] [--output_dir DIR]\n"
                 "                 [--width PIXELS] [--height PIXELS]\n"
                 "\n"
                 "Draw the training curves (loss, eval_loss, learning_rate, grad_norm and every\n"
                 "other logged metric against the step) of one or several runs, from each run's\n"
                 "log_history.jsonl (or trainer_state.json). Writes curves_<metric>.png per\n"
                 "metric and curves.html (the same charts as inline SVG; opens in a browser\n"
                 "without a server) into DIR, by default the first RUN_DIR. Default size 800x500\n"
                 "pixels.\n");
}

static int parse_size(const char *name, const char *value, int *out)
{
    char *end = NULL;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || !*value || *end || v < 200 || v > 8000) {
        fprintf(stderr, "loom: error: plot: %s wants a number of pixels in 200..8000, got '%s'\n", name,
                value ? value : "");
        return 0;
    }
    *out = (int)v;
    return 1;
}

int loom_command_plot(int argc, char **argv)
{
    const char **runs = calloc((size_t)argc + 1, sizeof *runs);
    const char *out_dir = NULL;
    int n_runs = 0, width = 800, height = 500;
    if (!runs) return loom_command_fail(LOOM_E_NOMEM);
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            free(runs);
            return 0;
        }
        int ok = 1;
        if (!strcmp(arg, "--output_dir") || !strcmp(arg, "--output-dir")) {
            out_dir = i + 1 < argc ? argv[++i] : NULL;
            if (!out_dir) fprintf(stderr, "loom: error: plot: --output_dir needs a value\n"), ok = 0;
        } else if (!strcmp(arg, "--width"))
            ok = parse_size("--width", i + 1 < argc ? argv[++i] : NULL, &width);
        else if (!strcmp(arg, "--height"))
            ok = parse_size("--height", i + 1 < argc ? argv[++i] : NULL, &height);
        else if (arg[0] == '-') {
            fprintf(stderr, "loom: error: plot: unknown option '%s' (see loom plot --help)\n", arg);
            ok = 0;
        } else
            runs[n_runs++] = arg;
        if (!ok) {
            free(runs);
            return 2;
        }
    }
    if (n_runs == 0) {
        fprintf(stderr, "loom: error: plot: no run folder given (usage: loom plot RUN_DIR [RUN_DIR...])\n");
        free(runs);
        return 2;
    }
    if (!out_dir) out_dir = runs[0];
    plot_set set;
    char err[512] = "", path[4096];
    int rc = plot_load(&set, runs, (size_t)n_runs, err, sizeof err) ? 2 : 0;
    struct stat sb;
    if (!rc && mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, sizeof err, "%s: cannot create the folder: %s", out_dir, strerror(errno));
        rc = 2;
    } else if (!rc && (stat(out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        snprintf(err, sizeof err, "--output_dir %s: not a folder", out_dir); /* one line, not a PNG writer's */
        rc = 2;
    }
    if (!rc && set.n_charts == 0) {
        snprintf(err, sizeof err, "%s: nothing logged yet (no metric to plot)", runs[0]);
        rc = 2;
    }
    for (size_t c = 0; !rc && c < set.n_charts; c++) {
        char name[64];
        snprintf(name, sizeof name, "%s", set.charts[c].metric);
        for (char *p = name; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", *p)) *p = '_';
        snprintf(path, sizeof path, "%s/curves_%s.png", out_dir, name);
        if (plot_write_png(&set, &set.charts[c], width, height, path, err, sizeof err)) {
            fprintf(stderr, "loom: warning: plot: %s\n", err);
            err[0] = 0;
            break; /* no cairo: the page still comes */
        }
        printf("wrote %s\n", path);
    }
    snprintf(path, sizeof path, "%s/curves.html", out_dir);
    if (!rc && plot_write_html(&set, path, err, sizeof err)) rc = 2;
    if (!rc) printf("wrote %s\n", path);
    if (rc) fprintf(stderr, "loom: error: plot: %s\n", err);
    plot_free(&set);
    free(runs);
    return rc;
}
