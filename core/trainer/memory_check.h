/*
 * memory_check.h - refuse a run that cannot fit before it allocates: what the process may use
 * (MemAvailable from /proc/meminfo, and the cgroup v2 or v1 memory limit less the group's
 * usage, each plus what this process already holds) against what the run needs, with the
 * numbers and the knobs that would make it fit.
 *
 * LOOM_MEMORY_LIMIT=BYTES (suffixes K, M, G, T: powers of 1024) replaces the measured room,
 * so a test (or a user sharing a machine) can state the room instead of measuring it.
 */
#ifndef LOOM_CORE_MEMORY_CHECK_H
#define LOOM_CORE_MEMORY_CHECK_H

#include <stdint.h>

#include <loom/loom.h>

typedef struct loom_memory_room {
    uint64_t bytes;   /* what the process may hold in all; UINT64_MAX when nothing says */
    char source[200]; /* where that came from, for messages                            */
} loom_memory_room;

/* Measure the room of a process that holds resident_now bytes. root: "" for this system, or
 * a folder holding proc/meminfo, proc/self/cgroup and sys/fs/cgroup/... (tests). Unreadable
 * files only mean "no limit from there"; a LOOM_MEMORY_LIMIT that is not a size is
 * LOOM_E_INVALID. */
loom_status loom_memory_room_read(const char *root, uint64_t resident_now, loom_memory_room *out);

/* LOOM_E_NOMEM when need_bytes is over room->bytes: "rank R: WHAT needs N MiB but this
 * process may use M MiB (SOURCE); to fit: ..." naming the knobs; else LOOM_OK. what: e.g.
 * "the memory budget (parameters ..., ...)". */
loom_status loom_memory_check(const loom_memory_room *room, uint64_t need_bytes, int rank, const char *what);

#endif
