/*
 * fileutil.h - the file-system operations checkpoints are built from: create and remove
 * folders, write a file so that a crash leaves either the old file or the whole new one,
 * read a file, publish a finished folder under its final name, and find checkpoint-N folders.
 *
 * Every function returns a loom_status and, on failure, a one-line loom_error message that
 * names the path involved and the system's reason.
 */
#ifndef LOOM_CORE_FILEUTIL_H
#define LOOM_CORE_FILEUTIL_H

#include <loom/loom.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Create `path` and any missing parents (mode 0777 less the umask). An existing directory is
 * fine; an existing non-directory on the way is LOOM_E_IO. */
loom_status loom_mkdir_p(const char *path);

/* One piece of a file written by loom_write_file_atomicv. */
typedef struct loom_file_part {
    const void *data;
    size_t len;
} loom_file_part;

/* Write the concatenation of parts[0..n) to "<path>.tmp", fsync it, rename it over `path` and
 * fsync the containing folder: afterwards `path` holds either its old content or all of the
 * new one, never a prefix. On failure the .tmp file is removed. */
loom_status loom_write_file_atomicv(const char *path, const loom_file_part *parts, size_t n);

/* Called around the write of part i of a staged write: done = 0 before (the part's memory may
 * be made ready then), 1 after. A failure stops the write (the .tmp file goes). */
typedef loom_status (*loom_part_stage)(void *context, size_t part, int done);
/* loom_write_file_atomicv with stage (not NULL) around each part's write: a file larger than
 * what is ready in memory at once (ZeRO-3's gathered parameters, tensor by tensor). */
loom_status loom_write_file_atomicv_staged(const char *path, const loom_file_part *parts, size_t n,
                                           loom_part_stage stage, void *context);

/* loom_write_file_atomicv with one part. */
loom_status loom_write_file_atomic(const char *path, const void *data, size_t len);

/* loom_write_file_atomic of the text `print` writes to f (a stream into memory, so a full disk
 * shows up at the write, named with its reason, and leaves the old file). */
loom_status loom_write_text_atomic(const char *path, void (*print)(FILE *f, const void *context), const void *context);

/* The most loom_read_file reads: configuration, tokenizer and JSON files are far smaller. */
#define LOOM_READ_FILE_MAX (256u << 20)

/* Open `path` for reading, as a regular file only: a FIFO, device, socket or folder is
 * LOOM_E_IO "PATH: is a FIFO, not a regular file" (opening never blocks, so `mkfifo` or
 * /dev/zero cannot hang or flood the caller). A missing file is LOOM_E_NOT_FOUND. On success
 * *fd is a blocking, close-on-exec descriptor and *size the file's size. */
loom_status loom_open_regular(const char *path, int *fd, uint64_t *size);

/* Read the whole regular file (loom_open_regular) of at most max_bytes into a malloc'd buffer
 * with a NUL appended (not counted in *len); the caller frees *data. A larger file is
 * LOOM_E_IO naming its size and the limit, before anything is allocated. */
loom_status loom_read_file_max(const char *path, size_t max_bytes, char **data, size_t *len);

/* loom_read_file_max with LOOM_READ_FILE_MAX. A missing file is LOOM_E_NOT_FOUND (callers
 * probing optional files tell it from a real I/O error), anything else LOOM_E_IO. */
loom_status loom_read_file(const char *path, char **data, size_t *len);

/* Delete `path` and, if it is a folder, everything below it. Symbolic links are removed, never
 * followed. A path that does not exist is already removed: LOOM_OK. Refuses "" and "/". */
loom_status loom_remove_tree(const char *path);

/* *empty = 1 if `path` is a folder with no entries or does not exist, else 0. A path that is
 * not a folder is LOOM_E_IO. */
loom_status loom_dir_is_empty(const char *path, int *empty);

/* 1 when a and b both exist and name one file or folder, however spelt (relative or absolute,
 * through links); 0 otherwise. */
int loom_same_file(const char *a, const char *b);

/* fsync the folder tmp_dir (so the entries written into it are durable), rename it to
 * final_dir, and fsync final_dir's parent. If final_dir exists - even empty, which plain
 * rename() would silently replace - fail with LOOM_E_IO and leave both untouched. */
loom_status loom_rename_dir_atomic(const char *tmp_dir, const char *final_dir);

/* buf = a + "/" + b (no doubled '/' when a ends in one; just b when a is ""). LOOM_E_INVALID,
 * with buf set to "", when the result and its NUL do not fit in `size` bytes. */
loom_status loom_path_join(char *buf, size_t size, const char *a, const char *b);

/* The steps N of the folders directly in output_dir named exactly "checkpoint-N" (N decimal,
 * no sign, no leading zero, fits int64), ascending. Files, "checkpoint-N.tmp" and other names
 * are ignored. A missing output_dir has none. *steps is malloc'd (NULL when *n == 0); the
 * caller frees it. */
loom_status loom_list_checkpoints(const char *output_dir, int64_t **steps, size_t *n);

#endif
