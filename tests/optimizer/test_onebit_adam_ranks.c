/*
 * test_onebit_adam_ranks.c - 1-bit Adam's CompressedAllreduce between real rank processes over
 * the gloo communicator, against a transcription of docs/semantics/optimizers.md#onebit-adam that simulates every
 * worker and every server in double precision.
 *
 * The parent forks 2 and then 3 ranks. 3 ranks pad 40 elements to a multiple of
 * W * lcm(W, 8) = 72 (W * 8 would give 48), in chunks of 24 that do not fall on the span
 * boundary. freeze_step 0: every step compresses, from a v the test sets. Each rank feeds its own
 * gradient; after each of 3 steps every rank checks m, v, its worker_error and the parameters:
 * all ranks must hold the same m and parameters, the mean over ranks of their compressed local
 * momenta, recompressed by the chunk's server. Every process has a hard alarm(), so a hang fails
 * instead of blocking ctest.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/comm.h>

#include "error.h"
#include "host.h"
#include "optim_harness.h"
#include "store.h"
#include "test_util.h"
#include "test_ranks.h"

#define N 40
#define SPLIT 23 /* two spans: [0, 23) with decay, [23, 40) without */
#define MAX_WORLD 3
#define MAX_PADDED 72

static const double B1 = 0.85, EPS = 1e-6, WD = 0.02;


/* Rank r's local gradient (already carrying loom's 1 / global-count factor). */
static float local_grad(int r, int i, int t)
{
    return optim_test_grad(i + 97 * r, t) * (1.0f + 0.3f * (float)r);
}

static double initial_v(int i)
{
    return 0.01 + 0.002 * (double)(i % 7);
}

static double sign1(double x)
{
    return x >= 0 ? 1.0 : -1.0; /* sign 0 counts as +1 */
}

/* Every worker and server of a world of `world`, in double. */
typedef struct reference {
    int world, padded, chunk;
    double m[N], p[N], v[N];
    double we[MAX_WORLD][MAX_PADDED];
    double se[MAX_PADDED]; /* server j's error is se[j*chunk, (j+1)*chunk) */
} reference;

static void reference_step(reference *r, int t, double lr)
{
    double x[MAX_WORLD][MAX_PADDED], s[MAX_WORLD];
    for (int k = 0; k < r->world; k++) {
        double squares = 0;
        for (int i = 0; i < r->padded; i++) {
            double mk = i < N ? B1 * r->m[i] + (1 - B1) * (double)local_grad(k, i, t) * r->world : 0.0;
            x[k][i] = mk + r->we[k][i];
            squares += x[k][i] * x[k][i];
        }
        s[k] = sqrt(squares) / sqrt((double)r->padded);
        for (int i = 0; i < r->padded; i++) r->we[k][i] = x[k][i] - s[k] * sign1(x[k][i]);
    }
    for (int j = 0; j < r->world; j++) {
        double y[MAX_PADDED], squares = 0;
        for (int i = j * r->chunk; i < (j + 1) * r->chunk; i++) {
            y[i] = r->se[i];
            for (int k = 0; k < r->world; k++) y[i] += s[k] / r->world * sign1(x[k][i]);
            squares += y[i] * y[i];
        }
        double server = sqrt(squares) / sqrt((double)r->chunk);
        for (int i = j * r->chunk; i < (j + 1) * r->chunk; i++) {
            double q = server * sign1(y[i]);
            r->se[i] = y[i] - q;
            if (i < N) r->m[i] = q;
        }
    }
    for (int i = 0; i < N; i++) r->p[i] -= lr * (r->m[i] / (sqrt(r->v[i]) + EPS) + (i < SPLIT ? WD : 0.0) * r->p[i]);
}

static int rank_main(int rank, int world, int port)
{
    alarm(60);
    test_gloo ranks;
    if (!test_gloo_open(&ranks, rank, world, port)) return 1;
    loom_comm *comm = ranks.comm;
    const loom_comm_vtable *cv = ranks.cv;

    static const char *const kv[] = {"beta1", "0.85", "eps", "1e-6", "freeze_step", "0", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "onebit_adam", kv) == LOOM_OK);
    reference r = {.world = world};
    int unit = world * (world == 3 ? 24 : 8);
    r.padded = (N + unit - 1) / unit * unit;
    r.chunk = r.padded / world;
    float p[N], g[N], state[3 * N] = {0};
    for (int i = 0; i < N; i++) {
        r.p[i] = p[i] = optim_test_param(i);
        state[N + i] = (float)initial_v(i);
        r.v[i] = state[N + i]; /* the reference starts from the same rounded v */
    }
    float *st_a[3] = {state, state + N, state + 2 * N},
          *st_b[3] = {state + SPLIT, state + N + SPLIT, state + 2 * N + SPLIT};
    loom_span spans[2] = {optim_span("w", p, g, st_a, 3, SPLIT, WD),
                          optim_span("b", p + SPLIT, g + SPLIT, st_b, 3, N - SPLIT, 0.0)};
    const double lr[3] = {1e-2, 5e-3, 2e-3};
    for (int t = 1; f.opt && t <= 3; t++) {
        for (int i = 0; i < N; i++) g[i] = local_grad(rank, i, t);
        loom_optimizer_step step = optim_step_args(t, lr[t - 1], 1.0, NAN);
        step.comm = comm;
        step.comm_vtable = cv;
        step.rank = rank;
        step.world_size = world;
        loom_status st = f.vt->step(f.opt, spans, 2, &step);
        CHECK(st == LOOM_OK);
        if (st) {
            fprintf(stderr, "[rank %d] step %d: %s\n", rank, t, loom_error_message());
            break;
        }
        reference_step(&r, t, lr[t - 1]);
        for (int i = 0; i < N; i++) {
            CHECK_CLOSE(state[i], r.m[i], 1e-7, 1e-5);
            CHECK(state[N + i] == (float)r.v[i]); /* frozen */
            CHECK_CLOSE(state[2 * N + i], r.we[rank][i], 1e-7, 1e-5);
            CHECK_CLOSE(p[i], r.p[i], 1e-6, 1e-5);
        }
    }
    /* Every rank holds the same parameters: compare the bits through the communicator. */
    float gathered[MAX_WORLD * N];
    CHECK(cv->all_gather(comm, p, gathered, N, LOOM_DTYPE_F32, NULL) == LOOM_OK);
    for (int k = 1; k < world; k++) CHECK(memcmp(gathered, gathered + k * N, sizeof p) == 0);

    optim_close(&f);
    test_gloo_close(&ranks);
    return test_failures ? 1 : 0;
}


int main(void)
{
    alarm(120);
    if (loom_loader_init(NULL, 0) != LOOM_OK) {
        fprintf(stderr, "loader: %s\n", loom_error_message());
        return 1;
    }
    /* fork before this process starts any thread of its own */
    CHECK(test_run_ranks("onebit_adam", 2, rank_main));
    CHECK(test_run_ranks("onebit_adam", 3, rank_main));
    return test_finish("test_onebit_adam_ranks");
}
