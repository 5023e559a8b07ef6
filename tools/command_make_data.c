/*
 * command_make_data.c - `loom make-data`: a synthetic classification data set in loom's
 * classification file format (core/data/data_classification.h), split into train, validation and
 * test files drawn from ONE generator run, so all three share the same classes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "data_classification.h"
#include "error.h"
#include "fileutil.h"

static int parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end) return 0;
    *out = v;
    return 1;
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

int loom_command_make_data(int argc, char **argv)
{
    const char *kind = "blobs", *output = NULL;
    uint64_t n_samples = 4000, n_features = 8, n_classes = 4, seed = 42;
    double validation_fraction = 0.1, test_fraction = 0.1;
    static const char usage[] =
        "usage: loom make-data --output_dir DIR [--kind blobs|spirals] [--n_samples N]\n"
        "       [--n_features F] [--n_classes C] [--seed S] [--validation_fraction 0.1]\n"
        "       [--test_fraction 0.1]\n";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s\nWrites DIR/train.bin, validation.bin and test.bin: a synthetic classification\n"
                   "data set (Gaussian blobs or interleaved spirals) that loom train reads.\n",
                   usage);
            return 0;
        }
    }
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = value != NULL;
        if (ok && !strcmp(flag, "--kind")) kind = value;
        else if (ok && !strcmp(flag, "--output_dir")) output = value;
        else if (ok && !strcmp(flag, "--n_samples")) ok = parse_u64(value, &n_samples);
        else if (ok && !strcmp(flag, "--n_features")) ok = parse_u64(value, &n_features);
        else if (ok && !strcmp(flag, "--n_classes")) ok = parse_u64(value, &n_classes);
        else if (ok && !strcmp(flag, "--seed")) ok = parse_u64(value, &seed);
        else if (ok && !strcmp(flag, "--validation_fraction")) validation_fraction = atof(value);
        else if (ok && !strcmp(flag, "--test_fraction")) test_fraction = atof(value);
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "loom: error: make-data: bad argument '%s'%s%s\n%s", flag, value ? " " : "",
                    value ? value : "", usage);
            return 2;
        }
        i++;
    }
    if (!output) {
        fprintf(stderr, "loom: error: make-data: --output_dir is required\n");
        return 2;
    }
    if (validation_fraction < 0 || test_fraction < 0 || validation_fraction + test_fraction >= 1) {
        fprintf(stderr, "loom: error: make-data: fractions must be >= 0 and sum to less than 1\n");
        return 2;
    }
    loom_classification_data data;
    loom_status st =
        loom_classification_generate(&data, kind, n_samples, (uint32_t)n_features, (uint32_t)n_classes, seed);
    if (st != LOOM_OK) return loom_command_fail(st);
    uint64_t n_val = (uint64_t)(validation_fraction * (double)n_samples);
    uint64_t n_test = (uint64_t)(test_fraction * (double)n_samples);
    uint64_t n_train = n_samples - n_val - n_test;
    st = loom_mkdir_p(output);
    if (st == LOOM_OK) st = write_split(&data, 0, n_train, output, "train.bin");
    if (st == LOOM_OK && n_val) st = write_split(&data, n_train, n_train + n_val, output, "validation.bin");
    if (st == LOOM_OK && n_test) st = write_split(&data, n_train + n_val, n_samples, output, "test.bin");
    loom_classification_free(&data);
    return st == LOOM_OK ? 0 : loom_command_fail(st);
}
