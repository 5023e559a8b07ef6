/*
 * gloo_connect.cpp - creating a gloo communicator: the host's rendezvous store seen as Gloo's,
 * the local interface that reaches MASTER_ADDR (so peers on other hosts can connect), and
 * Gloo's full mesh of TCP connections, bounded by the timeout.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>

#include "gloo_comm_private.h"

namespace loom_gloo
{

namespace
{

std::atomic<unsigned long> instance_counter{0};

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

} // namespace

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
    int32_t shm = 1;
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
        got = api->cfg_bool(config, "shm", &shm);
        if (got == LOOM_CFG_WRONG_TYPE) return api->fail(host, LOOM_E_INVALID, "gloo.shm must be true or false");
        if (got != LOOM_CFG_PRESENT) shm = 1;
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
        shm_attach(self.get(), shm != 0);
    } catch (...) {
        shm_detach(self.get());
        std::string message;
        const loom_status status = classify(self.get(), what, message);
        return message.empty() ? status : api->fail(host, status, "%s", message.c_str());
    }
    self->worker = std::thread(worker_main, self.get());

    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    api->log(host, LOOM_LOG_DEBUG, "rank %d of %d connected to %d peers through %s in %.0f ms (timeout %g s)%s", rank,
             world, world - 1, hostname.c_str(), ms, timeout, self->shm ? "; all_reduce through shared memory" : "");
    *out = self.release();
    return LOOM_OK;
}

} // namespace loom_gloo
