/*
 * gloo_reduce.h - the local half of the gloo plugin's reductions: combining the copies of one
 * block that every rank sent, in rank order, for every dtype and op the plugin accepts.
 *
 * Internal to the plugin (C++, no exceptions thrown).
 */
#ifndef LOOM_GLOO_REDUCE_H
#define LOOM_GLOO_REDUCE_H

#include <cstddef>
#include <cstdint>

namespace loom_gloo
{

/* "sum", "max", "min"; "?" otherwise. */
const char *op_name(uint32_t op);

/* Whether op (LOOM_REDUCE_*) is defined on dtype. Every op is defined on every dtype above:
 * SUM of integers wraps around (two's complement), SUM of f16/bf16 accumulates in fp32 and
 * rounds once, MAX/MIN of floats propagate NaN. */
bool op_supported(uint32_t dtype, uint32_t op);

/* dst[i] = rows[0][i] op rows[1][i] op ... op rows[world-1][i], combined strictly in rank
 * order ((r0 op r1) op r2) ..., where rows[r] = rows + r * stride elements. dst may equal
 * rows (row 0) but must not overlap any other row. n and stride count elements. */
void reduce_rows(void *dst, const void *rows, size_t n, size_t stride, int world, uint32_t dtype, uint32_t op);

/* IEEE half and bfloat16 <-> float, round to nearest even (exported for the tests). */
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

} // namespace loom_gloo

#endif
