/*
 * apex.c - NVIDIA apex amp's opt levels (docs/semantics/precision.md#apex), as DeepSpeed's "amp" section and
 * HF's --fp16_backend apex --fp16_opt_level select them.
 *
 *   level  params  matmuls  master weights                      default loss scale
 *   O0     fp32    fp32     none (the params are fp32)          1.0
 *   O1     fp32    fp16     none: unscaled in place             dynamic
 *   O2     fp16    fp16     fp32, persistent                    dynamic
 *   O3     fp16    fp16     fp32 buffer, re-read every step     1.0
 *
 * O1: apex patches torch functions so whitelisted ops (matmul, linear, conv) run in fp16 and
 * the rest in fp32; here that is the model's compute_dtype, with the fp32 parameters as the
 * optimizer's own. O2 ("(legacy) fp16 mode" in DeepSpeed) keeps batch norm in fp32; loom's
 * models keep all normalisation arithmetic in fp32 anyway, so nothing extra is needed.
 * O3 is apex's "pure fp16" speed baseline, which may not converge: apex keeps no master copy,
 * so every update starts from the fp16 weights. The optimizer here steps fp32 pointers, so O3
 * gets an fp32 working buffer, but re-reads it from the fp16 parameters at the start of every
 * step: no precision below fp16's survives a step, exactly as with an fp16 optimizer.
 * describe() reports has_master = 1 for O3 because the buffer exists (and is counted).
 *
 * loss_scale: "dynamic" or a number (static); unset, the level's default above. The dynamic
 * rule is apex's LossScaler: start 2^16 (clamped to max_loss_scale), halve on overflow
 * (not below min_loss_scale), double after 2000 clean steps (not above max_loss_scale).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mixed_precision.h"

typedef struct apex_level {
    const char *name;
    uint32_t param_dtype, compute_dtype, has_master;
    int layout;
    int dynamic_by_default;
} apex_level;

static const apex_level apex_levels[4] = {
    {"O0", LOOM_DTYPE_F32, LOOM_DTYPE_F32, 0, MW_IN_PLACE, 0},
    {"O1", LOOM_DTYPE_F32, LOOM_DTYPE_F16, 0, MW_IN_PLACE, 1},
    {"O2", LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, MW_PERSISTENT, 1},
    {"O3", LOOM_DTYPE_F16, LOOM_DTYPE_F16, 1, MW_ROUNDED, 0},
};

/* "dynamic", or a finite number > 0. DeepSpeed hands over its amp section's values as JSON
 * text, so a quoted "dynamic" is accepted too. Returns 0 for a value that is neither. */
static int parse_loss_scale(const char *text, int *dynamic, double *value)
{
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '"' && text[n - 1] == '"') text++, n -= 2;
    if (n == 7 && strncmp(text, "dynamic", 7) == 0) return *dynamic = 1, 1;
    char buf[64];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, text, n);
    buf[n] = 0;
    char *end = NULL;
    double v = strtod(buf, &end);
    if (*end || !(v > 0) || !isfinite(v)) return 0;
    *dynamic = 0;
    *value = v;
    return 1;
}

static loom_status apex_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                               loom_precision **out)
{
    const char *level_name = NULL, *loss_scale = NULL;
    double min_scale = 0, max_scale = 0;
    int64_t max_at_min = 0;
    loom_status st;
    if ((st = loom_cfg_need_str(host, api, config, "opt_level", &level_name)) ||
        (st = loom_cfg_need_f64(host, api, config, "min_loss_scale", &min_scale)) ||
        (st = loom_cfg_need_f64(host, api, config, "max_loss_scale", &max_scale)) ||
        (st = loom_cfg_need_i64(host, api, config, "max_overflow_at_min_scale", &max_at_min)))
        return st;
    const apex_level *level = NULL;
    for (size_t i = 0; i < 4; i++)
        if (strcmp(level_name, apex_levels[i].name) == 0) level = &apex_levels[i];
    if (!level) return api->fail(host, LOOM_E_INVALID, "opt_level = '%s': expected O0, O1, O2 or O3", level_name);

    int r = api->cfg_str(config, "loss_scale", &loss_scale); /* no default: the level decides */
    if (r == LOOM_CFG_WRONG_TYPE) return api->fail(host, LOOM_E_INVALID, "config key 'loss_scale': not a string");
    int dynamic = level->dynamic_by_default;
    double static_scale = 0;
    if (r == LOOM_CFG_PRESENT && !parse_loss_scale(loss_scale, &dynamic, &static_scale))
        return api->fail(host, LOOM_E_INVALID, "loss_scale = '%s': expected \"dynamic\" or a finite number > 0",
                         loss_scale);
    if (!(min_scale >= 0) || !isfinite(min_scale))
        return api->fail(host, LOOM_E_INVALID, "min_loss_scale = %g: expected 0 (none) or a finite value > 0",
                         min_scale);
    if (!(max_scale > 0) || !(max_scale >= min_scale))
        return api->fail(host, LOOM_E_INVALID, "max_loss_scale = %g: expected a value > 0 and >= min_loss_scale (%g)",
                         max_scale, min_scale);

    mp_setup setup = {
        .name = "apex",
        .param_dtype = level->param_dtype,
        .compute_dtype = level->compute_dtype,
        .has_master = level->has_master,
        .layout = level->layout,
    };
    if (dynamic) {
        ls_config_apex(&setup.scaler);
        if (min_scale > 0) setup.scaler.min_scale = min_scale;
        setup.scaler.max_scale = max_scale; /* the start is min(max, 2^16), as apex's */
    } else if (r == LOOM_CFG_PRESENT) {
        ls_config_static(&setup.scaler, static_scale);
    } else {
        ls_config_none(&setup.scaler);
    }
    setup.scaler.max_overflow_at_min = max_at_min;
    return mp_create(host, api, &setup, out);
}

static const loom_precision_vtable apex_vtable = MP_VTABLE(apex_create);

/* clang-format off */
static const loom_param_spec apex_params[] = {
    {.key = "opt_level", .type = LOOM_PARAM_STRING, .default_value = "O1",
     .doc = "O0 fp32; O1 fp16 matmuls on fp32 params; O2 fp16 params + fp32 master; O3 pure fp16"},
    {.key = "loss_scale", .type = LOOM_PARAM_STRING, .default_value = NULL,
     .doc = "\"dynamic\" or a static number; unset: dynamic for O1/O2, 1.0 for O0/O3"},
    {.key = "min_loss_scale", .type = LOOM_PARAM_FLOAT, .default_value = "0",
     .doc = "dynamic scaling: lower bound (0: none as in apex; 2^-24 then bounds it for the stop rule)"},
    {.key = "max_loss_scale", .type = LOOM_PARAM_FLOAT, .default_value = "16777216",
     .doc = "dynamic scaling: upper bound of the scale (apex: 2^24)"},
    {.key = "max_overflow_at_min_scale", .type = LOOM_PARAM_INT, .default_value = "10",
     .doc = "stop the run after this many consecutive overflows at the minimum (or fixed) scale; 0: never"},
    {.key = NULL},
};
/* clang-format on */

static const loom_plugin_desc apex_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_PRECISION,
    .name = "apex",
    .version = "1.0.0",
    .summary = "NVIDIA apex amp opt levels O0-O3 (apex LossScaler: 2^16, x2 per 2000 clean steps, max 2^24)",
    .vtable = &apex_vtable,
    .params = apex_params,
};

LOOM_PLUGIN_EXPORT(&apex_desc)
