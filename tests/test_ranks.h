/* test_ranks.h - C tests that need real ranks: a free loopback port for the rendezvous, and N
 * forked processes each running rank_main(rank, world, port), every one counting its own
 * CHECKs (test_util.h) and exiting non-zero if any failed. Include after test_util.h. */
#ifndef LOOM_TEST_RANKS_H
#define LOOM_TEST_RANKS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_MAX_RANKS 16

/* A port nobody listens on right now (the kernel's pick; rank 0 binds it next). */
static inline int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test_free_port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Fork `world` ranks of rank_main; 1 if every one exited 0. `what` names the group in the
 * summary line. */
static inline int test_run_ranks(const char *what, int world, int (*rank_main)(int rank, int world, int port))
{
    if (world < 1 || world > TEST_MAX_RANKS) return 0;
    const int port = test_free_port();
    fflush(NULL);
    pid_t pids[TEST_MAX_RANKS];
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] < 0) {
            perror("fork");
            exit(2);
        }
        if (pids[r] == 0) {
            test_failures = test_checks = 0;
            const int rc = rank_main(r, world, port);
            printf("[rank %d of %d] %d checks, %d failed\n", r, world, test_checks, test_failures);
            fflush(NULL);
            exit(rc);
        }
    }
    int ok = 1;
    for (int r = 0; r < world; r++) {
        int status = 0;
        if (waitpid(pids[r], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "%d ranks: rank %d failed (status %#x)\n", world, r, status);
            ok = 0;
        }
    }
    printf("%s, %d ranks: %s\n", what, world, ok ? "ok" : "FAILED");
    return ok;
}

#endif
