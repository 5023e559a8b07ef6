/*
 * trainer_autobatch.c - --auto_find_batch_size (docs/semantics/trainer.md#auto-batch-size).
 *
 * HF wraps its training loop in accelerate's find_executable_batch_size: the loop runs, and when
 * PyTorch raises an out-of-memory error the per-device batch becomes int(batch x 0.9) (older
 * accelerate releases halved it) and the loop starts over. loom cannot catch an out-of-memory: on the
 * CPU the kernel's OOM killer ends the process, and a GPU run's managed memory oversubscribes
 * before it fails. What it has instead is the memory budget, known before step 1 from the sizes
 * the buffers are allocated with. So the same sequence of sizes is walked before the run
 * starts: the model is bound for each size in turn (a second bind replaces the first) and the
 * first whose budget fits this process's room, and on a device the device's free memory, is the
 * run's. A size whose activations cannot even be allocated counts as not fitting, as HF's
 * retry would count it. The ranks then agree on the smallest of their sizes, since every rank
 * must take the same number of steps over batches of the same size.
 */
#include <stdio.h>
#include <string.h>

#include <loom/backend.h>

#include "device.h"
#include "error.h"
#include "host.h"
#include "resume_state.h"
#include "trainer_internal.h"

#define MIB(bytes) ((double)(bytes) / 1048576.0)

/* accelerate's reduce_batch_size_fn: int(batch_size * 0.9) in Python's doubles, 0 after 1. */
static int64_t reduce(int64_t batch)
{
    return (int64_t)((double)batch * 0.9);
}

/* What one size needs, and whether it fits. */
typedef struct verdict {
    int64_t bound; /* the batch the activations were bound for (the evaluation batch when larger) */
    int fits;
    int allocated; /* 0: binding the activations itself ran out of memory              */
    loom_budget budget;
    char why[640]; /* why it does not fit, for the info line and the refusal           */
} verdict;

static int64_t bound_for(const loom_trainer *t, int64_t batch)
{
    return batch > t->args.per_device_eval_batch_size ? batch : t->args.per_device_eval_batch_size;
}

static loom_status try_batch(loom_trainer *t, int64_t batch, verdict *v)
{
    memset(v, 0, sizeof *v);
    v->bound = bound_for(t, batch);
    loom_status st = loom_trainer_bind_batch(t, batch);
    if (st == LOOM_E_NOMEM) {
        snprintf(v->why, sizeof v->why, "could not allocate its activations (%s)", loom_error_message());
        loom_error_clear();
        return LOOM_OK;
    }
    if (st != LOOM_OK) return st;
    v->allocated = 1;
    if ((st = loom_trainer_budget(t, loom_trainer_optimizer_state_bytes(t), &v->budget)) != LOOM_OK) return st;
    const loom_memory_room *room = &t->memory_room;
    if (v->budget.total > room->bytes) {
        snprintf(v->why, sizeof v->why, "needs %.1f MiB, this process may use %.1f MiB (%s)", MIB(v->budget.total),
                 MIB(room->bytes), room->source);
        return LOOM_OK;
    }
    if (v->budget.device_total > t->device_room) {
        char where[256];
        loom_device_describe(where, sizeof where);
        snprintf(v->why, sizeof v->why, "needs %.1f MiB of device memory, %s had %.1f MiB free",
                 MIB(v->budget.device_total), where, MIB(t->device_room));
        return LOOM_OK;
    }
    v->fits = 1;
    return LOOM_OK;
}

/* The refusal of a rank on which even a batch of 1 does not fit: the line the budget check would
 * give (memory_check.c), naming the search. */
static loom_status nothing_fits(const loom_trainer *t, int64_t requested, const verdict *v)
{
    char what[400], eval[160] = "";
    if (v->bound > 1)
        snprintf(eval, sizeof eval, " (activations for --per_device_eval_batch_size %lld, which is not reduced)",
                 (long long)v->bound);
    snprintf(what, sizeof what,
             "--auto_find_batch_size down to a per-device train batch of 1 (from %lld): the memory budget%s",
             (long long)requested, eval);
    if (!v->allocated) return loom_error(LOOM_E_NOMEM, "rank %d: %s: %s", t->rank, what, v->why);
    if (v->budget.total > t->memory_room.bytes)
        return loom_memory_check(&t->memory_room, v->budget.total, t->rank, what);
    return loom_error(LOOM_E_NOMEM, "rank %d: %s %s: use a smaller model, --bf16/--fp16, or ZeRO over more GPUs",
                      t->rank, what, v->why);
}

/* Every rank's outcome, so that all leave the search together: the smallest size that fits and
 * the largest (0: a rank fits nothing; -1: a rank failed). */
static loom_status agree(loom_trainer *t, int64_t mine, int64_t *lowest, int64_t *highest)
{
    *lowest = *highest = mine;
    if (t->world_size < 2) return LOOM_OK;
    double v[2] = {(double)mine, -(double)mine};
    loom_status st = loom_trainer_reduce_f64(t, v, 2, LOOM_REDUCE_MIN);
    if (st != LOOM_OK) return loom_error_context(st, "agreeing on the batch size of --auto_find_batch_size");
    *lowest = (int64_t)v[0];
    *highest = (int64_t)-v[1];
    return LOOM_OK;
}

/* Binding again is a contract of ABI 1.10 (model.h, precision.h bind): a plugin built for an
 * older minor may assume one binding and leak or break on a second. */
static loom_status check_rebindable(const loom_trainer *t)
{
    const struct {
        const char *kind;
        const loom_plugin_instance *slot;
        uint32_t minor;
    } bound[] = {{"model", &t->model, t->model.vtable ? ((const loom_model_vtable *)t->model.vtable)->abi_minor : 0},
                 {"precision", &t->precision,
                  t->precision.vtable ? ((const loom_precision_vtable *)t->precision.vtable)->abi_minor : 0}};
    for (size_t i = 0; i < sizeof bound / sizeof *bound; i++)
        if (bound[i].minor < 10)
            return loom_error(LOOM_E_UNSUPPORTED,
                              "--auto_find_batch_size binds the %s plugin '%s' once for each batch size it tries, "
                              "and that plugin was built for ABI 1.%u, which promises a single binding: rebuild it "
                              "against ABI 1.10 or later, or give --per_device_train_batch_size without the flag",
                              bound[i].kind, bound[i].slot->plugin->desc->name, bound[i].minor);
    return LOOM_OK;
}

loom_status loom_trainer_autobatch_find(loom_trainer *t)
{
    loom_status checked = check_rebindable(t);
    if (checked != LOOM_OK) return checked;
    const int64_t requested = t->train_batch_size;
    int64_t candidate = requested, mine = 0, lowest = 0, highest = 0, own = 0;
    verdict first = {0}, current = {0}, v;
    int tried = 0, rounds = 0;
    loom_status failure = LOOM_OK;
    char failure_text[1024] = "";
    for (;;) {
        /* From the candidate down HF's sequence to the first size that fits. A size bound for
         * as much as the one bound now has its budget: below the evaluation batch, all do. */
        mine = 0;
        for (int64_t batch = candidate; batch >= 1 && failure == LOOM_OK; batch = reduce(batch)) {
            if (tried && current.bound == bound_for(t, batch)) {
                v = current;
            } else if ((failure = try_batch(t, batch, &v)) != LOOM_OK) {
                snprintf(failure_text, sizeof failure_text, "%s", loom_error_message());
                break;
            }
            current = v;
            if (!tried) first = v;
            tried = 1;
            if (v.fits)
                loom_log(LOOM_LOG_DEBUG,
                         "auto_find_batch_size, rank %d: per-device train batch %lld: fits (needs %.1f MiB)", t->rank,
                         (long long)batch, MIB(v.budget.total));
            else
                loom_log(LOOM_LOG_DEBUG, "auto_find_batch_size, rank %d: per-device train batch %lld: %s", t->rank,
                         (long long)batch, v.why);
            if (v.fits) {
                mine = batch;
                break;
            }
        }
        if (rounds++ == 0) own = mine;
        loom_status st = agree(t, failure != LOOM_OK ? -1 : mine, &lowest, &highest);
        if (st != LOOM_OK) return failure != LOOM_OK ? loom_error(failure, "%s", failure_text) : st;
        /* Done when every rank fits the same size, or one cannot go on; otherwise the larger
         * ones search again from the smallest (a smaller batch may need more memory: the
         * activations that no longer hold the f32 gradients, for one). */
        if (lowest <= 0 || lowest == highest) break;
        candidate = lowest;
    }
    if (failure != LOOM_OK) return loom_error(failure, "%s", failure_text);
    if (lowest < 0)
        return loom_error(LOOM_E_INVALID, "another rank failed choosing the batch size (its message says why)");
    if (mine == 0) return nothing_fits(t, requested, &current);
    if (lowest == 0)
        return loom_error(LOOM_E_NOMEM, "--auto_find_batch_size: another rank cannot fit even a per-device train batch "
                                        "of 1 (its message says why)");

    t->train_batch_size = lowest;
    t->state.train_batch_size = lowest;
    if (lowest == requested)
        loom_log(LOOM_LOG_INFO,
                 "auto_find_batch_size: per-device train batch %lld fits (the memory budget needs %.1f MiB, this "
                 "process may use %.1f MiB (%s))",
                 (long long)lowest, MIB(current.budget.total), MIB(t->memory_room.bytes), t->memory_room.source);
    else
        loom_log(LOOM_LOG_INFO, "auto_find_batch_size: per-device train batch %lld %s; running with %lld (%.1f MiB)%s",
                 (long long)requested, first.fits ? "fits on this rank" : first.why, (long long)lowest,
                 MIB(current.budget.total), own > lowest ? ", the largest that fits on every rank" : "");
    return LOOM_OK;
}

loom_status loom_trainer_autobatch_resume(loom_trainer *t)
{
    if (!t->resume_dir) return LOOM_OK;
    int64_t batch = 0;
    loom_status st = loom_resume_read_found_batch(t->resume_dir, &batch);
    if (st != LOOM_OK || batch == 0 || batch == t->train_batch_size) return st;
    loom_log(LOOM_LOG_INFO,
             "auto_find_batch_size: resuming with the per-device train batch it found for %s, %lld (its "
             "trainer_state.json's train_batch_size), not --per_device_train_batch_size %lld%s",
             t->resume_dir, (long long)batch, (long long)t->train_batch_size,
             t->args.auto_find_batch_size ? ", if it still fits" : "");
    t->train_batch_size = batch;
    t->state.train_batch_size = batch;
    return LOOM_OK;
}
