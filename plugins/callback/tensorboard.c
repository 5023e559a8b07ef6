/*
 * tensorboard.c - HF's TensorBoardCallback: every log entry becomes scalars in a TensorBoard
 * event file in logging_dir, tagged as HF tags them ("train/loss", "eval/loss", ...), at the
 * entry's global step. Written on the world's process zero only.
 *
 * The file is TensorFlow's record format (each record: uint64 length, masked CRC-32C of the
 * length, the bytes, masked CRC-32C of the bytes) holding Event protocol buffers:
 *   Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
 * encoded by hand here: no protobuf or TensorFlow library is needed to write three fields.
 *
 * At train begin, as HF does, the run's arguments (args_json, passed by the trainer) go in as
 * text (tag "args/text_summary", the text plugin: Value.metadata = 9 naming the plugin,
 * Value.tensor = 8 a DT_STRING tensor of shape [1]) and as hyper-parameters (the hparams
 * plugin's experiment and session-start records, "_hparams_/experiment" and
 * "_hparams_/session_start_info"; TensorBoard's HParams tab lists the run with them). Numbers,
 * booleans and strings become hparams; lists and objects their JSON text, as HF's
 * to_sanitized_dict turns them into str. `epoch` is logged as "train/epoch", as HF logs it.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <loom/callback.h>
#include <loom/plugin.h>

#include "make_dirs.h"

typedef struct tensorboard {
    loom_host *host;
    const loom_host_api *api;
    FILE *file;
    char path[4096];
    const char *args_json; /* owned by the config */
} tensorboard;

static const loom_param_spec tensorboard_params[] = {
    {"log_dir", LOOM_PARAM_STRING, 0, NULL, "folder of the event file (--logging_dir)"},
    {"args_json", LOOM_PARAM_STRING, 0, "",
     "the run's arguments as JSON, written as text and hparams (the trainer passes them)"},
    {NULL, 0, 0, NULL, NULL},
};

/* CRC-32C (Castagnoli), bitwise: a few hundred bytes per log entry. */
static uint32_t crc32c(const unsigned char *data, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint32_t masked_crc(const unsigned char *data, size_t n)
{
    uint32_t crc = crc32c(data, n);
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

/* A protobuf buffer. Big enough for every argument as text. */
typedef struct pb {
    unsigned char bytes[65536];
    size_t n;
    int overflow;
} pb;

static void put_byte(pb *b, unsigned char c)
{
    if (b->n < sizeof b->bytes) b->bytes[b->n++] = c;
    else b->overflow = 1;
}

static void put_varint(pb *b, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(b, (unsigned char)(v | 0x80));
        v >>= 7;
    }
    put_byte(b, (unsigned char)v);
}

static void put_fixed(pb *b, const void *v, size_t n)
{
    for (size_t i = 0; i < n; i++) put_byte(b, ((const unsigned char *)v)[i]); /* little-endian hosts */
}

static void put_bytes_field(pb *b, uint32_t field, const void *data, size_t n)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    for (size_t i = 0; i < n; i++) put_byte(b, ((const unsigned char *)data)[i]);
}

static double wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static loom_status write_record(tensorboard *self, const pb *event)
{
    if (event->overflow) return self->api->fail(self->host, LOOM_E_INTERNAL, "event larger than 64 KiB");
    uint64_t length = event->n;
    uint32_t length_crc = masked_crc((const unsigned char *)&length, 8), data_crc = masked_crc(event->bytes, event->n);
    if (fwrite(&length, 8, 1, self->file) != 1 || fwrite(&length_crc, 4, 1, self->file) != 1 ||
        fwrite(event->bytes, 1, event->n, self->file) != event->n || fwrite(&data_crc, 4, 1, self->file) != 1 ||
        fflush(self->file) != 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: write failed", self->path);
    return LOOM_OK;
}

static loom_status tensorboard_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                      loom_callback **out)
{
    const char *dir = NULL;
    if (api->cfg_str(config, "log_dir", &dir) != LOOM_CFG_PRESENT || !*dir)
        return api->fail(host, LOOM_E_INVALID, "log_dir is required (the trainer passes --logging_dir)");
    tensorboard *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    *out = (loom_callback *)self;
    if (api->cfg_str(config, "args_json", &self->args_json) != LOOM_CFG_PRESENT) self->args_json = "";
    char folder[3800];
    snprintf(folder, sizeof folder, "%s", dir);
    char name[256] = "localhost";
    gethostname(name, sizeof name - 1);
    snprintf(self->path, sizeof self->path, "%s/events.out.tfevents.%lld.%s.%d.loom", folder, (long long)time(NULL),
             name, (int)getpid());
    /* Files are opened lazily at the first event of the world's process zero. */
    return LOOM_OK;
}

static void tensorboard_destroy(loom_callback *self_)
{
    tensorboard *self = (tensorboard *)self_;
    if (!self) return;
    if (self->file) fclose(self->file);
    self->api->free_memory(self->host, self);
}

static loom_status open_file(tensorboard *self)
{
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", self->path);
    char *slash = strrchr(folder, '/');
    if (slash) *slash = '\0';
    if (make_dirs(folder) != 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: cannot create: %s", folder, strerror(errno));
    self->file = fopen(self->path, "wb");
    if (!self->file) return self->api->fail(self->host, LOOM_E_IO, "%s: cannot write: %s", self->path, strerror(errno));
    pb event = {.n = 0};
    double now = wall_time();
    put_varint(&event, 1 << 3 | 1);
    put_fixed(&event, &now, 8);
    put_bytes_field(&event, 3, "brain.Event:2", 13);
    return write_record(self, &event);
}

/* HF's rewrite_logs: "eval_x" -> "eval/x", "test_x" -> "test/x", anything else -> "train/x". */
static void tag_of(char *out, size_t size, const char *key)
{
    if (strncmp(key, "eval_", 5) == 0) snprintf(out, size, "eval/%s", key + 5);
    else if (strncmp(key, "test_", 5) == 0) snprintf(out, size, "test/%s", key + 5);
    else snprintf(out, size, "train/%s", key);
}

/* An Event of one Summary.Value holding `value` (already encoded), at `step`. */
static loom_status write_value(tensorboard *self, int64_t step, const pb *value)
{
    static pb summary, event;
    summary.n = event.n = 0;
    summary.overflow = event.overflow = value->overflow;
    put_bytes_field(&summary, 1, value->bytes, value->n);
    double now = wall_time();
    put_varint(&event, 1 << 3 | 1);
    put_fixed(&event, &now, 8);
    put_varint(&event, 2 << 3 | 0);
    put_varint(&event, (uint64_t)step);
    put_bytes_field(&event, 5, summary.bytes, summary.n);
    event.overflow |= summary.overflow;
    return write_record(self, &event);
}

/* SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1; bytes content = 2; } } */
static void put_metadata(pb *value, const char *plugin, const pb *content)
{
    static pb data, metadata;
    data.n = metadata.n = 0;
    data.overflow = metadata.overflow = 0;
    put_bytes_field(&data, 1, plugin, strlen(plugin));
    if (content) put_bytes_field(&data, 2, content->bytes, content->n);
    put_bytes_field(&metadata, 1, data.bytes, data.n);
    put_bytes_field(value, 9, metadata.bytes, metadata.n);
    value->overflow |= data.overflow | metadata.overflow | (content && content->overflow);
}

/* HF's add_text("args", args.to_json_string()). */
static loom_status write_args_text(tensorboard *self)
{
    static pb value, tensor, shape, dim;
    value.n = tensor.n = shape.n = dim.n = 0;
    value.overflow = tensor.overflow = shape.overflow = dim.overflow = 0;
    put_bytes_field(&value, 1, "args/text_summary", 17);
    put_metadata(&value, "text", NULL);
    put_varint(&dim, 1 << 3 | 0); /* TensorShapeProto.Dim.size = 1 */
    put_varint(&dim, 1);
    put_bytes_field(&shape, 2, dim.bytes, dim.n);
    put_varint(&tensor, 1 << 3 | 0); /* TensorProto.dtype = DT_STRING */
    put_varint(&tensor, 7);
    put_bytes_field(&tensor, 2, shape.bytes, shape.n);
    put_bytes_field(&tensor, 8, self->args_json, strlen(self->args_json));
    put_bytes_field(&value, 8, tensor.bytes, tensor.n);
    value.overflow |= tensor.overflow | shape.overflow;
    return write_value(self, 0, &value);
}

/* HF's add_hparams(args.to_sanitized_dict(), {}): HParamsPluginData { version = 1;
 * experiment = 2 { hparam_infos = 4 { name = 1; type = 4 } } } and { session_start_info = 3 {
 * map<string, google.protobuf.Value> hparams = 1; start_time_secs = 5 } }. */
static loom_status write_hparams(tensorboard *self)
{
    cJSON *args = cJSON_Parse(self->args_json);
    if (!cJSON_IsObject(args)) {
        cJSON_Delete(args);
        return LOOM_OK;
    }
    static pb infos, hparams, experiment, start, content, value;
    infos.n = hparams.n = experiment.n = start.n = 0;
    infos.overflow = hparams.overflow = experiment.overflow = start.overflow = 0;
    for (const cJSON *item = args->child; item; item = item->next) {
        if (cJSON_IsNull(item)) continue;
        pb info = {.n = 0}, entry = {.n = 0}, v = {.n = 0};
        int type = 1; /* DATA_TYPE_STRING */
        if (cJSON_IsNumber(item)) {
            type = 3; /* FLOAT64; google.protobuf.Value.number_value = 2 */
            put_varint(&v, 2 << 3 | 1);
            put_fixed(&v, &item->valuedouble, 8);
        } else if (cJSON_IsBool(item)) {
            type = 2; /* BOOL; bool_value = 4 */
            put_varint(&v, 4 << 3 | 0);
            put_varint(&v, cJSON_IsTrue(item) ? 1 : 0);
        } else if (cJSON_IsString(item)) {
            put_bytes_field(&v, 3, item->valuestring, strlen(item->valuestring));
        } else {
            char *text = cJSON_PrintUnformatted(item);
            if (text) put_bytes_field(&v, 3, text, strlen(text));
            free(text);
        }
        put_bytes_field(&info, 1, item->string, strlen(item->string));
        put_varint(&info, 4 << 3 | 0);
        put_varint(&info, (uint64_t)type);
        put_bytes_field(&infos, 4, info.bytes, info.n);
        put_bytes_field(&entry, 1, item->string, strlen(item->string));
        put_bytes_field(&entry, 2, v.bytes, v.n);
        put_bytes_field(&hparams, 1, entry.bytes, entry.n);
        hparams.overflow |= info.overflow | entry.overflow | v.overflow;
    }
    cJSON_Delete(args);
    double now = wall_time();
    /* Experiment's hparam_infos are field 4 entries already. */
    for (size_t i = 0; i < infos.n; i++) put_byte(&experiment, infos.bytes[i]);
    experiment.overflow |= infos.overflow;
    for (size_t i = 0; i < hparams.n; i++) put_byte(&start, hparams.bytes[i]);
    put_varint(&start, 5 << 3 | 1);
    put_fixed(&start, &now, 8);
    start.overflow |= hparams.overflow;
    const char *tags[2] = {"_hparams_/experiment", "_hparams_/session_start_info"};
    const pb *bodies[2] = {&experiment, &start};
    for (int k = 0; k < 2; k++) {
        content.n = value.n = 0;
        content.overflow = value.overflow = 0;
        put_varint(&content, 1 << 3 | 0); /* version */
        put_varint(&content, 0);
        put_bytes_field(&content, (uint32_t)(2 + k), bodies[k]->bytes, bodies[k]->n);
        content.overflow |= bodies[k]->overflow;
        put_bytes_field(&value, 1, tags[k], strlen(tags[k]));
        put_metadata(&value, "hparams", &content);
        loom_status st = write_value(self, 0, &value);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static loom_status tensorboard_on_event(loom_callback *self_, uint32_t event_id, const loom_trainer_state *state,
                                        loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)control;
    tensorboard *self = (tensorboard *)self_;
    if (!state->is_world_process_zero) return LOOM_OK;
    loom_status st;
    if (event_id == LOOM_EVENT_TRAIN_BEGIN && *self->args_json) {
        if (!self->file && (st = open_file(self)) != LOOM_OK) return st;
        if ((st = write_args_text(self)) != LOOM_OK) return st;
        return write_hparams(self);
    }
    if (event_id != LOOM_EVENT_LOG || !payload) return LOOM_OK;
    if (!self->file && (st = open_file(self)) != LOOM_OK) return st;
    pb summary = {.n = 0};
    for (size_t i = 0; i < payload->n_metrics; i++) {
        char tag[160];
        tag_of(tag, sizeof tag, payload->metrics[i].key);
        pb value = {.n = 0};
        put_bytes_field(&value, 1, tag, strlen(tag));
        float v = (float)payload->metrics[i].value;
        put_varint(&value, 2 << 3 | 5);
        put_fixed(&value, &v, 4);
        put_bytes_field(&summary, 1, value.bytes, value.n);
    }
    pb event = {.n = 0};
    double now = wall_time();
    put_varint(&event, 1 << 3 | 1);
    put_fixed(&event, &now, 8);
    put_varint(&event, 2 << 3 | 0);
    put_varint(&event, (uint64_t)state->global_step);
    put_bytes_field(&event, 5, summary.bytes, summary.n);
    if (summary.overflow) return self->api->fail(self->host, LOOM_E_INTERNAL, "log entry larger than 64 KiB");
    return write_record(self, &event);
}

static const loom_callback_vtable tensorboard_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = tensorboard_create,
    .destroy = tensorboard_destroy,
    .on_event = tensorboard_on_event,
};

static const loom_plugin_desc tensorboard_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "tensorboard",
    .version = "1.1.0",
    .summary = "writes log entries as TensorBoard scalars (HF TensorBoardCallback)",
    .vtable = &tensorboard_vtable,
    .params = tensorboard_params,
};

LOOM_PLUGIN_EXPORT(&tensorboard_desc)
