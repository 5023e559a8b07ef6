/*
 * gloo_shm.cpp - all_reduce, reduce, all_gather and broadcast between the ranks of one machine
 * through a shared-memory segment (reduce_scatter and all_to_all, which loom's strategies do not
 * use, stay on TCP).
 *
 * Why: over loopback TCP every byte of an all-reduce crosses the kernel's socket copies twice
 * in each direction, and on a small machine the ranks' own compute threads compete with that
 * work. Through shared memory a rank copies its piece in once, sums its block of every rank's
 * piece, and copies the whole result out: three passes over memory and no system call but the
 * barriers' futexes. docs/benchmarks.md#allreduce and #ddp-step have the figures.
 *
 * The arithmetic is the TCP path's: each rank sums its block with reduce_rows, element by
 * element in rank order ((r0 + r1) + r2) ..., so both paths give the same bits (test_comm_gloo
 * runs every collective check both ways).
 *
 * Layout of the segment: a header (the barrier, each rank's pid and call signature, the first
 * rank that failed), then one slot of `piece` bytes per rank and one result area of `piece`
 * bytes. A piece of an all_reduce goes: copy in to my slot; barrier; reduce my block of every
 * slot into the result; barrier; copy the result out (a reduce: only the root does). The next
 * piece's copy-in may start at once: every rank has finished reading the slots before the
 * second barrier, and nobody writes the result again before the next first barrier, which
 * waits for every rank's copy-out. all_gather and broadcast copy slots out between the
 * barriers instead. Every call first checks that all ranks are in the same collective.
 *
 * When: every rank of the communicator sees the same boot id, the same /dev/shm and the same
 * pid namespace (so one machine, one container), the config's `shm` is true and LOOM_GLOO_SHM
 * is not "off". Otherwise, or if any rank cannot map the segment, all ranks stay on TCP: the
 * decision is taken together, through Gloo, at creation.
 *
 * Failures: each barrier waits at most the communicator's timeout. While it waits it polls a
 * pidfd of every peer (a peer that exited, even a zombie, is reported at once), the segment's
 * failed-rank word (set by a rank that gave up, so its peers stop too) and the instance's abort
 * flag (set by close_transport when a caller gives up). The segment is unlinked as soon as
 * every rank has mapped it, so a killed run leaves nothing in /dev/shm.
 *
 * Buffers the caller keeps in memory every rank maps (alloc_shared, gloo_shared.cpp) skip the
 * slots: they are summed in place between the same barriers.
 */
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/broadcast.h>

#include "gloo_comm_private.h"
#include "gloo_reduce.h"

namespace loom_gloo
{

namespace
{

constexpr int kMaxShmWorld = 64;
constexpr size_t kHeaderBytes = 8192;
constexpr size_t kSegmentBudget = 32u << 20; /* all slots and the result together, at most */
constexpr int kSpins = 2000;                 /* before sleeping on the futex               */
constexpr int kPollMs = 20;                  /* between checks of the peers while sleeping */

struct ShmHeader {
    alignas(64) std::atomic<uint32_t> arrived;
    alignas(64) std::atomic<uint32_t> generation;
    alignas(64) std::atomic<int32_t> failed_rank;  /* -1: none; else the first rank that gave up */
    std::atomic<uint64_t> signature[kMaxShmWorld]; /* what each rank's current collective is */
};
static_assert(sizeof(ShmHeader) <= kHeaderBytes, "shared-memory header too large");

/* What each rank says of itself at creation, exchanged with one allgather. */
struct Hello {
    char machine[104]; /* boot id, /dev/shm's device and inode, pid namespace: equal = one machine */
    int32_t pid;
    int32_t wants; /* 1: this rank's config allows shared memory */
};

struct Name {
    char text[96];
    uint64_t bytes;  /* the size rank 0 reserved */
    int32_t created; /* 1: rank 0 created and sized the segment */
};

long futex(std::atomic<uint32_t> *word, int op, uint32_t value, const struct timespec *timeout)
{
    return syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, value, timeout, nullptr, 0);
}

void cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

std::string machine_identity()
{
    char boot[64] = "";
    if (FILE *f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
        if (!std::fgets(boot, sizeof boot, f)) boot[0] = '\0';
        std::fclose(f);
    }
    boot[std::strcspn(boot, "\n")] = '\0';
    struct stat shm_dir, pid_ns;
    if (!boot[0] || stat("/dev/shm", &shm_dir) != 0 || stat("/proc/self/ns/pid", &pid_ns) != 0) return "";
    char text[160];
    std::snprintf(text, sizeof text, "%s/%llx:%llx/%llx", boot, (unsigned long long)shm_dir.st_dev,
                  (unsigned long long)shm_dir.st_ino, (unsigned long long)pid_ns.st_ino);
    return text;
}

} // namespace

struct ShmSegment {
    uint8_t *base = nullptr;
    size_t bytes = 0;
    size_t piece = 0;        /* bytes per slot */
    std::vector<int> pidfds; /* per rank; -1 for this rank */
    std::vector<int> pids;   /* per rank, for messages */
    ShmHeader *header() const
    {
        return reinterpret_cast<ShmHeader *>(base);
    }
    uint8_t *slot(int rank) const
    {
        return base + kHeaderBytes + (size_t)rank * piece;
    }
};

namespace
{

[[noreturn]] void give_up(loom_comm *self, loom_status status, const std::string &why)
{
    ShmSegment *s = self->shm;
    int32_t none = -1;
    s->header()->failed_rank.compare_exchange_strong(none, self->rank);
    futex(&s->header()->generation, FUTEX_WAKE, INT_MAX, nullptr);
    throw ShmFailure{status, why};
}

/* Why waiting any longer is pointless, or "" to go on waiting. */
std::string reason_to_stop(loom_comm *self)
{
    ShmSegment *s = self->shm;
    const int32_t failed = s->header()->failed_rank.load(std::memory_order_acquire);
    char text[200];
    if (failed >= 0 && failed != self->rank) {
        std::snprintf(text, sizeof text, "peer rank may have died (rank %d gave up its shared-memory collective)",
                      (int)failed);
        return text;
    }
    if (self->shm_abort.load(std::memory_order_acquire)) return "the communicator was stopped while it waited";
    for (int r = 0; r < self->world; r++) {
        if (s->pidfds[r] < 0) continue;
        struct pollfd p = {s->pidfds[r], POLLIN, 0};
        if (poll(&p, 1, 0) > 0) {
            std::snprintf(text, sizeof text, "peer rank may have died (rank %d, pid %d, exited)", r, s->pids[r]);
            return text;
        }
    }
    return "";
}

} // namespace

void shm_barrier(loom_comm *self)
{
    ShmHeader *h = self->shm->header();
    const uint32_t generation = h->generation.load(std::memory_order_acquire);
    if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == (uint32_t)self->world) {
        h->arrived.store(0, std::memory_order_relaxed);
        h->generation.store(generation + 1, std::memory_order_release);
        futex(&h->generation, FUTEX_WAKE, INT_MAX, nullptr);
        return;
    }
    for (int i = 0; i < kSpins; i++) {
        if (h->generation.load(std::memory_order_acquire) != generation) return;
        cpu_relax();
    }
    const Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                          std::chrono::duration<double>(self->timeout_seconds));
    const struct timespec nap = {0, kPollMs * 1000000L};
    for (;;) {
        futex(&h->generation, FUTEX_WAIT, generation, &nap);
        if (h->generation.load(std::memory_order_acquire) != generation) return;
        const std::string why = reason_to_stop(self);
        if (!why.empty()) give_up(self, LOOM_E_COMM, why);
        if (Clock::now() >= deadline) {
            char text[160];
            std::snprintf(text, sizeof text, "timed out after %g s in a shared-memory barrier", self->timeout_seconds);
            give_up(self, LOOM_E_TIMEOUT, text);
        }
    }
}

namespace
{

void unmap(ShmSegment *s)
{
    if (!s) return;
    for (int fd : s->pidfds)
        if (fd >= 0) close(fd);
    if (s->base) munmap(s->base, s->bytes);
    delete s;
}

} // namespace

size_t shm_piece_bytes(int world)
{
    size_t piece = kSegmentBudget / (size_t)(world + 1) / 4096 * 4096;
    return std::min<size_t>(std::max<size_t>(piece, 1u << 20), 8u << 20);
}

/* Collective: rank 0 creates and reserves the segment, broadcasts its name and size, every rank
 * opens and maps it, they agree, and rank 0 unlinks it. A failure of a peer throws out of the
 * broadcast or the allgather; the guards then unmap and unlink what this rank holds. */
uint8_t *shm_map_together(loom_comm *self, size_t bytes, bool populate)
{
    const int rank = self->rank;
    Name name;
    std::memset(&name, 0, sizeof name);
    struct Unlink { /* rank 0's file: unlinked when it leaves, when every rank has opened it or given up */
        const char *path = nullptr;
        ~Unlink()
        {
            if (path) shm_unlink(path);
        }
    } unlink_on_exit;
    struct Mapping {
        uint8_t *base = nullptr;
        size_t bytes = 0;
        ~Mapping()
        {
            if (base) munmap(base, bytes);
        }
    } mapping;
    mapping.bytes = bytes;
    const auto map_and_close = [&](int fd) {
        void *at = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
        if (at != MAP_FAILED) mapping.base = static_cast<uint8_t *>(at);
        close(fd);
    };
    if (rank == 0) {
        std::random_device entropy;
        std::snprintf(name.text, sizeof name.text, "/loom-gloo-%d-%08x%08x", (int)getpid(), entropy(), entropy());
        name.bytes = (uint64_t)bytes;
        const int fd = shm_open(name.text, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            unlink_on_exit.path = name.text;
            /* Reserved, not just sized: a /dev/shm too small for it (a container's 64 MB) fails
             * here and the ranks do without, instead of a SIGBUS at the first touch of a page. */
            name.created = posix_fallocate(fd, 0, (off_t)bytes) == 0;
            if (name.created)
                map_and_close(fd);
            else
                close(fd);
        }
    }
    gloo::BroadcastOptions cast(self->context);
    cast.setOutput(&name, 1);
    cast.setRoot(0);
    gloo::broadcast(cast);

    /* a rank that asked for another size maps nothing, and then nobody does */
    int32_t ok = name.created && name.bytes == (uint64_t)bytes;
    if (ok && rank != 0) {
        const int fd = shm_open(name.text, O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) map_and_close(fd);
    }
    ok = ok && mapping.base;
    std::vector<int32_t> oks(self->world);
    gloo::AllgatherOptions agree(self->context);
    agree.setInput(&ok, 1);
    agree.setOutput(oks.data(), oks.size());
    gloo::allgather(agree);
    if (std::count(oks.begin(), oks.end(), 1) != self->world) return nullptr; /* the guard unmaps */
    uint8_t *base = mapping.base;
    mapping.base = nullptr;
    return base;
}

/* Collective: every rank calls it once, right after the full mesh is connected. */
void shm_attach(loom_comm *self, bool wanted)
{
    const int world = self->world, rank = self->rank;
    if (world < 2) return;
    const char *env = std::getenv("LOOM_GLOO_SHM");
    if (env && std::strcmp(env, "off") == 0) wanted = false;

    Hello mine;
    std::memset(&mine, 0, sizeof mine);
    const std::string machine = machine_identity();
    std::snprintf(mine.machine, sizeof mine.machine, "%s", machine.c_str());
    mine.pid = (int32_t)getpid();
    mine.wants = wanted && !machine.empty() && world <= kMaxShmWorld;
    std::vector<Hello> all(world);
    gloo::AllgatherOptions hello(self->context);
    hello.setInput(&mine, 1);
    hello.setOutput(all.data(), all.size());
    gloo::allgather(hello);
    bool together = true;
    for (const Hello &h : all)
        together = together && h.wants && std::strncmp(h.machine, all[0].machine, sizeof h.machine) == 0;
    if (!together) return;

    const size_t piece = shm_piece_bytes(world), bytes = kHeaderBytes + (size_t)(world + 1) * piece;
    auto *s = new ShmSegment;
    self->shm = s; /* create_instance detaches it if anything below throws */
    /* populated now: the pages count in the resident memory the budget starts from */
    s->base = shm_map_together(self, bytes, true);
    s->bytes = s->base ? bytes : 0;
    int32_t ok = s->base != nullptr;
    s->piece = piece;
    s->pidfds.assign(world, -1);
    for (const Hello &h : all)
        s->pids.push_back(h.pid);
    for (int r = 0; ok && r < world; r++) {
        if (r == rank) continue;
        s->pidfds[r] = (int)syscall(SYS_pidfd_open, (pid_t)all[r].pid, 0);
        ok = s->pidfds[r] >= 0;
    }
    std::vector<int32_t> oks(world);
    gloo::AllgatherOptions agree(self->context);
    agree.setInput(&ok, 1);
    agree.setOutput(oks.data(), oks.size());
    gloo::allgather(agree);
    if (std::count(oks.begin(), oks.end(), 1) != world) {
        shm_detach(self);
        return;
    }
    /* The segment starts zeroed (arrived and generation 0); only "no rank failed" needs writing,
     * and nobody uses the header before rank 0 has. */
    if (rank == 0) s->header()->failed_rank.store(-1);
    gloo::AllgatherOptions ready(self->context);
    ready.setInput(&ok, 1);
    ready.setOutput(oks.data(), oks.size());
    gloo::allgather(ready);
}

void shm_check_signatures(loom_comm *self, uint64_t signature)
{
    ShmHeader *h = self->shm->header();
    for (int r = 0; r < self->world; r++)
        if (h->signature[r].load(std::memory_order_relaxed) != signature)
            give_up(self, LOOM_E_COMM,
                    "the ranks issued different collectives or counts (rank " + std::to_string(r) +
                        " is in another one)");
}

void shm_agree(loom_comm *self, uint64_t signature)
{
    self->shm->header()->signature[self->rank].store(signature, std::memory_order_relaxed);
    shm_barrier(self);
    shm_check_signatures(self, signature);
}

uint64_t shm_signature(int kind, size_t count, uint32_t dtype, uint32_t op, int64_t extra)
{
    uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)count;
    for (uint64_t v : {(uint64_t)kind, (uint64_t)dtype, (uint64_t)op, (uint64_t)extra})
        x = (x ^ v) * 0x100000001b3ull;
    return x;
}

void shm_block(const loom_comm *self, size_t n, size_t &offset, size_t &mine)
{
    const size_t block = n / (size_t)self->world, extra = n % (size_t)self->world, rank = (size_t)self->rank;
    mine = block + (rank < extra);
    offset = rank * block + std::min(rank, extra);
}

void shm_detach(loom_comm *self)
{
    unmap(self->shm);
    self->shm = nullptr;
}

int shm_phases(const loom_comm *self, size_t count, uint32_t dtype)
{
    const size_t piece = self->shm->piece / loom_dtype_size(dtype);
    return (int)std::min<size_t>(2 * ((count + piece - 1) / piece), 1 << 20);
}

namespace
{

/* The frame of every collective here: the call's signature is checked once, then for each
 * piece of at most `piece` elements: fill(start, n) writes this rank's slot; barrier;
 * middle(start, n) reads the slots (and may write the result area); barrier; drain(start, n)
 * copies the result area out. The second barrier is needed even with nothing to drain: the
 * next piece's fill overwrites slots a slower peer may still be reading. */
template <typename Fill, typename Middle, typename Drain>
void in_pieces(loom_comm *self, uint64_t signature, size_t count, size_t piece, Fill fill, Middle middle, Drain drain)
{
    self->shm->header()->signature[self->rank].store(signature, std::memory_order_relaxed);
    for (size_t start = 0; start < count; start += piece) {
        const size_t n = std::min(piece, count - start);
        fill(start, n);
        shm_barrier(self);
        if (start == 0) shm_check_signatures(self, signature);
        middle(start, n);
        shm_barrier(self);
        drain(start, n);
    }
}

/* all_reduce, or reduce when root >= 0 (only the root copies the result out). Every rank sums
 * its block of the piece over the slots, so the work is shared whatever the root. */
void reduce_through(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op, int32_t root)
{
    ShmSegment *s = self->shm;
    const size_t es = loom_dtype_size(dtype), piece = s->piece / es;
    uint8_t *result = s->slot(self->world);
    in_pieces(
        self, shm_signature(root < 0 ? 1 : 2, count, dtype, op, root), count, piece,
        [&](size_t start, size_t n) { std::memcpy(s->slot(self->rank), data + start * es, n * es); },
        [&](size_t, size_t n) {
            size_t offset, mine;
            shm_block(self, n, offset, mine);
            reduce_rows(result + offset * es, s->slot(0) + offset * es, mine, piece, self->world, dtype, op);
        },
        [&](size_t start, size_t n) {
            if (root < 0 || root == self->rank) std::memcpy(data + start * es, result, n * es);
        });
}

} // namespace

void shm_all_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op)
{
    reduce_through(self, data, count, dtype, op, -1);
}

void shm_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op, int32_t root)
{
    reduce_through(self, data, count, dtype, op, root);
}

void shm_all_gather(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype)
{
    ShmSegment *s = self->shm;
    const size_t es = loom_dtype_size(dtype), piece = s->piece / es;
    in_pieces(
        self, shm_signature(3, count, dtype, 0, 0), count, piece,
        [&](size_t start, size_t n) { std::memcpy(s->slot(self->rank), send + start * es, n * es); },
        [&](size_t start, size_t n) {
            for (int r = 0; r < self->world; r++)
                std::memcpy(recv + ((size_t)r * count + start) * es, s->slot(r), n * es);
        },
        [](size_t, size_t) {});
}

void shm_broadcast(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, int32_t root)
{
    ShmSegment *s = self->shm;
    const size_t es = loom_dtype_size(dtype), piece = s->piece / es;
    in_pieces(
        self, shm_signature(4, count, dtype, 0, root), count, piece,
        [&](size_t start, size_t n) {
            if (self->rank == root) std::memcpy(s->slot(root), data + start * es, n * es);
        },
        [&](size_t start, size_t n) {
            if (self->rank != root) std::memcpy(data + start * es, s->slot(root), n * es);
        },
        [](size_t, size_t) {});
}

} // namespace loom_gloo
