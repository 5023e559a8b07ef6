/* ds_config_batch.c - the top-level values of a ds_config.json: batch sizes and gradient
 * accumulation (which must agree with the command line), gradient clipping, and the switches
 * loom accepts or refuses. */
#include <cjson/cJSON.h>
#include <stdio.h>

#include "ds_config_internal.h"
#include "error.h"

/* The batch sizes and gradient clipping: each must agree with the command line (or be "auto"). */
static loom_status parse_batch_sizes(ds_ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    const loom_args *a = c->args;
    ds_value micro, ga, total, clip;
    loom_status st;
    if ((st = loom__ds_get(c, root, "", "train_micro_batch_size_per_gpu", K_INT, 1, &micro)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, "", "train_micro_batch_size_per_gpu", &micro, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "gradient_accumulation_steps", K_INT, 1, &ga)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, "", "gradient_accumulation_steps", &ga, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "train_batch_size", K_INT, 1, &total)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, "", "train_batch_size", &total, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "gradient_clipping", K_NUM, 1, &clip)) != LOOM_OK ||
        (st = loom__ds_need_nonneg(c, "", "gradient_clipping", &clip)) != LOOM_OK)
        return st;
    if (micro.present && !micro.is_auto && micro.i != a->per_device_train_batch_size)
        return loom__ds_mismatch_int(c, "train_micro_batch_size_per_gpu", micro.i, "per_device_train_batch_size",
                                     a->per_device_train_batch_size);
    if (ga.present && !ga.is_auto && ga.i != a->gradient_accumulation_steps)
        return loom__ds_mismatch_int(c, "gradient_accumulation_steps", ga.i, "gradient_accumulation_steps",
                                     a->gradient_accumulation_steps);
    cfg->train_micro_batch_size_per_gpu = a->per_device_train_batch_size;
    cfg->gradient_accumulation_steps = a->gradient_accumulation_steps;
    cfg->train_batch_size = a->per_device_train_batch_size * a->gradient_accumulation_steps * cfg->world_size;
    if (total.present && !total.is_auto && total.i != cfg->train_batch_size)
        return loom_error(LOOM_E_INVALID,
                          "train_batch_size=%lld in %s but --per_device_train_batch_size %lld x "
                          "--gradient_accumulation_steps %lld x world size %d = %lld (use \"auto\" or make them agree)",
                          (long long)total.i, c->file, (long long)a->per_device_train_batch_size,
                          (long long)a->gradient_accumulation_steps, cfg->world_size, (long long)cfg->train_batch_size);
    if (clip.present && !clip.is_auto && clip.d != a->max_grad_norm)
        return loom__ds_mismatch_double(c, "gradient_clipping", clip.d, "max_grad_norm", a->max_grad_norm);
    cfg->gradient_clipping = a->max_grad_norm;
    return LOOM_OK;
}

/* The switches loom reads (steps_per_print, wall_clock_breakdown, zero_allow_untested_optimizer)
 * and the gradient scalings it refuses. */
static loom_status parse_switches(ds_ctx *c, const cJSON *root)
{
    loom_ds_config *cfg = c->cfg;
    loom_status st;
    ds_value spp, wcb, untested, prescale, predivide;
    if ((st = loom__ds_get(c, root, "", "steps_per_print", K_INT, 0, &spp)) != LOOM_OK ||
        (st = loom__ds_need_min_int(c, "", "steps_per_print", &spp, 1)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "wall_clock_breakdown", K_BOOL, 0, &wcb)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "zero_allow_untested_optimizer", K_BOOL, 0, &untested)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "prescale_gradients", K_BOOL, 0, &prescale)) != LOOM_OK ||
        (st = loom__ds_get(c, root, "", "gradient_predivide_factor", K_NUM, 0, &predivide)) != LOOM_OK)
        return st;
    cfg->steps_per_print = spp.present ? spp.i : 10;
    cfg->wall_clock_breakdown = wcb.present ? wcb.b : 0;
    if (cfg->wall_clock_breakdown &&
        (st = loom__ds_note(c,
                            "%s: wall_clock_breakdown true has no effect here (DeepSpeed's timers of its own "
                            "forward, backward and step)",
                            c->file)) != LOOM_OK)
        return st;
    cfg->zero_allow_untested_optimizer = untested.present ? untested.b : 0;
    if (prescale.present && prescale.b)
        return loom_error(
            LOOM_E_UNSUPPORTED,
            "%s: prescale_gradients true is not supported (loom averages gradients once, after the reduction)",
            c->file);
    if (predivide.present && predivide.d != 1.0)
        return loom_error(LOOM_E_UNSUPPORTED, "%s: gradient_predivide_factor %g is not supported (only 1.0)", c->file,
                          predivide.d);
    cfg->prescale_gradients = 0;
    cfg->gradient_predivide_factor = 1.0;
    return LOOM_OK;
}

loom_status loom__ds_parse_batch(ds_ctx *c, const cJSON *root)
{
    loom_status st = parse_batch_sizes(c, root);
    if (st != LOOM_OK) return st;
    return parse_switches(c, root);
}
