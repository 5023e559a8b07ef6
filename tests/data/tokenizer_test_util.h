/* tokenizer_test_util.h - what the tokenizer tests share: a scratch folder, and the data that
 * scripts/fetch-data.sh downloads (GPT-2's vocabulary, Moby Dick, the reference encoder). */
#ifndef LOOM_TOKENIZER_TEST_UTIL_H
#define LOOM_TOKENIZER_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileutil.h"

/* ctest's SKIP_RETURN_CODE for tests whose data is missing. */
#define TOK_SKIP 77

/* A new empty folder under $TMPDIR (or /tmp). */
static inline int tok_make_temp_dir(char *buf, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, size, "%s/loom-tokenizer-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        return 0;
    }
    return 1;
}

static inline int tok_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The folder scripts/fetch-data.sh filled: $LOOM_DATA_DIR, else <source>/runs/deps. Returns 1
 * when it holds gpt2/vocab.json, gpt2/merges.txt and moby-dick.txt; otherwise prints why the
 * test is skipped and returns 0. */
static inline int tok_find_data(char *dir, size_t size)
{
    const char *env = getenv("LOOM_DATA_DIR"), *src = getenv("LOOM_SOURCE_DIR");
#ifdef LOOM_TEST_SOURCE_DIR
    if (!src || !*src) src = LOOM_TEST_SOURCE_DIR;
#endif
    if (env && *env)
        snprintf(dir, size, "%s", env);
    else if (src && *src)
        snprintf(dir, size, "%s/runs/deps", src);
    else
        snprintf(dir, size, "runs/deps");
    const char *need[] = {"gpt2/vocab.json", "gpt2/merges.txt", "moby-dick.txt"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, need[i]);
        if (!tok_is_file(path)) {
            printf("SKIP: %s is missing: run scripts/fetch-data.sh [DEST] (and set LOOM_DATA_DIR=DEST "
                   "for a DEST other than <source>/runs/deps)\n",
                   path);
            return 0;
        }
    }
    return 1;
}

/* The source folder (for tests/data/reference_encode.js). */
static inline const char *tok_source_dir(void)
{
    const char *src = getenv("LOOM_SOURCE_DIR");
#ifdef LOOM_TEST_SOURCE_DIR
    if (!src || !*src) src = LOOM_TEST_SOURCE_DIR;
#endif
    return src && *src ? src : ".";
}

/* Read a whole file (NUL-terminated); NULL on failure. */
static inline char *tok_read(const char *path, size_t *len)
{
    char *data = NULL;
    if (loom_read_file(path, &data, len) != LOOM_OK) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    return data;
}

#endif
