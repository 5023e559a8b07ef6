/* test_ranks.h - C tests that need real ranks: a free loopback port for the rendezvous, N
 * forked processes each running rank_main(rank, world, port) and counting its own CHECKs
 * (test_util.h), per-rank RCHECK/OK that name the rank, and (test_gloo_open/close) a rank's
 * rendezvous store and gloo communicator. Include after test_util.h; the gloo helpers need the
 * core headers (host.h, plugin_config.h, plugin_loader.h, store.h) included first. */
#ifndef LOOM_TEST_RANKS_H
#define LOOM_TEST_RANKS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_MAX_RANKS 16

/* This process's rank once forked (-1 in the parent), for the messages below. */
static int test_rank = -1;

#define RCHECK(cond)                                                                                                   \
    do {                                                                                                               \
        test_checks++;                                                                                                 \
        if (!(cond)) {                                                                                                 \
            test_failures++;                                                                                           \
            fprintf(stderr, "[rank %d] %s:%d: CHECK failed: %s\n", test_rank, __FILE__, __LINE__, #cond);              \
        }                                                                                                              \
    } while (0)

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        loom_status st_ = (call);                                                                                      \
        test_checks++;                                                                                                 \
        if (st_ != LOOM_OK) {                                                                                          \
            test_failures++;                                                                                           \
            fprintf(stderr, "[rank %d] %s:%d: %s -> %d: %s\n", test_rank, __FILE__, __LINE__, #call, st_,              \
                    loom_error_message());                                                                             \
        }                                                                                                              \
    } while (0)

/* Fork `world` ranks of rank_main; 1 if every one exited 0. `what` names the group in the
 * summary line. Fork before the parent starts any thread of its own. */
static inline int test_run_ranks(const char *what, int world, int (*rank_main)(int rank, int world, int port))
{
    if (world < 1 || world > TEST_MAX_RANKS) return 0;
    const int port = test_free_port();
    const double t0 = test_now_seconds();
    fflush(NULL); /* or the children print the parent's buffered lines again */
    pid_t pids[TEST_MAX_RANKS];
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] < 0) {
            perror("fork");
            exit(2);
        }
        if (pids[r] == 0) {
            test_failures = test_checks = 0; /* this process's own count */
            test_rank = r;
            const int rc = rank_main(r, world, port);
            printf("[rank %d of %d] %d checks, %d failed\n", r, world, test_checks, test_failures);
            fflush(NULL);
            exit(rc); /* exit, not _exit: LeakSanitizer checks each rank in sanitizer builds */
        }
    }
    int ok = 1;
    for (int r = 0; r < world; r++) {
        int status = 0;
        if (waitpid(pids[r], &status, 0) < 0) {
            perror("waitpid");
            ok = 0;
        } else if (WIFSIGNALED(status)) {
            fprintf(stderr, "%s, %d ranks: rank %d killed by signal %d\n", what, world, r, WTERMSIG(status));
            ok = 0;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "%s, %d ranks: rank %d exited %d\n", what, world, r, WEXITSTATUS(status));
            ok = 0;
        }
    }
    printf("%s, %d ranks: %s in %.2f s\n", what, world, ok ? "ok" : "FAILED", test_now_seconds() - t0);
    return ok;
}

#ifdef LOOM_CORE_STORE_H
/* One rank's store (rank 0 serves it) and gloo communicator over 127.0.0.1:port. */
typedef struct test_gloo {
    loom_store_server *server;
    loom_store_client *client;
    loom_host *host;
    loom_config *config;
    loom_comm *comm;
    const loom_comm_vtable *cv;
} test_gloo;

/* 1 on success; on failure says why on stderr and leaves g for test_gloo_close. */
static inline int test_gloo_open(test_gloo *g, int rank, int world, int port)
{
    *g = (test_gloo){0};
    if (loom_store_rendezvous(rank, world, "127.0.0.1", port, 20.0, &g->server, &g->client) != LOOM_OK) {
        fprintf(stderr, "[rank %d] rendezvous: %s\n", rank, loom_error_message());
        return 0;
    }
    loom_host_set_store(g->client);
    const loom_plugin *gloo = NULL;
    if (loom_plugin_load("gloo", LOOM_KIND_COMM, &gloo) != LOOM_OK) {
        fprintf(stderr, "[rank %d] cannot load gloo: %s\n", rank, loom_error_message());
        return 0;
    }
    g->cv = gloo->desc->vtable;
    g->host = loom_host_create("gloo");
    g->config = loom_config_from_spec(gloo->desc);
    loom_comm_setup setup = {LOOM_HEADER_INIT(loom_comm_setup), .rank = rank, .world_size = world,
                             .local_rank = rank, .local_world_size = world, .master_addr = "127.0.0.1",
                             .master_port = port, .device = LOOM_DEVICE_CPU, .timeout_seconds = 30.0};
    if (!g->host || !g->config ||
        g->cv->create(g->host, loom_host_api_table(), g->config, &setup, &g->comm) != LOOM_OK) {
        fprintf(stderr, "[rank %d] comm: %s\n", rank, loom_error_message());
        return 0;
    }
    return 1;
}

/* Wait for every rank (so none tears its connections down under another), then free all. */
static inline void test_gloo_close(test_gloo *g)
{
    if (g->comm) {
        OK(g->cv->barrier(g->comm));
        g->cv->destroy(g->comm);
    }
    loom_config_free(g->config);
    loom_host_destroy(g->host);
    loom_host_set_store(NULL);
    loom_store_close(g->client);
    loom_store_server_stop(g->server);
    *g = (test_gloo){0};
}
#endif

#endif
