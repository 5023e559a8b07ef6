/*
 * optim_names.h - HF's --optim names (transformers' OptimizerNames) in loom: which optimizer
 * plugin runs each name loom has, which hyper-parameters HF's Trainer hands that optimizer,
 * and, for every other name, why loom does not have it. docs/semantics/optimizers.md#optim-names.
 */
#ifndef LOOM_CORE_OPTIM_NAMES_H
#define LOOM_CORE_OPTIM_NAMES_H

#include <stddef.h>

#include "error.h"

/* The plugin that runs --optim `optim` ("adamw_torch_fused" -> "adamw"); NULL for a name loom
 * refuses or does not know. */
const char *loom__optim_plugin(const char *optim);

/* LOOM_OK for a name loom runs; otherwise the one-line error (naming the optimizer and why
 * loom lacks it, or listing the names it has), with `where` (" (from FILE)" or "") after the
 * name. */
loom_status loom__optim_check(const char *optim, const char *where);

/* The optimizer keys HF's Trainer may pass, in the order loom__optim_trainer_keys counts. */
#define LOOM_OPTIM_TRAINER_KEYS                                                                                        \
    {                                                                                                                  \
        "lr", "weight_decay", "beta1", "beta2", "eps"                                                                  \
    }

/* How many of LOOM_OPTIM_TRAINER_KEYS HF's Trainer passes to `plugin` (get_optimizer_cls_and_
 * kwargs): 2 (lr and the groups' weight decay) for adafactor, sgd, adagrad and rmsprop, 4 (with
 * the betas, not eps) for lion, 5 for the Adam family and any other plugin. */
size_t loom__optim_trainer_keys(const char *plugin);

#endif
