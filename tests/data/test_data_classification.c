/* test_data_classification.c - the LOOMCLS1 format and generator (core/data/data_classification.c,
 * compiled into this test with core/base/error.c so it runs without libloom): round trip, every
 * load error with its message, determinism, and that "blobs" is nearly but not perfectly
 * linearly separable while "spirals" needs a nonlinear model. */
#include "data_classification.h"
#include "error.h"
#include "test_util.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* data_hash() of generate("blobs", 500, 3, 5, seed 7) and generate("spirals", 500, 2, 3, 7). */
#define BLOBS_HASH 0x43c75e8c27ae8f71ull
#define SPIRALS_HASH 0x9d44e28d7b1e0ceeull

static char dir[256];

static const char *tmp_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int message_has(const char *needle)
{
    const int ok = strstr(loom_error_message(), needle) != NULL;
    if (!ok) fprintf(stderr, "message \"%s\" lacks \"%s\"\n", loom_error_message(), needle);
    return ok;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static size_t read_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int same_data(const loom_classification_data *a, const loom_classification_data *b)
{
    return a->n_samples == b->n_samples && a->n_features == b->n_features && a->n_classes == b->n_classes &&
           memcmp(a->features, b->features, (size_t)(a->n_samples * a->n_features) * 4) == 0 &&
           memcmp(a->labels, b->labels, (size_t)a->n_samples * 4) == 0;
}

static void test_round_trip(void)
{
    loom_classification_data d, back;
    CHECK(loom_classification_generate(&d, "blobs", 101, 7, 4, 123) == LOOM_OK);
    const char *path = tmp_path("blobs.bin");
    CHECK(loom_classification_save(path, &d) == LOOM_OK);
    CHECK(loom_classification_load(path, &back) == LOOM_OK);
    CHECK(same_data(&d, &back));

    /* The bytes are the documented layout. */
    unsigned char buf[32 + 101 * 8 * 4 + 16];
    const size_t n = read_bytes(path, buf, sizeof buf);
    CHECK(n == 32 + 101 * (7 + 1) * 4);
    CHECK(memcmp(buf, "LOOMCLS1", 8) == 0);
    CHECK(buf[8] == 1 && buf[9] == 0 && buf[10] == 0 && buf[11] == 0); /* version, LE */
    CHECK(buf[12] == 7 && buf[16] == 4 && buf[20] == 0);
    CHECK(buf[24] == 101 && buf[25] == 0 && buf[31] == 0);
    float f0;
    int32_t last_label;
    memcpy(&f0, buf + 32, 4);
    memcpy(&last_label, buf + n - 4, 4);
    CHECK(f0 == d.features[0]);
    CHECK(last_label == d.labels[100]);
    /* No temporary file is left next to the output. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);

    loom_classification_free(&d);
    loom_classification_free(&back);
    CHECK(back.features == NULL && back.n_samples == 0);
    loom_classification_free(NULL);

    /* Zero samples is a valid (empty) file. */
    loom_classification_data empty = {.n_samples = 0, .n_features = 3, .n_classes = 2};
    CHECK(loom_classification_save(tmp_path("empty.bin"), &empty) == LOOM_OK);
    CHECK(loom_classification_load(tmp_path("empty.bin"), &back) == LOOM_OK);
    CHECK(back.n_samples == 0 && back.n_features == 3 && back.n_classes == 2);
    loom_classification_free(&back);
}

static void test_load_errors(void)
{
    loom_classification_data d, out;
    CHECK(loom_classification_generate(&d, "spirals", 20, 2, 3, 9) == LOOM_OK);
    const char *good = tmp_path("good.bin");
    CHECK(loom_classification_save(good, &d) == LOOM_OK);
    unsigned char buf[32 + 20 * 3 * 4];
    const size_t n = read_bytes(good, buf, sizeof buf);
    CHECK(n == sizeof buf);

    /* Truncated inside the labels, and inside the header. */
    const char *p = tmp_path("truncated.bin");
    write_bytes(p, buf, n - 6);
    CHECK(loom_classification_load(p, &out) == LOOM_E_FORMAT);
    CHECK(message_has("truncated: expected 272 bytes, file has 266"));
    CHECK(message_has(p));
    CHECK(out.features == NULL && out.labels == NULL);
    write_bytes(p, buf, 13);
    CHECK(loom_classification_load(p, &out) == LOOM_E_FORMAT);
    CHECK(message_has("truncated"));
    CHECK(message_has(p));
    write_bytes(p, buf, 0);
    CHECK(loom_classification_load(p, &out) == LOOM_E_FORMAT);
    CHECK(message_has("truncated"));

    /* Trailing bytes. */
    unsigned char longer[sizeof buf + 4];
    memcpy(longer, buf, sizeof buf);
    memset(longer + sizeof buf, 0, 4);
    write_bytes(p, longer, sizeof longer);
    CHECK(loom_classification_load(p, &out) == LOOM_E_FORMAT);
    CHECK(message_has("trailing"));

    /* Bad magic, even on a file too short for a header. */
    unsigned char bad[sizeof buf];
    memcpy(bad, buf, sizeof buf);
    bad[3] = 'X';
    const char *q = tmp_path("magic.bin");
    write_bytes(q, bad, sizeof bad);
    CHECK(loom_classification_load(q, &out) == LOOM_E_FORMAT);
    CHECK(message_has("not a loom classification file (bad magic)"));
    CHECK(message_has(q));
    write_bytes(q, "PK\003\004", 4);
    CHECK(loom_classification_load(q, &out) == LOOM_E_FORMAT);
    CHECK(message_has("bad magic"));

    /* Version, reserved field. */
    memcpy(bad, buf, sizeof buf);
    bad[8] = 2;
    write_bytes(q, bad, sizeof bad);
    CHECK(loom_classification_load(q, &out) == LOOM_E_FORMAT);
    CHECK(message_has("version 2"));
    memcpy(bad, buf, sizeof buf);
    bad[20] = 1;
    write_bytes(q, bad, sizeof bad);
    CHECK(loom_classification_load(q, &out) == LOOM_E_FORMAT);
    CHECK(message_has("reserved"));

    /* Label 7 of sample 12 with 3 classes. */
    memcpy(bad, buf, sizeof buf);
    const int32_t seven = 7;
    memcpy(bad + 32 + 20 * 2 * 4 + 12 * 4, &seven, 4);
    const char *r = tmp_path("label.bin");
    write_bytes(r, bad, sizeof bad);
    CHECK(loom_classification_load(r, &out) == LOOM_E_FORMAT);
    CHECK(message_has("label 7 of sample 12 outside [0, 3)"));
    CHECK(message_has(r));
    CHECK(out.features == NULL);

    /* A NaN feature. */
    memcpy(bad, buf, sizeof buf);
    const float nan = NAN;
    memcpy(bad + 32 + (5 * 2 + 1) * 4, &nan, 4);
    write_bytes(r, bad, sizeof bad);
    CHECK(loom_classification_load(r, &out) == LOOM_E_FORMAT);
    CHECK(message_has("feature 1 of sample 5"));

    /* Header sizes whose product overflows. */
    memcpy(bad, buf, sizeof buf);
    memset(bad + 24, 0xff, 8);
    write_bytes(r, bad, sizeof bad);
    CHECK(loom_classification_load(r, &out) == LOOM_E_FORMAT);
    CHECK(message_has("overflow"));

    /* Missing file and a directory. */
    CHECK(loom_classification_load(tmp_path("missing.bin"), &out) == LOOM_E_IO);
    CHECK(message_has("missing.bin"));
    CHECK(loom_classification_load(dir, &out) == LOOM_E_IO);

    /* save refuses what load would refuse. */
    d.labels[4] = 3;
    CHECK(loom_classification_save(tmp_path("refused.bin"), &d) == LOOM_E_INVALID);
    CHECK(message_has("label 3 of sample 4"));
    CHECK(access(tmp_path("refused.bin"), F_OK) != 0);
    d.labels[4] = 0;
    d.features[3] = INFINITY;
    CHECK(loom_classification_save(tmp_path("refused.bin"), &d) == LOOM_E_INVALID);
    CHECK(loom_classification_save(tmp_path("no/such/dir/x.bin"), &d) != LOOM_OK);
    loom_classification_free(&d);
}

static uint64_t fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t data_hash(const loom_classification_data *d)
{
    uint64_t h = fnv1a(d->features, (size_t)(d->n_samples * d->n_features) * 4, 0xcbf29ce484222325ull);
    return fnv1a(d->labels, (size_t)d->n_samples * 4, h);
}

static void test_generate_args(void)
{
    loom_classification_data d;
    CHECK(loom_classification_generate(&d, "moons", 10, 2, 2, 1) == LOOM_E_INVALID);
    CHECK(message_has("moons") && message_has("blobs, spirals"));
    CHECK(loom_classification_generate(&d, "spirals", 10, 3, 2, 1) == LOOM_E_INVALID);
    CHECK(message_has("must be 2"));
    CHECK(loom_classification_generate(&d, "blobs", 10, 3, 1, 1) == LOOM_E_INVALID);
    CHECK(loom_classification_generate(&d, "blobs", 10, 0, 2, 1) == LOOM_E_INVALID);
    CHECK(d.features == NULL);
}

static void test_determinism(void)
{
    loom_classification_data a, b, c;
    CHECK(loom_classification_generate(&a, "blobs", 500, 3, 5, 7) == LOOM_OK);
    CHECK(loom_classification_generate(&b, "blobs", 500, 3, 5, 7) == LOOM_OK);
    CHECK(loom_classification_generate(&c, "blobs", 500, 3, 5, 8) == LOOM_OK);
    CHECK(same_data(&a, &b));
    CHECK(!same_data(&a, &c));
    /* Frozen values: the generator uses only exact IEEE arithmetic, so these hold on every
     * platform. A change here changes every generated data set: update deliberately. */
    const uint64_t hb = data_hash(&a);
    loom_classification_free(&a), loom_classification_free(&b), loom_classification_free(&c);
    CHECK(loom_classification_generate(&a, "spirals", 500, 2, 3, 7) == LOOM_OK);
    const uint64_t hs = data_hash(&a);
    printf("hashes: blobs %016llx spirals %016llx\n", (unsigned long long)hb, (unsigned long long)hs);
    CHECK(hb == BLOBS_HASH);
    CHECK(hs == SPIRALS_HASH);
    loom_classification_free(&a);
}

/* Accuracy of the nearest class mean, a linear classifier fitted on the data itself. */
static double nearest_mean_accuracy(const loom_classification_data *d)
{
    const uint32_t K = d->n_classes, D = d->n_features;
    double *mean = calloc((size_t)K * D, sizeof *mean), *count = calloc(K, sizeof *count);
    for (uint64_t i = 0; i < d->n_samples; i++) {
        count[d->labels[i]] += 1;
        for (uint32_t j = 0; j < D; j++)
            mean[d->labels[i] * D + j] += d->features[i * D + j];
    }
    for (uint32_t k = 0; k < K; k++)
        for (uint32_t j = 0; j < D; j++)
            mean[k * D + j] /= count[k] > 0 ? count[k] : 1;
    uint64_t right = 0;
    for (uint64_t i = 0; i < d->n_samples; i++) {
        double best = INFINITY;
        uint32_t arg = 0;
        for (uint32_t k = 0; k < K; k++) {
            double dist = 0;
            for (uint32_t j = 0; j < D; j++) {
                const double t = d->features[i * D + j] - mean[k * D + j];
                dist += t * t;
            }
            if (dist < best) best = dist, arg = k;
        }
        right += (int32_t)arg == d->labels[i];
    }
    free(mean), free(count);
    return (double)right / (double)d->n_samples;
}

/* Leave-one-out 1-nearest-neighbour accuracy: high when classes form separate manifolds. */
static double one_nn_accuracy(const loom_classification_data *d)
{
    const uint32_t D = d->n_features;
    uint64_t right = 0;
    for (uint64_t i = 0; i < d->n_samples; i++) {
        double best = INFINITY;
        uint64_t arg = 0;
        for (uint64_t o = 0; o < d->n_samples; o++) {
            if (o == i) continue;
            double dist = 0;
            for (uint32_t j = 0; j < D; j++) {
                const double t = d->features[i * D + j] - d->features[o * D + j];
                dist += t * t;
            }
            if (dist < best) best = dist, arg = o;
        }
        right += d->labels[arg] == d->labels[i];
    }
    return (double)right / (double)d->n_samples;
}

static void test_difficulty(void)
{
    loom_classification_data d;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        CHECK(loom_classification_generate(&d, "blobs", 4000, 2, 4, seed) == LOOM_OK);
        const double acc = nearest_mean_accuracy(&d);
        printf("blobs seed %llu: nearest-mean accuracy %.4f\n", (unsigned long long)seed, acc);
        CHECK(acc > 0.85 && acc < 0.9999);
        /* Labels cover every class, roughly uniformly. */
        int64_t counts[4] = {0};
        for (uint64_t i = 0; i < d.n_samples; i++)
            counts[d.labels[i]]++;
        for (int k = 0; k < 4; k++)
            CHECK(counts[k] > 800 && counts[k] < 1200);
        loom_classification_free(&d);
    }
    CHECK(loom_classification_generate(&d, "blobs", 2000, 32, 10, 5) == LOOM_OK);
    const double acc32 = nearest_mean_accuracy(&d);
    printf("blobs 32-d 10 classes: nearest-mean accuracy %.4f\n", acc32);
    CHECK(acc32 > 0.85 && acc32 < 0.9999);
    loom_classification_free(&d);

    CHECK(loom_classification_generate(&d, "spirals", 1500, 2, 3, 11) == LOOM_OK);
    const double lin = nearest_mean_accuracy(&d), nn = one_nn_accuracy(&d);
    printf("spirals: nearest-mean accuracy %.4f, 1-NN accuracy %.4f\n", lin, nn);
    CHECK(lin < 0.7); /* not linearly separable */
    CHECK(nn > 0.95); /* but clearly structured */
    double max_abs = 0;
    for (uint64_t i = 0; i < 2 * d.n_samples; i++)
        max_abs = fmax(max_abs, fabs(d.features[i]));
    CHECK(max_abs < 1.5);
    loom_classification_free(&d);
}

int main(void)
{
    strcpy(dir, "/tmp/loom-test-data-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_load_errors();
    test_generate_args();
    test_determinism();
    test_difficulty();
    const int rc = test_finish("test_data_classification");
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
