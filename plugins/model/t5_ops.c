/*
 * t5_ops.c - the small pieces of T5 that are not kernels: relative position buckets and the
 * bias they index, dropout (masks from loom_dropout_keep, so nothing is stored and a resumed
 * run draws the same ones), and the embedding lookup.
 */
#include "t5.h"

#include <math.h>
#include <string.h>

/* HF's T5Attention._relative_position_bucket, in the same float arithmetic: half the buckets
 * exact offsets, the other half logarithmic up to max_distance; the encoder splits them by
 * direction, the decoder sees only the past. */
int64_t t5_relative_bucket(int64_t relative_position, int bidirectional, int64_t num_buckets, int64_t max_distance)
{
    int64_t bucket = 0, n = num_buckets;
    if (bidirectional) {
        n /= 2;
        if (relative_position > 0) bucket += n;
        relative_position = relative_position < 0 ? -relative_position : relative_position;
    } else {
        relative_position = relative_position < 0 ? -relative_position : 0;
    }
    const int64_t max_exact = n / 2;
    if (relative_position < max_exact) return bucket + relative_position;
    const float scaled = logf((float)relative_position / (float)max_exact) /
                         logf((float)max_distance / (float)max_exact) * (float)(n - max_exact);
    int64_t large = max_exact + (int64_t)scaled;
    if (large > n - 1) large = n - 1;
    return bucket + large;
}

void t5_bias_forward(float *bias, const float *table, int64_t H, int64_t Tq, int64_t Tk, int bidirectional,
                     int64_t NB, int64_t MD)
{
    for (int64_t i = 0; i < Tq; i++) {
        const int64_t qpos = i + Tk - Tq;
        for (int64_t j = 0; j < Tk; j++) {
            const int64_t b = t5_relative_bucket(j - qpos, bidirectional, NB, MD);
            for (int64_t h = 0; h < H; h++) bias[(h * Tq + i) * Tk + j] = table[b * H + h];
        }
    }
}

void t5_bias_backward(float *dtable, const float *dbias, int64_t H, int64_t Tq, int64_t Tk, int bidirectional,
                      int64_t NB, int64_t MD)
{
    for (int64_t i = 0; i < Tq; i++) {
        const int64_t qpos = i + Tk - Tq;
        for (int64_t j = 0; j < Tk; j++) {
            const int64_t b = t5_relative_bucket(j - qpos, bidirectional, NB, MD);
            for (int64_t h = 0; h < H; h++) dtable[b * H + h] += dbias[(h * Tq + i) * Tk + j];
        }
    }
}

uint64_t t5_site_seed(uint64_t seed, uint64_t site)
{
    uint64_t z = seed ^ (site + 1) * 0xd1b54a32d192ed03ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void t5_dropout(float *x, int64_t n, float p, uint64_t seed)
{
    if (p <= 0.0f) return;
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) x[i] = loom_dropout_keep(seed, (uint64_t)i, p) ? x[i] * scale : 0.0f;
}

void t5_add_dropout(float *dst, const float *src, int64_t n, float p, uint64_t seed)
{
    if (p <= 0.0f) {
        for (int64_t i = 0; i < n; i++) dst[i] += src[i];
        return;
    }
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        if (loom_dropout_keep(seed, (uint64_t)i, p)) dst[i] += src[i] * scale;
}

void t5_embed_forward(float *out, const int32_t *ids, const float *table, int64_t N, int64_t D)
{
    for (int64_t n = 0; n < N; n++) memcpy(out + n * D, table + (int64_t)ids[n] * D, (size_t)D * sizeof *out);
}

void t5_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t N, int64_t D)
{
    for (int64_t n = 0; n < N; n++) {
        float *row = dtable + (int64_t)ids[n] * D;
        const float *g = dout + n * D;
        for (int64_t d = 0; d < D; d++) row[d] += g[d];
    }
}
