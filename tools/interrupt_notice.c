/*
 * interrupt_notice.c - loom_interrupt_notice_install (interrupt_notice.h).
 *
 * The handler may only call async-signal-safe functions, so the whole line is composed when
 * the handler is installed and written with one write(2). SA_RESETHAND puts the default action
 * back on entry, and raise() then ends the process by the same signal once the handler
 * returns (the signal is blocked while it runs): a launcher still sees "killed by SIGINT".
 */
#include "interrupt_notice.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const int HANDLED[] = {SIGINT, SIGTERM, SIGHUP};
static const char *const NAMES[] = {"SIGINT", "SIGTERM", "SIGHUP"};

/* "loom: interrupted by " + the signal's name + tail, composed at install time. */
static char tail[4400];
static size_t tail_len;
static int on_a_terminal;

static void on_signal(int sig)
{
    const char *name = "a signal";
    for (size_t k = 0; k < sizeof HANDLED / sizeof HANDLED[0]; k++)
        if (HANDLED[k] == sig) name = NAMES[k];
    /* A progress bar may be mid-line (it redraws with \r): start on a line of our own. */
    static const char head[] = "\nloom: interrupted by ";
    ssize_t ignored = write(STDERR_FILENO, head + !on_a_terminal, sizeof head - 1 - !on_a_terminal);
    ignored = write(STDERR_FILENO, name, strlen(name));
    ignored = write(STDERR_FILENO, tail, tail_len);
    (void)ignored;
    raise(sig);
}

void loom_interrupt_notice_install(const char *output_dir)
{
    /* The line changes while the handler may already be in place: no signal reads it half
     * written. */
    sigset_t handled, before;
    sigemptyset(&handled);
    for (size_t k = 0; k < sizeof HANDLED / sizeof HANDLED[0]; k++)
        sigaddset(&handled, HANDLED[k]);
    sigprocmask(SIG_BLOCK, &handled, &before);
    int n = output_dir ? snprintf(tail, sizeof tail,
                                  ": the checkpoints saved so far are in %s (--resume_from_checkpoint true goes on "
                                  "from the newest)\n",
                                  output_dir)
                       : snprintf(tail, sizeof tail, "\n");
    tail_len = n < 0 ? 0 : (size_t)n < sizeof tail ? (size_t)n : sizeof tail - 1;
    on_a_terminal = isatty(STDERR_FILENO);
    for (size_t k = 0; k < sizeof HANDLED / sizeof HANDLED[0]; k++) {
        struct sigaction sa, old;
        /* A signal the process was started with ignored (nohup, a background job's SIGINT)
         * stays ignored. */
        if (sigaction(HANDLED[k], NULL, &old) != 0 || old.sa_handler == SIG_IGN) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        sigaction(HANDLED[k], &sa, NULL);
    }
    sigprocmask(SIG_SETMASK, &before, NULL);
}
