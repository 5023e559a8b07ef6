/*
 * gloo_shared.cpp - alloc_shared (ABI 1.6): buffers that every rank of one machine maps, and
 * the all_reduce that works on them in place (docs/architecture.md#shared-buffers).
 *
 * Why: the slot path of gloo_shm.cpp copies each piece into the segment, sums, and copies the
 * whole result back out: per element of an all_reduce a rank moves its data three times. When
 * the caller's buffer (ddp's gradients) is itself in memory every rank maps, none of that is
 * needed: each rank sums its block straight from every rank's copy and writes the sum into every
 * copy. That is one read of each copy of the block and one write into each, about a third of
 * the memory traffic, and a single pair of barriers whatever the size (no slot to refill).
 *
 * Layout: one segment per buffer, every rank's copy in it at rank * stride, so the copies of an
 * element lie `stride` bytes apart and the slot path's reduce_rows sums them as it sums slots,
 * in rank order: the same bits as over TCP or through the slots. A rank writes only its own
 * block, and only between the two barriers, so no two ranks write one byte and nobody reads a
 * block while its owner writes it.
 *
 * The buffer is offered only when the ranks already share the slot segment (same machine,
 * `shm` not off): the decision is every rank's, so every rank gets memory or none does, and a
 * /dev/shm too small for the segment means NULL (the caller allocates its own), not a SIGBUS.
 * Ranks that reduce a shared buffer at different offsets, or one rank through the slots while
 * another works in place, fail at the first barrier with the signature check's message.
 */
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gloo_comm_private.h"
#include "gloo_reduce.h"

namespace loom_gloo
{

namespace
{

constexpr size_t kPage = 4096;
constexpr size_t kSharedChunkBytes = 16 * 1024; /* summed, then copied to the peers while in L1 */
constexpr int kInPlaceKind = 5;                 /* for the signature: not the slot path's 1-4    */

} // namespace

void *shared_alloc(loom_comm *self, size_t bytes)
{
    const size_t stride = (bytes + kPage - 1) / kPage * kPage;
    if (stride < bytes || stride > SIZE_MAX / (size_t)self->world) return nullptr;
    uint8_t *base = shm_map_together(self, stride * (size_t)self->world, false);
    if (!base) return nullptr;
    self->shared.push_back(SharedBuffer{base, stride, bytes});
    return base + (size_t)self->rank * stride;
}

bool shared_free(loom_comm *self, void *memory)
{
    for (auto it = self->shared.begin(); it != self->shared.end(); ++it) {
        if (it->base + (size_t)self->rank * it->stride != memory) continue;
        munmap(it->base, it->stride * (size_t)self->world);
        self->shared.erase(it);
        return true;
    }
    return false;
}

void shared_free_all(loom_comm *self)
{
    for (const SharedBuffer &b : self->shared)
        munmap(b.base, b.stride * (size_t)self->world);
    self->shared.clear();
}

const SharedBuffer *shared_find(const loom_comm *self, const void *data, size_t bytes)
{
    const uint8_t *p = static_cast<const uint8_t *>(data);
    for (const SharedBuffer &b : self->shared) {
        const uint8_t *mine = b.base + (size_t)self->rank * b.stride;
        if (p >= mine && p <= mine + b.bytes && bytes <= (size_t)(mine + b.bytes - p)) return &b;
    }
    return nullptr;
}

void shared_all_reduce(loom_comm *self, const SharedBuffer &b, size_t offset, size_t count, uint32_t dtype, uint32_t op)
{
    const size_t es = loom_dtype_size(dtype), stride = b.stride / es;
    shm_agree(self, shm_signature(kInPlaceKind, count, dtype, op, (int64_t)offset)); /* every copy is final */
    size_t first, mine;
    shm_block(self, count, first, mine);
    /* rank 0's copy of my block; rank r's lies r * stride bytes further */
    uint8_t *row0 = b.base + offset + first * es;
    const size_t chunk = kSharedChunkBytes / es;
    for (size_t done = 0; done < mine; done += chunk) {
        const size_t n = std::min(chunk, mine - done);
        uint8_t *sum = row0 + done * es;
        reduce_rows(sum, sum, n, stride, self->world, dtype, op);
        for (int r = 1; r < self->world; r++)
            std::memcpy(sum + (size_t)r * b.stride, sum, n * es);
    }
    shm_barrier(self); /* every block is summed into every copy */
}

} // namespace loom_gloo
