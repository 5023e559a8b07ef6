/*
 * trainer_nodes.c - which process writes to disk on each node: HF's should_save
 * (--save_on_each_node), and the check that the nodes it is for do have disks of their own.
 *
 * HF's TrainingArguments.should_save is the node's local main process (local rank 0) with
 * save_on_each_node, else the world's main process (rank 0). HF says the flag "should not be
 * activated when the different nodes use the same storage", and then lets every node write the
 * same names into one folder; loom's saves delete, seal and rename folders, which two nodes doing
 * at once in one folder would break, so it checks before the first step and refuses
 * (docs/checkpoints.md#save-on-each-node).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"
#include "trainer_internal.h"

int loom_trainer_saves_here(const loom_trainer *t)
{
    return t->args.save_on_each_node ? t->local_rank == 0 : t->rank == 0;
}

static loom_status probe_path(const loom_trainer *t, double nonce, int rank, char *out, size_t size)
{
    char name[96];
    snprintf(name, sizeof name, ".loom-node-probe-%.0f-%d", nonce, rank);
    return loom_path_join(out, size, t->args.output_dir, name);
}

/* Each node's writer leaves a file named for the run and its rank in output_dir; a writer that
 * finds another's file shares the folder with that node. The nonce (rank 0's, taken by all)
 * keeps a probe a killed run left behind from passing for this run's. Collective. */
loom_status loom_trainer_check_node_disks(loom_trainer *t)
{
    if (!t->args.save_on_each_node || t->world_size == 1) return LOOM_OK;
    const int writer = loom_trainer_saves_here(t);
    /* Counted, not taken from LOCAL_WORLD_SIZE, which a launcher may leave out (then it defaults
     * to the world size, core/dist/ranks.h, while LOCAL_RANK still makes a writer per node). */
    double writers = writer;
    loom_status st = loom_trainer_reduce_f64(t, &writers, 1, LOOM_REDUCE_SUM);
    if (st != LOOM_OK || writers <= 1) return st;
    /* Exact in a double: 52 bits. */
    const uint64_t mixed = (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid();
    double nonce = t->rank == 0 ? (double)(mixed & ((1ull << 52) - 1)) : 0;
    st = loom_trainer_reduce_f64(t, &nonce, 1, LOOM_REDUCE_MAX);
    if (st != LOOM_OK) return st;
    char mine[4096];
    double failed = 0;
    if (writer) {
        int fd = -1;
        if ((st = probe_path(t, nonce, t->rank, mine, sizeof mine)) == LOOM_OK &&
            (fd = open(mine, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
            st = loom_error(LOOM_E_IO, "--save_on_each_node: cannot write in %s: %s", t->args.output_dir,
                            strerror(errno));
        if (fd >= 0) close(fd);
        failed = st != LOOM_OK;
    }
    loom_status agreed = loom_trainer_reduce_f64(t, &failed, 1, LOOM_REDUCE_MAX);
    if (agreed == LOOM_OK && failed > 0 && st == LOOM_OK)
        agreed = loom_error(LOOM_E_IO, "--save_on_each_node: another node cannot write in %s", t->args.output_dir);
    if (st != LOOM_OK || agreed != LOOM_OK) {
        if (writer && st == LOOM_OK) unlink(mine);
        return st != LOOM_OK ? st : agreed;
    }
    /* Who saw whom, as one number: 1 + seer * world + seen. */
    double seen = 0;
    for (int r = 0; writer && r < t->world_size && seen == 0; r++) {
        char other[4096];
        if (r != t->rank && probe_path(t, nonce, r, other, sizeof other) == LOOM_OK && access(other, F_OK) == 0)
            seen = 1 + (double)t->rank * t->world_size + r;
    }
    /* Every writer has looked before this returns, so its probe can go. */
    st = loom_trainer_reduce_f64(t, &seen, 1, LOOM_REDUCE_MAX);
    if (writer) unlink(mine);
    if (st != LOOM_OK) return st;
    if (seen > 0) {
        long long code = (long long)seen - 1;
        return loom_error(LOOM_E_INVALID,
                          "--save_on_each_node: %s is one folder shared by several nodes (rank %lld found the file "
                          "rank %lld wrote there from another node): on a shared filesystem leave --save_on_each_node "
                          "out, rank 0 saves for all",
                          t->args.output_dir, code / t->world_size, code % t->world_size);
    }
    return LOOM_OK;
}
