/*
 * store_internal.h - what the store's server and client share: op and status codes of the
 * wire protocol (documented in store.h), the handshake (store_auth.c), little-endian
 * encoding, the monotonic clock and address formatting.
 */
#ifndef LOOM_CORE_STORE_INTERNAL_H
#define LOOM_CORE_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store.h"

enum { STORE_OP_SET = 1, STORE_OP_GET = 2, STORE_OP_ADD = 3, STORE_OP_WAIT = 4, STORE_OP_HELLO = 16 };
enum { STORE_OK = 0, STORE_TIMEOUT = 1, STORE_BAD_VALUE = 2, STORE_FULL = 3, STORE_REFUSED = 4 };

/* The handshake (store.h): challenge body = magic + server nonce; hello body = op + client
 * nonce + client MAC; welcome body = status + server MAC. */
#define STORE_MAGIC "LOOMSTR1"
#define STORE_MAGIC_LEN 8
#define STORE_NONCE_LEN 32
#define STORE_MAC_LEN 32
#define STORE_CHALLENGE_LEN (STORE_MAGIC_LEN + STORE_NONCE_LEN)
#define STORE_HELLO_LEN (1 + STORE_NONCE_LEN + STORE_MAC_LEN)
#define STORE_WELCOME_LEN (1 + STORE_MAC_LEN)

/* HMAC-SHA256 keyed by the secret (NULL: the empty key) over label, first nonce, second
 * nonce. The client proves itself with label "client" over (server nonce, client nonce), the
 * server with "server" over (client nonce, server nonce), so neither proof replays as the
 * other. False only if libcrypto fails. */
bool store_mac(const char *secret, const char *label, const unsigned char *first, const unsigned char *second,
               unsigned char mac[STORE_MAC_LEN]);

/* Whether two MACs are equal, in time that does not depend on where they differ. */
bool store_mac_equal(const unsigned char *a, const unsigned char *b);

/* Overwrite a secret (NUL-terminated; NULL is a no-op) before its memory is freed. */
void store_forget(char *secret);

/* n unpredictable bytes from the kernel (getrandom). False if it has none to give. */
bool store_random(unsigned char *out, size_t n);

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
