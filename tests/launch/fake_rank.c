/*
 * fake_rank.c - a stand-in rank for the `loom launch` tests. Runs its arguments in order:
 *   env            print "RANK=.. WORLD_SIZE=.. LOCAL_RANK=.. LOCAL_WORLD_SIZE=.. MASTER_ADDR=..
 *                  MASTER_PORT=.. OMP_NUM_THREADS=.." on stdout
 *   gpu            print "LOCAL_RANK=.. WORLD_SIZE=.. CUDA_VISIBLE_DEVICES=.." on stdout
 *   pid            print "pid=N" on stdout
 *   out=TEXT       a line on stdout;  err=TEXT  a line on stderr;  noeol=TEXT  no newline
 *   partial=N      N lines on stdout, each written in three pieces 5 ms apart
 *   cr             a progress bar on stdout: "10%\r", "50%\r", "100%\n" in separate writes
 *   sleep=SECONDS  sleep;  exit=CODE  exit;  signal=NUMBER  raise a signal
 *   ignore-term    ignore SIGTERM from now on
 *   count-int      from now on print "SIGINT" on stdout for each SIGINT, and carry on
 * "@R:ACTION" does ACTION only on rank R (RANK from the environment). Output is unbuffered.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void say(int fd, const char *text)
{
    size_t n = strlen(text);
    while (n) {
        ssize_t w = write(fd, text, n);
        if (w <= 0) return;
        text += w;
        n -= (size_t)w;
    }
}

static void nap(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void on_sigint(int sig)
{
    (void)sig;
    say(1, "SIGINT\n");
}

static const char *var(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "-";
}

int main(int argc, char **argv)
{
    int rank = atoi(var("RANK"));
    char line[4096];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '@') {
            const char *colon = strchr(a, ':');
            if (!colon) return 100;
            if (atoi(a + 1) != rank) continue;
            a = colon + 1;
        }
        if (!strcmp(a, "env")) {
            snprintf(line, sizeof line,
                     "RANK=%s WORLD_SIZE=%s LOCAL_RANK=%s LOCAL_WORLD_SIZE=%s MASTER_ADDR=%s MASTER_PORT=%s "
                     "OMP_NUM_THREADS=%s\n",
                     var("RANK"), var("WORLD_SIZE"), var("LOCAL_RANK"), var("LOCAL_WORLD_SIZE"), var("MASTER_ADDR"),
                     var("MASTER_PORT"), var("OMP_NUM_THREADS"));
            say(1, line);
        } else if (!strcmp(a, "gpu")) {
            snprintf(line, sizeof line, "LOCAL_RANK=%s WORLD_SIZE=%s CUDA_VISIBLE_DEVICES=%s\n", var("LOCAL_RANK"),
                     var("WORLD_SIZE"), var("CUDA_VISIBLE_DEVICES"));
            say(1, line);
        } else if (!strcmp(a, "pid")) {
            snprintf(line, sizeof line, "pid=%ld\n", (long)getpid());
            say(1, line);
        } else if (!strncmp(a, "out=", 4)) {
            snprintf(line, sizeof line, "%s\n", a + 4);
            say(1, line);
        } else if (!strncmp(a, "err=", 4)) {
            snprintf(line, sizeof line, "%s\n", a + 4);
            say(2, line);
        } else if (!strncmp(a, "noeol=", 6)) {
            say(1, a + 6);
        } else if (!strncmp(a, "partial=", 8)) {
            int n = atoi(a + 8);
            for (int k = 0; k < n; k++) {
                snprintf(line, sizeof line, "line %d of rank %d: begin-", k, rank);
                say(1, line);
                nap(0.005);
                say(1, "middle-");
                nap(0.005);
                snprintf(line, sizeof line, "end %d\n", rank);
                say(1, line);
            }
        } else if (!strcmp(a, "cr")) {
            say(1, "10%\r");
            nap(0.05);
            say(1, "50%\r");
            nap(0.05);
            say(1, "100%\n");
        } else if (!strncmp(a, "sleep=", 6)) {
            nap(atof(a + 6));
        } else if (!strncmp(a, "exit=", 5)) {
            return atoi(a + 5);
        } else if (!strncmp(a, "signal=", 7)) {
            signal(atoi(a + 7), SIG_DFL);
            raise(atoi(a + 7));
        } else if (!strcmp(a, "count-int")) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_sigint;
            sigaction(SIGINT, &sa, NULL);
        } else if (!strcmp(a, "ignore-term")) {
            signal(SIGTERM, SIG_IGN);
        } else {
            fprintf(stderr, "fake_rank: unknown action '%s'\n", a);
            return 100;
        }
    }
    return 0;
}
