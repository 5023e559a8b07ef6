/* test_store_rendezvous.c - loom_store_rendezvous with real processes (fork): 4 ranks that
 * all join (rank 0 last, so the others wait for its server) and then exchange keys; a run
 * where one rank never comes (the others fail with "2 of 3 ranks joined" within the
 * timeout); a rank number claimed twice; ranks told different WORLD_SIZEs (refused at once,
 * naming both); rank 0 on a port in use. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"
#include "test_util.h"

/* What a child rank does; returns its exit code (0 = as expected). */
typedef int (*rank_fn)(int rank, int world, int port);

/* Fork one process per entry of ranks[] (a rank number each, after delays[i] seconds), wait
 * for all (killing stragglers after `limit` seconds), and return how many exited non-zero. */
static int run_ranks(const int *ranks, const double *delays, int n, int world, int port, rank_fn fn, double limit)
{
    pid_t pids[16];
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            test_nap(delays ? delays[i] : 0);
            _exit(fn(ranks[i], world, port));
        }
        if (pids[i] < 0) abort();
    }
    int bad = 0, left = n;
    double end = test_now_seconds() + limit;
    while (left > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            left--;
            for (int i = 0; i < n; i++)
                if (pids[i] == p) pids[i] = 0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
            continue;
        }
        if (test_now_seconds() > end) {
            fprintf(stderr, "run_ranks: %d processes still running after %.0f s: killing them\n", left, limit);
            for (int i = 0; i < n; i++)
                if (pids[i] > 0) kill(pids[i], SIGKILL);
            for (int i = 0; i < n; i++)
                if (pids[i] > 0) waitpid(pids[i], NULL, 0);
            return bad + left;
        }
        test_nap(0.01);
    }
    return bad;
}

/* ------------------------------------------------------------------------------------------ */

static int all_join(int rank, int world, int port)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    double t0 = test_now_seconds();
    if (loom_store_rendezvous(rank, world, "127.0.0.1", port, 10.0, &server, &client) != LOOM_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, loom_error_message());
        return 1;
    }
    if ((rank == 0) != (server != NULL)) return 2;
    /* After the barrier every rank is counted. */
    int64_t joined = 0;
    if (loom_store_add(client, "loom/joined", 0, &joined) != LOOM_OK || joined != world) return 3;
    /* Exchange: each rank publishes, reads everybody's. */
    char key[32], value[32], buf[32];
    snprintf(key, sizeof key, "addr/%d", rank);
    snprintf(value, sizeof value, "rank-%d", rank);
    if (loom_store_set(client, key, value, strlen(value)) != LOOM_OK) return 4;
    for (int r = 0; r < world; r++) {
        size_t size = 0;
        snprintf(key, sizeof key, "addr/%d", r);
        snprintf(value, sizeof value, "rank-%d", r);
        if (loom_store_get(client, key, buf, sizeof buf, &size, 5.0) != LOOM_OK || size != strlen(value) ||
            memcmp(buf, value, size) != 0)
            return 5;
    }
    /* Rank 0 keeps serving until every rank says it is done. */
    snprintf(key, sizeof key, "done/%d", rank);
    if (loom_store_set(client, key, "1", 1) != LOOM_OK) return 6;
    if (rank == 0) {
        char keys[16][32];
        const char *ptrs[16];
        for (int r = 0; r < world; r++) {
            snprintf(keys[r], sizeof keys[r], "done/%d", r);
            ptrs[r] = keys[r];
        }
        if (loom_store_wait(client, ptrs, (size_t)world, 5.0) != LOOM_OK) return 7;
    }
    loom_store_close(client);
    loom_store_server_stop(server);
    if (test_now_seconds() - t0 > 5.0) return 8;
    return 0;
}

static void test_all_join(void)
{
    int port = test_free_port();
    int ranks[4] = {1, 2, 3, 0};
    double delays[4] = {0, 0.05, 0.1, 0.3}; /* rank 0 last: the others retry until it serves */
    CHECK(run_ranks(ranks, delays, 4, 4, port, all_join, 15.0) == 0);
}

/* ------------------------------------------------------------------------------------------ */

#define MISSING_TIMEOUT 1.0

static int joins_alone(int rank, int world, int port)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    double t0 = test_now_seconds();
    loom_status st = loom_store_rendezvous(rank, world, "127.0.0.1", port, MISSING_TIMEOUT, &server, &client);
    double dt = test_now_seconds() - t0;
    const char *m = loom_error_message();
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    int ok = st == LOOM_E_TIMEOUT && strstr(m, "only 2 of 3 ranks joined") && strstr(m, where) && server == NULL &&
             client == NULL && dt >= MISSING_TIMEOUT * 0.9 && dt < MISSING_TIMEOUT + 2.5;
    if (!ok) fprintf(stderr, "rank %d: status %d after %.2f s: %s\n", rank, st, dt, m);
    return ok ? 0 : 1;
}

static void test_one_missing(void)
{
    int port = test_free_port();
    int ranks[2] = {0, 2}; /* rank 1 never comes */
    double t0 = test_now_seconds();
    CHECK(run_ranks(ranks, NULL, 2, 3, port, joins_alone, 10.0) == 0);
    CHECK(test_now_seconds() - t0 < MISSING_TIMEOUT + 3.0);
}

/* ------------------------------------------------------------------------------------------ */

static int claims_rank(int rank, int world, int port)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    loom_status st = loom_store_rendezvous(rank, world, "127.0.0.1", port, 1.0, &server, &client);
    const char *m = loom_error_message();
    /* rank 0 and one of the two rank-1 processes time out; the other rank 1 is refused. */
    int ok = (st == LOOM_E_TIMEOUT && strstr(m, "of 3 ranks joined")) ||
             (rank == 1 && st == LOOM_E_INVALID && strstr(m, "rank 1 joined twice"));
    if (!ok) fprintf(stderr, "rank %d: status %d: %s\n", rank, st, m);
    return ok ? 0 : 1;
}

static void test_rank_twice(void)
{
    int port = test_free_port();
    int ranks[3] = {0, 1, 1};
    double delays[3] = {0, 0.05, 0.1};
    CHECK(run_ranks(ranks, delays, 3, 3, port, claims_rank, 10.0) == 0);
}

/* ------------------------------------------------------------------------------------------ */

/* Rank 1 told one rank more (or less) than rank 0: both fail at once, naming both values, long
 * before the timeout. */
static int world_differs(int rank, int world, int port, int rank1_world)
{
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    double t0 = test_now_seconds();
    loom_status st =
        loom_store_rendezvous(rank, rank == 1 ? rank1_world : world, "127.0.0.1", port, 10.0, &server, &client);
    const char *m = loom_error_message();
    char want[96];
    snprintf(want, sizeof want, "rank 1 has WORLD_SIZE=%d but rank 0 has WORLD_SIZE=%d", rank1_world, world);
    int ok = st == LOOM_E_INVALID && strstr(m, want) && !server && !client && test_now_seconds() - t0 < 5.0;
    if (!ok) fprintf(stderr, "rank %d: status %d: %s\n", rank, st, m);
    return ok ? 0 : 1;
}

static int world_larger(int rank, int world, int port)
{
    return world_differs(rank, world, port, world + 1);
}
static int world_smaller(int rank, int world, int port)
{
    return world_differs(rank, world, port, world - 1);
}

static void test_world_differs(void)
{
    int ranks[2] = {0, 1};
    double delays[2] = {0, 0.05};
    CHECK(run_ranks(ranks, delays, 2, 2, test_free_port(), world_larger, 10.0) == 0);
    CHECK(run_ranks(ranks, delays, 2, 3, test_free_port(), world_smaller, 10.0) == 0);
    /* Rank 0 last: rank 1 waits for it to say the world, then is refused. */
    double late0[2] = {0.3, 0};
    CHECK(run_ranks(ranks, late0, 2, 2, test_free_port(), world_larger, 10.0) == 0);
}

/* ------------------------------------------------------------------------------------------ */

static void test_in_process(void)
{
    /* World of one: rank 0 serves and joins itself. */
    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    int port = test_free_port();
    CHECK(loom_store_rendezvous(0, 1, "127.0.0.1", port, 2.0, &server, &client) == LOOM_OK);
    CHECK(server && client);
    loom_store_close(client);
    loom_store_server_stop(server);

    /* Rank 0 on a port somebody else holds. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    server = NULL;
    client = NULL;
    CHECK(loom_store_rendezvous(0, 2, "127.0.0.1", port, 1.0, &server, &client) == LOOM_E_COMM);
    char want[96];
    snprintf(want, sizeof want, "cannot serve the rendezvous store on 127.0.0.1:%d: address in use", port);
    CHECK(strstr(loom_error_message(), want) != NULL);
    if (!strstr(loom_error_message(), want)) fprintf(stderr, "got: %s\n", loom_error_message());
    CHECK(server == NULL && client == NULL);
    close(fd);

    /* Arguments. */
    CHECK(loom_store_rendezvous(2, 2, "127.0.0.1", port, 1.0, &server, &client) == LOOM_E_INVALID);
    CHECK(loom_store_rendezvous(0, 2, "127.0.0.1", 0, 1.0, &server, &client) == LOOM_E_INVALID);
    CHECK(loom_store_rendezvous(0, 2, "", port, 1.0, &server, &client) == LOOM_E_INVALID);
    CHECK(loom_store_rendezvous(0, 2, "127.0.0.1", port, 1.0, NULL, &client) == LOOM_E_INVALID);
}

int main(void)
{
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"all_join", test_all_join},           {"one_missing", test_one_missing}, {"rank_twice", test_rank_twice},
        {"world_differs", test_world_differs}, {"in_process", test_in_process},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = test_failures;
        double t0 = test_now_seconds();
        tests[i].fn();
        printf("%-20s %s (%.2f s)\n", tests[i].name, test_failures == before ? "ok" : "FAILED",
               test_now_seconds() - t0);
        fflush(stdout);
    }
    return test_finish("test_store_rendezvous");
}
