/*
 * log_format.h - how the printer and progress callbacks write one log entry: HF's dict print,
 * {'loss': 0.6931, 'learning_rate': 5e-05, 'epoch': 0.25}, with full-precision numbers.
 */
#ifndef LOOM_CALLBACK_LOG_FORMAT_H
#define LOOM_CALLBACK_LOG_FORMAT_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <loom/callback.h>

/* total_flos is left out, as HF's printer and progress callbacks pop it before printing (it is
 * in the log history and train_results.json). */
static inline void loom_format_logs(FILE *out, const loom_event_payload *payload)
{
    fputc('{', out);
    int first = 1;
    for (size_t i = 0; payload && i < payload->n_metrics; i++) {
        double v = payload->metrics[i].value;
        if (!strcmp(payload->metrics[i].key, "total_flos")) continue;
        if (!first) fputs(", ", out);
        first = 0;
        if (isfinite(v) && v == floor(v) && fabs(v) < 1e15)
            fprintf(out, "'%s': %.0f", payload->metrics[i].key, v);
        else
            fprintf(out, "'%s': %.10g", payload->metrics[i].key, v);
    }
    fputs("}\n", out);
    fflush(out);
}

#endif
