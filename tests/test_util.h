/* test_util.h - the few checks our C tests need. A test binary exits 0 only if every CHECK
 * held; each failing CHECK prints file:line and the expression. */
#ifndef LOOM_TEST_UTIL_H
#define LOOM_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
