#include "error.h"
#include "error_serial.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_message[2048];
static _Thread_local unsigned long error_serial;

loom_status loom_error(loom_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    error_serial++;
    return code;
}

loom_status loom_error_context(loom_status code, const char *fmt, ...)
{
    char prefix[512];
    char old[sizeof error_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    /* Composed by hand: a too-long message is cut, which snprintf's checker cannot prove fine. */
    size_t p = strnlen(prefix, sizeof prefix), o = strnlen(old, sizeof old - 1);
    if (p > sizeof error_message - 3) p = sizeof error_message - 3;
    memcpy(error_message, prefix, p);
    memcpy(error_message + p, ": ", 2);
    size_t room = sizeof error_message - p - 3;
    if (o > room) o = room;
    memcpy(error_message + p + 2, old, o);
    error_message[p + 2 + o] = '\0';
    error_serial++;
    return code;
}

const char *loom_error_message(void) { return error_message; }

unsigned long loom_error_serial(void)
{
    return error_serial;
}

void loom_error_clear(void) { error_message[0] = '\0'; }

const char *loom_status_string(loom_status code)
{
    switch (code) {
    case LOOM_OK: return "ok";
    case LOOM_E_INVALID: return "invalid argument";
    case LOOM_E_NOMEM: return "out of memory";
    case LOOM_E_UNSUPPORTED: return "not supported";
    case LOOM_E_DEVICE: return "device error";
    case LOOM_E_INTERNAL: return "internal error";
    case LOOM_E_IO: return "i/o error";
    case LOOM_E_FORMAT: return "malformed data";
    case LOOM_E_NOT_FOUND: return "not found";
    case LOOM_E_ABI: return "incompatible ABI";
    case LOOM_E_COMM: return "communication error";
    case LOOM_E_TIMEOUT: return "timed out";
    case LOOM_E_OVERFLOW: return "non-finite value";
    case LOOM_E_STOP: return "stopped";
    default: return "unknown status";
    }
}
