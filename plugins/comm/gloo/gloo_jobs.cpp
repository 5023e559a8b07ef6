/*
 * gloo_jobs.cpp - the gloo plugin's job queue: Gloo operations on one context must never
 * overlap, so each instance runs its operations one at a time, in submission order, on one
 * worker thread; a blocking call with nothing pending runs at once on the caller's thread.
 * Every wait has a deadline; a failure breaks the instance for good (gloo_comm.cpp says why).
 */
#include <cstdio>
#include <cstring>
#include <new>

#include <gloo/common/error.h>

#include "gloo_comm_private.h"
#include "gloo_reduce.h"

namespace loom_gloo
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
    } catch (const ShmFailure &e) {
        std::snprintf(text, sizeof text, "%s failed on rank %d of %d: %s", what.c_str(), rank, world,
                      e.message.c_str());
        message = text;
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

static Clock::duration seconds(double s)
{
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

/* Close every connection of the context, so that Gloo's device thread touches no buffer of
 * this instance any more (closing a pair waits for the device loop to let go of it); an
 * operation still running fails at once. Call without self->mutex held. */
void close_transport(loom_comm *self)
{
    self->shm_abort.store(true, std::memory_order_release);
    std::shared_ptr<gloo::Context> context = self->context;
    if (!context) return;
    try {
        context->closeConnections();
    } catch (...) {
        /* already closed or half torn down: nothing is left to wait for */
    }
}

/* Run a job the caller has marked running (lock held on entry and on return). */
static void execute(loom_comm *self, const std::shared_ptr<Job> &job, std::unique_lock<std::mutex> &lock)
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

} // namespace loom_gloo
