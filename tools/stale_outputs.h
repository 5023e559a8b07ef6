/*
 * stale_outputs.h - the files a tool (make-data, tokenize, consolidate) owns in its output
 * folder but leaves out of one run. One an earlier run left there belongs to another data set or
 * model; kept, it would be read beside the new files (an 8-feature train.bin with a 4-feature
 * validation.bin), so the run removes it and says so. And an input of the run is never one of
 * them: written over (atomically, after it was read) or removed, it would be gone.
 */
#ifndef LOOM_TOOLS_STALE_OUTPUTS_H
#define LOOM_TOOLS_STALE_OUTPUTS_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"

/* Remove dir/name if it is a file or a link, with a warning that gives `why` this run does not
 * write it. Anything else of that name (a folder) is not the tool's and stays. */
static inline loom_status loom_remove_stale_output(const char *command, const char *dir, const char *name,
                                                   const char *why)
{
    char path[4096];
    struct stat sb;
    loom_status st = loom_path_join(path, sizeof path, dir, name);
    if (st != LOOM_OK || lstat(path, &sb) != 0 || !(S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode))) return st;
    if (unlink(path) != 0 && errno != ENOENT)
        return loom_error(LOOM_E_IO, "%s: cannot remove %s, left by an earlier run: %s", command, path,
                          strerror(errno));
    fprintf(stderr, "loom: warning: %s: removed %s, left by an earlier run (%s)\n", command, path, why);
    return LOOM_OK;
}

/* Remove, without a word, the files of dir/names that this run is about to write again. Each
 * file is replaced atomically, but a run stopped between two of them (Ctrl-C after train.bin)
 * would leave the new train.bin beside the old validation.bin of another text, read together by
 * the next `loom train` as one data set; with the old ones gone first it leaves only new files,
 * and a missing one is named when it is opened. */
static inline loom_status loom_clear_rewritten_outputs(const char *command, const char *dir, const char *const *names,
                                                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        loom_status st = loom_path_join(path, sizeof path, dir, names[i]);
        if (st != LOOM_OK) return st;
        if (lstat(path, &sb) != 0 || !(S_ISREG(sb.st_mode) || S_ISLNK(sb.st_mode))) continue;
        if (unlink(path) != 0 && errno != ENOENT)
            return loom_error(LOOM_E_IO, "%s: cannot remove %s before writing it again: %s", command, path,
                              strerror(errno));
    }
    return LOOM_OK;
}

/* LOOM_E_INVALID when the input `path` (given as --flag) is dir/names[i] for some i: a file the
 * command would write or remove. */
static inline loom_status loom_refuse_input_as_output(const char *command, const char *flag, const char *path,
                                                      const char *dir, const char *const *names, size_t n)
{
    char out[4096];
    for (size_t i = 0; i < n; i++)
        if (loom_path_join(out, sizeof out, dir, names[i]) == LOOM_OK && loom_same_file(path, out))
            return loom_error(LOOM_E_INVALID, "%s: --%s %s is the file %s writes as %s: choose another --output_dir",
                              command, flag, path, command, out);
    loom_error_clear();
    return LOOM_OK;
}

#endif
