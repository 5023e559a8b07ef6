/*
 * doctor_cuda.c - finding CUDA toolkits, the host compiler and the driver for `loom doctor`
 * by reading files and asking the driver library, never by linking CUDA.
 */

#include "doctor.h"

#include <dlfcn.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void doctor_version_text(int version, char *buf, size_t size)
{
    if (version <= 0)
        snprintf(buf, size, "unknown");
    else
        snprintf(buf, size, "%d.%d", version / 1000, version % 1000 / 10);
}

/* The first integer after `key` in the file, or 0. */
static int number_after(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int value = 0;
    while (!value && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, key);
        if (at) value = atoi(at + strlen(key));
    }
    fclose(f);
    return value;
}

/* Toolkits since 11.1 also have version.json: {"cuda": {"version": "12.4.1"}, ...}. */
static int version_from_json(const char *root)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/version.json", root);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *cuda = strstr(text, "\"cuda\"");
    const char *v = cuda ? strstr(cuda, "\"version\"") : NULL;
    if (v) v = strchr(v + 9, '"');
    int major = 0, minor = 0;
    if (!v || sscanf(v + 1, "%d.%d", &major, &minor) != 2) return 0;
    return major * 1000 + minor * 10;
}

static void inspect(doctor_toolkit *t)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/include/cuda_runtime_api.h", t->root);
    t->version = number_after(path, "#define CUDART_VERSION");
    if (!t->version) t->version = version_from_json(t->root);
    snprintf(path, sizeof path, "%s/bin/nvcc", t->root);
    t->has_nvcc = access(path, X_OK) == 0;
    /* nvcc refuses newer compilers with "#if __GNUC__ > N ... #error unsupported GNU version". */
    snprintf(path, sizeof path, "%s/include/crt/host_config.h", t->root);
    t->max_gcc = number_after(path, "__GNUC__ >");
}

/* Adds root (if it is a toolkit folder) unless already there;
 * returns its index or -1. */
static int add(doctor_toolkit *out, int *n, int max, const char *root, const char *found_as)
{
    char real[PATH_MAX], probe[PATH_MAX + 32];
    if (!realpath(root, real)) return -1;
    /* A toolkit has its headers; an nvcc copied or wrapped outside one (/usr/local/bin) is not one. */
    snprintf(probe, sizeof probe, "%s/include/cuda_runtime_api.h", real);
    int has_header = access(probe, R_OK) == 0;
    snprintf(probe, sizeof probe, "%s/version.json", real);
    if (!has_header && access(probe, R_OK) != 0) return -1;
    for (int i = 0; i < *n; i++)
        if (!strcmp(out[i].root, real)) return i;
    if (*n >= max) return -1;
    doctor_toolkit *t = &out[(*n)++];
    memset(t, 0, sizeof *t);
    snprintf(t->root, sizeof t->root, "%s", real);
    snprintf(t->found_as, sizeof t->found_as, "%s", found_as);
    inspect(t);
    return (int)(t - out);
}

/* The toolkit folder above an nvcc (bin/nvcc -> the folder holding bin). */
static int add_from_nvcc(doctor_toolkit *out, int *n, int max, const char *nvcc, const char *found_as)
{
    char real[PATH_MAX];
    if (!realpath(nvcc, real)) return -1;
    char *slash = strrchr(real, '/');
    if (!slash) return -1;
    *slash = 0;
    slash = strrchr(real, '/');
    if (!slash || strcmp(slash, "/bin") != 0) return -1;
    *slash = 0;
    return add(out, n, max, real[0] ? real : "/", found_as);
}

int doctor_find_toolkits(doctor_toolkit *out, int max, int *build)
{
    int n = 0, from_cudacxx = -1, from_path = -1, from_default = -1;
    const char *cudacxx = getenv("CUDACXX");
    if (cudacxx && *cudacxx) from_cudacxx = add_from_nvcc(out, &n, max, cudacxx, "CUDACXX");
    const char *env_names[] = {"CUDA_HOME", "CUDA_PATH"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv(env_names[i]);
        if (v && *v) add(out, &n, max, v, env_names[i]);
    }
    const char *path = getenv("PATH");
    if (path) {
        char *copy = strdup(path), *save = NULL;
        for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir; dir = strtok_r(NULL, ":", &save)) {
            char nvcc[PATH_MAX];
            snprintf(nvcc, sizeof nvcc, "%s/nvcc", dir);
            if (access(nvcc, X_OK) != 0) continue;
            int i = add_from_nvcc(out, &n, max, nvcc, "nvcc on PATH");
            if (from_path < 0) from_path = i;
        }
        free(copy);
    }
    from_default = add(out, &n, max, "/usr/local/cuda", "/usr/local/cuda");
    glob_t g;
    if (glob("/usr/local/cuda-*", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++)
            add(out, &n, max, g.gl_pathv[i], g.gl_pathv[i]);
        globfree(&g);
    }
    add(out, &n, max, "/opt/cuda", "/opt/cuda");
    *build = from_cudacxx >= 0 ? from_cudacxx : from_path >= 0 ? from_path : from_default;
    if (*build >= 0 && !out[*build].has_nvcc) *build = -1;
    return n;
}

/* Runs argv[0] with argv and returns its first line of standard output in out. */
static int first_line_of(char *const argv[], char *out, size_t size)
{
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t used = 0;
    ssize_t got;
    while (used + 1 < size && (got = read(fd[0], out + used, size - 1 - used)) > 0)
        used += (size_t)got;
    close(fd[0]);
    out[used] = 0;
    out[strcspn(out, "\n")] = 0;
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && out[0] ? 0 : -1;
}

int doctor_host_compiler(char *text, size_t size)
{
    const char *cxx = getenv("CUDAHOSTCXX");
    if (!cxx || !*cxx) cxx = "g++";
    char version[64];
    char *argv[] = {(char *)cxx, "-dumpfullversion", NULL};
    if (first_line_of(argv, version, sizeof version) != 0) {
        snprintf(text, size, "%s (does not run)", cxx);
        return 0;
    }
    snprintf(text, size, "%s %s", cxx, version);
    return atoi(version);
}

int doctor_driver_version(char *why, size_t size)
{
    const char *module = getenv("LOOM_DOCTOR_DRIVER_FILE"); /* tests point it at a file they write */
    if (!module) module = "/proc/driver/nvidia/version";
    if (access(module, F_OK) != 0 && access("/dev/nvidiactl", F_OK) != 0) {
        snprintf(why, size, "no NVIDIA kernel driver (no %s)", module);
        return 0;
    }
    void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, size, "the kernel driver is loaded but libcuda.so.1 cannot be opened (%s)", dlerror());
        return 0;
    }
    int (*get)(int *) = NULL;
    *(void **)&get = dlsym(lib, "cuDriverGetVersion");
    int version = 0;
    if (!get || get(&version) != 0 || version <= 0) {
        snprintf(why, size, "libcuda.so.1 does not report its version (cuDriverGetVersion failed)");
        version = 0;
    }
    dlclose(lib);
    return version;
}
