/*
 * scheduler.h - the learning rate (and momentum) of each step (LOOM_KIND_SCHEDULER).
 *
 * A scheduler is a pure function of the scheduler step count t (0 before the first optimizer
 * step, +1 after every step actually taken; skipped fp16 steps do not advance it). The host
 * keeps t, saves it in checkpoints and asks for value(t): nothing else needs saving, so a
 * resumed run gets exactly the values an uninterrupted run would. HF's schedules are LambdaLR
 * multipliers of the base learning rate; DeepSpeed's give the learning rate directly; both
 * fit: value() returns the learning rate itself.
 *
 * Since 1.11 a scheduler may also follow the evaluation metric (observe, HF's
 * reduce_lr_on_plateau): value() is then a function of t and of the metrics observed so far,
 * and save_state / load_state carry what it has accumulated across a resume.
 */
#ifndef LOOM_SCHEDULER_H
#define LOOM_SCHEDULER_H

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the trainer knows when the scheduler is created. Built by the host; borrowed during
 * create() (copy what you keep). Every member Required, since 1.0. */
typedef struct loom_schedule_setup {
    LOOM_STRUCT_HEADER;
    double base_lr;        /* --learning_rate                                                */
    int64_t total_steps;   /* optimizer steps of the whole run (max_steps or derived)        */
    int64_t warmup_steps;  /* resolved: --warmup_steps if > 0, else ceil(ratio * total)      */

    /* ABI 1.13+: append below. */
} loom_schedule_setup;

/* The values for one step. Written by the plugin into the host's struct. Both members
 * Required, since 1.0. */
typedef struct loom_schedule_value {
    LOOM_STRUCT_HEADER;
    double lr;             /* learning rate for the step                                     */
    double momentum;       /* momentum / beta1 for the step; NaN when the schedule has none  */

    /* ABI 1.13+: append below. */
} loom_schedule_value;

typedef struct loom_scheduler loom_scheduler; /* plugin-private instance */

/* Filled by the plugin (static storage, never freed). Every member since 1.0. */
typedef struct loom_scheduler_vtable {
    LOOM_STRUCT_HEADER;
    /* Required. Create from the config section (e.g. num_cycles, power, lr_end) and the
     * setup, both borrowed for the call. *out is owned by the host until destroy(); on
     * failure *out stays NULL and api->fail says why. Init thread only. */
    loom_status (*create)(loom_host *host, const loom_host_api *api, const loom_config *config,
                          const loom_schedule_setup *setup, loom_scheduler **out);
    /* Required. NULL is a no-op. Init thread only. */
    void (*destroy)(loom_scheduler *self);
    /* Required. The values at scheduler step t >= 0. out->struct_size is set by the host; the
     * plugin writes lr and momentum only. Pure: the same t gives the same values (with observe,
     * the same t and the same metrics observed before). MT-safe. */
    loom_status (*value)(const loom_scheduler *self, int64_t t, loom_schedule_value *out);

    /* ---- ABI 1.11 ---- */
    /* Optional, since 1.11 (NULL: the schedule ignores the evaluation). After each evaluation
     * during training (not the one --eval_on_start asks for, as HF skips it), the value of
     * --metric_for_best_model (eval_loss when unset), in order, on every rank with the same
     * value. value() then answers for the steps after it. A NaN metric is passed on as it is.
     * Training thread only, never concurrently with value(). */
    loom_status (*observe)(loom_scheduler *self, double metric);
    /* Optional, since 1.11 (NULL: nothing but t to keep; set both or neither). What observe
     * accumulated, as the text of a JSON object that scheduler.json keeps under "state". The
     * text is owned by the instance and valid until the next call on it or destroy. Called on
     * the process that writes the checkpoint, at each checkpoint. Training thread only. */
    loom_status (*save_state)(loom_scheduler *self, const char **json);
    /* Optional, since 1.11 (NULL: nothing is restored). On resume, the object save_state wrote,
     * borrowed for the call; called after create and before the first value(), on every rank.
     * A checkpoint without one (written by another scheduler) is refused by the host. Members it
     * does not know are ignored; a value it cannot use is LOOM_E_FORMAT through api->fail.
     * Training thread only. */
    loom_status (*load_state)(loom_scheduler *self, const char *json);

    /* ABI 1.13+: append below. */
} loom_scheduler_vtable;

#if UINTPTR_MAX == 0xffffffffffffffffu
LOOM_STATIC_ASSERT(sizeof(loom_schedule_setup) == 40, "loom_schedule_setup layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_schedule_value) == 32, "loom_schedule_value layout changed");
LOOM_STATIC_ASSERT(offsetof(loom_scheduler_vtable, value) == 32, "scheduler vtable layout changed");
LOOM_STATIC_ASSERT(sizeof(loom_scheduler_vtable) == 64, "scheduler vtable layout changed");
#endif

#ifdef __cplusplus
}
#endif
#endif /* LOOM_SCHEDULER_H */
