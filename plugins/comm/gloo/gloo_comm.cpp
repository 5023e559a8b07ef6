/*
 * gloo_comm.cpp - the communicator of a multi-process CPU run: Gloo over TCP.
 *
 * Rendezvous goes through the host's key-value store (LOOM_STORE_SERVICE), adapted to Gloo's
 * Store interface and prefixed per instance; every rank then opens a TCP connection to every
 * other rank (Gloo's full mesh).
 *
 * Reductions are canonical (comm.h): a SUM is ((r0 + r1) + r2) + ... for every element,
 * whatever the world size. An all-reduce is an ordered reduce-scatter - gloo::alltoall hands
 * each rank every rank's copy of its block, which it sums locally in rank order - followed by
 * gloo::allgather. That moves the same bytes as a ring all-reduce, and measured as fast on this
 * machine (docs/benchmarks.md#allreduce), while Gloo's own ring is not reproducible. Small
 * buffers take one gloo::allgather of the whole buffer and a local reduction instead.
 *
 * Threads: Gloo operations on one context must never overlap, so each instance runs its
 * operations one at a time, in submission order, on one worker thread. A blocking call queues
 * behind pending asynchronous ones and waits, so it cannot overtake them; with nothing pending
 * it runs at once on the caller's thread.
 *
 * Failures: every Gloo operation is bounded by the context's timeout. A peer that died closes
 * its sockets and the pending operation fails at once (LOOM_E_COMM); one that stopped
 * answering makes it time out (LOOM_E_TIMEOUT). After any failure the ranks are out of step,
 * so the instance refuses further operations with the first error, and it closes its
 * connections before the failure is reported: Gloo's device thread may still be completing a
 * receive into the caller's buffer, and only a closed pair is sure to touch it no more. A
 * caller that gives up on an operation still running likewise closes them and waits for the
 * operation to end before it returns (and frees its buffers).
 *
 * The ABI boundary: this file is the only C++ in loom. Every vtable entry catches every
 * exception; nothing unwinds into the host.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/allgatherv.h>
#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/gather.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>

#include <loom/comm.h>
#include <loom/plugin.h>

#include "gloo_comm_internal.h"
#include "gloo_reduce.h"

using Clock = std::chrono::steady_clock;

namespace
{

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

std::atomic<unsigned long> instance_counter{0};

/* A store call failed; the host's store already recorded the message (naming key and address). */
struct StoreFailure {
    loom_status status;
};

/* The host's rendezvous store seen as a Gloo store. */
class HostStore final : public gloo::rendezvous::Store
{
  public:
    HostStore(loom_host *host, const loom_store_api *api, double timeout_seconds)
        : host_(host), api_(api), timeout_seconds_(timeout_seconds)
    {
    }

    void set(const std::string &key, const std::vector<char> &data) override
    {
        check(api_->set(host_, key.c_str(), data.data(), data.size()));
    }

    std::vector<char> get(const std::string &key) override
    {
        std::vector<char> value(512);
        for (;;) {
            size_t size = 0;
            check(api_->get(host_, key.c_str(), value.data(), value.size(), &size, timeout_seconds_));
            if (size <= value.size()) {
                value.resize(size);
                return value;
            }
            value.resize(size);
        }
    }

    void wait(const std::vector<std::string> &keys) override
    {
        wait_seconds(keys, timeout_seconds_);
    }

    void wait(const std::vector<std::string> &keys, const std::chrono::milliseconds &timeout) override
    {
        wait_seconds(keys, timeout.count() > 0 ? (double)timeout.count() / 1000.0 : timeout_seconds_);
    }

  private:
    void wait_seconds(const std::vector<std::string> &keys, double seconds)
    {
        std::vector<const char *> names;
        names.reserve(keys.size());
        for (const std::string &key : keys)
            names.push_back(key.c_str());
        check(api_->wait(host_, names.data(), names.size(), seconds));
    }

    static void check(loom_status status)
    {
        if (status != LOOM_OK) throw StoreFailure{status};
    }

    loom_host *host_;
    const loom_store_api *api_;
    double timeout_seconds_;
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

} // namespace

struct loom_comm_request {
    std::shared_ptr<Job> job;
};

struct loom_comm {
    loom_host *host = nullptr;
    const loom_host_api *api = nullptr;
    int rank = 0;
    int world = 1;
    double timeout_seconds = kDefaultTimeoutSeconds;
    std::string hostname;

    std::unique_ptr<gloo::rendezvous::Store> base_store;
    std::unique_ptr<gloo::rendezvous::PrefixStore> store;
    std::shared_ptr<gloo::transport::Device> device;
    std::shared_ptr<gloo::Context> context;

    std::mutex mutex; /* guards everything below but the worker's scratch                          */
    std::condition_variable cv;
    std::deque<std::shared_ptr<Job>> queue;
    std::shared_ptr<Job> running;
    bool stopping = false;
    loom_status broken_status = LOOM_OK; /* the first failure; every later operation reports it  */
    std::string broken;
    std::thread worker;

    void *scratch = nullptr; /* the worker's; grows, never shrinks                                   */
    size_t scratch_bytes = 0;
};

namespace
{

std::string describe(const char *name, uint32_t op, size_t count, uint32_t dtype)
{
    char text[160];
    if (op)
        std::snprintf(text, sizeof text, "%s(%s, %zu x %s)", name, loom_gloo::op_name(op), count,
                      loom_dtype_name(dtype));
    else
        std::snprintf(text, sizeof text, "%s(%zu x %s)", name, count, loom_dtype_name(dtype));
    return text;
}

/* Turn the exception being handled into a status and a message ("" when the message is
 * already recorded: a store failure). Call only inside a catch block. */
loom_status classify(const loom_comm *self, const std::string &what, std::string &message)
{
    const int rank = self ? self->rank : -1, world = self ? self->world : 0;
    const double timeout = self ? self->timeout_seconds : 0.0;
    char text[1200];
    try {
        throw;
    } catch (const StoreFailure &e) {
        message.clear();
        return e.status;
    } catch (const std::bad_alloc &) {
        std::snprintf(text, sizeof text, "%s: out of memory", what.c_str());
        message = text;
        return LOOM_E_NOMEM;
    } catch (const gloo::IoException &e) {
        if (std::strstr(e.what(), "Timed out") || std::strstr(e.what(), "timed out")) {
            std::snprintf(text, sizeof text,
                          "%s timed out after %g s on rank %d of %d: a peer rank may have died, hung, or issued a "
                          "different collective (gloo: %s)",
                          what.c_str(), timeout, rank, world, e.what());
            message = text;
            return LOOM_E_TIMEOUT;
        }
        std::snprintf(text, sizeof text, "%s failed on rank %d of %d: peer rank may have died (gloo: %s)", what.c_str(),
                      rank, world, e.what());
        message = text;
        return LOOM_E_COMM;
    } catch (const gloo::EnforceNotMet &e) {
        std::snprintf(text, sizeof text,
                      "%s failed on rank %d of %d: peer rank may have died, or the ranks issued different "
                      "collectives or counts (gloo: %s)",
                      what.c_str(), rank, world, e.what());
        message = text;
        return LOOM_E_COMM;
    } catch (const gloo::Exception &e) {
        std::snprintf(text, sizeof text, "%s failed on rank %d of %d: peer rank may have died (gloo: %s)", what.c_str(),
                      rank, world, e.what());
        message = text;
        return LOOM_E_COMM;
    } catch (const std::exception &e) {
        std::snprintf(text, sizeof text, "%s: unexpected exception: %s", what.c_str(), e.what());
        message = text;
        return LOOM_E_INTERNAL;
    } catch (...) {
        std::snprintf(text, sizeof text, "%s: unexpected exception of unknown type", what.c_str());
        message = text;
        return LOOM_E_INTERNAL;
    }
}

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

/* ---------------------------------------------------------------------------------------- */
/* The worker thread and requests                                                            */

Clock::duration seconds(double s)
{
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

/* Close every connection of the context, so that Gloo's device thread touches no buffer of
 * this instance any more (closing a pair waits for the device loop to let go of it); an
 * operation still running fails at once. Call without self->mutex held. */
void close_transport(loom_comm *self)
{
    std::shared_ptr<gloo::Context> context = self->context;
    if (!context) return;
    try {
        context->closeConnections();
    } catch (...) {
        /* already closed or half torn down: nothing is left to wait for */
    }
}

/* Run a job the caller has marked running (lock held on entry and on return). */
void execute(loom_comm *self, const std::shared_ptr<Job> &job, std::unique_lock<std::mutex> &lock)
{
    job->started = true;
    job->deadline = Clock::now() + seconds(job->phases * self->timeout_seconds + kWaitGraceSeconds);
    self->running = job;
    lock.unlock();

    loom_status status = LOOM_OK;
    std::string message;
    try {
        job->run(self);
    } catch (...) {
        status = classify(self, job->what, message);
    }
    if (status != LOOM_OK) close_transport(self); /* before anyone may free the job's buffers */

    lock.lock();
    self->running.reset();
    job->status = status;
    job->message = std::move(message);
    job->done = true;
    if (status != LOOM_OK && self->broken_status == LOOM_OK) {
        self->broken_status = status;
        self->broken = job->message;
    }
    self->cv.notify_all();
}

void worker_main(loom_comm *self)
{
    std::unique_lock<std::mutex> lock(self->mutex);
    for (;;) {
        self->cv.wait(lock, [self] { return self->stopping || !self->queue.empty(); });
        if (self->stopping) return;
        std::shared_ptr<Job> job = std::move(self->queue.front());
        self->queue.pop_front();
        if (self->broken_status != LOOM_OK) {
            job->status = self->broken_status;
            job->message = job->what + " not run: the communicator failed earlier: " + self->broken;
            job->done = true;
            self->cv.notify_all();
            continue;
        }
        execute(self, job, lock);
    }
}

/* Block until job is done, or until it (or the one the worker is stuck in) overran its time. */
loom_status wait_job(loom_comm *self, const std::shared_ptr<Job> &job)
{
    std::unique_lock<std::mutex> lock(self->mutex);
    while (!job->done) {
        const Clock::time_point now = Clock::now();
        const Job *clock_of = job->started ? job.get() : self->running.get();
        if (!clock_of) {
            /* queued, and the worker is between jobs: it picks the next one up at once */
            self->cv.wait_for(lock, std::chrono::milliseconds(50));
            continue;
        }
        if (now >= clock_of->deadline) {
            char text[1200];
            std::snprintf(text, sizeof text,
                          "%s did not finish within %g s on rank %d of %d%s%s: a peer rank may have died or hung",
                          job->what.c_str(), clock_of->phases * self->timeout_seconds + kWaitGraceSeconds, self->rank,
                          self->world, clock_of == job.get() ? "" : " (stuck behind ",
                          clock_of == job.get() ? "" : (clock_of->what + ")").c_str());
            if (self->broken_status == LOOM_OK) {
                self->broken_status = LOOM_E_TIMEOUT;
                self->broken = text;
            }
            /* The running operation may be writing into this caller's buffer: stop the
             * transport and let the operation fail before the caller gets its buffer back. */
            lock.unlock();
            close_transport(self);
            lock.lock();
            self->cv.wait_until(lock, Clock::now() + seconds(kWaitGraceSeconds), [self] { return !self->running; });
            lock.unlock();
            return self->api->fail(self->host, LOOM_E_TIMEOUT, "%s", text);
        }
        self->cv.wait_until(lock, clock_of->deadline);
    }
    const loom_status status = job->status;
    const std::string message = job->message;
    lock.unlock();
    if (status != LOOM_OK) return self->api->fail(self->host, status, "%s", message.c_str());
    return LOOM_OK;
}

/* Queue a job and hand out a request, or run it and wait when request is NULL. A blocking
 * job that finds nothing queued or running runs on the caller's thread: the order is the same
 * (the caller is the only thread that submits), and it saves a hand-over to the worker, which
 * on a busy machine can cost a scheduler tick (4 ms measured with 2 ranks on 2 cores). */
loom_status submit(loom_comm *self, std::shared_ptr<Job> job, loom_comm_request **request)
{
    {
        std::unique_lock<std::mutex> lock(self->mutex);
        if (self->broken_status != LOOM_OK) {
            const loom_status status = self->broken_status;
            const std::string why = self->broken;
            lock.unlock();
            return self->api->fail(self->host, status, "%s refused: the communicator failed earlier: %s",
                                   job->what.c_str(), why.c_str());
        }
        if (self->stopping)
            return self->api->fail(self->host, LOOM_E_INVALID, "%s: communicator is being destroyed",
                                   job->what.c_str());
        if (!request && self->queue.empty() && !self->running) {
            SigpipeBlocked no_sigpipe; /* this thread writes to the sockets now */
            execute(self, job, lock);
        } else {
            if (request) *request = new loom_comm_request{job};
            self->queue.push_back(job);
        }
    }
    self->cv.notify_all();
    if (request) return LOOM_OK;
    return wait_job(self, job);
}

std::shared_ptr<Job> make_job(std::string what, int phases, std::function<void(loom_comm *)> run)
{
    auto job = std::make_shared<Job>();
    job->what = std::move(what);
    job->phases = phases;
    job->run = std::move(run);
    return job;
}

/* ---------------------------------------------------------------------------------------- */
/* The operations, on the worker thread                                                      */

uint8_t *scratch(loom_comm *self, size_t bytes)
{
    if (bytes > self->scratch_bytes) {
        const size_t rounded = (bytes + kScratchRound - 1) / kScratchRound * kScratchRound;
        void *grown = self->api->alloc(self->host, rounded, 64, LOOM_DEVICE_CPU, 0);
        if (!grown) throw std::bad_alloc();
        self->api->free_memory(self->host, self->scratch);
        self->scratch = grown;
        self->scratch_bytes = rounded;
    }
    return static_cast<uint8_t *>(self->scratch);
}

/* count elements split into world blocks: the first count % world get one more. */
void split_blocks(size_t count, int world, std::vector<size_t> &n, std::vector<size_t> &offset)
{
    n.assign(world, count / world);
    offset.assign(world, 0);
    for (int r = 0; r < world; r++) {
        if ((size_t)r < count % world) n[r]++;
        if (r > 0) offset[r] = offset[r - 1] + n[r - 1];
    }
}

bool overlaps(const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

/* One piece of an all_reduce, in place. */
void all_reduce_piece(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op)
{
    const int world = self->world, rank = self->rank;
    const size_t es = loom_dtype_size(dtype), bytes = count * es;

    if (count < (size_t)world || bytes * world <= kSmallBytes) {
        /* Small: one allgather of the whole buffer, every rank reduces all of it. */
        uint8_t *rows = scratch(self, bytes * world);
        gloo::AllgatherOptions gather(self->context);
        gather.setInput(data, bytes);
        gather.setOutput(rows, bytes * world);
        gloo::allgather(gather);
        loom_gloo::reduce_rows(data, rows, count, count, world, dtype, op);
        return;
    }

    if (count % world == 0) {
        const size_t block = count / world, block_bytes = block * es;
        uint8_t *rows = scratch(self, bytes);
        gloo::AlltoallOptions exchange(self->context);
        exchange.setInput(data, bytes);
        exchange.setOutput(rows, bytes);
        gloo::alltoall(exchange);
        loom_gloo::reduce_rows(data + rank * block_bytes, rows, block, block, world, dtype, op);
        gloo::AllgatherOptions gather(self->context);
        gather.setOutput(data, bytes); /* in place: this rank's block is already there */
        gloo::allgather(gather);
        return;
    }

    std::vector<size_t> n, offset;
    split_blocks(count, world, n, offset);
    const size_t mine = n[rank];
    std::vector<int64_t> send_bytes(world), recv_bytes(world, (int64_t)(mine * es));
    std::vector<size_t> gather_bytes(world);
    for (int r = 0; r < world; r++)
        send_bytes[r] = (int64_t)(n[r] * es), gather_bytes[r] = n[r] * es;
    uint8_t *rows = scratch(self, mine * es * world);
    gloo::AlltoallvOptions exchange(self->context);
    exchange.setInput(data, send_bytes);
    exchange.setOutput(rows, recv_bytes);
    gloo::alltoallv(exchange);
    loom_gloo::reduce_rows(data + offset[rank] * es, rows, mine, mine, world, dtype, op);
    gloo::AllgathervOptions gather(self->context);
    gather.setOutput(data, gather_bytes);
    gloo::allgatherv(gather);
}

/* In place: every rank's buffer ends up holding the rank-ordered reduction. Each element is
 * reduced on its own, so the buffer can go through in pieces: the scratch stays within
 * kPieceBytes whatever the buffer's size. */
size_t piece_elements(int world, uint32_t dtype)
{
    const size_t piece = kPieceBytes / loom_dtype_size(dtype) / world * world;
    return piece ? piece : (size_t)world;
}

/* Gloo operations an all_reduce of count elements runs (each bounded by the timeout). */
int all_reduce_phases(int world, size_t count, uint32_t dtype)
{
    const size_t piece = piece_elements(world, dtype);
    return (int)std::min<size_t>(2 * ((count + piece - 1) / piece), 1 << 20);
}

void run_all_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op)
{
    if (self->world == 1) return;
    const size_t es = loom_dtype_size(dtype), piece = piece_elements(self->world, dtype);
    for (size_t start = 0; start < count; start += piece)
        all_reduce_piece(self, data + start * es, std::min(piece, count - start), dtype, op);
}

size_t reduce_piece_elements(int world, uint32_t dtype)
{
    const size_t piece = kReducePieceBytes / loom_dtype_size(dtype) / (size_t)world;
    return piece ? piece : 1;
}

/* A rooted reduce: every rank's piece is gathered at the root, which sums the rows in rank
 * order, the very arithmetic all_reduce does for each element, so the root gets the same bits.
 * Only the root's link carries data, one way: two reductions to two different roots (ZeRO-2's
 * pieces) use both directions of a link where two all-reduces would each use both. */
void run_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op, int32_t root)
{
    const int world = self->world;
    if (world == 1) return;
    const size_t es = loom_dtype_size(dtype), piece = reduce_piece_elements(world, dtype);
    for (size_t start = 0; start < count; start += piece) {
        const size_t n = std::min(piece, count - start), bytes = n * es;
        uint8_t *chunk = data + start * es;
        gloo::GatherOptions gather(self->context);
        gather.setInput(chunk, bytes);
        uint8_t *rows = nullptr;
        if (self->rank == root) {
            rows = scratch(self, bytes * world);
            gather.setOutput(rows, bytes * world);
        }
        gather.setRoot(root);
        gloo::gather(gather);
        if (self->rank == root) loom_gloo::reduce_rows(chunk, rows, n, n, world, dtype, op);
    }
}

int reduce_phases(int world, size_t count, uint32_t dtype)
{
    const size_t piece = reduce_piece_elements(world, dtype);
    return (int)std::min<size_t>((count + piece - 1) / piece, 1 << 20);
}

void run_reduce_scatter(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype, uint32_t op)
{
    const int world = self->world;
    const size_t bytes = count * loom_dtype_size(dtype);
    uint8_t *rows = scratch(self, bytes * world);
    gloo::AlltoallOptions exchange(self->context);
    exchange.setInput(const_cast<uint8_t *>(send), bytes * world);
    exchange.setOutput(rows, bytes * world);
    gloo::alltoall(exchange);
    loom_gloo::reduce_rows(recv, rows, count, count, world, dtype, op);
}

void run_all_gather(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype)
{
    const int world = self->world;
    const size_t bytes = count * loom_dtype_size(dtype);
    gloo::AllgatherOptions gather(self->context);
    if (send == recv + self->rank * bytes) {
        /* in place */
    } else if (overlaps(send, bytes, recv, bytes * world)) {
        uint8_t *copy = scratch(self, bytes);
        std::memcpy(copy, send, bytes);
        gather.setInput(copy, bytes);
    } else {
        gather.setInput(const_cast<uint8_t *>(send), bytes);
    }
    gather.setOutput(recv, bytes * world);
    gloo::allgather(gather);
}

void run_broadcast(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, int32_t root)
{
    gloo::BroadcastOptions cast(self->context);
    cast.setOutput(data, count * loom_dtype_size(dtype));
    cast.setRoot(root);
    gloo::broadcast(cast);
}

void run_all_to_all(loom_comm *self, const uint8_t *send, uint8_t *recv, size_t count, uint32_t dtype)
{
    const size_t bytes = count * loom_dtype_size(dtype) * self->world;
    const uint8_t *from = send;
    if (overlaps(send, bytes, recv, bytes)) {
        uint8_t *copy = scratch(self, bytes);
        std::memcpy(copy, send, bytes);
        from = copy;
    }
    gloo::AlltoallOptions exchange(self->context);
    exchange.setInput(const_cast<uint8_t *>(from), bytes);
    exchange.setOutput(recv, bytes);
    gloo::alltoall(exchange);
}

void run_barrier(loom_comm *self)
{
    gloo::BarrierOptions options(self->context);
    gloo::barrier(options);
}

/* ---------------------------------------------------------------------------------------- */
/* Creation                                                                                  */

/* The local address a datagram to addr:port would leave from: the interface that reaches
 * the master, so peers on other hosts can reach this one (127.0.0.1 when the master is local). */
bool local_address_towards(const char *addr, int32_t port, std::string &out, std::string &why)
{
    struct addrinfo hints;
    std::memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    char service[16];
    std::snprintf(service, sizeof service, "%d", port > 0 ? (int)port : 29500);
    struct addrinfo *found = nullptr;
    const int rc = getaddrinfo(addr, service, &hints, &found);
    if (rc != 0) {
        why = gai_strerror(rc);
        return false;
    }
    bool ok = false;
    why = "no usable address";
    for (struct addrinfo *ai = found; ai && !ok; ai = ai->ai_next) {
        const int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            why = std::strerror(errno);
            continue;
        }
        struct sockaddr_storage local;
        socklen_t length = sizeof local;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            why = std::strerror(errno);
        } else if (getsockname(fd, reinterpret_cast<struct sockaddr *>(&local), &length) != 0) {
            why = std::strerror(errno);
        } else {
            char text[INET6_ADDRSTRLEN] = "";
            const void *where =
                local.ss_family == AF_INET6
                    ? static_cast<const void *>(&reinterpret_cast<struct sockaddr_in6 *>(&local)->sin6_addr)
                    : static_cast<const void *>(&reinterpret_cast<struct sockaddr_in *>(&local)->sin_addr);
            if (inet_ntop(local.ss_family, where, text, sizeof text)) {
                out = text;
                ok = true;
            }
        }
        close(fd);
    }
    freeaddrinfo(found);
    return ok;
}

loom_status create_instance(loom_host *host, const loom_host_api *api, const loom_config *config,
                            const loom_comm_setup *setup, loom_comm **out)
{
    if (!setup || setup->world_size < 1 || setup->rank < 0 || setup->rank >= setup->world_size)
        return api->fail(host, LOOM_E_INVALID, "invalid setup: rank %d of %d", setup ? setup->rank : -1,
                         setup ? setup->world_size : 0);
    if (setup->device != LOOM_DEVICE_CPU)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "gloo moves CPU buffers only; buffers on a GPU need the nccl communicator");

    double timeout = setup->timeout_seconds;
    std::string hostname;
    if (config) {
        double configured = 0.0;
        int got = api->cfg_f64(config, "timeout_seconds", &configured);
        if (got == LOOM_CFG_WRONG_TYPE || (got == LOOM_CFG_PRESENT && !(configured >= 0.0)))
            return api->fail(host, LOOM_E_INVALID, "gloo.timeout_seconds must be a number >= 0 (0 = --ddp_timeout)");
        if (got == LOOM_CFG_PRESENT && configured > 0.0) timeout = configured;
        const char *name = nullptr;
        got = api->cfg_str(config, "hostname", &name);
        if (got == LOOM_CFG_WRONG_TYPE) return api->fail(host, LOOM_E_INVALID, "gloo.hostname must be a string");
        if (got == LOOM_CFG_PRESENT && name) hostname = name;
    }
    if (!(timeout > 0.0)) timeout = kDefaultTimeoutSeconds;

    const int rank = setup->rank, world = setup->world_size;
    const auto *store_api = static_cast<const loom_store_api *>(api->service(host, LOOM_STORE_SERVICE, 0));
    if (!store_api && world > 1)
        return api->fail(host, LOOM_E_INVALID,
                         "gloo needs the rendezvous store: start ranks with `loom launch` or set "
                         "MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE");

    const char *master = setup->master_addr && *setup->master_addr ? setup->master_addr : nullptr;
    if (hostname.empty()) {
        if (master) {
            std::string why;
            if (!local_address_towards(master, setup->master_port, hostname, why))
                return api->fail(host, LOOM_E_COMM,
                                 "cannot find the local address that reaches MASTER_ADDR %s:%d (%s); set "
                                 "--gloo.hostname to this host's address",
                                 master, (int)setup->master_port, why.c_str());
        } else if (world == 1) {
            hostname = "127.0.0.1";
        } else {
            return api->fail(host, LOOM_E_INVALID, "gloo: MASTER_ADDR is not set for rank %d of %d", rank, world);
        }
    }

    const Clock::time_point started = Clock::now();
    auto self = std::make_unique<loom_comm>();
    self->host = host;
    self->api = api;
    self->rank = rank;
    self->world = world;
    self->timeout_seconds = timeout;
    self->hostname = hostname;

    SigpipeBlocked no_sigpipe; /* the device's event loop and the worker inherit the mask */
    if (store_api)
        self->base_store = std::make_unique<HostStore>(host, store_api, timeout);
    else
        self->base_store = std::make_unique<gloo::rendezvous::HashStore>();
    const std::string prefix = "loom.gloo/" + std::to_string(instance_counter.fetch_add(1));
    self->store = std::make_unique<gloo::rendezvous::PrefixStore>(prefix, *self->base_store);

    gloo::transport::tcp::attr attr;
    attr.hostname = hostname;
    std::string what = "gloo rendezvous of rank " + std::to_string(rank) + " of " + std::to_string(world) +
                       " listening on " + hostname;
    if (master) what += " (store at " + std::string(master) + ":" + std::to_string(setup->master_port) + ")";
    try {
        self->device = gloo::transport::tcp::CreateDevice(attr);
        auto context = std::make_shared<gloo::rendezvous::Context>(rank, world);
        context->setTimeout(std::chrono::milliseconds((int64_t)(timeout * 1000.0)));
        context->connectFullMesh(*self->store, self->device);
        self->context = std::move(context);
    } catch (...) {
        std::string message;
        const loom_status status = classify(self.get(), what, message);
        return message.empty() ? status : api->fail(host, status, "%s", message.c_str());
    }
    self->worker = std::thread(worker_main, self.get());

    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    api->log(host, LOOM_LOG_DEBUG, "rank %d of %d connected to %d peers through %s in %.0f ms (timeout %g s)", rank,
             world, world - 1, hostname.c_str(), ms, timeout);
    *out = self.release();
    return LOOM_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The vtable                                                                                */

loom_status check_dtype(loom_comm *self, const char *name, uint32_t dtype)
{
    if (!loom_dtype_size(dtype))
        return self->api->fail(self->host, LOOM_E_INVALID, "%s: unknown dtype %u", name, (unsigned)dtype);
    return LOOM_OK;
}

loom_status check_reduction(loom_comm *self, const char *name, uint32_t dtype, uint32_t op)
{
    loom_status status = check_dtype(self, name, dtype);
    if (status != LOOM_OK) return status;
    if (!loom_gloo::op_supported(dtype, op))
        return self->api->fail(self->host, LOOM_E_UNSUPPORTED, "%s: reduction op %u is not sum, max or min", name,
                               (unsigned)op);
    return LOOM_OK;
}

loom_status check_pointers(loom_comm *self, const char *name, size_t count, const void *a, const void *b)
{
    if (count && (!a || !b)) return self->api->fail(self->host, LOOM_E_INVALID, "%s: NULL buffer", name);
    return LOOM_OK;
}

loom_status check_root(loom_comm *self, const char *name, int32_t root)
{
    if (root < 0 || root >= self->world)
        return self->api->fail(self->host, LOOM_E_INVALID, "%s: root %d is not a rank of 0..%d", name, (int)root,
                               self->world - 1);
    return LOOM_OK;
}

loom_status gloo_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                        const loom_comm_setup *setup, loom_comm **out)
{
    if (!out) return LOOM_E_INVALID;
    *out = nullptr;
    try {
        return create_instance(host, api, config, setup, out);
    } catch (...) {
        std::string message;
        const loom_status status = classify(nullptr, "gloo create", message);
        if (message.empty()) return status;
        try {
            return api->fail(host, status, "%s", message.c_str());
        } catch (...) {
            return status;
        }
    }
}

void gloo_destroy(loom_comm *self)
{
    if (!self) return;
    try {
        SigpipeBlocked no_sigpipe;
        {
            std::lock_guard<std::mutex> lock(self->mutex);
            self->stopping = true;
            for (const std::shared_ptr<Job> &job : self->queue) {
                job->status = LOOM_E_COMM;
                job->message = job->what + " abandoned: the communicator was destroyed";
                job->done = true;
            }
            self->queue.clear();
        }
        self->cv.notify_all();
        if (self->worker.joinable()) self->worker.join(); /* a running operation ends within its timeout */
        self->context.reset();
        self->device.reset();
        self->store.reset();
        self->base_store.reset();
        self->api->free_memory(self->host, self->scratch);
        self->scratch = nullptr;
        delete self;
    } catch (...) {
        /* Nothing may unwind into the host: leak the instance rather than crash. */
        if (self->worker.joinable()) self->worker.detach();
    }
}

loom_status gloo_all_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op,
                            loom_comm_request **request)
{
    return guarded(self, "all_reduce", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "all_reduce", dtype, op);
        if (status == LOOM_OK) status = check_pointers(self, "all_reduce", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        return submit(self,
                      make_job(describe("all_reduce", op, count, dtype), all_reduce_phases(self->world, count, dtype),
                               [=](loom_comm *c) { run_all_reduce(c, data, count, dtype, op); }),
                      request);
    });
}

loom_status gloo_reduce_scatter(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                                uint32_t op, loom_comm_request **request)
{
    return guarded(self, "reduce_scatter", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "reduce_scatter", dtype, op);
        if (status == LOOM_OK) status = check_pointers(self, "reduce_scatter", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("reduce_scatter", op, count, dtype), 1,
                               [=](loom_comm *c) { run_reduce_scatter(c, from, to, count, dtype, op); }),
                      request);
    });
}

loom_status gloo_all_gather(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                            loom_comm_request **request)
{
    return guarded(self, "all_gather", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "all_gather", dtype);
        if (status == LOOM_OK) status = check_pointers(self, "all_gather", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("all_gather", 0, count, dtype), 1,
                               [=](loom_comm *c) { run_all_gather(c, from, to, count, dtype); }),
                      request);
    });
}

loom_status gloo_broadcast(loom_comm *self, void *buffer, size_t count, uint32_t dtype, int32_t root,
                           loom_comm_request **request)
{
    return guarded(self, "broadcast", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "broadcast", dtype);
        if (status == LOOM_OK) status = check_root(self, "broadcast", root);
        if (status == LOOM_OK) status = check_pointers(self, "broadcast", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        return submit(self,
                      make_job(describe("broadcast", 0, count, dtype), 1,
                               [=](loom_comm *c) { run_broadcast(c, data, count, dtype, root); }),
                      request);
    });
}

loom_status gloo_reduce(loom_comm *self, void *buffer, size_t count, uint32_t dtype, uint32_t op, int32_t root,
                        loom_comm_request **request)
{
    return guarded(self, "reduce", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_reduction(self, "reduce", dtype, op);
        if (status == LOOM_OK) status = check_root(self, "reduce", root);
        if (status == LOOM_OK) status = check_pointers(self, "reduce", count, buffer, buffer);
        if (status != LOOM_OK || count == 0) return status;
        uint8_t *data = static_cast<uint8_t *>(buffer);
        return submit(self,
                      make_job(describe("reduce", op, count, dtype), reduce_phases(self->world, count, dtype),
                               [=](loom_comm *c) { run_reduce(c, data, count, dtype, op, root); }),
                      request);
    });
}

loom_status gloo_all_to_all(loom_comm *self, const void *send, void *recv, size_t count, uint32_t dtype,
                            loom_comm_request **request)
{
    return guarded(self, "all_to_all", [&]() -> loom_status {
        if (request) *request = nullptr;
        loom_status status = check_dtype(self, "all_to_all", dtype);
        if (status == LOOM_OK) status = check_pointers(self, "all_to_all", count, send, recv);
        if (status != LOOM_OK || count == 0) return status;
        const uint8_t *from = static_cast<const uint8_t *>(send);
        uint8_t *to = static_cast<uint8_t *>(recv);
        return submit(self,
                      make_job(describe("all_to_all", 0, count, dtype), 1,
                               [=](loom_comm *c) { run_all_to_all(c, from, to, count, dtype); }),
                      request);
    });
}

loom_status gloo_barrier(loom_comm *self)
{
    return guarded(self, "barrier", [&]() -> loom_status {
        return submit(self, make_job("barrier", 1, [](loom_comm *c) { run_barrier(c); }), nullptr);
    });
}

loom_status gloo_wait(loom_comm *self, loom_comm_request *request)
{
    if (!request) return LOOM_OK; /* an operation with nothing to move hands out no request */
    return guarded(self, "wait", [&]() -> loom_status {
        std::unique_ptr<loom_comm_request> owned(request);
        return wait_job(self, owned->job);
    });
}

const loom_comm_vtable gloo_vtable = {
    LOOM_HEADER_INIT(loom_comm_vtable),
    .flags = LOOM_COMM_ORDERED_SUM,
    .reserved1 = 0,
    .create = gloo_create,
    .destroy = gloo_destroy,
    .all_reduce = gloo_all_reduce,
    .reduce_scatter = gloo_reduce_scatter,
    .all_gather = gloo_all_gather,
    .broadcast = gloo_broadcast,
    .reduce = gloo_reduce,
    .all_to_all = gloo_all_to_all,
    .barrier = gloo_barrier,
    .wait = gloo_wait,
};

const loom_param_spec gloo_params[] = {
    {.key = "hostname",
     .type = LOOM_PARAM_STRING,
     .reserved0 = 0,
     .default_value = "",
     .doc = "address this rank listens on for its peers; empty = the local address that reaches MASTER_ADDR"},
    {.key = "timeout_seconds",
     .type = LOOM_PARAM_FLOAT,
     .reserved0 = 0,
     .default_value = "0",
     .doc = "timeout of the rendezvous and of every collective, seconds; 0 = --ddp_timeout"},
    {.key = nullptr, .type = 0, .reserved0 = 0, .default_value = nullptr, .doc = nullptr},
};

const loom_plugin_desc gloo_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_COMM,
    .reserved1 = 0,
    .name = "gloo",
    .version = "1.0.0",
    .summary = "collectives between processes over TCP (Gloo); sums in canonical rank order",
    .vtable = &gloo_vtable,
    .params = gloo_params,
};

} // namespace

namespace loom_gloo
{

const loom_plugin_desc *descriptor()
{
    return &gloo_desc;
}

std::shared_ptr<gloo::Context> context_of(loom_comm *comm)
{
    return comm ? comm->context : nullptr;
}

} // namespace loom_gloo

LOOM_PLUGIN_EXPORT(&gloo_desc)
