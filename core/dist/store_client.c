/*
 * store_client.c - the rendezvous store's client (protocol in store.h) and the rendezvous of
 * the ranks of a run. Every socket wait is a poll() bounded by the operation's deadline;
 * sends use MSG_NOSIGNAL, so a server that went away is an error, never SIGPIPE or a hang.
 * A connection whose exchange failed half-way is closed (it may be out of step); the next
 * operation opens another. Every new connection proves the job's secret first (store.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "host.h"
#include "store.h"
#include "store_internal.h"

#define IDLE_MAX 8               /* connections kept for reuse                         */
#define DEFAULT_OP_TIMEOUT 30.0  /* set/add deadline when connect got no timeout        */
#define REPLY_GRACE 2.0          /* seconds past a server-side wait before giving up    */

struct loom_store_client {
    char host[256];
    int port;
    char where[300];
    double op_timeout;
    char *secret; /* NULL: the empty key */
    pthread_mutex_t lock;
    int idle[IDLE_MAX];
    int nidle;
};

/* Seconds as given, clamped to [0, 30 days]; a negative or NaN timeout is `fallback`. */
static double clamp_timeout(double t, double fallback)
{
    if (isnan(t) || t < 0) t = fallback;
    if (t > (double)STORE_MAX_TIMEOUT_MS / 1000.0) t = (double)STORE_MAX_TIMEOUT_MS / 1000.0;
    return t;
}

static int ms_until(double deadline)
{
    double left = deadline - store_now();
    if (left <= 0) return 0;
    if (left > 1e6) return 1000000000;
    return (int)ceil(left * 1000.0);
}

/* Printable key for messages: at most 120 bytes. */
static void show_key(char *out, size_t size, const char *key)
{
    size_t n = strlen(key);
    if (n > 120)
        snprintf(out, size, "%.117s...", key);
    else
        snprintf(out, size, "%s", key);
}

/* ------------------------------------------------------------------------------------------ */
/* Connecting.                                                                               */

/* A name lookup that honours a deadline: getaddrinfo() itself cannot be interrupted, so it
 * runs on a detached thread; whoever of the two finishes last frees the lookup. */
typedef struct lookup {
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    int refs;
    bool done;
    int gai;
    struct addrinfo *res;
    struct addrinfo hints;
    char host[256];
    char service[16];
} lookup;

static void lookup_unref(lookup *l)
{
    pthread_mutex_lock(&l->lock);
    int refs = --l->refs;
    pthread_mutex_unlock(&l->lock);
    if (refs) return;
    if (l->res) freeaddrinfo(l->res);
    pthread_cond_destroy(&l->done_cv);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static void *lookup_thread(void *arg)
{
    lookup *l = arg;
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(l->host, l->service, &l->hints, &res);
    pthread_mutex_lock(&l->lock);
    l->gai = gai;
    l->res = gai == 0 ? res : NULL;
    l->done = true;
    pthread_cond_signal(&l->done_cv);
    pthread_mutex_unlock(&l->lock);
    lookup_unref(l);
    return NULL;
}

static int resolve(const char *host, const char *service, double deadline, struct addrinfo **res)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    int gai = getaddrinfo(host, service, &hints, res); /* a literal: no lookup, no wait */
    if (gai != EAI_NONAME) return gai;
    lookup *l = calloc(1, sizeof *l);
    if (!l) return EAI_MEMORY;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&l->done_cv, &attr);
    pthread_condattr_destroy(&attr);
    l->refs = 2;
    l->hints = (struct addrinfo){.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    snprintf(l->host, sizeof l->host, "%s", host);
    snprintf(l->service, sizeof l->service, "%s", service);
    pthread_t t;
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &ta, lookup_thread, l) != 0) {
        pthread_attr_destroy(&ta);
        l->refs = 1;
        lookup_unref(l);
        return EAI_SYSTEM;
    }
    pthread_attr_destroy(&ta);
    double d = deadline < store_now() + 1e6 ? deadline : store_now() + 1e6;
    struct timespec until = {(time_t)d, (long)((d - floor(d)) * 1e9)};
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&l->lock);
    while (!l->done && pthread_cond_timedwait(&l->done_cv, &l->lock, &until) == 0) {
    }
    gai = l->done ? l->gai : EAI_AGAIN;
    if (l->done) {
        *res = l->res;
        l->res = NULL;
    }
    pthread_mutex_unlock(&l->lock);
    lookup_unref(l);
    return gai;
}

/* One attempt at every address of host:port. Returns a connected non-blocking socket, or -1
 * with *err (an errno) or *gai (a getaddrinfo code) saying why. */
static int connect_once(const char *host, int port, double deadline, int *err, int *gai)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo *res = NULL;
    *gai = resolve(host, service, deadline, &res);
    if (*gai != 0) return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            *err = errno;
            continue;
        }
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int pr;
            do {
                pr = poll(&p, 1, ms_until(deadline));
            } while (pr < 0 && errno == EINTR);
            int so = 0;
            socklen_t len = sizeof so;
            if (pr == 0) {
                so = ETIMEDOUT;
            } else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len) != 0) {
                so = errno;
            }
            r = so ? -1 : 0;
            errno = so;
        }
        if (r != 0) {
            *err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void describe_failure(char *out, size_t size, int err, int gai)
{
    if (gai)
        snprintf(out, size, "cannot resolve the host: %s", gai_strerror(gai));
    else
        snprintf(out, size, "%s", strerror(err ? err : ETIMEDOUT));
}

enum { HS_OK, HS_RETRY, HS_FATAL };
static int handshake(loom_store_client *c, int fd, double deadline, loom_status *st);

/* A first connection: retry with backoff until the deadline (the server may start later). */
static loom_status connect_retrying(loom_store_client *c, double timeout, int *out)
{
    double start = store_now(), deadline = start + timeout, backoff = 0.01;
    int err = 0, gai = 0;
    for (;;) {
        int fd = connect_once(c->host, c->port, deadline, &err, &gai);
        if (fd >= 0) {
            loom_status st = LOOM_OK;
            int hs = handshake(c, fd, deadline, &st);
            if (hs == HS_OK) {
                *out = fd;
                return LOOM_OK;
            }
            close(fd);
            if (hs == HS_FATAL) return st;
            err = ECONNRESET;
        }
        double now = store_now();
        if (now >= deadline) break;
        double nap = fmin(backoff, deadline - now);
        struct timespec ts = {(time_t)nap, (long)((nap - floor(nap)) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        backoff = fmin(backoff * 2, 1.0);
    }
    char why[200];
    describe_failure(why, sizeof why, err, gai);
    return loom_error(LOOM_E_TIMEOUT,
                      "cannot reach the rendezvous store at %s after %g s (is rank 0 running? is MASTER_PORT right?); "
                      "last error: %s",
                      c->where, timeout, why);
}

/* A connection for one operation: an idle one, or a new one (one attempt: the server was
 * there; refusing now means it is gone). */
static loom_status acquire(loom_store_client *c, double deadline, int *fd)
{
    pthread_mutex_lock(&c->lock);
    *fd = c->nidle ? c->idle[--c->nidle] : -1;
    pthread_mutex_unlock(&c->lock);
    if (*fd >= 0) return LOOM_OK;
    int err = 0, gai = 0;
    *fd = connect_once(c->host, c->port, deadline, &err, &gai);
    if (*fd >= 0) {
        loom_status st = LOOM_OK;
        int hs = handshake(c, *fd, deadline, &st);
        if (hs == HS_OK) return LOOM_OK;
        close(*fd);
        *fd = -1;
        if (hs == HS_FATAL) return st;
        err = ECONNRESET;
    }
    char why[200];
    describe_failure(why, sizeof why, err, gai);
    return loom_error(LOOM_E_COMM, "cannot reach the rendezvous store at %s (did rank 0 exit?): %s", c->where, why);
}

/* Hand a connection back after an operation: kept if the exchange completed, else closed. */
static void release(loom_store_client *c, int fd, bool ok)
{
    if (fd < 0) return;
    if (ok) {
        pthread_mutex_lock(&c->lock);
        if (c->nidle < IDLE_MAX) {
            c->idle[c->nidle++] = fd;
            fd = -1;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (fd >= 0) close(fd);
}

/* ------------------------------------------------------------------------------------------ */
/* Moving bytes.                                                                             */

typedef struct exchange {
    loom_store_client *c;
    int fd;
    double deadline;
    double waited;      /* seconds the caller allowed, for messages */
    const char *what;   /* "get 'key'"                               */
    char key[128];      /* the key, shortened for messages           */
} exchange;

static loom_status wait_socket(exchange *x, short events)
{
    struct pollfd p = {.fd = x->fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, ms_until(x->deadline));
        if (r > 0) return LOOM_OK; /* ready, or an error the next send/recv reports */
        if (r == 0)
            return loom_error(LOOM_E_TIMEOUT, "the rendezvous store at %s did not answer %s within %g s", x->c->where,
                              x->what, x->waited);
        if (errno != EINTR)
            return loom_error(LOOM_E_COMM, "rendezvous store at %s: %s: poll: %s", x->c->where, x->what,
                              strerror(errno));
    }
}

static loom_status lost(exchange *x, int err)
{
    return loom_error(LOOM_E_COMM, "lost the connection to the rendezvous store at %s during %s: %s", x->c->where,
                      x->what, err ? strerror(err) : "the server closed it");
}

static loom_status send_all(exchange *x, const void *data, size_t size)
{
    const unsigned char *p = data;
    while (size) {
        ssize_t n = send(x->fd, p, size, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            size -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            loom_status st = wait_socket(x, POLLOUT);
            if (st) return st;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return lost(x, n < 0 ? errno : 0);
        }
    }
    return LOOM_OK;
}

/* Receive size bytes into data (NULL: discard them). */
static loom_status recv_all(exchange *x, void *data, size_t size)
{
    unsigned char scratch[4096];
    unsigned char *p = data;
    while (size) {
        size_t want = p ? size : (size < sizeof scratch ? size : sizeof scratch);
        ssize_t n = recv(x->fd, p ? p : scratch, want, 0);
        if (n > 0) {
            if (p) p += n;
            size -= (size_t)n;
        } else if (n == 0) {
            return lost(x, 0);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            loom_status st = wait_socket(x, POLLIN);
            if (st) return st;
        } else if (errno != EINTR) {
            return lost(x, errno);
        }
    }
    return LOOM_OK;
}

/* Read a reply's header: its body length and status. */
static loom_status recv_reply(exchange *x, uint32_t *body_len, uint8_t *status)
{
    unsigned char head[5];
    loom_status st = recv_all(x, head, sizeof head);
    if (st) return st;
    *body_len = store_get_u32(head);
    *status = head[4];
    if (*body_len == 0 || *body_len > LOOM_STORE_MAX_FRAME || *status > STORE_REFUSED)
        return loom_error(LOOM_E_COMM,
                          "rendezvous store at %s: malformed reply to %s (is something else on that port?)",
                          x->c->where, x->what);
    return LOOM_OK;
}

static loom_status malformed(exchange *x)
{
    return loom_error(LOOM_E_COMM, "rendezvous store at %s: malformed reply to %s (is something else on that port?)",
                      x->c->where, x->what);
}

/* Prove the secret on a new connection (store.h). HS_RETRY: the server closed it without
 * a word (it was full, or is going away); HS_FATAL: *st says why it cannot work. */
static int handshake(loom_store_client *c, int fd, double deadline, loom_status *st)
{
    exchange x = {.c = c, .fd = fd, .deadline = deadline, .waited = fmax(deadline - store_now(), 0.0),
                  .what = "the handshake"};
    unsigned char challenge[4 + STORE_CHALLENGE_LEN];
    if ((*st = recv_all(&x, challenge, 4)) != LOOM_OK) return *st == LOOM_E_COMM ? HS_RETRY : HS_FATAL;
    if (store_get_u32(challenge) != STORE_CHALLENGE_LEN || (*st = recv_all(&x, challenge + 4, STORE_CHALLENGE_LEN)) ||
        memcmp(challenge + 4, STORE_MAGIC, STORE_MAGIC_LEN) != 0) {
        *st = loom_error(LOOM_E_COMM,
                         "%s does not answer as a loom rendezvous store (is something else on that port, or an older "
                         "loom?)",
                         c->where);
        return HS_FATAL;
    }
    const unsigned char *server_nonce = challenge + 4 + STORE_MAGIC_LEN;
    unsigned char hello[4 + STORE_HELLO_LEN];
    store_put_u32(hello, STORE_HELLO_LEN);
    hello[4] = STORE_OP_HELLO;
    unsigned char *client_nonce = hello + 5;
    if (!store_random(client_nonce, STORE_NONCE_LEN) ||
        !store_mac(c->secret, "client", server_nonce, client_nonce, hello + 5 + STORE_NONCE_LEN)) {
        *st = loom_error(LOOM_E_INTERNAL, "rendezvous store at %s: cannot compute the handshake", c->where);
        return HS_FATAL;
    }
    uint32_t len;
    uint8_t status;
    if ((*st = send_all(&x, hello, sizeof hello)) != LOOM_OK || (*st = recv_reply(&x, &len, &status)) != LOOM_OK)
        return *st == LOOM_E_COMM && !strstr(loom_error_message(), "malformed") ? HS_RETRY : HS_FATAL;
    if (status == STORE_REFUSED && len == 1) {
        *st = loom_error(LOOM_E_COMM,
                         "the rendezvous store at %s refused this process: its %s is not the job's (set the same "
                         "value for every rank, or none on a single node)",
                         c->where, LOOM_STORE_SECRET_ENV);
        return HS_FATAL;
    }
    unsigned char proof[STORE_MAC_LEN], want[STORE_MAC_LEN];
    if (status != STORE_OK || len != STORE_WELCOME_LEN || (*st = recv_all(&x, proof, sizeof proof)) != LOOM_OK ||
        !store_mac(c->secret, "server", client_nonce, server_nonce, want) || !store_mac_equal(proof, want)) {
        *st = loom_error(LOOM_E_COMM,
                         "the process serving %s does not know the job's secret (another job on this port?)", c->where);
        return HS_FATAL;
    }
    return HS_OK;
}

/* The answer FULL to a set or add. */
static loom_status full(exchange *x)
{
    return loom_error(LOOM_E_NOMEM, "rendezvous store at %s: %s: the store holds as many bytes as it may", x->c->where,
                      x->what);
}

/* Open an exchange: check the key, take a connection. */
static loom_status begin(loom_store_client *c, exchange *x, char *what, size_t what_size, const char *op,
                         const char *key, double wait_seconds)
{
    if (!c) return loom_error(LOOM_E_INVALID, "rendezvous store: %s on a NULL client", op);
    show_key(x->key, sizeof x->key, key ? key : "(null)");
    snprintf(what, what_size, "%s '%s'", op, x->key);
    if (!key || !*key)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: %s: the key is empty", c->where, what);
    if (strlen(key) > LOOM_STORE_MAX_KEY)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: %s: the key is longer than %u bytes", c->where, what,
                          LOOM_STORE_MAX_KEY);
    x->c = c;
    x->waited = wait_seconds;
    x->deadline = store_now() + wait_seconds;
    x->what = what;
    x->fd = -1;
    return LOOM_OK;
}

/* [u32 len][u8 op][u32 key_len][key] + extra bytes of the body, in a new buffer. */
static unsigned char *request_head(uint8_t op, const char *key, size_t extra, size_t tail, size_t *size)
{
    size_t key_len = strlen(key);
    *size = 4 + 1 + 4 + key_len + extra;
    unsigned char *buf = malloc(*size);
    if (!buf) return NULL;
    store_put_u32(buf, (uint32_t)(1 + 4 + key_len + extra + tail));
    buf[4] = op;
    store_put_u32(buf + 5, (uint32_t)key_len);
    memcpy(buf + 9, key, key_len);
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Operations.                                                                               */

loom_status loom_store_set(loom_store_client *c, const char *key, const void *value, size_t size)
{
    exchange x;
    char what[160];
    loom_status st = begin(c, &x, what, sizeof what, "set", key, c ? c->op_timeout : 0);
    if (st) return st;
    if (size > LOOM_STORE_MAX_VALUE)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: %s: a value of %zu bytes is over the %u-byte limit",
                          c->where, what, size, LOOM_STORE_MAX_VALUE);
    if (size && !value) return loom_error(LOOM_E_INVALID, "rendezvous store at %s: %s: value is NULL", c->where, what);
    size_t head_size;
    unsigned char *head = request_head(STORE_OP_SET, key, 8, size, &head_size);
    if (!head) return loom_error(LOOM_E_NOMEM, "rendezvous store: %s: out of memory", what);
    store_put_u64(head + head_size - 8, size);
    uint32_t len = 0;
    uint8_t status = 0;
    if ((st = acquire(c, x.deadline, &x.fd)) == LOOM_OK && (st = send_all(&x, head, head_size)) == LOOM_OK &&
        (st = send_all(&x, value, size)) == LOOM_OK) {
        if ((st = recv_reply(&x, &len, &status)) == LOOM_OK && len == 1 && status == STORE_FULL)
            st = full(&x);
        else if (st == LOOM_OK && (len != 1 || status != STORE_OK))
            st = malformed(&x);
    }
    free(head);
    release(c, x.fd, st == LOOM_OK || (st == LOOM_E_NOMEM && len == 1 && status == STORE_FULL));
    return st;
}

loom_status loom_store_get(loom_store_client *c, const char *key, void *value, size_t capacity, size_t *size,
                           double timeout_seconds)
{
    exchange x;
    char what[160];
    double t = clamp_timeout(timeout_seconds, c ? c->op_timeout : 0);
    loom_status st = begin(c, &x, what, sizeof what, "get", key, t);
    if (st) return st;
    if (capacity && !value)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: %s: value is NULL", c->where, what);
    x.deadline += REPLY_GRACE + 0.05 * t; /* the server answers TIMEOUT itself at t */
    size_t head_size;
    unsigned char *head = request_head(STORE_OP_GET, key, 8, 0, &head_size);
    if (!head) return loom_error(LOOM_E_NOMEM, "rendezvous store: %s: out of memory", what);
    store_put_u64(head + head_size - 8, (uint64_t)llround(t * 1000.0));
    uint32_t len = 0;
    uint8_t status = 0;
    if ((st = acquire(c, x.deadline, &x.fd)) == LOOM_OK && (st = send_all(&x, head, head_size)) == LOOM_OK &&
        (st = recv_reply(&x, &len, &status)) == LOOM_OK) {
        if (status == STORE_TIMEOUT && len == 1) {
            st = loom_error(LOOM_E_TIMEOUT, "timed out after %g s waiting for key '%s' in the rendezvous store at %s",
                            t, x.key, c->where);
        } else if (status != STORE_OK || len < 9) {
            st = malformed(&x);
        } else {
            unsigned char lenbuf[8];
            if ((st = recv_all(&x, lenbuf, 8)) == LOOM_OK) {
                uint64_t vlen = store_get_u64(lenbuf);
                if (vlen != (uint64_t)len - 9) {
                    st = malformed(&x);
                } else {
                    size_t copy = vlen < capacity ? (size_t)vlen : capacity;
                    if ((st = recv_all(&x, value, copy)) == LOOM_OK &&
                        (st = recv_all(&x, NULL, vlen - copy)) == LOOM_OK && size)
                        *size = (size_t)vlen;
                }
            }
        }
    }
    free(head);
    /* A TIMEOUT answer leaves the connection in step. */
    release(c, x.fd, st == LOOM_OK || (st == LOOM_E_TIMEOUT && status == STORE_TIMEOUT && len == 1));
    return st;
}

loom_status loom_store_add(loom_store_client *c, const char *key, int64_t delta, int64_t *value)
{
    exchange x;
    char what[160];
    loom_status st = begin(c, &x, what, sizeof what, "add", key, c ? c->op_timeout : 0);
    if (st) return st;
    size_t head_size;
    unsigned char *head = request_head(STORE_OP_ADD, key, 8, 0, &head_size);
    if (!head) return loom_error(LOOM_E_NOMEM, "rendezvous store: %s: out of memory", what);
    store_put_u64(head + head_size - 8, (uint64_t)delta);
    uint32_t len = 0;
    uint8_t status = 0;
    if ((st = acquire(c, x.deadline, &x.fd)) == LOOM_OK && (st = send_all(&x, head, head_size)) == LOOM_OK &&
        (st = recv_reply(&x, &len, &status)) == LOOM_OK) {
        if (status == STORE_BAD_VALUE && len == 1) {
            st = loom_error(LOOM_E_INVALID,
                            "rendezvous store at %s: %s: the value there is not an integer, or the sum overflows",
                            c->where, what);
        } else if (status == STORE_FULL && len == 1) {
            st = full(&x);
        } else if (status != STORE_OK || len != 9) {
            st = malformed(&x);
        } else {
            unsigned char buf[8];
            if ((st = recv_all(&x, buf, 8)) == LOOM_OK && value) *value = (int64_t)store_get_u64(buf);
        }
    }
    free(head);
    release(c, x.fd, st == LOOM_OK || (len == 1 && (st == LOOM_E_INVALID || st == LOOM_E_NOMEM)));
    return st;
}

loom_status loom_store_wait(loom_store_client *c, const char *const *keys, size_t n, double timeout_seconds)
{
    exchange x;
    char what[160];
    double t = clamp_timeout(timeout_seconds, c ? c->op_timeout : 0);
    if (!c) return loom_error(LOOM_E_INVALID, "rendezvous store: wait on a NULL client");
    if (n == 0) return LOOM_OK;
    if (!keys) return loom_error(LOOM_E_INVALID, "rendezvous store at %s: wait: keys is NULL", c->where);
    if (n > LOOM_STORE_MAX_WAIT_KEYS)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: wait for %zu keys: at most %u at once", c->where, n,
                          LOOM_STORE_MAX_WAIT_KEYS);
    size_t body = 1 + 8 + 4;
    for (size_t i = 0; i < n; i++) {
        loom_status st = begin(c, &x, what, sizeof what, "wait for", keys[i], t);
        if (st) return st;
        body += 4 + strlen(keys[i]);
        if (body > LOOM_STORE_MAX_FRAME)
            return loom_error(LOOM_E_INVALID,
                              "rendezvous store at %s: wait for %zu keys: the keys are too long together", c->where, n);
    }
    /* Messages name the first key ("wait for 'a'", or "wait for 'a' and 2 more keys"). */
    char shown[128];
    show_key(shown, sizeof shown, keys[0]);
    if (n == 1)
        snprintf(what, sizeof what, "wait for '%s'", shown);
    else
        snprintf(what, sizeof what, "wait for '%s' and %zu more key%s", shown, n - 1, n == 2 ? "" : "s");
    x.deadline += REPLY_GRACE + 0.05 * t;
    unsigned char *buf = malloc(4 + body);
    if (!buf) return loom_error(LOOM_E_NOMEM, "rendezvous store: %s: out of memory", what);
    store_put_u32(buf, (uint32_t)body);
    buf[4] = STORE_OP_WAIT;
    store_put_u64(buf + 5, (uint64_t)llround(t * 1000.0));
    store_put_u32(buf + 13, (uint32_t)n);
    size_t at = 17;
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(keys[i]);
        store_put_u32(buf + at, (uint32_t)k);
        memcpy(buf + at + 4, keys[i], k);
        at += 4 + k;
    }
    uint32_t len = 0;
    uint8_t status = 0;
    loom_status st;
    if ((st = acquire(c, x.deadline, &x.fd)) == LOOM_OK && (st = send_all(&x, buf, 4 + body)) == LOOM_OK &&
        (st = recv_reply(&x, &len, &status)) == LOOM_OK) {
        if (status == STORE_OK && len == 1) {
            /* done */
        } else if (status != STORE_TIMEOUT || len < 5) {
            st = malformed(&x);
        } else {
            unsigned char klen[4];
            char *missing = NULL;
            if ((st = recv_all(&x, klen, 4)) == LOOM_OK) {
                uint32_t k = store_get_u32(klen);
                if (k != len - 5 || !(missing = malloc((size_t)k + 1))) {
                    st = malformed(&x);
                } else if ((st = recv_all(&x, missing, k)) == LOOM_OK) {
                    missing[k] = '\0';
                    show_key(shown, sizeof shown, missing);
                    st = loom_error(LOOM_E_TIMEOUT,
                                    "timed out after %g s in %s in the rendezvous store at %s: key '%s' is missing", t,
                                    what, c->where, shown);
                    status = 0xff; /* in step */
                }
            }
            free(missing);
        }
    }
    free(buf);
    release(c, x.fd, st == LOOM_OK || status == 0xff);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Connect and close.                                                                        */

loom_status loom_store_connect(const char *addr, int port, const char *secret, double timeout_seconds,
                               loom_store_client **out)
{
    if (!out) return loom_error(LOOM_E_INVALID, "loom_store_connect: out is NULL");
    *out = NULL;
    if (!addr || !*addr) return loom_error(LOOM_E_INVALID, "rendezvous store: no address (is MASTER_ADDR set?)");
    if (strlen(addr) >= sizeof((loom_store_client *)0)->host)
        return loom_error(LOOM_E_INVALID, "rendezvous store: the address '%.60s...' is too long", addr);
    if (port <= 0 || port > 65535)
        return loom_error(LOOM_E_INVALID, "rendezvous store at %s: port %d is out of range (is MASTER_PORT right?)",
                          addr, port);
    loom_store_client *c = calloc(1, sizeof *c);
    if (!c) return loom_error(LOOM_E_NOMEM, "rendezvous store: out of memory");
    /* An IPv6 literal may come bracketed ("[::1]"). */
    size_t n = strlen(addr);
    if (n > 2 && addr[0] == '[' && addr[n - 1] == ']')
        snprintf(c->host, sizeof c->host, "%.*s", (int)(n - 2), addr + 1);
    else
        snprintf(c->host, sizeof c->host, "%s", addr);
    c->port = port;
    store_format_address(c->where, sizeof c->where, c->host, port);
    double t = clamp_timeout(timeout_seconds, 0);
    c->op_timeout = t > 0 ? t : DEFAULT_OP_TIMEOUT;
    if (t <= 0) t = 1.0;
    if (secret && *secret && !(c->secret = strdup(secret))) {
        free(c);
        return loom_error(LOOM_E_NOMEM, "rendezvous store: out of memory");
    }
    pthread_mutex_init(&c->lock, NULL);
    int fd = -1;
    loom_status st = connect_retrying(c, t, &fd);
    if (st) {
        pthread_mutex_destroy(&c->lock);
        store_forget(c->secret);
        free(c->secret);
        free(c);
        return st;
    }
    c->idle[c->nidle++] = fd;
    *out = c;
    return LOOM_OK;
}

void loom_store_close(loom_store_client *c)
{
    if (!c) return;
    for (int i = 0; i < c->nidle; i++) close(c->idle[i]);
    pthread_mutex_destroy(&c->lock);
    store_forget(c->secret);
    free(c->secret);
    free(c);
}

const char *loom_store_address(const loom_store_client *c) { return c ? c->where : ""; }

/* ------------------------------------------------------------------------------------------ */
/* Rendezvous.                                                                               */

/* "127.0.0.1", "::1", "localhost": rank 0 may listen on loopback alone. */
static bool loopback_literal(const char *addr)
{
    if (strcmp(addr, "localhost") == 0) return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

#define JOINED_KEY "loom/joined"
#define ALL_KEY "loom/joined/all"
#define GAVE_UP_KEY "loom/joined/gave_up"
#define WORLD_KEY "loom/world"

/* The world is rank 0's WORLD_SIZE. A rank told another would count towards the wrong
 * number, so rank 0 waits for ranks that never come and the comm plugin fails far from the
 * cause: it is refused at once, and its refusal goes into ALL_KEY ('!' and the message,
 * where "1" means all joined), so the ranks waiting for it stop at once too. */
static loom_status check_world(loom_store_client *client, int rank, int world, double deadline)
{
    char text[32];
    if (rank == 0) {
        snprintf(text, sizeof text, "%d", world);
        return loom_store_set(client, WORLD_KEY, text, strlen(text));
    }
    size_t size = 0;
    loom_status st = loom_store_get(client, WORLD_KEY, text, sizeof text - 1, &size, fmax(deadline - store_now(), 0.0));
    if (st) return st;
    text[size < sizeof text - 1 ? size : sizeof text - 1] = '\0';
    if (atoi(text) == world) return LOOM_OK;
    char refusal[512];
    snprintf(refusal, sizeof refusal,
             "!rendezvous at %s: rank %d has WORLD_SIZE=%d but rank 0 has WORLD_SIZE=%s (give every rank the same)",
             client->where, rank, world, text);
    loom_store_set(client, ALL_KEY, refusal, strlen(refusal));
    return loom_error(LOOM_E_INVALID, "%s", refusal + 1);
}

/* Wait in the server for ALL_KEY: LOOM_OK once every rank joined, LOOM_E_INVALID with the
 * message of a rank refused by check_world. */
static loom_status wait_for_all(loom_store_client *client, double timeout_seconds)
{
    char value[512];
    size_t size = 0;
    loom_status st = loom_store_get(client, ALL_KEY, value, sizeof value - 1, &size, timeout_seconds);
    if (st || size == 0 || value[0] != '!') return st;
    value[size < sizeof value - 1 ? size : sizeof value - 1] = '\0';
    return loom_error(LOOM_E_INVALID, "%s", value + 1);
}

loom_status loom_store_rendezvous(int rank, int world, const char *addr, int port, double timeout_seconds,
                                  loom_store_server **server_out, loom_store_client **client_out)
{
    if (server_out) *server_out = NULL;
    if (!client_out) return loom_error(LOOM_E_INVALID, "loom_store_rendezvous: client_out is NULL");
    *client_out = NULL;
    if (world < 1 || rank < 0 || rank >= world)
        return loom_error(LOOM_E_INVALID, "rendezvous: rank %d is outside a world of %d ranks (RANK, WORLD_SIZE)", rank,
                          world);
    if (rank == 0 && !server_out)
        return loom_error(LOOM_E_INVALID, "loom_store_rendezvous: rank 0 serves the store and needs server_out");
    if (!addr || !*addr) return loom_error(LOOM_E_INVALID, "rendezvous: no address (is MASTER_ADDR set?)");
    if (port <= 0 || port > 65535)
        return loom_error(LOOM_E_INVALID, "rendezvous: port %d is out of range (is MASTER_PORT right?)", port);
    const char *secret = getenv(LOOM_STORE_SECRET_ENV), *bind = getenv("LOOM_STORE_BIND");
    if (secret && !*secret) secret = NULL;
    if (!bind || !*bind) bind = addr;
    if (secret && strlen(secret) < LOOM_STORE_MIN_SECRET)
        return loom_error(LOOM_E_INVALID,
                          "%s has %zu characters; it needs at least %u (export %s=$(openssl rand -hex 32), the same "
                          "for every rank)",
                          LOOM_STORE_SECRET_ENV, strlen(secret), LOOM_STORE_MIN_SECRET, LOOM_STORE_SECRET_ENV);
    if (!secret && !(loopback_literal(addr) && (rank != 0 || loopback_literal(bind))))
        return loom_error(LOOM_E_INVALID,
                          "rendezvous at %s: %s is not set, and a store on an address other than loopback would admit "
                          "anyone who reaches it: export %s=$(openssl rand -hex 32) with the same value for every rank "
                          "(loom launch does this itself on a single node)",
                          addr, LOOM_STORE_SECRET_ENV, LOOM_STORE_SECRET_ENV);
    double timeout = clamp_timeout(timeout_seconds, DEFAULT_OP_TIMEOUT);
    double start = store_now(), deadline = start + timeout;

    loom_store_server *server = NULL;
    loom_status st;
    if (rank == 0) {
        st = loom_store_server_start(bind, port, secret, NULL, &server);
        if (st) {
            /* The message names the address the ranks were told, not the wildcard. */
            char where[300];
            store_format_address(where, sizeof where, addr, port);
            char why[512];
            const char *tail = strstr(loom_error_message(), ": ");
            snprintf(why, sizeof why, "%s", tail ? tail : "");
            return loom_error(st, "cannot serve the rendezvous store on %s%s", where, why);
        }
    }
    loom_store_client *client = NULL;
    st = loom_store_connect(addr, port, secret, timeout, &client);
    if (st) {
        loom_store_server_stop(server);
        return st;
    }

    if ((st = check_world(client, rank, world, deadline)) != LOOM_OK) goto fail;
    char key[64];
    int64_t mine = 0, count = 0;
    snprintf(key, sizeof key, "loom/rank/%d", rank);
    if ((st = loom_store_add(client, key, 1, &mine)) != LOOM_OK) goto fail;
    if (mine != 1) {
        st = loom_error(LOOM_E_INVALID, "rendezvous at %s: rank %d joined twice (two processes with RANK=%d?)",
                        client->where, rank, rank);
        goto fail;
    }
    if ((st = loom_store_add(client, JOINED_KEY, 1, &count)) != LOOM_OK) goto fail;
    if (count > world) {
        st = loom_error(LOOM_E_INVALID,
                        "rendezvous at %s: %lld ranks joined a world of %d (is WORLD_SIZE the same everywhere?)",
                        client->where, (long long)count, world);
        goto fail;
    }
    if (count == world && (st = loom_store_set(client, ALL_KEY, "1", 1)) != LOOM_OK) goto fail;
    /* A rank that is not coming (a second node not started, a WORLD_SIZE too large) would
     * otherwise be waited for in silence for the whole --ddp_timeout (30 minutes by default):
     * after a quarter of it, or 15 s, rank 0 says what it is waiting for, once. */
    const double patience = fmin(15.0, timeout / 4);
    st = wait_for_all(client, fmin(patience, fmax(deadline - store_now(), 0.0)));
    if (st == LOOM_E_TIMEOUT && deadline - store_now() > 0) {
        loom_error_clear();
        int64_t joined = 0;
        if (rank == 0 && loom_store_add(client, JOINED_KEY, 0, &joined) == LOOM_OK)
            loom_log(LOOM_LOG_WARNING,
                     "waiting for ranks: %lld of %d have joined the rendezvous at %s (giving up after "
                     "%g s in all: --ddp_timeout)",
                     (long long)joined, world, client->where, timeout);
        loom_error_clear();
        st = wait_for_all(client, fmax(deadline - store_now(), 0.0));
    }
    if (st == LOOM_E_TIMEOUT) {
        int64_t joined = 0, gave_up = 0;
        if ((st = loom_store_add(client, JOINED_KEY, 0, &joined)) != LOOM_OK) goto fail;
        loom_store_add(client, GAVE_UP_KEY, 1, &gave_up);
        if (rank == 0) {
            /* Keep serving a little so the ranks that joined read the count too (bounded). */
            double linger_end = store_now() + fmin(2.0, fmax(timeout, 0.1));
            while (gave_up < joined && store_now() < linger_end) {
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
                if (loom_store_add(client, GAVE_UP_KEY, 0, &gave_up) != LOOM_OK) break;
            }
        }
        st = loom_error(LOOM_E_TIMEOUT, "only %lld of %d ranks joined the rendezvous at %s within %g s",
                        (long long)joined, world, client->where, timeout);
        goto fail;
    }
    if (st) goto fail;
    if (server_out) *server_out = server;
    *client_out = client;
    return LOOM_OK;

fail:
    loom_store_close(client);
    loom_store_server_stop(server);
    return st;
}
