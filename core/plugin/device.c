/*
 * device.c - choosing and binding the run's device, and the device side of api->alloc
 * (see device.h; docs/gpu.md#device-selection).
 */
#include "device.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "host.h"
#include "lk_cpu.h"

/* Device blocks are few (parameters, gradients, states, activations: allocated once before
 * step 1), so a small table under a lock is all free() needs to find their size. */
typedef struct device_block {
    void *ptr;
    size_t bytes;
} device_block;

static struct {
    const loom_plugin *plugin;
    const loom_backend_vtable *vt;
    loom_backend *instance;
    loom_host *host;
    uint32_t device;
    int32_t index;
    pthread_mutex_t lock;
    device_block *blocks;
    size_t n_blocks, cap_blocks;
    uint64_t bytes, peak, allocations;
    loom_backend_service service; /* "loom.backend/1": set with vt, read by plugins      */
} dev = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const char *device_word(uint32_t device) { return device == LOOM_DEVICE_CUDA ? "cuda" : "cpu"; }

loom_status loom_device_choose(const loom_device_request *req, uint32_t backend_device, loom_device_choice *out)
{
    out->device = LOOM_DEVICE_CPU;
    out->index = 0;
    const char *name = req->backend_name ? req->backend_name : "cuda";
    if (req->no_cuda) {
        if (req->named)
            return loom_error(LOOM_E_INVALID,
                              "--plugin %s names a GPU backend but --no_cuda/--use_cpu asks for the CPU: "
                              "drop one of them",
                              name);
        return LOOM_OK;
    }
    if (req->probe != LOOM_OK || req->device_count < 1) {
        if (!req->named) return LOOM_OK; /* nothing usable: the CPU, as HF does without a GPU */
        const char *why = req->probe_error && *req->probe_error ? req->probe_error : "no device visible";
        return loom_error(req->probe == LOOM_OK ? LOOM_E_UNSUPPORTED : req->probe, "--plugin %s cannot run here: %s",
                          name, why);
    }
    int32_t index = 0;
    if (req->local_rank >= 0) {
        /* Several ranks on a node with one device each; HF also lets ranks share the only GPU
         * there is (torch.cuda.set_device(local_rank) fails otherwise), loom says so instead. */
        if (req->local_rank >= req->device_count)
            return loom_error(LOOM_E_INVALID,
                              "LOCAL_RANK=%d needs %s:%d but %d %s device%s visible (CUDA_VISIBLE_DEVICES, "
                              "--num_gpus): start at most %d process%s per node, or add --no_cuda",
                              req->local_rank, device_word(backend_device), req->local_rank, req->device_count,
                              device_word(backend_device), req->device_count == 1 ? " is" : "s are", req->device_count,
                              req->device_count == 1 ? "" : "es");
        index = req->local_rank;
    }
    out->device = backend_device;
    out->index = index;
    return LOOM_OK;
}

/* Whether the NVIDIA kernel module is loaded. Checked before a run that did not name a backend
 * opens the cuda plugin: that plugin maps the CUDA runtime and cuBLAS (hundreds of MiB of
 * code), which a CPU run on a machine with the toolkit but no GPU should not carry. */
static int nvidia_kernel_driver(void)
{
    return access("/proc/driver/nvidia/version", F_OK) == 0 || access("/dev/nvidiactl", F_OK) == 0;
}

loom_status loom_device_open(const loom_plugin *backend, int named, int no_cuda, int local_rank, int local_world_size,
                             const loom_config *config)
{
    if (dev.vt) return loom_error(LOOM_E_INTERNAL, "a device is already bound");
    loom_device_request req = {.no_cuda = no_cuda, .named = named, .local_rank = local_rank,
                               .local_world_size = local_world_size, .probe = LOOM_E_NOT_FOUND};
    if (!backend && !no_cuda && !nvidia_kernel_driver()) {
        loom_log(LOOM_LOG_DEBUG,
                 "device: cpu (no NVIDIA kernel driver: neither /proc/driver/nvidia/version nor /dev/nvidiactl)");
    } else if (!backend && !no_cuda) {
        /* Not named: use the GPU when the cuda plugin is installed and says one is usable. */
        if (loom_plugin_load("cuda", LOOM_KIND_BACKEND, &backend) != LOOM_OK) {
            loom_log(LOOM_LOG_DEBUG, "device: cpu (no usable cuda backend: %s)", loom_error_message());
            loom_error_clear();
            backend = NULL;
        }
    }
    if (backend && backend->desc->kind != LOOM_KIND_BACKEND)
        return loom_error(LOOM_E_INVALID, "%s is a %s plugin, not a backend", backend->desc->name,
                          loom_kind_name(backend->desc->kind));
    const loom_backend_vtable *vt = backend ? backend->desc->vtable : NULL;
    loom_host *host = NULL;
    char reason[512] = "";
    if (vt) req.backend_name = backend->desc->name;
    if (vt && !no_cuda) {
        host = loom_host_create(backend->desc->name);
        if (!host) return loom_error(LOOM_E_NOMEM, "out of memory");
        req.probe = vt->probe(host, loom_host_api_table(), &req.device_count);
        if (req.probe != LOOM_OK) {
            snprintf(reason, sizeof reason, "%s", loom_error_message());
            req.probe_error = reason;
            loom_error_clear();
            if (!named) loom_log(LOOM_LOG_DEBUG, "device: cpu (%s)", reason);
        }
    }
    loom_device_choice choice;
    loom_status st = loom_device_choose(&req, vt ? vt->device : LOOM_DEVICE_CUDA, &choice);
    if (st != LOOM_OK || choice.device == LOOM_DEVICE_CPU) {
        loom_host_destroy(host);
        return st;
    }
    loom_backend *instance = NULL;
    if ((st = vt->create(host, loom_host_api_table(), config, choice.index, &instance)) != LOOM_OK) {
        loom_host_destroy(host);
        return st;
    }
    const loom_kernels_api *k = vt->kernels(instance);
    if (!k || k->device != vt->device || k->abi_major != LOOM_ABI_MAJOR) {
        vt->destroy(instance);
        loom_host_destroy(host);
        return loom_error(LOOM_E_ABI, "backend %s lends no kernel table for its device", backend->desc->name);
    }
    dev.plugin = backend;
    dev.vt = vt;
    dev.instance = instance;
    dev.host = host;
    dev.device = choice.device;
    dev.index = choice.index;
    dev.service = (loom_backend_service){LOOM_HEADER_INIT(loom_backend_service), vt, instance};
    return LOOM_OK;
}

void loom_device_close(void)
{
    if (!dev.vt) return;
    dev.vt->synchronize(dev.instance);
    pthread_mutex_lock(&dev.lock);
    for (size_t i = 0; i < dev.n_blocks; i++) dev.vt->free_memory(dev.instance, dev.blocks[i].ptr);
    free(dev.blocks);
    dev.blocks = NULL;
    dev.n_blocks = dev.cap_blocks = 0;
    dev.bytes = 0;
    pthread_mutex_unlock(&dev.lock);
    dev.vt->destroy(dev.instance);
    loom_host_destroy(dev.host);
    dev.vt = NULL;
    dev.instance = NULL;
    dev.host = NULL;
    dev.plugin = NULL;
    dev.device = LOOM_DEVICE_CPU;
    dev.index = 0;
}

uint32_t loom_device_current(void) { return dev.vt ? dev.device : LOOM_DEVICE_CPU; }
int32_t loom_device_index(void) { return dev.vt ? dev.index : 0; }

const loom_backend_vtable *loom_device_backend(loom_backend **instance)
{
    if (instance) *instance = dev.instance;
    return dev.vt;
}

const loom_backend_service *loom_device_service(void) { return dev.vt ? &dev.service : NULL; }

const loom_kernels_api *loom_device_kernels(void)
{
    return dev.vt ? dev.vt->kernels(dev.instance) : lk_cpu_kernel_table();
}

static void version_text(char *buf, size_t size, int32_t v)
{
    if (v > 0) snprintf(buf, size, "%d.%d", v / 1000, (v % 1000) / 10);
    else snprintf(buf, size, "?");
}

void loom_device_describe(char *buf, size_t size)
{
    if (!dev.vt) {
        snprintf(buf, size, "cpu");
        return;
    }
    loom_device_info info = {LOOM_HEADER_INIT(loom_device_info)};
    if (dev.vt->device_info(dev.instance, &info) != LOOM_OK) {
        snprintf(buf, size, "%s:%d (no details: %s)", device_word(dev.device), dev.index, loom_error_message());
        loom_error_clear();
        return;
    }
    char driver[16], runtime[16];
    version_text(driver, sizeof driver, info.driver_version);
    version_text(runtime, sizeof runtime, info.runtime_version);
    snprintf(buf, size, "%s:%d (%s, %.1f GiB, sm_%d%d, driver %s, runtime %s)", device_word(dev.device), dev.index,
             info.name, (double)info.total_bytes / (1024.0 * 1024.0 * 1024.0), info.capability_major,
             info.capability_minor, driver, runtime);
}

void *loom_device_alloc(size_t bytes, uint32_t device, int32_t index)
{
    (void)index; /* one device per process: every index names the bound one */
    if (!dev.vt || device != dev.device) return NULL;
    void *ptr = dev.vt->alloc(dev.instance, bytes ? bytes : 1);
    if (!ptr) return NULL;
    pthread_mutex_lock(&dev.lock);
    if (dev.n_blocks == dev.cap_blocks) {
        size_t cap = dev.cap_blocks ? 2 * dev.cap_blocks : 64;
        device_block *grown = realloc(dev.blocks, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&dev.lock);
            dev.vt->free_memory(dev.instance, ptr);
            return NULL;
        }
        dev.blocks = grown;
        dev.cap_blocks = cap;
    }
    dev.blocks[dev.n_blocks++] = (device_block){ptr, bytes};
    dev.bytes += bytes;
    dev.allocations++;
    if (dev.bytes > dev.peak) dev.peak = dev.bytes;
    pthread_mutex_unlock(&dev.lock);
    return ptr;
}

int loom_device_free(void *ptr)
{
    if (!dev.vt || !ptr) return 0;
    pthread_mutex_lock(&dev.lock);
    for (size_t i = dev.n_blocks; i-- > 0;) {
        if (dev.blocks[i].ptr != ptr) continue;
        dev.bytes -= dev.blocks[i].bytes;
        dev.blocks[i] = dev.blocks[--dev.n_blocks];
        pthread_mutex_unlock(&dev.lock);
        dev.vt->free_memory(dev.instance, ptr);
        return 1;
    }
    pthread_mutex_unlock(&dev.lock);
    return 0;
}

uint64_t loom_device_allocated_bytes(void) { return dev.bytes; }
uint64_t loom_device_peak_bytes(void) { return dev.peak; }
uint64_t loom_device_allocations(void) { return dev.allocations; }

loom_status loom_device_copy(void *dst, const void *src, size_t bytes, uint32_t direction)
{
    if (!dev.vt) {
        memcpy(dst, src, bytes);
        return LOOM_OK;
    }
    loom_status st = dev.vt->copy(dev.instance, dst, src, bytes, direction, NULL);
    return st != LOOM_OK ? st : dev.vt->stream_synchronize(dev.instance, NULL);
}

loom_status loom_device_synchronize(void) { return dev.vt ? dev.vt->synchronize(dev.instance) : LOOM_OK; }
