/*
 * stale_outputs.h - the files a tool (make-data, tokenize, consolidate) owns in its output
 * folder but leaves out of one run. One an earlier run left there belongs to another data set or
 * model; kept, it would be read beside the new files (an 8-feature train.bin with a 4-feature
 * validation.bin), so the run removes it and says so.
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

#endif
