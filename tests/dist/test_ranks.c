/* test_ranks.c - rank detection (core/dist/ranks.c): every source through setenv, and the errors. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ranks.h"
#include "test_util.h"

static const char *const ALL[] = {"RANK",
                                  "WORLD_SIZE",
                                  "LOCAL_RANK",
                                  "LOCAL_WORLD_SIZE",
                                  "MASTER_ADDR",
                                  "MASTER_PORT",
                                  "OMPI_COMM_WORLD_RANK",
                                  "OMPI_COMM_WORLD_SIZE",
                                  "OMPI_COMM_WORLD_LOCAL_RANK",
                                  "OMPI_COMM_WORLD_LOCAL_SIZE",
                                  "PMI_RANK",
                                  "PMI_SIZE",
                                  "MPI_LOCALRANKID",
                                  "MPI_LOCALNRANKS",
                                  "SLURM_PROCID",
                                  "SLURM_NTASKS",
                                  "SLURM_LOCALID",
                                  "SLURM_NTASKS_PER_NODE",
                                  "SLURM_TASKS_PER_NODE",
                                  "SLURM_NODEID",
                                  "SLURM_JOB_NODELIST",
                                  "SLURM_NODELIST"};

/* Clear everything, then set NAME=VALUE pairs (NULL-terminated). */
static void env_is(const char *first, ...)
{
    for (size_t i = 0; i < sizeof ALL / sizeof ALL[0]; i++)
        unsetenv(ALL[i]);
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *))
        setenv(name, va_arg(ap, const char *), 1);
    va_end(ap);
}

static loom_ranks r;

static int ok(void)
{
    loom_error_clear();
    loom_status st = loom_ranks_detect(&r);
    if (st != LOOM_OK) fprintf(stderr, "unexpected error: %s\n", loom_error_message());
    return st == LOOM_OK;
}

static int same(int rank, int world, int local, int local_world, const char *addr, int port, const char *source)
{
    int good = r.rank == rank && r.world_size == world && r.local_rank == local && r.local_world_size == local_world &&
               !strcmp(r.master_addr, addr) && r.master_port == port && !strcmp(r.source, source);
    if (!good)
        fprintf(stderr, "got %d/%d local %d/%d %s:%d (%s)\n", (int)r.rank, (int)r.world_size, (int)r.local_rank,
                (int)r.local_world_size, r.master_addr, (int)r.master_port, r.source);
    return good;
}

/* Detection fails with a message containing every given piece. */
static int fails_with(const char *a, const char *b)
{
    loom_error_clear();
    loom_status st = loom_ranks_detect(&r);
    const char *m = loom_error_message();
    int good = st == LOOM_E_INVALID && strstr(m, a) && (!b || strstr(m, b)) && !strchr(m, '\n') && r.rank == 0 &&
               r.world_size == 1;
    if (!good) fprintf(stderr, "status %d, message '%s' (want '%s'%s%s)\n", (int)st, m, a, b ? ", " : "", b ? b : "");
    return good;
}

int main(void)
{
    /* Nothing set: one process. */
    env_is(NULL);
    CHECK(ok() && same(0, 1, 0, 1, "127.0.0.1", 29500, "single process"));

    /* torchrun / loom launch */
    env_is("RANK", "5", "WORLD_SIZE", "8", "LOCAL_RANK", "1", "LOCAL_WORLD_SIZE", "4", "MASTER_ADDR", "10.0.0.1",
           "MASTER_PORT", "1234", NULL);
    CHECK(ok() && same(5, 8, 1, 4, "10.0.0.1", 1234, "torchrun/loom launch"));
    env_is("RANK", "2", "WORLD_SIZE", "3", NULL); /* no LOCAL_*: one node */
    CHECK(ok() && same(2, 3, 2, 3, "127.0.0.1", 29500, "torchrun/loom launch"));
    /* RANK wins over the others */
    env_is("RANK", "1", "WORLD_SIZE", "2", "OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "4", "SLURM_PROCID",
           "0", "SLURM_NTASKS", "1", NULL);
    CHECK(ok() && same(1, 2, 1, 2, "127.0.0.1", 29500, "torchrun/loom launch"));

    /* Open MPI */
    env_is("OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_RANK", "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE", "2", "MASTER_ADDR", "head", NULL);
    CHECK(ok() && same(3, 4, 1, 2, "head", 29500, "mpirun"));
    /* MPICH / Intel MPI, and PMI before Slurm (mpirun inside an allocation) */
    env_is("PMI_RANK", "1", "PMI_SIZE", "2", "MPI_LOCALRANKID", "1", "MPI_LOCALNRANKS", "2", "SLURM_PROCID", "0",
           "SLURM_NTASKS", "1", NULL);
    CHECK(ok() && same(1, 2, 1, 2, "127.0.0.1", 29500, "mpirun"));

    /* srun */
    env_is("SLURM_PROCID", "6", "SLURM_NTASKS", "8", "SLURM_LOCALID", "2", "SLURM_NTASKS_PER_NODE", "4",
           "SLURM_JOB_NODELIST", "gpu[03-04]", "MASTER_PORT", "29600", NULL);
    CHECK(ok() && same(6, 8, 2, 4, "gpu03", 29600, "srun"));
    env_is("SLURM_PROCID", "4", "SLURM_NTASKS", "5", "SLURM_LOCALID", "0", "SLURM_TASKS_PER_NODE", "2(x2),1",
           "SLURM_NODEID", "2", "SLURM_JOB_NODELIST", "a1,b2,c3", NULL);
    CHECK(ok() && same(4, 5, 0, 1, "a1", 29500, "srun"));
    env_is("SLURM_PROCID", "1", "SLURM_NTASKS", "4", "SLURM_LOCALID", "1", "SLURM_TASKS_PER_NODE", "2(x2)",
           "SLURM_NODEID", "0", "SLURM_NODELIST", "node[7,9-10],cpu1", NULL);
    CHECK(ok() && same(1, 4, 1, 2, "node7", 29500, "srun"));
    env_is("SLURM_PROCID", "0", "SLURM_NTASKS", "2", "SLURM_LOCALID", "0", "SLURM_NTASKS_PER_NODE", "1",
           "SLURM_JOB_NODELIST", "node[01-02]", "MASTER_ADDR", "given", NULL);
    CHECK(ok() && same(0, 2, 0, 1, "given", 29500, "srun"));                      /* MASTER_ADDR wins */
    env_is("SLURM_PROCID", "1", "SLURM_NTASKS", "2", "SLURM_LOCALID", "1", NULL); /* one node, no list */
    CHECK(ok() && same(1, 2, 1, 2, "127.0.0.1", 29500, "srun"));

    /* Errors: each names the variable. */
    env_is("RANK", "1", NULL);
    CHECK(fails_with("RANK is set but WORLD_SIZE is not", NULL));
    env_is("WORLD_SIZE", "4", NULL);
    CHECK(fails_with("WORLD_SIZE is set but RANK is not", NULL));
    env_is("RANK", "1x", "WORLD_SIZE", "4", NULL);
    CHECK(fails_with("RANK='1x' is not an integer", NULL));
    env_is("RANK", " 1", "WORLD_SIZE", "4", NULL);
    CHECK(fails_with("RANK=' 1' is not an integer", NULL));
    env_is("RANK", "0", "WORLD_SIZE", "99999999999", NULL);
    CHECK(fails_with("WORLD_SIZE='99999999999' is out of range", NULL));
    env_is("RANK", "4", "WORLD_SIZE", "4", NULL);
    CHECK(fails_with("RANK=4 is out of range", "WORLD_SIZE=4"));
    env_is("RANK", "-1", "WORLD_SIZE", "4", NULL);
    CHECK(fails_with("RANK=-1 is out of range", NULL));
    env_is("RANK", "0", "WORLD_SIZE", "0", NULL);
    CHECK(fails_with("WORLD_SIZE=0 must be at least 1", NULL));
    env_is("RANK", "0", "WORLD_SIZE", "4", "LOCAL_RANK", "2", "LOCAL_WORLD_SIZE", "2", NULL);
    CHECK(fails_with("LOCAL_RANK=2 is out of range", "LOCAL_WORLD_SIZE=2"));
    env_is("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "0", "LOCAL_WORLD_SIZE", "3", NULL);
    CHECK(fails_with("LOCAL_WORLD_SIZE=3 is out of range", "WORLD_SIZE=2"));
    env_is("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "zero", NULL);
    CHECK(fails_with("LOCAL_RANK='zero' is not an integer", NULL));
    env_is("MASTER_PORT", "0", NULL);
    CHECK(fails_with("MASTER_PORT='0' is not a port number", NULL));
    env_is("MASTER_PORT", "80a", NULL);
    CHECK(fails_with("MASTER_PORT='80a'", NULL));
    env_is("MASTER_PORT", "65536", NULL);
    CHECK(fails_with("MASTER_PORT='65536'", NULL));
    env_is("OMPI_COMM_WORLD_RANK", "9", "OMPI_COMM_WORLD_SIZE", "4", NULL);
    CHECK(fails_with("OMPI_COMM_WORLD_RANK=9 is out of range", "OMPI_COMM_WORLD_SIZE=4"));
    env_is("OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_RANK", "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE", "2", NULL); /* two nodes and no MASTER_ADDR */
    CHECK(fails_with("MASTER_ADDR is not set", "mpirun"));
    env_is("PMI_SIZE", "2", NULL);
    CHECK(fails_with("PMI_SIZE is set but PMI_RANK is not", NULL));
    env_is("SLURM_PROCID", "x", "SLURM_NTASKS", "2", NULL);
    CHECK(fails_with("SLURM_PROCID='x' is not an integer", NULL));
    env_is("SLURM_PROCID", "0", "SLURM_NTASKS", "4", "SLURM_LOCALID", "0", "SLURM_NTASKS_PER_NODE", "2",
           "SLURM_JOB_NODELIST", "rack[1-2]-node[1-2]", NULL);
    CHECK(fails_with("SLURM_JOB_NODELIST='rack[1-2]-node[1-2]' is too complex", "export MASTER_ADDR"));
    env_is("SLURM_PROCID", "0", "SLURM_NTASKS", "4", "SLURM_LOCALID", "0", "SLURM_NTASKS_PER_NODE", "2", NULL);
    CHECK(fails_with("MASTER_ADDR is not set", "srun"));
    env_is("SLURM_PROCID", "0", "SLURM_NTASKS", "4", "SLURM_LOCALID", "0", "SLURM_TASKS_PER_NODE", "2(x2)",
           "SLURM_NODEID", "5", NULL);
    CHECK(fails_with("SLURM_TASKS_PER_NODE='2(x2)' cannot be read for node 5", NULL));

    env_is(NULL);
    return test_finish("test_ranks");
}
