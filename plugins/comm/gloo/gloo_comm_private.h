/*
 * gloo_comm_private.h - what the files of the gloo plugin share: the instance, its job queue,
 * and the steps each file provides. The plugin is split by job:
 *   gloo_comm.cpp         the vtable: argument checks, one job per collective, the descriptor;
 *   gloo_jobs.cpp         the job queue: one worker thread per instance, waits with deadlines,
 *                         failures turned into statuses and messages;
 *   gloo_collectives.cpp  the collectives on Gloo's primitives, in canonical rank order;
 *   gloo_connect.cpp      creation: the host's store as Gloo's, the local interface that
 *                         reaches the master, the full mesh;
 *   gloo_shm.cpp          all_reduce between the ranks of one machine through shared memory;
 *   gloo_shared.cpp       alloc_shared: buffers every rank of one machine maps, reduced in place;
 *   gloo_reduce.cpp       the local reductions (gloo_reduce.h).
 * Internal to the plugin (C++; the .so exports loom_plugin_query only).
 */
#ifndef LOOM_GLOO_COMM_PRIVATE_H
#define LOOM_GLOO_COMM_PRIVATE_H

#include <signal.h>

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gloo/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/device.h>

#include <loom/comm.h>

namespace loom_gloo
{

using Clock = std::chrono::steady_clock;

constexpr double kDefaultTimeoutSeconds = 1800.0; /* when neither the setup nor the config sets one */
constexpr double kWaitGraceSeconds = 5.0;         /* wait() allows this beyond Gloo's own timeouts */
constexpr size_t kSmallBytes = 256 * 1024;        /* world * bytes up to this: allgather + reduce  */
constexpr size_t kScratchRound = 1 << 20;         /* scratch grows in whole MiB                    */
/* all_reduce works through pieces of this size, so its scratch stays below it. Measured here
 * with 2 ranks (2-core VM, loopback, noisy): pieces of 8 / 32 MiB cost ~1.45x / ~1.1x the time
 * of whole-buffer operations at 64-256 MB (each piece loses Gloo's own pipelining). */
constexpr size_t kPieceBytes = 256u << 20;
/* reduce gathers every rank's piece at the root: its scratch holds world pieces. */
constexpr size_t kReducePieceBytes = 8u << 20;

/* A store call failed; the host's store already recorded the message (naming key and address). */
struct StoreFailure {
    loom_status status;
};

/* A shared-memory collective gave up (gloo_shm.cpp): the status and why, for classify(). */
struct ShmFailure {
    loom_status status;
    std::string message;
};

struct ShmSegment; /* gloo_shm.cpp */

/* One alloc_shared buffer (gloo_shared.cpp): every rank's copy in one segment that every rank
 * maps, rank r's at base + r * stride. */
struct SharedBuffer {
    uint8_t *base = nullptr;
    size_t stride = 0; /* bytes between two ranks' copies: `bytes` rounded up to pages */
    size_t bytes = 0;  /* what the caller asked for                                    */
};

/* One queued collective. Fields below `run` are guarded by the instance's mutex. */
struct Job {
    std::string what;                     /* "all_reduce(sum, 1000 x f32)", for messages        */
    int phases = 1;                       /* Gloo operations it runs, each bounded by timeout    */
    std::function<void(loom_comm *)> run; /* on the worker thread                                */
    bool started = false;
    bool done = false;
    Clock::time_point deadline{}; /* once started: when wait() gives up                  */
    loom_status status = LOOM_OK;
    std::string message;
};

/* Writing to a socket whose peer died raises SIGPIPE, whose default action kills the process:
 * Gloo does not ask for MSG_NOSIGNAL. Instead of changing the process's disposition, the threads
 * that write (the worker and Gloo's event loop, which inherit the mask of the thread that
 * creates them) run with SIGPIPE blocked, and write() reports EPIPE. The creating thread drains
 * any SIGPIPE of its own before unblocking it again. */
class SigpipeBlocked
{
  public:
    SigpipeBlocked()
    {
        sigemptyset(&set_);
        sigaddset(&set_, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set_, &old_);
    }
    ~SigpipeBlocked()
    {
        if (sigismember(&old_, SIGPIPE)) return;
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set_, nullptr, &zero) == SIGPIPE) {
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeBlocked(const SigpipeBlocked &) = delete;
    SigpipeBlocked &operator=(const SigpipeBlocked &) = delete;

  private:
    sigset_t set_;
    sigset_t old_;
};

} // namespace loom_gloo

struct loom_comm_request {
    std::shared_ptr<loom_gloo::Job> job;
};

struct loom_comm {
    loom_host *host = nullptr;
    const loom_host_api *api = nullptr;
    int rank = 0;
    int world = 1;
    double timeout_seconds = loom_gloo::kDefaultTimeoutSeconds;
    std::string hostname;

    std::unique_ptr<gloo::rendezvous::Store> base_store;
    std::unique_ptr<gloo::rendezvous::PrefixStore> store;
    std::shared_ptr<gloo::transport::Device> device;
    std::shared_ptr<gloo::Context> context;

    std::mutex mutex; /* guards everything below but the worker's scratch                          */
    std::condition_variable cv;
    std::deque<std::shared_ptr<loom_gloo::Job>> queue;
    std::shared_ptr<loom_gloo::Job> running;
    bool stopping = false;
    loom_status broken_status = LOOM_OK; /* the first failure; every later operation reports it  */
    std::string broken;
    std::thread worker;

    void *scratch = nullptr; /* the worker's; grows, never shrinks                                   */
    size_t scratch_bytes = 0;

    loom_gloo::ShmSegment *shm = nullptr; /* set when every rank is on this machine (gloo_shm.cpp) */
    std::atomic<bool> shm_abort{false};   /* close_transport: a shared-memory wait must stop       */
    std::vector<loom_gloo::SharedBuffer> shared; /* alloc_shared's; the caller's thread only            */
};

namespace loom_gloo
{

/* ---- gloo_jobs.cpp ---- */

/* "all_reduce(sum, 1000 x f32)": the operation, for messages. */
std::string describe(const char *name, uint32_t op, size_t count, uint32_t dtype);
/* Turn the exception being handled into a status and a message ("" when the message is
 * already recorded: a store failure). Call only inside a catch block. */
loom_status classify(const loom_comm *self, const std::string &what, std::string &message);
/* The worker thread of an instance. */
void worker_main(loom_comm *self);
/* Block until job is done, or until it (or the one the worker is stuck in) overran its time. */
loom_status wait_job(loom_comm *self, const std::shared_ptr<Job> &job);
/* Queue a job and hand out a request, or run it and wait when request is NULL. */
loom_status submit(loom_comm *self, std::shared_ptr<Job> job, loom_comm_request **request);
std::shared_ptr<Job> make_job(std::string what, int phases, std::function<void(loom_comm *)> run);
/* Close every connection of the context (call without self->mutex held). */
void close_transport(loom_comm *self);

/* Run body; any exception becomes a status with its message recorded through api->fail. */
template <typename Body> loom_status guarded(loom_comm *self, const char *what, Body &&body)
{
    try {
        return body();
    } catch (...) {
        std::string message;
        const loom_status status = classify(self, what, message);
        if (message.empty() || !self) return status;
        try {
            return self->api->fail(self->host, status, "%s", message.c_str());
        } catch (...) {
            return status;
        }
    }
}

/* ---- gloo_collectives.cpp: the operations, on the thread that runs the job ---- */

/* Gloo operations a job runs (each bounded by the timeout), for its deadline. */
int all_reduce_phases(const loom_comm *self, size_t count, uint32_t dtype);
int reduce_phases(const loom_comm *self, size_t count, uint32_t dtype);
/* Phases of a collective that is one Gloo operation over TCP. */
int single_phases(const loom_comm *self, size_t count, uint32_t dtype);
void run_all_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op);
void run_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op, int32_t root);
void run_reduce_scatter(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype, uint32_t op);
void run_all_gather(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype);
void run_broadcast(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, int32_t root);
void run_all_to_all(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype);
void run_barrier(loom_comm *self);

/* ---- gloo_shm.cpp ---- */

/* Collective, at creation: map one segment with every peer when all ranks are on this machine
 * and want it (`wanted`, LOOM_GLOO_SHM); otherwise leave self->shm NULL (TCP). */
void shm_attach(loom_comm *self, bool wanted);
void shm_detach(loom_comm *self);
/* Bytes of each rank's slot in the segment of a world of this size. */
size_t shm_piece_bytes(int world);
/* Barriers a collective of count elements waits at (each bounded by the timeout). */
int shm_phases(const loom_comm *self, size_t count, uint32_t dtype);
/* The collectives that go through the segment when self->shm is set: the same results and
 * bits as the TCP path; they throw ShmFailure. */
void shm_all_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op);
void shm_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op, int32_t root);
void shm_all_gather(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype);
void shm_broadcast(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, int32_t root);
/* Collective: a segment of `bytes` that every rank maps (populated when asked), unlinked at
 * once; nullptr on every rank when any rank could not map it or asked for another size. */
uint8_t *shm_map_together(loom_comm *self, size_t bytes, bool populate);
/* Wait until every rank has arrived; throws ShmFailure on a peer's death, failure or timeout. */
void shm_barrier(loom_comm *self);
/* Set this rank's call signature, wait for every rank, and check theirs are the same. */
void shm_agree(loom_comm *self, uint64_t signature);
/* After a barrier: every rank's signature equals this one, or ShmFailure. */
void shm_check_signatures(loom_comm *self, uint64_t signature);
/* What a call is, for the check: its kind, sizes, dtype, op and one more number. */
uint64_t shm_signature(int kind, size_t count, uint32_t dtype, uint32_t op, int64_t extra);
/* This rank's share [offset, offset + mine) of n elements. */
void shm_block(const loom_comm *self, size_t n, size_t &offset, size_t &mine);

/* ---- gloo_shared.cpp ---- */

/* Collective, only when self->shm is set and bytes > 0 (gloo_alloc_shared checks): a buffer
 * of `bytes` whose copies every rank maps, this rank's copy returned; nullptr on every rank
 * when the memory cannot be had. */
void *shared_alloc(loom_comm *self, size_t bytes);
/* Unmap the buffer whose copy on this rank starts at memory; false if there is none. */
bool shared_free(loom_comm *self, void *memory);
/* Unmap them all (destroy). */
void shared_free_all(loom_comm *self);
/* The buffer holding [data, data + bytes) of this rank's copy, or nullptr. */
const SharedBuffer *shared_find(const loom_comm *self, const void *data, size_t bytes);
/* all_reduce of count elements at `offset` bytes into every rank's copy of b, in place: the
 * same bits as the other paths (sums in rank order). Throws ShmFailure. */
void shared_all_reduce(loom_comm *self, const SharedBuffer &b, size_t offset, size_t count, uint32_t dtype,
                       uint32_t op);

/* ---- gloo_connect.cpp ---- */

/* Validate the setup and config, rendezvous and connect the full mesh, start the worker. */
loom_status create_instance(loom_host *host, const loom_host_api *api, const loom_config *config,
                            const loom_comm_setup *setup, loom_comm **out);

} // namespace loom_gloo

#endif
