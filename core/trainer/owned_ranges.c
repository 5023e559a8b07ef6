/*
 * owned_ranges.c - loom_trainer_check_owned (trainer_internal.h): a sharding plugin's ranges,
 * checked against sharding.h before the host indexes the parameters with them. Before, a range
 * past the parameters had the host step memory it does not own, and ranges that left a gap
 * between the ranks left those parameters untrained, in silence, for the whole run.
 */
#include <stdlib.h>

#include "error.h"
#include "trainer_internal.h"

static int by_begin(const void *a, const void *b)
{
    const loom_range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Rank r's ranges in [0, total), ascending, none overlapping the one before. */
static loom_status check_rank(const loom_trainer *t, int32_t r, const loom_range *ranges, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const loom_range *g = &ranges[i];
        if (g->begin < 0 || g->begin > g->end || g->end > t->total_numel || (i > 0 && g->begin < ranges[i - 1].end))
            return loom_error(LOOM_E_INVALID,
                              "sharding '%s': owned_ranges(%d) gave range %zu = [%lld, %lld), not inside [0, %lld) "
                              "after the one before it",
                              t->sharding.plugin->desc->name, r, i, (long long)g->begin, (long long)g->end,
                              (long long)t->total_numel);
    }
    return LOOM_OK;
}

loom_status loom_trainer_check_owned(loom_trainer *t)
{
    const loom_sharding_vtable *sv = t->sharding.vtable;
    loom_range *all = NULL;
    size_t n_all = 0;
    loom_status st = LOOM_OK;
    for (int32_t r = 0; r < t->world_size && st == LOOM_OK; r++) {
        const loom_range *ranges = NULL;
        size_t n = 0;
        st = LOOM_PLUGIN_CALL(t->sharding, "owned_ranges", sv->owned_ranges(t->sharding.instance, r, &ranges, &n));
        if (st == LOOM_OK) st = check_rank(t, r, ranges, n);
        if (st != LOOM_OK) break;
        loom_range *grown = realloc(all, (n_all + n + 1) * sizeof *all);
        if (!grown) {
            st = loom_error(LOOM_E_NOMEM, "out of memory");
            break;
        }
        all = grown;
        for (size_t i = 0; i < n; i++)
            all[n_all++] = ranges[i];
    }
    /* Every parameter owned by some rank: the union of the ranks' ranges is [0, total). */
    int64_t covered = 0;
    if (st == LOOM_OK) {
        qsort(all, n_all, sizeof *all, by_begin);
        for (size_t i = 0; i < n_all && all[i].begin <= covered; i++)
            if (all[i].end > covered) covered = all[i].end;
        if (covered < t->total_numel)
            st = loom_error(LOOM_E_INVALID,
                            "sharding '%s': no rank owns parameters [%lld, ...) of %lld: they would never be "
                            "updated",
                            t->sharding.plugin->desc->name, (long long)covered, (long long)t->total_numel);
    }
    free(all);
    return st;
}
