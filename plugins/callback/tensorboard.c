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
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <loom/callback.h>

typedef struct tensorboard {
    loom_host *host;
    const loom_host_api *api;
    FILE *file;
    char path[4096];
} tensorboard;

static const loom_param_spec tensorboard_params[] = {
    {"log_dir", LOOM_PARAM_STRING, 0, NULL, "folder of the event file (--logging_dir)"},
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

/* A growing protobuf buffer. */
typedef struct pb {
    unsigned char bytes[8192];
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
    if (event->overflow) return self->api->fail(self->host, LOOM_E_INTERNAL, "event larger than 8 KiB");
    uint64_t length = event->n;
    uint32_t length_crc = masked_crc((const unsigned char *)&length, 8), data_crc = masked_crc(event->bytes, event->n);
    if (fwrite(&length, 8, 1, self->file) != 1 || fwrite(&length_crc, 4, 1, self->file) != 1 ||
        fwrite(event->bytes, 1, event->n, self->file) != event->n || fwrite(&data_crc, 4, 1, self->file) != 1 ||
        fflush(self->file) != 0)
        return self->api->fail(self->host, LOOM_E_IO, "%s: write failed", self->path);
    return LOOM_OK;
}

static int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int failed = mkdir(path, 0777) != 0 && errno != EEXIST;
        *p = '/';
        if (failed) return -1;
    }
    return mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
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
    if (make_dirs(folder) != 0) return self->api->fail(self->host, LOOM_E_IO, "%s: cannot create", folder);
    self->file = fopen(self->path, "wb");
    if (!self->file) return self->api->fail(self->host, LOOM_E_IO, "%s: cannot write", self->path);
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

static loom_status tensorboard_on_event(loom_callback *self_, uint32_t event_id, const loom_trainer_state *state,
                                        loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)control;
    tensorboard *self = (tensorboard *)self_;
    if (event_id != LOOM_EVENT_LOG || !state->is_world_process_zero || !payload) return LOOM_OK;
    loom_status st;
    if (!self->file && (st = open_file(self)) != LOOM_OK) return st;
    pb summary = {.n = 0};
    for (size_t i = 0; i < payload->n_metrics; i++) {
        if (strcmp(payload->metrics[i].key, "epoch") == 0) continue;
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
    if (summary.overflow) return self->api->fail(self->host, LOOM_E_INTERNAL, "log entry larger than 8 KiB");
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
    .version = "1.0.0",
    .summary = "writes log entries as TensorBoard scalars (HF TensorBoardCallback)",
    .vtable = &tensorboard_vtable,
    .params = tensorboard_params,
};

LOOM_EXPORT const loom_plugin_desc *loom_plugin_query(uint32_t host_abi_major, uint32_t index)
{
    (void)host_abi_major;
    return index == 0 ? &tensorboard_desc : NULL;
}
