/*
 * grad_rows.h - the host's side of a two-part gradient (loom_grad_sink acquire_rows /
 * release_rows, ABI 1.4; docs/architecture.md#two-part-gradients): the sparse late rows a
 * model hands over after releasing the dense part, summed over the micro-batches of a step,
 * reduced over the ranks and added to the owned gradients after the sharding plugin's
 * finish_grads, the same way whatever the sharding plugin.
 */
#ifndef LOOM_CORE_TRAINER_GRAD_ROWS_H
#define LOOM_CORE_TRAINER_GRAD_ROWS_H

#include "trainer.h"

typedef struct loom_grad_rows loom_grad_rows;

/* The sink members (context = the trainer). */
loom_status loom_grad_rows_acquire(void *context, int64_t begin, int64_t row_size, int64_t n_rows, const int64_t *rows,
                                   void **memory);
loom_status loom_grad_rows_release(void *context, int64_t begin);

/* After sharding.finish_grads: reduce this step's rows over the ranks (reduce != 0; every rank
 * calls it, and enters the collectives once any rank's model has used the rows part) and add
 * them to the owned gradients owned_grads[0 .. t->n_owned). A no-op for a model that never
 * used the rows part. */
loom_status loom_grad_rows_finish(loom_trainer *t, int reduce, void *const *owned_grads);

/* Whether the sink offers the rows part: multi-rank runs (one rank has nothing to reduce, and
 * its gradients stay the bits they always were), unless LOOM_GRAD_ROWS=off. */
int loom_grad_rows_offered(const loom_trainer *t);

void loom_grad_rows_free(loom_grad_rows *rows);

#endif
