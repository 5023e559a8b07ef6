/*
 * launch.h - `loom launch` in two parts: one attempt of the job (command_launch.c) and the
 * restarts around it (launch_restarts.c, --max_restarts).
 */
#ifndef LOOM_TOOLS_LAUNCH_H
#define LOOM_TOOLS_LAUNCH_H

/* Run the job once: argv are loom launch's arguments, --max_restarts already taken out.
 * Returns the launcher's exit status. */
int loom_launch_attempt(int argc, char **argv);

/* After an attempt: the signal that stopped the launcher (0: none). */
int loom_launch_signalled(void);

/* After an attempt: 1 when it started at least one rank. */
int loom_launch_started(void);

/* The variables a restarted rank reads: the attempt number, 0 for the first (torchrun's name
 * and ours). */
#define LOOM_RESTART_COUNT_ENV "LOOM_RESTART_COUNT"
#define LOOM_TORCHELASTIC_RESTART_COUNT_ENV "TORCHELASTIC_RESTART_COUNT"
/* How many restarts the job may make (--max_restarts; torchrun's name and ours). */
#define LOOM_MAX_RESTARTS_ENV "LOOM_MAX_RESTARTS"
#define LOOM_TORCHELASTIC_MAX_RESTARTS_ENV "TORCHELASTIC_MAX_RESTARTS"

#endif
