/* test_util.h - the few checks our C tests need. A test binary exits 0 only if every CHECK
 * held; each failing CHECK prints file:line and the expression. */
#ifndef LOOM_TEST_UTIL_H
#define LOOM_TEST_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        test_checks++;                                                                      \
        if (!(cond)) {                                                                      \
            test_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                   \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                       \
    do {                                                                                    \
        double ca_ = (double)(a), cb_ = (double)(b);                                        \
        test_checks++;                                                                      \
        if (!(fabs(ca_ - cb_) <= (atol) + (rtol) * fabs(cb_))) {                            \
            test_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK_CLOSE failed: %s = %.17g, %s = %.17g\n", __FILE__, \
                    __LINE__, #a, ca_, #b, cb_);                                            \
        }                                                                                   \
    } while (0)

/* Print a summary and return the process status. */
static inline int test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

/* malloc that cannot return NULL (bytes 0: one byte); exits 2 when memory runs out. */
static inline void *test_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* A file in /tmp holding `text`; its path lives until the next call. NULL if mkstemp fails
 * ("" if the write was short). The caller unlinks it. */
static inline const char *test_temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/loom_test_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) path[0] = '\0';
    close(fd);
    return path;
}

/* Monotonic seconds, for deadlines (never asserted on). */
static inline double test_now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Sleep `seconds`, resumed after a signal. */
static inline void test_nap(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A loopback port nobody listens on right now (the kernel's pick; the test binds it next). */
static inline int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test_free_port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

#endif
