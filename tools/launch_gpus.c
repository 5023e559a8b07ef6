/*
 * launch_gpus.c - the GPUs of `loom launch` (launch_gpus.h, docs/gpu.md#launching-on-gpus).
 *
 * Device ids are the node's own numbers: the entries of CUDA_VISIBLE_DEVICES when it is set
 * (so CUDA_VISIBLE_DEVICES=2,3 with --include localhost:3 runs one rank on GPU 3), else
 * 0..N-1. Every rank gets the chosen list as its CUDA_VISIBLE_DEVICES and binds device
 * LOCAL_RANK of it, as DeepSpeed's launcher does: ranks see each other's GPUs, which NCCL's
 * peer-to-peer paths need.
 */
#include "launch_gpus.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int launch_gpu_count(void)
{
    const char *fake = getenv(LAUNCH_GPU_COUNT_ENV);
    if (fake && *fake) {
        int n = atoi(fake);
        return n < 0 ? 0 : n > LAUNCH_MAX_GPUS ? LAUNCH_MAX_GPUS : n;
    }
    int n = 0;
    char path[32];
    for (int k = 0; k < LAUNCH_MAX_GPUS; k++) {
        snprintf(path, sizeof path, "/dev/nvidia%d", k);
        if (access(path, F_OK) == 0) n++;
    }
    return n;
}

/* The visible ids, in order. Returns the count. */
static int visible_ids(int node_gpus, char ids[][48])
{
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    int n = 0;
    if (!cvd) {
        for (; n < node_gpus; n++) snprintf(ids[n], 48, "%d", n);
        return n;
    }
    const char *p = cvd;
    while (*p && n < LAUNCH_MAX_GPUS) {
        size_t len = strcspn(p, ",");
        if (len && len < 48) {
            memcpy(ids[n], p, len);
            ids[n++][len] = 0;
        }
        p += len + (p[len] == ',');
    }
    return n;
}

static int is_this_host(const char *host, size_t len)
{
    char name[HOST_NAME_MAX + 1] = "";
    gethostname(name, sizeof name);
    return (len == 9 && !strncmp(host, "localhost", 9)) || (len == 9 && !strncmp(host, "127.0.0.1", 9)) ||
           (len && strlen(name) == len && !strncmp(host, name, len));
}

/* Marks in `chosen` the visible ids a spec names for this host. Returns 1, or 0 with err. */
static int apply_spec(const char *flag, const char *spec, char ids[][48], int n, int chosen[], char *err,
                      size_t err_size)
{
    const char *p = spec;
    int named_here = 0;
    if (!*spec) {
        snprintf(err, err_size, "%s wants HOST[:I,J,...][@HOST...], got ''", flag);
        return 0;
    }
    while (*p) {
        size_t len = strcspn(p, "@");
        size_t host_len = strcspn(p, ":@");
        if (!is_this_host(p, host_len)) {
            snprintf(err, err_size,
                     "%s %s: unknown host '%.*s' (this node is localhost; loom launch starts the ranks of one node)",
                     flag, spec, (int)host_len, p);
            return 0;
        }
        named_here = 1;
        if (host_len == len) { /* the whole host */
            for (int k = 0; k < n; k++) chosen[k] = 1;
        } else {
            const char *q = p + host_len + 1, *end = p + len;
            if (q >= end) {
                snprintf(err, err_size, "%s %s: no device index after ':'", flag, spec);
                return 0;
            }
            while (q < end) {
                size_t item = strcspn(q, ",@");
                if (q + item > end) item = (size_t)(end - q);
                char word[48];
                if (!item || item >= sizeof word) {
                    snprintf(err, err_size, "%s %s: an empty or too long device index", flag, spec);
                    return 0;
                }
                memcpy(word, q, item);
                word[item] = 0;
                char *tail = NULL;
                long v = strtol(word, &tail, 10);
                if (*tail || v < 0) {
                    snprintf(err, err_size, "%s %s: '%s' is not a device index", flag, spec, word);
                    return 0;
                }
                int found = 0;
                for (int k = 0; k < n; k++)
                    if (!strcmp(ids[k], word)) chosen[k] = found = 1;
                if (!found) {
                    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
                    if (cvd)
                        snprintf(err, err_size, "%s %s: GPU %s is not visible (CUDA_VISIBLE_DEVICES=%s)", flag, spec,
                                 word, cvd);
                    else
                        snprintf(err, err_size, "%s %s: GPU %s is out of range (this node has %d: 0..%d)", flag, spec,
                                 word, n, n - 1);
                    return 0;
                }
                q += item + 1;
            }
        }
        p += len + (p[len] == '@');
    }
    return named_here;
}

int launch_gpus_select(int node_gpus, const char *include, const char *exclude, long num_gpus, launch_gpus *out,
                       char *err, size_t err_size)
{
    memset(out, 0, sizeof *out); /* the caller refuses --include with --exclude */
    static char ids[LAUNCH_MAX_GPUS][48];
    int n = visible_ids(node_gpus, ids);
    if (n == 0) {
        snprintf(err, err_size, "no GPU visible (CUDA_VISIBLE_DEVICES='%s')",
                 getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "");
        return 0;
    }
    int chosen[LAUNCH_MAX_GPUS] = {0};
    if (include) {
        if (!apply_spec("--include", include, ids, n, chosen, err, err_size)) return 0;
    } else {
        int dropped[LAUNCH_MAX_GPUS] = {0};
        if (exclude && !apply_spec("--exclude", exclude, ids, n, dropped, err, err_size)) return 0;
        for (int k = 0; k < n; k++) chosen[k] = !dropped[k];
    }
    for (int k = 0; k < n; k++)
        if (chosen[k]) memcpy(out->ids[out->count++], ids[k], sizeof out->ids[0]);
    if (out->count == 0) {
        snprintf(err, err_size, "--exclude %s leaves no GPU", exclude);
        return 0;
    }
    if (num_gpus > out->count) {
        snprintf(err, err_size, "--num_gpus %ld: only %d GPU%s %s", num_gpus, out->count, out->count == 1 ? "" : "s",
                 include || exclude ? "left by --include/--exclude" : "visible");
        return 0;
    }
    if (num_gpus > 0) out->count = (int)num_gpus;
    size_t len = 0;
    for (int k = 0; k < out->count; k++)
        len += (size_t)snprintf(out->visible + len, sizeof out->visible - len, "%s%s", k ? "," : "", out->ids[k]);
    return 1;
}
