/*
 * test_zero_whole.c - ZeRO's whole-tensor partition (plugins/sharding/zero_whole.h), against a
 * brute force written here: every way of cutting the tensors into `world` contiguous runs is
 * tried, and the partition must be one of them (ranges in order, covering the buffer, cut only
 * at tensor boundaries) with the smallest possible longest run. Also: fewer tensors than ranks
 * (trailing ranks empty, at the end of the buffer), one huge tensor among small ones, one rank,
 * zero-size tensors and an empty model.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#include "../../plugins/sharding/zero_whole.h"

#define MAX_T 9
#define MAX_W 6

/* The smallest longest run over every cut of tensors [first, n) into `ranks` runs (empty allowed). */
static int64_t best_longest(const int64_t *offsets, size_t first, size_t n, int ranks)
{
    if (ranks == 1) return offsets[n] - offsets[first];
    int64_t best = INT64_MAX;
    for (size_t cut = first; cut <= n; cut++) {
        const int64_t head = offsets[cut] - offsets[first];
        const int64_t rest = best_longest(offsets, cut, n, ranks - 1);
        const int64_t longest = head > rest ? head : rest;
        if (longest < best) best = longest;
    }
    return best;
}

/* The ranges are a valid cut: in rank order, contiguous, covering [0, total), boundaries at tensor
 * offsets; returns the longest. */
static int64_t check_cut(const int64_t *offsets, size_t n, int world, const loom_range *ranges)
{
    int64_t at = offsets[0], longest = 0;
    for (int r = 0; r < world; r++) {
        CHECK(ranges[r].begin == at && ranges[r].end >= ranges[r].begin);
        int on_boundary = 0;
        for (size_t i = 0; i <= n; i++) on_boundary |= ranges[r].end == offsets[i];
        CHECK(on_boundary);
        if (ranges[r].end - ranges[r].begin > longest) longest = ranges[r].end - ranges[r].begin;
        at = ranges[r].end;
    }
    CHECK(at == offsets[n]);
    return longest;
}

static void sizes_to_offsets(const int64_t *sizes, size_t n, int64_t *offsets)
{
    offsets[0] = 0;
    for (size_t i = 0; i < n; i++) offsets[i + 1] = offsets[i] + sizes[i];
}

/* Pseudo-random layouts of 1..MAX_T tensors on 1..MAX_W ranks against the brute force. */
static void test_against_brute_force(void)
{
    uint64_t x = 88172645463325252ull;
    for (int trial = 0; trial < 400; trial++) {
        int64_t sizes[MAX_T], offsets[MAX_T + 1];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const size_t n = 1 + (size_t)(x % MAX_T);
        const int world = 1 + (int)((x >> 8) % MAX_W);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly small, now and then a large one, sometimes a zero-size tensor. */
            sizes[i] = (x % 11 == 0) ? 0 : (x % 7 == 0) ? 1000 + (int64_t)(x % 5000) : 1 + (int64_t)((x >> 5) % 64);
        }
        sizes_to_offsets(sizes, n, offsets);
        loom_range ranges[MAX_W];
        const int64_t P = zero_whole_partition(offsets, n, world, ranges);
        const int64_t longest = check_cut(offsets, n, world, ranges);
        CHECK(P == longest);
        CHECK(P == best_longest(offsets, 0, n, world));
    }
}

static void test_fewer_tensors_than_ranks(void)
{
    const int64_t offsets[] = {0, 300, 310};
    loom_range ranges[5];
    CHECK(zero_whole_partition(offsets, 2, 5, ranges) == 300);
    CHECK(ranges[0].begin == 0 && ranges[0].end == 300);
    CHECK(ranges[1].begin == 300 && ranges[1].end == 310);
    for (int r = 2; r < 5; r++) CHECK(ranges[r].begin == 310 && ranges[r].end == 310);
}

static void test_one_huge_tensor(void)
{
    /* 10 small tensors, a huge one, 10 small: on 2 ranks one side's small ones join the huge one;
     * from 3 ranks on the huge one is alone and sets P, the small ones on either side of it. */
    int64_t sizes[21], offsets[22];
    for (int i = 0; i < 21; i++) sizes[i] = i == 10 ? 1000000 : 100;
    sizes_to_offsets(sizes, 21, offsets);
    for (int world = 1; world <= 4; world++) {
        loom_range ranges[4];
        const int64_t P = zero_whole_partition(offsets, 21, world, ranges);
        check_cut(offsets, 21, world, ranges);
        CHECK(P == (world == 1 ? offsets[21] : world == 2 ? 1000000 + 1000 : 1000000));
    }
    /* The huge tensor first and alone on 3 ranks: rank 0 owns it, rank 1 the rest, rank 2 nothing. */
    const int64_t alone[] = {0, 1000000, 1000100};
    loom_range ranges[3];
    CHECK(zero_whole_partition(alone, 2, 3, ranges) == 1000000);
    CHECK(ranges[0].end == 1000000 && ranges[1].end == 1000100 && ranges[2].begin == ranges[2].end);
}

static void test_degenerate(void)
{
    const int64_t none[] = {0};
    loom_range ranges[3];
    CHECK(zero_whole_partition(none, 0, 3, ranges) == 0);
    for (int r = 0; r < 3; r++) CHECK(ranges[r].begin == 0 && ranges[r].end == 0);
    const int64_t even[] = {0, 50, 100, 150, 200};
    CHECK(zero_whole_partition(even, 4, 1, ranges) == 200);
    CHECK(ranges[0].begin == 0 && ranges[0].end == 200);
    CHECK(zero_whole_partition(even, 4, 2, ranges) == 100);
    CHECK(ranges[0].end == 100 && ranges[1].end == 200);
}

int main(void)
{
    test_against_brute_force();
    test_fewer_tensors_than_ranks();
    test_one_huge_tensor();
    test_degenerate();
    return test_finish("test_zero_whole");
}
