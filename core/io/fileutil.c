#include "fileutil.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* --------------------------------------------------------------------------------------- */

static loom_status mkdir_one(const char *full, const char *prefix)
{
    struct stat st;
    /* stat first: mkdir on an existing folder can fail with EACCES or EROFS rather than
     * EEXIST (a read-only parent), which would turn "already there" into an error. */
    if (stat(prefix, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return LOOM_OK;
        return loom_error(LOOM_E_IO, "%s: cannot create folder: '%s' exists and is not a folder", full,
                          prefix);
    }
    if (mkdir(prefix, 0777) == 0)
        return LOOM_OK;
    int err = errno;
    /* Someone else (another rank) created it between our stat and mkdir. */
    if (err == EEXIST && stat(prefix, &st) == 0 && S_ISDIR(st.st_mode))
        return LOOM_OK;
    return loom_error(LOOM_E_IO, "%s: cannot create folder '%s': %s", full, prefix, strerror(err));
}

loom_status loom_mkdir_p(const char *path)
{
    if (!path || !*path)
        return loom_error(LOOM_E_INVALID, "--output_dir is empty (an unset variable in a script?): name a folder");
    char *buf = strdup(path);
    if (!buf)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    loom_status st = LOOM_OK;
    for (char *p = buf + 1; *p && st == LOOM_OK; p++) {
        if (*p == '/' && p[-1] != '/') {
            *p = '\0';
            st = mkdir_one(path, buf);
            *p = '/';
        }
    }
    if (st == LOOM_OK)
        st = mkdir_one(path, buf);
    free(buf);
    return st;
}

/* --------------------------------------------------------------------------------------- */

/* fsync a folder so that entries created or renamed in it survive a power loss. */
static loom_status fsync_dir(const char *dir, const char *for_path)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return loom_error(LOOM_E_IO, "%s: cannot open folder '%s' to sync it: %s", for_path, dir,
                          strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* Some file systems cannot fsync a folder; they are no less durable for our trying. */
    if (rc != 0 && err != EINVAL && err != ENOTSUP)
        return loom_error(LOOM_E_IO, "%s: cannot sync folder '%s': %s", for_path, dir, strerror(err));
    return LOOM_OK;
}

static loom_status fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    loom_status st = fsync_dir(dirname(copy), path);
    free(copy);
    return st;
}

static loom_status write_all(int fd, const char *path, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return loom_error(LOOM_E_IO, "%s: write failed: %s", path, strerror(errno));
        }
        if (w == 0)
            return loom_error(LOOM_E_IO, "%s: write made no progress", path);
        p += w;
        len -= (size_t)w;
    }
    return LOOM_OK;
}

static loom_status write_parts(const char *path, const loom_file_part *parts, size_t n, loom_part_stage stage,
                               void *context);

loom_status loom_write_file_atomicv(const char *path, const loom_file_part *parts, size_t n)
{
    return write_parts(path, parts, n, NULL, NULL);
}

loom_status loom_write_file_atomicv_staged(const char *path, const loom_file_part *parts, size_t n,
                                           loom_part_stage stage, void *context)
{
    return write_parts(path, parts, n, stage, context);
}

static loom_status write_parts(const char *path, const loom_file_part *parts, size_t n, loom_part_stage stage,
                               void *context)
{
    if (!path || !*path)
        return loom_error(LOOM_E_INVALID, "write: empty path");
    for (size_t i = 0; i < n; i++)
        if (parts[i].len > 0 && !parts[i].data)
            return loom_error(LOOM_E_INVALID, "%s: part %zu has %zu bytes but no data", path, i, parts[i].len);
    char *tmp = concat(path, ".tmp");
    if (!tmp)
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);

    loom_status st = LOOM_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = loom_error(LOOM_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    for (size_t i = 0; i < n && st == LOOM_OK; i++) {
        if (stage && (st = stage(context, i, 0)) != LOOM_OK) break;
        st = write_all(fd, tmp, parts[i].data, parts[i].len);
        if (stage && st == LOOM_OK) st = stage(context, i, 1);
    }
    if (st == LOOM_OK && fsync(fd) != 0)
        st = loom_error(LOOM_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    /* close() reports delayed write errors on NFS; a file we cannot vouch for is not renamed. */
    if (close(fd) != 0 && st == LOOM_OK)
        st = loom_error(LOOM_E_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == LOOM_OK && rename(tmp, path) != 0)
        st = loom_error(LOOM_E_IO, "%s: cannot rename '%s' to it: %s", path, tmp, strerror(errno));
    if (st != LOOM_OK)
        unlink(tmp);
    else
        st = fsync_parent(path);
    free(tmp);
    return st;
}

loom_status loom_write_file_atomic(const char *path, const void *data, size_t len)
{
    loom_file_part part = {data, len};
    return loom_write_file_atomicv(path, &part, 1);
}

loom_status loom_write_text_atomic(const char *path, void (*print)(FILE *f, const void *context), const void *context)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    print(f, context);
    int failed = ferror(f);
    /* fclose settles text and len. */
    if (fclose(f) != 0 || failed) {
        free(text);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", path);
    }
    loom_status st = loom_write_file_atomic(path, text, len);
    free(text);
    return st;
}

/* --------------------------------------------------------------------------------------- */

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISFIFO(mode)) return "a FIFO (pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

loom_status loom_open_regular(const char *path, int *fd, uint64_t *size)
{
    *fd = -1;
    *size = 0;
    /* O_NONBLOCK: opening a FIFO nobody writes to must not wait; cleared below. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) {
        int err = errno;
        return loom_error(err == ENOENT ? LOOM_E_NOT_FOUND : LOOM_E_IO, "%s: cannot open: %s", path, strerror(err));
    }
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int err = errno;
        close(f);
        return loom_error(LOOM_E_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        if (S_ISDIR(sb.st_mode)) return loom_error(LOOM_E_IO, "%s: is a folder, not a file", path);
        return loom_error(LOOM_E_IO, "%s: is %s, not a regular file: give a file", path, file_kind(sb.st_mode));
    }
    int flags = fcntl(f, F_GETFL);
    if (flags >= 0) fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
    *fd = f;
    *size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    return LOOM_OK;
}

loom_status loom_read_file_max(const char *path, size_t max_bytes, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd;
    uint64_t size;
    loom_status st = loom_open_regular(path, &fd, &size);
    if (st != LOOM_OK) return st;
    if (size > max_bytes) {
        close(fd);
        return loom_error(LOOM_E_IO, "%s: %llu bytes, more than the %zu this file may have", path,
                          (unsigned long long)size, max_bytes);
    }
    /* st_size is only a hint: a file may grow while we read it, never past max_bytes here. */
    if (max_bytes > SIZE_MAX - 2) max_bytes = SIZE_MAX - 2;
    size_t cap = (size_t)size + 2 < 4096 ? 4096 : (size_t)size + 2;
    size_t used = 0;
    char *buf = malloc(cap);
    st = buf ? LOOM_OK : loom_error(LOOM_E_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    while (st == LOOM_OK) {
        if (used + 1 >= cap) {
            /* Room for max_bytes + 1 bytes tells a file of exactly max_bytes from a longer one. */
            if (used > max_bytes) {
                st = loom_error(LOOM_E_IO, "%s: grew past the %zu bytes this file may have while being read", path,
                                max_bytes);
                break;
            }
            size_t grown = cap > (max_bytes + 2) / 2 ? max_bytes + 2 : cap * 2;
            char *bigger = realloc(buf, grown);
            if (!bigger) {
                st = loom_error(LOOM_E_NOMEM, "%s: out of memory growing to %zu bytes", path, grown);
                break;
            }
            buf = bigger;
            cap = grown;
        }
        ssize_t r = read(fd, buf + used, cap - 1 - used);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            st = loom_error(LOOM_E_IO, "%s: read failed: %s", path, strerror(errno));
        } else if (r == 0) {
            break;
        } else {
            used += (size_t)r;
        }
    }
    close(fd);
    if (st == LOOM_OK && used > max_bytes)
        st = loom_error(LOOM_E_IO, "%s: grew past the %zu bytes this file may have while being read", path, max_bytes);
    if (st != LOOM_OK) {
        free(buf);
        return st;
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return LOOM_OK;
}

loom_status loom_read_file(const char *path, char **data, size_t *len)
{
    return loom_read_file_max(path, LOOM_READ_FILE_MAX, data, len);
}

/* --------------------------------------------------------------------------------------- */

static int remove_entry(const char *fpath, const struct stat *sb, int typeflag, struct FTW *ftwbuf)
{
    (void)sb;
    (void)ftwbuf;
    int rc;
    switch (typeflag) {
    case FTW_DP:
        rc = rmdir(fpath);
        break;
    case FTW_DNR:
        loom_error(LOOM_E_IO, "%s: cannot read folder to remove it", fpath);
        return 1;
    case FTW_NS:
        loom_error(LOOM_E_IO, "%s: cannot stat to remove it", fpath);
        return 1;
    default: /* files, symbolic links (never followed under FTW_PHYS), sockets, fifos */
        rc = unlink(fpath);
        break;
    }
    if (rc != 0 && errno != ENOENT) {
        loom_error(LOOM_E_IO, "%s: cannot remove: %s", fpath, strerror(errno));
        return 1;
    }
    return 0;
}

/* True for paths whose removal would be a disaster or that rmdir rejects only after their
 * contents are gone: "", "/", "//", ".", "..", "x/.", "x/..". */
static int is_forbidden_root(const char *path)
{
    size_t len = strlen(path);
    while (len > 0 && path[len - 1] == '/')
        len--;
    if (len == 0)
        return 1;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t comp = len - start;
    return (comp == 1 && path[start] == '.') || (comp == 2 && path[start] == '.' && path[start + 1] == '.');
}

loom_status loom_remove_tree(const char *path)
{
    if (!path || is_forbidden_root(path))
        return loom_error(LOOM_E_INVALID, "remove: refusing to remove '%s'", path ? path : "(null)");
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT)
            return LOOM_OK;
        return loom_error(LOOM_E_IO, "%s: cannot stat to remove it: %s", path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return loom_error(LOOM_E_IO, "%s: cannot remove: %s", path, strerror(errno));
        return LOOM_OK;
    }
    int rc = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rc == 1)
        return LOOM_E_IO; /* remove_entry set the message */
    if (rc != 0)
        return loom_error(LOOM_E_IO, "%s: cannot walk folder to remove it: %s", path, strerror(errno));
    return LOOM_OK;
}

/* --------------------------------------------------------------------------------------- */

/* ENOTDIR for path: the path itself is a file, or one of the folders on the way to it is
 * ("--output_dir afile/sub"): name the one that is. */
static loom_status not_a_folder(const char *path)
{
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "%s", path);
    for (char *slash = strchr(prefix + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        struct stat sb;
        *slash = '\0';
        const int file = stat(prefix, &sb) == 0 && !S_ISDIR(sb.st_mode);
        if (file) return loom_error(LOOM_E_IO, "%s: '%s' on the way is a file, not a folder", path, prefix);
        *slash = '/';
    }
    return loom_error(LOOM_E_IO, "%s: exists and is not a folder", path);
}

loom_status loom_dir_is_empty(const char *path, int *empty)
{
    *empty = 0;
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) {
            *empty = 1;
            return LOOM_OK;
        }
        if (errno == ENOTDIR) return not_a_folder(path);
        return loom_error(LOOM_E_IO, "%s: cannot open folder: %s", path, strerror(errno));
    }
    int found = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            found = 1;
            break;
        }
    }
    int err = errno;
    closedir(d);
    if (!found && err != 0)
        return loom_error(LOOM_E_IO, "%s: cannot read folder: %s", path, strerror(err));
    *empty = !found;
    return LOOM_OK;
}

loom_status loom_rename_dir_atomic(const char *tmp_dir, const char *final_dir)
{
    struct stat sb;
    if (stat(tmp_dir, &sb) != 0)
        return loom_error(LOOM_E_IO, "%s: cannot rename to '%s': %s", tmp_dir, final_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return loom_error(LOOM_E_IO, "%s: is not a folder", tmp_dir);
    loom_status st = fsync_dir(tmp_dir, tmp_dir);
    if (st != LOOM_OK)
        return st;

    if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, final_dir, RENAME_NOREPLACE) != 0) {
        int err = errno;
        if (err == EEXIST)
            return loom_error(LOOM_E_IO, "%s: already exists; not replacing it with '%s'", final_dir, tmp_dir);
        if (err != EINVAL && err != ENOSYS && err != ENOTSUP)
            return loom_error(LOOM_E_IO, "%s: cannot rename '%s' to it: %s", final_dir, tmp_dir, strerror(err));
        /* The file system has no RENAME_NOREPLACE. Check, then rename: racy against another
         * writer, but plain rename() alone would replace an empty final_dir without a word. */
        if (lstat(final_dir, &sb) == 0)
            return loom_error(LOOM_E_IO, "%s: already exists; not replacing it with '%s'", final_dir, tmp_dir);
        if (rename(tmp_dir, final_dir) != 0)
            return loom_error(LOOM_E_IO, "%s: cannot rename '%s' to it: %s", final_dir, tmp_dir,
                              strerror(errno));
    }

    char *a = strdup(tmp_dir), *b = strdup(final_dir);
    if (!a || !b) {
        free(a);
        free(b);
        return loom_error(LOOM_E_NOMEM, "%s: out of memory", final_dir);
    }
    const char *pa = dirname(a), *pb = dirname(b);
    st = fsync_dir(pb, final_dir);
    if (st == LOOM_OK && strcmp(pa, pb) != 0)
        st = fsync_dir(pa, tmp_dir);
    free(a);
    free(b);
    return st;
}

/* --------------------------------------------------------------------------------------- */

/* s for a message, its middle left out when long: a path of thousands of bytes would fill the
 * error buffer and cut off the end of the line, which says what went wrong. */
static const char *elided(const char *s, char *out, size_t size)
{
    const size_t n = strlen(s), keep = 60;
    if (n <= 2 * keep + 3 || size < 2 * keep + 4) return s;
    snprintf(out, size, "%.*s...%s", (int)keep, s, s + n - keep);
    return out;
}

loom_status loom_path_join(char *buf, size_t size, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t sep = (la > 0 && a[la - 1] != '/') ? 1 : 0;
    if (la + sep + lb + 1 > size || la + sep + lb + 1 < la) {
        if (size > 0)
            buf[0] = '\0';
        char ea[128], eb[128];
        return loom_error(LOOM_E_INVALID, "path too long: '%s' joined with '%s' needs %zu bytes, the buffer holds %zu",
                          elided(a, ea, sizeof ea), elided(b, eb, sizeof eb), la + sep + lb + 1, size);
    }
    memmove(buf, a, la); /* memmove: a caller may join onto its own buffer */
    if (sep)
        buf[la] = '/';
    memmove(buf + la + sep, b, lb);
    buf[la + sep + lb] = '\0';
    return LOOM_OK;
}

/* --------------------------------------------------------------------------------------- */

/* The N of "checkpoint-N", or -1 if name is anything else. One spelling per N, so the step
 * we list always maps back to the folder it came from. */
static int64_t checkpoint_step(const char *name)
{
    static const char prefix[] = "checkpoint-";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *digits = name + sizeof prefix - 1;
    if (!*digits || (digits[0] == '0' && digits[1] != '\0'))
        return -1;
    int64_t v = 0;
    for (const char *p = digits; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (v > (INT64_MAX - (*p - '0')) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

loom_status loom_list_checkpoints(const char *output_dir, int64_t **steps, size_t *n)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(output_dir);
    if (!d) {
        if (errno == ENOENT)
            return LOOM_OK;
        return loom_error(LOOM_E_IO, "%s: cannot list checkpoints: %s", output_dir, strerror(errno));
    }
    int64_t *out = NULL;
    size_t count = 0, cap = 0;
    loom_status st = LOOM_OK;
    struct dirent *e;
    for (;;) {
        errno = 0;
        e = readdir(d);
        if (!e) {
            if (errno != 0)
                st = loom_error(LOOM_E_IO, "%s: cannot list checkpoints: %s", output_dir, strerror(errno));
            break;
        }
        int64_t step = checkpoint_step(e->d_name);
        if (step < 0)
            continue;
        int is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
            /* Some file systems do not fill d_type; a link to a folder counts as a folder. */
            struct stat sb;
            is_dir = fstatat(dirfd(d), e->d_name, &sb, 0) == 0 && S_ISDIR(sb.st_mode);
        }
        if (!is_dir)
            continue;
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            int64_t *bigger = realloc(out, ncap * sizeof *out);
            if (!bigger) {
                st = loom_error(LOOM_E_NOMEM, "%s: out of memory listing checkpoints", output_dir);
                break;
            }
            out = bigger;
            cap = ncap;
        }
        out[count++] = step;
    }
    closedir(d);
    if (st != LOOM_OK) {
        free(out);
        return st;
    }
    if (count > 1)
        qsort(out, count, sizeof *out, compare_int64);
    *steps = out;
    *n = count;
    return LOOM_OK;
}

int loom_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
