/*
 * error.h - the core's per-thread error message. Every fallible core function returns a
 * loom_status and, on failure, leaves a one-line message here saying what and where; the
 * `loom` command prints it as "loom: error: <message>" and exits non-zero.
 */
#ifndef LOOM_CORE_ERROR_H
#define LOOM_CORE_ERROR_H

#include <loom/loom.h>

/* The embedding API: libloom is built with hidden visibility and exports only the functions
 * marked LOOM_API in the installed headers (trainer.h, error.h, args.h, dataset.h,
 * plugin_loader.h, ranks.h). Everything else is internal to the library (and to its tests,
 * which link the static loom_internal). */
#ifndef LOOM_API
#if defined(__GNUC__)
#define LOOM_API __attribute__((visibility("default")))
#else
#define LOOM_API
#endif
#endif

/* Set the current thread's message (printf format, one line, no trailing newline) and return
 * `code`, so callers write `return loom_error(LOOM_E_INVALID, "...")`. */
LOOM_API loom_status loom_error(loom_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with "<prefix>: " (adding context on the way up). Returns code. */
LOOM_API loom_status loom_error_context(loom_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current thread's message; "" when none. Valid until the next loom_error* call. */
LOOM_API const char *loom_error_message(void);

/* Forget the current message. */
LOOM_API void loom_error_clear(void);

/* "invalid argument", "not found", ... for a status code. */
LOOM_API const char *loom_status_string(loom_status code);

#endif
