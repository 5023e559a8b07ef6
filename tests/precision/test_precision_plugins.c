/*
 * test_precision_plugins.c - amp, bf16 and apex loaded through the core loader with a real
 * host: dtypes per configuration, binding two owned ranges of a small parameter buffer,
 * unscaling (exact values, inf/NaN detection), casting back with round-to-nearest-even, the
 * O2/O3 difference, scale rules, the stop rule and the checkpoint state.
 *
 * The numeric checks run twice when they can: against a kernel table whose convert is this
 * file's reference conversion (so the plugins' own logic is tested whatever the kernels'
 * state), and against the host's real table once it has convert (ABI 1.1), which then also
 * checks the real conversion bits against the reference. A third table without convert
 * checks that bind() refuses clearly.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <loom/kernels.h>
#include <loom/precision.h>

#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "plugin_loader.h"
#include "test_util.h"

/* ---- reference conversions (round to nearest, ties to even) -------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t ref_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* quiet NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                       /* >= 65520: inf */
    if (a >= 0x38800000u) /* normal: drop 13 mantissa bits, rounding half to even, rebias 127 -> 15 */
        return (uint16_t)(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
    /* subnormal: a multiple of 2^-24; nearbyintf rounds half to even in the default mode */
    return (uint16_t)(sign | (uint32_t)nearbyintf(bits_f32(a) * 16777216.0f));
}

static float ref_from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    float mag = e ? ldexpf((float)(m | 0x400u), (int)e - 25) : ldexpf((float)m, -24);
    return sign ? -mag : mag;
}

static uint16_t ref_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float ref_from_bf16(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

static float load(const void *buf, uint32_t dtype, int64_t i)
{
    if (dtype == LOOM_DTYPE_F32) return ((const float *)buf)[i];
    uint16_t h = ((const uint16_t *)buf)[i];
    return dtype == LOOM_DTYPE_F16 ? ref_from_f16(h) : ref_from_bf16(h);
}

static void store(void *buf, uint32_t dtype, int64_t i, float v)
{
    if (dtype == LOOM_DTYPE_F32)
        ((float *)buf)[i] = v;
    else
        ((uint16_t *)buf)[i] = dtype == LOOM_DTYPE_F16 ? ref_to_f16(v) : ref_to_bf16(v);
}

static float round_to(uint32_t dtype, float v)
{
    uint16_t tmp[2];
    store(tmp, dtype, 0, v);
    return load(tmp, dtype, 0);
}

static void ref_convert(void *dst, uint32_t dst_dtype, const void *src, uint32_t src_dtype, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        store(dst, dst_dtype, i, load(src, src_dtype, i));
}

/* ---- three kernel tables behind three host tables ------------------------------------------ */

static loom_kernels_api shim_table, bare_table;
static loom_host_api shim_api, bare_api;

static const void *shim_service(loom_host *host, const char *name, uint32_t min_minor)
{
    (void)host, (void)min_minor;
    return strcmp(name, LOOM_KERNELS_CPU_SERVICE) == 0 ? &shim_table : NULL;
}

static const void *bare_service(loom_host *host, const char *name, uint32_t min_minor)
{
    (void)host, (void)min_minor;
    return strcmp(name, LOOM_KERNELS_CPU_SERVICE) == 0 ? &bare_table : NULL;
}

/* 1 when the host's own table has convert. */
static int setup_tables(void)
{
    const loom_host_api *real = loom_host_api_table();
    const loom_kernels_api *k = real->service(NULL, LOOM_KERNELS_CPU_SERVICE, 0);
    memset(&shim_table, 0, sizeof shim_table);
    if (k) memcpy(&shim_table, k, k->struct_size < sizeof shim_table ? k->struct_size : sizeof shim_table);
    shim_table.abi_major = LOOM_ABI_MAJOR;
    shim_table.abi_minor = 1;
    shim_table.struct_size = sizeof shim_table;
    bare_table = shim_table;
    shim_table.convert = ref_convert;
    bare_table.convert = NULL;
    shim_api = *real;
    shim_api.service = shim_service;
    bare_api = *real;
    bare_api.service = bare_service;
    return k && LOOM_HAS(k, loom_kernels_api, convert);
}

/* ---- a plugin instance ---------------------------------------------------------------------- */

typedef struct fixture {
    const loom_plugin *plugin;
    const loom_precision_vtable *vt;
    loom_host *host;
    loom_config *config;
    loom_precision *p;
} fixture;

/* Load `name`, apply kv pairs (NULL-terminated), create. The status of create (or of the
 * first failing step before it) is returned; errors are printed only when `quiet` is 0. */
static loom_status open_plugin(fixture *f, const char *name, const char *const *kv, const loom_host_api *api, int quiet)
{
    static int loader_ready;
    memset(f, 0, sizeof *f);
    loom_status st = LOOM_OK;
    if (!loader_ready && !(st = loom_loader_init(NULL, 0))) loader_ready = 1;
    if (!st) st = loom_plugin_load(name, LOOM_KIND_PRECISION, &f->plugin);
    if (st) {
        fprintf(stderr, "loading %s: %s\n", name, loom_error_message());
        return st;
    }
    f->vt = f->plugin->desc->vtable;
    if (!(f->config = loom_config_from_spec(f->plugin->desc))) return LOOM_E_INVALID;
    for (size_t i = 0; kv && kv[i]; i += 2)
        if ((st = loom_config_set(f->config, kv[i], kv[i + 1]))) {
            fprintf(stderr, "%s.%s = %s: %s\n", name, kv[i], kv[i + 1], loom_error_message());
            return st;
        }
    f->host = loom_host_create(name);
    st = f->vt->create(f->host, api, f->config, &f->p);
    if (st && !quiet) fprintf(stderr, "create %s: %s\n", name, loom_error_message());
    return st;
}

static void close_plugin(fixture *f)
{
    if (f->vt && f->p) f->vt->destroy(f->p);
    loom_config_free(f->config);
    if (f->host) loom_host_destroy(f->host);
    memset(f, 0, sizeof *f);
}

static double scale_of(const char *name, const char *const *kv)
{
    fixture f;
    double s = open_plugin(&f, name, kv, &shim_api, 0) ? NAN : f.vt->loss_scale(f.p);
    close_plugin(&f);
    return s;
}

static int creates(const char *name, const char *const *kv)
{
    fixture f;
    loom_status st = open_plugin(&f, name, kv, &shim_api, 1);
    close_plugin(&f);
    return st == LOOM_OK;
}

/* ---- the numeric round trip ----------------------------------------------------------------- */

#define N 100
static const loom_range ranges[2] = {{10, 40}, {60, 95}};

/* N elements of any parameter dtype. */
typedef union storage {
    float f32[N];
    uint16_t u16[N];
} storage;

typedef struct expect {
    uint32_t param_dtype, compute_dtype, has_master;
    int copy;    /* 1: a separate fp32 buffer                                                 */
    int rounded; /* 1: that buffer is re-read from the params every step (apex O3)            */
    double scale;
} expect;

static float param_value(int64_t i)
{
    return (float)(sin(0.37 * (double)i) * (1.0 + 0.01 * (double)i));
}
static float grad_value(int64_t i)
{
    return (float)(cos(0.7 * (double)i) * 1e-3 + 1e-5 * (double)i);
}

/* The owned gradients of both ranges, scaled as a backward would leave them, rounded to the
 * parameter dtype; `poison` (0 none, 1 inf, 2 NaN) goes into range 1, element 5. */
static void fill_grads(void *g[2], uint32_t dtype, double scale, int poison)
{
    for (int r = 0; r < 2; r++)
        for (int64_t j = 0; j < ranges[r].end - ranges[r].begin; j++)
            store(g[r], dtype, j, (float)(grad_value(ranges[r].begin + j) * scale));
    if (poison) store(g[1], dtype, 5, poison == 1 ? INFINITY : NAN);
}

static void numeric_round_trip(const char *what, const char *name, const char *const *kv, const loom_host_api *api,
                               const expect *e)
{
    uint64_t before = loom_host_allocated_bytes();
    int failures_before = test_failures;
    fixture f;
    if (open_plugin(&f, name, kv, api, 0)) {
        CHECK(!"create failed");
        close_plugin(&f);
        return;
    }
    loom_precision_info info = {LOOM_HEADER_INIT(loom_precision_info)};
    CHECK(f.vt->describe(f.p, &info) == LOOM_OK);
    CHECK(info.param_dtype == e->param_dtype && info.compute_dtype == e->compute_dtype);
    CHECK(info.master_dtype == LOOM_DTYPE_F32 && info.has_master == e->has_master);
    CHECK(f.vt->loss_scale(f.p) == e->scale);

    uint32_t dt = e->param_dtype;
    storage model_mem, initial_mem, grad_mem[2];
    void *model = &model_mem, *initial = &initial_mem;
    for (int64_t i = 0; i < N; i++)
        store(model, dt, i, param_value(i));
    initial_mem = model_mem;
    void *grads[2] = {&grad_mem[0], &grad_mem[1]};
    int64_t len[2] = {ranges[0].end - ranges[0].begin, ranges[1].end - ranges[1].begin};

    loom_precision_binding b = {LOOM_HEADER_INIT(loom_precision_binding)};
    b.params = model;
    b.owned = ranges;
    b.n_owned = 2;
    b.device = LOOM_DEVICE_CPU;
    loom_status st = f.vt->bind(f.p, &b);
    CHECK(st == LOOM_OK);
    if (st) {
        fprintf(stderr, "%s: bind: %s\n", what, loom_error_message());
        close_plugin(&f);
        return;
    }
    CHECK(f.vt->master_bytes(f.p) == (e->copy ? (uint64_t)(len[0] + len[1]) * 8 : 0));

    float *mp[2], *mg[2];
    int bad_init = 0;
    for (int r = 0; r < 2; r++) {
        CHECK(f.vt->master(f.p, (size_t)r, grads[r], &mp[r], &mg[r]) == LOOM_OK);
        if (!e->copy) {
            CHECK(mp[r] == (float *)model + ranges[r].begin && mg[r] == grads[r]);
            continue;
        }
        for (int64_t j = 0; j < len[r]; j++)
            bad_init += mp[r][j] != load(model, dt, ranges[r].begin + j);
    }
    CHECK(bad_init == 0);
    float *unused_p, *unused_g;
    CHECK(f.vt->master(f.p, 2, NULL, &unused_p, &unused_g) == LOOM_E_INVALID);

    /* Finite gradients: master grads are exactly grad * (1/scale) (a power of two). */
    int32_t overflow = -1;
    fill_grads(grads, dt, e->scale, 0);
    float kept[2][N];
    for (int r = 0; r < 2; r++)
        for (int64_t j = 0; j < len[r]; j++)
            kept[r][j] = load(grads[r], dt, j);
    CHECK(f.vt->unscale(f.p, grads, 2, &overflow) == LOOM_OK && overflow == 0);
    float inv = (float)(1.0 / e->scale);
    int bad_grad = 0;
    for (int r = 0; r < 2; r++)
        for (int64_t j = 0; j < len[r]; j++) {
            float want = kept[r][j] * inv;
            bad_grad += mg[r][j] != want || want != kept[r][j] / (float)e->scale;
        }
    CHECK(bad_grad == 0);

    /* inf and NaN anywhere in an owned gradient: overflow when the plugin scales; at scale 1
     * the f32 gradients keep the inf/NaN and the host's global norm decides (no extra pass). */
    for (int poison = 1; poison <= 2; poison++) {
        fill_grads(grads, dt, e->scale, poison);
        overflow = -1;
        CHECK(f.vt->unscale(f.p, grads, 2, &overflow) == LOOM_OK);
        CHECK(overflow == (e->scale != 1.0 ? 1 : 0));
        int kept_bad = 0;
        for (int r = 0; r < 2; r++)
            for (int64_t j = 0; j < len[r]; j++) kept_bad |= !isfinite(mg[r][j]);
        CHECK(kept_bad);
    }
    CHECK(f.vt->unscale(f.p, grads, 1, &overflow) == LOOM_E_INVALID);

    /* cast_to_model: each owned element becomes the master value rounded to nearest even;
     * nothing outside the owned ranges moves. Without a copy it is a no-op. */
    float written[2][N];
    for (int r = 0; r < 2; r++)
        for (int64_t j = 0; j < len[r]; j++) {
            written[r][j] = mp[r][j] * 1.000123f + 3e-6f * (float)j; /* bits below 16-bit resolution */
            if (e->copy) mp[r][j] = written[r][j];
        }
    /* Exact ties (half an ulp above 1 and -1, 1.5 ulp above 1) go to the even neighbour. */
    float ulp = dt == LOOM_DTYPE_BF16 ? 0x1p-7f : 0x1p-10f;
    const float ties[3] = {1.0f + ulp / 2, 1.0f + 1.5f * ulp, -(1.0f + ulp / 2)};
    const float tie_want[3] = {1.0f, 1.0f + 2 * ulp, -1.0f};
    if (e->copy)
        for (int t = 0; t < 3; t++)
            mp[1][t] = written[1][t] = ties[t];
    CHECK(f.vt->cast_to_model(f.p) == LOOM_OK);
    if (e->copy)
        for (int t = 0; t < 3; t++)
            CHECK(load(model, dt, ranges[1].begin + t) == tie_want[t]);
    int bad_cast = 0, moved_outside = 0, inexact = 0;
    for (int64_t i = 0; i < N; i++) {
        int r = i >= ranges[0].begin && i < ranges[0].end ? 0 : i >= ranges[1].begin && i < ranges[1].end ? 1 : -1;
        float got = load(model, dt, i);
        if (r < 0 || !e->copy) {
            moved_outside += f32_bits(got) != f32_bits(load(initial, dt, i));
            continue;
        }
        float want = round_to(dt, written[r][i - ranges[r].begin]);
        bad_cast += f32_bits(got) != f32_bits(want);
        inexact += want != written[r][i - ranges[r].begin];
    }
    CHECK(bad_cast == 0 && moved_outside == 0);
    if (e->copy) CHECK(inexact > 0); /* the test did exercise rounding */

    /* Next step: a persistent master keeps the fine bits; O3's buffer is re-read from the
     * 16-bit params, so they are gone. */
    if (e->copy) {
        fill_grads(grads, dt, e->scale, 0);
        CHECK(f.vt->unscale(f.p, grads, 2, &overflow) == LOOM_OK && overflow == 0);
        int kept_fine = 0, now_rounded = 0;
        for (int r = 0; r < 2; r++)
            for (int64_t j = 0; j < len[r]; j++) {
                kept_fine += mp[r][j] == written[r][j];
                now_rounded += mp[r][j] == load(model, dt, ranges[r].begin + j);
            }
        int total = (int)(len[0] + len[1]);
        CHECK(e->rounded ? now_rounded == total : kept_fine == total);
    }

    close_plugin(&f);
    CHECK(loom_host_allocated_bytes() == before);
    if (test_failures > failures_before) fprintf(stderr, "  (in %s)\n", what);
}

/* ---- the piecewise step (ABI 1.7) ----------------------------------------------------------- */

/* A piecewise binding keeps no f32 gradients; unscale_piece over any cut of a range gives the
 * bits unscale writes into the master gradients, with the overflow of that piece only, and
 * cast_piece over the same cut leaves the model as cast_to_model does. Pieces past a range are
 * refused. O3 re-reads the piece's master parameters first, as its unscale does. */
static void piecewise_matches_whole(const char *what, const char *name, const char *const *kv, const loom_host_api *api,
                                    const expect *e)
{
    uint64_t before = loom_host_allocated_bytes();
    int failures_before = test_failures;
    fixture whole, piece;
    if (open_plugin(&whole, name, kv, api, 0) || open_plugin(&piece, name, kv, api, 0)) {
        CHECK(!"create failed");
        close_plugin(&whole);
        close_plugin(&piece);
        return;
    }
    CHECK(LOOM_HAS(piece.vt, loom_precision_vtable, unscale_piece) &&
          LOOM_HAS(piece.vt, loom_precision_vtable, cast_piece));
    uint32_t dt = e->param_dtype;
    storage model_w, model_p, grad_mem[2];
    for (int64_t i = 0; i < N; i++)
        store(&model_w, dt, i, param_value(i));
    model_p = model_w;
    void *grads[2] = {&grad_mem[0], &grad_mem[1]};
    int64_t len[2] = {ranges[0].end - ranges[0].begin, ranges[1].end - ranges[1].begin};
    loom_precision_binding b = {LOOM_HEADER_INIT(loom_precision_binding)};
    b.params = &model_w;
    b.owned = ranges;
    b.n_owned = 2;
    b.device = LOOM_DEVICE_CPU;
    CHECK(whole.vt->bind(whole.p, &b) == LOOM_OK);
    b.params = &model_p;
    b.piecewise = 1;
    CHECK(piece.vt->bind(piece.p, &b) == LOOM_OK);
    /* Only the parameters: no f32 gradients to count. */
    CHECK(piece.vt->master_bytes(piece.p) == (e->copy ? (uint64_t)(len[0] + len[1]) * 4 : 0));
    float *mp_w[2], *mg_w[2], *mp_p[2], *mg_p[2];
    for (int r = 0; r < 2; r++) {
        CHECK(whole.vt->master(whole.p, (size_t)r, grads[r], &mp_w[r], &mg_w[r]) == LOOM_OK);
        CHECK(piece.vt->master(piece.p, (size_t)r, grads[r], &mp_p[r], &mg_p[r]) == LOOM_OK);
        if (e->copy) CHECK(mg_p[r] == NULL);
    }
    int32_t overflow = -1;
    if (e->copy) CHECK(piece.vt->unscale(piece.p, grads, 2, &overflow) == LOOM_E_INVALID);

    const int64_t cut = 7; /* pieces [0, 7) and [7, len) of each range */
    for (int poison = 0; poison <= 2; poison++) {
        fill_grads(grads, dt, e->scale, poison);
        if (e->rounded) /* O3 re-reads the piece from the model: garbage here must not survive */
            for (int r = 0; r < 2; r++)
                for (int64_t j = 0; j < len[r]; j++)
                    mp_p[r][j] = 12345.0f;
        /* The pieces first: apex O0/O1's unscale scales the owned gradients in place. */
        float outs[2][N];
        int bad_flag = 0, stale = 0;
        for (int r = 0; r < 2; r++) {
            int64_t bounds[3] = {0, cut, len[r]};
            for (int k = 0; k < 2; k++) {
                int32_t flag = -1;
                int64_t at = bounds[k], count = bounds[k + 1] - bounds[k];
                CHECK(piece.vt->unscale_piece(piece.p, (size_t)r, grads[r], at, count, outs[r] + at, &flag) == LOOM_OK);
                /* the poison sits in range 1, element 5: the first piece */
                int32_t expected = poison && e->scale != 1.0 && r == 1 && k == 0;
                bad_flag += flag != expected;
                if (e->rounded)
                    for (int64_t j = at; j < at + count; j++)
                        stale += mp_p[r][j] != load(&model_p, dt, ranges[r].begin + j);
            }
        }
        CHECK(whole.vt->unscale(whole.p, grads, 2, &overflow) == LOOM_OK);
        int bad_bits = 0;
        for (int r = 0; r < 2; r++) {
            const float *want = e->copy ? mg_w[r] : (const float *)grads[r];
            for (int64_t j = 0; j < len[r]; j++)
                bad_bits += f32_bits(outs[r][j]) != f32_bits(want[j]);
        }
        CHECK(bad_bits == 0 && bad_flag == 0 && stale == 0);
    }
    float out[N];
    int32_t flag;
    CHECK(piece.vt->unscale_piece(piece.p, 0, grads[0], len[0] - 3, 4, out, &flag) == LOOM_E_INVALID);
    CHECK(piece.vt->unscale_piece(piece.p, 2, grads[0], 0, 1, out, &flag) == LOOM_E_INVALID);
    CHECK(piece.vt->cast_piece(piece.p, 1, -1, 2) == LOOM_E_INVALID);
    CHECK(piece.vt->cast_piece(piece.p, 1, 0, len[1] + 1) == LOOM_E_INVALID);

    /* The same new master values on both sides, cast whole and cast in pieces. */
    for (int r = 0; r < 2 && e->copy; r++)
        for (int64_t j = 0; j < len[r]; j++)
            mp_w[r][j] = mp_p[r][j] = param_value(j) * 1.000123f + 3e-6f * (float)j;
    CHECK(whole.vt->cast_to_model(whole.p) == LOOM_OK);
    for (int r = 0; r < 2; r++) {
        CHECK(piece.vt->cast_piece(piece.p, (size_t)r, cut, len[r] - cut) == LOOM_OK);
        CHECK(piece.vt->cast_piece(piece.p, (size_t)r, 0, cut) == LOOM_OK);
    }
    CHECK(memcmp(&model_w, &model_p, sizeof model_w) == 0);
    close_plugin(&whole);
    close_plugin(&piece);
    CHECK(loom_host_allocated_bytes() == before);
    if (test_failures > failures_before) fprintf(stderr, "  (in %s)\n", what);
}

typedef struct plugin_case {
    const char *what, *name;
    const char *const *kv;
    expect e;
} plugin_case;

static const char *const kv_amp[] = {NULL};
static const char *const kv_amp_ds[] = {"scaler", "deepspeed", NULL};
static const char *const kv_bf16[] = {NULL};
static const char *const kv_o0[] = {"opt_level", "O0", NULL};
static const char *const kv_o1[] = {"opt_level", "O1", NULL};
static const char *const kv_o2[] = {"opt_level", "O2", NULL};
static const char *const kv_o3[] = {"opt_level", "O3", NULL};
static const char *const kv_o0_dynamic[] = {"opt_level", "O0", "loss_scale", "dynamic", NULL};

static const plugin_case cases[] = {
    {"amp", "amp", kv_amp, {LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, 1, 0, 65536.0}},
    {"amp deepspeed", "amp", kv_amp_ds, {LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, 1, 0, 65536.0}},
    {"bf16", "bf16", kv_bf16, {LOOM_DTYPE_BF16, LOOM_DTYPE_BF16, 1, 1, 0, 1.0}},
    {"apex O0", "apex", kv_o0, {LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0, 0, 0, 1.0}},
    {"apex O1", "apex", kv_o1, {LOOM_DTYPE_F32, LOOM_DTYPE_F16, 0, 0, 0, 65536.0}},
    {"apex O2", "apex", kv_o2, {LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, 1, 0, 65536.0}},
    {"apex O3", "apex", kv_o3, {LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, 1, 1, 1.0}},
    {"apex O0 dynamic", "apex", kv_o0_dynamic, {LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0, 0, 0, 65536.0}},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static void test_numerics(const loom_host_api *api, const char *tables)
{
    for (size_t c = 0; c < N_CASES; c++) {
        char what[96];
        snprintf(what, sizeof what, "%s, %s", cases[c].what, tables);
        numeric_round_trip(what, cases[c].name, cases[c].kv, api, &cases[c].e);
        piecewise_matches_whole(what, cases[c].name, cases[c].kv, api, &cases[c].e);
    }
}

/* Without convert, the plugins that keep a copy refuse to bind and say why; fp32-parameter
 * levels need no conversion and bind. */
static void test_bind_without_convert(void)
{
    for (size_t c = 0; c < N_CASES; c++) {
        fixture f;
        if (open_plugin(&f, cases[c].name, cases[c].kv, &bare_api, 0)) {
            CHECK(!"create failed");
            close_plugin(&f);
            continue;
        }
        storage model = {{0}};
        loom_precision_binding b = {LOOM_HEADER_INIT(loom_precision_binding)};
        b.params = &model;
        b.owned = ranges;
        b.n_owned = 2;
        loom_status st = f.vt->bind(f.p, &b);
        if (cases[c].e.copy) {
            CHECK(st == LOOM_E_UNSUPPORTED);
            CHECK(strstr(loom_error_message(), "convert") != NULL);
        } else {
            CHECK(st == LOOM_OK);
        }
        /* Another device: bound alike (ABI 1.3 promises its memory is CPU-addressable, and the
         * master weights stay in host memory whatever the device). */
        b.device = LOOM_DEVICE_CUDA;
        CHECK(f.vt->bind(f.p, &b) == st);
        close_plugin(&f);
    }
}

/* A range long enough for the OpenMP path of the unscale loop; the inf sits in the last
 * element, so a reduction that drops a thread's part would miss it. */
static void test_large_range(const loom_host_api *api)
{
    enum { BIG = 300001 };
    uint16_t *model = calloc(BIG, sizeof *model), *grad = malloc(BIG * sizeof *grad);
    fixture f;
    if (!model || !grad || open_plugin(&f, "amp", NULL, api, 0)) {
        CHECK(!"setup failed");
        free(model);
        free(grad);
        return;
    }
    const loom_range all = {0, BIG};
    loom_precision_binding b = {LOOM_HEADER_INIT(loom_precision_binding)};
    b.params = model;
    b.owned = &all;
    b.n_owned = 1;
    CHECK(f.vt->bind(f.p, &b) == LOOM_OK);
    float *mp = NULL, *mg = NULL;
    CHECK(f.vt->master(f.p, 0, grad, &mp, &mg) == LOOM_OK);
    for (int64_t i = 0; i < BIG; i++)
        grad[i] = ref_to_f16((float)(i % 1000) - 500.0f);
    void *grads[1] = {grad};
    int32_t overflow = -1;
    CHECK(f.vt->unscale(f.p, grads, 1, &overflow) == LOOM_OK && overflow == 0);
    int bad = 0;
    for (int64_t i = 0; i < BIG; i++)
        bad += mg[i] != ((float)(i % 1000) - 500.0f) / 65536.0f;
    CHECK(bad == 0);
    grad[BIG - 1] = 0x7c00; /* +inf */
    CHECK(f.vt->unscale(f.p, grads, 1, &overflow) == LOOM_OK && overflow == 1);
    grad[BIG - 1] = 0;
    grad[BIG / 2] = 0xfe00; /* NaN */
    CHECK(f.vt->unscale(f.p, grads, 1, &overflow) == LOOM_OK && overflow == 1);
    CHECK(f.vt->master_bytes(f.p) == (uint64_t)BIG * 8);
    close_plugin(&f);
    free(model);
    free(grad);
}

/* ---- scale rules and configuration through the plugins ---------------------------------------- */

static void test_scales(void)
{
    CHECK(scale_of("amp", NULL) == 65536.0);
    CHECK(scale_of("amp", (const char *const[]){"init_scale", "1024", NULL}) == 1024.0);
    CHECK(scale_of("amp", (const char *const[]){"scaler", "deepspeed", NULL}) == 65536.0);
    CHECK(scale_of("amp", (const char *const[]){"scaler", "deepspeed", "initial_scale_power", "32", NULL}) ==
          4294967296.0);
    CHECK(scale_of("amp", (const char *const[]){"loss_scale", "512", NULL}) == 512.0);
    CHECK(scale_of("bf16", NULL) == 1.0);
    CHECK(scale_of("apex", NULL) == 65536.0); /* O1 */
    CHECK(scale_of("apex", (const char *const[]){"opt_level", "O3", "loss_scale", "dynamic", NULL}) == 65536.0);
    CHECK(scale_of("apex", (const char *const[]){"opt_level", "O2", "loss_scale", "128", NULL}) == 128.0);
    CHECK(scale_of("apex", (const char *const[]){"loss_scale", "\"dynamic\"", NULL}) == 65536.0);
    CHECK(scale_of("apex", (const char *const[]){"max_loss_scale", "1024", NULL}) == 1024.0);

    CHECK(!creates("amp", (const char *const[]){"scaler", "apex", NULL}));
    CHECK(!creates("amp", (const char *const[]){"scaler", "deepspeed", "min_loss_scale", "0", NULL}));
    CHECK(!creates("amp", (const char *const[]){"scaler", "deepspeed", "hysteresis", "0", NULL}));
    CHECK(!creates("amp", (const char *const[]){"initial_scale_power", "128", NULL}));
    CHECK(!creates("amp", (const char *const[]){"growth_factor", "1", NULL}));
    CHECK(!creates("amp", (const char *const[]){"backoff_factor", "1.5", NULL}));
    CHECK(!creates("amp", (const char *const[]){"loss_scale", "-1", NULL}));
    CHECK(!creates("amp", (const char *const[]){"scale_floor", "0", NULL}));
    CHECK(!creates("amp", (const char *const[]){"max_overflow_at_min_scale", "-1", NULL}));
    CHECK(!creates("apex", (const char *const[]){"opt_level", "O4", NULL}));
    CHECK(!creates("apex", (const char *const[]){"loss_scale", "abc", NULL}));
    CHECK(!creates("apex", (const char *const[]){"loss_scale", "0", NULL}));
    CHECK(!creates("bf16", (const char *const[]){"max_overflow_at_min_scale", "-2", NULL}));

    /* torch rule: halve on overflow; deepspeed: hysteresis first; v0.3.10 emulation (32, no
     * hysteresis): halve at once. */
    fixture f;
    CHECK(open_plugin(&f, "amp", NULL, &shim_api, 0) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK && f.vt->loss_scale(f.p) == 32768.0);
    close_plugin(&f);
    CHECK(open_plugin(&f, "amp", kv_amp_ds, &shim_api, 0) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK && f.vt->loss_scale(f.p) == 65536.0);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK && f.vt->loss_scale(f.p) == 32768.0);
    close_plugin(&f);
    const char *const trap[] = {"scaler", "deepspeed", "initial_scale_power", "32", "hysteresis", "1", NULL};
    CHECK(open_plugin(&f, "amp", trap, &shim_api, 0) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK && f.vt->loss_scale(f.p) == 2147483648.0);
    close_plugin(&f);
    /* static: an overflow changes nothing */
    CHECK(open_plugin(&f, "amp", (const char *const[]){"loss_scale", "512", NULL}, &shim_api, 0) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK && f.vt->loss_scale(f.p) == 512.0);
    close_plugin(&f);
}

static void test_stop_rule(void)
{
    fixture f;
    const char *const kv[] = {
        "scaler", "deepspeed", "initial_scale_power", "0", "hysteresis", "1", "max_overflow_at_min_scale", "2", NULL};
    CHECK(open_plugin(&f, "amp", kv, &shim_api, 0) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 0) == LOOM_OK); /* a clean step resets the count */
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_OK);
    CHECK(f.vt->update_scale(f.p, 1) == LOOM_E_STOP);
    CHECK(strstr(loom_error_message(), "loss scale stuck at minimum 1 after 2 consecutive overflows") != NULL);
    CHECK(strstr(loom_error_message(), "amp") != NULL);
    close_plugin(&f);

    /* bf16: the default, 10 consecutive non-finite steps. */
    CHECK(open_plugin(&f, "bf16", NULL, &shim_api, 0) == LOOM_OK);
    int first_stop = -1;
    for (int i = 0; i < 20 && first_stop < 0; i++)
        if (f.vt->update_scale(f.p, 1) == LOOM_E_STOP) first_stop = i;
    CHECK(first_stop == 9);
    CHECK(f.vt->loss_scale(f.p) == 1.0);
    close_plugin(&f);

    /* apex with 0: never. */
    CHECK(open_plugin(&f, "apex", (const char *const[]){"opt_level", "O3", "max_overflow_at_min_scale", "0", NULL},
                      &shim_api, 0) == LOOM_OK);
    int stopped = 0;
    for (int i = 0; i < 50; i++)
        stopped |= f.vt->update_scale(f.p, 1) != LOOM_OK;
    CHECK(!stopped);
    close_plugin(&f);
}

static void test_state(void)
{
    fixture a, b;
    CHECK(open_plugin(&a, "amp", kv_amp_ds, &shim_api, 0) == LOOM_OK);
    CHECK(open_plugin(&b, "amp", kv_amp_ds, &shim_api, 0) == LOOM_OK);
    const int32_t steps[] = {0, 0, 1, 0, 1, 1, 0};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        a.vt->update_scale(a.p, steps[i]);
    loom_precision_state st = {LOOM_HEADER_INIT(loom_precision_state)};
    loom_precision_state back = {LOOM_HEADER_INIT(loom_precision_state)};
    CHECK(a.vt->get_state(a.p, &st) == LOOM_OK);
    CHECK(st.iteration == 7 && st.last_overflow == 5 && st.loss_scale == 16384.0);
    CHECK(b.vt->set_state(b.p, &st) == LOOM_OK);
    CHECK(b.vt->get_state(b.p, &back) == LOOM_OK);
    CHECK(memcmp(&st, &back, sizeof st) == 0);
    CHECK(a.vt->update_scale(a.p, 1) == LOOM_OK && b.vt->update_scale(b.p, 1) == LOOM_OK);
    CHECK(a.vt->loss_scale(a.p) == b.vt->loss_scale(b.p));
    st.loss_scale = -1;
    CHECK(b.vt->set_state(b.p, &st) == LOOM_E_FORMAT);
    close_plugin(&a);
    close_plugin(&b);
}

int main(void)
{
    int real_convert = setup_tables();
    printf("host kernel table: convert %s\n",
           real_convert ? "present: checking the real kernels too" : "missing: reference tables only");
    test_bind_without_convert();
    test_numerics(&shim_api, "reference convert");
    if (real_convert) test_numerics(loom_host_api_table(), "host kernels");
    test_large_range(&shim_api);
    if (real_convert) test_large_range(loom_host_api_table());
    test_scales();
    test_stop_rule();
    test_state();
    loom_loader_shutdown();
    return test_finish("test_precision_plugins");
}
