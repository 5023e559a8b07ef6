/*
 * ranks.h - which rank this process is, read from the environment a launcher leaves.
 *
 * Sources, first match wins (a source matches when its rank or its size variable is set):
 *   "torchrun/loom launch"  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
 *   "mpirun"                OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE (Open MPI)
 *   "mpirun"                PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS (MPICH, Intel MPI)
 *   "srun"                  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE
 *                           (else this node's entry of SLURM_TASKS_PER_NODE, e.g. "4(x2),2")
 *   "single process"        nothing set: rank 0 of 1
 * A source's rank and size must both be set. Its local rank and local size default to the
 * rank and the size (all ranks on one node) when absent.
 *
 * MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500) name rank 0's rendezvous
 * store. Under srun without MASTER_ADDR the address is the first host of SLURM_JOB_NODELIST
 * ("node[03-06]" -> "node03"); a node list too complex to read is an error asking for
 * MASTER_ADDR. Ranks spread over several nodes (local size < size) with no MASTER_ADDR and no
 * node list are an error too: 127.0.0.1 would only reach rank 0 from its own node.
 *
 * Every value is checked: integers must parse fully, 0 <= rank < size, 0 <= local rank <
 * local size <= size, 1 <= port <= 65535. A failure is LOOM_E_INVALID with a one-line message
 * (error.h) naming the variable and its value.
 */
#ifndef LOOM_CORE_RANKS_H
#define LOOM_CORE_RANKS_H

#include "error.h" /* LOOM_API */

#include <loom/loom.h>

typedef struct loom_ranks {
    int32_t rank;
    int32_t world_size;
    int32_t local_rank;
    int32_t local_world_size;
    char master_addr[256];
    int32_t master_port;
    const char *source; /* static string, see above */
} loom_ranks;

/* Fill *out from the environment. LOOM_OK, or LOOM_E_INVALID with the message set (and *out
 * holding the single-process defaults). */
LOOM_API loom_status loom_ranks_detect(loom_ranks *out);

#endif
