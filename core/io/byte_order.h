/*
 * byte_order.h - little-endian fields of the file formats loom reads and writes (llm.c token
 * shards, LOOMCLS1 classification files), whatever the host's byte order. Header-only.
 */
#ifndef LOOM_CORE_BYTE_ORDER_H
#define LOOM_CORE_BYTE_ORDER_H

#include <stdint.h>
#include <string.h>

static inline int loom_host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static inline uint32_t loom_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t loom_get_le64(const unsigned char *p)
{
    return (uint64_t)loom_get_le32(p) | (uint64_t)loom_get_le32(p + 4) << 32;
}

static inline void loom_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void loom_put_le64(unsigned char *p, uint64_t v)
{
    loom_put_le32(p, (uint32_t)v);
    loom_put_le32(p + 4, (uint32_t)(v >> 32));
}

#endif
