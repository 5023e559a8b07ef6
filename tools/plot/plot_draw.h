/*
 * plot_draw.h - one chart drawn through a small canvas interface, so the SVG page and the PNG
 * show the same thing from one layout.
 */
#ifndef LOOM_PLOT_DRAW_H
#define LOOM_PLOT_DRAW_H

#include "plot.h"

typedef struct plot_canvas {
    void *ctx;
    /* color: "#rrggbb". Coordinates in pixels, y down. */
    void (*line)(void *ctx, const double *xs, const double *ys, size_t n, const char *color, double width);
    /* anchor: -1 start, 0 middle, 1 end; y is the baseline. */
    void (*text)(void *ctx, double x, double y, const char *text, double size, int anchor, const char *color);
} plot_canvas;

void plot_draw_chart(const plot_set *set, const plot_chart *chart, double width, double height,
                     const plot_canvas *canvas);

#endif
