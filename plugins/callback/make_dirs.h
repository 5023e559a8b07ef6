/*
 * make_dirs.h - `mkdir -p` for the callbacks that write files (history, tensorboard): the
 * folder may not exist yet when a program embeds the trainer (HF makes output_dir at save).
 */
#ifndef LOOM_CALLBACK_MAKE_DIRS_H
#define LOOM_CALLBACK_MAKE_DIRS_H

#include <errno.h>
#include <sys/stat.h>

/* 0, or -1 with errno. `path` is modified during the call and restored. */
static inline int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int failed = mkdir(path, 0777) != 0 && errno != EEXIST;
        *p = '/';
        if (failed) return -1;
    }
    return mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

#endif
