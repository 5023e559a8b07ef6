/* test_store_admission.c - the rendezvous store admits only the job (core/dist/store.h). A 2-rank
 * job of real processes (fork, loom_store_rendezvous, LOOM_STORE_SECRET in the environment)
 * while this process plays a stranger on the same host as soon as rank 0's port opens, before
 * rank 1 joins: it connects with a wrong secret and with none, sends `ADD loom/joined +5` and
 * a SET without the handshake, half-sends frames that claim 257 MiB, and holds a thousand idle
 * connections. The job must join as a world of 2 and exchange keys, the stranger must be
 * refused every time, and rank 0 must stay within its descriptor caps. Then, in one process:
 * the auth timeout, the half-sent frame timeout of an admitted peer, the stored-bytes cap,
 * the connection cap, and the rendezvous's refusal of a network address without a secret. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"
#include "store_internal.h"
#include "test_util.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define IDLE_WANTED 1000

/* A connection to 127.0.0.1:port, or -1 (nobody listens yet, or out of descriptors). */
static int try_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether the server closes fd within `seconds` (what arrives before, e.g. the challenge, is
 * read and ignored). */
static int dropped_within(int fd, double seconds)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double end = test_now_seconds() + seconds;
    while (test_now_seconds() < end) {
        if (poll(&p, 1, 50) > 0) {
            char b[4096];
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

/* Open descriptors of this process. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory itself */
}

/* ---- the job ----------------------------------------------------------------------------- */

static int report_fd = -1; /* rank 0 writes "refused fds" here for the parent */

static int rank_main(int rank, int port)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    if (loom_store_rendezvous(rank, 2, "127.0.0.1", port, 20.0, &server, &client) != LOOM_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, loom_error_message());
        return 1;
    }
    int bad = 0;
    int64_t joined = 0;
    if (loom_store_add(client, "loom/joined", 0, &joined) != LOOM_OK || joined != 2) {
        fprintf(stderr, "rank %d: loom/joined = %lld, want 2\n", rank, (long long)joined);
        bad = 1;
    }
    char key[32], buf[32];
    size_t size = 0;
    snprintf(key, sizeof key, "hello/%d", rank);
    if (loom_store_set(client, key, "hi", 2) != LOOM_OK) bad = 1;
    snprintf(key, sizeof key, "hello/%d", 1 - rank);
    if (loom_store_get(client, key, buf, sizeof buf, &size, 10.0) != LOOM_OK || size != 2 || memcmp(buf, "hi", 2))
        bad = 1;
    /* Nothing the stranger tried to write is there. */
    if (loom_store_get(client, "stranger", buf, sizeof buf, &size, 0) != LOOM_E_TIMEOUT) bad = 1;
    if (rank == 1) {
        if (loom_store_set(client, "done/1", "1", 1) != LOOM_OK) bad = 1;
    } else {
        const char *done = "done/1";
        if (loom_store_wait(client, &done, 1, 10.0) != LOOM_OK) bad = 1;
        char line[64];
        int n =
            snprintf(line, sizeof line, "%llu %d\n", (unsigned long long)loom_store_server_refused(server), open_fds());
        if (write(report_fd, line, (size_t)n) != n) bad = 1;
    }
    loom_store_close(client);
    loom_store_server_stop(server);
    return bad;
}

static pid_t spawn_rank(int rank, int port)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) _exit(rank_main(rank, port));
    return pid;
}

static void test_attacks_on_a_job(void)
{
    /* Enough descriptors for the idle connections on this side. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = IDLE_WANTED + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int report[2];
    CHECK(pipe(report) == 0);
    report_fd = report[1];
    setenv(LOOM_STORE_SECRET_ENV, SECRET, 1);
    int port = test_free_port();
    pid_t rank0 = spawn_rank(0, port);

    /* Attack as soon as the port opens. */
    int probe = -1;
    for (double end = test_now_seconds() + 10; probe < 0 && test_now_seconds() < end; test_nap(0.005))
        probe = try_connect(port);
    CHECK(probe >= 0);
    close(probe);

    /* A client that knows a different secret, or none: refused, with a message saying why. */
    loom_store_client *c = NULL;
    CHECK(loom_store_connect("127.0.0.1", port, "not-the-job-secret-at-all", 3.0, &c) == LOOM_E_COMM && !c);
    CHECK(strstr(loom_error_message(), "refused this process") != NULL);
    CHECK(loom_store_connect("127.0.0.1", port, NULL, 3.0, &c) == LOOM_E_COMM && !c);
    uint64_t strangers = 2;

    /* Commands without the handshake: `ADD loom/joined +5`, `SET stranger`. */
    unsigned char add[64];
    put32(add, 1 + 4 + 11 + 8);
    add[4] = STORE_OP_ADD;
    put32(add + 5, 11);
    memcpy(add + 9, "loom/joined", 11);
    store_put_u64(add + 20, 5);
    unsigned char set[64];
    put32(set, 1 + 4 + 8 + 8 + 1);
    set[4] = STORE_OP_SET;
    put32(set + 5, 8);
    memcpy(set + 9, "stranger", 8);
    store_put_u64(set + 17, 1);
    set[25] = 'x';
    const unsigned char *frames[] = {add, set};
    const size_t sizes[] = {28, 26};
    for (int k = 0; k < 2; k++) {
        int fd = try_connect(port);
        CHECK(fd >= 0 && send(fd, frames[k], sizes[k], MSG_NOSIGNAL) == (ssize_t)sizes[k]);
        CHECK(dropped_within(fd, 3.0));
        close(fd);
        strangers++;
    }

    /* Four frames claiming 257 MiB, half-sent: dropped on the header, nothing held for them. */
    static unsigned char chunk[1 << 20];
    put32(chunk, LOOM_STORE_MAX_FRAME);
    chunk[4] = STORE_OP_SET;
    for (int k = 0; k < 4; k++) {
        int fd = try_connect(port);
        CHECK(fd >= 0);
        size_t sent = 0;
        for (int round = 0; round < 8; round++) {
            ssize_t n = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0) break;
            sent += (size_t)n;
        }
        CHECK(dropped_within(fd, 3.0));
        CHECK(sent < 8 * sizeof chunk); /* the server stopped taking bytes */
        close(fd);
        strangers++;
    }

    /* A thousand idle connections, held open while rank 1 joins and the job works. */
    int idle[IDLE_WANTED];
    int nidle = 0;
    while (nidle < IDLE_WANTED) {
        int fd = try_connect(port);
        if (fd < 0) break;
        idle[nidle++] = fd;
    }
    CHECK(nidle >= 500);

    pid_t rank1 = spawn_rank(1, port);
    int st0 = -1, st1 = -1;
    waitpid(rank1, &st1, 0);
    waitpid(rank0, &st0, 0);
    CHECK(WIFEXITED(st0) && WEXITSTATUS(st0) == 0);
    CHECK(WIFEXITED(st1) && WEXITSTATUS(st1) == 0);
    for (int i = 0; i < nidle; i++)
        close(idle[i]);

    char line[64] = {0};
    close(report[1]);
    CHECK(read(report[0], line, sizeof line - 1) > 0);
    close(report[0]);
    unsigned long long refused = 0;
    int fds = 0;
    CHECK(sscanf(line, "%llu %d", &refused, &fds) == 2);
    /* Every stranger so far, and all idle connections but the 64 still waiting to prove. */
    printf("rank 0 refused %llu connections (%llu strangers, %d idle), had %d descriptors open\n", refused,
           (unsigned long long)strangers, nidle, fds);
    CHECK(refused >= strangers + (uint64_t)(nidle - 64));
    CHECK(fds > 0 && fds < 64 + 40);
    unsetenv(LOOM_STORE_SECRET_ENV);
}

/* ---- the caps, in one process ------------------------------------------------------------ */

/* A raw connection admitted with `secret`, or -1. */
static int admitted(int port, const char *secret)
{
    int fd = try_connect(port);
    unsigned char ch[4 + STORE_CHALLENGE_LEN], hello[4 + STORE_HELLO_LEN], welcome[4 + STORE_WELCOME_LEN];
    if (fd < 0 || recv(fd, ch, sizeof ch, MSG_WAITALL) != (ssize_t)sizeof ch) return -1;
    store_put_u32(hello, STORE_HELLO_LEN);
    hello[4] = STORE_OP_HELLO;
    memset(hello + 5, 7, STORE_NONCE_LEN);
    store_mac(secret, "client", ch + 4 + STORE_MAGIC_LEN, hello + 5, hello + 5 + STORE_NONCE_LEN);
    if (send(fd, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello ||
        recv(fd, welcome, sizeof welcome, MSG_WAITALL) != (ssize_t)sizeof welcome || welcome[4] != STORE_OK) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_caps(void)
{
    loom_store_limits limits = {
        .max_connections = 24, .max_pending = 8, .auth_timeout = 0.3, .frame_timeout = 0.3, .max_stored = 4096};
    loom_store_server *s = NULL;
    CHECK(loom_store_server_start("127.0.0.1", 0, SECRET, &limits, &s) == LOOM_OK);
    int port = loom_store_server_port(s);
    loom_store_client *c = NULL;
    CHECK(loom_store_connect("127.0.0.1", port, SECRET, 3.0, &c) == LOOM_OK);

    /* Silent after connecting: dropped once the auth timeout passes. */
    int silent = try_connect(port);
    CHECK(dropped_within(silent, 3.0));
    close(silent);
    /* A wrong secret is refused; so is a hello recorded for another challenge. */
    CHECK(admitted(port, "wrong-secret-wrong-secret") < 0);
    int replay = try_connect(port);
    unsigned char ch[4 + STORE_CHALLENGE_LEN], hello[4 + STORE_HELLO_LEN], answer[8];
    unsigned char other_nonce[STORE_NONCE_LEN] = {0};
    CHECK(recv(replay, ch, sizeof ch, MSG_WAITALL) == (ssize_t)sizeof ch);
    store_put_u32(hello, STORE_HELLO_LEN);
    hello[4] = STORE_OP_HELLO;
    memset(hello + 5, 7, STORE_NONCE_LEN);
    store_mac(SECRET, "client", other_nonce, hello + 5, hello + 5 + STORE_NONCE_LEN);
    CHECK(send(replay, hello, sizeof hello, MSG_NOSIGNAL) == (ssize_t)sizeof hello);
    CHECK(recv(replay, answer, 5, MSG_WAITALL) == 5 && answer[4] == STORE_REFUSED);
    CHECK(dropped_within(replay, 3.0));
    close(replay);

    /* An admitted peer that leaves a frame half-sent: dropped after frame_timeout. */
    int half = admitted(port, SECRET);
    CHECK(half >= 0);
    unsigned char head[8];
    put32(head, 1000);
    head[4] = STORE_OP_SET;
    CHECK(send(half, head, 5, MSG_NOSIGNAL) == 5);
    CHECK(dropped_within(half, 3.0));
    close(half);

    /* Stored bytes: 3000 fit, 3000 more do not (FULL), replacing the value does. */
    static char value[3000];
    CHECK(loom_store_set(c, "a", value, sizeof value) == LOOM_OK);
    CHECK(loom_store_set(c, "b", value, sizeof value) == LOOM_E_NOMEM);
    CHECK(strstr(loom_error_message(), "as many bytes as it may") != NULL);
    CHECK(loom_store_set(c, "a", value, 2000) == LOOM_OK);
    CHECK(loom_store_set(c, "b", value, 1950) == LOOM_OK); /* 2 x 64 + 2 + 3950 = 4080 bytes */
    CHECK(loom_store_add(c, "counter", 1, NULL) == LOOM_E_NOMEM);
    char buf[8];
    size_t size = 0;
    CHECK(loom_store_get(c, "b", buf, sizeof buf, &size, 0) == LOOM_OK && size == 1950);

    /* Connections: at most 24 open; the client still works with the others held. */
    int held[40];
    int nheld = 0, refused_at_once = 0;
    for (int i = 0; i < 40; i++) {
        held[nheld] = admitted(port, SECRET);
        if (held[nheld] >= 0)
            nheld++;
        else
            refused_at_once++;
    }
    CHECK(nheld <= 24 && refused_at_once >= 16);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    test_nap(0.2);
    CHECK(loom_store_get(c, "a", buf, sizeof buf, &size, 1.0) == LOOM_OK && size == 2000);

    CHECK(loom_store_server_refused(s) >= 3);
    loom_store_close(c);
    loom_store_server_stop(s);
}

/* No secret: only loopback; a short secret is refused. */
static void test_rendezvous_needs_a_secret(void)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    unsetenv(LOOM_STORE_SECRET_ENV);
    CHECK(loom_store_rendezvous(1, 2, "10.1.2.3", 29999, 1.0, &server, &client) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), LOOM_STORE_SECRET_ENV) != NULL);
    setenv("LOOM_STORE_BIND", "*", 1);
    CHECK(loom_store_rendezvous(0, 1, "127.0.0.1", test_free_port(), 1.0, &server, &client) == LOOM_E_INVALID);
    unsetenv("LOOM_STORE_BIND");
    setenv(LOOM_STORE_SECRET_ENV, "short", 1);
    CHECK(loom_store_rendezvous(0, 1, "127.0.0.1", test_free_port(), 1.0, &server, &client) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "at least 16") != NULL);
    unsetenv(LOOM_STORE_SECRET_ENV);
    /* Loopback without a secret still works (ranks started by hand on one machine). */
    CHECK(loom_store_rendezvous(0, 1, "127.0.0.1", test_free_port(), 2.0, &server, &client) == LOOM_OK);
    loom_store_close(client);
    loom_store_server_stop(server);
}

int main(void)
{
    test_attacks_on_a_job();
    test_caps();
    test_rendezvous_needs_a_secret();
    return test_finish("test_store_admission");
}
