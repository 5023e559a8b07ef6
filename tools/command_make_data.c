/*
 * command_make_data.c - `loom make-data`: a synthetic classification data set in loom's
 * classification file format (core/data/data_classification.h), split into train, validation and
 * test files drawn from ONE generator run, so all three share the same classes.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "data_classification.h"
#include "error.h"
#include "fileutil.h"
#include "stale_outputs.h"

/* A whole number in [min, max] for `flag`; strtoull alone would take "-5" as 2^64 - 5. */
static loom_status parse_count(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = isdigit((unsigned char)*text) ? strtoull(text, &end, 10) : 0;
    if (!end || *end || errno || v < min || v > max) {
        if (max == UINT64_MAX)
            return loom_error(LOOM_E_INVALID, "make-data: %s %s: must be a whole number >= %llu", flag, text,
                              (unsigned long long)min);
        return loom_error(LOOM_E_INVALID, "make-data: %s %s: must be a whole number from %llu to %llu", flag, text,
                          (unsigned long long)min, (unsigned long long)max);
    }
    *out = v;
    return LOOM_OK;
}

int loom_parse_fraction(const char *text, double *out)
{
    char *end = NULL;
    const double v = *text && !isspace((unsigned char)*text) ? strtod(text, &end) : NAN;
    if (!end || *end || !(v >= 0 && v < 1)) return 0;
    *out = v;
    return 1;
}

static loom_status parse_fraction(const char *flag, const char *text, double *out)
{
    if (loom_parse_fraction(text, out)) return LOOM_OK;
    return loom_error(LOOM_E_INVALID, "make-data: %s %s: must be a number in [0, 1)", flag, text);
}

static loom_status write_split(const loom_classification_data *all, uint64_t begin, uint64_t end, const char *dir,
                               const char *name)
{
    loom_classification_data part = *all;
    part.n_samples = end - begin;
    part.features = all->features + begin * all->n_features;
    part.labels = all->labels + begin;
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st == LOOM_OK) st = loom_classification_save(path, &part);
    if (st == LOOM_OK) printf("wrote %s: %llu samples\n", path, (unsigned long long)part.n_samples);
    return st;
}

static int is_flag(const char *arg)
{
    static const char *const flags[] = {"--kind",      "--output_dir", "--n_samples",           "--n_features",
                                        "--n_classes", "--seed",       "--validation_fraction", "--test_fraction"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strcmp(arg, flags[i])) return 1;
    return 0;
}

/* A split this run leaves out: a file of its name is an earlier data set's. */
static loom_status remove_stale(const char *dir, const char *split, double fraction, uint64_t n_samples)
{
    char name[32], why[160];
    snprintf(name, sizeof name, "%s.bin", split);
    snprintf(why, sizeof why, "no %s split: --%s_fraction %g of %llu samples", split, split, fraction,
             (unsigned long long)n_samples);
    return loom_remove_stale_output("make-data", dir, name, why);
}

int loom_command_make_data(int argc, char **argv)
{
    const char *kind = "blobs", *output = NULL;
    uint64_t n_samples = 4000, n_features = 8, n_classes = 4, seed = 42;
    double validation_fraction = 0.1, test_fraction = 0.1;
    static const char usage[] = "usage: loom make-data --output_dir DIR [--kind blobs|spirals] [--n_samples N]\n"
                                "       [--n_features F] [--n_classes C] [--seed S] [--validation_fraction 0.1]\n"
                                "       [--test_fraction 0.1]\n";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s\nWrites DIR/train.bin, validation.bin and test.bin: a synthetic classification\n"
                   "data set (Gaussian blobs or interleaved spirals) that loom train reads. A split\n"
                   "of no samples is not written, and one an earlier run left in DIR is removed.\n",
                   usage);
            return 0;
        }
    }
    loom_status st = LOOM_OK;
    for (int i = 0; i < argc && st == LOOM_OK; i += 2) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!is_flag(flag))
            st = loom_error(LOOM_E_INVALID, "make-data: unknown argument '%s' (see loom make-data --help)", flag);
        else if (!value)
            st = loom_error(LOOM_E_INVALID, "make-data: %s needs a value (see loom make-data --help)", flag);
        else if (!strcmp(flag, "--kind"))
            kind = value;
        else if (!strcmp(flag, "--output_dir"))
            output = value;
        else if (!strcmp(flag, "--n_samples"))
            st = parse_count(flag, value, 1, UINT64_MAX, &n_samples);
        else if (!strcmp(flag, "--n_features"))
            st = parse_count(flag, value, 1, UINT32_MAX, &n_features);
        else if (!strcmp(flag, "--n_classes")) /* labels are int32 */
            st = parse_count(flag, value, 2, INT32_MAX, &n_classes);
        else if (!strcmp(flag, "--seed"))
            st = parse_count(flag, value, 0, UINT64_MAX, &seed);
        else if (!strcmp(flag, "--validation_fraction"))
            st = parse_fraction(flag, value, &validation_fraction);
        else
            st = parse_fraction(flag, value, &test_fraction);
    }
    if (st == LOOM_OK && !output) st = loom_error(LOOM_E_INVALID, "make-data: --output_dir is required");
    if (st == LOOM_OK && validation_fraction + test_fraction >= 1)
        st = loom_error(LOOM_E_INVALID,
                        "make-data: --validation_fraction %g + --test_fraction %g must be less than 1 (the rest is "
                        "the train split)",
                        validation_fraction, test_fraction);
    if (st != LOOM_OK) return loom_command_fail(st);
    loom_classification_data data;
    st = loom_classification_generate(&data, kind, n_samples, (uint32_t)n_features, (uint32_t)n_classes, seed);
    if (st != LOOM_OK) return loom_command_fail(st);
    uint64_t n_val = (uint64_t)(validation_fraction * (double)n_samples);
    uint64_t n_test = (uint64_t)(test_fraction * (double)n_samples);
    uint64_t n_train = n_samples - n_val - n_test;
    st = loom_mkdir_p(output);
    /* A split this run leaves out goes first, so that an interrupted run leaves no mix of two
     * data sets either. */
    if (st == LOOM_OK && !n_val) st = remove_stale(output, "validation", validation_fraction, n_samples);
    if (st == LOOM_OK && !n_test) st = remove_stale(output, "test", test_fraction, n_samples);
    /* The splits it writes again go before train.bin is replaced, for the same reason. */
    if (st == LOOM_OK && n_val)
        st = loom_clear_rewritten_outputs("make-data", output, &(const char *){"validation.bin"}, 1);
    if (st == LOOM_OK && n_test) st = loom_clear_rewritten_outputs("make-data", output, &(const char *){"test.bin"}, 1);
    if (st == LOOM_OK) st = write_split(&data, 0, n_train, output, "train.bin");
    if (st == LOOM_OK && n_val) st = write_split(&data, n_train, n_train + n_val, output, "validation.bin");
    if (st == LOOM_OK && n_test) st = write_split(&data, n_train + n_val, n_samples, output, "test.bin");
    loom_classification_free(&data);
    return st == LOOM_OK ? 0 : loom_command_fail(st);
}
