/* kill_on_unlink.so: an LD_PRELOAD shim for the interruption tests. With
 * LOOM_TEST_KILL_ON_UNLINK=PATTERN (fnmatch, '*' crossing '/'), the first unlink(2) of a path
 * that matches does its work and then kills the process with SIGKILL: a Ctrl-C that lands in the
 * middle of deleting a folder, at a chosen file, every time. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

int unlink(const char *path)
{
    static int (*real_unlink)(const char *);
    if (!real_unlink) real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int rc = real_unlink(path);
    const char *pattern = getenv("LOOM_TEST_KILL_ON_UNLINK");
    if (pattern && *pattern && fnmatch(pattern, path, 0) == 0) raise(SIGKILL);
    return rc;
}
