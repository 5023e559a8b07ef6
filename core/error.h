/*
 * error.h - the core's per-thread error message. Every fallible core function returns a
 * loom_status and, on failure, leaves a one-line message here saying what and where; the
 * `loom` command prints it as "loom: error: <message>" and exits non-zero.
 */
#ifndef LOOM_CORE_ERROR_H
#define LOOM_CORE_ERROR_H

#include <loom/loom.h>

/* Set the current thread's message (printf format, one line, no trailing newline) and return
 * `code`, so callers write `return loom_error(LOOM_E_INVALID, "...")`. */
loom_status loom_error(loom_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with "<prefix>: " (adding context on the way up). Returns code. */
loom_status loom_error_context(loom_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current thread's message; "" when none. Valid until the next loom_error* call. */
const char *loom_error_message(void);

/* Forget the current message. */
void loom_error_clear(void);

/* "invalid argument", "not found", ... for a status code. */
const char *loom_status_string(loom_status code);

#endif
