/*
 * step_pieces.h - the optimizer step a piece of the gradients at a time
 * (docs/architecture.md#piecewise-step).
 *
 * With f32 master weights, the whole-range step first widens every owned 16-bit gradient into
 * an f32 copy as large as the master weights, then runs the optimizer over it. When the
 * precision plugin can widen a piece (ABI 1.7 unscale_piece / cast_piece) and the optimizer's
 * update is element-wise (LOOM_OPTIMIZER_ELEMENTWISE), the trainer instead walks the owned
 * ranges in pieces of LOOM_STEP_PIECE elements through one small buffer: once for the norm,
 * once for the update. The pieces are cut at multiples of the norm's blocks, so every norm
 * work item lies in one piece and the norm has the same bits as the whole-range step's; the
 * update is element-wise, so the parameters have them too.
 */
#ifndef LOOM_TRAINER_STEP_PIECES_H
#define LOOM_TRAINER_STEP_PIECES_H

#include "trainer.h"
#include "trainer_internal.h"

/* Elements per piece: a multiple of LOOM_NORM_BLOCK (1 MiB of f32: the buffer stays in cache
 * between the widening and the update). */
#define LOOM_STEP_PIECE (16 * LOOM_NORM_BLOCK)

/* 1 when this run's precision plugin and optimizer allow the piecewise step (CPU runs with
 * master weights, no ZeRO-Offload). LOOM_STEP_PIECES=0 in the environment turns it off, to
 * compare the two. Reads the optimizer's vtable, not its instance: call before bind. */
int loom_step_pieces_wanted(const loom_trainer *t);

/* The buffer and the scratch the two passes need (t->step_pieces set). The buffer is the
 * model's step scratch (its activations, dead during the step) when it lends at least a
 * piece's worth (scratch, NULL for none), else the trainer's own allocation. */
loom_status loom_step_pieces_prepare(loom_trainer *t, float *scratch, size_t scratch_floats);

/* The norm pass: this rank's norm work sums (t->norm_work_sums), each from its piece of the
 * unscaled gradients, and the precision plugin's overflow flag over those pieces. */
loom_status loom_step_pieces_norm(loom_trainer *t, void *const *owned_grads, int32_t *overflow);

/* The update pass: every owned piece unscaled again, stepped by the optimizer (t->spans cut
 * to the piece, params from master_params) and cast back to the model. */
loom_status loom_step_pieces_update(loom_trainer *t, void *const *owned_grads, float *const *master_params,
                                    const loom_optimizer_step *step);

/* Free what prepare allocated. */
void loom_step_pieces_free(loom_trainer *t);

#endif
