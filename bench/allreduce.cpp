/*
 * allreduce.cpp (bench_allreduce) - all-reduce bandwidth of the gloo plugin against Gloo's own ring
 * all-reduce (gloo::allreduce with the RING algorithm, what PyTorch's gloo backend runs) on
 * the very same gloo context, between forked processes on 127.0.0.1.
 *
 *   build-dir/bench/bench_allreduce [--world 2] [--reps 5] [--warmup 2] [--sizes 1,16,64,256] [--shared]
 *
 * The plugin's sources are compiled into this program (the .so exports loom_plugin_query only),
 * so it can reach the context behind the plugin instance. fp32 SUM; per size: warm-up calls,
 * then reps rounds alternating plugin and ring, each call preceded by a barrier; a call's time
 * is the maximum over ranks; medians. busbw = bytes / time * 2 (world - 1) / world (the
 * nccl-tests convention), so it compares with PyTorch's gloo all-reduce (docs/benchmarks.md#allreduce). With 2 ranks
 * both results must be bitwise equal (a sum of two is the same in any order); that is checked.
 * --shared: the plugin's buffer is its own alloc_shared memory (ABI 1.6), reduced in place, as
 * ddp's gradients are between the ranks of one machine (docs/architecture.md#shared-buffers).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gloo/allreduce.h>
#include <gloo/math.h>

extern "C" {
#include "error.h"
#include "host.h"
#include "plugin_config.h"
#include "store.h"
}

#include "gloo_comm_internal.h"

namespace
{

int free_port()
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        std::perror("free_port");
        std::exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

double seconds_now()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Options {
    int world = 2;
    int reps = 5;
    int warmup = 2;
    std::vector<double> sizes_mb = {1, 16, 64, 256};
    bool shared = false;
};

void ring_all_reduce(const std::shared_ptr<gloo::Context> &context, float *buf, size_t n)
{
    gloo::AllreduceOptions opts(context);
    opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
    opts.setOutput(buf, n);
    void (*fn)(void *, const void *, const void *, size_t) = &gloo::sum<float>;
    opts.setReduceFunction(fn);
    gloo::allreduce(opts);
}

#define DIE_IF(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            std::fprintf(stderr, "[rank %d] ", rank);                                                                  \
            std::fprintf(stderr, __VA_ARGS__);                                                                         \
            std::fprintf(stderr, ": %s\n", loom_error_message());                                                      \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

int rank_main(int rank, const Options &o, int port)
{
    const int world = o.world;
    loom_store_server *server = nullptr;
    loom_store_client *client = nullptr;
    DIE_IF(loom_store_rendezvous(rank, world, "127.0.0.1", port, 30.0, &server, &client) != LOOM_OK, "rendezvous");
    loom_host_set_store(client);
    const loom_plugin_desc *desc = loom_gloo::descriptor();
    const auto *vt = static_cast<const loom_comm_vtable *>(desc->vtable);
    loom_host *host = loom_host_create("gloo");
    loom_config *config = loom_config_from_spec(desc);
    loom_comm_setup setup;
    std::memset(&setup, 0, sizeof setup);
    setup.abi_major = LOOM_ABI_MAJOR;
    setup.abi_minor = LOOM_ABI_MINOR;
    setup.struct_size = sizeof setup;
    setup.rank = rank;
    setup.world_size = world;
    setup.local_rank = rank;
    setup.local_world_size = world;
    setup.master_addr = "127.0.0.1";
    setup.master_port = port;
    setup.device = LOOM_DEVICE_CPU;
    setup.timeout_seconds = 300.0;
    loom_comm *comm = nullptr;
    DIE_IF(vt->create(host, loom_host_api_table(), config, &setup, &comm) != LOOM_OK, "create");
    std::shared_ptr<gloo::Context> context = loom_gloo::context_of(comm);

    if (rank == 0)
        std::printf("%-8s %12s %10s %12s %10s %8s\n", "MB", "plugin ms", "busbw GB/s", "ring ms", "busbw GB/s",
                    "ratio");
    const double factor = 2.0 * (world - 1) / world;
    for (double mb : o.sizes_mb) {
        const size_t n = (size_t)(mb * 1024 * 1024 / 4);
        const size_t bytes = n * 4;
        std::vector<float> own(n), b(n);
        float *a = own.data();
        void *shared = nullptr;
        if (o.shared) {
            DIE_IF(vt->alloc_shared(comm, bytes, &shared) != LOOM_OK || !shared, "alloc_shared");
            a = static_cast<float *>(shared);
        }
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] = (float)((i * 2654435761u + (size_t)rank * 97) % 1000) * 0.001f;

        /* correctness with 2 ranks: the same sum either way */
        DIE_IF(vt->all_reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, nullptr) != LOOM_OK, "all_reduce");
        ring_all_reduce(context, b.data(), n);
        if (world == 2 && std::memcmp(a, b.data(), bytes) != 0) {
            std::fprintf(stderr, "[rank %d] %g MB: plugin and ring results differ\n", rank, mb);
            return 1;
        }
        for (int w = 0; w < o.warmup; w++) {
            DIE_IF(vt->all_reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, nullptr) != LOOM_OK, "warm-up");
            ring_all_reduce(context, b.data(), n);
        }
        std::vector<double> times(2 * (size_t)o.reps);
        for (int r = 0; r < o.reps; r++) {
            DIE_IF(vt->barrier(comm) != LOOM_OK, "barrier");
            double t0 = seconds_now();
            DIE_IF(vt->all_reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, nullptr) != LOOM_OK, "all_reduce");
            times[2 * r] = seconds_now() - t0;
            DIE_IF(vt->barrier(comm) != LOOM_OK, "barrier");
            t0 = seconds_now();
            ring_all_reduce(context, b.data(), n);
            times[2 * r + 1] = seconds_now() - t0;
        }
        DIE_IF(vt->all_reduce(comm, times.data(), times.size(), LOOM_DTYPE_F64, LOOM_REDUCE_MAX, nullptr) != LOOM_OK,
               "max of times");
        std::vector<double> plugin, ring;
        for (int r = 0; r < o.reps; r++)
            plugin.push_back(times[2 * r]), ring.push_back(times[2 * r + 1]);
        const double tp = median(plugin), tr = median(ring);
        if (rank == 0) {
            std::printf("%-8g %12.2f %10.3f %12.2f %10.3f %8.3f\n", mb, 1e3 * tp, factor * bytes / tp / 1e9, 1e3 * tr,
                        factor * bytes / tr / 1e9, tp / tr);
            std::fflush(stdout);
        }
        DIE_IF(vt->free_shared(comm, shared) != LOOM_OK, "free_shared");
    }
    DIE_IF(vt->barrier(comm) != LOOM_OK, "barrier");
    context.reset();
    vt->destroy(comm);
    loom_host_set_store(nullptr);
    loom_store_close(client);
    loom_store_server_stop(server);
    loom_config_free(config);
    loom_host_destroy(host);
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : nullptr;
        if (arg == "--world" && value) {
            o.world = std::atoi(value), i++;
        } else if (arg == "--reps" && value) {
            o.reps = std::atoi(value), i++;
        } else if (arg == "--warmup" && value) {
            o.warmup = std::atoi(value), i++;
        } else if (arg == "--shared") {
            o.shared = true;
        } else if (arg == "--sizes" && value) {
            o.sizes_mb.clear();
            for (const char *p = value; *p;) {
                char *end = nullptr;
                o.sizes_mb.push_back(std::strtod(p, &end));
                p = *end == ',' ? end + 1 : end;
                if (end == p && *p) break;
            }
            i++;
        } else {
            std::fprintf(stderr, "usage: %s [--world N] [--reps R] [--warmup W] [--sizes MB,MB,...] [--shared]\n",
                         argv[0]);
            return 2;
        }
    }
    if (o.world < 1 || o.world > 64 || o.reps < 1 || o.warmup < 0 || o.sizes_mb.empty()) {
        std::fprintf(stderr, "bad arguments\n");
        return 2;
    }
    const char *shm = std::getenv("LOOM_GLOO_SHM");
    std::printf("gloo plugin all-reduce (%s) vs gloo::allreduce RING, fp32 sum, %d ranks on 127.0.0.1, median of %d\n",
                shm && std::strcmp(shm, "off") == 0 ? "TCP: alltoall + ordered sum + allgather"
                : o.shared                          ? "shared buffer: ordered sum in place"
                                                    : "shared memory: copy in + ordered sum + copy out",
                o.world, o.reps);
    std::fflush(stdout);
    const int port = free_port();
    std::vector<pid_t> pids;
    for (int r = 0; r < o.world; r++) {
        const pid_t pid = fork();
        if (pid < 0) {
            std::perror("fork");
            return 2;
        }
        if (pid == 0) {
            const int rc = rank_main(r, o, port);
            std::fflush(nullptr);
            _exit(rc);
        }
        pids.push_back(pid);
    }
    int failed = 0;
    for (pid_t pid : pids) {
        int status = 0;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    }
    return failed;
}
