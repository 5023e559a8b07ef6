/* The device side of the host without a GPU: HF's selection rules, the CUDA backend's refusal
 * sentences, and a backend plugin (the fake_gpu fixture) bound, allocated from and closed. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <loom/backend.h>

#include "../../plugins/backend/cuda/cuda_explain.h"
#include "device.h"
#include "error.h"
#include "host.h"
#include "plugin_loader.h"
#include "test_util.h"

static int contains(const char *s, const char *part) { return s && strstr(s, part) != NULL; }
static int one_line(const char *s) { return s && *s && !strchr(s, '\n'); }

static void selection_rules(void)
{
    loom_device_choice c;
    /* A usable GPU is used; not launched: the first one. */
    loom_device_request usable = {.local_rank = -1, .probe = LOOM_OK, .device_count = 2, .backend_name = "cuda"};
    CHECK(loom_device_choose(&usable, LOOM_DEVICE_CUDA, &c) == LOOM_OK && c.device == LOOM_DEVICE_CUDA && c.index == 0);
    /* --no_cuda wins over a visible GPU. */
    loom_device_request r = usable;
    r.no_cuda = 1;
    CHECK(loom_device_choose(&r, LOOM_DEVICE_CUDA, &c) == LOOM_OK && c.device == LOOM_DEVICE_CPU);
    /* ... but naming the backend too is a contradiction, said in one line. */
    r.named = 1;
    CHECK(loom_device_choose(&r, LOOM_DEVICE_CUDA, &c) == LOOM_E_INVALID);
    CHECK(one_line(loom_error_message()) && contains(loom_error_message(), "--no_cuda"));
    /* LOCAL_RANK picks the device under a launcher. */
    r = usable;
    r.local_rank = 1;
    CHECK(loom_device_choose(&r, LOOM_DEVICE_CUDA, &c) == LOOM_OK && c.index == 1);
    r.local_rank = 2;
    CHECK(loom_device_choose(&r, LOOM_DEVICE_CUDA, &c) == LOOM_E_INVALID);
    CHECK(contains(loom_error_message(), "LOCAL_RANK=2") &&
          contains(loom_error_message(), "2 cuda devices are visible"));
    /* Nothing usable: the CPU, unless the backend was named. */
    loom_device_request none = {.local_rank = -1, .probe = LOOM_E_UNSUPPORTED, .probe_error = "no NVIDIA driver: x",
                                .backend_name = "cuda"};
    CHECK(loom_device_choose(&none, LOOM_DEVICE_CUDA, &c) == LOOM_OK && c.device == LOOM_DEVICE_CPU);
    none.named = 1;
    CHECK(loom_device_choose(&none, LOOM_DEVICE_CUDA, &c) == LOOM_E_UNSUPPORTED);
    CHECK(one_line(loom_error_message()) &&
          contains(loom_error_message(), "--plugin cuda cannot run here: no NVIDIA driver"));
    /* A probe that succeeds with no device is no device. */
    loom_device_request zero = {.local_rank = -1, .probe = LOOM_OK, .device_count = 0, .named = 1};
    CHECK(loom_device_choose(&zero, LOOM_DEVICE_CUDA, &c) != LOOM_OK && c.device == LOOM_DEVICE_CPU);
    loom_error_clear();
}

static void refusal_sentences(void)
{
    char buf[512];
    cuda_probe_facts ok = {.driver_found = 1, .driver_version = 13000, .runtime_version = 13000, .device_count = 1};
    CHECK(cuda_explain(&ok, buf, sizeof buf) == NULL);
    /* CUDA's minor-version compatibility: a 13.0 runtime runs on a 13.x driver either way. */
    cuda_probe_facts f = ok;
    f.driver_version = 13020;
    CHECK(cuda_explain(&f, buf, sizeof buf) == NULL);
    f = ok;
    f.runtime_version = 13020;
    CHECK(cuda_explain(&f, buf, sizeof buf) == NULL);
    /* No driver at all. */
    f = (cuda_probe_facts){.driver_found = 0, .driver_error = "libcuda.so.1: cannot open shared object file",
                           .runtime_version = 13000};
    CHECK(contains(cuda_explain(&f, buf, sizeof buf),
                   "no NVIDIA driver: libcuda.so.1 cannot be opened (libcuda.so.1: cannot"));
    CHECK(contains(buf, "--no_cuda") && one_line(buf));
    /* A driver older than the toolkit. */
    f = ok;
    f.driver_version = 12040;
    CHECK(
        contains(cuda_explain(&f, buf, sizeof buf), "the NVIDIA driver supports CUDA 12.4, older than the CUDA 13.0"));
    CHECK(contains(buf, "CUDA 12 toolkit") && one_line(buf));
    /* No GPU: with and without CUDA_VISIBLE_DEVICES, with and without a runtime error. */
    f = ok;
    f.device_count = 0;
    f.count_error = 100;
    f.count_error_text = "no CUDA-capable device is detected";
    CHECK(cuda_explain(&f, buf, sizeof buf) && strcmp(buf, "no GPU visible (no CUDA-capable device is detected)") == 0);
    f.visible_devices = "";
    CHECK(cuda_explain(&f, buf, sizeof buf) &&
          strcmp(buf, "no GPU visible (CUDA_VISIBLE_DEVICES='': no CUDA-capable device is detected)") == 0);
    f.count_error = 0;
    f.visible_devices = NULL;
    CHECK(cuda_explain(&f, buf, sizeof buf) && strcmp(buf, "no GPU visible") == 0);
}

static void fake_backend(void)
{
    const loom_plugin *fake = NULL;
    CHECK(loom_plugin_load(LOOM_FIXTURE_DIR "/fake_gpu.so", LOOM_KIND_BACKEND, &fake) == LOOM_OK);
    if (!fake) return;
    CHECK(strcmp(loom_kind_name(fake->desc->kind), "backend") == 0);
    const loom_host_api *api = loom_host_api_table();
    loom_host *host = loom_host_create("test");

    /* Named and usable: bound, LOCAL_RANK 1 of 2 picks the second device. */
    setenv("LOOM_FAKE_GPU_COUNT", "2", 1);
    CHECK(loom_device_open(fake, 1, 0, 1, 2, NULL) == LOOM_OK);
    CHECK(loom_device_current() == LOOM_DEVICE_CUDA && loom_device_index() == 1);
    char where[256];
    loom_device_describe(where, sizeof where);
    CHECK(strcmp(where, "cuda:1 (Fake GPU 1, 8.0 GiB, sm_90, driver 13.0, runtime 13.0)") == 0);
    const loom_kernels_api *k = api->service(host, LOOM_KERNELS_CUDA_SERVICE, 1);
    CHECK(k && k == loom_device_kernels() && k->device == LOOM_DEVICE_CUDA && k->gemm_mixed);
    /* Device memory through the host's allocator: counted apart from host memory, freed. */
    uint64_t host_before = loom_host_allocated_bytes();
    float *a = api->alloc(host, 1000 * sizeof(float), 0, LOOM_DEVICE_CUDA, 1);
    float *b = api->alloc(host, 24, 0, LOOM_DEVICE_CUDA, 1);
    CHECK(a && b && ((uintptr_t)a % 256) == 0);
    CHECK(loom_device_allocated_bytes() == 4024 && loom_device_allocations() == 2 &&
          loom_host_allocated_bytes() == host_before);
    CHECK(api->alloc(host, 16, 512, LOOM_DEVICE_CUDA, 1) == NULL); /* more alignment than promised */
    /* Copies both ways, and a kernel of the device's table on device pointers. */
    float in[1000], out[1000];
    for (int i = 0; i < 1000; i++) in[i] = (float)i - 500.0f;
    CHECK(loom_device_copy(a, in, sizeof in, LOOM_COPY_HOST_TO_DEVICE) == LOOM_OK);
    k->relu_forward(a, a, 1000);
    CHECK(loom_device_synchronize() == LOOM_OK);
    CHECK(loom_device_copy(out, a, sizeof out, LOOM_COPY_DEVICE_TO_HOST) == LOOM_OK);
    int relu_ok = 1;
    for (int i = 0; i < 1000; i++) relu_ok &= out[i] == (in[i] > 0 ? in[i] : 0.0f);
    CHECK(relu_ok);
    /* A host pointer handed to a device kernel is caught at the next synchronize. */
    k->relu_forward(a, in, 10);
    CHECK(loom_device_synchronize() == LOOM_E_DEVICE && contains(loom_error_message(), "host pointer"));
    api->free_memory(host, b);
    CHECK(loom_device_allocated_bytes() == 4000 && loom_device_peak_bytes() == 4024);
    loom_device_close(); /* frees a */
    CHECK(loom_device_current() == LOOM_DEVICE_CPU && loom_device_allocated_bytes() == 0);
    CHECK(api->service(host, LOOM_KERNELS_CUDA_SERVICE, 0) == NULL);

    /* Named but no device: one line that repeats the backend's reason. */
    setenv("LOOM_FAKE_GPU_COUNT", "0", 1);
    loom_error_clear();
    CHECK(loom_device_open(fake, 1, 0, -1, 1, NULL) == LOOM_E_UNSUPPORTED);
    CHECK(one_line(loom_error_message()) && contains(loom_error_message(), "--plugin fake_gpu cannot run here: "));
    CHECK(contains(loom_error_message(), "no GPU visible (LOOM_FAKE_GPU_COUNT=0)"));
    /* Not named (found on its own): the CPU, quietly. */
    CHECK(loom_device_open(fake, 0, 0, -1, 1, NULL) == LOOM_OK && loom_device_current() == LOOM_DEVICE_CPU);
    unsetenv("LOOM_FAKE_GPU_COUNT");
    /* --no_cuda: the CPU; with the backend named too: refused. */
    CHECK(loom_device_open(fake, 0, 1, -1, 1, NULL) == LOOM_OK && loom_device_current() == LOOM_DEVICE_CPU);
    CHECK(loom_device_open(fake, 1, 1, -1, 1, NULL) == LOOM_E_INVALID);
    loom_error_clear();
    loom_host_destroy(host);
}

/* The real CUDA backend, where it was built: without a driver it refuses in one line, and the
 * run that did not name it takes the CPU. With a driver and a GPU it must bind device 0. */
static void cuda_backend(void)
{
#ifdef LOOM_HAVE_CUDA_PLUGIN
    const loom_plugin *cuda = NULL;
    CHECK(loom_plugin_load(LOOM_BUILD_PLUGIN_DIR "/cuda.so", LOOM_KIND_BACKEND, &cuda) == LOOM_OK);
    if (!cuda) {
        fprintf(stderr, "cuda.so: %s\n", loom_error_message());
        return;
    }
    void *driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    loom_error_clear();
    loom_status st = loom_device_open(cuda, 1, 0, -1, 1, NULL);
    printf("  --plugin cuda: %s\n", st == LOOM_OK ? "bound" : loom_error_message());
    if (!driver) {
        CHECK(st == LOOM_E_UNSUPPORTED && one_line(loom_error_message()));
        CHECK(contains(loom_error_message(),
                       "--plugin cuda cannot run here: cuda: no NVIDIA driver: libcuda.so.1 cannot be opened"));
        loom_error_clear();
        CHECK(loom_device_open(NULL, 0, 0, -1, 1, NULL) == LOOM_OK && loom_device_current() == LOOM_DEVICE_CPU);
    } else if (st == LOOM_OK) {
        CHECK(loom_device_current() == LOOM_DEVICE_CUDA);
        loom_device_close();
    } else {
        CHECK(one_line(loom_error_message()) && (contains(loom_error_message(), "no GPU visible") ||
                                                 contains(loom_error_message(), "older than the CUDA")));
    }
    loom_error_clear();
#else
    printf("  the cuda backend was not built (no CUDA toolkit): its checks are skipped\n");
#endif
}

int main(void)
{
    CHECK(loom_loader_init(NULL, 0) == LOOM_OK);
    selection_rules();
    refusal_sentences();
    fake_backend();
    cuda_backend();
    loom_loader_shutdown();
    return test_finish("test_backend");
}
