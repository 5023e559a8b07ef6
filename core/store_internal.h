/*
 * store_internal.h - what the store's server and client share: op and status codes of the
 * wire protocol (documented in store.h), little-endian encoding, the monotonic clock and
 * address formatting.
 */
#ifndef LOOM_CORE_STORE_INTERNAL_H
#define LOOM_CORE_STORE_INTERNAL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store.h"

enum { STORE_OP_SET = 1, STORE_OP_GET = 2, STORE_OP_ADD = 3, STORE_OP_WAIT = 4 };
enum { STORE_OK = 0, STORE_TIMEOUT = 1, STORE_BAD_VALUE = 2 };

/* The longest wait a request carries (30 days), so deadlines never overflow. */
#define STORE_MAX_TIMEOUT_MS (30ull * 24 * 3600 * 1000)

static inline void store_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline void store_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t store_get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t store_get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline double store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "host:port", or "[v6]:port" when host holds a ':'. */
static inline void store_format_address(char *out, size_t size, const char *host, int port)
{
    if (host && strchr(host, ':'))
        snprintf(out, size, "[%s]:%d", host, port);
    else
        snprintf(out, size, "%s:%d", host && *host ? host : "*", port);
}

#endif
