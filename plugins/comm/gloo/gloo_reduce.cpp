/*
 * gloo_reduce.cpp - rank-ordered local reductions for the gloo plugin.
 *
 * Every element is combined as ((r0 op r1) op r2) op ..., whatever the number of ranks or the
 * block it falls in, so a SUM is bitwise the canonical one of comm.h. The loops run over a
 * chunk of elements at a time, row after row, so the partial results stay in L1 while the
 * rows stream past and the element loop vectorises (each element is independent: no
 * reassociation is needed, none is allowed).
 */
#include "gloo_reduce.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include <loom/comm.h>

namespace loom_gloo
{

namespace
{

constexpr size_t kChunk = 1024;

uint32_t f32_bits(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float f32_from_bits(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/* dst[i] = combine(... combine(combine(row0[i], row1[i]), row2[i]) ..., row_{w-1}[i]). */
template <typename T, typename Combine>
void combine_rows(T *dst, const T *rows, size_t n, size_t stride, int world, Combine combine)
{
    if (world == 1) {
        if (dst != rows) std::memmove(dst, rows, n * sizeof(T));
        return;
    }
    for (size_t base = 0; base < n; base += kChunk) {
        const size_t m = std::min(kChunk, n - base);
        T *d = dst + base;
        const T *r0 = rows + base;
        const T *r1 = rows + stride + base;
        for (size_t i = 0; i < m; i++)
            d[i] = combine(r0[i], r1[i]);
        for (int r = 2; r < world; r++) {
            const T *row = rows + (size_t)r * stride + base;
            for (size_t i = 0; i < m; i++)
                d[i] = combine(d[i], row[i]);
        }
    }
}

/* a holds the ranks before b's: on a tie the lower rank's value stays; NaN wins. */
template <typename T> T max_of(T a, T b)
{
    if constexpr (std::is_floating_point_v<T>)
        return (b > a || b != b) ? b : a;
    else
        return b > a ? b : a;
}

template <typename T> T min_of(T a, T b)
{
    if constexpr (std::is_floating_point_v<T>)
        return (b < a || b != b) ? b : a;
    else
        return b < a ? b : a;
}

template <typename T> void reduce_native(void *dst, const void *rows, size_t n, size_t stride, int world, uint32_t op)
{
    T *d = static_cast<T *>(dst);
    const T *s = static_cast<const T *>(rows);
    switch (op) {
    case LOOM_REDUCE_SUM:
        if constexpr (std::is_integral_v<T>) {
            /* Two's complement wrap-around, without signed overflow. */
            using U = std::make_unsigned_t<T>;
            combine_rows(d, s, n, stride, world, [](T a, T b) { return (T)(U)((U)a + (U)b); });
        } else {
            combine_rows(d, s, n, stride, world, [](T a, T b) { return a + b; });
        }
        break;
    case LOOM_REDUCE_MAX:
        combine_rows(d, s, n, stride, world, max_of<T>);
        break;
    case LOOM_REDUCE_MIN:
        combine_rows(d, s, n, stride, world, min_of<T>);
        break;
    default:
        break;
    }
}

/* f16 / bf16: sums accumulate in fp32 in rank order and round once; max/min compare values
 * and keep the winning element's bits. */
template <float (*to_float)(uint16_t), uint16_t (*from_float)(float)>
void reduce_16(void *dst, const void *rows, size_t n, size_t stride, int world, uint32_t op)
{
    uint16_t *d = static_cast<uint16_t *>(dst);
    const uint16_t *s = static_cast<const uint16_t *>(rows);
    if (op == LOOM_REDUCE_SUM) {
        if (world == 1) {
            if (d != s) std::memmove(d, s, n * sizeof *d);
            return;
        }
        float acc[kChunk];
        for (size_t base = 0; base < n; base += kChunk) {
            const size_t m = std::min(kChunk, n - base);
            const uint16_t *r0 = s + base;
            const uint16_t *r1 = s + stride + base;
            for (size_t i = 0; i < m; i++)
                acc[i] = to_float(r0[i]) + to_float(r1[i]);
            for (int r = 2; r < world; r++) {
                const uint16_t *row = s + (size_t)r * stride + base;
                for (size_t i = 0; i < m; i++)
                    acc[i] += to_float(row[i]);
            }
            for (size_t i = 0; i < m; i++)
                d[base + i] = from_float(acc[i]);
        }
        return;
    }
    if (op == LOOM_REDUCE_MAX)
        combine_rows(d, s, n, stride, world, [](uint16_t a, uint16_t b) {
            const float fa = to_float(a), fb = to_float(b);
            return (fb > fa || fb != fb) ? b : a;
        });
    else
        combine_rows(d, s, n, stride, world, [](uint16_t a, uint16_t b) {
            const float fa = to_float(a), fb = to_float(b);
            return (fb < fa || fb != fb) ? b : a;
        });
}

} // namespace

float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {
        /* zero or subnormal: mantissa * 2^-24, exact in fp32 */
        const float magnitude = (float)mantissa * 0x1p-24f;
        return f32_from_bits(f32_bits(magnitude) | sign);
    }
    if (exponent == 31) return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
    return f32_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t float_to_half(float f)
{
    /* Round to nearest even through the fp32 adder: scaling by 2^112 then 2^-110 moves the
     * bits below half precision out, with overflow to infinity and gradual underflow. */
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (std::abs(f) * scale_to_inf) * scale_to_zero;
    const uint32_t w = f32_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xff000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007c00u;
    const uint32_t mantissa_bits = bits & 0x00000fffu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

float bf16_to_float(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

uint16_t float_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}


const char *op_name(uint32_t op)
{
    switch (op) {
    case LOOM_REDUCE_SUM:
        return "sum";
    case LOOM_REDUCE_MAX:
        return "max";
    case LOOM_REDUCE_MIN:
        return "min";
    default:
        return "?";
    }
}

bool op_supported(uint32_t dtype, uint32_t op)
{
    return loom_dtype_size(dtype) != 0 && (op == LOOM_REDUCE_SUM || op == LOOM_REDUCE_MAX || op == LOOM_REDUCE_MIN);
}

void reduce_rows(void *dst, const void *rows, size_t n, size_t stride, int world, uint32_t dtype, uint32_t op)
{
    switch (dtype) {
    case LOOM_DTYPE_F32:
        reduce_native<float>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_F64:
        reduce_native<double>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_I32:
        reduce_native<int32_t>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_I64:
        reduce_native<int64_t>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_U16:
        reduce_native<uint16_t>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_U8:
        reduce_native<uint8_t>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_F16:
        reduce_16<half_to_float, float_to_half>(dst, rows, n, stride, world, op);
        break;
    case LOOM_DTYPE_BF16:
        reduce_16<bf16_to_float, float_to_bf16>(dst, rows, n, stride, world, op);
        break;
    default:
        break;
    }
}

} // namespace loom_gloo
