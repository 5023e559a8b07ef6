/*
 * optim_harness.h - load an optimizer plugin the way the trainer does (core loader, config
 * from the plugin's spec, a real host) and drive it on hand-built spans.
 */
#ifndef LOOM_TESTS_OPTIM_HARNESS_H
#define LOOM_TESTS_OPTIM_HARNESS_H

#include <loom/optimizer.h>

#include "plugin_config.h"
#include "plugin_loader.h"

typedef struct optim_fixture {
    const loom_plugin *plugin;
    const loom_optimizer_vtable *vt;
    loom_host *host;
    loom_config *config;
    loom_optimizer *opt;
} optim_fixture;

/* Load `name`, set the config pairs kv[0]=kv[1], kv[2]=kv[3], ... (kv NULL-terminated, may be
 * NULL) and create an instance. Returns the first failing status, with the error printed. */
loom_status optim_open(optim_fixture *f, const char *name, const char *const *kv);
void optim_close(optim_fixture *f);

/* A span over caller-owned arrays; state[k] for k < slots, the rest NULL. */
loom_span optim_span(const char *name, float *param, const float *grad, float *const *state,
                     uint32_t slots, int64_t numel, double weight_decay);

loom_optimizer_step optim_step_args(int64_t t, double lr, double grad_scale, double momentum);

/* 1 when get_hparam(key) gives exactly `want` and an unknown name answers LOOM_E_NOT_FOUND;
 * 0 otherwise, with the difference printed. (A CHECK here would count in this file's tally,
 * not the test's: test_util.h keeps one per translation unit.) */
int optim_hparam_is(const optim_fixture *f, const char *key, double want);

/* One element of the rule in double precision, written in the test from docs/semantics/optimizers.md:
 * update *p and state[0..slots) given the already scaled gradient g and the span's decay wd. */
typedef void (*optim_ref_fn)(const void *hparams, const loom_optimizer_step *step, double wd,
                             double g, double *p, double *state);

/* Two spans in one flat buffer, as the host lays them out: "w" (n_decay elements, weight
 * decay wd) then "b" (n_nodecay elements, decay 0). Each step of steps[] runs through the
 * plugin and, element by element, through ref; param and every state slot are compared after
 * every step with |got - want| <= atol + rtol*|want|. Gradients and initial params are fixed
 * functions of the element and step. span_pad > 0 lays the span array out with that many
 * extra bytes per entry (struct_size grows), as a newer host would.
 * Returns the number of mismatches (each printed), or -1 if a call failed. */
typedef struct optim_compare_args {
    optim_ref_fn ref;
    const void *hparams;
    const loom_optimizer_step *steps;
    size_t n_steps;
    int64_t n_decay, n_nodecay;
    double wd;
    double rtol, atol;
    size_t span_pad;
} optim_compare_args;
int optim_compare(const optim_fixture *f, const optim_compare_args *a);

/* Three steps of `name` (config pairs kv as optim_open) over 41 spans of mixed sizes, empty
 * ones (with NULL arrays) among them, about 2^17 elements in all, run with 1, 2, 3 and 7
 * threads, then with the host's CPU kernel table in the step (ABI 1.5 step.kernels) and with
 * that table cut to its ABI 1.4 size. Returns 1 when every run leaves param and state with the
 * very bits of the one-thread run (and the parameters moved), 0 otherwise with the first
 * difference printed. */
int optim_threads_agree(const char *name, const char *const *kv);

/* The gradient fed at element i of step t by optim_compare (also usable for hand checks). */
float optim_test_grad(int64_t i, int64_t t);
float optim_test_param(int64_t i);

#endif
