/*
 * amp.c - fp16 mixed precision: fp16 parameters, gradients and matrix products, fp32 master
 * weights for the owned ranges, and a dynamic loss scale (docs/semantics/precision.md#deepspeed-loss-scaler,
 * docs/semantics/precision.md#grad-scaler).
 *
 * Two scalers, chosen by `scaler`:
 *   torch      (default) torch.cuda.amp.GradScaler, what HF Trainer's --fp16 uses with the
 *              native amp backend: init_scale 65536, growth_factor 2, backoff_factor 0.5,
 *              growth_interval 2000, no minimum (scale_floor stands in for one, only so the
 *              stop rule can tell "stuck").
 *   deepspeed  DeepSpeed's DynamicLossScaler as ZeRO 1/2 run it, with hysteresis, under the
 *              ds_config "fp16" key names and documented defaults.
 * loss_scale > 0 fixes the scale under either (it never changes; an overflow still skips the
 * step). After max_overflow_at_min_scale consecutive overflows at the minimum scale the run
 * stops (loss_scaler.h).
 */
#include <math.h>
#include <string.h>

#include "mixed_precision.h"

static loom_status amp_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                              loom_precision **out)
{
    const char *scaler = NULL;
    double loss_scale = 0, min_loss_scale = 0, init_scale = 0, scale_floor = 0;
    int64_t power = 0, max_at_min = 0;
    int32_t consecutive = 0;
    loss_scaler_config ds, torch;
    ls_config_deepspeed(&ds);
    ls_config_torch(&torch);
    loom_status st;
    if ((st = loom_cfg_need_str(host, api, config, "scaler", &scaler)) ||
        (st = loom_cfg_need_f64(host, api, config, "loss_scale", &loss_scale)) ||
        (st = loom_cfg_need_i64(host, api, config, "initial_scale_power", &power)) ||
        (st = loom_cfg_need_i64(host, api, config, "loss_scale_window", &ds.window)) ||
        (st = loom_cfg_need_i64(host, api, config, "hysteresis", &ds.hysteresis)) ||
        (st = loom_cfg_need_bool(host, api, config, "consecutive_hysteresis", &consecutive)) ||
        (st = loom_cfg_need_f64(host, api, config, "min_loss_scale", &min_loss_scale)) ||
        (st = loom_cfg_need_f64(host, api, config, "init_scale", &init_scale)) ||
        (st = loom_cfg_need_f64(host, api, config, "growth_factor", &torch.growth_factor)) ||
        (st = loom_cfg_need_f64(host, api, config, "backoff_factor", &torch.backoff_factor)) ||
        (st = loom_cfg_need_i64(host, api, config, "growth_interval", &torch.growth_interval)) ||
        (st = loom_cfg_need_f64(host, api, config, "scale_floor", &scale_floor)) ||
        (st = loom_cfg_need_i64(host, api, config, "max_overflow_at_min_scale", &max_at_min)))
        return st;
    int use_ds = strcmp(scaler, "deepspeed") == 0;
    if (!use_ds && strcmp(scaler, "torch") != 0)
        return api->fail(host, LOOM_E_INVALID, "scaler = '%s': expected 'torch' or 'deepspeed'", scaler);
    if (!(loss_scale >= 0) || !isfinite(loss_scale))
        return api->fail(host, LOOM_E_INVALID, "loss_scale = %g: expected 0 (dynamic) or a finite scale > 0",
                         loss_scale);
    if (power < 0 || power > 127)
        return api->fail(host, LOOM_E_INVALID, "initial_scale_power = %lld: expected 0..127 (2^power must fit a float)",
                         (long long)power);
    if (!(scale_floor > 0) || !isfinite(scale_floor))
        return api->fail(host, LOOM_E_INVALID, "scale_floor = %g: expected a finite value > 0", scale_floor);
    ds.init_scale = ldexp(1.0, (int)power);
    ds.min_scale = min_loss_scale;
    ds.consecutive_hysteresis = consecutive != 0;
    torch.init_scale = init_scale;
    torch.min_scale = scale_floor;

    mp_setup setup = {
        .name = "amp",
        .param_dtype = LOOM_DTYPE_F16,
        .compute_dtype = LOOM_DTYPE_F16,
        .has_master = 1,
        .layout = MW_PERSISTENT,
    };
    if (loss_scale > 0)
        ls_config_static(&setup.scaler, loss_scale);
    else
        setup.scaler = use_ds ? ds : torch;
    setup.scaler.max_overflow_at_min = max_at_min;
    return mp_create(host, api, &setup, out);
}

static const loom_precision_vtable amp_vtable = MP_VTABLE(amp_create);

/* clang-format off */
static const loom_param_spec amp_params[] = {
    {.key = "scaler", .type = LOOM_PARAM_STRING, .default_value = "torch",
     .doc = "dynamic rule: torch (GradScaler, HF --fp16 native amp) or deepspeed (DynamicLossScaler, ZeRO path)"},
    {.key = "loss_scale", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "0: dynamic scaling; > 0: this static scale (either scaler; an overflow still skips the step)"},
    /* DeepSpeed v0.3.10 starts at 2^32 with no hysteresis (DynamicLossScaler()'s own
     * defaults) when ds_config's fp16 names none of the four dynamic keys; the documented
     * default is 16. A host emulating that config passes 32 and hysteresis 1 explicitly. */
    {.key = "initial_scale_power", .type = LOOM_PARAM_INT, .default_value = "16",
     .doc = "scaler=deepspeed: the first scale is 2^power (v0.3.10 without dynamic keys: 32)"},
    {.key = "loss_scale_window", .type = LOOM_PARAM_INT, .default_value = "1000",
     .doc = "scaler=deepspeed: double the scale when (iteration - last overflow) % window == 0"},
    {.key = "hysteresis", .type = LOOM_PARAM_INT, .default_value = "2",
     .doc = "scaler=deepspeed: overflows tolerated before halving (1: halve at once)"},
    {.key = "consecutive_hysteresis", .type = LOOM_PARAM_BOOL, .default_value = "false",
     .doc = "scaler=deepspeed: refill the hysteresis on every clean step, not only on growth"},
    {.key = "min_loss_scale", .type = LOOM_PARAM_FLOAT, .default_value = "1",
     .doc = "scaler=deepspeed: the scale never goes below this (> 0)"},
    {.key = "init_scale", .type = LOOM_PARAM_FLOAT, .default_value = "65536",
     .doc = "scaler=torch: GradScaler init_scale"},
    {.key = "growth_factor", .type = LOOM_PARAM_FLOAT, .default_value = "2",
     .doc = "scaler=torch: scale *= growth_factor after growth_interval clean steps (> 1)"},
    {.key = "backoff_factor", .type = LOOM_PARAM_FLOAT, .default_value = "0.5",
     .doc = "scaler=torch: scale *= backoff_factor on an overflow (0 < f < 1)"},
    {.key = "growth_interval", .type = LOOM_PARAM_INT, .default_value = "2000",
     .doc = "scaler=torch: clean steps in a row before the scale grows"},
    {.key = "scale_floor", .type = LOOM_PARAM_FLOAT, .default_value = "5.9604644775390625e-08",
     .doc = "scaler=torch: GradScaler has no minimum; the scale stops here (2^-24, the smallest fp16 step) for "
            "the stop rule"},
    {.key = "max_overflow_at_min_scale", .type = LOOM_PARAM_INT, .default_value = "10",
     .doc = "stop the run after this many consecutive overflows at the minimum (or static) scale; 0: never"},
    {.key = NULL},
};
/* clang-format on */

static const loom_plugin_desc amp_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_PRECISION,
    .name = "amp",
    .version = "1.0.0",
    .summary = "fp16 params/grads/matmuls, fp32 master weights, dynamic loss scale (torch GradScaler or DeepSpeed)",
    .vtable = &amp_vtable,
    .params = amp_params,
};

LOOM_PLUGIN_EXPORT(&amp_desc)
