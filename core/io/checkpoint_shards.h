/*
 * checkpoint_shards.h - the optimizer states of a checkpoint, whatever cut wrote them.
 *
 * A checkpoint holds optimizer.safetensors (one process, or a strategy that keeps whole states)
 * or optimizer.rank-R-of-W.safetensors (a partitioned strategy: each rank's own spans). An entry
 * is named "<tensor>.<state>" when it holds the whole tensor and "<tensor>.<state>@<offset>"
 * when it holds elements [offset, offset + n) of it. Reading asks for any element range of a
 * tensor's state and gathers it from every file that holds a piece, so a run resumes on another
 * world size or strategy (the partitions re-cut) and `loom consolidate` joins the shards.
 */
#ifndef LOOM_CORE_CHECKPOINT_SHARDS_H
#define LOOM_CORE_CHECKPOINT_SHARDS_H

#include <stdint.h>

#include <loom/loom.h>

typedef struct loom_shard_set loom_shard_set;

/* Open the optimizer state files of checkpoint `dir` (mapped, read-only). LOOM_E_NOT_FOUND when
 * it has none; LOOM_E_FORMAT when the rank files do not form one complete set (naming the one
 * missing) or an entry name is not "<tensor>.<state>[@offset]". */
loom_status loom_shard_set_open(const char *dir, loom_shard_set **out);
/* The same for a folder that may hold only some ranks' files: a --save_on_each_node checkpoint
 * on disks of their own, whose manifest lists the shards of that node's ranks
 * (docs/checkpoints.md#save-on-each-node). Absent rank files are no error here; a read of
 * elements that only they hold is, and loom_shard_set_missing says why. */
loom_status loom_shard_set_open_partial(const char *dir, loom_shard_set **out);
/* How many rank files of the set are absent (0 for a complete one); *first: the lowest such rank. */
int loom_shard_set_missing(const loom_shard_set *s, int *first);
void loom_shard_set_close(loom_shard_set *s);

/* The optimizer plugin that wrote the states (file metadata "optimizer"), or "" if unrecorded. */
const char *loom_shard_set_optimizer(const loom_shard_set *s);
/* The world size that wrote them (1 for optimizer.safetensors). */
int loom_shard_set_world(const loom_shard_set *s);
/* Whether any entry holds state `state` (e.g. "fp32_master"). */
int loom_shard_set_has_state(const loom_shard_set *s, const char *state);

/* Elements [offset, offset + numel) of `tensor`'s state `state` into dst (f32). LOOM_E_FORMAT
 * naming the tensor and state when the files do not hold every element of the range. */
loom_status loom_shard_set_read(const loom_shard_set *s, const char *tensor, const char *state, int64_t offset,
                                int64_t numel, float *dst);

/* optimizer.rank-R-of-W.safetensors -> R, W; 0 when the name is not one. */
int loom_shard_file_rank(const char *name, int *rank, int *world);

#endif
