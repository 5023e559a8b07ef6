/*
 * trainer_best_copies.c - after load_best_model_at_end has put the best checkpoint's parameters
 * on every rank (trainer_best.c), the copies the optimizer steps from them: the precision
 * plugin's f32 master weights of this rank's owned ranges, and ZeRO-Offload's host partition.
 *
 * HF under DeepSpeed reloads the best checkpoint through engine.load_checkpoint, which restores
 * the f32 master partitions from the optimizer files; widening the 16-bit parameters instead
 * would throw away the low bits the masters carry, so a step after it would start elsewhere than
 * from the best step. A full checkpoint holds the masters ("<tensor>.fp32_master", per rank
 * under a partitioning strategy: docs/checkpoints.md#layout), so each rank reads its own ranges
 * from them:
 *   - from its own disk, when the folder there holds them: one shared disk, or a node's own
 *     disk under --save_on_each_node, where at the world size and sharding that saved them each
 *     rank's shard is on its node;
 *   - else from the reader of the parameters, whose folder holds every master weight (on disks
 *     of their own without --save_on_each_node only node 0 has the folder, and there a strategy
 *     that partitions the states cannot save at all): it sends them tensor by tensor.
 * A model-only checkpoint (--save_only_model) holds no masters: every rank widens the loaded
 * parameters, as prepare() does at the start. Which of the two is the reader's folder's to say,
 * so that every rank does the same.
 */
#include <stdlib.h>
#include <string.h>

#include <loom/kernels.h>

#include "checkpoint_shards.h"
#include "error.h"
#include "host.h"
#include "trainer_internal.h"

/* The offload partition holds the parameters' own bytes; the masters, when widened, are the
 * parameters as f32. */
static loom_status copy_params(loom_trainer *t, int widen)
{
    const loom_kernels_api *k = loom_host_api_table()->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
    for (size_t r = 0; r < t->n_owned; r++) {
        const int64_t begin = t->owned[r].begin, n = t->owned[r].end - begin;
        const char *from = (const char *)t->params + (size_t)begin * t->param_size;
        if (t->offload_params)
            memcpy((char *)t->offload_params + (size_t)t->offload_owned[r].begin * t->param_size, from,
                   (size_t)n * t->param_size);
        float *master = NULL;
        loom_status st = widen ? loom_trainer_master_weights(t, r, &master) : LOOM_OK;
        if (st != LOOM_OK) return st;
        if (master) k->convert(master, LOOM_DTYPE_F32, from, t->param_dtype, n);
    }
    return LOOM_OK;
}

/* This rank's masters from the folder on its own disk: 1 when read; *held: whether the folder
 * holds masters at all. A failure is no error here (the reader's copy stands in). */
static int read_own(loom_trainer *t, const char *dir, int *held)
{
    loom_shard_set *shards = NULL;
    *held = 0;
    if (loom_shard_set_open_partial(dir, &shards) != LOOM_OK) {
        loom_error_clear();
        return 0;
    }
    *held = loom_shard_set_has_state(shards, "fp32_master");
    int read = *held && loom_trainer_read_masters(t, shards) == LOOM_OK;
    if (!read) loom_error_clear();
    loom_shard_set_close(shards);
    return read;
}

/* The tensor whose elements [offset, offset + numel) a span of this rank holds: its flat start. */
static int64_t tensor_start(const loom_trainer *t, size_t s)
{
    return t->span_flat_begin[s] - t->spans[s].offset;
}

/* The reader sends every tensor's masters and the ranks without their own copy keep their
 * spans of it. Collective. */
static loom_status take_from_reader(loom_trainer *t, const char *dir, int reader, int mine)
{
    int64_t longest = 0;
    for (size_t i = 0; i < t->n_tensors; i++)
        if (t->tensor_offsets[i + 1] - t->tensor_offsets[i] > longest)
            longest = t->tensor_offsets[i + 1] - t->tensor_offsets[i];
    float *buffer = malloc((size_t)(longest ? longest : 1) * sizeof *buffer);
    loom_shard_set *shards = NULL;
    loom_status st = buffer ? LOOM_OK : loom_error(LOOM_E_NOMEM, "out of memory");
    /* The reader reads every tensor once before any is sent, so that a folder lacking one stops
     * every rank here rather than half-way through the broadcasts. */
    if (st == LOOM_OK && t->rank == reader) st = loom_shard_set_open_partial(dir, &shards);
    for (size_t i = 0; st == LOOM_OK && shards && i < t->n_tensors; i++)
        st = loom_shard_set_read(shards, t->tensors[i].name, "fp32_master", 0,
                                 t->tensor_offsets[i + 1] - t->tensor_offsets[i], buffer);
    if (st != LOOM_OK) st = loom_error_context(st, "load_best_model_at_end: the f32 master weights of %s", dir);
    st = loom_trainer_fail_together(t, st);
    const loom_comm_vtable *cv = t->comm.vtable;
    for (size_t i = 0; st == LOOM_OK && i < t->n_tensors; i++) {
        const int64_t numel = t->tensor_offsets[i + 1] - t->tensor_offsets[i];
        if (shards) st = loom_shard_set_read(shards, t->tensors[i].name, "fp32_master", 0, numel, buffer);
        if (st == LOOM_OK) st = cv->broadcast(t->comm.instance, buffer, (size_t)numel, LOOM_DTYPE_F32, reader, NULL);
        if (st != LOOM_OK) {
            st = loom_error_context(st, "load_best_model_at_end: broadcasting rank %d's f32 master weights", reader);
            break;
        }
        for (size_t s = 0; !mine && s < t->n_spans && st == LOOM_OK; s++) {
            if (tensor_start(t, s) != t->tensor_offsets[i]) continue;
            const size_t r = t->span_range[s];
            float *master = NULL;
            if ((st = loom_trainer_master_weights(t, r, &master)) != LOOM_OK || !master) continue;
            memcpy(master + (t->span_flat_begin[s] - t->owned[r].begin), buffer + t->spans[s].offset,
                   (size_t)t->spans[s].numel * sizeof *buffer);
        }
    }
    if (shards) loom_shard_set_close(shards);
    free(buffer);
    return st;
}

loom_status loom_trainer_best_copies(loom_trainer *t, const char *dir, int reader)
{
    if (!t->has_master) return copy_params(t, 0);
    int held = 0;
    const int mine = read_own(t, dir, &held);
    /* What the reader's folder holds decides; then whether any rank lacks its own copy. */
    double said[2] = {t->rank == reader && held, !mine};
    loom_status st = t->world_size > 1 ? loom_trainer_reduce_f64(t, said, 2, LOOM_REDUCE_MAX) : LOOM_OK;
    if (st != LOOM_OK) return loom_error_context(st, "load_best_model_at_end: finding the f32 master weights");
    if (said[0] == 0) return copy_params(t, 1);
    if ((st = copy_params(t, 0)) != LOOM_OK) return st;
    return said[1] > 0 ? take_from_reader(t, dir, reader, mine) : LOOM_OK;
}
