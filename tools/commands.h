/*
 * commands.h - the sub-commands of `loom`. Each returns the process exit status:
 * 0 success, 2 bad input (arguments, configuration, data, plugins), 1 a failure while running.
 */
#ifndef LOOM_TOOLS_COMMANDS_H
#define LOOM_TOOLS_COMMANDS_H

#include <loom/loom.h>
#include <stdio.h>

int loom_command_train(const char *mode, int argc, char **argv); /* mode: train | evaluate | predict */
int loom_command_plugins(int argc, char **argv);
int loom_command_make_data(int argc, char **argv);
int loom_command_convert(int argc, char **argv);
int loom_command_tokenize(int argc, char **argv);
int loom_tokenize_pairs(int argc, char **argv); /* tokenize --train_file ...: text pairs to pair files */
void loom_tokenize_pairs_usage(FILE *out);
int loom_command_launch(int argc, char **argv); /* torchrun: start the ranks of a command */
int loom_command_consolidate(int argc, char **argv); /* zero_to_fp32: shards into one f32 model */
int loom_command_plot(int argc, char **argv);   /* training curves: PNG + HTML */
int loom_command_doctor(int argc, char **argv); /* installation checks, each problem with its fix */

/* Report a flag that is no training argument and that no plugin found could take, with the
 * closest valid name, before anything else checks the run (command_unknown.c). */
struct loom_args;
loom_status loom_command_check_unknown(const struct loom_args *args);

/* Help text (command_help.c): the terminal's width (80 when stdout is not a terminal); `text`
 * wrapped at `width` from `column` (what the line holds already), continuation lines indented
 * by `indent`; `loom train|evaluate|predict --help`. */
int loom_help_width(void);
void loom_help_wrap(FILE *out, const char *text, int column, int indent, int width);
void loom_help_train(const char *mode);

/* A split's fraction: all of `text` a number in [0, 1) (NaN fails both comparisons); 1 and
 * *out set, else 0 (command_make_data.c; make-data and tokenize). */
int loom_parse_fraction(const char *text, double *out);

/* Decoded text to `out` as HF's decode(errors="replace") gives it: each sequence that is not
 * UTF-8 (a generation may stop inside a character's tokens) as one U+FFFD, not a raw byte the
 * terminal shows as it likes; a NUL is written, not taken for the end (command_tokenize.c). */
void loom_print_text(FILE *out, const char *s, size_t len);

/* Print "loom: error: <message>" and return the exit status for `status`. */
int loom_command_fail(loom_status status);

#endif
