/*
 * gloo_collectives.cpp - the gloo plugin's collectives on Gloo's primitives, run by a job (on
 * the worker or the caller's thread). Reductions are canonical: every rank's copy of a block
 * arrives through gloo::alltoall and is summed locally in rank order (gloo_reduce.h).
 */
#include <cstring>
#include <new>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/allgatherv.h>
#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/gather.h>

#include "gloo_comm_private.h"
#include "gloo_reduce.h"

namespace loom_gloo
{

static uint8_t *scratch(loom_comm *self, size_t bytes)
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
static void split_blocks(size_t count, int world, std::vector<size_t> &n, std::vector<size_t> &offset)
{
    n.assign(world, count / world);
    offset.assign(world, 0);
    for (int r = 0; r < world; r++) {
        if ((size_t)r < count % world) n[r]++;
        if (r > 0) offset[r] = offset[r - 1] + n[r - 1];
    }
}

static bool overlaps(const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

/* One piece of an all_reduce, in place. */
static void all_reduce_piece(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op)
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
static size_t piece_elements(int world, uint32_t dtype)
{
    const size_t piece = kPieceBytes / loom_dtype_size(dtype) / world * world;
    return piece ? piece : (size_t)world;
}

/* Gloo operations an all_reduce of count elements runs (each bounded by the timeout). */
int all_reduce_phases(const loom_comm *self, size_t count, uint32_t dtype)
{
    if (self->shm) return shm_phases(self, count, dtype);
    const size_t piece = piece_elements(self->world, dtype);
    return (int)std::min<size_t>(2 * ((count + piece - 1) / piece), 1 << 20);
}

void run_all_reduce(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, uint32_t op)
{
    if (self->world == 1) return;
    if (self->shm) return shm_all_reduce(self, data, count, dtype, op);
    const size_t es = loom_dtype_size(dtype), piece = piece_elements(self->world, dtype);
    for (size_t start = 0; start < count; start += piece)
        all_reduce_piece(self, data + start * es, std::min(piece, count - start), dtype, op);
}

static size_t reduce_piece_elements(int world, uint32_t dtype)
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
    if (self->shm) return shm_reduce(self, data, count, dtype, op, root);
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

int reduce_phases(const loom_comm *self, size_t count, uint32_t dtype)
{
    if (self->shm) return shm_phases(self, count, dtype);
    const size_t piece = reduce_piece_elements(self->world, dtype);
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
    const bool in_place = send == recv + self->rank * bytes;
    if (self->shm && (in_place || !overlaps(send, bytes, recv, bytes * world)))
        return shm_all_gather(self, send, recv, count, dtype);
    gloo::AllgatherOptions gather(self->context);
    if (in_place) {
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

int single_phases(const loom_comm *self, size_t count, uint32_t dtype)
{
    return self->shm ? shm_phases(self, count, dtype) : 1;
}

void run_broadcast(loom_comm *self, uint8_t *data, size_t count, uint32_t dtype, int32_t root)
{
    if (self->shm) return shm_broadcast(self, data, count, dtype, root);
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

} // namespace loom_gloo
