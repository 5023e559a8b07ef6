/* test_store.c - the rendezvous store (core/dist/store.h) in one process: a server thread and
 * clients over real sockets on 127.0.0.1, ephemeral ports. set/get, a get parked until
 * another thread sets, atomic add from many threads, wait on several keys, timeouts, a port
 * nobody serves, a server stopped under a waiting client, garbage on the wire, the host
 * service table. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <loom/comm.h>

#include "error.h"
#include "host.h"
#include "store.h"
#include "store_internal.h"
#include "test_util.h"

static loom_store_server *start_server(int *port)
{
    loom_store_server *s = NULL;
    loom_status st = loom_store_server_start("127.0.0.1", 0, NULL, NULL, &s);
    if (st) {
        fprintf(stderr, "server: %s\n", loom_error_message());
        abort();
    }
    *port = loom_store_server_port(s);
    return s;
}

static loom_store_client *connect_to(int port)
{
    loom_store_client *c = NULL;
    if (loom_store_connect("127.0.0.1", port, NULL, 5.0, &c) != LOOM_OK) {
        fprintf(stderr, "connect: %s\n", loom_error_message());
        abort();
    }
    return c;
}

static int has(const char *text, const char *part)
{
    return strstr(text, part) != NULL;
}

/* ------------------------------------------------------------------------------------------ */

static void test_set_get(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    CHECK(port > 0);
    loom_store_client *c = connect_to(port);
    char buf[64] = {0};
    size_t size = 0;

    CHECK(loom_store_set(c, "a", "hello", 5) == LOOM_OK);
    CHECK(loom_store_get(c, "a", buf, sizeof buf, &size, 1.0) == LOOM_OK);
    CHECK(size == 5 && memcmp(buf, "hello", 5) == 0);

    /* Overwrite; a short buffer gets the prefix and the full size. */
    CHECK(loom_store_set(c, "a", "a longer value", 14) == LOOM_OK);
    memset(buf, 0, sizeof buf);
    CHECK(loom_store_get(c, "a", buf, 4, &size, 1.0) == LOOM_OK);
    CHECK(size == 14 && memcmp(buf, "a lo", 4) == 0 && buf[4] == 0);
    CHECK(loom_store_get(c, "a", NULL, 0, &size, 1.0) == LOOM_OK && size == 14);

    /* Empty and binary values. */
    CHECK(loom_store_set(c, "empty", NULL, 0) == LOOM_OK);
    size = 99;
    CHECK(loom_store_get(c, "empty", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 0);
    unsigned char bin[5] = {0, 255, 0, 1, 0};
    CHECK(loom_store_set(c, "bin", bin, sizeof bin) == LOOM_OK);
    CHECK(loom_store_get(c, "bin", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 5 && memcmp(buf, bin, 5) == 0);

    /* A large value. */
    size_t big = 6u << 20;
    unsigned char *v = malloc(big), *w = malloc(big);
    for (size_t i = 0; i < big; i++)
        v[i] = (unsigned char)(i * 2654435761u >> 13);
    CHECK(loom_store_set(c, "big", v, big) == LOOM_OK);
    CHECK(loom_store_get(c, "big", w, big, &size, 2.0) == LOOM_OK && size == big && memcmp(v, w, big) == 0);
    free(v);
    free(w);

    /* Another client sees the same table; keys with odd bytes are keys. */
    loom_store_client *d = connect_to(port);
    CHECK(loom_store_get(d, "a", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 14);
    CHECK(loom_store_set(d, "k/ \xe2\x9c\x93/\n", "x", 1) == LOOM_OK);
    CHECK(loom_store_get(c, "k/ \xe2\x9c\x93/\n", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 1);

    /* Bad arguments. */
    CHECK(loom_store_set(c, "", "x", 1) == LOOM_E_INVALID);
    CHECK(loom_store_set(c, NULL, "x", 1) == LOOM_E_INVALID);
    CHECK(loom_store_set(c, "x", NULL, 3) == LOOM_E_INVALID);
    CHECK(loom_store_set(c, "x", "x", (size_t)LOOM_STORE_MAX_VALUE + 1) == LOOM_E_INVALID);
    char *long_key = malloc(LOOM_STORE_MAX_KEY + 2);
    memset(long_key, 'k', LOOM_STORE_MAX_KEY + 1);
    long_key[LOOM_STORE_MAX_KEY + 1] = '\0';
    CHECK(loom_store_set(c, long_key, "x", 1) == LOOM_E_INVALID);
    long_key[LOOM_STORE_MAX_KEY] = '\0'; /* the longest key is fine */
    CHECK(loom_store_set(c, long_key, "x", 1) == LOOM_OK);
    CHECK(loom_store_get(d, long_key, buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 1);
    free(long_key);
    CHECK(has(loom_store_address(c), "127.0.0.1:"));

    loom_store_close(d);
    loom_store_close(c);
    loom_store_server_stop(s);
}

/* ------------------------------------------------------------------------------------------ */

typedef struct setter_args {
    loom_store_client *client;
    int port;
    double delay;
    const char *keys[4];
    int nkeys;
} setter_args;

static void *setter(void *arg)
{
    setter_args *a = arg;
    loom_store_client *c = a->client ? a->client : connect_to(a->port);
    for (int i = 0; i < a->nkeys; i++) {
        test_nap(a->delay);
        if (loom_store_set(c, a->keys[i], "v", 1) != LOOM_OK) fprintf(stderr, "setter: %s\n", loom_error_message());
    }
    if (!a->client) loom_store_close(c);
    return NULL;
}

static void test_get_blocks(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    char buf[8];
    size_t size = 0;

    /* Another client sets the key 0.2 s later; get waits for it. */
    setter_args a = {.port = port, .delay = 0.2, .keys = {"late"}, .nkeys = 1};
    pthread_t t;
    pthread_create(&t, NULL, setter, &a);
    double t0 = test_now_seconds();
    CHECK(loom_store_get(c, "late", buf, sizeof buf, &size, 5.0) == LOOM_OK);
    double dt = test_now_seconds() - t0;
    CHECK(size == 1 && buf[0] == 'v');
    CHECK(dt > 0.15 && dt < 2.0);
    pthread_join(t, NULL);

    /* The same client from another thread: a parked get does not hold up its set. */
    setter_args b = {.client = c, .delay = 0.1, .keys = {"same"}, .nkeys = 1};
    pthread_create(&t, NULL, setter, &b);
    t0 = test_now_seconds();
    CHECK(loom_store_get(c, "same", buf, sizeof buf, &size, 5.0) == LOOM_OK);
    CHECK(test_now_seconds() - t0 < 2.0);
    pthread_join(t, NULL);

    /* Many parked gets on one key, all woken by one set. */
    loom_store_client *others[6];
    for (int i = 0; i < 6; i++)
        others[i] = connect_to(port);
    setter_args e = {.port = port, .delay = 0.1, .keys = {"herd"}, .nkeys = 1};
    pthread_create(&t, NULL, setter, &e);
    for (int i = 0; i < 6; i++)
        CHECK(loom_store_get(others[i], "herd", buf, sizeof buf, &size, 5.0) == LOOM_OK);
    pthread_join(t, NULL);
    for (int i = 0; i < 6; i++)
        loom_store_close(others[i]);

    loom_store_close(c);
    loom_store_server_stop(s);
}

/* ------------------------------------------------------------------------------------------ */

#define ADD_THREADS 8
#define ADDS_EACH 200

typedef struct adder_args {
    loom_store_client *shared;
    int port;
    int own;
    int ok;
} adder_args;

static void *adder(void *arg)
{
    adder_args *a = arg;
    loom_store_client *c = a->own ? connect_to(a->port) : a->shared;
    a->ok = 1;
    for (int i = 0; i < ADDS_EACH; i++) {
        int64_t v = 0;
        if (loom_store_add(c, "counter", 1, &v) != LOOM_OK || v < 1 || v > ADD_THREADS * ADDS_EACH) a->ok = 0;
    }
    if (a->own) loom_store_close(c);
    return NULL;
}

static void test_add(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    pthread_t t[ADD_THREADS];
    adder_args a[ADD_THREADS];
    for (int i = 0; i < ADD_THREADS; i++) {
        a[i] = (adder_args){.shared = c, .port = port, .own = i % 2};
        pthread_create(&t[i], NULL, adder, &a[i]);
    }
    for (int i = 0; i < ADD_THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].ok);
    }
    int64_t v = -1;
    CHECK(loom_store_add(c, "counter", 0, &v) == LOOM_OK && v == ADD_THREADS * ADDS_EACH);
    char buf[32] = {0};
    size_t size = 0;
    CHECK(loom_store_get(c, "counter", buf, sizeof buf - 1, &size, 1.0) == LOOM_OK);
    CHECK(strcmp(buf, "1600") == 0);

    CHECK(loom_store_add(c, "neg", -5, &v) == LOOM_OK && v == -5);
    CHECK(loom_store_add(c, "neg", 2, &v) == LOOM_OK && v == -3);
    CHECK(loom_store_set(c, "text", "abc", 3) == LOOM_OK);
    CHECK(loom_store_add(c, "text", 1, &v) == LOOM_E_INVALID);
    CHECK(has(loom_error_message(), "text") && has(loom_error_message(), "not an integer"));
    CHECK(loom_store_set(c, "max", "9223372036854775807", 19) == LOOM_OK);
    CHECK(loom_store_add(c, "max", 1, &v) == LOOM_E_INVALID);
    CHECK(loom_store_add(c, "max", -7, &v) == LOOM_OK && v == INT64_MAX - 7);
    /* The client is still in step after the refusals. */
    CHECK(loom_store_add(c, "neg", 3, &v) == LOOM_OK && v == 0);
    loom_store_close(c);
    loom_store_server_stop(s);
}

/* ------------------------------------------------------------------------------------------ */

static void test_wait(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    const char *keys[3] = {"w/0", "w/1", "w/2"};

    setter_args a = {.port = port, .delay = 0.05, .keys = {"w/2", "w/0", "w/1"}, .nkeys = 3};
    pthread_t t;
    pthread_create(&t, NULL, setter, &a);
    double t0 = test_now_seconds();
    CHECK(loom_store_wait(c, keys, 3, 5.0) == LOOM_OK);
    double dt = test_now_seconds() - t0;
    CHECK(dt > 0.1 && dt < 2.0);
    pthread_join(t, NULL);
    CHECK(loom_store_wait(c, keys, 3, 0) == LOOM_OK); /* all there: no waiting */
    CHECK(loom_store_wait(c, keys, 0, 0) == LOOM_OK);

    const char *more[3] = {"w/0", "w/missing", "w/1"};
    t0 = test_now_seconds();
    CHECK(loom_store_wait(c, more, 3, 0.2) == LOOM_E_TIMEOUT);
    dt = test_now_seconds() - t0;
    CHECK(dt > 0.15 && dt < 1.0);
    CHECK(has(loom_error_message(), "'w/missing'"));
    CHECK(has(loom_error_message(), loom_store_address(c)));
    CHECK(loom_store_wait(c, more, 3, 0) == LOOM_E_TIMEOUT);
    CHECK(loom_store_set(c, "after", "1", 1) == LOOM_OK);
    loom_store_close(c);
    loom_store_server_stop(s);
}

/* ------------------------------------------------------------------------------------------ */

static void test_timeouts(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    char buf[8];
    size_t size = 0;

    double t0 = test_now_seconds();
    CHECK(loom_store_get(c, "missing", buf, sizeof buf, &size, 0.3) == LOOM_E_TIMEOUT);
    double dt = test_now_seconds() - t0;
    CHECK(dt >= 0.28 && dt < 1.0);
    CHECK(has(loom_error_message(), "'missing'"));
    CHECK(has(loom_error_message(), loom_store_address(c)));

    t0 = test_now_seconds();
    CHECK(loom_store_get(c, "missing", buf, sizeof buf, &size, 0) == LOOM_E_TIMEOUT);
    CHECK(test_now_seconds() - t0 < 0.2);

    /* The client keeps working after timeouts, and the server forgot the parked requests. */
    CHECK(loom_store_set(c, "missing", "1", 1) == LOOM_OK);
    CHECK(loom_store_get(c, "missing", buf, sizeof buf, &size, 0.3) == LOOM_OK);
    loom_store_close(c);
    loom_store_server_stop(s);
}

static void test_nobody_serves(void)
{
    int port = test_free_port();
    loom_store_client *c = NULL;
    double t0 = test_now_seconds();
    CHECK(loom_store_connect("127.0.0.1", port, NULL, 0.5, &c) == LOOM_E_TIMEOUT);
    double dt = test_now_seconds() - t0;
    CHECK(c == NULL);
    CHECK(dt >= 0.45 && dt < 0.8);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    CHECK(has(loom_error_message(), where));
    CHECK(has(loom_error_message(), "cannot reach the rendezvous store"));
    CHECK(has(loom_error_message(), "MASTER_PORT"));

    /* An unresolvable host name: the same error, within the deadline. */
    t0 = test_now_seconds();
    CHECK(loom_store_connect("no-such-host.invalid", port, NULL, 0.3, &c) == LOOM_E_TIMEOUT);
    CHECK(test_now_seconds() - t0 < 1.5);
    CHECK(has(loom_error_message(), "no-such-host.invalid"));

    /* Port 0 is nothing to connect to. */
    CHECK(loom_store_connect("127.0.0.1", 0, NULL, 1, &c) == LOOM_E_INVALID);
}

typedef struct late_server_args {
    int port;
    loom_store_server *server;
} late_server_args;

static void *late_server(void *arg)
{
    late_server_args *a = arg;
    test_nap(0.3);
    if (loom_store_server_start("127.0.0.1", a->port, NULL, NULL, &a->server) != LOOM_OK)
        fprintf(stderr, "late server: %s\n", loom_error_message());
    return NULL;
}

static void test_server_comes_later(void)
{
    late_server_args a = {.port = test_free_port()};
    pthread_t t;
    pthread_create(&t, NULL, late_server, &a);
    loom_store_client *c = NULL;
    double t0 = test_now_seconds();
    CHECK(loom_store_connect("127.0.0.1", a.port, NULL, 5.0, &c) == LOOM_OK);
    CHECK(test_now_seconds() - t0 < 2.0);
    pthread_join(t, NULL);
    CHECK(c && loom_store_set(c, "k", "v", 1) == LOOM_OK);
    loom_store_close(c);
    loom_store_server_stop(a.server);
}

typedef struct getter_args {
    loom_store_client *client;
    loom_status status;
    double seconds;
    char message[512];
} getter_args;

static void *getter(void *arg)
{
    getter_args *g = arg;
    char buf[8];
    size_t size;
    double t0 = test_now_seconds();
    g->status = loom_store_get(g->client, "never", buf, sizeof buf, &size, 5.0);
    g->seconds = test_now_seconds() - t0;
    snprintf(g->message, sizeof g->message, "%s", loom_error_message());
    return NULL;
}

static void test_server_stops(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    getter_args g = {.client = c};
    pthread_t t;
    pthread_create(&t, NULL, getter, &g);
    test_nap(0.2);
    loom_store_server_stop(s);
    pthread_join(t, NULL);
    CHECK(g.status == LOOM_E_COMM);
    CHECK(g.seconds < 1.0);
    CHECK(has(g.message, loom_store_address(c)));
    /* Later operations fail fast too. */
    double t0 = test_now_seconds();
    CHECK(loom_store_set(c, "k", "v", 1) == LOOM_E_COMM);
    CHECK(test_now_seconds() - t0 < 1.0);
    CHECK(has(loom_error_message(), loom_store_address(c)));
    loom_store_close(c);
}

/* ------------------------------------------------------------------------------------------ */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) abort();
    return fd;
}

/* recv exactly n bytes (blocking), or abort the test. */
static void recv_exact(int fd, unsigned char *p, size_t n)
{
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) abort();
        p += r, n -= (size_t)r;
    }
}

/* A raw connection that answered the challenge with `secret` (store.h) and was admitted. */
static int raw_admitted(int port, const char *secret)
{
    int fd = raw_connect(port);
    unsigned char ch[4 + STORE_CHALLENGE_LEN], hello[4 + STORE_HELLO_LEN], welcome[4 + STORE_WELCOME_LEN];
    recv_exact(fd, ch, sizeof ch);
    if (store_get_u32(ch) != STORE_CHALLENGE_LEN || memcmp(ch + 4, "LOOMSTR1", 8) != 0) abort();
    store_put_u32(hello, STORE_HELLO_LEN);
    hello[4] = STORE_OP_HELLO;
    memset(hello + 5, 0x5a, STORE_NONCE_LEN);
    if (!store_mac(secret, "client", ch + 12, hello + 5, hello + 5 + STORE_NONCE_LEN)) abort();
    if (send(fd, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello) abort();
    recv_exact(fd, welcome, sizeof welcome);
    if (store_get_u32(welcome) != STORE_WELCOME_LEN || welcome[4] != STORE_OK) abort();
    return fd;
}

/* Whether the server closes fd within a second. */
static int dropped(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double end = test_now_seconds() + 1.0;
    while (test_now_seconds() < end) {
        if (poll(&p, 1, 100) > 0) {
            char b[256];
            ssize_t n = recv(fd, b, sizeof b, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) return 1;
        }
    }
    return 0;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_garbage(void)
{
    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    CHECK(loom_store_set(c, "good", "1", 1) == LOOM_OK);

    /* A partial frame left hanging does not hold anybody up. */
    int hanging = raw_admitted(port, NULL);
    unsigned char part[6];
    put32(part, 100);
    part[4] = 1, part[5] = 0;
    CHECK(send(hanging, part, sizeof part, MSG_NOSIGNAL) == (ssize_t)sizeof part);

    unsigned char msg[64];
    struct {
        const char *what;
        size_t len;
    } cases[8];
    int ncases = 0;
    int fds[8];

    /* 1. random bytes */
    srand(7);
    unsigned char noise[1000];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (unsigned char)rand();
    noise[0] = 0xff, noise[1] = 0xff, noise[2] = 0xff, noise[3] = 0x7f;
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], noise, sizeof noise, MSG_NOSIGNAL) == (ssize_t)sizeof noise);
    cases[ncases++].what = "noise";
    /* 2. a frame length over the limit */
    put32(msg, 0xffffffffu);
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 4, MSG_NOSIGNAL) == 4);
    cases[ncases++].what = "huge length";
    /* 3. an empty frame */
    put32(msg, 0);
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 4, MSG_NOSIGNAL) == 4);
    cases[ncases++].what = "empty frame";
    /* 4. an unknown op */
    put32(msg, 1);
    msg[4] = 99;
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 5, MSG_NOSIGNAL) == 5);
    cases[ncases++].what = "unknown op";
    /* 5. SET whose key length runs past the frame */
    put32(msg, 1 + 4 + 3);
    msg[4] = 1;
    put32(msg + 5, 1000);
    memcpy(msg + 9, "abc", 3);
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 12, MSG_NOSIGNAL) == 12);
    cases[ncases++].what = "key past the frame";
    /* 6. SET with trailing bytes after the value */
    put32(msg, 1 + 4 + 1 + 8 + 0 + 3);
    msg[4] = 1;
    put32(msg + 5, 1);
    msg[9] = 'k';
    memset(msg + 10, 0, 8);
    memcpy(msg + 18, "xyz", 3);
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 21, MSG_NOSIGNAL) == 21);
    cases[ncases++].what = "trailing bytes";
    /* 7. WAIT claiming more keys than allowed */
    put32(msg, 1 + 8 + 4);
    msg[4] = 4;
    memset(msg + 5, 0, 8);
    put32(msg + 13, 0xfffffff0u);
    fds[ncases] = raw_admitted(port, NULL);
    CHECK(send(fds[ncases], msg, 17, MSG_NOSIGNAL) == 17);
    cases[ncases++].what = "too many keys";

    for (int i = 0; i < ncases; i++) {
        int ok = dropped(fds[i]);
        if (!ok) fprintf(stderr, "garbage case '%s': the server kept the connection\n", cases[i].what);
        CHECK(ok);
        close(fds[i]);
    }

    /* A frame that claims 200 MB and then the peer leaves: nothing is allocated for it. */
    int liar = raw_admitted(port, NULL);
    put32(msg, 200u << 20);
    msg[4] = 1;
    CHECK(send(liar, msg, 5, MSG_NOSIGNAL) == 5);
    close(liar);

    /* Valid frames of every op, mutated: whatever the server makes of them, it survives. */
    srand(11);
    for (int round = 0; round < 300; round++) {
        unsigned char f[96];
        size_t n;
        int op = 1 + round % 4;
        f[4] = (unsigned char)op;
        put32(f + 5, 2);
        memcpy(f + 9, "fz", 2);
        if (op == 1) {
            memset(f + 11, 0, 8);
            f[11] = 3;
            memcpy(f + 19, "abc", 3);
            n = 22;
        } else if (op == 2 || op == 3) {
            memset(f + 11, 0, 8);
            f[11] = op == 2 ? 1 : 5; /* GET waits 1 ms */
            n = 19;
        } else {
            memset(f + 5, 0, 8);
            f[5] = 1;
            put32(f + 13, 1);
            put32(f + 17, 2);
            memcpy(f + 21, "fz", 2);
            n = 23;
        }
        put32(f, (uint32_t)(n - 4));
        int flips = rand() % 4;
        for (int k = 0; k < flips; k++)
            f[rand() % n] = (unsigned char)rand();
        if (rand() % 4 == 0) n = (size_t)rand() % n;
        int fd = raw_admitted(port, NULL);
        if (n) (void)!send(fd, f, n, MSG_NOSIGNAL);
        if (round % 8 == 0) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            char sink[256];
            if (poll(&p, 1, 20) > 0) (void)!recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        }
        close(fd);
    }

    /* The server still serves everybody else. */
    char buf[8];
    size_t size = 0;
    CHECK(loom_store_get(c, "good", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 1);
    loom_store_client *d = connect_to(port);
    CHECK(loom_store_set(d, "still", "up", 2) == LOOM_OK);
    CHECK(loom_store_get(c, "still", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 2);
    close(hanging);
    CHECK(loom_store_get(d, "good", buf, sizeof buf, &size, 1.0) == LOOM_OK);
    loom_store_close(d);
    loom_store_close(c);
    loom_store_server_stop(s);
}

/* Something that is not a store on the port: the client reports it, does not hang. */
static void *nonsense_server(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        char b[256];
        (void)!send(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28, MSG_NOSIGNAL);
        (void)!recv(fd, b, sizeof b, 0);
        test_nap(0.2);
        close(fd);
    }
    return NULL;
}

static void test_not_a_store(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 4) == 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    pthread_t t;
    pthread_create(&t, NULL, nonsense_server, &lfd);
    loom_store_client *c = NULL;
    CHECK(loom_store_connect("127.0.0.1", ntohs(a.sin_port), NULL, 2.0, &c) == LOOM_E_COMM && c == NULL);
    CHECK(has(loom_error_message(), "does not answer as a loom rendezvous store"));
    pthread_join(t, NULL);
    close(lfd);
}

/* ------------------------------------------------------------------------------------------ */

static void test_addresses(void)
{
    /* A port in use. */
    int port;
    loom_store_server *s = start_server(&port), *s2 = NULL;
    CHECK(loom_store_server_start("127.0.0.1", port, NULL, NULL, &s2) == LOOM_E_COMM && s2 == NULL);
    CHECK(has(loom_error_message(), "address in use"));
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    CHECK(has(loom_error_message(), where));
    loom_store_server_stop(s);

    /* Every interface; reached by an IPv4 literal and by "localhost". */
    CHECK(loom_store_server_start(NULL, 0, NULL, NULL, &s) == LOOM_OK);
    port = loom_store_server_port(s);
    loom_store_client *c = NULL, *d = NULL;
    CHECK(loom_store_connect("127.0.0.1", port, NULL, 2.0, &c) == LOOM_OK);
    CHECK(loom_store_connect("localhost", port, NULL, 2.0, &d) == LOOM_OK);
    CHECK(c && loom_store_set(c, "v4", "1", 1) == LOOM_OK);
    CHECK(d && loom_store_wait(d, (const char *const[]){"v4"}, 1, 1.0) == LOOM_OK);
    loom_store_close(c);
    loom_store_close(d);
    loom_store_server_stop(s);

    /* IPv6 loopback, where the system has it. */
    if (loom_store_server_start("::1", 0, NULL, NULL, &s) == LOOM_OK) {
        port = loom_store_server_port(s);
        CHECK(loom_store_connect("::1", port, NULL, 2.0, &c) == LOOM_OK);
        CHECK(c && has(loom_store_address(c), "[::1]:"));
        CHECK(c && loom_store_set(c, "v6", "1", 1) == LOOM_OK);
        loom_store_close(c);
        CHECK(loom_store_connect("[::1]", port, NULL, 2.0, &c) == LOOM_OK);
        loom_store_close(c);
        loom_store_server_stop(s);
    } else {
        printf("test_store: no IPv6 loopback here (%s); skipped\n", loom_error_message());
    }
}

static void test_host_service(void)
{
    const loom_host_api *api = loom_host_api_table();
    loom_host *host = loom_host_create("test");
    CHECK(api->service(host, LOOM_STORE_SERVICE, 0) == NULL);

    int port;
    loom_store_server *s = start_server(&port);
    loom_store_client *c = connect_to(port);
    loom_host_set_store(c);
    const loom_store_api *store = api->service(host, LOOM_STORE_SERVICE, 0);
    CHECK(store != NULL);
    CHECK(api->service(host, LOOM_STORE_SERVICE, 999) == NULL);
    if (store) {
        CHECK(store->struct_size == sizeof(loom_store_api));
        char buf[8];
        size_t size = 0;
        int64_t v = 0;
        CHECK(store->set(host, "svc", "ok", 2) == LOOM_OK);
        CHECK(store->get(host, "svc", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 2);
        CHECK(store->add(host, "svc/n", 4, &v) == LOOM_OK && v == 4);
        const char *keys[2] = {"svc", "svc/n"};
        CHECK(store->wait(host, keys, 2, 1.0) == LOOM_OK);
        CHECK(store->get(host, "svc/none", buf, sizeof buf, &size, 0.05) == LOOM_E_TIMEOUT);
        CHECK(has(loom_error_message(), "svc/none"));
    }
    loom_host_set_store(NULL);
    CHECK(api->service(host, LOOM_STORE_SERVICE, 0) == NULL);
    if (store) CHECK(store->set(host, "svc", "ok", 2) == LOOM_E_COMM);
    loom_store_close(c);
    loom_store_server_stop(s);
    loom_host_destroy(host);
}

int main(void)
{
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"set_get", test_set_get},
        {"get_blocks", test_get_blocks},
        {"add", test_add},
        {"wait", test_wait},
        {"timeouts", test_timeouts},
        {"nobody_serves", test_nobody_serves},
        {"server_comes_later", test_server_comes_later},
        {"server_stops", test_server_stops},
        {"garbage", test_garbage},
        {"not_a_store", test_not_a_store},
        {"addresses", test_addresses},
        {"host_service", test_host_service},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = test_failures;
        double t0 = test_now_seconds();
        tests[i].fn();
        printf("%-20s %s (%.2f s)\n", tests[i].name, test_failures == before ? "ok" : "FAILED",
               test_now_seconds() - t0);
    }
    return test_finish("test_store");
}
