/*
 * plateau_driver.c - feeds reduce_lr_on_plateau a metric sequence for test_sched_plateau.py,
 * which compares it with torch's ReduceLROnPlateau. The plugin is loaded through the core loader
 * (sched_harness.h).
 *
 *   plateau_driver BASE_LR RESUME_AT [KEY VALUE]... -- METRIC...
 *
 * prints the learning rate after each metric as a hex float (exact). RESUME_AT > 0: after that
 * many metrics, save_state, destroy, create a fresh instance and load_state, as a resumed run
 * does. A metric "nan" is passed on.
 */
#include "error.h"
#include "sched_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: plateau_driver BASE_LR RESUME_AT [KEY VALUE]... -- METRIC...\n");
        return 2;
    }
    double base = strtod(argv[1], NULL);
    long resume_at = strtol(argv[2], NULL, 10);
    const char *kv[64] = {NULL};
    int i = 3, n = 0;
    for (; i < argc && strcmp(argv[i], "--") != 0 && n < 62; i++)
        kv[n++] = argv[i];
    i++; /* past "--" */
    sched_fixture f;
    if (sched_open(&f, "reduce_lr_on_plateau", kv, base, 100, 0) != LOOM_OK) {
        printf("error: %s\n", loom_error_message());
        sched_close(&f);
        return 1;
    }
    for (long k = 0; i < argc; i++, k++) {
        if (k == resume_at && resume_at > 0) {
            const char *text = NULL;
            char saved[512];
            if (f.vt->save_state(f.sched, &text) != LOOM_OK) return 1;
            snprintf(saved, sizeof saved, "%s", text);
            sched_close(&f);
            if (sched_open(&f, "reduce_lr_on_plateau", kv, base, 100, 0) != LOOM_OK ||
                f.vt->load_state(f.sched, saved) != LOOM_OK) {
                printf("error: %s\n", loom_error_message());
                return 1;
            }
        }
        if (f.vt->observe(f.sched, strtod(argv[i], NULL)) != LOOM_OK) return 1;
        printf("%a\n", sched_lr(&f, k, NULL));
    }
    sched_close(&f);
    return 0;
}
