/*
 * trainer_jit.c - --enable_jit_checkpoint: a checkpoint when SIGTERM arrives (HF v5's
 * JITCheckpointCallback; docs/semantics/trainer.md#jit-checkpoint).
 *
 * A scheduler that preempts a job (Kubernetes, Slurm's --signal, a spot instance going away)
 * sends SIGTERM and, a grace period later, SIGKILL. While train() runs, SIGTERM only sets a
 * flag; at the next step boundary every rank learns of it (a rank that got none too: the flag
 * is reduced over the ranks, so all save at the same step), saves checkpoint-N of the last
 * finished step and stops, and the command exits 143 (128 + SIGTERM) without writing a final
 * model: the run is not finished, and a scheduler that restarts failed jobs restarts this one
 * (HF's script carries on and saves a final model, which a restarted job then takes for a
 * finished run's).
 *
 * HF waits 3 s after SIGTERM before asking for the checkpoint, so that a SIGKILL right behind
 * the SIGTERM does not catch a checkpoint half written. loom's checkpoints are written into
 * checkpoint-N.tmp and renamed when complete, so a kill mid-save leaves the older checkpoints
 * as they were, and the grace is better spent saving.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer_internal.h"

static volatile sig_atomic_t sigterm_seen;
static struct sigaction before;
static int armed;
static int on_a_terminal; /* stderr, when armed: a progress bar may be mid-line there */

static void on_sigterm(int sig)
{
    (void)sig;
    if (sigterm_seen) return; /* a launcher passing on a second SIGTERM: one checkpoint */
    sigterm_seen = 1;
    /* On a terminal a progress bar may be mid-line: start on a line of our own. Elsewhere (a
     * launcher's pipe, a log file) an empty line would only be noise. */
    static const char line[] = "\nloom: SIGTERM: saving a checkpoint when this step ends, then stopping "
                               "(--enable_jit_checkpoint)\n";
    ssize_t ignored = write(STDERR_FILENO, line + !on_a_terminal, sizeof line - 1 - !on_a_terminal);
    (void)ignored;
}

void loom_trainer_jit_arm(loom_trainer *t)
{
    if (!t->args.enable_jit_checkpoint || armed) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a collective in a read() goes on instead of failing with EINTR */
    on_a_terminal = isatty(STDERR_FILENO);
    if (sigaction(SIGTERM, &sa, &before) == 0) armed = 1;
}

void loom_trainer_jit_disarm(void)
{
    if (!armed) return;
    sigaction(SIGTERM, &before, NULL);
    armed = 0;
}

loom_status loom_trainer_jit_due(loom_trainer *t, int *due)
{
    *due = 0;
    if (!t->args.enable_jit_checkpoint) return LOOM_OK;
    double seen = sigterm_seen ? 1.0 : 0.0;
    if (t->world_size > 1) {
        loom_status st = loom_trainer_reduce_f64(t, &seen, 1, LOOM_REDUCE_MAX);
        if (st != LOOM_OK) return st;
    }
    *due = seen > 0;
    return LOOM_OK;
}

/* LOOM_TEST_SIGTERM_AT_STEP=R:N or R:N+ (tests/cli/test_cli_jit.py): rank R sends itself SIGTERM
 * at the end of step N, before its evaluation and save (R:N), or after them (R:N+), so a test
 * signals one rank at a known point through the real handler (raise: to this thread, so the
 * flag is set when it returns). */
void loom_trainer_jit_test_signal(const loom_trainer *t, int after_evaluation)
{
    const char *spec = getenv("LOOM_TEST_SIGTERM_AT_STEP");
    if (!spec || !*spec) return;
    char *p = NULL;
    long long rank = strtoll(spec, &p, 10);
    if (rank != t->rank || *p != ':') return;
    long long step = strtoll(p + 1, &p, 10);
    if (step == t->state.global_step && (*p == '+') == (after_evaluation != 0)) raise(SIGTERM);
}
