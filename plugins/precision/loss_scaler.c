/* loss_scaler.c - see loss_scaler.h. */
#include "loss_scaler.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void config_base(loss_scaler_config *c, int kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->init_scale = 1.0;
    c->min_scale = 1.0;
    c->window = 1;
    c->hysteresis = 1;
    c->growth_factor = 2.0;
    c->backoff_factor = 0.5;
    c->growth_interval = 1;
    c->max_scale = INFINITY;
    c->max_overflow_at_min = LS_DEFAULT_MAX_OVERFLOW_AT_MIN;
}

void ls_config_none(loss_scaler_config *c)
{
    config_base(c, LS_NONE);
}

void ls_config_static(loss_scaler_config *c, double scale)
{
    config_base(c, LS_STATIC);
    c->init_scale = scale;
    c->min_scale = scale;
}

void ls_config_deepspeed(loss_scaler_config *c)
{
    config_base(c, LS_DEEPSPEED);
    c->init_scale = 65536.0;
    c->window = 1000;
    c->hysteresis = 2;
    c->min_scale = 1.0;
}

void ls_config_deepspeed_v0310_no_dynamic_keys(loss_scaler_config *c)
{
    ls_config_deepspeed(c);
    c->init_scale = 4294967296.0; /* 2^32 */
    c->hysteresis = 1;
}

void ls_config_torch(loss_scaler_config *c)
{
    config_base(c, LS_GROWTH);
    c->init_scale = 65536.0;
    c->min_scale = LS_DEFAULT_FLOOR;
    c->growth_interval = 2000;
    c->fp32_scale = 1; /* GradScaler keeps _scale in a float32 tensor */
}

void ls_config_apex(loss_scaler_config *c)
{
    config_base(c, LS_GROWTH);
    c->init_scale = 65536.0;
    c->min_scale = LS_DEFAULT_FLOOR;
    c->growth_interval = 2000;
    c->max_scale = 16777216.0; /* 2^24 */
}

static int positive_finite(double x)
{
    return x > 0 && isfinite(x);
}

const char *ls_config_error(const loss_scaler_config *c)
{
    if (c->max_overflow_at_min < 0) return "max_overflow_at_min_scale must be >= 0 (0 disables the stop rule)";
    switch (c->kind) {
    case LS_NONE:
        return NULL;
    case LS_STATIC:
        return positive_finite(c->init_scale) ? NULL : "a static loss scale must be finite and > 0";
    case LS_DEEPSPEED:
        if (!positive_finite(c->init_scale)) return "the initial loss scale must be finite and > 0";
        if (!positive_finite(c->min_scale))
            return "min_loss_scale must be finite and > 0 (at 0 the scale could reach 0, where every gradient is 0 "
                   "and the scale never grows back)";
        if (c->window < 1) return "loss_scale_window must be >= 1";
        if (c->hysteresis < 1) return "hysteresis must be >= 1 (1: halve at the first overflow)";
        return NULL;
    case LS_GROWTH:
        if (!positive_finite(c->init_scale)) return "the initial loss scale must be finite and > 0";
        if (!positive_finite(c->min_scale)) return "the minimum loss scale must be finite and > 0";
        if (!(c->growth_factor > 1.0) || !isfinite(c->growth_factor)) return "growth_factor must be finite and > 1";
        if (!(c->backoff_factor > 0.0 && c->backoff_factor < 1.0)) return "backoff_factor must be in (0, 1)";
        if (c->growth_interval < 1) return "growth_interval must be >= 1";
        if (!(c->max_scale >= c->min_scale)) return "the maximum loss scale is below the minimum";
        return NULL;
    default:
        return "unknown loss-scaler kind";
    }
}

/* GradScaler's scale lives in a float32 tensor: every change is rounded to fp32 there. */
static double stored(const loss_scaler *s, double x)
{
    return s->cfg.fp32_scale ? (double)(float)x : x;
}

void ls_init(loss_scaler *s, const loss_scaler_config *c)
{
    memset(s, 0, sizeof *s);
    s->cfg = *c;
    s->last_overflow = -1;
    switch (c->kind) {
    case LS_NONE:
        s->scale = 1.0;
        break;
    case LS_DEEPSPEED:
        s->scale = c->init_scale;
        s->hysteresis_left = c->hysteresis;
        break;
    case LS_GROWTH: /* apex starts at min(max, init) */
        s->scale = fmin(stored(s, c->init_scale), c->max_scale);
        break;
    default:
        s->scale = c->init_scale;
        break;
    }
}

double ls_scale(const loss_scaler *s)
{
    return s->scale;
}

int ls_at_min(const loss_scaler *s)
{
    switch (s->cfg.kind) {
    case LS_DEEPSPEED:
    case LS_GROWTH:
        return s->scale <= s->cfg.min_scale;
    default:
        return 1; /* a scale that never moves is its own minimum */
    }
}

/* DynamicLossScaler.update_scale, ZeRO path (docs/semantics/precision.md#deepspeed-loss-scaler), line for line. */
static void update_deepspeed(loss_scaler *s, int overflow)
{
    const loss_scaler_config *c = &s->cfg;
    if (overflow) {
        if (c->hysteresis == 1 || s->hysteresis_left <= 1)
            s->scale = fmax(s->scale / 2.0, c->min_scale);
        else
            s->hysteresis_left--;
        s->last_overflow = s->iteration;
        s->growth_tracker = 0;
        return;
    }
    if (c->consecutive_hysteresis) s->hysteresis_left = c->hysteresis;
    if ((s->iteration - s->last_overflow) % c->window == 0) {
        if (!c->consecutive_hysteresis) s->hysteresis_left = c->hysteresis;
        s->scale *= 2.0;
        s->growth_tracker = 0;
    } else {
        s->growth_tracker++;
    }
}

/* GradScaler.update (_amp_update_scale) and apex LossScaler.update_scale. */
static void update_growth(loss_scaler *s, int overflow)
{
    const loss_scaler_config *c = &s->cfg;
    if (overflow) {
        s->scale = fmax(stored(s, s->scale * c->backoff_factor), c->min_scale);
        s->growth_tracker = 0;
        s->last_overflow = s->iteration;
        return;
    }
    int64_t successful = s->growth_tracker + 1;
    if (successful == c->growth_interval) {
        double grown = stored(s, s->scale * c->growth_factor);
        if (isfinite(grown)) s->scale = fmin(grown, c->max_scale);
        s->growth_tracker = 0; /* reset even when growth was refused, as torch does */
    } else {
        s->growth_tracker = successful;
    }
}

loom_status ls_update(loss_scaler *s, int overflow)
{
    int at_min = ls_at_min(s);
    switch (s->cfg.kind) {
    case LS_DEEPSPEED:
        update_deepspeed(s, overflow);
        break;
    case LS_GROWTH:
        update_growth(s, overflow);
        break;
    default:
        if (overflow) {
            s->last_overflow = s->iteration;
            s->growth_tracker = 0;
        } else {
            s->growth_tracker++;
        }
        break;
    }
    s->iteration++;
    s->overflows_at_min = overflow && at_min ? s->overflows_at_min + 1 : 0;
    if (s->cfg.max_overflow_at_min > 0 && s->overflows_at_min >= s->cfg.max_overflow_at_min) return LOOM_E_STOP;
    return LOOM_OK;
}

void ls_stop_message(const loss_scaler *s, char *buf, size_t size)
{
    long long n = (long long)s->overflows_at_min;
    switch (s->cfg.kind) {
    case LS_NONE:
        snprintf(buf, size,
                 "gradients inf/NaN for %lld consecutive steps with no loss scale to lower: training cannot go on "
                 "(lower the learning rate, check the data)",
                 n);
        break;
    case LS_STATIC:
        snprintf(buf, size,
                 "static loss scale %g overflowed on %lld consecutive steps: training cannot go on (use a smaller "
                 "or dynamic loss scale, lower the learning rate, check the data)",
                 s->scale, n);
        break;
    default:
        snprintf(buf, size,
                 "loss scale stuck at minimum %g after %lld consecutive overflows: gradients are inf/NaN at every "
                 "scale, training cannot go on (lower the learning rate, check the data)",
                 s->scale, n);
        break;
    }
}

void ls_get_state(const loss_scaler *s, loom_precision_state *out)
{
    out->loss_scale = s->scale;
    out->iteration = s->iteration;
    out->last_overflow = s->last_overflow;
    out->growth_tracker = s->growth_tracker;
    out->hysteresis_left = s->hysteresis_left;
}

const char *ls_set_state(loss_scaler *s, const loom_precision_state *in)
{
    if (s->cfg.kind != LS_NONE && !positive_finite(in->loss_scale)) return "loss_scale must be finite and > 0";
    if (in->iteration < 0) return "iteration must be >= 0";
    if (in->last_overflow < -1 || in->last_overflow >= in->iteration)
        return "last_overflow must be -1 or an earlier iteration";
    if (in->growth_tracker < 0) return "growth_tracker must be >= 0";
    if (in->hysteresis_left < (s->cfg.kind == LS_DEEPSPEED ? 1 : 0))
        return "hysteresis_left must be >= 1 for the DeepSpeed scaler (>= 0 otherwise)";
    if (s->cfg.kind != LS_NONE) s->scale = in->loss_scale;
    s->iteration = in->iteration;
    s->last_overflow = in->last_overflow;
    s->growth_tracker = in->growth_tracker;
    s->hysteresis_left = in->hysteresis_left;
    s->overflows_at_min = 0;
    return NULL;
}
