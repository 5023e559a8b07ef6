/*
 * plot_data.c - a run's log history into one series per (metric, run).
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

/* Book-keeping and end-of-run summaries are not curves. */
static int plotted(const char *key)
{
    return strcmp(key, "step") && strcmp(key, "epoch") && strcmp(key, "total_flos") && strncmp(key, "train_", 6) &&
           !ends_with(key, "_runtime") && !ends_with(key, "_per_second") && strlen(key) < 64;
}

static plot_series *series_for(plot_set *set, const char *metric, int run)
{
    plot_chart *chart = NULL;
    for (size_t c = 0; c < set->n_charts && !chart; c++)
        if (!strcmp(set->charts[c].metric, metric)) chart = &set->charts[c];
    if (!chart) {
        plot_chart *grown = realloc(set->charts, (set->n_charts + 1) * sizeof *grown);
        if (!grown) return NULL;
        set->charts = grown;
        chart = &set->charts[set->n_charts++];
        memset(chart, 0, sizeof *chart);
        snprintf(chart->metric, sizeof chart->metric, "%s", metric);
    }
    for (size_t s = 0; s < chart->n_series; s++)
        if (chart->series[s].run == run) return &chart->series[s];
    plot_series *grown = realloc(chart->series, (chart->n_series + 1) * sizeof *grown);
    if (!grown) return NULL;
    chart->series = grown;
    plot_series *s = &chart->series[chart->n_series++];
    memset(s, 0, sizeof *s);
    s->run = run;
    return s;
}

static int add_point(plot_series *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (!nx) return -1;
        s->x = nx;
        double *ny = realloc(s->y, cap * sizeof *ny);
        if (!ny) return -1;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
    return 0;
}

static int add_entry(plot_set *set, int run, const cJSON *entry, char *err, size_t errlen)
{
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(entry, "step");
    if (!cJSON_IsNumber(step)) return 0;
    for (const cJSON *item = entry->child; item; item = item->next) {
        if (!cJSON_IsNumber(item) || !item->string || !plotted(item->string)) continue;
        plot_series *s = series_for(set, item->string, run);
        if (!s || add_point(s, step->valuedouble, item->valuedouble)) return fail(err, errlen, "out of memory");
    }
    return 0;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (size_t r; text && (r = fread(text + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *grown = realloc(text, cap *= 2);
            if (!grown) free(text);
            text = grown;
        }
    }
    fclose(f);
    if (text) text[n] = 0;
    return text;
}

static int load_run(plot_set *set, int run, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/log_history.jsonl", dir);
    char *text = read_all(path);
    if (text) {
        int rc = 0;
        long skipped = 0, first = 0, number = 0;
        for (char *line = text, *next; line && *line && !rc; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            number++;
            cJSON *entry = cJSON_Parse(line);
            if (cJSON_IsObject(entry)) rc = add_entry(set, run, entry, err, errlen);
            /* A last line without its newline is a run writing it now; another is damage. */
            else if (next && *line && !skipped++)
                first = number;
            cJSON_Delete(entry);
        }
        if (skipped)
            fprintf(stderr,
                    "loom: warning: plot: %s: %ld line(s) that are not a JSON object left out (line %ld first)\n", path,
                    skipped, first);
        free(text);
        return rc;
    }
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if (!(text = read_all(path)))
        return fail(err, errlen, "%s: no log_history.jsonl or trainer_state.json (is it a training run's output_dir?)",
                    dir);
    cJSON *state = cJSON_Parse(text);
    free(text);
    const cJSON *history = cJSON_GetObjectItemCaseSensitive(state, "log_history");
    int rc = cJSON_IsArray(history) ? 0 : fail(err, errlen, "%s: trainer_state.json has no log_history", path);
    for (const cJSON *entry = history ? history->child : NULL; entry && !rc; entry = entry->next)
        rc = add_entry(set, run, entry, err, errlen);
    cJSON_Delete(state);
    return rc;
}

static int chart_rank(const char *metric)
{
    static const char *const first[] = {"loss", "eval_loss", "learning_rate", "grad_norm"};
    for (int k = 0; k < 4; k++)
        if (!strcmp(metric, first[k])) return k;
    return 4;
}

static int compare_charts(const void *a, const void *b)
{
    const plot_chart *x = a, *y = b;
    int rx = chart_rank(x->metric), ry = chart_rank(y->metric);
    return rx != ry ? rx - ry : strcmp(x->metric, y->metric);
}

int plot_load(plot_set *set, const char *const *run_dirs, size_t n_runs, char *err, size_t errlen)
{
    memset(set, 0, sizeof *set);
    set->runs = calloc(n_runs ? n_runs : 1, sizeof *set->runs);
    if (!set->runs) return fail(err, errlen, "out of memory");
    for (size_t r = 0; r < n_runs; r++) {
        if (!(set->runs[r] = strdup(run_dirs[r]))) return fail(err, errlen, "out of memory");
        set->n_runs++;
        if (load_run(set, (int)r, run_dirs[r], err, errlen)) return -1;
    }
    qsort(set->charts, set->n_charts, sizeof *set->charts, compare_charts);
    return 0;
}

void plot_free(plot_set *set)
{
    for (size_t c = 0; c < set->n_charts; c++) {
        for (size_t s = 0; s < set->charts[c].n_series; s++) {
            free(set->charts[c].series[s].x);
            free(set->charts[c].series[s].y);
        }
        free(set->charts[c].series);
    }
    for (size_t r = 0; r < set->n_runs; r++) free(set->runs[r]);
    free(set->charts);
    free(set->runs);
    memset(set, 0, sizeof *set);
}
