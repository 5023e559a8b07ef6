/*
 * plot.h - training curves from a run's log_history.jsonl: loss, eval loss, learning rate,
 * grad norm and every other logged metric against the step, for one run or several overlaid.
 *
 * Used by `loom plot` (PNG through cairo, and HTML) and by the history callback, which
 * refreshes the HTML page at each log. The HTML page is self-contained: the charts are inline
 * SVG, so a browser opens it from disk.
 *
 * Errors: functions return 0 on success, -1 with a one-line message in err (errlen bytes).
 */
#ifndef LOOM_PLOT_H
#define LOOM_PLOT_H

#include <stddef.h>

typedef struct plot_series {
    int run;         /* index into plot_set.runs */
    size_t n, cap;
    double *x, *y;   /* step, value */
} plot_series;

typedef struct plot_chart {
    char metric[64];
    size_t n_series;
    plot_series *series;
} plot_chart;

typedef struct plot_set {
    size_t n_runs;
    char **runs;     /* run folders, as given */
    size_t n_charts;
    plot_chart *charts; /* loss, eval_loss, learning_rate, grad_norm first, then by name */
} plot_set;

/* Read RUN/log_history.jsonl (else RUN/trainer_state.json's log_history) of each run. A line
 * that does not parse (a run killed mid-write) is skipped. */
int plot_load(plot_set *set, const char *const *run_dirs, size_t n_runs, char *err, size_t errlen);
void plot_free(plot_set *set);

/* The page: a title, one <figure> with an inline <svg> per chart. */
int plot_write_html(const plot_set *set, const char *path, char *err, size_t errlen);

/* One chart as a PNG of width x height pixels. -1 with "no PNG support" when built without cairo. */
int plot_write_png(const plot_set *set, const plot_chart *chart, int width, int height, const char *path, char *err,
                   size_t errlen);

#endif
