/*
 * loom.c - the `loom` command: dispatch to a sub-command.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "args.h"
#include "error.h"
#include "interrupt_notice.h"
#include "ranks.h"

static const char *const commands[] = {"train",   "evaluate", "predict", "plugins", "make-data",
                                       "convert", "tokenize", "launch",  "plot",    "consolidate",
                                       "doctor",  "version",  "help"};

static void usage(FILE *out)
{
    fprintf(out, "usage: loom COMMAND [ARGS...]\n"
                 "\n"
                 "commands:\n"
                 "  train      train a model (HF TrainingArguments: --output_dir, --train_file,\n"
                 "             --learning_rate, ...)\n"
                 "  evaluate   evaluate a saved model (--model_name_or_path, --validation_file)\n"
                 "  predict    predict with a saved model (--model_name_or_path, --test_file)\n"
                 "  plugins    list the plugins found, or describe one (--help NAME)\n"
                 "  make-data  write a synthetic classification data set (blobs, spirals)\n"
                 "  convert    turn an llm.c GPT-2 checkpoint into an HF model folder\n"
                 "  tokenize   text to GPT-2 token shards, or text pairs to JSON lines of ids\n"
                 "  launch     start N ranks of a command, torchrun-style\n"
                 "  consolidate  join a checkpoint's shards into one f32 model (zero_to_fp32)\n"
                 "  plot       draw training curves of runs (PNG + an HTML page)\n"
                 "  doctor     check the installation: CUDA toolkits, driver, GPUs, plugins\n"
                 "  version    print the version and ABI\n"
                 "\n"
                 "`loom COMMAND --help` describes a command; `loom train --help` lists every\n"
                 "training argument.\n");
}

int loom_command_fail(loom_status status)
{
    const char *message = loom_error_message();
    fprintf(stderr, "loom: error: %s\n", *message ? message : loom_status_string(status));
    switch (status) {
    case LOOM_E_INVALID:
    case LOOM_E_NOT_FOUND:
    case LOOM_E_ABI:
    case LOOM_E_FORMAT:
    case LOOM_E_IO:
    case LOOM_E_UNSUPPORTED: return 2;
    default: return 1;
    }
}

/* `loom version` takes no arguments: a stray one is most likely a mistyped command line, and
 * accepting it silently would hide that. */
static int command_version(int argc, char **argv)
{
    if (argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: loom version\n\nPrints the version of loom and of the plugin ABI it loads.\n");
        return 0;
    }
    if (argc > 0) {
        fprintf(stderr, "loom: error: version: unexpected argument '%s' (usage: loom version)\n", argv[0]);
        return 2;
    }
    printf("loom %s (plugin ABI %d.%d)\n", LOOM_VERSION_STRING, LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    /* Past `ulimit -f` a write should fail (EFBIG) and be named like a full disk, not kill the
     * process in silence halfway through a save; Python, so HF, ignores it the same way. */
    signal(SIGXFSZ, SIG_IGN);
    const char *command = argv[1];
    /* Ctrl-C or a kill at any moment of a command (reading data, the memory check, an
     * evaluation, tokenize, consolidate) ends in one line, on a line of its own after a progress
     * bar; before, the process vanished in silence until training had begun. Not in launch,
     * which forwards the signal to its ranks, nor on a rank other than 0: its launcher and rank
     * 0 speak for it. */
    loom_ranks ranks;
    if (strcmp(command, "launch") != 0 && loom_ranks_detect(&ranks) == LOOM_OK && ranks.rank == 0)
        loom_interrupt_notice_install(NULL);
    loom_error_clear();
    if (!strcmp(command, "train") || !strcmp(command, "evaluate") || !strcmp(command, "eval") ||
        !strcmp(command, "predict"))
        return loom_command_train(!strcmp(command, "eval") ? "evaluate" : command, argc - 2, argv + 2);
    if (!strcmp(command, "plugins")) return loom_command_plugins(argc - 2, argv + 2);
    if (!strcmp(command, "make-data")) return loom_command_make_data(argc - 2, argv + 2);
    if (!strcmp(command, "convert")) return loom_command_convert(argc - 2, argv + 2);
    if (!strcmp(command, "tokenize")) return loom_command_tokenize(argc - 2, argv + 2);
    if (!strcmp(command, "launch")) return loom_command_launch(argc - 2, argv + 2);
    if (!strcmp(command, "consolidate")) return loom_command_consolidate(argc - 2, argv + 2);
    if (!strcmp(command, "plot")) return loom_command_plot(argc - 2, argv + 2);
    if (!strcmp(command, "doctor")) return loom_command_doctor(argc - 2, argv + 2);
    if (!strcmp(command, "version") || !strcmp(command, "--version")) return command_version(argc - 2, argv + 2);
    if (!strcmp(command, "help") || !strcmp(command, "--help") || !strcmp(command, "-h")) {
        /* `loom help train`: what `loom train --help` says, as git help COMMAND does. */
        const char *of = argc > 2 ? loom_closest_name(argv[2], commands, sizeof commands / sizeof *commands) : NULL;
        if (of && !strcmp(of, argv[2]) && strcmp(of, "help") != 0) {
            char flag[] = "--help", *args[] = {argv[0], argv[2], flag, NULL};
            return main(3, args);
        }
        if (argc > 2 && strcmp(argv[2], "help") != 0 && strcmp(argv[2], "--help") != 0 && strcmp(argv[2], "-h") != 0) {
            fprintf(stderr, "loom: error: help: no command '%s' (see `loom help`)\n", argv[2]);
            return 2;
        }
        usage(stdout);
        return 0;
    }
    const char *closest = loom_closest_name(command, commands, sizeof commands / sizeof *commands);
    if (closest)
        fprintf(stderr, "loom: error: unknown command '%s'; did you mean '%s'? (see `loom help`)\n", command, closest);
    else
        fprintf(stderr, "loom: error: unknown command '%s' (see `loom help`)\n", command);
    return 2;
}
