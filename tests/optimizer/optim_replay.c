/*
 * optim_replay.c - run an optimizer plugin, loaded through the core loader, on parameters and
 * gradients written by another program, and write back what it made of them, so that
 * tests/optimizer/torch_optim_test.py can hold the plugin against PyTorch on the very same
 * numbers.
 *
 *   optim_replay PLUGIN IN OUT [KEY VALUE]...
 *
 * IN (little-endian): int64 n_decay, n_nodecay, n_steps; float64 weight_decay; n float32
 * parameters (n = n_decay + n_nodecay); then per step int64 t, float64 lr, grad_scale, momentum
 * (NaN: none) and n float32 gradients. The first n_decay elements are one span with that weight
 * decay, the rest a span without. OUT: after every step, the n parameters, then each state slot's
 * n values, float32. KEY VALUE pairs set the plugin's configuration.
 */
#include "error.h"
#include "optim_harness.h"

#include <stdio.h>
#include <stdlib.h>

static int read_all(FILE *f, void *buf, size_t size)
{
    return fread(buf, 1, size, f) == size;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc % 2) {
        fprintf(stderr, "usage: optim_replay PLUGIN IN OUT [KEY VALUE]...\n");
        return 2;
    }
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    int64_t head[3];
    double wd;
    if (!in || !out || !read_all(in, head, sizeof head) || !read_all(in, &wd, sizeof wd) || head[0] < 0 ||
        head[1] < 0 || head[0] + head[1] > ((int64_t)1 << 28)) {
        fprintf(stderr, "optim_replay: cannot read %s or write %s\n", argv[2], argv[3]);
        return 2;
    }
    optim_fixture f;
    if (optim_open(&f, argv[1], (const char *const *)argv + 4) != LOOM_OK) return 1;
    const int64_t n = head[0] + head[1];
    const uint32_t slots = f.vt->state_slots;
    float *param = malloc((size_t)n * sizeof(float) + 1), *grad = malloc((size_t)n * sizeof(float) + 1);
    float *state = calloc((size_t)n * (slots + 1), sizeof(float));
    int rc = param && grad && state && read_all(in, param, (size_t)n * sizeof(float)) ? 0 : 2;
    loom_span spans[2];
    for (int s = 0; s < 2 && !rc; s++) {
        const int64_t first = s ? head[0] : 0;
        float *st[LOOM_MAX_STATE_SLOTS] = {0};
        for (uint32_t k = 0; k < slots; k++)
            st[k] = state + (size_t)k * (size_t)n + (size_t)first;
        spans[s] = optim_span(s ? "b" : "w", param + first, grad + first, st, slots, head[s], s ? 0.0 : wd);
    }
    for (int64_t j = 0; j < head[2] && !rc; j++) {
        int64_t t;
        double lr_scale_mom[3];
        if (!read_all(in, &t, sizeof t) || !read_all(in, lr_scale_mom, sizeof lr_scale_mom) ||
            !read_all(in, grad, (size_t)n * sizeof(float))) {
            rc = 2;
            break;
        }
        loom_optimizer_step step = optim_step_args(t, lr_scale_mom[0], lr_scale_mom[1], lr_scale_mom[2]);
        if (f.vt->step(f.opt, spans, 2, &step) != LOOM_OK) {
            fprintf(stderr, "optim_replay: step %lld: %s\n", (long long)t, loom_error_message());
            rc = 1;
            break;
        }
        if (fwrite(param, sizeof(float), (size_t)n, out) != (size_t)n ||
            fwrite(state, sizeof(float), (size_t)n * slots, out) != (size_t)n * slots)
            rc = 2;
    }
    optim_close(&f);
    free(param);
    free(grad);
    free(state);
    fclose(in);
    return fclose(out) || rc ? (rc ? rc : 2) : 0;
}
