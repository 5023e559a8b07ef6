/*
 * plot_html.c - the charts as one self-contained HTML page of inline SVG. Written to a
 * temporary file and renamed, so a browser reloading it while a run refreshes it never reads
 * half a page.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "plot_draw.h"

enum { CHART_W = 640, CHART_H = 400 };

static void escaped(FILE *f, const char *text)
{
    for (; *text; text++) switch (*text) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*text, f);
        }
}

static void svg_line(void *ctx, const double *xs, const double *ys, size_t n, const char *color, double width)
{
    FILE *f = ctx;
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%g\" points=\"", color, width);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%.1f,%.1f", i ? " " : "", xs[i], ys[i]);
    fputs("\"/>\n", f);
}

static void svg_text(void *ctx, double x, double y, const char *text, double size, int anchor, const char *color)
{
    FILE *f = ctx;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%g\" fill=\"%s\" text-anchor=\"%s\">", x, y, size, color,
            anchor < 0 ? "start" : anchor > 0 ? "end" : "middle");
    escaped(f, text);
    fputs("</text>\n", f);
}

int plot_write_html(const plot_set *set, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        return -1;
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>loom: ", f);
    for (size_t r = 0; r < set->n_runs; r++) {
        if (r) fputs(", ", f);
        escaped(f, set->runs[r]);
    }
    fputs("</title>\n<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:0.5em}"
          "svg{border:1px solid #ccc;background:#fff}</style>\n</head>\n<body>\n<h1>Training curves</h1>\n<p>",
          f);
    for (size_t r = 0; r < set->n_runs; r++) {
        if (r) fputs(", ", f);
        escaped(f, set->runs[r]);
    }
    if (!set->n_charts) fputs("</p>\n<p>Nothing logged yet.", f);
    fputs("</p>\n", f);
    plot_canvas canvas = {f, svg_line, svg_text};
    for (size_t c = 0; c < set->n_charts; c++) {
        fputs("<figure class=\"chart\" data-metric=\"", f);
        escaped(f, set->charts[c].metric);
        fprintf(f, "\">\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                   "font-family=\"sans-serif\">\n",
                CHART_W, CHART_H, CHART_W, CHART_H);
        plot_draw_chart(set, &set->charts[c], CHART_W, CHART_H, &canvas);
        fputs("</svg>\n</figure>\n", f);
    }
    fputs("</body>\n</html>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}
