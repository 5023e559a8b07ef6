/* test_memory_check.c - core/trainer/memory_check.c on made-up systems: a folder with proc/meminfo,
 * proc/self/cgroup and cgroup v1 or v2 files. The room is the smallest of MemAvailable and
 * each limit on the way up less its usage, plus what the process holds; LOOM_MEMORY_LIMIT
 * replaces it; the refusal names the numbers and the knobs. */
#include "error.h"
#include "memory_check.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (UINT64_C(1) << 20)

static char base[PATH_MAX];

static void put(const char *rel, const char *text)
{
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    /* create the parents */
    for (char *p = path + strlen(base) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    if (!f) abort();
    fputs(text, f);
    fclose(f);
}

static uint64_t room_of(uint64_t resident, char *source, size_t size)
{
    loom_memory_room r;
    CHECK(loom_memory_room_read(base, resident, &r) == LOOM_OK);
    if (source) snprintf(source, size, "%s", r.source);
    return r.bytes;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/loom-memcheck-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) return 1;
    unsetenv("LOOM_MEMORY_LIMIT");
    char source[256];

    /* Nothing readable: no limit. */
    CHECK(room_of(0, NULL, 0) == UINT64_MAX);

    /* MemAvailable only (kB), plus what the process holds. */
    put("proc/meminfo", "MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    2097152 kB\n");
    CHECK(room_of(10 * MIB, source, sizeof source) == 2048 * MIB + 10 * MIB);
    CHECK(strstr(source, "MemAvailable") != NULL);

    /* cgroup v2: a 512 MiB limit with 100 MiB used in the group; the parent has none ("max"). */
    put("proc/self/cgroup", "0::/job/step\n");
    put("sys/fs/cgroup/job/step/memory.max", "536870912\n");
    put("sys/fs/cgroup/job/step/memory.current", "104857600\n");
    put("sys/fs/cgroup/job/memory.max", "max\n");
    CHECK(room_of(10 * MIB, source, sizeof source) == 412 * MIB + 10 * MIB);
    CHECK(strstr(source, "cgroup v2 memory.max") && strstr(source, "512.0 MiB"));
    /* A tighter ancestor wins. */
    put("sys/fs/cgroup/job/memory.max", "268435456\n");
    put("sys/fs/cgroup/job/memory.current", "0\n");
    CHECK(room_of(0, NULL, 0) == 256 * MIB);
    /* Usage over the limit: only what the process holds. */
    put("sys/fs/cgroup/job/memory.current", "999999999999\n");
    CHECK(room_of(5 * MIB, NULL, 0) == 5 * MIB);

    /* cgroup v1: "unlimited" (~2^63) is no limit; a set one counts. */
    put("proc/self/cgroup", "4:memory:/ctr\n3:cpu:/\n");
    put("sys/fs/cgroup/memory/ctr/memory.limit_in_bytes", "9223372036854771712\n");
    put("sys/fs/cgroup/memory/ctr/memory.usage_in_bytes", "1000\n");
    CHECK(room_of(0, NULL, 0) == 2048 * MIB); /* back to MemAvailable */
    put("sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n");
    put("sys/fs/cgroup/memory/memory.usage_in_bytes", "0\n");
    CHECK(room_of(0, source, sizeof source) == 1024 * MIB);
    CHECK(strstr(source, "cgroup v1") != NULL);

    /* The override, in bytes or with a suffix; nonsense is refused. */
    setenv("LOOM_MEMORY_LIMIT", "64M", 1);
    CHECK(room_of(0, source, sizeof source) == 64 * MIB && strstr(source, "LOOM_MEMORY_LIMIT=64M"));
    setenv("LOOM_MEMORY_LIMIT", "1.5G", 1);
    CHECK(room_of(0, NULL, 0) == 1536 * MIB);
    setenv("LOOM_MEMORY_LIMIT", "12345", 1);
    CHECK(room_of(0, NULL, 0) == 12345);
    setenv("LOOM_MEMORY_LIMIT", "lots", 1);
    loom_memory_room r;
    CHECK(loom_memory_room_read(base, 0, &r) == LOOM_E_INVALID && strstr(loom_error_message(), "lots"));
    unsetenv("LOOM_MEMORY_LIMIT");

    /* The check: fits, or a message with both numbers and the knobs. */
    loom_memory_room small = {.bytes = 100 * MIB};
    snprintf(small.source, sizeof small.source, "test");
    CHECK(loom_memory_check(&small, 100 * MIB, 0, "x") == LOOM_OK);
    CHECK(loom_memory_check(&small, 300 * MIB, 3, "the budget") == LOOM_E_NOMEM);
    const char *m = loom_error_message();
    CHECK(strstr(m, "rank 3") && strstr(m, "300.0 MiB") && strstr(m, "100.0 MiB") && strstr(m, "(test)"));
    CHECK(strstr(m, "--per_device_train_batch_size") && strstr(m, "ZeRO"));

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    CHECK(system(cmd) == 0);
    return test_finish("test_memory_check");
}
