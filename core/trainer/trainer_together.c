/*
 * trainer_together.c - a rank that fails on its own stops every rank, in its own words.
 *
 * Some steps of a run are taken by each rank alone, from its own disk: finding the checkpoint to
 * resume from, reading the best checkpoint at the end. On nodes with disks of their own a file
 * may be on one node and not on another (docs/checkpoints.md#files-on-one-node). A rank that
 * failed there and returned would leave the others in the next collective until --ddp_timeout;
 * one that went on without the file would train or evaluate other weights than the rest. So the
 * ranks settle it in two collectives: the first failing rank is found, and its line is broadcast,
 * so that every rank stops with that same line, prefixed "rank R: ". Rank 0's line is the run's,
 * as every error of rank 0 is: it is not prefixed where it is also this rank's own failure (every
 * rank failing alike on one shared disk says what one process says).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "trainer_internal.h"

#define LINE 2048

loom_status loom_trainer_first_rank(loom_trainer *t, int yes, int *rank)
{
    /* The largest world - rank among the ranks that say yes (0: none). */
    double first = yes ? (double)(t->world_size - t->rank) : 0;
    loom_status st = LOOM_OK;
    if (t->world_size > 1) st = loom_trainer_reduce_f64(t, &first, 1, LOOM_REDUCE_MAX);
    *rank = st == LOOM_OK && first > 0 ? t->world_size - (int)first : -1;
    return st;
}

loom_status loom_trainer_fail_together(loom_trainer *t, loom_status mine)
{
    if (t->world_size < 2) return mine;
    /* The comm plugin's own errors must not replace this rank's message. */
    char saved[LINE] = "";
    if (mine != LOOM_OK) snprintf(saved, sizeof saved, "%s", loom_error_message());
    const loom_comm_vtable *cv = t->comm.vtable;
    int root = -1;
    loom_status st = loom_trainer_first_rank(t, mine != LOOM_OK, &root);
    if (st == LOOM_OK && root < 0) return LOOM_OK;
    /* The status, then the line. */
    unsigned char message[sizeof(int32_t) + LINE] = {0};
    if (root == t->rank) {
        const int32_t code = (int32_t)mine;
        memcpy(message, &code, sizeof code);
        snprintf((char *)message + sizeof code, LINE, "%s", saved);
    }
    if (st == LOOM_OK) st = cv->broadcast(t->comm.instance, message, sizeof message, LOOM_DTYPE_U8, root, NULL);
    if (st != LOOM_OK) return mine != LOOM_OK ? loom_error(mine, "%s", saved) : st;
    int32_t code;
    memcpy(&code, message, sizeof code);
    message[sizeof message - 1] = '\0';
    const loom_status status = code != LOOM_OK ? (loom_status)code : LOOM_E_INTERNAL;
    const char *line = (const char *)message + sizeof code;
    if (root == 0 && mine != LOOM_OK) return loom_error(status, "%s", line);
    return loom_error(status, "rank %d: %s", root, line);
}
