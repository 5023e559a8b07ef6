/*
 * interrupt_notice.h - one line on stderr when Ctrl-C, kill or a closed terminal stops a
 * training run, saying where its work is. Before, the run just vanished: exit status 130 and
 * nothing else.
 */
#ifndef LOOM_TOOLS_INTERRUPT_NOTICE_H
#define LOOM_TOOLS_INTERRUPT_NOTICE_H

/* From now on, SIGINT, SIGTERM and SIGHUP print "loom: interrupted by SIGINT: the checkpoints
 * saved so far are in OUTPUT_DIR (...)" (with output_dir NULL: "loom: interrupted by SIGINT")
 * and then end the process by the same signal, as before (so the exit status a shell or
 * launcher sees is unchanged). Call on the rank that speaks for the run (rank 0): with NULL as
 * a command starts, then again with the output folder before training starts. */
void loom_interrupt_notice_install(const char *output_dir);

#endif
