/* loader_test_util.h - scratch folders and message checks shared by the loader tests. */
#ifndef LOOM_LOADER_TEST_UTIL_H
#define LOOM_LOADER_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

/* True when s is one line: the CLI prints it after "loom: error: ". */
static inline int one_line(const char *s)
{
    return strchr(s, '\n') == NULL && strchr(s, '\r') == NULL;
}

static inline int contains(const char *s, const char *part)
{
    return s && part && strstr(s, part) != NULL;
}

static inline int is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A fresh folder under /tmp, written into buf (at least 64 bytes); exits on failure because
 * nothing after it could run. */
static inline void make_scratch_dir(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/loom_loader_test_XXXXXX");
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(2);
    }
}

static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* rm -r of a scratch folder; plugins loaded from it stay mapped, so this is safe. */
static inline void remove_scratch_dir(const char *dir)
{
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* dir/name into buf. */
static inline const char *path_in(char *buf, size_t size, const char *dir, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

/* Copy a file byte for byte; returns 0 on success. A copy is a different inode, so the
 * dynamic loader treats it as a different object. */
static inline int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char chunk[65536];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(chunk, 1, sizeof chunk, in)) > 0)
        if (fwrite(chunk, 1, n, out) != n) rc = -1;
    if (in && ferror(in)) rc = -1;
    if (in) fclose(in);
    if (out && fclose(out) != 0) rc = -1;
    return rc;
}

static inline int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc;
}

#endif
