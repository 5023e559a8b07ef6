/*
 * command_launch.c - `loom launch`: torchrun's interface. Starts --nproc_per_node ranks of
 * COMMAND on this node, each with the environment core/dist/ranks.h reads, relays their output
 * line by line with a "[rank N] " prefix, and stops them all when one fails or when the
 * launcher is interrupted.
 *
 *   loom launch [--nproc_per_node N|auto|cpu|gpu | --num_gpus N] [--include H:I,J | --exclude H:I]
 *               [--nnodes M] [--node_rank R] [--master_addr A] [--master_port P]
 *               [--rdzv_endpoint HOST[:PORT]] [--standalone] [--timeout SECONDS] [--] COMMAND [ARGS...]
 *
 * GPUs (DeepSpeed's launcher, launch_gpus.c): on a node with GPUs and no --nproc_per_node
 * number, one rank per GPU chosen - all visible ones by default, --num_gpus N of them,
 * --include/--exclude naming them - and every rank gets the chosen list as
 * CUDA_VISIBLE_DEVICES and binds device LOCAL_RANK of it. Without a GPU --num_gpus N is N
 * ranks and the default is one, as before (docs/gpu.md#launching-on-gpus).
 *
 * torchrun's shortcuts: --nproc_per_node auto is the GPUs when there are any (/dev/nvidiaN),
 * else the cores (cpu and gpu pick one); --master_port 0 picks a free port here and passes it
 * on (one node only: the others could not know it); --rdzv_endpoint sets the address and port
 * at once (port 29400 when left out, as torchrun); --standalone is one node on 127.0.0.1 with
 * a free port. --rdzv_backend and --rdzv_id are accepted and ignored (the store is rank 0's).
 * What auto and port 0 chose is said once on stderr.
 *
 * Options also take "--opt=value" and dashes ("--nproc-per-node"). The first argument that is
 * not an option starts COMMAND. COMMAND "loom" or a bare sub-command name ("train", ...) runs
 * this same loom binary (/proc/self/exe); anything else is looked up in PATH (or taken as a
 * path when it holds a '/'), before any rank starts.
 *
 * Children: rank = node_rank * nproc + local (GROUP_RANK = node_rank is set too, as torchrun
 * does). They stay in the launcher's process group (a Ctrl-C at the terminal reaches them
 * directly; the launcher signals each by pid), get the launcher's stdin, and die with SIGKILL
 * if the launcher itself dies (PR_SET_PDEATHSIG). OMP_NUM_THREADS = max(1, cores /
 * nproc) when nproc > 1 and the user did not set it (said once on stderr). A failing exec is
 * reported by the child ("loom launch: rank N: cannot run ...") with exit status 127.
 *
 * A terminal: when the launcher's stdout is one, rank 0 gets LOOM_PROGRESS_TTY (its device)
 * and LOOM_PROGRESS_INDENT (the prefix's width), so its progress bar is drawn, fitted to this
 * terminal, through the relay (plugins/callback/progress.c).
 *
 * Output: every child's stdout and stderr come through pipes read with poll(); whole lines
 * are written with one write() each, prefixed "[rank N] ", stdout to stdout and stderr to
 * stderr, so lines of different ranks never interleave. A partial line waits for its newline
 * or the end of the stream (then a newline is added). Carriage returns (progress bars):
 *   - rank 0 (stdout and stderr): '\r' ends a segment like '\n' does, so each redraw is
 *     passed through at once as "[rank 0] <bar>\r" and the bar redraws in place ("\r\n" stays
 *     one line end);
 *   - other ranks: '\r' discards what came before it on the line, so a bar that redraws many
 *     times yields only its last state, once the line ends - what a terminal would show.
 * A line longer than 64 KiB is passed on in pieces (only the first is prefixed).
 *
 * Failure: the first child to exit non-zero or by a signal is reported once ("loom launch:
 * rank N exited with status S; stopping the other ranks"), the others get SIGTERM, and those
 * still running --timeout seconds later get SIGKILL. The launcher exits with that rank's
 * status (128 + signal for a signal). SIGINT, SIGTERM or SIGHUP to the launcher is forwarded
 * to the ranks (unless the terminal sent it: then they already have it), followed by the same
 * grace and SIGKILL, and the launcher exits 128 + signal (130, 143, 129). A second signal
 * during the grace sends SIGKILL at once. SIGINT or SIGHUP ignored when the launcher starts
 * (nohup, a background job) stays ignored, by the launcher and by the ranks; the ranks start
 * with the signal dispositions the launcher was given. Bad options or an unknown COMMAND: one
 * line, exit 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "launch.h"
#include "launch_gpus.h"

extern char **environ;

#define LINE_CAP (64 * 1024)
#define MAX_PROCS 4096

/* Bare words that name a sub-command of this binary (keep in step with loom.c). */
static const char *const SUBCOMMANDS[] = {"train",    "evaluate", "eval",    "predict",     "plugins", "make-data",
                                          "convert",  "tokenize", "plot",    "consolidate", "version"};

static void usage(FILE *out)
{
    fprintf(out, "usage: loom launch [options] [--] COMMAND [ARGS...]\n"
                 "\n"
                 "Start the ranks of COMMAND on this node, the way torchrun does.\n"
                 "\n"
                 "options:\n"
                 "  --nproc_per_node N   ranks on this node (default: one per GPU, else 1); auto:\n"
                 "                       the GPUs if any, else the cores; cpu: the cores; gpu: the\n"
                 "                       GPUs\n"
                 "  --num_gpus N         one rank on each of N GPUs (default: every visible GPU;\n"
                 "                       without a GPU: N ranks on the CPU)\n"
                 "  --include H:I,J      only these GPUs (DeepSpeed's syntax: localhost:0,2; hosts\n"
                 "                       joined with @); ids as CUDA_VISIBLE_DEVICES lists them\n"
                 "  --exclude H:I        every visible GPU but these (not with --include)\n"
                 "  --nnodes M           nodes in the job (also --num_nodes; default 1)\n"
                 "  --node_rank R        this node's index, 0 <= R < M (default 0)\n"
                 "  --master_addr A      host of rank 0's rendezvous store (default 127.0.0.1)\n"
                 "  --master_port P      its port (default 29500; 0: a free one, one node only)\n"
                 "  --rdzv_endpoint H:P  --master_addr H --master_port P (P defaults to 29400)\n"
                 "  --standalone         one node on 127.0.0.1 with a free port\n"
                 "  --timeout SECONDS    grace between SIGTERM and SIGKILL when stopping ranks\n"
                 "                       (default 30, as torchrun)\n"
                 "  --max_restarts K     when a rank fails, stop the others and start the job\n"
                 "                       again, up to K times (default 0); `loom train` then\n"
                 "                       resumes from the newest complete checkpoint\n"
                 "\n"
                 "Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,\n"
                 "MASTER_PORT (and OMP_NUM_THREADS = cores / N unless set); on GPUs also\n"
                 "CUDA_VISIBLE_DEVICES (the chosen GPUs; each rank binds its LOCAL_RANK).\n"
                 "COMMAND `loom` or a bare sub-command (`train`, ...) runs this loom binary.\n"
                 "Output lines are prefixed \"[rank N] \".\n"
                 "If a rank fails the others are stopped and its exit status is returned.\n"
                 "\n"
                 "The rendezvous store admits only this job's ranks: they must know\n"
                 "LOOM_STORE_SECRET. On one node loom launch makes a random one for each job;\n"
                 "with --nnodes > 1 export the same value on every node first\n"
                 "(export LOOM_STORE_SECRET=$(openssl rand -hex 32)). Ranks started by mpirun,\n"
                 "srun or by hand need it too (mpirun -x LOOM_STORE_SECRET; srun passes the\n"
                 "environment); without it only a loopback MASTER_ADDR is allowed.\n");
}

/* ---- options --------------------------------------------------------------------------- */

typedef struct launch_options {
    long nproc, nnodes, node_rank, master_port;
    const char *master_addr;
    double timeout;
    const char *nproc_word; /* auto, cpu, gpu; NULL: nproc is a number */
    int nproc_given;        /* --nproc_per_node N */
    long num_gpus;          /* --num_gpus N; 0: not given */
    const char *include, *exclude;
    const char *visible_devices; /* each rank's CUDA_VISIBLE_DEVICES; NULL: left as it is */
    int standalone;
    char rdzv_host[256];
} launch_options;

static int parse_long(const char *text, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < lo || v > hi || text[0] == ' ' || text[0] == '+') return 0;
    *out = v;
    return 1;
}

/* HOST, HOST:PORT or [V6]:PORT into master_addr / master_port. */
static int parse_endpoint(const char *text, launch_options *o)
{
    const char *colon = strrchr(text, ':'), *host = text;
    size_t host_len = strlen(text);
    long port = 29400;
    if (text[0] == '[') { /* [::1]:port */
        const char *close = strchr(text, ']');
        if (!close || (close[1] && close[1] != ':')) return 0;
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close[1] ? close + 1 : NULL;
    } else if (colon && strchr(text, ':') != colon)
        colon = NULL; /* a bare IPv6 address */
    else if (colon)
        host_len = (size_t)(colon - text);
    if (colon && !parse_long(colon + 1, 0, 65535, &port)) return 0;
    if (!host_len || host_len >= sizeof o->rdzv_host) return 0;
    memcpy(o->rdzv_host, host, host_len);
    o->rdzv_host[host_len] = 0;
    o->master_addr = o->rdzv_host;
    o->master_port = port;
    return 1;
}

/* Parse options; *first is the index of COMMAND. Returns -1 to go on, else an exit status. */
static int parse_options(int argc, char **argv, launch_options *o, int *first)
{
    int i = 0;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            break;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 0;
        }
        if (arg[0] != '-' || !arg[1]) break; /* COMMAND starts here */
        /* "--name", "--name=value"; dashes inside the name read as underscores. */
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
        if (arg[1] != '-' || n >= sizeof name) {
            fprintf(stderr, "loom: error: launch: unknown option '%s' (see loom launch --help)\n", arg);
            return 2;
        }
        for (size_t k = 0; k < n; k++)
            name[k] = k >= 2 && arg[k] == '-' ? '_' : arg[k];
        name[n] = 0;
        if (!strcmp(name, "--standalone")) {
            if (eq) {
                fprintf(stderr, "loom: error: launch: --standalone takes no value\n");
                return 2;
            }
            o->standalone = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        int known = 1, ok = value != NULL;
        if (!strcmp(name, "--nproc_per_node") && value &&
            (!strcmp(value, "auto") || !strcmp(value, "cpu") || !strcmp(value, "gpu"))) {
            o->nproc_word = value;
            o->nproc_given = 0;
        } else if (!strcmp(name, "--nproc_per_node")) {
            ok = ok && parse_long(value, 1, MAX_PROCS, &o->nproc);
            o->nproc_word = NULL;
            o->nproc_given = 1;
        } else if (!strcmp(name, "--num_gpus"))
            ok = ok && parse_long(value, 1, MAX_PROCS, &o->num_gpus);
        else if (!strcmp(name, "--include"))
            o->include = value;
        else if (!strcmp(name, "--exclude"))
            o->exclude = value;
        else if (!strcmp(name, "--rdzv_endpoint")) {
            ok = ok && parse_endpoint(value, o);
        } else if (!strcmp(name, "--rdzv_backend") || !strcmp(name, "--rdzv_id"))
            ;
        else if (!strcmp(name, "--nnodes") || !strcmp(name, "--num_nodes"))
            ok = ok && parse_long(value, 1, 1L << 20, &o->nnodes);
        else if (!strcmp(name, "--node_rank"))
            ok = ok && parse_long(value, 0, 1L << 20, &o->node_rank);
        else if (!strcmp(name, "--master_port"))
            ok = ok && parse_long(value, 0, 65535, &o->master_port);
        else if (!strcmp(name, "--master_addr")) {
            ok = ok && *value && strlen(value) < 256;
            if (ok) o->master_addr = value;
        } else if (!strcmp(name, "--timeout")) {
            char *end = NULL;
            double t = ok ? strtod(value, &end) : 0;
            ok = ok && *value && !*end && t >= 0 && t <= 1e6;
            if (ok) o->timeout = t;
        } else
            known = 0;
        if (!known) {
            fprintf(stderr, "loom: error: launch: unknown option '%.*s' (see loom launch --help)\n", (int)n, arg);
            return 2;
        }
        if (!value) {
            fprintf(stderr, "loom: error: launch: %s needs a value\n", name);
            return 2;
        }
        if (!ok) {
            const char *want = !strcmp(name, "--master_port")     ? "a port number (0-65535; 0: a free one)"
                               : !strcmp(name, "--rdzv_endpoint") ? "HOST or HOST:PORT"
                               : !strcmp(name, "--node_rank")   ? "an integer >= 0"
                               : !strcmp(name, "--timeout")     ? "a number of seconds >= 0"
                               : !strcmp(name, "--master_addr") ? "a host name or address"
                               : !strcmp(name, "--nproc_per_node") ? "an integer in 1..4096, auto, cpu or gpu"
                               : !strcmp(name, "--num_gpus")       ? "an integer in 1..4096"
                                   : "an integer >= 1";
            fprintf(stderr, "loom: error: launch: %s wants %s, got '%s'\n", name, want, value);
            return 2;
        }
    }
    if (o->standalone) {
        if (o->nnodes != 1) {
            fprintf(stderr, "loom: error: launch: --standalone is one node; --nnodes %ld contradicts it\n", o->nnodes);
            return 2;
        }
        if (o->master_port != 29500 && o->master_port != 0) {
            /* torchrun's --standalone ignores the rendezvous endpoint it is given; a port the
             * user chose and that is not used would be a surprise, so it is named instead. */
            fprintf(stderr, "loom: error: launch: --standalone picks a free port; --master_port %ld contradicts it\n",
                    o->master_port);
            return 2;
        }
        o->master_addr = "127.0.0.1";
        o->master_port = 0;
    }
    if (o->master_port == 0 && o->nnodes > 1) {
        fprintf(stderr, "loom: error: launch: --master_port 0 (a free port) needs --nnodes 1: the other nodes "
                        "could not know it\n");
        return 2;
    }
    if (o->node_rank >= o->nnodes) {
        fprintf(stderr,
                "loom: error: launch: --node_rank %ld is out of range for --nnodes %ld (0 <= node_rank < nnodes)\n",
                o->node_rank, o->nnodes);
        return 2;
    }
    if (o->nproc * o->nnodes > INT32_MAX) {
        fprintf(stderr, "loom: error: launch: --nproc_per_node x --nnodes is too large\n");
        return 2;
    }
    if (i >= argc) {
        fprintf(stderr,
                "loom: error: launch: no command to run (usage: loom launch [options] [--] COMMAND [ARGS...])\n");
        return 2;
    }
    *first = i;
    return -1;
}

/* ---- the command ------------------------------------------------------------------------ */

static int is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Resolve COMMAND to a path to exec; also says whether it is this loom binary. Returns 0 and
 * prints one error line when it cannot be run. */
static int resolve_command(const char *word, char *path, size_t cap, int *self, int *subcommand)
{
    *self = *subcommand = 0;
    for (size_t k = 0; k < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; k++)
        if (!strcmp(word, SUBCOMMANDS[k])) *subcommand = 1;
    if (*subcommand || !strcmp(word, "loom")) {
        ssize_t n = readlink("/proc/self/exe", path, cap - 1);
        if (n <= 0 || (size_t)n >= cap - 1) {
            fprintf(stderr, "loom: error: launch: cannot find this loom binary (/proc/self/exe): %s\n",
                    strerror(errno));
            return 0;
        }
        path[n] = 0;
        *self = 1;
        return 1;
    }
    if (strchr(word, '/')) {
        if (!is_executable_file(word)) {
            fprintf(stderr, "loom: error: launch: command '%s' %s\n", word,
                    access(word, F_OK) ? "not found" : "is not an executable file");
            return 0;
        }
        snprintf(path, cap, "%s", word);
        return 1;
    }
    const char *dirs = getenv("PATH");
    if (!dirs) dirs = "/usr/local/bin:/usr/bin:/bin";
    while (1) {
        const char *colon = strchr(dirs, ':');
        size_t n = colon ? (size_t)(colon - dirs) : strlen(dirs);
        int w = n ? snprintf(path, cap, "%.*s/%s", (int)n, dirs, word) : snprintf(path, cap, "./%s", word);
        if (w > 0 && (size_t)w < cap && is_executable_file(path)) return 1;
        if (!colon) break;
        dirs = colon + 1;
    }
    fprintf(stderr, "loom: error: launch: command '%s' not found in PATH\n", word);
    return 0;
}

/* ---- signals ---------------------------------------------------------------------------- */

static int signal_pipe[2] = {-1, -1};
static const int HANDLED[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE};
static struct sigaction saved_actions[sizeof HANDLED / sizeof HANDLED[0]];

/* Two bytes per signal: the number, and 1 when a process sent it (kill, SI_USER) rather than
 * the terminal or the kernel - only then do the ranks, which share our process group, still
 * need it forwarded. */
static void on_signal(int sig, siginfo_t *info, void *context)
{
    (void)context;
    int saved = errno;
    unsigned char msg[2] = {(unsigned char)sig,
                            (unsigned char)(info && (info->si_code == SI_USER || info->si_code == SI_QUEUE))};
    ssize_t w = write(signal_pipe[1], msg, sizeof msg);
    (void)w;
    errno = saved;
}

/* The signal that stopped the last attempt (0: none), so restarts stop when the user stops us,
 * and whether it started any rank (a bad option or COMMAND is not retried). */
static int launch_signalled, launch_started;

int loom_launch_signalled(void) { return launch_signalled; }
int loom_launch_started(void) { return launch_started; }

static int install_signals(void)
{
    if (signal_pipe[0] >= 0) return 1; /* installed by an earlier attempt (--max_restarts) */
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK)) return 0;
    for (size_t k = 0; k < sizeof HANDLED / sizeof HANDLED[0]; k++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sigemptyset(&sa.sa_mask);
        if (sigaction(HANDLED[k], NULL, &saved_actions[k])) return 0;
        /* Ignored at start (nohup, a background job of a script): stays ignored, here and in
         * the ranks, as shells and nohup intend. */
        if ((HANDLED[k] == SIGINT || HANDLED[k] == SIGHUP) && saved_actions[k].sa_handler == SIG_IGN) continue;
        if (HANDLED[k] == SIGPIPE)
            sa.sa_handler = SIG_IGN; /* a closed stdout must not stop the ranks */
        else {
            sa.sa_sigaction = on_signal;
            sa.sa_flags = SA_SIGINFO | SA_RESTART | (HANDLED[k] == SIGCHLD ? SA_NOCLDSTOP : 0);
        }
        if (sigaction(HANDLED[k], &sa, NULL)) return 0;
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, HANDLED[k]);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
    }
    return 1;
}

static void restore_signals(void)
{
    for (size_t k = 0; k < sizeof HANDLED / sizeof HANDLED[0]; k++)
        sigaction(HANDLED[k], &saved_actions[k], NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static const char *signal_name(int sig, char *buf, size_t cap)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev)
        snprintf(buf, cap, "SIG%s", abbrev);
    else
        snprintf(buf, cap, "%d", sig);
    return buf;
}

/* ---- output relay ----------------------------------------------------------------------- */

typedef struct stream {
    int fd;     /* read end, -1 when closed */
    int out_fd; /* 1 or 2 */
    int rank;
    int live_cr;    /* rank 0: '\r' ends a segment */
    int mid_line;   /* a piece of an over-long line went out unterminated */
    int pending_cr; /* a '\r' was the last byte seen */
    char prefix[32];
    size_t prefix_len;
    char *buf;
    size_t len;
} stream;

static void write_all(int fd, const char *data, size_t n)
{
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* EPIPE and the like: the output is dropped, the ranks go on */
        data += w;
        n -= (size_t)w;
    }
}

/* Write the buffered segment (prefixed unless it continues a piece) plus `end`, in one write. */
static void emit(stream *s, const char *end, size_t end_len)
{
    static char out[LINE_CAP + 64];
    size_t n = 0;
    if (!s->mid_line) {
        memcpy(out, s->prefix, s->prefix_len);
        n = s->prefix_len;
    }
    memcpy(out + n, s->buf, s->len);
    n += s->len;
    memcpy(out + n, end, end_len);
    n += end_len;
    write_all(s->out_fd, out, n);
    s->len = 0;
    s->mid_line = end_len == 0;
}

static void relay_bytes(stream *s, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (s->pending_cr) {
            s->pending_cr = 0;
            if (c == '\n') {
                if (s->live_cr)
                    write_all(s->out_fd, "\n", 1); /* the "[rank 0] ...\r" already went */
                else
                    emit(s, "\r\n", 2);
                continue;
            }
            if (!s->live_cr) s->len = 0; /* a redraw: forget the text it overwrites */
        }
        if (c == '\n')
            emit(s, "\n", 1);
        else if (c == '\r') {
            s->pending_cr = 1;
            if (s->live_cr) emit(s, "\r", 1);
        } else {
            s->buf[s->len++] = c;
            if (s->len == LINE_CAP) emit(s, "", 0);
        }
    }
}

/* End of stream: flush a partial line with a newline added, close. */
static void close_stream(stream *s)
{
    if (s->fd < 0) return;
    if (s->pending_cr && s->live_cr)
        write_all(s->out_fd, "\n", 1); /* leave the last redraw standing */
    else if (s->pending_cr)
        emit(s, "\n", 1);
    else if (s->len || s->mid_line)
        emit(s, "\n", 1);
    s->pending_cr = 0;
    close(s->fd);
    s->fd = -1;
}

/* Read what is there (non-blocking). Returns 0 when the stream ended. */
static int drain(stream *s)
{
    char chunk[16384];
    while (s->fd >= 0) {
        ssize_t r = read(s->fd, chunk, sizeof chunk);
        if (r > 0) {
            relay_bytes(s, chunk, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        close_stream(s); /* EOF or error */
        return 0;
    }
    return 0;
}

/* ---- ranks ------------------------------------------------------------------------------ */

typedef struct child {
    pid_t pid; /* 0 once reaped */
    int rank;
    int status; /* wait status once reaped */
    int killed; /* SIGKILL sent */
    stream out, err;
} child;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* A port nobody listens on now, as torchrun finds one: bind to port 0 and ask. 0 on failure. */
static long free_port(const char *host)
{
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, "0", &hints, &found) != 0) return 0;
    long port = 0;
    for (struct addrinfo *a = found; a && !port; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        struct sockaddr_storage bound;
        socklen_t len = sizeof bound;
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && getsockname(fd, (struct sockaddr *)&bound, &len) == 0)
            port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                     : ((struct sockaddr_in *)&bound)->sin_port);
        close(fd);
    }
    freeaddrinfo(found);
    return port;
}

/* The ranks' GPUs (launch_gpus.c): on a node with GPUs, unless --nproc_per_node chose a
 * number or the CPU, one rank per chosen GPU. Returns 0 after one line. */
static int resolve_gpus(launch_options *o)
{
    static launch_gpus chosen;
    char err[512];
    int gpus = launch_gpu_count();
    int filtered = o->num_gpus || o->include || o->exclude;
    int cpu_word = o->nproc_word && (!strcmp(o->nproc_word, "cpu") || (!strcmp(o->nproc_word, "auto") && !gpus));
    if ((o->nproc_given || cpu_word) && filtered) {
        fprintf(stderr, "loom: error: launch: --nproc_per_node %s and --num_gpus/--include/--exclude both choose the "
                        "ranks: use one\n", o->nproc_word ? o->nproc_word : "N");
        return 0;
    }
    if (o->include && o->exclude) {
        fprintf(stderr, "loom: error: launch: --include and --exclude cannot be combined (DeepSpeed's rule): name the "
                        "GPUs with one\n");
        return 0;
    }
    if (gpus == 0) {
        if (o->include || o->exclude) {
            fprintf(stderr, "loom: error: launch: %s: no GPU on this node (/dev/nvidia0 ...)\n",
                    o->include ? "--include" : "--exclude");
            return 0;
        }
        if (o->num_gpus) o->nproc = o->num_gpus; /* as before: N ranks on the CPU */
        return 1;
    }
    if (o->nproc_given || cpu_word) return 1;
    if (!launch_gpus_select(gpus, o->include, o->exclude, o->num_gpus, &chosen, err, sizeof err)) {
        fprintf(stderr, "loom: error: launch: %s\n", err);
        return 0;
    }
    o->nproc = chosen.count;
    o->nproc_word = NULL;
    o->visible_devices = chosen.visible;
    fprintf(stderr, "loom launch: %d rank%s on GPU%s %s (CUDA_VISIBLE_DEVICES=%s for every rank; each binds its "
                    "LOCAL_RANK)\n",
            chosen.count, chosen.count == 1 ? "" : "s", chosen.count == 1 ? "" : "s", chosen.visible, chosen.visible);
    return 1;
}

/* --nproc_per_node auto|cpu|gpu and --master_port 0 made concrete. Returns 0 after one line. */
static int resolve_auto(launch_options *o)
{
    if (o->nproc_word) {
        int gpus = launch_gpu_count(), cores = cpu_count();
        int want_gpu = !strcmp(o->nproc_word, "gpu") || (!strcmp(o->nproc_word, "auto") && gpus > 0);
        if (want_gpu && gpus == 0) {
            fprintf(stderr, "loom: error: launch: --nproc_per_node gpu: no GPU found (/dev/nvidia0 ...)\n");
            return 0;
        }
        o->nproc = want_gpu ? gpus : cores > MAX_PROCS ? MAX_PROCS : cores;
        fprintf(stderr, "loom launch: --nproc_per_node %s: %ld ranks (%s)\n", o->nproc_word, o->nproc,
                want_gpu ? "GPUs" : "cores");
    }
    if (o->master_port == 0) {
        o->master_port = free_port(o->master_addr);
        if (!o->master_port) {
            fprintf(stderr, "loom: error: launch: --master_port 0: cannot find a free port on %s: %s\n", o->master_addr,
                    strerror(errno));
            return 0;
        }
        fprintf(stderr, "loom launch: %s: using port %ld\n", o->standalone ? "--standalone" : "--master_port 0",
                o->master_port);
    }
    return 1;
}

/* environ with our variables replaced or added. Strings are leaked into the (short-lived) launcher. */
static char **child_environment(const launch_options *o, long local, const char *omp, const char *tty,
                                int indent)
{
    char numbers[6][32];
    snprintf(numbers[0], sizeof numbers[0], "%ld", o->node_rank * o->nproc + local);
    snprintf(numbers[1], sizeof numbers[1], "%ld", o->nnodes * o->nproc);
    snprintf(numbers[2], sizeof numbers[2], "%ld", local);
    snprintf(numbers[3], sizeof numbers[3], "%ld", o->nproc);
    snprintf(numbers[4], sizeof numbers[4], "%ld", o->master_port);
    snprintf(numbers[5], sizeof numbers[5], "%ld", o->node_rank);
    char indent_text[16];
    snprintf(indent_text, sizeof indent_text, "%d", indent);
    /* name, value: a NULL value leaves the launcher's own variable (if any) in place. */
    const char *vars[][2] = {
        {"RANK", numbers[0]},          {"WORLD_SIZE", numbers[1]},
        {"LOCAL_RANK", numbers[2]},    {"LOCAL_WORLD_SIZE", numbers[3]},
        {"MASTER_ADDR", o->master_addr}, {"MASTER_PORT", numbers[4]},
        {"GROUP_RANK", numbers[5]},    {"LOOM_PROGRESS_TTY", tty},
        {"LOOM_PROGRESS_INDENT", tty ? indent_text : NULL}, {"OMP_NUM_THREADS", omp},
        {"CUDA_VISIBLE_DEVICES", o->visible_devices},
    };
    const size_t n_vars = sizeof vars / sizeof vars[0];
    size_t count = 0;
    while (environ[count])
        count++;
    char **envp = calloc(count + n_vars + 1, sizeof *envp);
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t e = 0; e < count; e++) {
        int ours = 0;
        for (size_t m = 0; m < n_vars; m++) {
            size_t len = strlen(vars[m][0]);
            /* the progress variables are always ours (a rank other than 0 must not draw) */
            int replaced = vars[m][1] || m == 7 || m == 8;
            if (replaced && !strncmp(environ[e], vars[m][0], len) && environ[e][len] == '=') ours = 1;
        }
        if (!ours) envp[k++] = environ[e];
    }
    for (size_t m = 0; m < n_vars; m++) {
        if (!vars[m][1]) continue;
        size_t len = strlen(vars[m][0]) + strlen(vars[m][1]) + 2;
        if (!(envp[k] = malloc(len))) return NULL;
        snprintf(envp[k++], len, "%s=%s", vars[m][0], vars[m][1]);
    }
    envp[k] = NULL;
    return envp;
}

/* Fork one rank. Returns 0 and prints a line on failure. */
static int spawn(child *c, const char *path, char **argv, char **envp)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC)) return 0;
    if (pipe2(err, O_CLOEXEC)) {
        close(out[0]);
        close(out[1]);
        return 0;
    }
    pid_t launcher = getpid();
    /* Signals stay blocked until the child has put back the default actions: a SIGTERM that
     * reached it before (signal_all stopping a run that is still starting ranks) ran the
     * launcher's handler in the child and wrote into the launcher's pipe, which took it for a
     * second signal from the user and sent SIGKILL at once. */
    sigset_t all, before;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &before);
    pid_t pid = fork();
    if (pid != 0) sigprocmask(SIG_SETMASK, &before, NULL);
    if (pid < 0) {
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        return 0;
    }
    if (pid == 0) {
        restore_signals(); /* the actions, then an empty mask: a pending signal acts as by default */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != launcher) _exit(127);
        if (dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) _exit(127);
        execve(path, argv, envp);
        char msg[4096 + 256];
        int n =
            snprintf(msg, sizeof msg, "loom launch: rank %d: cannot run '%s': %s\n", c->rank, path, strerror(errno));
        if (n > 0) write_all(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
    fcntl(err[0], F_SETFL, fcntl(err[0], F_GETFL) | O_NONBLOCK);
    c->pid = pid;
    c->out.fd = out[0];
    c->err.fd = err[0];
    return 1;
}

static void signal_all(child *children, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (children[i].pid > 0) {
            kill(children[i].pid, sig);
            if (sig == SIGKILL) children[i].killed = 1;
        }
}

static int exit_code_of(int status)
{
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

/* The job's secret for the rendezvous store, put in this process's environment so every rank
 * inherits it: the one given, else on a single node a fresh random one (32 bytes as hex). Nodes
 * cannot agree on a random one, so several nodes need it given. Returns 0 on success, else an
 * exit status. */
static int set_store_secret(const launch_options *o)
{
    const char *given = getenv("LOOM_STORE_SECRET");
    if (given && *given) return 0;
    if (o->nnodes > 1) {
        fprintf(stderr,
                "loom: error: launch: --nnodes %ld needs the same LOOM_STORE_SECRET on every node: run "
                "export LOOM_STORE_SECRET=$(openssl rand -hex 32) and pass it to each node's loom launch\n",
                o->nnodes);
        return 2;
    }
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            fprintf(stderr, "loom: error: launch: cannot make the job's secret: getrandom: %s\n", strerror(errno));
            return 1;
        }
        got += (size_t)r;
    }
    char hex[2 * sizeof raw + 1];
    for (size_t i = 0; i < sizeof raw; i++) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    if (setenv("LOOM_STORE_SECRET", hex, 1) != 0) {
        fprintf(stderr, "loom: error: launch: cannot set LOOM_STORE_SECRET: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* The running job: its ranks and the state of stopping them. */
typedef struct job {
    child *children;
    int n;
    struct pollfd *fds;
    stream **fd_streams;
    double timeout;       /* --timeout: grace between SIGTERM and SIGKILL */
    int exit_code;
    int shutting_down;
    int alive;
    double kill_deadline; /* SIGKILL to whoever still runs after this */
    double reaped_all_at; /* when the last rank was reaped; 0 before */
} job;

/* Everything before the first fork: options, GPUs, ports, COMMAND, the secret. Returns -1 to
 * go on (with *first the index of COMMAND and path its file), else an exit status. */
static int prepare_options(int argc, char **argv, launch_options *o, int *first, char *path, size_t cap,
                           int *subcommand)
{
    int rc = parse_options(argc, argv, o, first);
    if (rc >= 0) return rc;
    if (!resolve_gpus(o) || !resolve_auto(o)) return 2;
    int self = 0;
    if (!resolve_command(argv[*first], path, cap, &self, subcommand)) return 2;
    if ((rc = set_store_secret(o)) != 0) return rc;
    return -1;
}

/* argv of a rank: a sub-command word becomes "loom WORD ARGS..."; "loom ..." stays. */
static char **rank_argv(int argc, char **argv, int first, int subcommand)
{
    char **child_argv = calloc((size_t)(argc - first) + 2, sizeof *child_argv);
    if (!child_argv) return NULL;
    int a = 0;
    if (subcommand) child_argv[a++] = "loom";
    for (int k = first; k < argc; k++)
        child_argv[a++] = argv[k];
    child_argv[a] = NULL;
    return child_argv;
}

/* OMP_NUM_THREADS for the ranks when several share the cores and the user set none (NULL:
 * leave it). `buf` holds the value. */
static const char *omp_threads(const launch_options *o, char *buf, size_t cap)
{
    if (o->nproc <= 1 || getenv("OMP_NUM_THREADS")) return NULL;
    int cores = cpu_count();
    long threads = cores / o->nproc > 1 ? cores / o->nproc : 1;
    snprintf(buf, cap, "%ld", threads);
    fprintf(stderr,
            "loom launch: setting OMP_NUM_THREADS=%ld for each rank (%d cores / %ld ranks); "
            "set it yourself to tune\n",
            threads, cores, o->nproc);
    return buf;
}

/* Stop every rank: SIGTERM now, SIGKILL after the grace. */
static void begin_shutdown(job *j)
{
    j->shutting_down = 1;
    signal_all(j->children, j->n, SIGTERM);
    j->kill_deadline = now_seconds() + j->timeout;
}

/* Fork every rank with its relay streams. A rank that cannot start stops the others. */
static void start_ranks(job *j, const launch_options *o, const char *path, char **child_argv, const char *omp,
                        char *buffers)
{
    for (int i = 0; i < j->n; i++) {
        child *c = &j->children[i];
        c->rank = (int)(o->node_rank * o->nproc + i);
        stream *ss[2] = {&c->out, &c->err};
        for (int k = 0; k < 2; k++) {
            ss[k]->fd = -1;
            ss[k]->out_fd = k + 1;
            ss[k]->rank = c->rank;
            ss[k]->live_cr = c->rank == 0;
            ss[k]->buf = buffers + ((size_t)i * 2 + (size_t)k) * LINE_CAP;
            ss[k]->prefix_len = (size_t)snprintf(ss[k]->prefix, sizeof ss[k]->prefix, "[rank %d] ", c->rank);
        }
        /* Rank 0 draws its progress bar for our terminal (the relay passes '\r' through). */
        const char *tty = c->rank == 0 && isatty(STDOUT_FILENO) ? ttyname(STDOUT_FILENO) : NULL;
        char **envp = child_environment(o, i, omp, tty, (int)c->out.prefix_len);
        if (!envp || !spawn(c, path, child_argv, envp)) {
            fprintf(stderr, "loom launch: cannot start rank %d: %s; stopping the other ranks\n", c->rank,
                    strerror(errno));
            j->exit_code = 1;
            j->shutting_down = 1;
            signal_all(j->children, i, SIGTERM);
            j->kill_deadline = now_seconds() + j->timeout;
            return;
        }
        j->alive++;
        launch_started = 1;
    }
}

/* Reap whoever exited (the SIGCHLD byte only wakes poll up); the first failure stops the rest. */
static void reap_ranks(job *j)
{
    for (int i = 0; i < j->n; i++) {
        child *c = &j->children[i];
        if (c->pid <= 0) continue;
        int status = 0;
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r != c->pid) continue;
        c->pid = 0;
        c->status = status;
        j->alive--;
        drain(&c->out); /* its last words come before the report */
        drain(&c->err);
        int failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (!failed || j->shutting_down) continue;
        char name[32];
        j->exit_code = exit_code_of(status);
        if (WIFSIGNALED(status))
            fprintf(stderr, "loom launch: rank %d exited with signal %s%s\n", c->rank,
                    signal_name(WTERMSIG(status), name, sizeof name), j->alive ? "; stopping the other ranks" : "");
        else
            fprintf(stderr, "loom launch: rank %d exited with status %d%s\n", c->rank, WEXITSTATUS(status),
                    j->alive ? "; stopping the other ranks" : "");
        begin_shutdown(j);
    }
}

/* After the grace: SIGKILL to the ranks still running, named once. */
static void kill_stragglers(job *j, double now)
{
    if (!j->shutting_down || j->alive == 0 || now < j->kill_deadline) return;
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < j->n && len < sizeof list - 16; i++)
        if (j->children[i].pid > 0 && !j->children[i].killed)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", len ? ", " : "", j->children[i].rank);
    if (!len) return;
    fprintf(stderr, "loom launch: rank%s %s still running %g s after being told to stop; sending SIGKILL\n",
            strchr(list, ',') ? "s" : "", list, j->timeout);
    signal_all(j->children, j->n, SIGKILL);
}

/* The poll set: the signal pipe, then every open stream. Returns its size. */
static int poll_set(job *j)
{
    int nfds = 0;
    j->fds[nfds].fd = signal_pipe[0];
    j->fds[nfds].events = POLLIN;
    j->fd_streams[nfds++] = NULL;
    for (int i = 0; i < j->n; i++) {
        stream *ss[2] = {&j->children[i].out, &j->children[i].err};
        for (int k = 0; k < 2; k++)
            if (ss[k]->fd >= 0) {
                j->fds[nfds].fd = ss[k]->fd;
                j->fds[nfds].events = POLLIN;
                j->fd_streams[nfds++] = ss[k];
            }
    }
    return nfds;
}

/* Signals to the launcher: the first is forwarded (unless the terminal sent it to everyone),
 * a second one during the grace kills. */
static void handle_signals(job *j)
{
    unsigned char msg[2];
    while (read(signal_pipe[0], msg, sizeof msg) == (ssize_t)sizeof msg) {
        int sig = msg[0], from_process = msg[1];
        if (sig == SIGCHLD) continue;
        launch_signalled = sig;
        if (!j->shutting_down) {
            j->shutting_down = 1;
            j->exit_code = 128 + sig;
            char name[32];
            if (j->alive)
                fprintf(stderr, "loom launch: got %s; stopping the ranks\n", signal_name(sig, name, sizeof name));
            if (from_process) signal_all(j->children, j->n, sig);
            j->kill_deadline = now_seconds() + j->timeout;
        } else if (j->alive) {
            fprintf(stderr, "loom launch: second signal; sending SIGKILL\n");
            signal_all(j->children, j->n, SIGKILL);
        }
    }
}

/* Relay output, reap, escalate, until every rank is gone and its pipes are drained. */
static void supervise(job *j)
{
    for (;;) {
        reap_ranks(j);
        double now = now_seconds();
        if (j->alive == 0 && j->reaped_all_at == 0) j->reaped_all_at = now;
        kill_stragglers(j, now);
        int nfds = poll_set(j);
        if (j->alive == 0) {
            /* Every rank is gone: take what is still in the pipes, but do not wait long for
             * descendants that may hold them open. */
            if (nfds == 1 || now - j->reaped_all_at > 2.0) break;
        }
        int timeout_ms = -1;
        if (j->alive == 0)
            timeout_ms = 100;
        else if (j->shutting_down && now < j->kill_deadline)
            timeout_ms = (int)((j->kill_deadline - now) * 1000) + 1;
        else if (j->shutting_down)
            timeout_ms = 200; /* after SIGKILL: waiting for the reaper */
        int ready = poll(j->fds, (nfds_t)nfds, timeout_ms);
        if (ready < 0 && errno != EINTR) break;
        if (ready == 0 && j->alive == 0) break;
        if (ready <= 0) continue;
        if (j->fds[0].revents & POLLIN) handle_signals(j);
        for (int f = 1; f < nfds; f++)
            if (j->fds[f].revents & (POLLIN | POLLHUP | POLLERR)) drain(j->fd_streams[f]);
    }
    for (int i = 0; i < j->n; i++) {
        close_stream(&j->children[i].out);
        close_stream(&j->children[i].err);
    }
}

/* One attempt of the job (launch_restarts.c runs it again after a failure). */
int loom_launch_attempt(int argc, char **argv)
{
    launch_signalled = launch_started = 0;
    launch_options o = {
        .nproc = 1, .nnodes = 1, .node_rank = 0, .master_port = 29500, .master_addr = "127.0.0.1", .timeout = 30.0};
    char path[PATH_MAX];
    int first = 0, subcommand = 0;
    int rc = prepare_options(argc, argv, &o, &first, path, sizeof path, &subcommand);
    if (rc >= 0) return rc;
    char **child_argv = rank_argv(argc, argv, first, subcommand);
    if (!child_argv) return loom_command_fail(LOOM_E_NOMEM);
    char omp_value[32];
    const char *omp = omp_threads(&o, omp_value, sizeof omp_value);

    job j = {.n = (int)o.nproc, .timeout = o.timeout};
    j.children = calloc((size_t)j.n, sizeof *j.children);
    char *buffers = malloc((size_t)j.n * 2 * LINE_CAP);
    j.fds = calloc((size_t)j.n * 2 + 1, sizeof *j.fds);
    j.fd_streams = calloc((size_t)j.n * 2 + 1, sizeof *j.fd_streams);
    if (!j.children || !buffers || !j.fds || !j.fd_streams) return loom_command_fail(LOOM_E_NOMEM);
    if (!install_signals()) {
        fprintf(stderr, "loom: error: launch: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    start_ranks(&j, &o, path, child_argv, omp, buffers);
    supervise(&j);
    return j.exit_code;
}
