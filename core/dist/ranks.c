/*
 * ranks.c - rank detection from launcher environment variables (see ranks.h).
 */
#include "ranks.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct rank_source {
    const char *name;
    const char *rank, *size, *local_rank, *local_size;
} rank_source;

static const rank_source SOURCES[] = {
    {"torchrun/loom launch", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
    {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"mpirun", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
};

/* A set, non-empty variable, or NULL. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Parse all of `text` as a decimal int32. */
static int parse_int(const char *text, int32_t *out)
{
    if (!text || !(isdigit((unsigned char)text[0]) || (text[0] == '-' && isdigit((unsigned char)text[1])))) return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < INT32_MIN || v > INT32_MAX) return 0;
    *out = (int32_t)v;
    return 1;
}

static loom_status read_int(const char *name, int32_t *out)
{
    const char *text = getenv(name);
    if (parse_int(text, out)) return LOOM_OK;
    const char *digits = text && *text == '-' ? text + 1 : text;
    if (digits && *digits && strspn(digits, "0123456789") == strlen(digits))
        return loom_error(LOOM_E_INVALID, "%s='%s' is out of range", name, text);
    return loom_error(LOOM_E_INVALID, "%s='%s' is not an integer", name, text);
}

/* SLURM_TASKS_PER_NODE ("2(x3),1": three nodes with 2 tasks, then one with 1): the entry for
 * node `node`. 0 when it cannot be read. */
static int32_t slurm_tasks_on_node(const char *list, int32_t node)
{
    const char *p = list;
    while (p && *p) {
        char *end = NULL;
        long tasks = strtol(p, &end, 10), repeat = 1;
        if (end == p || tasks <= 0) return 0;
        p = end;
        if (p[0] == '(' && p[1] == 'x') {
            repeat = strtol(p + 2, &end, 10);
            if (end == p + 2 || *end != ')' || repeat <= 0) return 0;
            p = end + 1;
        }
        if (node < repeat) return tasks > INT32_MAX ? 0 : (int32_t)tasks;
        node -= (int32_t)repeat;
        if (*p == ',')
            p++;
        else if (*p)
            return 0;
    }
    return 0;
}

/* The first host of a Slurm node list: "a", "a,b", "node[01-04]", "gpu[3,5-6],cpu1". 0 when
 * the list is of another shape (several brackets, a suffix after the bracket, ...). */
static int slurm_first_host(const char *list, char *out, size_t cap)
{
    size_t n = 0;
    int depth = 0;
    while (list[n] && !(list[n] == ',' && depth == 0)) {
        if (list[n] == '[')
            depth++;
        else if (list[n] == ']')
            depth--;
        n++;
    }
    const char *open = memchr(list, '[', n);
    if (!open) {
        if (n == 0 || n >= cap) return 0;
        memcpy(out, list, n);
        out[n] = 0;
        return 1;
    }
    const char *close = memchr(open, ']', (size_t)(list + n - open));
    if (!close || close != list + n - 1 || memchr(open + 1, '[', (size_t)(close - open - 1))) return 0;
    size_t prefix = (size_t)(open - list), digits = 0;
    while (isdigit((unsigned char)open[1 + digits]))
        digits++;
    char after = open[1 + digits];
    if (prefix == 0 || digits == 0 || !(after == '-' || after == ',' || after == ']')) return 0;
    if (prefix + digits >= cap) return 0;
    memcpy(out, list, prefix);
    memcpy(out + prefix, open + 1, digits);
    out[prefix + digits] = 0;
    return 1;
}

static void set_defaults(loom_ranks *out)
{
    memset(out, 0, sizeof *out);
    out->world_size = 1;
    out->local_world_size = 1;
    snprintf(out->master_addr, sizeof out->master_addr, "127.0.0.1");
    out->master_port = 29500;
    out->source = "single process";
}

static loom_status detect(loom_ranks *out)
{
    const rank_source *src = NULL;
    for (size_t i = 0; i < sizeof SOURCES / sizeof SOURCES[0] && !src; i++)
        if (env(SOURCES[i].rank) || env(SOURCES[i].size)) src = &SOURCES[i];

    if (src) {
        if (!env(src->rank) || !env(src->size))
            return loom_error(LOOM_E_INVALID, "%s is set but %s is not (%s sets both)",
                              env(src->rank) ? src->rank : src->size, env(src->rank) ? src->size : src->rank,
                              src->name);
        loom_status st = read_int(src->rank, &out->rank);
        if (st == LOOM_OK) st = read_int(src->size, &out->world_size);
        if (st != LOOM_OK) return st;
        if (out->world_size < 1)
            return loom_error(LOOM_E_INVALID, "%s=%s must be at least 1", src->size, getenv(src->size));
        if (out->rank < 0 || out->rank >= out->world_size)
            return loom_error(LOOM_E_INVALID, "%s=%s is out of range: it must be in [0, %s=%d)", src->rank,
                              getenv(src->rank), src->size, (int)out->world_size);
        out->local_rank = out->rank;
        out->local_world_size = out->world_size;
        const char *local_size_name = src->local_size;
        if (env(src->local_rank)) {
            st = read_int(src->local_rank, &out->local_rank);
            if (st != LOOM_OK) return st;
        }
        int32_t node = 0;
        if (env(src->local_size)) {
            st = read_int(src->local_size, &out->local_world_size);
            if (st != LOOM_OK) return st;
        } else if (!strcmp(src->name, "srun") && env("SLURM_TASKS_PER_NODE") &&
                   (!env("SLURM_NODEID") || parse_int(getenv("SLURM_NODEID"), &node))) {
            int32_t tasks = slurm_tasks_on_node(getenv("SLURM_TASKS_PER_NODE"), node);
            if (tasks <= 0)
                return loom_error(LOOM_E_INVALID,
                                  "SLURM_TASKS_PER_NODE='%s' cannot be read for node %d: set SLURM_NTASKS_PER_NODE",
                                  getenv("SLURM_TASKS_PER_NODE"), (int)node);
            out->local_world_size = tasks;
            local_size_name = "SLURM_TASKS_PER_NODE";
        }
        if (out->local_world_size < 1 || out->local_world_size > out->world_size)
            return loom_error(LOOM_E_INVALID, "%s=%d is out of range: it must be in [1, %s=%d]", local_size_name,
                              (int)out->local_world_size, src->size, (int)out->world_size);
        if (out->local_rank < 0 || out->local_rank >= out->local_world_size)
            return loom_error(LOOM_E_INVALID, "%s=%d is out of range: it must be in [0, %s=%d)", src->local_rank,
                              (int)out->local_rank, local_size_name, (int)out->local_world_size);
        out->source = src->name;
    }

    const char *addr = env("MASTER_ADDR");
    if (addr) {
        if (strlen(addr) >= sizeof out->master_addr)
            return loom_error(LOOM_E_INVALID, "MASTER_ADDR is longer than %zu characters", sizeof out->master_addr - 1);
        snprintf(out->master_addr, sizeof out->master_addr, "%s", addr);
    } else if (src && !strcmp(src->name, "srun") && (env("SLURM_JOB_NODELIST") || env("SLURM_NODELIST"))) {
        const char *name = env("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
        if (!slurm_first_host(getenv(name), out->master_addr, sizeof out->master_addr))
            return loom_error(LOOM_E_INVALID,
                              "MASTER_ADDR is not set and %s='%s' is too complex to read: "
                              "export MASTER_ADDR=<the host of rank 0>",
                              name, getenv(name));
    } else if (out->local_world_size < out->world_size) {
        return loom_error(LOOM_E_INVALID,
                          "MASTER_ADDR is not set and the %d ranks span several nodes (%s, %d on "
                          "this node): export MASTER_ADDR=<the host of rank 0>",
                          (int)out->world_size, out->source, (int)out->local_world_size);
    }

    if (env("MASTER_PORT")) {
        if (!parse_int(getenv("MASTER_PORT"), &out->master_port) || out->master_port < 1 || out->master_port > 65535)
            return loom_error(LOOM_E_INVALID, "MASTER_PORT='%s' is not a port number (1-65535)", getenv("MASTER_PORT"));
    }
    return LOOM_OK;
}

loom_status loom_ranks_detect(loom_ranks *out)
{
    set_defaults(out);
    loom_status st = detect(out);
    if (st != LOOM_OK) set_defaults(out);
    return st;
}
