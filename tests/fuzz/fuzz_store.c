/* fuzz_store.c - the rendezvous store's wire protocol (core/dist/store_server.c), from a peer's side.
 * Each input is a fresh server on loopback and up to four connections: the input's parts
 * (separated by FUZZ_SEPARATOR) are what each connection sends. The first byte of the input says,
 * bit i, whether connection i first passes the handshake with the job's secret (then its part
 * is the frames it sends as an admitted rank) or sends its bytes as a stranger. The server must
 * neither crash nor leak, and its replies are read until it closes or goes quiet. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include "fuzz_util.h"
#include "store.h"
#include "store_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzzing-secret-0123456789"
#define MAX_CONNS 4

/* Exactly n bytes, or -1 after 1 s without them. */
static int recv_all(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 1000) != 1) return -1;
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The client's half of the handshake (store.h); 0 when the server welcomed us. */
static int handshake(int fd)
{
    unsigned char challenge[4 + STORE_CHALLENGE_LEN], hello[4 + STORE_HELLO_LEN], welcome[4 + STORE_WELCOME_LEN];
    if (recv_all(fd, challenge, sizeof challenge) != 0) return -1;
    if (memcmp(challenge + 4, STORE_MAGIC, STORE_MAGIC_LEN) != 0) abort(); /* the server's own bytes */
    const unsigned char *server_nonce = challenge + 4 + STORE_MAGIC_LEN;
    store_put_u32(hello, STORE_HELLO_LEN);
    hello[4] = STORE_OP_HELLO;
    memset(hello + 5, 0x5a, STORE_NONCE_LEN);
    if (!store_mac(SECRET, "client", server_nonce, hello + 5, hello + 5 + STORE_NONCE_LEN)) abort();
    if (send(fd, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello) return -1;
    if (recv_all(fd, welcome, sizeof welcome) != 0 || welcome[4] != STORE_OK) return -1;
    return 0;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) abort();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) abort();
    return fd;
}

/* Send what the socket takes now; the rest is dropped (a peer may stop reading). */
static void send_some(int fd, const uint8_t *data, size_t size)
{
    while (size) {
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 200) != 1) return;
        ssize_t w = send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) return;
        data += w;
        size -= (size_t)w;
    }
}

/* Read replies until every connection is closed or all stay quiet for a while. */
static void drain(const int *fds, size_t n)
{
    struct pollfd p[MAX_CONNS];
    for (size_t i = 0; i < n; i++) p[i] = (struct pollfd){fds[i], POLLIN, 0};
    unsigned char buf[4096];
    for (;;) {
        int ready = poll(p, (nfds_t)n, 30);
        if (ready <= 0) return;
        size_t open = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)) && recv(p[i].fd, buf, sizeof buf, 0) <= 0)
                p[i].fd = -1;
            if (p[i].fd >= 0) open++;
        }
        if (!open) return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        once = 1;
        (void)fuzz_dir(); /* quiet logs */
        signal(SIGPIPE, SIG_IGN);
    }
    if (size < 1) return 0;
    uint8_t admitted = data[0];
    fuzz_part parts[MAX_CONNS];
    size_t n = fuzz_split(data + 1, size - 1, parts, MAX_CONNS);
    /* Small limits, so that the caps and timeouts are reached by small inputs. */
    loom_store_limits limits = {.max_connections = 16, .max_pending = 2, .auth_timeout = 0.05, .frame_timeout = 0.05,
                                .max_stored = 4096};
    loom_store_server *server = NULL;
    if (loom_store_server_start("127.0.0.1", 0, SECRET, &limits, &server) != LOOM_OK) abort();
    int port = loom_store_server_port(server);
    int fds[MAX_CONNS];
    for (size_t i = 0; i < n; i++) {
        fds[i] = connect_to(port);
        if ((admitted >> i) & 1) (void)handshake(fds[i]);
    }
    for (size_t i = 0; i < n; i++) send_some(fds[i], parts[i].data, parts[i].size);
    for (size_t i = 0; i < n; i++) shutdown(fds[i], SHUT_WR);
    drain(fds, n);
    for (size_t i = 0; i < n; i++) close(fds[i]);
    loom_store_server_stop(server);
    loom_error_clear();
    return 0;
}
