/*
 * test_comm_nccl_plugin.c - the real nccl plugin (built only with CUDA and nccl.h) through the
 * core loader.
 *
 * Everywhere: it loads without a GPU, declares that its sums are not in rank order, refuses
 * CPU buffers; where no GPU (or no NCCL) is usable, create() fails in one line instead of
 * crashing or hanging (this is what runs in the CPU suite of a CUDA build).
 * With a GPU (tests/gpu/run.sh), one process or several under `loom launch` (RANK,
 * WORLD_SIZE, MASTER_ADDR, MASTER_PORT): each rank binds GPU LOCAL_RANK modulo the GPUs
 * visible, joins through the rendezvous store, and checks all_reduce, reduce_scatter,
 * all_gather, broadcast, reduce, all_to_all, an asynchronous all_reduce and the barrier
 * against sums it computes itself (small integers: exact in any reduction order).
 * Exit 0: passed; 1: failed; 3: create() refused on a GPU machine (the message says why, e.g.
 * NCCL's "Duplicate GPU" for two ranks on one GPU).
 */
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/comm.h>

#include "error.h"
#include "host.h"
#include "plugin_loader.h"
#include "store.h"
#include "test_util.h"

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}

static int collectives(const loom_comm_vtable *vt, loom_comm *comm, int rank, int world)
{
    const size_t n = 1000;
    float *a = NULL, *b = NULL;
    if (cudaMallocManaged((void **)&a, n * world * sizeof *a, cudaMemAttachGlobal) != cudaSuccess ||
        cudaMallocManaged((void **)&b, n * world * sizeof *b, cudaMemAttachGlobal) != cudaSuccess)
        return 0;
    const float sum_r = (float)(world * (world + 1) / 2); /* sum of rank + 1 */
    for (size_t i = 0; i < n; i++) a[i] = (float)(rank + 1) * (float)(i % 7);
    CHECK(vt->all_reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL) == LOOM_OK);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += a[i] != sum_r * (float)(i % 7);
    CHECK(bad == 0);

    for (size_t i = 0; i < n * world; i++) a[i] = (float)(rank + 1);
    CHECK(vt->reduce_scatter(comm, a, b, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, NULL) == LOOM_OK);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += b[i] != sum_r;
    CHECK(bad == 0);

    for (size_t i = 0; i < n; i++) a[i] = (float)rank;
    CHECK(vt->all_gather(comm, a, b, n, LOOM_DTYPE_F32, NULL) == LOOM_OK);
    bad = 0;
    for (size_t i = 0; i < n * world; i++) bad += b[i] != (float)(i / n);
    CHECK(bad == 0);

    int root = world - 1;
    for (size_t i = 0; i < n; i++) a[i] = rank == root ? 42.0f : -1.0f;
    CHECK(vt->broadcast(comm, a, n, LOOM_DTYPE_F32, root, NULL) == LOOM_OK);
    CHECK(a[0] == 42.0f && a[n - 1] == 42.0f);

    for (size_t i = 0; i < n; i++) a[i] = (float)(rank + 1);
    CHECK(vt->reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_MAX, 0, NULL) == LOOM_OK);
    if (rank == 0) CHECK(a[0] == (float)world && a[n - 1] == (float)world);

    for (size_t i = 0; i < n * world; i++) a[i] = (float)(rank * 100 + (int)(i / n)); /* block r to rank r */
    CHECK(vt->all_to_all(comm, a, b, n, LOOM_DTYPE_F32, NULL) == LOOM_OK);
    bad = 0;
    for (size_t i = 0; i < n * world; i++) bad += b[i] != (float)((int)(i / n) * 100 + rank);
    CHECK(bad == 0);

    loom_comm_request *req = NULL;
    for (size_t i = 0; i < n; i++) a[i] = 1.0f;
    CHECK(vt->all_reduce(comm, a, n, LOOM_DTYPE_F32, LOOM_REDUCE_SUM, &req) == LOOM_OK);
    CHECK(vt->wait(comm, req) == LOOM_OK);
    CHECK(a[0] == (float)world && a[n - 1] == (float)world);
    CHECK(vt->barrier(comm) == LOOM_OK);
    cudaFree(a);
    cudaFree(b);
    return 1;
}

int main(void)
{
    alarm(120);
    const loom_plugin *plugin = NULL;
    if (loom_loader_init(NULL, 0) != LOOM_OK || loom_plugin_load("nccl", LOOM_KIND_COMM, &plugin) != LOOM_OK) {
        fprintf(stderr, "cannot load the nccl plugin: %s\n", loom_error_message());
        return 1;
    }
    const loom_comm_vtable *vt = plugin->desc->vtable;
    CHECK(strcmp(plugin->desc->name, "nccl") == 0);
    CHECK(!(vt->flags & LOOM_COMM_ORDERED_SUM));
    int rank = env_int("RANK", 0), world = env_int("WORLD_SIZE", 1), local = env_int("LOCAL_RANK", 0);

    loom_store_server *server = NULL;
    loom_store_client *client = NULL;
    if (world > 1) {
        const char *addr = getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1";
        if (loom_store_rendezvous(rank, world, addr, env_int("MASTER_PORT", 29500), 60.0, &server, &client) !=
            LOOM_OK) {
            fprintf(stderr, "rank %d: rendezvous: %s\n", rank, loom_error_message());
            return 1;
        }
        loom_host_set_store(client);
    }
    loom_host *host = loom_host_create("nccl");
    loom_comm_setup setup = {
        LOOM_HEADER_INIT(loom_comm_setup),
        .rank = rank,
        .world_size = world,
        .local_rank = local,
        .local_world_size = world,
        .device = LOOM_DEVICE_CPU,
        .timeout_seconds = 60.0,
    };
    loom_comm *comm = (loom_comm *)1;
    CHECK(vt->create(host, loom_host_api_table(), NULL, &setup, &comm) == LOOM_E_UNSUPPORTED);
    CHECK(comm == NULL && strstr(loom_error_message(), "--ddp_backend gloo"));

    int gpus = 0;
    int have_gpu = cudaGetDeviceCount(&gpus) == cudaSuccess && gpus > 0;
    (void)cudaGetLastError();
    if (have_gpu) (void)cudaSetDevice(local % gpus);
    setup.device = LOOM_DEVICE_CUDA;
    loom_status st = vt->create(host, loom_host_api_table(), NULL, &setup, &comm);
    int code = 0;
    if (st == LOOM_OK) {
        printf("rank %d of %d on GPU %d of %d: collectives\n", rank, world, local % gpus, gpus);
        CHECK(collectives(vt, comm, rank, world));
        vt->destroy(comm);
    } else {
        printf("rank %d: create refused: %s\n", rank, loom_error_message());
        CHECK(st == LOOM_E_DEVICE || st == LOOM_E_UNSUPPORTED || st == LOOM_E_TIMEOUT || st == LOOM_E_COMM);
        CHECK(comm == NULL);
        CHECK(*loom_error_message() && !strchr(loom_error_message(), '\n'));
        if (have_gpu) code = 3;
    }
    loom_host_destroy(host);
    loom_host_set_store(NULL);
    loom_store_close(client);
    loom_store_server_stop(server);
    int failed = test_finish("test_comm_nccl_plugin");
    return failed ? 1 : code;
}
