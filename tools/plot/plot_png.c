/*
 * plot_png.c - one chart as a PNG, drawn by cairo (text through fontconfig's sans-serif).
 */
#include <stdio.h>
#include <stdlib.h>

#include "plot_draw.h"

#ifdef LOOM_HAVE_CAIRO
#include <cairo.h>

static void set_color(cairo_t *cr, const char *hex)
{
    unsigned rgb = (unsigned)strtoul(hex + 1, NULL, 16);
    cairo_set_source_rgb(cr, ((rgb >> 16) & 255) / 255.0, ((rgb >> 8) & 255) / 255.0, (rgb & 255) / 255.0);
}

static void png_line(void *ctx, const double *xs, const double *ys, size_t n, const char *color, double width)
{
    cairo_t *cr = ctx;
    set_color(cr, color);
    cairo_set_line_width(cr, width);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (size_t i = 0; i < n; i++)
        if (i)
            cairo_line_to(cr, xs[i], ys[i]);
        else
            cairo_move_to(cr, xs[i], ys[i]);
    cairo_stroke(cr);
}

static void png_text(void *ctx, double x, double y, const char *text, double size, int anchor, const char *color)
{
    cairo_t *cr = ctx;
    cairo_text_extents_t ext;
    set_color(cr, color);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_text_extents(cr, text, &ext);
    cairo_move_to(cr, anchor < 0 ? x : anchor > 0 ? x - ext.x_advance : x - ext.x_advance / 2, y);
    cairo_show_text(cr, text);
}

int plot_write_png(const plot_set *set, const plot_chart *chart, int width, int height, const char *path, char *err,
                   size_t errlen)
{
    cairo_surface_t *surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
    cairo_t *cr = cairo_create(surface);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    plot_canvas canvas = {cr, png_line, png_text};
    plot_draw_chart(set, chart, width, height, &canvas);
    cairo_status_t status = cairo_status(cr);
    if (status == CAIRO_STATUS_SUCCESS) status = cairo_surface_write_to_png(surface, path);
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
    if (status != CAIRO_STATUS_SUCCESS) {
        snprintf(err, errlen, "%s: cannot write the PNG: %s", path, cairo_status_to_string(status));
        return -1;
    }
    return 0;
}
#else
int plot_write_png(const plot_set *set, const plot_chart *chart, int width, int height, const char *path, char *err,
                   size_t errlen)
{
    (void)set, (void)chart, (void)width, (void)height, (void)path;
    snprintf(err, errlen, "no PNG support: this loom was built without cairo (libcairo2-dev)");
    return -1;
}
#endif
