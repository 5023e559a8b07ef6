/*
 * store_server.c - the rendezvous store's server: one thread, poll() over a wake-up pipe, the
 * listening socket and every client; requests (store.h) executed in arrival order per
 * connection; a GET/WAIT whose keys are missing stays parked at the head of its connection's
 * input until a SET/ADD satisfies it or its deadline passes. Nothing here trusts a length: a
 * malformed frame drops its connection, and a connection's buffers grow only with the bytes
 * it actually sent.
 *
 * Admission: a new connection gets a challenge and may send nothing but the one small hello
 * frame that answers it, within the auth timeout; until then it costs one descriptor and a
 * few bytes, and the oldest such connection makes room when max_pending are waiting.
 * Strangers are dropped and counted (logged at the 1st, 2nd, 4th, 8th... and in total when
 * the server stops, so a flood cannot flood the log too).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "host.h"
#include "store.h"
#include "store_internal.h"

#define READ_CHUNK (64u * 1024u)        /* bytes read ahead of the frame being assembled  */
#define KEEP_BUFFER (1024u * 1024u)     /* buffers above this shrink once drained          */
#define ENTRY_OVERHEAD 64u              /* bytes an entry costs besides its key and value  */

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    unsigned char *value;
    uint64_t value_len;
    uint32_t key_len;
    char key[];
} entry;

typedef struct conn {
    int fd;
    bool eof;                  /* the peer closed its side: finish what is buffered, then drop */
    bool dead;                 /* drop at the end of this round                                 */
    bool parked;               /* the frame at the head of `in` is a GET/WAIT waiting for keys  */
    int64_t deadline_ms;       /* of the parked request                                         */
    bool admitted;             /* proved the job's secret                                       */
    bool closing;              /* drop once `out` is sent (a refusal)                           */
    int64_t admit_by_ms;       /* a connection not admitted by then is dropped                  */
    int64_t partial_since_ms;  /* when the unfinished frame at the head of `in` began; 0: none  */
    const char *why;           /* why a stranger is dropped, for the log                        */
    unsigned char nonce[STORE_NONCE_LEN];
    char peer[64];
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_len, out_sent, out_cap;
} conn;

struct loom_store_server {
    int listen_fd;
    int wake[2];
    int port;
    pthread_t thread;
    char where[300];
    entry **buckets;
    size_t nbuckets, nentries;
    conn **conns;
    size_t nconns, conns_cap;
    int64_t accept_paused_until;
    char *secret;              /* NULL: the empty key (loopback only, see store.h)               */
    loom_store_limits limits;  /* with the defaults filled in                                    */
    uint64_t stored;           /* bytes the table holds, ENTRY_OVERHEAD per entry included        */
    uint64_t refused;          /* strangers dropped (read by other threads: atomic)              */
    uint64_t turned_away;      /* connections closed at once because max_connections were open  */
};

/* ------------------------------------------------------------------------------------------ */
/* The table: chained hashing on FNV-1a.                                                     */

static uint64_t hash_key(const unsigned char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ key[i]) * 0x100000001b3ull;
    return h;
}

static entry *find_entry(const loom_store_server *s, const unsigned char *key, uint32_t len)
{
    if (!s->nbuckets) return NULL;
    uint64_t h = hash_key(key, len);
    for (entry *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0) return e;
    return NULL;
}

static bool grow_table(loom_store_server *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
    entry **b = calloc(n, sizeof *b);
    if (!b) return false;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (entry *e = s->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return true;
}

enum { PUT_OK, PUT_NOMEM, PUT_FULL };

/* Set key to a copy of value: PUT_OK, PUT_NOMEM, or PUT_FULL when the table would hold more
 * than max_stored bytes (the old value is kept in both failures). */
static int put_entry(loom_store_server *s, const unsigned char *key, uint32_t len, const unsigned char *value,
                     uint64_t value_len)
{
    entry *e = find_entry(s, key, len);
    uint64_t after = s->stored + value_len - (e ? e->value_len : 0) + (e ? 0 : ENTRY_OVERHEAD + len);
    if (after > s->limits.max_stored) return PUT_FULL;
    unsigned char *copy = malloc(value_len ? value_len : 1);
    if (!copy) return PUT_NOMEM;
    if (value_len) memcpy(copy, value, value_len);
    if (e) {
        free(e->value);
        e->value = copy;
        e->value_len = value_len;
        s->stored = after;
        return PUT_OK;
    }
    if (s->nentries + 1 > s->nbuckets && !grow_table(s)) {
        free(copy);
        return PUT_NOMEM;
    }
    e = malloc(sizeof *e + len);
    if (!e) {
        free(copy);
        return PUT_NOMEM;
    }
    e->hash = hash_key(key, len);
    e->key_len = len;
    memcpy(e->key, key, len);
    e->value = copy;
    e->value_len = value_len;
    e->next = s->buckets[e->hash & (s->nbuckets - 1)];
    s->buckets[e->hash & (s->nbuckets - 1)] = e;
    s->nentries++;
    s->stored = after;
    return PUT_OK;
}

static void free_table(loom_store_server *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (entry *e = s->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e->value);
            free(e);
        }
    }
    free(s->buckets);
    s->buckets = NULL;
    s->nbuckets = s->nentries = 0;
    s->stored = 0;
}

/* A counter's value: decimal text, optional '-', no spaces. */
static bool parse_counter(const unsigned char *text, uint64_t len, int64_t *out)
{
    if (len == 0 || len > 20) return false;
    char buf[24];
    memcpy(buf, text, len);
    buf[len] = '\0';
    const char *p = buf[0] == '-' ? buf + 1 : buf;
    if (!*p) return false;
    for (const char *c = p; *c; c++)
        if (*c < '0' || *c > '9') return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Parsing a request body.                                                                   */

typedef struct cursor {
    const unsigned char *p;
    size_t left;
} cursor;

static bool take_u8(cursor *c, uint8_t *v)
{
    if (c->left < 1) return false;
    *v = c->p[0];
    c->p++, c->left--;
    return true;
}

static bool take_u32(cursor *c, uint32_t *v)
{
    if (c->left < 4) return false;
    *v = store_get_u32(c->p);
    c->p += 4, c->left -= 4;
    return true;
}

static bool take_u64(cursor *c, uint64_t *v)
{
    if (c->left < 8) return false;
    *v = store_get_u64(c->p);
    c->p += 8, c->left -= 8;
    return true;
}

static bool take_key(cursor *c, const unsigned char **key, uint32_t *len)
{
    if (!take_u32(c, len) || *len == 0 || *len > LOOM_STORE_MAX_KEY || *len > c->left) return false;
    *key = c->p;
    c->p += *len, c->left -= *len;
    return true;
}

static bool take_blob(cursor *c, const unsigned char **value, uint64_t *len)
{
    if (!take_u64(c, len) || *len > LOOM_STORE_MAX_VALUE || *len > c->left) return false;
    *value = c->p;
    c->p += *len, c->left -= (size_t)*len;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections: buffers, replies, reading and writing.                                        */

static bool reserve(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 256;
    while (n < need) n = n > SIZE_MAX / 2 ? need : n * 2;
    unsigned char *b = realloc(*buf, n);
    if (!b) return false;
    *buf = b;
    *cap = n;
    return true;
}

/* Start a reply: frame header + status; the caller appends body_len - 1 bytes more. Returns
 * where to write them, or NULL (out of memory: the connection is dropped). */
static unsigned char *begin_reply(conn *c, uint8_t status, size_t body_len)
{
    if (!reserve(&c->out, &c->out_cap, c->out_len + 4 + body_len)) {
        c->dead = true;
        return NULL;
    }
    unsigned char *p = c->out + c->out_len;
    store_put_u32(p, (uint32_t)body_len);
    p[4] = status;
    c->out_len += 4 + body_len;
    return p + 5;
}

static void flush_out(conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            c->dead = true;
            return;
        }
    }
    c->out_len = c->out_sent = 0;
    if (c->out_cap > KEEP_BUFFER) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

/* Bytes of the frame at the head of `in` (header included) once its header has arrived;
 * 4 before. SIZE_MAX for a frame length out of bounds: before admission, anything but the
 * hello's exact length. */
static size_t head_frame_size(const conn *c)
{
    if (c->in_len < 4) return 4;
    uint32_t len = store_get_u32(c->in);
    if (!c->admitted) return len == STORE_HELLO_LEN ? 4 + (size_t)len : SIZE_MAX;
    if (len == 0 || len > LOOM_STORE_MAX_FRAME) return SIZE_MAX;
    return 4 + (size_t)len;
}

/* How far ahead of the frame being assembled input is read: nothing past the hello before
 * admission. */
static size_t read_ahead(const conn *c) { return c->admitted ? READ_CHUNK : 0; }

/* Whether to poll for more input: up to the frame being assembled plus what is read ahead. */
static bool wants_input(const conn *c)
{
    if (c->eof || c->dead || c->closing) return false;
    size_t need = head_frame_size(c);
    return need != SIZE_MAX && c->in_len < need + read_ahead(c);
}

static void read_input(conn *c)
{
    for (;;) {
        size_t need = head_frame_size(c);
        if (need == SIZE_MAX) {
            c->dead = true;
            return;
        }
        size_t limit = need + read_ahead(c);
        if (c->in_len >= limit) return;
        /* Grow with what actually arrived (at most doubling), never to a length a peer claims. */
        size_t want = c->in_len + READ_CHUNK + (c->in_len < limit - c->in_len ? c->in_len : 0);
        if (want > limit) want = limit;
        if (!reserve(&c->in, &c->in_cap, want)) {
            c->dead = true;
            return;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, want - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
        } else if (n == 0) {
            c->eof = true;
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            c->dead = true;
            return;
        }
    }
}

static void consume_head(conn *c, size_t frame)
{
    memmove(c->in, c->in + frame, c->in_len - frame);
    c->in_len -= frame;
    if (c->in_cap > KEEP_BUFFER && c->in_len < KEEP_BUFFER / 2) {
        unsigned char *b = realloc(c->in, c->in_len ? c->in_len : 1);
        if (b) {
            c->in = b;
            c->in_cap = c->in_len ? c->in_len : 1;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Executing requests.                                                                       */

enum { RUN_DONE, RUN_PARKED, RUN_BAD };

/* Run the complete frame at the head of c->in (body at body, len bytes). A GET or WAIT whose
 * keys are missing is answered TIMEOUT when `expired`, else left parked. */
static int run_request(loom_store_server *s, conn *c, const unsigned char *body, size_t len, bool expired,
                       bool *mutated)
{
    cursor cur = {body, len};
    uint8_t op;
    if (!take_u8(&cur, &op)) return RUN_BAD;
    const unsigned char *key, *value;
    uint32_t key_len;
    uint64_t value_len, timeout_ms, delta;
    unsigned char *p;
    switch (op) {
    case STORE_OP_SET:
        if (!take_key(&cur, &key, &key_len) || !take_blob(&cur, &value, &value_len) || cur.left) return RUN_BAD;
        switch (put_entry(s, key, key_len, value, value_len)) {
        case PUT_NOMEM: return RUN_BAD;
        case PUT_FULL: begin_reply(c, STORE_FULL, 1); return RUN_DONE;
        default: break;
        }
        *mutated = true;
        begin_reply(c, STORE_OK, 1);
        return RUN_DONE;
    case STORE_OP_GET: {
        if (!take_key(&cur, &key, &key_len) || !take_u64(&cur, &timeout_ms) || cur.left) return RUN_BAD;
        const entry *e = find_entry(s, key, key_len);
        if (!e) {
            if (!expired && timeout_ms > 0) return RUN_PARKED;
            begin_reply(c, STORE_TIMEOUT, 1);
            return RUN_DONE;
        }
        if ((p = begin_reply(c, STORE_OK, 1 + 8 + (size_t)e->value_len)) != NULL) {
            store_put_u64(p, e->value_len);
            if (e->value_len) memcpy(p + 8, e->value, e->value_len);
        }
        return RUN_DONE;
    }
    case STORE_OP_ADD: {
        if (!take_key(&cur, &key, &key_len) || !take_u64(&cur, &delta) || cur.left) return RUN_BAD;
        const entry *e = find_entry(s, key, key_len);
        int64_t old = 0, sum;
        if ((e && !parse_counter(e->value, e->value_len, &old)) ||
            __builtin_add_overflow(old, (int64_t)delta, &sum)) {
            begin_reply(c, STORE_BAD_VALUE, 1);
            return RUN_DONE;
        }
        char text[24];
        int n = snprintf(text, sizeof text, "%lld", (long long)sum);
        switch (put_entry(s, key, key_len, (const unsigned char *)text, (uint64_t)n)) {
        case PUT_NOMEM: return RUN_BAD;
        case PUT_FULL: begin_reply(c, STORE_FULL, 1); return RUN_DONE;
        default: break;
        }
        *mutated = true;
        if ((p = begin_reply(c, STORE_OK, 1 + 8)) != NULL) store_put_u64(p, (uint64_t)sum);
        return RUN_DONE;
    }
    case STORE_OP_WAIT: {
        uint32_t n;
        if (!take_u64(&cur, &timeout_ms) || !take_u32(&cur, &n) || n > LOOM_STORE_MAX_WAIT_KEYS) return RUN_BAD;
        const unsigned char *missing = NULL;
        uint32_t missing_len = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (!take_key(&cur, &key, &key_len)) return RUN_BAD;
            if (!missing && !find_entry(s, key, key_len)) missing = key, missing_len = key_len;
        }
        if (cur.left) return RUN_BAD;
        if (!missing) {
            begin_reply(c, STORE_OK, 1);
            return RUN_DONE;
        }
        if (!expired && timeout_ms > 0) return RUN_PARKED;
        if ((p = begin_reply(c, STORE_TIMEOUT, 1 + 4 + missing_len)) != NULL) {
            store_put_u32(p, missing_len);
            memcpy(p + 4, missing, missing_len);
        }
        return RUN_DONE;
    }
    default:
        return RUN_BAD;
    }
}

/* The deadline a GET/WAIT frame asks for, from now. */
static int64_t request_deadline(const unsigned char *body, size_t len)
{
    uint64_t ms = 0;
    if (body[0] == STORE_OP_GET && len >= 5) {
        uint32_t key_len = store_get_u32(body + 1);
        if ((size_t)key_len + 13 <= len) ms = store_get_u64(body + 5 + key_len);
    } else if (body[0] == STORE_OP_WAIT && len >= 9) {
        ms = store_get_u64(body + 1);
    }
    if (ms > STORE_MAX_TIMEOUT_MS) ms = STORE_MAX_TIMEOUT_MS;
    return store_now_ms() + (int64_t)ms;
}

/* Count a stranger and say so in the log at the 1st, 2nd, 4th, 8th... */
static void count_stranger(loom_store_server *s, const conn *c, const char *why)
{
    uint64_t n = __atomic_add_fetch(&s->refused, 1, __ATOMIC_RELAXED);
    if ((n & (n - 1)) == 0)
        loom_log(LOOM_LOG_WARNING, "rendezvous store on %s: dropped a connection from %s that %s (%llu so far)",
                 s->where, c->peer, why, (unsigned long long)n);
}

/* The hello at the head of c->in: admit c and answer with the server's proof, or refuse it
 * (a REFUSED answer, then the connection is closed). */
static void admit(loom_store_server *s, conn *c)
{
    const unsigned char *body = c->in + 4;
    unsigned char want[STORE_MAC_LEN], proof[STORE_MAC_LEN];
    if (body[0] != STORE_OP_HELLO || !store_mac(s->secret, "client", c->nonce, body + 1, want) ||
        !store_mac_equal(want, body + 1 + STORE_NONCE_LEN) ||
        !store_mac(s->secret, "server", body + 1, c->nonce, proof)) {
        c->why = "did not prove the job's secret";
        c->closing = true;
        begin_reply(c, STORE_REFUSED, 1);
        return;
    }
    unsigned char *p = begin_reply(c, STORE_OK, STORE_WELCOME_LEN);
    if (p) memcpy(p, proof, STORE_MAC_LEN);
    c->admitted = true;
}

/* Run the frames buffered on c while its previous replies are out and nothing is parked.
 * `expired`: a parked request whose deadline passed is answered TIMEOUT. Returns whether a
 * frame was consumed; *mutated when the table changed (parked requests may now be ready). */
static bool run_connection(loom_store_server *s, conn *c, bool expired, bool *mutated)
{
    bool progress = false;
    while (!c->dead && !c->closing && c->out_len == 0) {
        size_t frame = head_frame_size(c);
        if (frame == SIZE_MAX) {
            if (!c->admitted) c->why = "sent something other than the store's hello";
            c->dead = true;
            break;
        }
        if (c->in_len < frame) break;
        if (!c->admitted) {
            admit(s, c);
            consume_head(c, frame);
            flush_out(c);
            continue;
        }
        int r = run_request(s, c, c->in + 4, frame - 4, expired && c->parked, mutated);
        if (r == RUN_BAD) {
            c->dead = true;
            break;
        }
        if (r == RUN_PARKED) {
            if (!c->parked) {
                c->parked = true;
                c->deadline_ms = request_deadline(c->in + 4, frame - 4);
            }
            break;
        }
        c->parked = false;
        consume_head(c, frame);
        progress = true;
        flush_out(c);
    }
    return progress;
}

/* Run every connection until nothing moves: a SET/ADD may satisfy parked requests, whose
 * connections may hold more frames. GET and WAIT change nothing, so this settles. A parked
 * request is looked at again only after the table changed (`changed` on entry: it did). */
static void run_all(loom_store_server *s, bool changed)
{
    for (;;) {
        bool mutated = false, progress = false;
        for (size_t i = 0; i < s->nconns; i++) {
            conn *c = s->conns[i];
            if (c->parked && !changed) continue;
            if (run_connection(s, c, false, &mutated)) progress = true;
        }
        if (!progress && !mutated) return;
        changed = mutated;
    }
}

/* Answer TIMEOUT to the parked requests whose deadline passed; whether the table changed
 * (by the frames that followed them on their connections). */
static bool expire_parked(loom_store_server *s, int64_t now)
{
    bool mutated = false;
    for (size_t i = 0; i < s->nconns; i++) {
        conn *c = s->conns[i];
        if (c->parked && !c->dead && c->deadline_ms <= now) run_connection(s, c, true, &mutated);
    }
    return mutated;
}

/* ------------------------------------------------------------------------------------------ */
/* The thread.                                                                               */

/* Close c; a connection that never proved the secret is counted as a stranger. */
static void close_conn(loom_store_server *s, conn *c, bool stopping)
{
    if (!c->admitted && !stopping) count_stranger(s, c, c->why ? c->why : "closed before proving the job's secret");
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Make room for a new connection still to prove the secret: when max_pending wait already,
 * the oldest of them goes. */
static void evict_oldest_pending(loom_store_server *s)
{
    size_t pending = 0, oldest = SIZE_MAX;
    for (size_t i = 0; i < s->nconns; i++) {
        const conn *c = s->conns[i];
        if (c->admitted) continue;
        pending++;
        if (oldest == SIZE_MAX || c->admit_by_ms < s->conns[oldest]->admit_by_ms) oldest = i;
    }
    if (pending < s->limits.max_pending || oldest == SIZE_MAX) return;
    conn *c = s->conns[oldest];
    c->why = "was still to prove the job's secret when newer connections came";
    close_conn(s, c, false);
    memmove(s->conns + oldest, s->conns + oldest + 1, (s->nconns - oldest - 1) * sizeof *s->conns);
    s->nconns--;
}

static void describe_peer(int fd, char *out, size_t size)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername(fd, (struct sockaddr *)&a, &len) == 0) {
        if (a.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&a)->sin_port);
        } else if (a.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
        }
    }
    store_format_address(out, size, host, port);
}

static void accept_clients(loom_store_server *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a while rather than spin. */
                s->accept_paused_until = store_now_ms() + 100;
                loom_log(LOOM_LOG_WARNING, "rendezvous store on %s: cannot accept a connection: %s", s->where,
                         strerror(errno));
            }
            return;
        }
        if (s->nconns >= s->limits.max_connections) {
            /* Full: closed at once, so the descriptors in use stay bounded. */
            close(fd);
            uint64_t n = ++s->turned_away;
            if ((n & (n - 1)) == 0)
                loom_log(LOOM_LOG_WARNING,
                         "rendezvous store on %s: %zu connections are open, the most it keeps; closed a new one "
                         "(%llu so far)",
                         s->where, s->nconns, (unsigned long long)n);
            continue;
        }
        evict_oldest_pending(s);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (c && s->nconns == s->conns_cap) {
            size_t cap = s->conns_cap ? s->conns_cap * 2 : 16;
            conn **grown = realloc(s->conns, cap * sizeof *grown);
            if (grown) {
                s->conns = grown;
                s->conns_cap = cap;
            }
        }
        if (!c || s->nconns == s->conns_cap) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->admit_by_ms = store_now_ms() + (int64_t)(s->limits.auth_timeout * 1000.0);
        describe_peer(fd, c->peer, sizeof c->peer);
        unsigned char *p = NULL;
        if (!store_random(c->nonce, sizeof c->nonce) || !(p = begin_reply(c, 0, STORE_CHALLENGE_LEN))) {
            close(fd);
            free(c->out);
            free(c);
            continue;
        }
        /* The challenge is a frame like a reply: its first byte is the magic's 'L'. */
        memcpy(p - 1, STORE_MAGIC, STORE_MAGIC_LEN);
        memcpy(p - 1 + STORE_MAGIC_LEN, c->nonce, STORE_NONCE_LEN);
        flush_out(c);
        s->conns[s->nconns++] = c;
    }
}

/* Mark the strangers whose time to prove the secret is up, and the admitted connections that
 * left a frame half-sent for longer than frame_timeout; returns the earliest moment one of
 * these may next fall due (INT64_MAX: none). */
static int64_t enforce_deadlines(loom_store_server *s, int64_t now)
{
    int64_t next = INT64_MAX;
    int64_t frame_ms = (int64_t)(s->limits.frame_timeout * 1000.0);
    for (size_t i = 0; i < s->nconns; i++) {
        conn *c = s->conns[i];
        if (c->dead) continue;
        if (!c->admitted) {
            if (c->admit_by_ms <= now) {
                c->why = "did not prove the job's secret in time";
                c->dead = true;
            } else if (c->admit_by_ms < next) {
                next = c->admit_by_ms;
            }
            continue;
        }
        size_t need = head_frame_size(c);
        bool partial = c->in_len > 0 && need != SIZE_MAX && c->in_len < need;
        if (!partial) {
            c->partial_since_ms = 0;
            continue;
        }
        if (!c->partial_since_ms) c->partial_since_ms = now;
        if (now - c->partial_since_ms >= frame_ms) {
            loom_log(LOOM_LOG_WARNING,
                     "rendezvous store on %s: dropped the connection from %s: it left a frame half-sent for %g s",
                     s->where, c->peer, s->limits.frame_timeout);
            c->dead = true;
        } else if (c->partial_since_ms + frame_ms < next) {
            next = c->partial_since_ms + frame_ms;
        }
    }
    return next;
}

static void *serve(void *arg)
{
    loom_store_server *s = arg;
    struct pollfd *fds = NULL;
    size_t fds_cap = 0;
    for (;;) {
        int64_t now = store_now_ms();
        run_all(s, expire_parked(s, now));
        int64_t due = enforce_deadlines(s, now);

        /* Drop the connections that are done. */
        size_t kept = 0;
        for (size_t i = 0; i < s->nconns; i++) {
            conn *c = s->conns[i];
            if (c->dead || (c->closing && c->out_len == 0) ||
                (c->eof && !c->parked && c->out_len == 0 && head_frame_size(c) > c->in_len))
                close_conn(s, c, false);
            else
                s->conns[kept++] = c;
        }
        s->nconns = kept;

        size_t n = 2 + s->nconns;
        if (n > fds_cap) {
            struct pollfd *f = realloc(fds, n * 2 * sizeof *f);
            if (!f) {
                loom_log(LOOM_LOG_ERROR, "rendezvous store on %s: out of memory", s->where);
                break;
            }
            fds = f;
            fds_cap = n * 2;
        }
        int64_t wake_at = due;
        fds[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        if (s->accept_paused_until > now) {
            fds[1].fd = -1;
            wake_at = s->accept_paused_until;
        }
        for (size_t i = 0; i < s->nconns; i++) {
            conn *c = s->conns[i];
            short ev = c->eof ? 0 : POLLRDHUP;
            if (wants_input(c)) ev |= POLLIN;
            if (c->out_len > c->out_sent) ev |= POLLOUT;
            fds[2 + i] = (struct pollfd){.fd = c->fd, .events = ev};
            if (c->parked && c->deadline_ms < wake_at) wake_at = c->deadline_ms;
        }
        int timeout = -1;
        if (wake_at != INT64_MAX) {
            int64_t ms = wake_at - now;
            timeout = ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
        }
        int r = poll(fds, n, timeout);
        if (r < 0) {
            if (errno == EINTR) continue;
            loom_log(LOOM_LOG_ERROR, "rendezvous store on %s: poll failed: %s", s->where, strerror(errno));
            break;
        }
        if (fds[0].revents) break;
        size_t polled = s->nconns;
        for (size_t i = 0; i < polled; i++) {
            conn *c = s->conns[i];
            short re = fds[2 + i].revents;
            if (!re) continue;
            if (re & POLLOUT) flush_out(c);
            if (re & POLLIN) read_input(c);
            if (re & (POLLERR | POLLNVAL)) c->dead = true;
            /* Hung up while we are not reading (a parked request, or input queued): gone. */
            if ((re & (POLLHUP | POLLRDHUP)) && !(re & POLLIN)) c->eof = true;
            if (c->eof && c->parked) c->dead = true; /* nobody waits for the answer */
        }
        if (fds[1].fd >= 0 && (fds[1].revents & POLLIN)) accept_clients(s);
    }
    free(fds);
    for (size_t i = 0; i < s->nconns; i++) close_conn(s, s->conns[i], true);
    s->nconns = 0;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop.                                                                           */

static int listen_on(const struct sockaddr *sa, socklen_t len, int *err)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, sa, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

/* The limits asked for, with the defaults (store.h) for what was left 0. */
static loom_store_limits fill_limits(const loom_store_limits *asked)
{
    loom_store_limits l = asked ? *asked : (loom_store_limits){0};
    if (!l.max_connections) {
        /* Half the descriptors the process may open: the rest stay for checkpoints and peers. */
        struct rlimit rl;
        size_t fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur : 8192;
        l.max_connections = fds / 2 < 16 ? 16 : fds / 2 > 4096 ? 4096 : fds / 2;
    }
    if (!l.max_pending) l.max_pending = 64;
    if (!(l.auth_timeout > 0)) l.auth_timeout = 5.0;
    if (!(l.frame_timeout > 0)) l.frame_timeout = 120.0;
    if (!l.max_stored) l.max_stored = 1ull << 30;
    return l;
}

loom_status loom_store_server_start(const char *addr, int port, const char *secret, const loom_store_limits *limits,
                                    loom_store_server **out)
{
    if (!out) return loom_error(LOOM_E_INVALID, "loom_store_server_start: out is NULL");
    *out = NULL;
    bool any = !addr || !*addr || strcmp(addr, "*") == 0;
    char where[300];
    store_format_address(where, sizeof where, any ? "*" : addr, port);
    if (port < 0 || port > 65535)
        return loom_error(LOOM_E_INVALID, "cannot serve the rendezvous store on %s: port %d is out of range", where,
                          port);

    int fd = -1, err = 0;
    if (any) {
        /* IPv6 wildcard first (it takes IPv4 too when the system allows), then IPv4. */
        struct sockaddr_in6 a6 = {
            .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
        fd = listen_on((const struct sockaddr *)&a6, sizeof a6, &err);
        if (fd < 0 && err != EADDRINUSE) {
            struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                     .sin_addr.s_addr = htonl(INADDR_ANY)};
            fd = listen_on((const struct sockaddr *)&a4, sizeof a4, &err);
        }
    } else {
        char service[16];
        snprintf(service, sizeof service, "%d", port);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
        struct addrinfo *res = NULL;
        int g = getaddrinfo(addr, service, &hints, &res);
        if (g != 0)
            return loom_error(LOOM_E_COMM, "cannot serve the rendezvous store on %s: cannot resolve '%s': %s", where,
                              addr, gai_strerror(g));
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
            fd = listen_on(ai->ai_addr, ai->ai_addrlen, &err);
        freeaddrinfo(res);
    }
    if (fd < 0) {
        if (err == EADDRINUSE)
            return loom_error(LOOM_E_COMM, "cannot serve the rendezvous store on %s: address in use", where);
        if (err == EADDRNOTAVAIL)
            return loom_error(
                LOOM_E_COMM,
                "cannot serve the rendezvous store on %s: not an address of this host (set LOOM_STORE_BIND "
                "to the local address to listen on)",
                where);
        return loom_error(LOOM_E_COMM, "cannot serve the rendezvous store on %s: %s", where, strerror(err));
    }

    loom_store_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return loom_error(LOOM_E_NOMEM, "cannot serve the rendezvous store on %s: out of memory", where);
    }
    s->listen_fd = fd;
    s->limits = fill_limits(limits);
    if (secret && *secret && !(s->secret = strdup(secret))) {
        close(fd);
        free(s);
        return loom_error(LOOM_E_NOMEM, "cannot serve the rendezvous store on %s: out of memory", where);
    }
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    s->port = port;
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) == 0) {
        if (bound.ss_family == AF_INET6)
            s->port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        else if (bound.ss_family == AF_INET)
            s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
    store_format_address(s->where, sizeof s->where, any ? "*" : addr, s->port);
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        free(s->secret);
        free(s);
        return loom_error(LOOM_E_COMM, "cannot serve the rendezvous store on %s: pipe: %s", where, strerror(e));
    }
    int e = pthread_create(&s->thread, NULL, serve, s);
    if (e != 0) {
        close(fd);
        close(s->wake[0]);
        close(s->wake[1]);
        free(s->secret);
        free(s);
        return loom_error(LOOM_E_COMM, "cannot serve the rendezvous store on %s: cannot start its thread: %s", where,
                          strerror(e));
    }
    *out = s;
    return LOOM_OK;
}

int loom_store_server_port(const loom_store_server *server) { return server ? server->port : -1; }

uint64_t loom_store_server_refused(const loom_store_server *server)
{
    return server ? __atomic_load_n(&server->refused, __ATOMIC_RELAXED) : 0;
}

void loom_store_server_stop(loom_store_server *server)
{
    if (!server) return;
    ssize_t w;
    do {
        w = write(server->wake[1], "x", 1);
    } while (w < 0 && errno == EINTR);
    pthread_join(server->thread, NULL);
    if (server->refused || server->turned_away)
        loom_log(LOOM_LOG_INFO,
                 "rendezvous store on %s: dropped %llu connection(s) that did not prove the job's secret and closed "
                 "%llu over the connection limit",
                 server->where, (unsigned long long)server->refused, (unsigned long long)server->turned_away);
    close(server->listen_fd);
    close(server->wake[0]);
    close(server->wake[1]);
    free_table(server);
    store_forget(server->secret);
    free(server->secret);
    free(server->conns);
    free(server);
}
