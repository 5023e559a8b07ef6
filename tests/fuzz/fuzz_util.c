/* fuzz_util.c - what the fuzz targets share (fuzz_util.h). */
#include "fuzz_util.h"

static char fuzz_root[64];

static void fuzz_cleanup(void)
{
    if (fuzz_root[0]) loom_remove_tree(fuzz_root);
}

const char *fuzz_dir(void)
{
    if (!fuzz_root[0]) {
        snprintf(fuzz_root, sizeof fuzz_root, "/tmp/loom-fuzz-XXXXXX");
        if (!mkdtemp(fuzz_root)) abort();
        atexit(fuzz_cleanup);
        loom_host_set_log_level(LOOM_LOG_ERROR);
    }
    return fuzz_root;
}

const char *fuzz_fresh_dir(const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", fuzz_dir(), name);
    loom_remove_tree(path);
    if (loom_mkdir_p(path) != LOOM_OK) abort();
    return path;
}

const char *fuzz_write(const char *dir, const char *name, const uint8_t *data, size_t size, char *path,
                       size_t path_size)
{
    snprintf(path, path_size, "%s/%s", dir ? dir : fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    return path;
}

size_t fuzz_split(const uint8_t *data, size_t size, fuzz_part *parts, size_t max)
{
    const size_t sep = sizeof FUZZ_SEPARATOR - 1;
    size_t n = 0, start = 0;
    for (size_t i = 0; n + 1 < max && i + sep <= size; i++) {
        if (memcmp(data + i, FUZZ_SEPARATOR, sep) != 0) continue;
        parts[n++] = (fuzz_part){data + start, i - start};
        start = i + sep;
        i = start - 1;
    }
    parts[n++] = (fuzz_part){data + start, size - start};
    return n;
}

FILE *fuzz_sink(void)
{
    static FILE *sink;
    if (!sink && !(sink = fopen("/dev/null", "w"))) abort();
    return sink;
}

loom_status fuzz_parse_args(const char *flag, const char *name, const uint8_t *data, size_t size, loom_args *args,
                            char *path, size_t path_size)
{
    fuzz_write(NULL, name, data, size, path, path_size);
    char *argv[] = {(char *)flag, path, "--output_dir", "/nonexistent/out", NULL};
    loom_args_init(args);
    return loom_args_parse(args, 4, argv);
}
