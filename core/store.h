/*
 * store.h - the rendezvous store: a TCP key-value store (as torchrun's TCPStore) that rank 0
 * serves at MASTER_ADDR:MASTER_PORT and every rank reaches; plugins get it as the
 * "loom.store/1" host service (loom_store_api of abi/loom/comm.h).
 *
 * Server: one background thread, poll()-based, any number of clients; keys -> byte values in
 * memory. A GET or WAIT whose keys are missing is parked in the server and answered when a
 * SET/ADD makes it true or its timeout passes: no client polls.
 *
 * Client: every operation has a deadline and never hangs; a server that goes away is
 * LOOM_E_COMM naming its address; a deadline that passes is LOOM_E_TIMEOUT naming the key and
 * the address. Thread-safe: a client keeps a small pool of connections under one mutex, so a
 * thread parked in get() does not hold up another thread's set() on the same client.
 *
 * Wire protocol (all integers little-endian; both directions use the same framing):
 *
 *   frame   = u32 body_length, body_length bytes of body
 *   string  = u32 length, bytes         (a key: 1 .. LOOM_STORE_MAX_KEY bytes, no NUL needed)
 *   blob    = u64 length, bytes         (a value: 0 .. LOOM_STORE_MAX_VALUE bytes)
 *
 *   request body = u8 op, then:
 *     1 SET   key:string value:blob                      reply OK
 *     2 GET   key:string timeout_ms:u64                  reply OK value:blob | TIMEOUT
 *     3 ADD   key:string delta:i64                       reply OK new_value:i64 | BAD_VALUE
 *     4 WAIT  timeout_ms:u64 n:u32 n x key:string        reply OK | TIMEOUT first_missing:string
 *   reply body = u8 status (0 OK, 1 TIMEOUT, 2 BAD_VALUE), then the op's fields above.
 *
 * ADD keeps the number as decimal text (as torch does), so GET of a counter reads "3"; ADD on
 * a value that is not such a number, or a sum that overflows int64, is BAD_VALUE. A missing
 * key counts as 0. One connection is one request at a time in order: the server reads the
 * next request only once the previous one is answered (a parked GET holds its connection).
 * A frame longer than LOOM_STORE_MAX_FRAME, an unknown op, a length that runs past the
 * frame or trailing bytes make the server drop that connection (and only that one).
 */
#ifndef LOOM_CORE_STORE_H
#define LOOM_CORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <loom/loom.h>

#define LOOM_STORE_MAX_KEY (64u * 1024u)                   /* bytes in a key                  */
#define LOOM_STORE_MAX_VALUE (256u * 1024u * 1024u)        /* bytes in a value                */
#define LOOM_STORE_MAX_WAIT_KEYS 65536u                    /* keys in one WAIT                */
#define LOOM_STORE_MAX_FRAME (LOOM_STORE_MAX_VALUE + 1024u * 1024u) /* bytes in a frame body  */

typedef struct loom_store_server loom_store_server;
typedef struct loom_store_client loom_store_client;

/* Serve a store on addr:port from a background thread. addr: a host name or IPv4/IPv6
 * literal to bind; NULL, "" or "*" binds every interface (IPv6 and IPv4 when the system has
 * both). port 0 picks a free port (loom_store_server_port tells which). SO_REUSEADDR is set.
 * A port in use is LOOM_E_COMM "cannot serve the rendezvous store on ADDR:PORT: address in
 * use". */
loom_status loom_store_server_start(const char *addr, int port, loom_store_server **out);

/* The port the server listens on. */
int loom_store_server_port(const loom_store_server *server);

/* Stop serving: the thread exits, every client connection is closed (a client parked in
 * get/wait gets LOOM_E_COMM), the memory is freed. NULL is a no-op. */
void loom_store_server_stop(loom_store_server *server);

/* Connect to the store at addr:port (a host name or an IPv4/IPv6 literal), retrying with
 * backoff while nobody serves it (the server may start later) until timeout_seconds have
 * passed: then LOOM_E_TIMEOUT "cannot reach the rendezvous store at ADDR:PORT after N s ...".
 * timeout_seconds is also the deadline of set() and add() (<= 0: 1 s to connect, 30 s for
 * set/add). A host name is looked up on a helper thread, so a stalled DNS server cannot hold
 * the caller past the deadline either. */
loom_status loom_store_connect(const char *addr, int port, double timeout_seconds, loom_store_client **out);

/* Close every connection and free. NULL is a no-op. No operation may be in flight. */
void loom_store_close(loom_store_client *client);

/* "ADDR:PORT" ("[ADDR]:PORT" for an IPv6 literal), for messages. */
const char *loom_store_address(const loom_store_client *client);

/* The operations of loom_store_api (abi/loom/comm.h), on one client. key: NUL-terminated.
 * timeout_seconds < 0 (or NaN) means the client's default (the connect timeout); 0 means
 * do not wait (LOOM_E_TIMEOUT at once if a key is missing). MT-safe. */
loom_status loom_store_set(loom_store_client *client, const char *key, const void *value, size_t size);
loom_status loom_store_get(loom_store_client *client, const char *key, void *value, size_t capacity,
                           size_t *size, double timeout_seconds);
loom_status loom_store_add(loom_store_client *client, const char *key, int64_t delta, int64_t *value);
loom_status loom_store_wait(loom_store_client *client, const char *const *keys, size_t n,
                            double timeout_seconds);

/* Join the run: rank 0 serves the store on port `port` (every interface, as torchrun's
 * store, because MASTER_ADDR may name this host by an address it cannot bind; only a
 * loopback literal or "localhost" binds loopback alone), every rank (0 too) connects to
 * addr:port, then all wait for each other: each ADDs 1 to "loom/rank/<rank>" (a second
 * claim of a rank number is LOOM_E_INVALID) and to "loom/joined" (more than world ranks:
 * LOOM_E_INVALID); the last to arrive sets "loom/joined/all", which the others WAIT for in
 * the server. Within timeout_seconds in all, else LOOM_E_TIMEOUT "only K of W ranks joined
 * the rendezvous at ADDR:PORT within N s" (rank 0 keeps serving up to 2 s more so the
 * others can read K). On success *server_out is rank 0's server (NULL
 * on other ranks; stop it last, after every rank is done with the store) and *client_out
 * this rank's client. On failure nothing is left behind. */
loom_status loom_store_rendezvous(int rank, int world, const char *addr, int port, double timeout_seconds,
                                  loom_store_server **server_out, loom_store_client **client_out);

#endif
