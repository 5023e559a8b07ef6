/*
 * launch_restarts.c - `loom launch --max_restarts K` (torchrun's elastic restarts on one
 * world size; docs/checkpoints.md#restarts).
 *
 * When a rank fails, the attempt stops the others (command_launch.c) and the job is started
 * again, up to K times, with LOOM_RESTART_COUNT and TORCHELASTIC_RESTART_COUNT set to the
 * attempt number (0 for the first) in every rank's environment. `loom train` reads it: on a
 * restart it resumes from the newest complete checkpoint of its output_dir, whatever
 * --overwrite_output_dir says (tools/command_train.c), so every attempt goes on from where the
 * job got to. Not restarted: a launcher stopped by a signal (Ctrl-C means stop), an attempt that
 * started no rank (a bad option or COMMAND), a job that succeeded. --nnodes MIN:MAX (a world that
 * changes size) is not done: the world size is fixed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "launch.h"

/* Whether arg is --max_restarts (or --max-restarts), with "=value" or not. */
static int is_max_restarts(const char *arg, const char **inline_value)
{
    static const char *const names[] = {"--max_restarts", "--max-restarts"};
    for (size_t k = 0; k < 2; k++) {
        size_t n = strlen(names[k]);
        if (strncmp(arg, names[k], n) != 0) continue;
        if (arg[n] == 0) {
            *inline_value = NULL;
            return 1;
        }
        if (arg[n] == '=') {
            *inline_value = arg + n + 1;
            return 1;
        }
    }
    return 0;
}

/* Launcher options that take no value; every other one does (command_launch.c). */
static int is_flag_option(const char *arg)
{
    return !strcmp(arg, "--standalone") || !strcmp(arg, "-h") || !strcmp(arg, "--help") || strchr(arg, '=') != NULL;
}

/* Take --max_restarts K out of the launcher's options (before COMMAND) into *restarts.
 * Returns -1 to go on, else an exit status. */
static int take_max_restarts(int *argc, char **argv, long *restarts)
{
    for (int i = 0; i < *argc; i++) {
        const char *arg = argv[i], *value = NULL;
        if (!strcmp(arg, "--") || arg[0] != '-' || !arg[1]) return -1; /* COMMAND starts here */
        if (!is_max_restarts(arg, &value)) {
            if (!is_flag_option(arg)) i++; /* its value */
            continue;
        }
        int used = 1;
        if (!value) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "loom: error: launch: --max_restarts needs a value\n");
                return 2;
            }
            value = argv[i + 1];
            used = 2;
        }
        char *end = NULL;
        errno = 0;
        long k = strtol(value, &end, 10);
        if (!*value || *end || errno || k < 0 || k > 1000000) {
            fprintf(stderr, "loom: error: launch: --max_restarts wants an integer in 0..1000000, got '%s'\n", value);
            return 2;
        }
        *restarts = k;
        memmove(argv + i, argv + i + used, (size_t)(*argc - i - used + 1) * sizeof *argv);
        *argc -= used;
        i--;
    }
    return -1;
}

static int set_restart_count(long attempt)
{
    char text[32];
    snprintf(text, sizeof text, "%ld", attempt);
    if (setenv(LOOM_RESTART_COUNT_ENV, text, 1) != 0 || setenv(LOOM_TORCHELASTIC_RESTART_COUNT_ENV, text, 1) != 0) {
        fprintf(stderr, "loom: error: launch: cannot set %s: %s\n", LOOM_RESTART_COUNT_ENV, strerror(errno));
        return 0;
    }
    return 1;
}

int loom_command_launch(int argc, char **argv)
{
    long max_restarts = 0;
    /* argv is ours to rearrange (main's), with room for its NULL terminator. */
    int rc = take_max_restarts(&argc, argv, &max_restarts);
    if (rc >= 0) return rc;
    /* The ranks learn whether a failure will be retried from their checkpoints, as torchrun
     * tells its workers: a run that writes none it can resume from refuses to start. */
    char text[32];
    snprintf(text, sizeof text, "%ld", max_restarts);
    if (setenv(LOOM_MAX_RESTARTS_ENV, text, 1) != 0 || setenv(LOOM_TORCHELASTIC_MAX_RESTARTS_ENV, text, 1) != 0) {
        fprintf(stderr, "loom: error: launch: cannot set %s: %s\n", LOOM_MAX_RESTARTS_ENV, strerror(errno));
        return 1;
    }
    for (long attempt = 0;; attempt++) {
        if (!set_restart_count(attempt)) return 1;
        rc = loom_launch_attempt(argc, argv);
        if (rc == 0 || attempt >= max_restarts || loom_launch_signalled() || !loom_launch_started()) break;
        fprintf(stderr, "loom launch: restarting the job (restart %ld of %ld)\n", attempt + 1, max_restarts);
    }
    return rc;
}
