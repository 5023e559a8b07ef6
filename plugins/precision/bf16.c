/*
 * bf16.c - bfloat16 mixed precision: bf16 parameters, gradients and matrix products, fp32
 * master weights for the owned ranges, no loss scaling (bf16 has fp32's exponent range, so
 * there is nothing for a scale to protect; loss_scale() is 1).
 *
 * Overflow policy: a non-finite gradient still skips that step (DeepSpeed's bf16 optimizer
 * would step it into the master weights, which then stay NaN for good), the skip is counted
 * by the host like an fp16 overflow, and after max_overflow_at_min_scale consecutive
 * non-finite steps the run stops: with no scale to lower, another try on the next batch is
 * all a skip can buy, and a streak means the model itself has diverged.
 */
#include "mixed_precision.h"

static loom_status bf16_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_precision **out)
{
    mp_setup setup = {
        .name = "bf16",
        .param_dtype = LOOM_DTYPE_BF16,
        .compute_dtype = LOOM_DTYPE_BF16,
        .has_master = 1,
        .layout = MW_PERSISTENT,
    };
    ls_config_none(&setup.scaler);
    loom_status st =
        loom_cfg_need_i64(host, api, config, "max_overflow_at_min_scale", &setup.scaler.max_overflow_at_min);
    return st ? st : mp_create(host, api, &setup, out);
}

static const loom_precision_vtable bf16_vtable = MP_VTABLE(bf16_create);

/* clang-format off */
static const loom_param_spec bf16_params[] = {
    {.key = "max_overflow_at_min_scale", .type = LOOM_PARAM_INT, .default_value = "10",
     .doc = "stop the run after this many consecutive steps with inf/NaN gradients (each is skipped); 0: never"},
    {.key = NULL},
};
/* clang-format on */

static const loom_plugin_desc bf16_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_PRECISION,
    .name = "bf16",
    .version = "1.0.0",
    .summary = "bf16 params/grads/matmuls, fp32 master weights, no loss scale; skips non-finite steps",
    .vtable = &bf16_vtable,
    .params = bf16_params,
};

LOOM_PLUGIN_EXPORT(&bf16_desc)
