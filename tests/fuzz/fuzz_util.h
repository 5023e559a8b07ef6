/*
 * fuzz_util.h - what the libFuzzer targets share: a private scratch folder for the files a
 * parser reads from disk, and the split of one input into several files. docs/fuzzing.md.
 */
#ifndef LOOM_FUZZ_UTIL_H
#define LOOM_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "error.h"
#include "fileutil.h"
#include "host.h"

/* Parts of a multi-file input are separated by this line (a seed shows the layout; libFuzzer's
 * comparison tracing learns it). */
#define FUZZ_SEPARATOR "\n====\n"
#define FUZZ_MAX_PARTS 16

typedef struct fuzz_part {
    const uint8_t *data;
    size_t size;
} fuzz_part;

/* The folder the inputs are written to: created once per process, removed at exit. Logs
 * are silenced: a parser's warnings would drown libFuzzer's own output. */
const char *fuzz_dir(void);

/* A fresh, empty folder fuzz_dir()/name, its path in `path`. */
const char *fuzz_fresh_dir(const char *name, char *path, size_t size);

/* Write data to dir/name (dir NULL: fuzz_dir()) and return its path in `path`. */
const char *fuzz_write(const char *dir, const char *name, const uint8_t *data, size_t size, char *path,
                       size_t path_size);

/* Split at FUZZ_SEPARATOR into at most max parts (the last keeps the rest); at least one. */
size_t fuzz_split(const uint8_t *data, size_t size, fuzz_part *parts, size_t max);

/* /dev/null, opened once: where the targets write what they print. */
FILE *fuzz_sink(void);

/* Write data to fuzz_dir()/name and parse the arguments `flag PATH --output_dir ...` into args
 * (initialised here; free with loom_args_free), as `loom train flag FILE` would. */
loom_status fuzz_parse_args(const char *flag, const char *name, const uint8_t *data, size_t size, loom_args *args,
                            char *path, size_t path_size);

#endif
