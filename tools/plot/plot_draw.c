/*
 * plot_draw.c - the layout of a chart: a frame, "nice" ticks (1, 2, 5 times a power of ten)
 * with grid lines, one line per run, the metric as title and, for several runs, a legend.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_draw.h"

static const char *const PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static double nice_step(double range)
{
    double raw = range / 5, base = pow(10, floor(log10(raw))), f = raw / base;
    return base * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

static void widen(double *lo, double *hi)
{
    if (*hi > *lo) return;
    double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
    *lo -= pad;
    *hi += pad;
}

static const char *basename_of(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    static char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(n - start), path + start);
    return name;
}

void plot_draw_chart(const plot_set *set, const plot_chart *chart, double width, double height,
                     const plot_canvas *canvas)
{
    const double left = 72, right = 16, top = 30, bottom = 42;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t s = 0; s < chart->n_series; s++)
        for (size_t i = 0; i < chart->series[s].n; i++) {
            double x = chart->series[s].x[i], y = chart->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    if (!(x1 >= x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1; /* nothing finite: an empty frame */
    widen(&x0, &x1);
    widen(&y0, &y1);
    double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
    double pw = width - left - right, ph = height - top - bottom;
#define PX(x) (left + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (top + (1 - ((y) - y0) / (y1 - y0)) * ph)
    char label[64];
    double xs[5], ys[5];
    /* grid and tick labels */
    double step = nice_step(y1 - y0);
    for (double v = ceil(y0 / step) * step; v <= y1 + 1e-9 * step; v += step) {
        xs[0] = left, xs[1] = left + pw, ys[0] = ys[1] = PY(v);
        canvas->line(canvas->ctx, xs, ys, 2, "#dddddd", 1);
        snprintf(label, sizeof label, "%.4g", fabs(v) < step * 1e-6 ? 0.0 : v);
        canvas->text(canvas->ctx, left - 6, PY(v) + 4, label, 11, 1, "#333333");
    }
    step = nice_step(x1 - x0);
    for (double v = ceil(x0 / step) * step; v <= x1 + 1e-9 * step; v += step) {
        xs[0] = xs[1] = PX(v), ys[0] = top, ys[1] = top + ph;
        canvas->line(canvas->ctx, xs, ys, 2, "#dddddd", 1);
        snprintf(label, sizeof label, "%.6g", fabs(v) < step * 1e-6 ? 0.0 : v);
        canvas->text(canvas->ctx, PX(v), top + ph + 16, label, 11, 0, "#333333");
    }
    xs[0] = xs[3] = xs[4] = left, xs[1] = xs[2] = left + pw;
    ys[0] = ys[1] = ys[4] = top, ys[2] = ys[3] = top + ph;
    canvas->line(canvas->ctx, xs, ys, 5, "#333333", 1);
    canvas->text(canvas->ctx, width / 2, 20, chart->metric, 14, 0, "#000000");
    canvas->text(canvas->ctx, left + pw / 2, height - 8, "step", 11, 0, "#333333");
    /* the runs */
    for (size_t s = 0; s < chart->n_series; s++) {
        const plot_series *series = &chart->series[s];
        const char *color = PALETTE[(size_t)series->run % (sizeof PALETTE / sizeof PALETTE[0])];
        double *px = malloc((series->n + 1) * sizeof *px), *py = malloc((series->n + 1) * sizeof *py);
        size_t n = 0;
        for (size_t i = 0; px && py && i <= series->n; i++) {
            if (i < series->n && isfinite(series->x[i]) && isfinite(series->y[i])) {
                px[n] = PX(series->x[i]), py[n++] = PY(series->y[i]);
                continue;
            }
            /* a non-finite value breaks the line; a lone point is a small cross */
            if (n == 1) {
                double cx[2] = {px[0] - 3, px[0] + 3}, cy[2] = {py[0] - 3, py[0] + 3};
                canvas->line(canvas->ctx, cx, cy, 2, color, 2);
                cy[0] = py[0] + 3, cy[1] = py[0] - 3;
                canvas->line(canvas->ctx, cx, cy, 2, color, 2);
            } else if (n > 1)
                canvas->line(canvas->ctx, px, py, n, color, 1.5);
            n = 0;
        }
        free(px);
        free(py);
        if (set->n_runs > 1) {
            double ly = top + 14 + 14 * (double)series->run, lx[2] = {left + pw - 150, left + pw - 130},
                   lyy[2] = {ly - 4, ly - 4};
            canvas->line(canvas->ctx, lx, lyy, 2, color, 2);
            canvas->text(canvas->ctx, left + pw - 126, ly, basename_of(set->runs[series->run]), 11, -1, "#333333");
        }
    }
#undef PX
#undef PY
}
