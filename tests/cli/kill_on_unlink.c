/* kill_on_unlink.so: an LD_PRELOAD shim for the interruption tests. With
 * LOOM_TEST_KILL_ON_UNLINK=PATTERN (fnmatch, '*' crossing '/'), the first unlink(2) of a path
 * that matches does its work and then kills the process with SIGKILL: a Ctrl-C that lands in the
 * middle of deleting a folder, at a chosen file, every time. LOOM_TEST_KILL_ON_RENAME does the
 * same after a rename(2) whose new name matches: a kill between two files a tool writes.
 * LOOM_TEST_KILL_ON_CREATE after an open(2) with O_CREAT of a matching path: a kill in the middle
 * of writing a file, leaving its temporary behind. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void kill_if(const char *variable, const char *path)
{
    const char *pattern = getenv(variable);
    if (pattern && *pattern && fnmatch(pattern, path, 0) == 0) raise(SIGKILL);
}

int unlink(const char *path)
{
    static int (*real_unlink)(const char *);
    if (!real_unlink) real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int rc = real_unlink(path);
    kill_if("LOOM_TEST_KILL_ON_UNLINK", path);
    return rc;
}

int rename(const char *from, const char *to)
{
    static int (*real_rename)(const char *, const char *);
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int rc = real_rename(from, to);
    kill_if("LOOM_TEST_KILL_ON_RENAME", to);
    return rc;
}

int open(const char *path, int flags, ...)
{
    static int (*real_open)(const char *, int, ...);
    if (!real_open) real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_open(path, flags, mode);
    if (flags & O_CREAT) kill_if("LOOM_TEST_KILL_ON_CREATE", path);
    return fd;
}
