/*
 * memory_check.c - the room a process has (memory_check.h): the smallest of MemAvailable and
 * every cgroup limit on the way from this process's group to the root, each less the usage
 * there and plus what the process already holds (it is counted in the usage, and a run's
 * budget counts it too).
 */
#include "memory_check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define NO_LIMIT (UINT64_C(1) << 60) /* cgroup v1 writes "unlimited" as ~2^63 */

static int read_u64_file(const char *root, const char *path, uint64_t *out)
{
    char full[4096];
    snprintf(full, sizeof full, "%s%s", root, path);
    FILE *f = fopen(full, "r");
    if (!f) return 0;
    char text[64] = {0};
    int ok = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    if (!ok || strncmp(text, "max", 3) == 0) return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text) return 0;
    *out = v;
    return 1;
}

static uint64_t mem_available(const char *root)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/proc/meminfo", root);
    FILE *f = fopen(path, "r");
    if (!f) return UINT64_MAX;
    char line[256];
    uint64_t kib = UINT64_MAX;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "MemAvailable: %llu kB", &v) == 1) {
            kib = v;
            break;
        }
    }
    fclose(f);
    return kib == UINT64_MAX ? UINT64_MAX : kib * 1024;
}

static void take(loom_memory_room *room, uint64_t bytes, const char *fmt, const char *arg, uint64_t shown)
{
    if (bytes >= room->bytes) return;
    room->bytes = bytes;
    snprintf(room->source, sizeof room->source, fmt, arg, (double)shown / 1048576.0);
}

/* The cgroup limits from the group of this process up to the root: v2 ("0::/path") reads
 * memory.max/memory.current, v1 ("N:memory:/path") memory.limit_in_bytes/usage_in_bytes. */
static void cgroup_room(const char *root, uint64_t resident, loom_memory_room *room)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = '\0';
        *c2 = '\0';
        const char *controllers = c1 + 1, *group = c2 + 1;
        int v2 = !strcmp(line, "0") && !*controllers;
        int v1 =
            !v2 && (!strcmp(controllers, "memory") || strstr(controllers, "memory,") || strstr(controllers, ",memory"));
        if (!v1 && !v2) continue;
        const char *base = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
        const char *limit_name = v2 ? "memory.max" : "memory.limit_in_bytes";
        const char *usage_name = v2 ? "memory.current" : "memory.usage_in_bytes";
        /* From the group up to the root; inside a container the group's path may not exist
         * (its cgroup namespace starts at the root), which the walk reaches anyway. */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", group);
        for (;;) {
            char file[4096 + 64];
            uint64_t limit = 0, usage = 0;
            snprintf(file, sizeof file, "%s%s/%s", base, strcmp(dir, "/") ? dir : "", limit_name);
            if (read_u64_file(root, file, &limit) && limit < NO_LIMIT) {
                snprintf(file, sizeof file, "%s%s/%s", base, strcmp(dir, "/") ? dir : "", usage_name);
                if (!read_u64_file(root, file, &usage)) usage = 0;
                uint64_t left = usage < limit ? limit - usage : 0;
                char what[160];
                snprintf(what, sizeof what, "cgroup %s %s", v2 ? "v2" : "v1", limit_name);
                take(room, left + resident, "%s: %.1f MiB", what, limit);
            }
            char *slash = strrchr(dir, '/');
            if (!slash || !strcmp(dir, "/")) break;
            if (slash == dir)
                dir[1] = '\0';
            else
                *slash = '\0';
        }
    }
    fclose(f);
}

/* "123", "512M", "2G", "1.5G" -> bytes. */
static int parse_size(const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !(v >= 0)) return 0;
    double scale = 1;
    switch (*end) {
    case 'K': case 'k': scale = 1024.0; end++; break;
    case 'M': case 'm': scale = 1048576.0; end++; break;
    case 'G': case 'g': scale = 1073741824.0; end++; break;
    case 'T': case 't': scale = 1099511627776.0; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B') end += *end == 'i' && end[1] == 'B' ? 2 : 1;
    if (*end || v * scale >= 1.8e19) return 0;
    *out = (uint64_t)(v * scale);
    return 1;
}

loom_status loom_memory_room_read(const char *root, uint64_t resident_now, loom_memory_room *out)
{
    if (!root) root = "";
    out->bytes = UINT64_MAX;
    snprintf(out->source, sizeof out->source, "no limit found");
    const char *forced = getenv("LOOM_MEMORY_LIMIT");
    if (forced && *forced) {
        uint64_t bytes;
        if (!parse_size(forced, &bytes))
            return loom_error(LOOM_E_INVALID, "LOOM_MEMORY_LIMIT='%s' is not a size (bytes, or with K, M, G, T)",
                              forced);
        out->bytes = bytes;
        snprintf(out->source, sizeof out->source, "LOOM_MEMORY_LIMIT=%s", forced);
        return LOOM_OK;
    }
    uint64_t avail = mem_available(root);
    if (avail != UINT64_MAX) take(out, avail + resident_now, "%sMemAvailable %.1f MiB plus this process", "", avail);
    cgroup_room(root, resident_now, out);
    return LOOM_OK;
}

loom_status loom_memory_check(const loom_memory_room *room, uint64_t need_bytes, int rank, const char *what)
{
    if (need_bytes <= room->bytes) return LOOM_OK;
    return loom_error(LOOM_E_NOMEM,
                      "rank %d: %s needs %.1f MiB but this process may use %.1f MiB (%s); to fit, use a smaller "
                      "--per_device_train_batch_size (with more --gradient_accumulation_steps), a higher ZeRO stage "
                      "(--plugin zero1 or zero2, or zero_optimization.stage in --deepspeed) over more ranks, 16-bit "
                      "parameters (--bf16), --gradient_checkpointing, or a smaller model",
                      rank, what, (double)need_bytes / 1048576.0, (double)room->bytes / 1048576.0, room->source);
}
