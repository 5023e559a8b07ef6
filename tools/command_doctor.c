/*
 * command_doctor.c - `loom doctor`: the installation checks users of CUDA frameworks do by
 * hand (which toolkit, which driver, which host compiler, which libraries, which GPUs, which
 * plugins), each problem with its fix. docs/gpu.md#loom-doctor.
 *
 * Exit status: 0 when nothing found is a problem (a machine without a GPU is not one: loom
 * trains on the CPU there), 1 when something is, 2 for bad arguments.
 */

#include <dlfcn.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <loom/backend.h>

#include "commands.h"
#include "doctor.h"
#include "error.h"
#include "host.h"
#include "plugin_loader.h"

#ifndef LOOM_BUILT_CUDA_VERSION
#define LOOM_BUILT_CUDA_VERSION 0 /* built without a CUDA toolkit */
#endif

typedef struct report {
    int problems;
    int gpu_machine; /* an NVIDIA driver is installed: missing CUDA pieces now matter */
} report;

static void problem(report *r, const char *fix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  PROBLEM ");
    vprintf(fmt, ap);
    printf("\n          fix: %s\n", fix);
    va_end(ap);
    r->problems++;
}

static void check_toolkits(report *r)
{
    doctor_toolkit kits[DOCTOR_MAX_TOOLKITS];
    int build = -1;
    int n = doctor_find_toolkits(kits, DOCTOR_MAX_TOOLKITS, &build);
    char built[32], v[32];
    doctor_version_text(LOOM_BUILT_CUDA_VERSION, built, sizeof built);
    printf("CUDA toolkits\n");
    if (LOOM_BUILT_CUDA_VERSION)
        printf("  loom was built with CUDA %s\n", built);
    else
        printf("  loom was built without CUDA (no toolkit at configure time): no cuda plugin\n");
    if (n == 0) printf("  none found (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda*, /opt/cuda)\n");
    for (int i = 0; i < n; i++) {
        doctor_version_text(kits[i].version, v, sizeof v);
        printf("  %-8s %s (found as %s)%s%s\n", v, kits[i].root, kits[i].found_as, kits[i].has_nvcc ? "" : ", no nvcc",
               i == build ? "  <- a CUDA build uses this one" : "");
    }
    if (n > 1)
        printf("  %d toolkits: CMake takes $CUDACXX, else the nvcc on PATH, else /usr/local/cuda/bin/nvcc;\n"
               "  pick one with -DCMAKE_CUDA_COMPILER=<root>/bin/nvcc\n",
               n);
    if (build >= 0 && LOOM_BUILT_CUDA_VERSION && kits[build].version &&
        kits[build].version / 1000 != LOOM_BUILT_CUDA_VERSION / 1000)
        printf("  note: a rebuild would use CUDA %s, not the %s loom was built with\n",
               (doctor_version_text(kits[build].version, v, sizeof v), v), built);

    char compiler[160];
    int gcc = doctor_host_compiler(compiler, sizeof compiler);
    printf("host compiler for nvcc: %s\n", compiler);
    if (build >= 0 && gcc > 0 && kits[build].max_gcc > 0 && gcc > kits[build].max_gcc) {
        char fix[512];
        snprintf(fix, sizeof fix,
                 "install g++-%d (or older) and configure with -DCMAKE_CUDA_HOST_COMPILER=g++-%d, or set CUDAHOSTCXX",
                 kits[build].max_gcc, kits[build].max_gcc);
        doctor_version_text(kits[build].version, v, sizeof v);
        problem(r, fix, "%s is newer than CUDA %s supports (up to gcc %d: %s/include/crt/host_config.h)", compiler, v,
                kits[build].max_gcc, kits[build].root);
    } else if (build >= 0 && gcc > 0 && kits[build].max_gcc > 0) {
        printf("  supported by the toolkit a build uses (up to gcc %d)\n", kits[build].max_gcc);
    }
}

static void check_driver(report *r)
{
    char why[512] = "";
    int driver = doctor_driver_version(why, sizeof why);
    char v[32], built[32];
    printf("NVIDIA driver\n");
    if (!driver) {
        r->gpu_machine = strstr(why, "no NVIDIA kernel driver") == NULL;
        if (!r->gpu_machine)
            printf("  %s: loom trains on the CPU\n", why);
        else
            problem(r, "reinstall the NVIDIA driver's user-space libraries (libcuda.so.1) matching the kernel module",
                    "%s", why);
        return;
    }
    r->gpu_machine = 1;
    doctor_version_text(driver, v, sizeof v);
    doctor_version_text(LOOM_BUILT_CUDA_VERSION, built, sizeof built);
    printf("  supports CUDA up to %s\n", v);
    /* CUDA's minor-version compatibility: any driver of the runtime's major version works. */
    if (LOOM_BUILT_CUDA_VERSION && driver / 1000 < LOOM_BUILT_CUDA_VERSION / 1000) {
        char fix[256];
        snprintf(fix, sizeof fix, "update the driver to one for CUDA %d, or rebuild loom with a CUDA %d toolkit",
                 LOOM_BUILT_CUDA_VERSION / 1000, driver / 1000);
        problem(r, fix, "the driver supports CUDA %s, older than the CUDA %s loom's cuda plugin was built with", v,
                built);
    }
}

static void check_library(report *r, const char *soname, const char *role, int required)
{
    void *lib = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
    if (lib) {
        struct link_map *map = NULL;
        const char *where = dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name ? map->l_name : soname;
        printf("  %-20s %s\n", soname, where);
        dlclose(lib);
        return;
    }
    if (required && r->gpu_machine) {
        char fix[256];
        snprintf(fix, sizeof fix,
                 "install the CUDA toolkit's libraries, or add their folder to /etc/ld.so.conf.d/ "
                 "and run ldconfig (or LD_LIBRARY_PATH)");
        problem(r, fix, "%s (%s) cannot be opened: %s", soname, role, dlerror());
    } else {
        printf("  %-20s not found (%s)\n", soname, role);
    }
}

static void check_libraries(report *r)
{
    int major = LOOM_BUILT_CUDA_VERSION / 1000;
    printf("CUDA libraries\n");
    if (!major) {
        printf("  not needed: this loom has no cuda plugin\n");
        return;
    }
    char name[64];
    snprintf(name, sizeof name, "libcudart.so.%d", major);
    check_library(r, name, "the CUDA runtime, cuda plugin", 1);
    snprintf(name, sizeof name, "libcublas.so.%d", major);
    check_library(r, name, "matrix products, cuda plugin", 1);
    snprintf(name, sizeof name, "libcublasLt.so.%d", major);
    check_library(r, name, "matrix products, cuda plugin", 1);
    check_library(r, "libcudnn.so.9", "cuDNN, optional", 0);
    check_library(r, "libnccl.so.2", "NCCL, the nccl comm plugin", 0);
}

typedef struct plugin_scan {
    report *r;
    int count;
    char backends[16][1024];
    int n_backends;
} plugin_scan;

static void visit(void *context, const char *path, const loom_plugin_desc *desc, int shadowed, const char *error)
{
    plugin_scan *s = context;
    if (!desc) {
        problem(s->r, "rebuild it against this loom's abi/ headers, or remove it from the plugin folder",
                "%s cannot be loaded: %s", path, error ? error : "?");
        return;
    }
    s->count++;
    if (desc->kind == LOOM_KIND_BACKEND && !shadowed && s->n_backends < 16)
        snprintf(s->backends[s->n_backends++], sizeof s->backends[0], "%s", path);
}

/* Each backend plugin's probe, and each device it reports. */
static void check_gpus(report *r, plugin_scan *s)
{
    printf("GPUs\n");
    if (!s->n_backends) printf("  no backend plugin found: loom trains on the CPU\n");
    for (int i = 0; i < s->n_backends; i++) {
        const loom_plugin *p = NULL;
        if (loom_plugin_load(s->backends[i], LOOM_KIND_BACKEND, &p) != LOOM_OK) {
            loom_error_clear(); /* reported with the plugins */
            continue;
        }
        const loom_backend_vtable *vt = p->desc->vtable;
        loom_host *host = loom_host_create(p->desc->name);
        if (!host) return;
        int32_t count = 0;
        if (vt->probe(host, loom_host_api_table(), &count) != LOOM_OK || count < 1) {
            const char *why = loom_error_message();
            size_t skip = strlen(p->desc->name); /* the host prefixes "name: " */
            if (why && !strncmp(why, p->desc->name, skip) && !strncmp(why + skip, ": ", 2)) why += skip + 2;
            printf("  %s: %s\n", p->desc->name, why && *why ? why : "no device visible");
            if (r->gpu_machine && !strcmp(p->desc->name, "cuda"))
                problem(r, "see the reason above; `nvidia-smi` shows what the driver sees",
                        "an NVIDIA driver is installed but the cuda plugin finds no usable GPU");
            loom_error_clear();
            loom_host_destroy(host);
            continue;
        }
        for (int32_t d = 0; d < count; d++) {
            loom_backend *b = NULL;
            loom_device_info info = {.struct_size = sizeof info};
            if (vt->create(host, loom_host_api_table(), NULL, d, &b) != LOOM_OK ||
                vt->device_info(b, &info) != LOOM_OK) {
                problem(r, "check `nvidia-smi`; another process may hold the GPU in exclusive mode",
                        "%s:%d cannot be opened: %s", p->desc->name, d, loom_error_message());
                loom_error_clear();
            } else {
                printf("  %s:%d  %s, %.1f GiB, sm_%d%d, %d multiprocessors\n", p->desc->name, d, info.name,
                       (double)info.total_bytes / (1u << 30), info.capability_major, info.capability_minor,
                       info.multiprocessors);
            }
            vt->destroy(b);
        }
        loom_host_destroy(host);
    }
}

int loom_command_doctor(int argc, char **argv)
{
    const char *dirs[64] = {0};
    size_t n_dirs = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: loom doctor [--plugin_dir DIR]...\n\n"
                   "Checks the installation: CUDA toolkits found and the one loom was built with, the\n"
                   "host compiler nvcc uses, the NVIDIA driver, the CUDA libraries, the GPUs each\n"
                   "backend plugin sees, and that every plugin on the search path loads. Each\n"
                   "problem comes with its fix. Exit status 1 when it finds a problem.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--plugin_dir") && i + 1 < argc && n_dirs < 64) {
            dirs[n_dirs++] = argv[++i];
        } else {
            fprintf(stderr,
                    "loom: error: doctor: unexpected argument '%s' (usage: loom doctor [--plugin_dir DIR]...)\n",
                    argv[i]);
            return 2;
        }
    }
    loom_status st = loom_loader_init(dirs, n_dirs);
    if (st != LOOM_OK) return loom_command_fail(st);
    report r = {0, 0};
    printf("loom %s, ABI %d.%d\n", LOOM_VERSION_STRING, LOOM_ABI_MAJOR, LOOM_ABI_MINOR);
    check_toolkits(&r);
    check_driver(&r);
    check_libraries(&r);

    char path[8192];
    loom_loader_search_path(path, sizeof path);
    printf("plugins (search path: %s)\n", path);
    plugin_scan scan = {.r = &r};
    loom_plugin_foreach(visit, &scan);
    printf("  %d plugins load\n", scan.count);
    check_gpus(&r, &scan);
    if (r.problems)
        printf("%d problem%s found\n", r.problems, r.problems == 1 ? "" : "s");
    else
        printf("no problems found\n");
    return r.problems ? 1 : 0;
}
