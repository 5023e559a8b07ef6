/*
 * adamw_bandwidth.c - the CPU optimizer step against the machine's memory bandwidth: the loom
 * side of bench/adamw_bandwidth (docs/benchmarks.md#adamw-bandwidth).
 *
 *   bench_adamw_bandwidth [--n 33554432] [--layout flat|gpt2|small] [--threads 1,2] [--reps 10]
 *                         [--parts triad,streams7,adamw,bf16]
 *
 * For each thread count (default 1 and all cores), on buffers far larger than the caches: and on buffers far larger
 * than the caches: triad   STREAM's a[i] = b[i] + s*c[i] on doubles (as many as parameters, at most 2^25), counted as
 * STREAM counts it (24 bytes per element: two reads and one write; the write-allocate read of a[] is not counted);
 *   streams7  AdamW's memory traffic without its arithmetic (p += g, m += g, v += g in place),
 *           28 bytes per element like AdamW;
 *   adamw   one step of the real adamw plugin (loaded by the core loader, as the trainer
 *           does), counted as 28 bytes per parameter: f32 param, grad, m, v read and param, m,
 *           v written in place;
 *   bf16    the bf16 precision plugin's master-weight step around the same plugin: unscale
 *           (bf16 gradient -> f32 master gradient: 2 read + 4 written), adamw on the f32
 *           master (28), cast_to_model (f32 master -> bf16 parameter: 4 read + 2 written),
 *           40 bytes per parameter in three passes. The host's gradient-norm pass is not
 *           included (it belongs to clipping, not to the precision path).
 * All buffers are set up first; then each rep runs every kernel once, back to back, so that
 * they all see the same background load (the machine is shared), and the share of the triad is
 * taken rep by rep. The first rep is not timed. Each kernel prints one JSON line: the best and
 * the median rep, and the median of the per-rep shares of the triad.
 * --layout gpt2 lays the parameters out as GPT-2 124M's 148 tensors (one span each, weight
 * decay 0.1 on matrices, 0 on biases and layer norms; --n is then ignored); --layout small
 * cuts --n (at most 2^25) into spans of 8192, below the size at which one span was threaded.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/optimizer.h>
#include <loom/precision.h>

#include "error.h"
#include "host.h"
#include "lk_cpu.h"
#include "plugin_config.h"
#include "plugin_loader.h"

#include "bench_clock.h"

#define MAX_SPANS 4096

typedef struct layout {
    int64_t numel[MAX_SPANS];
    double decay[MAX_SPANS];
    size_t n_spans;
    int64_t total;
} layout;

static void layout_add(layout *l, int64_t numel, double decay)
{
    l->numel[l->n_spans] = numel;
    l->decay[l->n_spans++] = decay;
    l->total += numel;
}

/* GPT-2 124M's parameters in the trainer's order; decay as HF's Trainer groups them. */
static void layout_gpt2(layout *l)
{
    const int64_t C = 768, V = 50257, P = 1024;
    layout_add(l, V * C, 0.1);
    layout_add(l, P * C, 0.1);
    for (int b = 0; b < 12; b++) {
        const int64_t shapes[12][2] = {{C, 0},         {C, 0},     {C * 3 * C, 1}, {3 * C, 0},
                                       {C * C, 1},     {C, 0},     {C, 0},         {C, 0},
                                       {C * 4 * C, 1}, {4 * C, 0}, {4 * C * C, 1}, {C, 0}};
        for (int k = 0; k < 12; k++)
            layout_add(l, shapes[k][0], shapes[k][1] ? 0.1 : 0.0);
    }
    layout_add(l, C, 0.0);
    layout_add(l, C, 0.0);
}

static void *big_alloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1)) {
        fprintf(stderr, "bench_adamw_bandwidth: out of memory for %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

typedef struct opened {
    const loom_plugin *plugin;
    loom_config *config;
    loom_host *host;
} opened;

/* One measured kernel: its buffers live for the whole run, and every rep times each kernel
 * once, back to back, so that all of them see the same background load (the development
 * machines are shared) and the shares are taken rep by rep. */
typedef struct kernel {
    const char *what;
    double bytes;
    void (*run)(struct kernel *k, int64_t rep);
    void (*finish)(struct kernel *k);
    int threads;
    int64_t n;
    void *buf[6];
    const layout *l;
    loom_span *spans;
    opened po, oo;
    const loom_precision_vtable *pvt;
    const loom_optimizer_vtable *ovt;
    loom_precision *prec;
    loom_optimizer *opt;
    double t[64], t_in[64], t_step[64], t_out[64]; /* seconds per rep */
} kernel;

/* ---- STREAM triad --------------------------------------------------------------------- */

static void triad_run(kernel *k, int64_t rep)
{
    (void)rep;
    double *a = k->buf[0];
    const double *b = k->buf[1], *c = k->buf[2];
    const int64_t n = k->n;
    const double s = 3.0;
#pragma omp parallel for simd schedule(static) num_threads(k->threads)
    for (int64_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

static void triad_setup(kernel *k, int64_t n, int threads)
{
    *k = (kernel){.what = "triad", .bytes = 24.0 * (double)n, .run = triad_run, .threads = threads, .n = n};
    double *a = k->buf[0] = big_alloc((size_t)n * 8), *b = k->buf[1] = big_alloc((size_t)n * 8),
           *c = k->buf[2] = big_alloc((size_t)n * 8);
    /* First touch with the schedule of the timed loop, as STREAM does. */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        a[i] = 1.0;
        b[i] = 2.0;
        c[i] = 0.5;
    }
}

/* ---- AdamW's streams without its arithmetic -------------------------------------------- */

/* p += g, m += g, v += g in place: the four f32 reads and three in-place writes of an AdamW
 * step (28 bytes per element, none of them a write-allocate), one add each. How close AdamW
 * comes to this says what its arithmetic costs; how this compares with the triad says what
 * the stream mix costs. */
static void streams7_run(kernel *k, int64_t rep)
{
    (void)rep;
    float *p = k->buf[0], *m = k->buf[2], *v = k->buf[3];
    const float *g = k->buf[1];
    const int64_t n = k->n;
#pragma omp parallel for simd schedule(static) num_threads(k->threads)
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i];
        p[i] += gi;
        m[i] += gi;
        v[i] += gi;
    }
}

/* Deterministic, finite, mixed-sign values; filled on `threads` threads (first touch). */
static void fill(float *x, int64_t n, float scale, float shift, int threads)
{
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (float)((i * 2654435761u) % 1000u) * 1e-3f + shift;
}

static void streams7_setup(kernel *k, int64_t n, int threads)
{
    *k = (kernel){.what = "streams7", .bytes = 28.0 * (double)n, .run = streams7_run, .threads = threads, .n = n};
    for (int j = 0; j < 4; j++) {
        k->buf[j] = big_alloc((size_t)n * 4);
        fill(k->buf[j], n, 1.0f, 0.0f, threads);
    }
}

/* ---- plugins -------------------------------------------------------------------------- */

static const void *open_plugin(opened *o, const char *name, uint32_t kind)
{
    memset(o, 0, sizeof *o);
    if (loom_plugin_load(name, kind, &o->plugin) || !(o->config = loom_config_from_spec(o->plugin->desc))) {
        fprintf(stderr, "bench_adamw_bandwidth: loading %s: %s\n", name, loom_error_message());
        exit(1);
    }
    o->host = loom_host_create(name);
    return o->plugin->desc->vtable;
}

static void close_plugin(opened *o)
{
    if (o->config) loom_config_free(o->config);
    if (o->host) loom_host_destroy(o->host);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_adamw_bandwidth: %s: %s\n", what, loom_error_message());
    exit(1);
}

/* Spans of the layout over one flat range of p/g/m/v, as the host lays them out. */
static loom_span *make_spans(const layout *l, float *p, float *g, float *m, float *v)
{
    loom_span *spans = calloc(l->n_spans, sizeof *spans);
    if (!spans) die("spans");
    int64_t off = 0;
    for (size_t i = 0; i < l->n_spans; i++) {
        spans[i] = (loom_span){
            LOOM_HEADER_INIT(loom_span),
            .name = "bench",
            .tensor_numel = l->numel[i],
            .numel = l->numel[i],
            .ndim = 1,
            .shape = {l->numel[i]},
            .flags = l->decay[i] == 0 ? LOOM_SPAN_NO_DECAY : 0,
            .param = p + off,
            .grad = g + off,
            .state = {m + off, v + off},
            .weight_decay = l->decay[i],
        };
        off += l->numel[i];
    }
    return spans;
}

static loom_optimizer_step step_args(int64_t t)
{
    /* The host's CPU kernel table, as the trainer lends it (ABI 1.5): adamw runs its
     * adam_update, the loop the plugin would run itself without one. */
    return (loom_optimizer_step){LOOM_HEADER_INIT(loom_optimizer_step), .step = t, .lr = 1e-3,
                                 .grad_scale = 1.0, .momentum = NAN, .kernels = lk_cpu_kernel_table()};
}

static void open_adamw(kernel *k)
{
    k->ovt = open_plugin(&k->oo, "adamw", LOOM_KIND_OPTIMIZER);
    if (k->ovt->create(k->oo.host, loom_host_api_table(), k->oo.config, &k->opt)) die("create adamw");
}

static void adamw_run(kernel *k, int64_t rep)
{
    loom_optimizer_step st = step_args(rep + 1);
    if (k->ovt->step(k->opt, k->spans, k->l->n_spans, &st)) die("adamw step");
}

static void adamw_setup(kernel *k, const layout *l, int threads)
{
    const int64_t n = l->total;
    *k = (kernel){.what = "adamw", .bytes = 28.0 * (double)n, .run = adamw_run, .threads = threads, .n = n, .l = l};
    for (int j = 0; j < 4; j++)
        k->buf[j] = big_alloc((size_t)n * 4);
    fill(k->buf[0], n, 1.0f, -0.5f, threads);
    fill(k->buf[1], n, 0.02f, -0.01f, threads);
    fill(k->buf[2], n, 0.0f, 0.0f, threads);
    fill(k->buf[3], n, 0.0f, 0.0f, threads);
    k->spans = make_spans(l, k->buf[0], k->buf[1], k->buf[2], k->buf[3]);
    open_adamw(k);
}

/* unscale (bf16 gradient -> f32 master gradient), adamw on the master, cast_to_model. */
static void bf16_run(kernel *k, int64_t rep)
{
    loom_optimizer_step st = step_args(rep + 1);
    void *grads[1] = {k->buf[1]};
    int32_t overflow = 0;
    double t0 = bench_now();
    if (k->pvt->unscale(k->prec, grads, 1, &overflow) || overflow) die("bf16 unscale");
    double t1 = bench_now();
    if (k->ovt->step(k->opt, k->spans, k->l->n_spans, &st)) die("adamw step on the master");
    double t2 = bench_now();
    if (k->pvt->cast_to_model(k->prec)) die("bf16 cast_to_model");
    double t3 = bench_now();
    if (rep > 0) {
        k->t_in[rep - 1] = t1 - t0;
        k->t_step[rep - 1] = t2 - t1;
        k->t_out[rep - 1] = t3 - t2;
    }
}

static void bf16_setup(kernel *k, const layout *l, int threads)
{
    const int64_t n = l->total;
    *k =
        (kernel){.what = "bf16_master", .bytes = 40.0 * (double)n, .run = bf16_run, .threads = threads, .n = n, .l = l};
    uint16_t *model = k->buf[0] = big_alloc((size_t)n * 2), *grad = k->buf[1] = big_alloc((size_t)n * 2);
    k->buf[2] = big_alloc((size_t)n * 4);
    k->buf[3] = big_alloc((size_t)n * 4);
    /* bf16 values of the same kind as the f32 ones: the top half of a float. */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        float pf = (float)((i * 2654435761u) % 1000u) * 1e-3f - 0.5f;
        float gf = 0.02f * (float)((i * 40503u) % 1000u) * 1e-3f - 0.01f;
        uint32_t pu, gu;
        memcpy(&pu, &pf, 4);
        memcpy(&gu, &gf, 4);
        model[i] = (uint16_t)(pu >> 16);
        grad[i] = (uint16_t)(gu >> 16);
    }
    fill(k->buf[2], n, 0.0f, 0.0f, threads);
    fill(k->buf[3], n, 0.0f, 0.0f, threads);
    k->pvt = open_plugin(&k->po, "bf16", LOOM_KIND_PRECISION);
    if (k->pvt->create(k->po.host, loom_host_api_table(), k->po.config, &k->prec)) die("create bf16");
    static loom_range all;
    all = (loom_range){0, n};
    loom_precision_binding b = {LOOM_HEADER_INIT(loom_precision_binding)};
    b.params = model;
    b.owned = &all;
    b.n_owned = 1;
    if (k->pvt->bind(k->prec, &b)) die("bind bf16");
    float *mp = NULL, *mg = NULL;
    if (k->pvt->master(k->prec, 0, grad, &mp, &mg)) die("bf16 master");
    k->spans = make_spans(l, mp, mg, k->buf[2], k->buf[3]);
    open_adamw(k);
}

static void kernel_free(kernel *k)
{
    if (k->opt) k->ovt->destroy(k->opt);
    if (k->prec) k->pvt->destroy(k->prec);
    close_plugin(&k->oo);
    close_plugin(&k->po);
    free(k->spans);
    for (int j = 0; j < 6; j++)
        free(k->buf[j]);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, bench_compare_doubles);
    return x[n / 2];
}

static void report(kernel *k, const kernel *triad, int reps)
{
    double sorted[64], share[64];
    memcpy(sorted, k->t, (size_t)reps * sizeof *sorted);
    for (int r = 0; r < reps; r++)
        share[r] = triad ? (k->bytes / k->t[r]) / (triad->bytes / triad->t[r]) : NAN;
    double best = sorted[0], med = median(sorted, reps);
    for (int r = 1; r < reps; r++)
        best = sorted[r] < best ? sorted[r] : best;
    double share_med = triad ? median(share, reps) : NAN;
    printf("{\"side\":\"loom\",\"what\":\"%s\",\"threads\":%d,\"n\":%lld,\"bytes\":%.0f,"
           "\"best_s\":%.6f,\"median_s\":%.6f,\"gbps_best\":%.2f,\"gbps_median\":%.2f",
           k->what, k->threads, (long long)k->n, k->bytes, best, med, k->bytes / best * 1e-9,
           k->bytes / med * 1e-9);
    if (triad) printf(",\"share_of_triad_median\":%.4f", share_med);
    if (k->l) printf(",\"spans\":%zu", k->l->n_spans);
    if (k->run == bf16_run)
        printf(",\"unscale_median_s\":%.6f,\"step_median_s\":%.6f,\"cast_median_s\":%.6f", median(k->t_in, reps),
               median(k->t_step, reps), median(k->t_out, reps));
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int64_t n = (int64_t)1 << 25;
    const char *layout_name = "flat", *thread_list = NULL, *parts = "triad,streams7,adamw,bf16";
    int reps = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--layout")) layout_name = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) thread_list = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--parts")) parts = argv[i + 1];
        else {
            fprintf(stderr, "bench_adamw_bandwidth: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if ((argc - 1) % 2) {
        fprintf(stderr, "bench_adamw_bandwidth: %s needs a value\n", argv[argc - 1]);
        return 2;
    }
    if (reps < 1 || reps > 64 || n < 1) {
        fprintf(stderr, "bench_adamw_bandwidth: --reps must be 1..64 and --n >= 1\n");
        return 2;
    }
    layout l = {0};
    if (!strcmp(layout_name, "gpt2")) layout_gpt2(&l);
    else if (!strcmp(layout_name, "flat")) layout_add(&l, n, 0.1);
    else if (!strcmp(layout_name, "small")) {
        /* Many spans below the per-span threading threshold (LK_STEP_PARALLEL_MIN = 2^15), as
         * a model of many small tensors or a rank's sharded pieces gives. */
        if (n > (int64_t)8192 * MAX_SPANS) n = (int64_t)8192 * MAX_SPANS;
        for (int64_t left = n; left > 0; left -= 8192)
            layout_add(&l, left < 8192 ? left : 8192, l.n_spans % 2 ? 0.0 : 0.1);
    }
    else {
        fprintf(stderr, "bench_adamw_bandwidth: --layout %s: flat, gpt2 or small\n", layout_name);
        return 2;
    }
    char all[16];
    snprintf(all, sizeof all, "1,%d", omp_get_num_procs());
    if (!thread_list) thread_list = omp_get_num_procs() > 1 ? all : "1";
    if (loom_loader_init(NULL, 0)) die("plugin loader");
    for (const char *t = thread_list; t && *t;) {
        int threads = atoi(t);
        if (threads < 1) {
            fprintf(stderr, "bench_adamw_bandwidth: --threads %s: a list of counts >= 1\n", thread_list);
            return 2;
        }
        /* The plugins read the host's thread budget at create; convert's loops use the default. */
        loom_host_set_threads(threads);
        omp_set_num_threads(threads);
        /* 2^25 doubles are 256 MiB an array, eight times the last-level cache. */
        const int64_t triad_n = l.total < ((int64_t)1 << 25) ? l.total : (int64_t)1 << 25;
        kernel ks[4];
        int nk = 0;
        if (strstr(parts, "triad")) triad_setup(&ks[nk++], triad_n, threads);
        if (strstr(parts, "streams7")) streams7_setup(&ks[nk++], l.total, threads);
        if (strstr(parts, "adamw")) adamw_setup(&ks[nk++], &l, threads);
        if (strstr(parts, "bf16")) bf16_setup(&ks[nk++], &l, threads);
        /* Rep 0 of each is not timed: it pays for the first touch of the plugins' buffers. */
        for (int r = 0; r <= reps; r++)
            for (int j = 0; j < nk; j++) {
                double t0 = bench_now();
                ks[j].run(&ks[j], r);
                if (r > 0) ks[j].t[r - 1] = bench_now() - t0;
            }
        const kernel *tri = nk && ks[0].run == triad_run ? &ks[0] : NULL;
        for (int j = 0; j < nk; j++) {
            report(&ks[j], &ks[j] == tri ? NULL : tri, reps);
            kernel_free(&ks[j]);
        }
        t = strchr(t, ',');
        if (t) t++;
    }
    loom_loader_shutdown();
    return 0;
}
