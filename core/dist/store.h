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
 * Admission: the store admits only processes that know the job's secret (LOOM_STORE_SECRET,
 * which `loom launch` makes per job), and the secret never crosses the wire. On accept the
 * server sends a challenge; the client answers with a hello that proves the secret; the server
 * answers with its own proof, so a rank does not trust a squatter on the port either:
 *
 *   challenge body = "LOOMSTR1", server_nonce:32 bytes                       (server -> client)
 *   hello body     = u8 16, client_nonce:32, HMAC-SHA256(secret, "client" server_nonce client_nonce)
 *   welcome body   = u8 0 (OK), HMAC-SHA256(secret, "server" client_nonce server_nonce)
 *                  | u8 4 (REFUSED), then the server closes the connection
 *
 * Nonces come from getrandom. Before admission a connection may send only the hello (65
 * bytes of body; any other length drops it at once) within the auth timeout; strangers are
 * dropped and counted in the log. Without a secret (NULL or "") the MAC is keyed by the empty
 * string: this keeps out what is not a loom rank, not a local user, which is why
 * loom_store_rendezvous refuses a store reachable beyond loopback without one.
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
 *   reply body = u8 status (0 OK, 1 TIMEOUT, 2 BAD_VALUE, 3 FULL), then the op's fields above.
 *   A SET or ADD that would take the table past max_stored bytes is answered FULL.
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

/* The environment variable that carries the job's secret to every rank. */
#define LOOM_STORE_SECRET_ENV "LOOM_STORE_SECRET"
/* The fewest characters a secret may have. */
#define LOOM_STORE_MIN_SECRET 16u

typedef struct loom_store_server loom_store_server;
typedef struct loom_store_client loom_store_client;

/* What a server holds at most; a member left 0 takes its default. */
typedef struct loom_store_limits {
    size_t max_connections; /* open at once, admitted or not; more are closed on accept
                               (default: half of RLIMIT_NOFILE, in [16, 4096])              */
    size_t max_pending;     /* connections still to prove the secret; a new one pushes out
                               the oldest (default 64)                                       */
    double auth_timeout;    /* seconds a connection has to prove the secret (default 5)      */
    double frame_timeout;   /* seconds a started frame may take to arrive whole (default 120) */
    uint64_t max_stored;    /* bytes of keys and values held, 64 per entry besides (1 GiB)   */
} loom_store_limits;

/* Serve a store on addr:port from a background thread, admitting only clients that prove
 * `secret` (NUL-terminated, copied; NULL or "": the empty key, see above). addr: a host name
 * or IPv4/IPv6 literal to bind; NULL, "" or "*" binds every interface (IPv6 and IPv4 when the
 * system has both). port 0 picks a free port (loom_store_server_port tells which).
 * SO_REUSEADDR is set. limits: NULL for the defaults. A port in use is LOOM_E_COMM "cannot
 * serve the rendezvous store on ADDR:PORT: address in use". */
loom_status loom_store_server_start(const char *addr, int port, const char *secret, const loom_store_limits *limits,
                                    loom_store_server **out);

/* The port the server listens on. */
int loom_store_server_port(const loom_store_server *server);

/* How many connections the server dropped for not proving the secret (a bad hello, another
 * frame, nothing in time, or pushed out by newer ones). MT-safe. */
uint64_t loom_store_server_refused(const loom_store_server *server);

/* Stop serving: the thread exits, every client connection is closed (a client parked in
 * get/wait gets LOOM_E_COMM), the memory is freed. NULL is a no-op. */
void loom_store_server_stop(loom_store_server *server);

/* Connect to the store at addr:port (a host name or an IPv4/IPv6 literal) and prove `secret`
 * (as for the server; copied), retrying with backoff while nobody serves it (the server may
 * start later) until timeout_seconds have passed: then LOOM_E_TIMEOUT "cannot reach the
 * rendezvous store at ADDR:PORT after N s ...". A server that refuses the secret, or one that
 * cannot prove it back, is LOOM_E_COMM at once, saying which.
 * timeout_seconds is also the deadline of set() and add() (<= 0: 1 s to connect, 30 s for
 * set/add). A host name is looked up on a helper thread, so a stalled DNS server cannot hold
 * the caller past the deadline either. */
loom_status loom_store_connect(const char *addr, int port, const char *secret, double timeout_seconds,
                               loom_store_client **out);

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

/* Join the run: rank 0 serves the store on addr:port, bound to that address only (or to
 * $LOOM_STORE_BIND when set, for a MASTER_ADDR this host cannot bind, as behind NAT), every
 * rank (0 too) connects to addr:port with the secret in $LOOM_STORE_SECRET (at least 16
 * characters, the same on every rank). Without a secret only a loopback address (127.x,
 * ::1, "localhost") is allowed: anything else is LOOM_E_INVALID saying how to set one. Then
 * all wait for each other: rank 0 sets "loom/world" to its world, which every other rank
 * reads first (another WORLD_SIZE is LOOM_E_INVALID naming both, and the rank writes that
 * refusal into "loom/joined/all", so the ranks waiting there fail with it at once too); each
 * ADDs 1 to "loom/rank/<rank>" (a second claim of a rank number is LOOM_E_INVALID) and to
 * "loom/joined" (more than world ranks: LOOM_E_INVALID); the last to arrive sets
 * "loom/joined/all", which the others wait for in the server. Within timeout_seconds in all, else LOOM_E_TIMEOUT "only
 * K of W ranks joined the rendezvous at ADDR:PORT within N s" (rank 0 keeps serving up to 2 s more so the others can
 * read K). On success *server_out is rank 0's server (NULL on other ranks; stop it last, after every rank is done with
 * the store) and *client_out this rank's client. On failure nothing is left behind. */
loom_status loom_store_rendezvous(int rank, int world, const char *addr, int port, double timeout_seconds,
                                  loom_store_server **server_out, loom_store_client **client_out);

#endif
