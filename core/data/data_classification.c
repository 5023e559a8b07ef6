/*
 * data_classification.c - read, write and generate LOOMCLS1 classification files (format in
 * data_classification.h).
 */
#include "data_classification.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byte_order.h"
#include "error.h"

/* The generator's arithmetic must round identically everywhere. GCC in ISO mode (-std=c11,
 * which the build uses) never fuses a*b+c into an FMA; clang does unless told not to. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ---- byte order ------------------------------------------------------------------------ */

/* float32 and int32 arrays are stored little-endian; on a big-endian host swap in place. */
static void swap32_array(void *data, size_t n)
{
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t = p[0];
        p[0] = p[3], p[3] = t;
        t = p[1];
        p[1] = p[2], p[2] = t;
    }
}

/* Write n 4-byte values little-endian. Returns 0 on success. */
static int write32_array(FILE *f, const void *data, size_t n)
{
    if (n == 0) return 0; /* data may be NULL for an empty set */
    if (loom_host_is_little_endian()) return fwrite(data, 4, n, f) == n ? 0 : -1;
    unsigned char buf[4096 * 4];
    const unsigned char *src = data;
    while (n > 0) {
        const size_t k = n < 4096 ? n : 4096;
        memcpy(buf, src, k * 4);
        swap32_array(buf, k);
        if (fwrite(buf, 4, k, f) != k) return -1;
        src += k * 4, n -= k;
    }
    return 0;
}

/* ---- sizes ----------------------------------------------------------------------------- */

/* Bytes of a file with these sizes: 32 + 4*n*(f + 1); 0 when that overflows 64 bits or
 * size_t (the arrays must fit in memory). */
static uint64_t file_bytes(uint64_t n_samples, uint32_t n_features)
{
    uint64_t per_sample = 4 * ((uint64_t)n_features + 1), body;
    if (__builtin_mul_overflow(n_samples, per_sample, &body)) return 0;
    if (body > (uint64_t)SIZE_MAX - LOOM_CLASSIFICATION_HEADER_BYTES) return 0;
    return body + LOOM_CLASSIFICATION_HEADER_BYTES;
}

void loom_classification_free(loom_classification_data *data)
{
    if (!data) return;
    free(data->features);
    free(data->labels);
    memset(data, 0, sizeof *data);
}

/* Allocate the arrays of *d for its sizes (at least one element each, so 0 samples is not a
 * NULL that looks like a failure). */
static loom_status alloc_arrays(loom_classification_data *d)
{
    const size_t nf = (size_t)(d->n_samples * d->n_features), n = (size_t)d->n_samples;
    d->features = malloc((nf ? nf : 1) * sizeof *d->features);
    d->labels = malloc((n ? n : 1) * sizeof *d->labels);
    if (!d->features || !d->labels) {
        loom_classification_free(d);
        return LOOM_E_NOMEM;
    }
    return LOOM_OK;
}

/* ---- load ------------------------------------------------------------------------------ */

static loom_status load_file(const char *path, FILE *f, loom_classification_data *out)
{
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0)
        return loom_error(LOOM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return loom_error(LOOM_E_IO, "%s: not a regular file", path);
    const uint64_t size = (uint64_t)sb.st_size;

    unsigned char hdr[LOOM_CLASSIFICATION_HEADER_BYTES];
    const size_t have = size < sizeof hdr ? (size_t)size : sizeof hdr;
    if (fread(hdr, 1, have, f) != have)
        return loom_error(LOOM_E_IO, "%s: read error: %s", path, strerror(errno));
    /* A file shorter than the magic but agreeing with it so far is truncated, not foreign. */
    if (memcmp(hdr, LOOM_CLASSIFICATION_MAGIC, have < 8 ? have : 8) != 0)
        return loom_error(LOOM_E_FORMAT, "%s: not a loom classification file (bad magic)", path);
    if (have < sizeof hdr)
        return loom_error(LOOM_E_FORMAT, "%s: truncated: expected at least %u bytes, file has %llu",
                          path, LOOM_CLASSIFICATION_HEADER_BYTES, (unsigned long long)size);

    const uint32_t version = loom_get_le32(hdr + 8), reserved = loom_get_le32(hdr + 20);
    const uint32_t n_features = loom_get_le32(hdr + 12), n_classes = loom_get_le32(hdr + 16);
    const uint64_t n_samples = loom_get_le64(hdr + 24);
    if (version != LOOM_CLASSIFICATION_VERSION)
        return loom_error(LOOM_E_FORMAT, "%s: unsupported version %u (this loom reads version %u)",
                          path, version, LOOM_CLASSIFICATION_VERSION);
    if (reserved != 0)
        return loom_error(LOOM_E_FORMAT, "%s: reserved header field is %u, must be 0", path, reserved);
    if (n_features == 0) return loom_error(LOOM_E_FORMAT, "%s: n_features is 0", path);
    if (n_classes == 0) return loom_error(LOOM_E_FORMAT, "%s: n_classes is 0", path);
    const uint64_t expected = file_bytes(n_samples, n_features);
    if (expected == 0)
        return loom_error(LOOM_E_FORMAT, "%s: header sizes overflow (%llu samples of %u features)",
                          path, (unsigned long long)n_samples, n_features);
    if (size < expected)
        return loom_error(LOOM_E_FORMAT, "%s: truncated: expected %llu bytes, file has %llu", path,
                          (unsigned long long)expected, (unsigned long long)size);
    if (size > expected)
        return loom_error(LOOM_E_FORMAT, "%s: %llu trailing bytes: expected %llu bytes, file has %llu",
                          path, (unsigned long long)(size - expected), (unsigned long long)expected,
                          (unsigned long long)size);

    out->n_samples = n_samples;
    out->n_features = n_features;
    out->n_classes = n_classes;
    if (alloc_arrays(out) != LOOM_OK)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory for %llu samples", path,
                          (unsigned long long)n_samples);
    const size_t nf = (size_t)(n_samples * n_features), n = (size_t)n_samples;
    if (fread(out->features, 4, nf, f) != nf || fread(out->labels, 4, n, f) != n)
        return loom_error(LOOM_E_IO, "%s: read error: %s", path,
                          ferror(f) ? strerror(errno) : "file shrank while reading");
    if (!loom_host_is_little_endian()) {
        swap32_array(out->features, nf);
        swap32_array(out->labels, n);
    }
    /* One NaN feature would turn every loss into NaN many steps later; say where it is now. */
    for (size_t i = 0; i < nf; i++) {
        if (!isfinite(out->features[i]))
            return loom_error(LOOM_E_FORMAT, "%s: feature %llu of sample %llu is %g", path,
                              (unsigned long long)(i % n_features),
                              (unsigned long long)(i / n_features), (double)out->features[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const int32_t label = out->labels[i];
        if (label < 0 || (uint32_t)label >= n_classes)
            return loom_error(LOOM_E_FORMAT, "%s: label %d of sample %llu outside [0, %u)", path,
                              label, (unsigned long long)i, n_classes);
    }
    return LOOM_OK;
}

loom_status loom_classification_load(const char *path, loom_classification_data *out)
{
    if (!out) return loom_error(LOOM_E_INVALID, "loom_classification_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path) return loom_error(LOOM_E_INVALID, "no classification data file given");
    /* Regular files only: O_NONBLOCK so that a FIFO cannot hold open() before the check. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return loom_error(LOOM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return loom_error(LOOM_E_IO, "%s: not a regular file (a FIFO, device or folder)", path);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return loom_error(LOOM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    const loom_status st = load_file(path, f, out);
    fclose(f);
    if (st != LOOM_OK) loom_classification_free(out);
    return st;
}

/* ---- save ------------------------------------------------------------------------------ */

static loom_status check_data(const char *path, const loom_classification_data *d)
{
    if (d->n_features == 0 || d->n_classes == 0)
        return loom_error(LOOM_E_INVALID, "%s: n_features (%u) and n_classes (%u) must be >= 1",
                          path, d->n_features, d->n_classes);
    if (file_bytes(d->n_samples, d->n_features) == 0)
        return loom_error(LOOM_E_INVALID, "%s: %llu samples of %u features is too large", path,
                          (unsigned long long)d->n_samples, d->n_features);
    if (d->n_samples > 0 && (!d->features || !d->labels))
        return loom_error(LOOM_E_INVALID, "%s: features or labels missing", path);
    /* Refuse what load() would refuse, so a saved file always loads. */
    const uint64_t nf = d->n_samples * d->n_features;
    for (uint64_t i = 0; i < nf; i++) {
        if (!isfinite(d->features[i]))
            return loom_error(LOOM_E_INVALID, "%s: feature %llu of sample %llu is %g", path,
                              (unsigned long long)(i % d->n_features),
                              (unsigned long long)(i / d->n_features), (double)d->features[i]);
    }
    for (uint64_t i = 0; i < d->n_samples; i++) {
        if (d->labels[i] < 0 || (uint32_t)d->labels[i] >= d->n_classes)
            return loom_error(LOOM_E_INVALID, "%s: label %d of sample %llu outside [0, %u)", path,
                              d->labels[i], (unsigned long long)i, d->n_classes);
    }
    return LOOM_OK;
}

loom_status loom_classification_save(const char *path, const loom_classification_data *data)
{
    if (!path || !*path) return loom_error(LOOM_E_INVALID, "no output file given");
    if (!data) return loom_error(LOOM_E_INVALID, "%s: no data to save", path);
    loom_status st = check_data(path, data);
    if (st != LOOM_OK) return st;

    const size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = loom_error(LOOM_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    unsigned char hdr[LOOM_CLASSIFICATION_HEADER_BYTES];
    memcpy(hdr, LOOM_CLASSIFICATION_MAGIC, 8);
    loom_put_le32(hdr + 8, LOOM_CLASSIFICATION_VERSION);
    loom_put_le32(hdr + 12, data->n_features);
    loom_put_le32(hdr + 16, data->n_classes);
    loom_put_le32(hdr + 20, 0);
    loom_put_le64(hdr + 24, data->n_samples);
    const size_t nf = (size_t)(data->n_samples * data->n_features), n = (size_t)data->n_samples;
    errno = 0;
    int bad = fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr;
    bad = bad || write32_array(f, data->features, nf) != 0;
    bad = bad || write32_array(f, data->labels, n) != 0;
    int err = errno;
    if (fclose(f) != 0 && !bad) { /* fclose flushes: a full disk may only show here */
        bad = 1;
        err = errno;
    }
    if (bad) {
        st = loom_error(LOOM_E_IO, "%s: write error: %s", tmp, err ? strerror(err) : "short write");
    } else if (rename(tmp, path) != 0) {
        st = loom_error(LOOM_E_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    }
    if (st != LOOM_OK) remove(tmp);
    free(tmp);
    return st;
}

/* ---- generate -------------------------------------------------------------------------- */

/* splitmix64: tiny, fast, and its whole state is one integer, so a seed names a stream. */
typedef struct gen_rng {
    uint64_t state;
    double spare;    /* Box-Muller makes normals in pairs */
    int have_spare;
} gen_rng;

static uint64_t rng_next(gen_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(gen_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n) (Lemire's multiply-shift; the bias for n < 2^32 is < 2^-32). */
static uint32_t rng_below(gen_rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* log(x) for x > 0 using only exact operations (frexp) and correctly rounded +, *, /, so it
 * rounds identically on every IEEE machine, unlike libm's log. x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172: 13 terms of the
 * odd series reach double precision. */
static double exact_log(double x)
{
    int e;
    double m = frexp(x, &e);
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double sum = 1.0 / 25.0;
    for (int k = 11; k >= 0; k--) sum = sum * s2 + 1.0 / (double)(2 * k + 1);
    return 2.0 * s * sum + (double)e * 0.69314718055994530942;
}

/* sin and cos of 2 pi t, t in turns, with the same exactness as exact_log: the quadrant is
 * split off exactly (t*4 is exact), and the remaining angle in [0, pi/2) goes through nested
 * Taylor polynomials to x^25 / x^24 (error < 1e-19). */
static void exact_sincos_turns(double t, double *s_out, double *c_out)
{
    const double f = (t - floor(t)) * 4.0;
    const int q = (int)f;
    const double x = (f - (double)q) * 1.57079632679489661923, x2 = x * x;
    double s = 1.0, c = 1.0;
    for (int k = 12; k >= 1; k--) {
        s = 1.0 - x2 / (double)((2 * k) * (2 * k + 1)) * s;
        c = 1.0 - x2 / (double)((2 * k - 1) * (2 * k)) * c;
    }
    s *= x;
    switch (q & 3) {
    case 0: *s_out = s, *c_out = c; break;
    case 1: *s_out = c, *c_out = -s; break;
    case 2: *s_out = -s, *c_out = -c; break;
    default: *s_out = -c, *c_out = s; break;
    }
}

/* Standard normal by Box-Muller. */
static double rng_normal(gen_rng *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    const double u1 = 1.0 - rng_uniform(r); /* (0, 1]: log stays finite */
    const double u2 = rng_uniform(r);
    const double radius = sqrt(-2.0 * exact_log(u1)); /* sqrt is exactly rounded by IEEE */
    double s, c;
    exact_sincos_turns(u2, &s, &c);
    r->spare = radius * s;
    r->have_spare = 1;
    return radius * c;
}

/* Blobs: centres N(0, spread^2) per feature with spread = 4/sqrt(d), so two centres are
 * typically 4 sqrt(2) ~ 5.7 units apart whatever d is. A centre closer than 3 units (3 sigma
 * of the unit-variance clusters) to an earlier one is redrawn with a 2% wider spread (which
 * terminates: a wider spread makes a close draw ever less likely). The closest pair then
 * overlaps a little, the typical pair hardly: high but not perfect accuracy. */
static loom_status generate_blobs(loom_classification_data *d, gen_rng *r)
{
    const uint32_t K = d->n_classes, D = d->n_features;
    double *centres = malloc((size_t)K * D * sizeof *centres);
    if (!centres) return LOOM_E_NOMEM;
    double spread = 4.0 / sqrt((double)D);
    const double min_dist2 = 3.0 * 3.0;
    for (uint32_t k = 0; k < K; k++) {
        double *c = centres + (size_t)k * D;
        for (;;) {
            for (uint32_t j = 0; j < D; j++) c[j] = spread * rng_normal(r);
            int ok = 1;
            for (uint32_t other = 0; other < k && ok; other++) {
                const double *o = centres + (size_t)other * D;
                double dist2 = 0.0;
                for (uint32_t j = 0; j < D; j++) dist2 += (c[j] - o[j]) * (c[j] - o[j]);
                ok = dist2 >= min_dist2;
            }
            if (ok) break;
            spread *= 1.02;
        }
    }
    for (uint64_t i = 0; i < d->n_samples; i++) {
        const uint32_t k = rng_below(r, K);
        const double *c = centres + (size_t)k * D;
        float *x = d->features + i * D;
        d->labels[i] = (int32_t)k;
        for (uint32_t j = 0; j < D; j++) x[j] = (float)(c[j] + rng_normal(r));
    }
    free(centres);
    return LOOM_OK;
}

/* Spirals: arm k is the curve r = t, angle = k/K + SPIRAL_TURNS t turns, t in [0, 1). Along a
 * ray, neighbouring arms are 1/(SPIRAL_TURNS K) apart; the noise (std) is a tenth of that, so
 * arms touch only near the centre, where they all meet. */
#define SPIRAL_TURNS 1.5
static loom_status generate_spirals(loom_classification_data *d, gen_rng *r)
{
    const uint32_t K = d->n_classes;
    const double noise = 0.1 / (SPIRAL_TURNS * (double)K);
    for (uint64_t i = 0; i < d->n_samples; i++) {
        const uint32_t k = rng_below(r, K);
        const double t = rng_uniform(r);
        double s, c;
        exact_sincos_turns((double)k / (double)K + SPIRAL_TURNS * t, &s, &c);
        const double nx = rng_normal(r), ny = rng_normal(r);
        d->labels[i] = (int32_t)k;
        d->features[2 * i] = (float)(t * c + noise * nx);
        d->features[2 * i + 1] = (float)(t * s + noise * ny);
    }
    return LOOM_OK;
}

loom_status loom_classification_generate(loom_classification_data *out, const char *kind,
                                         uint64_t n_samples, uint32_t n_features,
                                         uint32_t n_classes, uint64_t seed)
{
    if (!out) return loom_error(LOOM_E_INVALID, "loom_classification_generate: out is NULL");
    memset(out, 0, sizeof *out);
    if (!kind) kind = "";
    const int blobs = strcmp(kind, "blobs") == 0, spirals = strcmp(kind, "spirals") == 0;
    if (!blobs && !spirals)
        return loom_error(LOOM_E_INVALID, "unknown data kind \"%s\" (known: blobs, spirals)", kind);
    if (n_classes < 2)
        return loom_error(LOOM_E_INVALID, "%s: n_classes is %u, must be >= 2", kind, n_classes);
    if (spirals && n_features != 2)
        return loom_error(LOOM_E_INVALID, "spirals: n_features is %u, must be 2 (the spirals are 2-D)",
                          n_features);
    if (n_features == 0) return loom_error(LOOM_E_INVALID, "%s: n_features is 0, must be >= 1", kind);
    if (file_bytes(n_samples, n_features) == 0)
        return loom_error(LOOM_E_INVALID, "%s: %llu samples of %u features is too large", kind,
                          (unsigned long long)n_samples, n_features);
    out->n_samples = n_samples;
    out->n_features = n_features;
    out->n_classes = n_classes;
    if (alloc_arrays(out) != LOOM_OK)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory for %llu samples", kind,
                          (unsigned long long)n_samples);
    gen_rng r = {.state = seed};
    const loom_status st = blobs ? generate_blobs(out, &r) : generate_spirals(out, &r);
    if (st != LOOM_OK) {
        loom_classification_free(out);
        return loom_error(st, "%s: out of memory", kind);
    }
    return LOOM_OK;
}
