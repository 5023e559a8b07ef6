/*
 * test_onebit_adam.c - the onebit_adam plugin (DeepSpeed's 1-bit Adam, docs/semantics/optimizers.md#onebit-adam),
 * loaded through the core loader: the warm-up against Adam without bias correction in double precision,
 * and the compressed stage on one rank (the "local" communicator: worker compression, then
 * server compression of the one chunk) against a hand transcription of CompressedAllreduce,
 * padding and error feedback included.
 */
#include "error.h"
#include "host.h"
#include "optim_harness.h"
#include "test_util.h"

#include <loom/comm.h>
#include <string.h>

typedef struct onebit_hp {
    double beta1, beta2, eps;
} onebit_hp;

/* Warm-up, one element: Adam on the (reduced) gradient WITHOUT bias correction, decay added to
 * the update. state[2] (worker_error) is not touched. */
static void ref_warmup(const void *hparams, const loom_optimizer_step *step, double wd, double g, double *p,
                       double *state)
{
    const onebit_hp *hp = hparams;
    double b1 = isnan(step->momentum) ? hp->beta1 : step->momentum;
    state[0] = b1 * state[0] + (1 - b1) * g;
    state[1] = hp->beta2 * state[1] + (1 - hp->beta2) * g * g;
    *p -= step->lr * (state[0] / (sqrt(state[1]) + hp->eps) + wd * *p);
}

static void test_descriptor_and_warmup(void)
{
    static const char *const kv[] = {"beta1", "0.85", "beta2", "0.98", "eps", "1e-7", "weight_decay", "0.2",
                                     "freeze_step", "3", NULL};
    optim_fixture f;
    CHECK(optim_open(&f, "onebit_adam", kv) == LOOM_OK);
    if (!f.opt) return;
    CHECK(f.vt->state_slots == 3);
    CHECK(f.vt->state_names && !strcmp(f.vt->state_names[0], "exp_avg") &&
          !strcmp(f.vt->state_names[1], "exp_avg_sq") && !strcmp(f.vt->state_names[2], "worker_error"));
    CHECK(LOOM_HAS(f.vt, loom_optimizer_vtable, local_gradients));
    /* Exactly freeze_step warm-up updates: steps 1..3 reduced, step 4 on compresses. */
    CHECK(f.vt->local_gradients(f.opt, 1) == 0 && f.vt->local_gradients(f.opt, 3) == 0);
    CHECK(f.vt->local_gradients(f.opt, 4) == 1 && f.vt->local_gradients(f.opt, 1000) == 1);
    CHECK(optim_hparam_is(&f, "beta1", 0.85));
    CHECK(optim_hparam_is(&f, "weight_decay", 0.2));
    CHECK(optim_hparam_is(&f, "freeze_step", 3));
    onebit_hp hp = {0.85, 0.98, 1e-7};
    loom_optimizer_step steps[3] = {
        optim_step_args(1, 1e-2, 1.0, NAN),
        optim_step_args(2, 3e-2, 0.4, 0.7),
        optim_step_args(3, 1e-2, 1.0, NAN),
    };
    optim_compare_args a = {
        .ref = ref_warmup, .hparams = &hp, .steps = steps, .n_steps = 3,
        .n_decay = 17, .n_nodecay = 3, .wd = 0.05, .rtol = 2e-5, .atol = 2e-6,
    };
    CHECK(optim_compare(&f, &a) == 0);
    optim_close(&f);
}

/* ---- the compressed stage on one rank ---------------------------------------------------- */

#define N 13      /* elements: two spans of 7 and 6 */
#define PADDED 16 /* DeepSpeed pads to a multiple of W * lcm(W, 8) = 8 for W = 1 */

typedef struct ref_compress {
    double we[PADDED]; /* worker error, padding included */
    double se[PADDED]; /* server error: the one chunk is the whole padded vector */
} ref_compress;

static double sign1(double x)
{
    return x >= 0 ? 1.0 : -1.0; /* sign 0 counts as +1 */
}

/* CompressedAllreduce of m over one rank, by the formulas of docs/semantics/optimizers.md#onebit-adam. */
static void ref_compressed_allreduce(ref_compress *r, double *m)
{
    double x[PADDED], squares = 0;
    for (int i = 0; i < PADDED; i++) {
        x[i] = (i < N ? m[i] : 0.0) + r->we[i];
        squares += x[i] * x[i];
    }
    double s = sqrt(squares) / sqrt((double)PADDED);
    double y[PADDED], server_squares = 0;
    for (int i = 0; i < PADDED; i++) {
        double q = s * sign1(x[i]);
        r->we[i] = x[i] - q;
        y[i] = q / 1.0 + r->se[i]; /* the mean over the one rank */
        server_squares += y[i] * y[i];
    }
    double s2 = sqrt(server_squares) / sqrt((double)PADDED);
    for (int i = 0; i < PADDED; i++) {
        double q = s2 * sign1(y[i]);
        r->se[i] = y[i] - q;
        if (i < N) m[i] = q;
    }
}

typedef struct one_rank_comm {
    const loom_plugin *plugin;
    const loom_comm_vtable *cv;
    loom_host *host;
    loom_config *config;
    loom_comm *comm;
} one_rank_comm;

static int open_local_comm(one_rank_comm *c)
{
    memset(c, 0, sizeof *c);
    if (loom_plugin_load("local", LOOM_KIND_COMM, &c->plugin) != LOOM_OK) {
        fprintf(stderr, "loading local: %s\n", loom_error_message());
        return 0;
    }
    c->cv = c->plugin->desc->vtable;
    c->host = loom_host_create("local");
    c->config = loom_config_from_spec(c->plugin->desc);
    loom_comm_setup setup = {LOOM_HEADER_INIT(loom_comm_setup), .rank = 0, .world_size = 1, .local_rank = 0,
                             .local_world_size = 1, .device = LOOM_DEVICE_CPU, .timeout_seconds = 10.0};
    if (c->cv->create(c->host, loom_host_api_table(), c->config, &setup, &c->comm) != LOOM_OK) {
        fprintf(stderr, "local comm: %s\n", loom_error_message());
        return 0;
    }
    return 1;
}

static void close_local_comm(one_rank_comm *c)
{
    if (c->comm) c->cv->destroy(c->comm);
    loom_config_free(c->config);
    if (c->host) loom_host_destroy(c->host);
}

static void test_compression_one_rank(void)
{
    static const char *const kv[] = {"beta1", "0.8", "beta2", "0.9", "eps", "1e-6", "freeze_step", "1", NULL};
    optim_fixture f;
    one_rank_comm c;
    CHECK(optim_open(&f, "onebit_adam", kv) == LOOM_OK);
    CHECK(open_local_comm(&c));
    if (!f.opt || !c.comm) return;
    const double b1 = 0.8, b2 = 0.9, eps = 1e-6, wd = 0.03;
    float p[N], g[N], state[3 * N] = {0};
    double rp[N], rm[N] = {0}, rv[N] = {0};
    ref_compress r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < N; i++) rp[i] = p[i] = optim_test_param(i);
    /* Two spans, state slots laid out as the host does: slot k is one array over both. */
    float *st_w[3] = {state, state + N, state + 2 * N}, *st_b[3] = {state + 7, state + N + 7, state + 2 * N + 7};
    loom_span spans[2] = {optim_span("w", p, g, st_w, 3, 7, wd), optim_span("b", p + 7, g + 7, st_b, 3, 6, 0.0)};
    const double lr[3] = {1e-2, 2e-2, 5e-3}, clip[3] = {1.0, 0.5, 1.0};
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < N; i++) g[i] = optim_test_grad(i, t);
        loom_optimizer_step step = optim_step_args(t, lr[t - 1], clip[t - 1], NAN);
        step.comm = c.comm;
        step.comm_vtable = c.cv;
        step.rank = 0;
        step.world_size = 1;
        loom_status st = f.vt->step(f.opt, spans, 2, &step);
        CHECK(st == LOOM_OK);
        if (st) {
            fprintf(stderr, "step %d: %s\n", t, loom_error_message());
            break;
        }
        /* Reference: step 1 warms up, steps 2 and 3 compress (freeze_step 1). */
        for (int i = 0; i < N; i++) {
            double gi = (double)g[i] * clip[t - 1] * 1.0; /* times W = 1 in the compressed stage */
            rm[i] = b1 * rm[i] + (1 - b1) * gi;
            if (t == 1) rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
        }
        if (t > 1) ref_compressed_allreduce(&r, rm);
        for (int i = 0; i < N; i++) rp[i] -= lr[t - 1] * (rm[i] / (sqrt(rv[i]) + eps) + (i < 7 ? wd : 0.0) * rp[i]);
        for (int i = 0; i < N; i++) {
            CHECK_CLOSE(state[i], rm[i], 1e-7, 1e-5);
            CHECK_CLOSE(state[N + i], rv[i], 1e-9, 1e-5);
            CHECK_CLOSE(state[2 * N + i], r.we[i], 1e-7, 1e-5);
            CHECK_CLOSE(p[i], rp[i], 1e-6, 1e-5);
        }
        if (t > 1) {
            /* After compression m takes one magnitude, the server's scale, with the signs. */
            for (int i = 1; i < N; i++) CHECK_CLOSE(fabs(state[i]), fabs(state[0]), 0, 1e-6);
        }
    }
    /* The padding's error feedback is real: on the first compressed step its x was 0 (sign +1),
     * so its error is -s, which changed the second step's norm; the comparison above saw it. */
    CHECK(r.we[N] < 0 && r.we[PADDED - 1] == r.we[N]);

    /* A state layout the flat vector cannot use is refused, naming the slot. */
    float other[6] = {0};
    spans[1].state[2] = other;
    loom_optimizer_step step = optim_step_args(4, 1e-2, 1.0, NAN);
    step.comm = c.comm;
    step.comm_vtable = c.cv;
    step.world_size = 1;
    loom_error_clear();
    CHECK(f.vt->step(f.opt, spans, 2, &step) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "worker_error") != NULL);
    /* Compressing without a communicator (an ABI 1.0 host) is refused too. */
    spans[1].state[2] = st_b[2];
    step.comm = NULL;
    CHECK(f.vt->step(f.opt, spans, 2, &step) == LOOM_E_ABI);
    close_local_comm(&c);
    optim_close(&f);
}

static void test_rejections(void)
{
    optim_fixture f;
    static const char *const bad_freeze[] = {"freeze_step", "-1", NULL};
    CHECK(optim_open(&f, "onebit_adam", bad_freeze) == LOOM_E_INVALID);
    optim_close(&f);
    static const char *const bad_beta[] = {"beta2", "1.0", NULL};
    CHECK(optim_open(&f, "onebit_adam", bad_beta) == LOOM_E_INVALID);
    optim_close(&f);
}

int main(void)
{
    test_descriptor_and_warmup();
    test_compression_one_rank();
    test_rejections();
    return test_finish("test_onebit_adam");
}
