/*
 * trainer_service.c - "loom.trainer/1" (abi/loom/callback.h): what HF passes a callback as
 * **kwargs - the model's tensors, the optimizer's hyper-parameters and states, the learning
 * rate, the data loaders' sizes and positions, the tokenizer, log_history and the arguments -
 * read from the trainer behind the callback's host context, never copied ahead of time.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args_internal.h"
#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "trainer_internal.h"

static loom_trainer *trainer_of(loom_host *host) { return loom_host_trainer(host); }

/* The buffer protocol of log_history and argument: the text and its NUL when they fit. */
static loom_status copy_text(const char *text, char *buffer, size_t capacity, size_t *length)
{
    size_t n = strlen(text);
    *length = n;
    if (!buffer || capacity < n + 1) return LOOM_E_NOMEM;
    memcpy(buffer, text, n + 1);
    return LOOM_OK;
}

/* ---- parameters -------------------------------------------------------------------------- */

static int64_t svc_num_tensors(loom_host *host)
{
    const loom_trainer *t = trainer_of(host);
    return t->bound && t->params ? (int64_t)t->n_tensors : 0;
}

static loom_status svc_tensor(loom_host *host, int64_t index, const char **name, loom_tensor_view *view)
{
    const loom_trainer *t = trainer_of(host);
    if (index < 0 || index >= svc_num_tensors(host))
        return loom_error(LOOM_E_NOT_FOUND, "tensor %lld: the model has %lld", (long long)index,
                          (long long)svc_num_tensors(host));
    const loom_param_info *info = &t->tensors[index];
    if (name) *name = info->name;
    /* A gather here would be collective, and callbacks are not called in lockstep. */
    if (t->params_partitioned && t->whole_depth == 0)
        return loom_error(LOOM_E_UNSUPPORTED,
                          "tensor '%s': the parameters are partitioned between uses (ZeRO-3); this rank holds only "
                          "its own range of them",
                          info->name);
    *view = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
    view->data = (char *)t->params + (size_t)t->tensor_offsets[index] * t->param_size;
    view->dtype = t->param_dtype;
    view->device = LOOM_DEVICE_CPU;
    view->ndim = info->ndim;
    memcpy(view->shape, info->shape, sizeof view->shape);
    return LOOM_OK;
}

static int64_t tensor_index(const loom_trainer *t, const char *name)
{
    for (size_t i = 0; name && i < t->n_tensors; i++)
        if (t->tensors[i].name && strcmp(t->tensors[i].name, name) == 0) return (int64_t)i;
    return -1;
}

static loom_status svc_find_tensor(loom_host *host, const char *name, loom_tensor_view *view)
{
    const loom_trainer *t = trainer_of(host);
    int64_t i = svc_num_tensors(host) ? tensor_index(t, name) : -1;
    if (i < 0) return loom_error(LOOM_E_NOT_FOUND, "the model has no tensor '%s'", name ? name : "(null)");
    return svc_tensor(host, i, NULL, view);
}

/* ---- optimizer --------------------------------------------------------------------------- */

static const char *svc_optimizer_name(loom_host *host)
{
    const loom_trainer *t = trainer_of(host);
    return t->optimizer.plugin ? t->optimizer.plugin->desc->name : NULL;
}

static loom_status svc_learning_rate(loom_host *host, double *next, double *last, int64_t *steps);

static loom_status svc_optimizer_hparam(loom_host *host, const char *name, double *out)
{
    const loom_trainer *t = trainer_of(host);
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    if (!name) return loom_error(LOOM_E_INVALID, "optimizer_hparam: no name");
    if (ov && t->optimizer.instance && LOOM_HAS(ov, loom_optimizer_vtable, get_hparam) &&
        ov->get_hparam(t->optimizer.instance, name, out) == LOOM_OK)
        return LOOM_OK;
    loom_error_clear();
    if (t->optimizer.config && loom_config_f64(t->optimizer.config, name, out) == LOOM_CFG_PRESENT) return LOOM_OK;
    /* The rate is the scheduler's, as in HF's param_groups: "lr" the next step's (once the
     * scheduler exists), "initial_lr" the peak it scales. */
    if (strcmp(name, "initial_lr") == 0 || (strcmp(name, "lr") == 0 && !t->scheduler.instance)) {
        *out = t->args.learning_rate;
        return LOOM_OK;
    }
    if (strcmp(name, "lr") == 0) return svc_learning_rate(host, out, NULL, NULL);
    return loom_error(LOOM_E_NOT_FOUND, "optimizer '%s' has no hyper-parameter '%s'", svc_optimizer_name(host), name);
}

static const char *svc_optimizer_state_name(loom_host *host, uint32_t slot)
{
    const loom_trainer *t = trainer_of(host);
    const loom_optimizer_vtable *ov = t->optimizer.vtable;
    if (!ov || slot >= ov->state_slots || slot >= LOOM_MAX_STATE_SLOTS) return NULL;
    return ov->state_names ? ov->state_names[slot] : NULL;
}

static loom_status svc_optimizer_state(loom_host *host, const char *tensor, const char *state, uint32_t piece,
                                       loom_tensor_view *view, int64_t *offset)
{
    const loom_trainer *t = trainer_of(host);
    if (!t->spans || !t->optimizer.instance)
        return loom_error(LOOM_E_UNSUPPORTED, "optimizer states do not exist before training starts");
    int64_t slot = -1;
    for (uint32_t k = 0; state && svc_optimizer_state_name(host, k); k++)
        if (strcmp(svc_optimizer_state_name(host, k), state) == 0) slot = k;
    int64_t i = tensor_index(t, tensor);
    if (slot < 0 || i < 0)
        return loom_error(LOOM_E_NOT_FOUND, "optimizer '%s' keeps no state '%s' of tensor '%s'",
                          svc_optimizer_name(host), state ? state : "(null)", tensor ? tensor : "(null)");
    uint32_t seen = 0;
    for (size_t s = 0; s < t->n_spans; s++) {
        const loom_span *span = &t->spans[s];
        if (span->tensor_index != (uint32_t)i || seen++ != piece) continue;
        *view = (loom_tensor_view){LOOM_HEADER_INIT(loom_tensor_view)};
        view->data = span->state[slot];
        view->dtype = LOOM_DTYPE_F32;
        view->device = LOOM_DEVICE_CPU;
        view->ndim = 1;
        view->shape[0] = span->numel;
        if (offset) *offset = span->offset;
        return LOOM_OK;
    }
    return loom_error(LOOM_E_NOT_FOUND, "tensor '%s': this rank holds %u piece(s) of its state, not %u", tensor, seen,
                      piece + 1);
}

/* ---- schedule and data ------------------------------------------------------------------- */

static loom_status svc_learning_rate(loom_host *host, double *next, double *last, int64_t *steps)
{
    const loom_trainer *t = trainer_of(host);
    if (!t->scheduler.instance)
        return loom_error(LOOM_E_UNSUPPORTED, "the scheduler does not exist before training starts");
    if (next) {
        const loom_scheduler_vtable *schv = t->scheduler.vtable;
        loom_schedule_value value = {LOOM_HEADER_INIT(loom_schedule_value)};
        loom_status st = schv->value(t->scheduler.instance, t->scheduler_step, &value);
        if (st != LOOM_OK) return st;
        *next = value.lr;
    }
    if (last) *last = t->scheduler_step > 0 ? t->last_lr : NAN;
    if (steps) *steps = t->scheduler_step;
    return LOOM_OK;
}

static loom_status svc_data(loom_host *host, loom_trainer_data *out)
{
    loom_trainer *t = trainer_of(host);
    size_t header = offsetof(loom_trainer_data, train_examples);
    if (!out || out->abi_major != LOOM_ABI_MAJOR || out->struct_size < header)
        return loom_error(LOOM_E_ABI, "data: initialise the loom_trainer_data header (LOOM_HEADER_INIT)");
    loom_trainer_data d = {LOOM_HEADER_INIT(loom_trainer_data)};
    int started = t->train_batches > 0;
    d.train_examples = t->train_dataset ? t->train_dataset->n_examples : -1;
    d.train_batches = started ? t->train_batches : -1;
    d.eval_examples = t->eval_dataset ? t->eval_dataset->n_examples : -1;
    d.eval_batches = -1;
    if (t->eval_dataset) {
        /* len(eval_dataloader) of the loader evaluate() would use, hook included. */
        loom_dataloader dl;
        if (t->hooks.get_eval_dataloader(t, &dl) == LOOM_OK) {
            d.eval_batches = loom_dataloader_len(&dl);
            loom_dataloader_free(&dl);
        }
        loom_error_clear();
    }
    d.epoch = started ? t->data_epoch : -1;
    d.batch = started ? t->data_batch : 0;
    d.updates_per_epoch = started ? t->updates_per_epoch : -1;
    d.gradient_accumulation_steps = t->args.gradient_accumulation_steps;
    size_t n = out->struct_size < sizeof d ? out->struct_size : sizeof d;
    memcpy((char *)out + header, (const char *)&d + header, n - header);
    return LOOM_OK;
}

/* ---- tokenizer, log_history, arguments --------------------------------------------------- */

static const char *svc_tokenizer_folder(loom_host *host)
{
    const loom_trainer *t = trainer_of(host);
    if (t->args.tokenizer_name && *t->args.tokenizer_name) return t->args.tokenizer_name;
    const char *model = t->args.model_name_or_path;
    if (!model || !*model) return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", model);
    return access(path, R_OK) == 0 ? model : NULL;
}

static int64_t svc_log_history_len(loom_host *host) { return cJSON_GetArraySize(trainer_of(host)->log_history); }

static loom_status svc_log_history(loom_host *host, int64_t first, char *buffer, size_t capacity, size_t *length)
{
    const loom_trainer *t = trainer_of(host);
    cJSON *slice = cJSON_CreateArray();
    if (!slice) return loom_error(LOOM_E_NOMEM, "out of memory");
    int64_t index = 0;
    for (cJSON *entry = ((cJSON *)t->log_history)->child; entry; entry = entry->next, index++)
        if (index >= first) cJSON_AddItemReferenceToArray(slice, entry);
    char *text = cJSON_PrintUnformatted(slice);
    cJSON_Delete(slice);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = copy_text(text, buffer, capacity, length);
    cJSON_free(text);
    return st;
}

static loom_status svc_argument(loom_host *host, const char *name, char *buffer, size_t capacity, size_t *length)
{
    const loom_trainer *t = trainer_of(host);
    const loom__arg_desc *d = name ? loom__arg_find(name) : NULL;
    if (!d) return loom_error(LOOM_E_NOT_FOUND, "no training argument named '%s'", name ? name : "(null)");
    char *text = loom__arg_format(&t->args, d);
    if (!text) return loom_error(LOOM_E_NOMEM, "out of memory");
    loom_status st = copy_text(text, buffer, capacity, length);
    free(text);
    return st;
}

/* ---- JSON for plugins without a JSON library --------------------------------------------- */

static loom_status svc_json_number(loom_host *host, const char *json, const char *path, double *out)
{
    (void)host;
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!root) return loom_error(LOOM_E_FORMAT, "json_number: the text is not JSON");
    const cJSON *at = root;
    const char *p = path ? path : "";
    while (at && *p) {
        size_t n = strcspn(p, ".");
        char part[256];
        if (n >= sizeof part) {
            at = NULL;
            break;
        }
        memcpy(part, p, n);
        part[n] = '\0';
        int digits = n > 0;
        for (size_t i = 0; i < n; i++) digits &= isdigit((unsigned char)part[i]) != 0;
        if (cJSON_IsArray(at) && digits) at = cJSON_GetArrayItem(at, atoi(part));
        else if (cJSON_IsObject(at)) at = cJSON_GetObjectItemCaseSensitive(at, part);
        else at = NULL;
        p += n;
        if (*p == '.') p++;
    }
    loom_status st = LOOM_OK;
    if (cJSON_IsNumber(at)) *out = at->valuedouble;
    else if (cJSON_IsBool(at)) *out = cJSON_IsTrue(at) ? 1.0 : 0.0;
    else st = loom_error(LOOM_E_NOT_FOUND, "json_number: nothing numeric at '%s'", path ? path : "");
    cJSON_Delete(root);
    return st;
}

static const loom_trainer_api trainer_api = {
    LOOM_HEADER_INIT(loom_trainer_api),
    .num_tensors = svc_num_tensors,
    .tensor = svc_tensor,
    .find_tensor = svc_find_tensor,
    .optimizer_name = svc_optimizer_name,
    .optimizer_hparam = svc_optimizer_hparam,
    .optimizer_state_name = svc_optimizer_state_name,
    .optimizer_state = svc_optimizer_state,
    .learning_rate = svc_learning_rate,
    .data = svc_data,
    .tokenizer_folder = svc_tokenizer_folder,
    .log_history_len = svc_log_history_len,
    .log_history = svc_log_history,
    .argument = svc_argument,
    .json_number = svc_json_number,
};

const loom_trainer_api *loom_trainer_service_table(void) { return &trainer_api; }
