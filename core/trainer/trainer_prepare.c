/*
 * trainer_prepare.c - laying out memory once, before step 1: the flat parameter buffer (fresh or
 * loaded from a saved folder), the sharding plugin's partition, the model's activations, the
 * precision plugin's master weights, and the optimizer's spans and states exactly for the owned
 * ranges.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/backend.h>
#include <loom/kernels.h>

#include "error.h"
#include "fileutil.h"
#include "host.h"
#include "deepspeed_config.h"
#include "device.h"
#include "plugin_config.h"
#include "safetensors.h"
#include "step_pieces.h"
#include "trainer_internal.h"

/* ---- prepare: memory, once ---------------------------------------------------------------- */

/* Read model.safetensors of `dir` into `params` (f32, flat): f32, f16 and bf16 files alike
 * (a 16-bit run saves its 16-bit weights). */
/* "[768, 2304]" for messages. */
static void shape_text(char *buf, size_t size, const int64_t *shape, uint32_t ndim)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (uint32_t d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < size) snprintf(buf + n, size - n, "]");
}

static loom_status load_saved_params(loom_trainer *t, const char *dir, float *params)
{
    char path[4096];
    loom_status st = loom_path_join(path, sizeof path, dir, "model.safetensors");
    if (st != LOOM_OK) return st;
    loom_safetensors *file = NULL;
    if ((st = loom_safetensors_open(path, &file)) != LOOM_OK) return st;
    const loom_kernels_api *k = loom_host_api_table()->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
    for (size_t i = 0; i < t->n_tensors && st == LOOM_OK; i++) {
        loom_st_tensor tensor;
        const loom_param_info *info = &t->tensors[i];
        st = loom_safetensors_find(file, info->name, &tensor);
        /* Files saved from a base model (HF GPT2Model, the hub's gpt2) lack the "transformer."
         * prefix of the LM-head model's names. */
        const char *dot = strchr(info->name, '.');
        if (st == LOOM_E_NOT_FOUND && dot && strncmp(info->name, "transformer.", 12) == 0) {
            loom_error_clear();
            st = loom_safetensors_find(file, dot + 1, &tensor);
        }
        if (st != LOOM_OK) break;
        int floating = loom_dtype_is_param(tensor.dtype);
        int same = floating && tensor.ndim == info->ndim;
        for (uint32_t d = 0; same && d < info->ndim; d++) same = tensor.shape[d] == info->shape[d];
        if (!same) {
            char theirs[160], ours[160];
            shape_text(theirs, sizeof theirs, tensor.shape, tensor.ndim);
            shape_text(ours, sizeof ours, info->shape, info->ndim);
            const char *dtype = loom_st_dtype_name(tensor.dtype);
            st = loom_error(LOOM_E_FORMAT, "%s: tensor '%s' is %s %s; the model's is %s (in F32, F16 or BF16)", path,
                            tensor.name, dtype ? dtype : "?", theirs, ours);
            break;
        }
        int64_t numel = t->tensor_offsets[i + 1] - t->tensor_offsets[i];
        if (tensor.dtype == LOOM_DTYPE_F32) memcpy(params + t->tensor_offsets[i], tensor.data, tensor.nbytes);
        else k->convert(params + t->tensor_offsets[i], LOOM_DTYPE_F32, tensor.data, tensor.dtype, numel);
    }
    loom_safetensors_close(file);
    return st;
}

/* The canonical pieces of the global norm (trainer_loop.c): blocks of LOOM_NORM_BLOCK elements
 * cut at tensor boundaries, numbered in flat order; and this rank's work: its norm ranges cut at
 * piece boundaries. */
static loom_status build_norm_pieces(loom_trainer *t)
{
    int64_t pieces = 0;
    for (size_t i = 0; i < t->n_tensors; i++) {
        int64_t b = t->tensor_offsets[i], e = t->tensor_offsets[i + 1];
        if (e > b) pieces += (e - 1) / LOOM_NORM_BLOCK - b / LOOM_NORM_BLOCK + 1;
    }
    t->n_norm_pieces = pieces;
    t->norm_piece_sums = calloc((size_t)(pieces > 0 ? pieces : 1), sizeof *t->norm_piece_sums);
    size_t capacity = (size_t)pieces + t->n_norm_ranges + 1;
    t->norm_work = calloc(capacity, sizeof *t->norm_work);
    t->norm_work_sums = calloc(capacity, sizeof *t->norm_work_sums);
    if (!t->norm_piece_sums || !t->norm_work || !t->norm_work_sums) return loom_error(LOOM_E_NOMEM, "out of memory");
    /* Walk pieces and norm ranges together, both in flat order. */
    int64_t piece = 0;
    size_t k = 0, n = 0;
    for (size_t i = 0; i < t->n_tensors; i++) {
        int64_t tb = t->tensor_offsets[i], te = t->tensor_offsets[i + 1];
        for (int64_t lo = tb; lo < te; piece++) {
            int64_t hi = (lo / LOOM_NORM_BLOCK + 1) * LOOM_NORM_BLOCK;
            if (hi > te) hi = te;
            while (k < t->n_norm_ranges && t->norm_ranges[k].end <= lo) k++;
            for (size_t j = k; j < t->n_norm_ranges && t->norm_ranges[j].begin < hi; j++) {
                int64_t a = lo > t->norm_ranges[j].begin ? lo : t->norm_ranges[j].begin;
                int64_t z = hi < t->norm_ranges[j].end ? hi : t->norm_ranges[j].end;
                if (a >= z) continue;
                if (n == capacity) {
                    void *grown = realloc(t->norm_work, 2 * capacity * sizeof *t->norm_work);
                    void *grown_sums =
                        grown ? realloc(t->norm_work_sums, 2 * capacity * sizeof *t->norm_work_sums) : NULL;
                    if (grown) t->norm_work = grown;
                    if (!grown || !grown_sums) return loom_error(LOOM_E_NOMEM, "out of memory");
                    t->norm_work_sums = grown_sums;
                    capacity *= 2;
                }
                t->norm_work[n++] = (struct loom_norm_work){piece, a, z, t->norm_ranges[j].owned_index};
            }
            lo = hi;
        }
    }
    t->n_norm_work = n;
    /* The same work as segments of each owned range's gradient, for the kernel that sums them. */
    t->norm_bounds = malloc(2 * (n ? n : 1) * sizeof *t->norm_bounds);
    if (!t->norm_bounds) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t w = 0; w < n; w++) {
        int64_t base = t->owned[t->norm_work[w].owned_index].begin;
        t->norm_bounds[2 * w] = t->norm_work[w].begin - base;
        t->norm_bounds[2 * w + 1] = t->norm_work[w].end - base;
    }
    return LOOM_OK;
}

/* The global gradient norm counts each element once: this rank takes its owned ranges minus
 * whatever a lower rank owns too (DDP replicates everything: rank 0 counts it all; a partition
 * like ZeRO's: every rank counts its own). */
static loom_status compute_norm_ranges(loom_trainer *t)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    size_t capacity = t->n_owned + 1;
    t->norm_ranges = calloc(capacity, sizeof *t->norm_ranges);
    if (!t->norm_ranges) return loom_error(LOOM_E_NOMEM, "out of memory");
    t->n_norm_ranges = 0;
    for (size_t r = 0; r < t->n_owned; r++) {
        /* Pieces of owned range r not covered by a lower rank, found by sweeping its start. */
        int64_t at = t->owned[r].begin, end = t->owned[r].end;
        while (at < end) {
            int64_t covered_to = at, next_cover = end;
            for (int32_t other = 0; other < t->rank; other++) {
                const loom_range *theirs = NULL;
                size_t n = 0;
                loom_status st = sv->owned_ranges(t->sharding.instance, other, &theirs, &n);
                if (st != LOOM_OK) return st;
                for (size_t i = 0; i < n; i++) {
                    if (theirs[i].begin <= at && theirs[i].end > covered_to) covered_to = theirs[i].end;
                    if (theirs[i].begin > at && theirs[i].begin < next_cover) next_cover = theirs[i].begin;
                }
            }
            if (covered_to > at) {
                at = covered_to < end ? covered_to : end;
                continue;
            }
            if (t->n_norm_ranges == capacity) {
                void *grown = realloc(t->norm_ranges, 2 * capacity * sizeof *t->norm_ranges);
                if (!grown) return loom_error(LOOM_E_NOMEM, "out of memory");
                t->norm_ranges = grown;
                capacity *= 2;
            }
            t->norm_ranges[t->n_norm_ranges++] = (struct loom_norm_range){at, next_cover, r};
            at = next_cover;
        }
    }
    return build_norm_pieces(t);
}

/* Resident bytes of this process now (code, libraries, datasets, the communicator's
 * connections), from /proc/self/statm; 0 where there is none. */
static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    int n = f ? fscanf(f, "%llu %llu", &size, &resident) : 0;
    if (f) fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

/* Before the parameters are allocated: what every strategy needs at least (the parameters,
 * an f32 copy while initialising a 16-bit run, this rank's share of gradients and master
 * weights, the process so far) against the room; the whole budget is checked before step 1. */
static loom_status check_memory_floor(loom_trainer *t)
{
    t->device_room = UINT64_MAX;
    double numel = (double)t->total_numel, world = (double)t->world_size;
    double params = (double)t->params_capacity * (double)t->param_size;
    double init_copy = t->param_dtype != LOOM_DTYPE_F32 ? numel * 4.0 : 0;
    double grads = numel * (double)t->param_size / world, master = t->has_master ? numel * 4.0 / world : 0;
    double need = params + init_copy + grads + master + (double)t->baseline_bytes;
    char what[320];
    snprintf(what, sizeof what,
             "the model (%lld parameters: %.1f MiB of parameters, at least %.1f MiB of gradients and master weights "
             "on this rank, %.1f MiB held before the run)",
             (long long)t->total_numel, (params + init_copy) / 1048576.0, (grads + master) / 1048576.0,
             (double)t->baseline_bytes / 1048576.0);
    loom_status st = loom_memory_check(&t->memory_room, need >= 1.8e19 ? UINT64_MAX : (uint64_t)need, t->rank, what);
    if (st != LOOM_OK || t->device == LOOM_DEVICE_CPU) return st;
    /* On a device the parameters, gradients and master weights live in its memory: a model
     * that cannot fit is refused here in one line, not by an allocation failure later. */
    loom_backend *instance = NULL;
    const loom_backend_vtable *vt = loom_device_backend(&instance);
    loom_device_info info = {.struct_size = sizeof info, .abi_major = LOOM_ABI_MAJOR, .abi_minor = LOOM_ABI_MINOR};
    if (!vt || vt->device_info(instance, &info) != LOOM_OK) return LOOM_OK; /* nothing to compare with */
    /* Kept for the search of --auto_find_batch_size: measured once the run's own buffers are
     * there, the free memory would say little, as managed memory is not resident until used. */
    t->device_room = info.free_bytes;
    double on_device = params + grads + master;
    if (on_device <= (double)info.free_bytes) return LOOM_OK;
    char where[256];
    loom_device_describe(where, sizeof where);
    return loom_error(LOOM_E_NOMEM,
                      "rank %d: the model (%lld parameters) needs at least %.1f MiB of device memory for parameters, "
                      "gradients and master weights, and %s has %.1f MiB free: use a smaller model, --bf16/--fp16, "
                      "or ZeRO over more GPUs",
                      t->rank, (long long)t->total_numel, on_device / 1048576.0, where,
                      (double)info.free_bytes / 1048576.0);
}

/* ZeRO-Offload: when the sharding plugin steps its partition in host memory, the precision
 * plugin is bound to that copy, its owned ranges rebased into it (one after another). */
static loom_status bind_offload(loom_trainer *t)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    if (!LOOM_HAS(sv, loom_sharding_vtable, host_params)) return LOOM_OK;
    loom_status st =
        LOOM_PLUGIN_CALL(t->sharding, "host_params", sv->host_params(t->sharding.instance, &t->offload_params));
    if (st != LOOM_OK || !t->offload_params) return st;
    t->offload_owned = calloc(t->n_owned ? t->n_owned : 1, sizeof *t->offload_owned);
    if (!t->offload_owned) return loom_error(LOOM_E_NOMEM, "out of memory");
    int64_t at = 0;
    for (size_t r = 0; r < t->n_owned; r++) {
        t->offload_owned[r].begin = at;
        at += t->owned[r].end - t->owned[r].begin;
        t->offload_owned[r].end = at;
    }
    return LOOM_OK;
}

/* Every rank starts from rank 0's parameters, as torch's DDP broadcasts them when it wraps the
 * model and DeepSpeed when it builds its engine: a rank whose initialisation or saved weights
 * differ (another file behind the same path on another node) would otherwise train a model of
 * its own on the summed gradients. Done before the sharding plugin takes its partition and the
 * precision plugin widens its f32 master weights, so those are rank 0's too; on a resume as on a
 * fresh start, since each rank read the checkpoint on its own. When the ranks agree already,
 * the bits do not change. */
static loom_status broadcast_params(loom_trainer *t)
{
    if (t->world_size < 2) return LOOM_OK;
    const loom_comm_vtable *cv = t->comm.vtable;
    loom_status st = cv->broadcast(t->comm.instance, t->params, (size_t)t->total_numel, t->param_dtype, 0, NULL);
    if (st != LOOM_OK) return loom_error_context(st, "broadcasting rank 0's parameters");
    return LOOM_OK;
}

loom_status loom_trainer_bind_batch(loom_trainer *t, int64_t train_batch)
{
    const loom_model_vtable *mv = t->model.vtable;
    const loom_precision_vtable *pv = t->precision.vtable;
    loom_model *model = t->model.instance;
    loom_precision_info pinfo = {LOOM_HEADER_INIT(loom_precision_info)};
    loom_status st = LOOM_PLUGIN_CALL(t->precision, "describe", pv->describe(t->precision.instance, &pinfo));
    if (st != LOOM_OK) return st;
    t->max_batch_size =
        train_batch > t->args.per_device_eval_batch_size ? train_batch : t->args.per_device_eval_batch_size;
    int generating_only = t->args.generate && !t->args.do_train && !t->eval_dataset;
    if (generating_only) t->max_batch_size = 1; /* decoding has its own cache: no batch activations */
    loom_model_binding binding = {LOOM_HEADER_INIT(loom_model_binding)};
    binding.params = t->params;
    binding.param_dtype = pinfo.param_dtype;
    binding.compute_dtype = pinfo.compute_dtype;
    binding.device = t->device;
    binding.device_index = t->device_index;
    binding.max_batch_size = t->max_batch_size;
    binding.kernels = loom_device_kernels();
    const loom_dataset *sequences[] = {t->train_dataset, t->eval_dataset, t->test_dataset};
    for (size_t i = 0; i < 3; i++) {
        /* Sequence data: tokens (labels_per_example is the block) or pairs, whose targets may
         * all be one token long (empty references) while the sources are not; not features. */
        if (sequences[i] && (sequences[i]->labels_per_example > 1 || sequences[i]->collate) &&
            sequences[i]->input_shape[0] > binding.max_sequence_length)
            binding.max_sequence_length = sequences[i]->input_shape[0];
        /* Pair data: sources and targets each up to the bound length (docs/seq2seq.md#batches). */
        if (sequences[i] && sequences[i]->collate && sequences[i]->labels_per_example > binding.max_sequence_length)
            binding.max_sequence_length = sequences[i]->labels_per_example;
    }
    if (generating_only) binding.max_sequence_length = 1;
    if (t->params_partitioned) binding.param_source = &t->param_source;
    /* A second bind replaces the first: the piecewise step's buffer may be the activations. */
    if (t->step_pieces) {
        loom_step_pieces_free(t);
        t->step_pieces = 0;
    }
    if ((st = LOOM_PLUGIN_CALL(t->model, "bind", mv->bind(model, &binding))) != LOOM_OK) return st;

    loom_precision_binding pbinding = {LOOM_HEADER_INIT(loom_precision_binding)};
    pbinding.params = t->offload_params ? t->offload_params : t->params;
    pbinding.owned = t->offload_params ? t->offload_owned : t->owned;
    pbinding.n_owned = t->n_owned;
    pbinding.device = t->offload_params ? LOOM_DEVICE_CPU : t->device;
    /* The precision plugin's f32 gradients exist only during the step, when the model's
     * activations hold nothing: lend it those (the model says how much it has). Not under
     * offload: the step runs on the host, and the activations are device memory. */
    /* Or it needs none: the step widens one piece of them at a time (step_pieces.c), in that
     * same memory when there is enough. */
    pbinding.piecewise = !generating_only && loom_step_pieces_wanted(t);
    float *scratch = NULL;
    size_t scratch_floats = 0;
    if (LOOM_HAS(mv, loom_model_vtable, step_scratch) && !generating_only && !t->offload_params) {
        size_t bytes = 0;
        void *memory = mv->step_scratch(model, &bytes);
        if (memory && ((uintptr_t)memory % sizeof(float)) == 0) {
            scratch = memory;
            scratch_floats = bytes / sizeof(float);
        }
    }
    if (!pbinding.piecewise) {
        pbinding.grad_workspace = scratch;
        pbinding.grad_workspace_floats = scratch_floats;
    }
    if ((st = LOOM_PLUGIN_CALL(t->precision, "bind", pv->bind(t->precision.instance, &pbinding))) != LOOM_OK) return st;
    if (pbinding.piecewise) st = loom_step_pieces_prepare(t, scratch, scratch_floats);
    return st;
}

static loom_status prepare(loom_trainer *t, int training)
{
    if (t->bound) return LOOM_OK;
    /* What the process holds before the run's own buffers: the memory budget starts from it. */
    t->baseline_bytes = resident_bytes();
    loom_status room_st = loom_memory_room_read("", t->baseline_bytes, &t->memory_room);
    if (room_st != LOOM_OK) return room_st;
    const loom_host_api *api = loom_host_api_table();
    const loom_model_vtable *mv = t->model.vtable;
    loom_model *model = t->model.instance;

    t->n_tensors = mv->param_count(model);
    t->tensors = calloc(t->n_tensors ? t->n_tensors : 1, sizeof *t->tensors);
    t->tensor_offsets = calloc(t->n_tensors + 1, sizeof *t->tensor_offsets);
    if (!t->tensors || !t->tensor_offsets) return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_tensors; i++) {
        loom_param_info *info = &t->tensors[i];
        *info = (loom_param_info){LOOM_HEADER_INIT(loom_param_info)};
        loom_status st = LOOM_PLUGIN_CALL(t->model, "param_info", mv->param_info(model, i, info));
        if (st == LOOM_OK) st = loom_trainer_check_param_info(t, i, info);
        if (st != LOOM_OK) return st;
        int64_t numel = 1;
        for (uint32_t d = 0; d < info->ndim; d++) numel *= info->shape[d];
        if (numel > INT64_MAX / 4 - t->tensor_offsets[i])
            return loom_error(LOOM_E_INVALID, "model '%s': parameter '%s' takes the total past 2^61 elements",
                              t->model.plugin->desc->name, info->name);
        t->tensor_offsets[i + 1] = t->tensor_offsets[i] + numel;
    }
    loom_status named = loom_trainer_check_param_names(t);
    if (named != LOOM_OK) return named;
    t->total_numel = t->tensor_offsets[t->n_tensors];
    int64_t embedding_numel = 0;
    for (size_t i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].flags & LOOM_PARAM_EMBEDDING)
            embedding_numel += t->tensor_offsets[i + 1] - t->tensor_offsets[i];
    t->flops_per_token = 6 * (t->total_numel - embedding_numel);

    const loom_precision_vtable *pv = t->precision.vtable;
    loom_precision_info pinfo = {LOOM_HEADER_INIT(loom_precision_info)};
    loom_status st = LOOM_PLUGIN_CALL(t->precision, "describe", pv->describe(t->precision.instance, &pinfo));
    if (st != LOOM_OK) return st;
    const loom_kernels_api *kernels = api->service(t->core_host, LOOM_KERNELS_CPU_SERVICE, 0);
    if (!loom_dtype_is_param(pinfo.param_dtype))
        return loom_error(LOOM_E_UNSUPPORTED, "precision '%s' asks for parameter dtype %u: f32, f16 or bf16 only",
                          t->precision.plugin->desc->name, pinfo.param_dtype);
    t->param_dtype = pinfo.param_dtype;
    t->has_master = pinfo.has_master != 0;
    t->mixed_precision = pinfo.param_dtype != LOOM_DTYPE_F32 || pinfo.compute_dtype != LOOM_DTYPE_F32;
    t->param_size = loom_dtype_size(pinfo.param_dtype);

    /* The model initialises (or a file holds) f32; a 16-bit run keeps the rounded values only. */
    float *initial = NULL;
    /* Room for world x 16384-aligned partitions, so ZeRO can all-gather them in place (the
     * tail past total_numel is zero and belongs to nobody). */
    const int64_t quantum = (int64_t)t->world_size * LOOM_NORM_BLOCK;
    t->params_capacity = t->world_size > 1 ? (t->total_numel + quantum - 1) / quantum * quantum : t->total_numel;
    if ((st = check_memory_floor(t)) != LOOM_OK) return st;
    /* On a device: its memory, which this version's backends let the CPU address (the
     * initialisation below and the step write it from the host: docs/gpu.md#what-runs-where). */
    t->params = api->alloc(t->core_host, (size_t)t->params_capacity * t->param_size + 1, 0, t->device, t->device_index);
    if (t->params && t->param_dtype != LOOM_DTYPE_F32) initial = malloc((size_t)t->total_numel * sizeof(float) + 1);
    else initial = t->params;
    if (!t->params || !initial)
        return loom_error(LOOM_E_NOMEM, "out of memory for %lld parameters", (long long)t->total_numel);
    memset((char *)t->params + (size_t)t->total_numel * t->param_size, 0,
           (size_t)(t->params_capacity - t->total_numel) * t->param_size + 1);
    /* A resumed run starts from its checkpoint's weights; a warm start from the model folder. */
    if (t->resume_dir)
        st = load_saved_params(t, t->resume_dir, initial);
    else if (t->args.model_name_or_path && *t->args.model_name_or_path)
        st = load_saved_params(t, t->args.model_name_or_path, initial);
    else
        st = LOOM_PLUGIN_CALL(t->model, "init_params", mv->init_params(model, initial));
    if (initial != t->params) {
        if (st == LOOM_OK) kernels->convert(t->params, t->param_dtype, initial, LOOM_DTYPE_F32, t->total_numel);
        free(initial);
    }
    /* A rank whose disk lacks the folder stops the others, which would wait in the broadcast. */
    if ((st = loom_trainer_fail_together(t, st)) != LOOM_OK || (st = broadcast_params(t)) != LOOM_OK) return st;

    /* Sharding: its plugin and config were chosen by create(). */
    loom_sharding_setup setup = {LOOM_HEADER_INIT(loom_sharding_setup)};
    setup.rank = t->rank;
    setup.world_size = t->world_size;
    setup.total_numel = t->total_numel;
    setup.n_tensors = t->n_tensors;
    setup.tensor_offsets = t->tensor_offsets;
    setup.params = t->params;
    setup.param_dtype = pinfo.param_dtype;
    setup.device = t->device;
    setup.comm = t->comm.instance;
    setup.comm_vtable = t->comm.vtable;
    setup.gradient_accumulation_steps = (int32_t)t->args.gradient_accumulation_steps;
    setup.optimizer_flags = ((const loom_optimizer_vtable *)t->optimizer.vtable)->flags;
    setup.params_capacity = t->params_capacity;
    setup.max_grad_elements = LOOM_HAS(mv, loom_model_vtable, max_grad_elements) ? mv->max_grad_elements(model)
                                                                                  : t->total_numel;
    st = loom_trainer_create_instance(&t->sharding, t->sharding.plugin, &setup);
    if (st != LOOM_OK) return st;
    const loom_sharding_vtable *sv = t->sharding.vtable;
    if ((st = loom_trainer_check_owned(t)) != LOOM_OK) return st;
    if ((st = LOOM_PLUGIN_CALL(t->sharding, "owned_ranges",
                               sv->owned_ranges(t->sharding.instance, t->rank, &t->owned, &t->n_owned))) != LOOM_OK)
        return st;
    if ((st = compute_norm_ranges(t)) != LOOM_OK) return st;
    if ((st = bind_offload(t)) != LOOM_OK) return st;
    if ((st = loom_trainer_param_source_setup(t)) != LOOM_OK) return st;

    /* The batch is bound last: --auto_find_batch_size binds sizes until one fits, and what
     * comes before does not depend on it. */
    st = training && t->args.auto_find_batch_size ? loom_trainer_autobatch_find(t)
                                                  : loom_trainer_bind_batch(t, t->train_batch_size);
    if (st != LOOM_OK) return st;
    t->bound = 1;
    return LOOM_OK;
}

loom_status loom_trainer_prepare(loom_trainer *t)
{
    return prepare(t, 0);
}

loom_status loom_trainer_prepare_train(loom_trainer *t)
{
    return prepare(t, 1);
}

/* ---- optimizer, scheduler and spans ------------------------------------------------------ */

static loom_status build_stat_spans(loom_trainer *t);

uint64_t loom_trainer_optimizer_state_bytes(const loom_trainer *t)
{
    uint64_t owned_numel = 0;
    for (size_t r = 0; r < t->n_owned; r++)
        owned_numel += (uint64_t)(t->owned[r].end - t->owned[r].begin);
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    return (uint64_t)ov->state_slots * owned_numel * sizeof(float);
}

static loom_status build_spans(loom_trainer *t)
{
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    double weight_decay = t->args.weight_decay;
    if (LOOM_HAS(ov, loom_optimizer_vtable, get_hparam)) {
        double v;
        if (ov->get_hparam(t->optimizer.instance, "weight_decay", &v) == LOOM_OK) weight_decay = v;
    }
    size_t count = 0;
    int64_t owned_numel = 0;
    for (size_t r = 0; r < t->n_owned; r++) {
        owned_numel += t->owned[r].end - t->owned[r].begin;
        for (size_t i = 0; i < t->n_tensors; i++)
            if (t->tensor_offsets[i] < t->owned[r].end && t->tensor_offsets[i + 1] > t->owned[r].begin) count++;
    }
    uint32_t slots = ov->state_slots;
    if (slots > LOOM_MAX_STATE_SLOTS)
        return loom_error(LOOM_E_ABI, "optimizer '%s' asks for %u state slots (max %d)",
                          t->optimizer.plugin->desc->name, slots, LOOM_MAX_STATE_SLOTS);
    const loom_host_api *api = loom_host_api_table();
    t->optimizer_state_bytes = loom_trainer_optimizer_state_bytes(t);
    if (slots) {
        /* Under offload the step runs on the host: its states live there. */
        uint32_t where = t->offload_params ? LOOM_DEVICE_CPU : t->device;
        t->optimizer_state = api->alloc(t->core_host, t->optimizer_state_bytes, 0, where, t->device_index);
        if (!t->optimizer_state) return loom_error(LOOM_E_NOMEM, "out of memory for optimizer states");
        memset(t->optimizer_state, 0, t->optimizer_state_bytes);
    }
    t->spans = calloc(count ? count : 1, sizeof *t->spans);
    t->span_range = calloc(count ? count : 1, sizeof *t->span_range);
    t->span_flat_begin = calloc(count ? count : 1, sizeof *t->span_flat_begin);
    if (!t->spans || !t->span_range || !t->span_flat_begin) return loom_error(LOOM_E_NOMEM, "out of memory");
    size_t s = 0;
    int64_t state_offset = 0;
    for (size_t r = 0; r < t->n_owned; r++) {
        for (size_t i = 0; i < t->n_tensors; i++) {
            int64_t b = t->tensor_offsets[i] > t->owned[r].begin ? t->tensor_offsets[i] : t->owned[r].begin;
            int64_t e = t->tensor_offsets[i + 1] < t->owned[r].end ? t->tensor_offsets[i + 1] : t->owned[r].end;
            if (b >= e) continue;
            loom_span *span = &t->spans[s++];
            const loom_param_info *info = &t->tensors[i];
            *span = (loom_span){LOOM_HEADER_INIT(loom_span)};
            span->name = info->name;
            span->tensor_numel = t->tensor_offsets[i + 1] - t->tensor_offsets[i];
            span->offset = b - t->tensor_offsets[i];
            span->numel = e - b;
            span->ndim = info->ndim;
            memcpy(span->shape, info->shape, sizeof span->shape);
            int no_decay = (info->flags & LOOM_PARAM_NO_DECAY) != 0;
            span->flags = no_decay ? LOOM_SPAN_NO_DECAY : 0;
            span->group = (uint32_t)no_decay;
            span->tensor_index = (uint32_t)i;
            span->weight_decay = no_decay ? 0.0 : weight_decay;
            for (uint32_t k = 0; k < slots; k++)
                span->state[k] = t->optimizer_state + (int64_t)k * owned_numel + state_offset;
            state_offset += span->numel;
            t->span_range[s - 1] = r;
            t->span_flat_begin[s - 1] = b;
        }
    }
    t->n_spans = s;
    return build_stat_spans(t);
}

/* For optimizers that need whole-tensor statistics: the spans cut to this rank's norm ranges, so
 * each element is counted by exactly one rank (DDP's replicas count once). */
static loom_status build_stat_spans(loom_trainer *t)
{
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    if (!LOOM_HAS(ov, loom_optimizer_vtable, partial_stats) ||
        !LOOM_HAS_FIELD(ov, loom_optimizer_vtable, tensor_stats) || ov->tensor_stats == 0)
        return LOOM_OK;
    size_t capacity = t->n_spans + t->n_norm_ranges + 1, n = 0;
    t->stat_spans = calloc(capacity, sizeof *t->stat_spans);
    t->stat_span_of = calloc(capacity, sizeof *t->stat_span_of);
    t->stat_flat_begin = calloc(capacity, sizeof *t->stat_flat_begin);
    t->tensor_stats = calloc(t->n_tensors * ov->tensor_stats + 1, sizeof *t->tensor_stats);
    if (!t->stat_spans || !t->stat_span_of || !t->stat_flat_begin || !t->tensor_stats)
        return loom_error(LOOM_E_NOMEM, "out of memory");
    for (size_t s = 0; s < t->n_spans; s++) {
        int64_t b = t->span_flat_begin[s], e = b + t->spans[s].numel;
        for (size_t k = 0; k < t->n_norm_ranges; k++) {
            int64_t lo = b > t->norm_ranges[k].begin ? b : t->norm_ranges[k].begin;
            int64_t hi = e < t->norm_ranges[k].end ? e : t->norm_ranges[k].end;
            if (lo >= hi) continue;
            if (n == capacity) return loom_error(LOOM_E_INTERNAL, "more statistic spans than expected");
            loom_span *piece = &t->stat_spans[n];
            *piece = t->spans[s];
            piece->offset += lo - b;
            piece->numel = hi - lo;
            for (uint32_t slot = 0; slot < LOOM_MAX_STATE_SLOTS; slot++)
                if (piece->state[slot]) piece->state[slot] += lo - b;
            t->stat_span_of[n] = s;
            t->stat_flat_begin[n] = lo;
            n++;
        }
    }
    t->n_stat_spans = n;
    return LOOM_OK;
}

loom_status loom_default_create_optimizer_and_scheduler(loom_trainer *t, int64_t num_training_steps)
{
    loom_status st = loom_trainer_create_instance(&t->optimizer, t->optimizer.plugin, NULL);
    if (st != LOOM_OK) return st;
    /* A ds_config's scheduler values that waited for the run's length (total_num_steps "auto",
     * warmup from --warmup_ratio). */
    if (t->ds && t->ds->scheduler_choice.plugin) {
        if ((st = loom_ds_config_resolve_steps(t->ds, num_training_steps)) != LOOM_OK) return st;
        for (size_t i = 0; i < t->ds->scheduler_choice.n_entries; i++) {
            const loom_config_default *e = &t->ds->scheduler_choice.entries[i];
            if (e->value && (st = loom_config_set(t->scheduler.config, e->key, e->value)) != LOOM_OK) return st;
        }
    }
    loom_schedule_setup setup = {LOOM_HEADER_INIT(loom_schedule_setup)};
    setup.base_lr = t->args.learning_rate;
    setup.total_steps = num_training_steps;
    setup.warmup_steps = loom_args_warmup_steps(&t->args, num_training_steps);
    st = loom_trainer_create_instance(&t->scheduler, t->scheduler.plugin, &setup);
    if (st != LOOM_OK) return st;
    return build_spans(t);
}

