/*
 * print_order.c - prints a training loader's order of one epoch, for test_sampler_orders.py:
 *   print_order FILE random|sortish|group_by_length|sequential BATCH SEED WORLD RANK EPOCH [DROP_LAST]
 * writes the example indices this rank reads, in order, on one line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "error.h"

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: print_order FILE random|sortish|group_by_length|sequential BATCH SEED WORLD RANK EPOCH "
                        "[DROP_LAST]\n");
        return 2;
    }
    loom_dataset *ds = NULL;
    loom_status st = loom_dataset_open(argv[1], 0, &ds);
    if (st != LOOM_OK) {
        fprintf(stderr, "%s\n", loom_error_message());
        return 1;
    }
    loom_dataloader dl;
    const int sequential = !strcmp(argv[2], "sequential");
    st = loom_dataloader_init(&dl, ds, atoll(argv[3]), !sequential, argc == 9 && atoi(argv[8]),
                              (uint64_t)atoll(argv[4]));
    dl.sampler = sequential                            ? LOOM_SAMPLER_SEQUENTIAL
                 : !strcmp(argv[2], "sortish")         ? LOOM_SAMPLER_SORTISH
                 : !strcmp(argv[2], "group_by_length") ? LOOM_SAMPLER_GROUP_BY_LENGTH
                                                       : LOOM_SAMPLER_RANDOM;
    dl.world_size = atoi(argv[5]);
    dl.rank = atoi(argv[6]);
    if (st == LOOM_OK) st = loom_dataloader_set_epoch(&dl, atoll(argv[7]));
    if (st != LOOM_OK) {
        fprintf(stderr, "%s\n", loom_error_message());
        return 1;
    }
    /* The examples of the epoch's batches (drop_last leaves a short last one out). */
    const int64_t batched = loom_dataloader_len(&dl) * dl.batch_size;
    const int64_t n = batched < dl.order_len ? batched : dl.order_len;
    for (int64_t i = 0; i < n; i++)
        printf(i ? " %lld" : "%lld", (long long)dl.order[i]);
    printf("\n");
    loom_dataloader_free(&dl);
    ds->destroy(ds);
    return 0;
}
