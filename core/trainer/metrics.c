/*
 * metrics.c - small named-number sets for log entries and evaluation results.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "trainer_internal.h"

void loom_metrics_clear(loom_metrics *m) { m->count = 0; }

loom_status loom_metrics_set(loom_metrics *m, const char *key, double value)
{
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->keys[i], key) == 0) return m->values[i] = value, LOOM_OK;
    if (m->count == LOOM_METRICS_MAX) return loom_error(LOOM_E_NOMEM, "more than %d metrics", LOOM_METRICS_MAX);
    snprintf(m->keys[m->count], sizeof m->keys[m->count], "%s", key);
    m->values[m->count++] = value;
    return LOOM_OK;
}

int loom_metrics_get(const loom_metrics *m, const char *key, double *value)
{
    for (size_t i = 0; i < m->count; i++)
        if (strcmp(m->keys[i], key) == 0) return *value = m->values[i], 1;
    return 0;
}

double loom_round_to(double x, int digits)
{
    double scale = pow(10.0, digits);
    return round(x * scale) / scale;
}
