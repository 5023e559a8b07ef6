/*
 * trainer_startup.c - what a run says before step 1: one short block on rank 0 (model,
 * parameters, device, world size, precision, strategy, data, steps, and the memory budget as a
 * small table in MiB/GiB), and, at debug level (`--verbose`), every rank's budget in bytes.
 * The figures are the sizes the buffers were allocated with, so a ZeRO strategy shows its
 * savings here exactly.
 */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "device.h"
#include "host.h"
#include "step_pieces.h"
#include "trainer_internal.h"

loom_status loom_trainer_budget(loom_trainer *t, uint64_t optimizer_bytes, loom_budget *b)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    const loom_precision_vtable *pv = t->precision.vtable;
    const loom_model_vtable *mv = t->model.vtable;
    loom_sharding_memory sharding = {LOOM_HEADER_INIT(loom_sharding_memory)};
    loom_status st = LOOM_PLUGIN_CALL(t->sharding, "memory", sv->memory(t->sharding.instance, &sharding));
    if (st != LOOM_OK) return st;
    b->parameters = (uint64_t)t->total_numel * t->param_size;
    /* ZeRO-3: the owned ranges and the model's working set stay; the rest is given back. */
    if (LOOM_HAS_FIELD(&sharding, loom_sharding_memory, param_bytes) && sharding.param_bytes > 0 &&
        sharding.param_bytes < b->parameters)
        b->parameters = sharding.param_bytes;
    /* The ZeRO paper's K counts the f32 master weights with the optimizer states (K = 12 for
     * mixed-precision Adam); the f32 gradients the step reads are a workspace beside them. */
    uint64_t owned_numel = 0;
    for (size_t r = 0; r < t->n_owned; r++) owned_numel += (uint64_t)(t->owned[r].end - t->owned[r].begin);
    uint64_t master_all = pv->master_bytes(t->precision.instance);
    b->master = t->has_master ? owned_numel * sizeof(float) : 0;
    if (b->master > master_all) b->master = master_all;
    b->workspace = master_all - b->master;
    if (t->step_pieces && !t->piece_buffer_lent) b->workspace += LOOM_STEP_PIECE * sizeof(float); /* its buffer */
    b->gradients = sharding.gradient_bytes;
    b->optimizer = optimizer_bytes;
    b->buckets = sharding.bucket_bytes;
    b->activations = LOOM_HAS(mv, loom_model_vtable, activation_bytes) ? mv->activation_bytes(t->model.instance) : 0;
    b->baseline = t->baseline_bytes;
    /* ZeRO-Offload: the plugin's host copies. Of fp32 parameters that copy is the master copy
     * the step updates (no precision plugin keeps another); the rest is staging, a workspace. */
    const int offload = t->offload_params != NULL;
    uint64_t host_copies = LOOM_HAS_FIELD(&sharding, loom_sharding_memory, host_bytes) ? sharding.host_bytes : 0;
    if (offload && !t->has_master) {
        uint64_t copy = owned_numel * t->param_size;
        b->master = copy < host_copies ? copy : host_copies;
        host_copies -= b->master;
    }
    b->workspace += host_copies;
    b->model_states = b->parameters + b->gradients + b->master + b->optimizer;
    b->total = b->model_states + b->workspace + b->buckets + b->activations + b->baseline;
    b->device_states = b->parameters + b->gradients + (offload ? 0 : b->optimizer);
    b->host_states = b->model_states - b->device_states;
    b->device_total = b->device_states + b->buckets + b->activations;
    b->host_total = b->total - b->device_total;
    return LOOM_OK;
}

/* "4.5 KiB" / "12.3 MiB" / "1.25 GiB" / "0 B". */
static const char *size_text(uint64_t bytes, char *buf, size_t size)
{
    if (bytes == 0) snprintf(buf, size, "0 B");
    else if (bytes < (1ull << 20)) snprintf(buf, size, "%.1f KiB", (double)bytes / 1024.0);
    else if (bytes < (1ull << 30)) snprintf(buf, size, "%.1f MiB", (double)bytes / 1048576.0);
    else snprintf(buf, size, "%.2f GiB", (double)bytes / 1073741824.0);
    return buf;
}

/* 124,439,808 */
static const char *grouped(int64_t n, char *buf, size_t size)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)n), o = 0;
    for (int i = 0; i < len && o + 2 < (int)size; i++) {
        if (i > 0 && digits[i - 1] != '-' && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

static const char *plural(int64_t n, const char *word, char *buf, size_t size)
{
    snprintf(buf, size, "%lld %s%s", (long long)n, word, n == 1 ? "" : "s");
    return buf;
}

loom_status loom_trainer_print_startup(loom_trainer *t, const loom_dataloader *dl, int64_t num_epochs,
                                       int64_t max_steps, int64_t updates_per_epoch)
{
    loom_budget b;
    loom_status st = loom_trainer_budget(t, t->optimizer_state_bytes, &b);
    if (st != LOOM_OK) return st;
    t->budget_bytes = b.total;
    loom_log(
        LOOM_LOG_DEBUG,
        "memory budget, rank %d of %d (%lld parameters, %s): parameters %llu B, gradients %llu B, master weights %llu "
        "B, "
        "optimizer states %llu B (model states %llu B), f32 gradient workspace %llu B, communication buckets %llu B, "
        "activations %llu B, process before the run %llu B, total %llu B (%.1f MiB); device model states %llu B, "
        "host model states %llu B, device total %llu B, host total %llu B",
        t->rank, t->world_size, (long long)t->total_numel, t->precision.plugin->desc->name,
        (unsigned long long)b.parameters, (unsigned long long)b.gradients, (unsigned long long)b.master,
        (unsigned long long)b.optimizer, (unsigned long long)b.model_states, (unsigned long long)b.workspace,
        (unsigned long long)b.buckets, (unsigned long long)b.activations, (unsigned long long)b.baseline,
        (unsigned long long)b.total, (double)b.total / 1048576.0, (unsigned long long)b.device_states,
        (unsigned long long)b.host_states, (unsigned long long)b.device_total, (unsigned long long)b.host_total);
    if ((st = loom_memory_check(&t->memory_room, b.total, t->rank, "the memory budget")) != LOOM_OK) return st;
    /* HF's "***** Running training *****" block is logger.info: --log_level warning hides it. */
    if (!t->state.is_world_process_zero || loom_host_log_level() < LOOM_LOG_INFO) return LOOM_OK;

    const loom_args *a = &t->args;
    char n1[48], n2[48], w1[48], w2[48], w3[48], s[8][24];
    printf("loom: model      %s, %s parameters\n", t->model.plugin->desc->name, grouped(t->total_numel, n1, sizeof n1));
    if (t->device == LOOM_DEVICE_CPU) {
        printf("loom: device     cpu, %d threads per rank, world size %d\n", omp_get_max_threads(), t->world_size);
    } else {
        char where[256];
        loom_device_describe(where, sizeof where);
        printf("loom: device     %s, world size %d\n", where, t->world_size);
    }
    printf("loom: precision  %s; strategy %s", t->precision.plugin->desc->name, t->sharding.plugin->desc->name);
    if (t->ds) printf(" (--deepspeed %s)", a->deepspeed);
    printf("\n");
    printf("loom: data       %s of %s", plural(dl->dataset->n_examples, "training example", w1, sizeof w1),
           a->train_file);
    if (t->eval_dataset)
        printf("; %s of %s", plural(t->eval_dataset->n_examples, "evaluation example", w2, sizeof w2),
               a->validation_file);
    printf("\n");
    printf("loom: steps      %lld over %s (%s per epoch; batch %lld x %lld accumulation x %s)\n",
           (long long)max_steps, plural(num_epochs, "epoch", w1, sizeof w1), grouped(updates_per_epoch, n2, sizeof n2),
           (long long)dl->batch_size, (long long)a->gradient_accumulation_steps,
           plural(t->world_size, "rank", w3, sizeof w3));
    printf("loom: memory     budget of rank 0 (--verbose: every rank, in bytes)\n"
           "                 parameters     %10s   gradients      %10s\n"
           "                 master weights %10s   optimizer      %10s\n"
           "                 activations    %10s   buckets        %10s\n"
           "                 workspace      %10s   process        %10s\n"
           "                 total          %10s\n",
           size_text(b.parameters, s[0], 24), size_text(b.gradients, s[1], 24), size_text(b.master, s[2], 24),
           size_text(b.optimizer, s[3], 24), size_text(b.activations, s[4], 24), size_text(b.buckets, s[5], 24),
           size_text(b.workspace, s[6], 24), size_text(b.baseline, s[7], 24), size_text(b.total, n1, sizeof n1));
    /* Which of it is the device's and which the host's: what ZeRO-Offload moves. */
    if (t->device != LOOM_DEVICE_CPU || t->offload_params)
        printf("                 device states  %10s   host states    %10s\n"
               "                 device total   %10s   host total     %10s\n",
               size_text(b.device_states, s[0], 24), size_text(b.host_states, s[1], 24),
               size_text(b.device_total, s[2], 24), size_text(b.host_total, s[3], 24));
    /* What the device really holds before step 1: every buffer above that lives there, and
     * the staged batches. Nothing is allocated on it inside a step. */
    if (t->device != LOOM_DEVICE_CPU)
        printf("                 on the device  %10s   in %llu allocations (%llu B)\n",
               size_text(loom_device_allocated_bytes(), s[0], 24), (unsigned long long)loom_device_allocations(),
               (unsigned long long)loom_device_allocated_bytes());
    fflush(stdout);
    return LOOM_OK;
}
