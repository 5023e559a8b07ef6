/*
 * loss_scaler.h - the loss scale and what an overflow does to it, as plain C with no host
 * calls, so the rules can be tested step by step (tests/precision/test_loss_scaler.c).
 *
 * Four rules (docs/semantics/precision.md):
 *   LS_NONE       no scaling: the scale is 1.0 for ever (bf16, apex O0/O3).
 *   LS_STATIC     a fixed scale (DeepSpeed loss_scale > 0, apex loss_scale=<number>).
 *   LS_DEEPSPEED  DeepSpeed v0.3.10 DynamicLossScaler, the ZeRO path: hysteresis (delayed
 *                 shift), window growth on (cur_iter - last_overflow_iter) % window == 0,
 *                 optional consecutive_hysteresis, a minimum scale. No maximum.
 *   LS_GROWTH     backoff/growth-interval: torch.cuda.amp.GradScaler (scale stored as fp32,
 *                 growth refused when the fp32 result is not finite) and apex's LossScaler
 *                 (scale a Python float, clamped to max_scale), which is the same rule.
 * Every rule skips the step on overflow (the host does that); only the scale update differs.
 *
 * Stop rule (all four): an overflow on a step whose scale was already the minimum cannot be
 * answered by a smaller scale. After max_overflow_at_min such overflows in a row, ls_update()
 * returns LOOM_E_STOP; any clean step resets the count. A static scale, and no scaling, are
 * their own minimum. The count is not part of the checkpointed state: a resumed run gets a
 * fresh count.
 */
#ifndef LOOM_PLUGINS_LOSS_SCALER_H
#define LOOM_PLUGINS_LOSS_SCALER_H

#include <stddef.h>
#include <stdint.h>

#include <loom/precision.h>

#define LS_NONE 0
#define LS_STATIC 1
#define LS_DEEPSPEED 2
#define LS_GROWTH 3

/* 2^-24, the smallest fp16 subnormal: the floor of rules that have no minimum of their own
 * (GradScaler; apex with min_loss_scale None). Below it a loss of order 1 times the scale
 * rounds to zero in fp16, so every gradient is zero and nothing trains; reaching it from
 * 2^16 takes 40 halvings, far past any transient burst of overflows. */
#define LS_DEFAULT_FLOOR 5.9604644775390625e-08

/* Ten consecutive overflows at the minimum: transient spikes give one or two in a row (a
 * bad batch, the first steps after warm-up), while at the minimum each further overflow is a
 * wasted step that a smaller scale cannot fix, so ten is far from normal and cheap to wait
 * for. 0 disables the rule. */
#define LS_DEFAULT_MAX_OVERFLOW_AT_MIN 10

typedef struct loss_scaler_config {
    int kind;          /* LS_*                                                   */
    double init_scale; /* STATIC: the scale; DEEPSPEED/GROWTH: the first scale    */
    double min_scale;  /* DEEPSPEED: min_loss_scale; GROWTH: floor (> 0)          */
    /* LS_DEEPSPEED */
    int64_t window;             /* loss_scale_window (>= 1)                                */
    int64_t hysteresis;         /* delayed_shift (>= 1; 1 = none)                          */
    int consecutive_hysteresis; /* refill the hysteresis on every clean step               */
    /* LS_GROWTH */
    double growth_factor;    /* > 1                                                     */
    double backoff_factor;   /* in (0, 1)                                               */
    int64_t growth_interval; /* clean steps before a growth (>= 1)                      */
    double max_scale;        /* apex: 2^24; GradScaler: INFINITY                        */
    int fp32_scale;          /* 1: round the scale to fp32 after each change (torch)    */
    /* all */
    int64_t max_overflow_at_min; /* stop rule; 0 disables                                   */
} loss_scaler_config;

typedef struct loss_scaler {
    loss_scaler_config cfg;
    double scale;
    int64_t iteration;        /* update calls so far (DeepSpeed's cur_iter)                 */
    int64_t last_overflow;    /* iteration of the last overflow, -1 if none                 */
    int64_t growth_tracker;   /* clean steps since the last overflow or growth              */
    int64_t hysteresis_left;  /* DeepSpeed's cur_hysteresis (the configured one otherwise)  */
    int64_t overflows_at_min; /* consecutive overflows attempted at the minimum            */
} loss_scaler;

/* Configurations with every value at its reference default. */
void ls_config_none(loss_scaler_config *c);
void ls_config_static(loss_scaler_config *c, double scale);
/* DeepSpeed's documented ds_config defaults: 2^16, window 1000, hysteresis 2, min 1. */
void ls_config_deepspeed(loss_scaler_config *c);
/* DeepSpeed v0.3.10 when the fp16 section names none of initial_scale_power,
 * loss_scale_window, hysteresis, min_loss_scale: ZeRO builds DynamicLossScaler() with its
 * constructor defaults, 2^32 and delayed_shift 1 (no hysteresis), not the documented ones. */
void ls_config_deepspeed_v0310_no_dynamic_keys(loss_scaler_config *c);
/* torch.cuda.amp.GradScaler(): 2^16, growth 2, backoff 0.5, interval 2000, floor 2^-24. */
void ls_config_torch(loss_scaler_config *c);
/* apex amp LossScaler("dynamic"): 2^16, factor 2, window 2000, min None (floor 2^-24),
 * max 2^24. */
void ls_config_apex(loss_scaler_config *c);

/* NULL if the configuration is usable, else what is wrong (static text). */
const char *ls_config_error(const loss_scaler_config *c);

/* Start at the configured scale with a fresh history. c must pass ls_config_error. */
void ls_init(loss_scaler *s, const loss_scaler_config *c);

/* The scale the next backward multiplies the loss by. */
double ls_scale(const loss_scaler *s);

/* 1 when an overflow at this scale could not be answered by a smaller scale. */
int ls_at_min(const loss_scaler *s);

/* One optimizer step's global decision (overflow: the step is skipped). Returns LOOM_OK, or
 * LOOM_E_STOP when the stop rule fires (the state is updated either way). */
loom_status ls_update(loss_scaler *s, int overflow);

/* One line for the stop, e.g. "loss scale stuck at minimum 1 after 10 consecutive
 * overflows: ...". */
void ls_stop_message(const loss_scaler *s, char *buf, size_t size);

/* Checkpoint fields (loom_precision_state). set returns NULL, or what is wrong with the
 * state (static text), leaving s unchanged. For LS_NONE the scale stays 1 whatever the
 * state says; the counters are restored. */
void ls_get_state(const loss_scaler *s, loom_precision_state *out);
const char *ls_set_state(loss_scaler *s, const loom_precision_state *in);

#endif
