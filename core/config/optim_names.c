/* optim_names.c - every --optim name: transformers' OptimizerNames (main branch at commit
 * 00349ae8, the v5 line, whose default is adamw_torch_fused with torch >= 2.8), the older
 * adamw_hf, and loom's short names. A name either runs a plugin or is refused in one line that
 * says what that optimizer is and why loom lacks it. docs/semantics/optimizers.md#optim-names. */
#include "optim_names.h"

#include <stdio.h>
#include <string.h>

typedef struct optim_name {
    const char *name;
    const char *plugin; /* NULL: refused */
    const char *why;    /* refused: what the optimizer is and what loom lacks for it */
} optim_name;

#define BNB_8BIT                                                                                                       \
    "bitsandbytes' 8-bit optimizer: its states are block-wise quantised to 8 bits, and loom keeps every optimizer "    \
    "state in fp32"
#define BNB_8BIT_PAGED                                                                                                 \
    "bitsandbytes' paged 8-bit optimizer: its states are block-wise quantised to 8 bits and paged out to the CPU, "    \
    "and loom keeps every optimizer state in fp32"
#define BNB_PAGED                                                                                                      \
    "bitsandbytes' paged optimizer: its states live in CUDA unified memory paged out to the CPU, which loom has no "   \
    "allocator for"
#define GALORE                                                                                                         \
    "GaLore (galore_torch): projects each linear layer's gradient to a low rank, which loom's element-wise optimizer " \
    "plugins cannot do"
#define LOMO ": fuses the update into backward and needs the model object, which loom's optimizer plugins never see"
#define LAYERWISE "; its layer-wise form also steps each parameter from a hook during backward"
#define APOLLO                                                                                                         \
    "APOLLO (apollo_torch): scales updates with a random low-rank projection of the gradient, which loom's "           \
    "element-wise optimizer plugins cannot do"
#define SCHEDULE_FREE                                                                                                  \
    "schedule-free optimizer (schedulefree): it replaces the learning-rate schedule and keeps averaged weights with "  \
    "train/eval modes, which loom's trainer has no hook for"

/* The same mathematics as the plugin named (docs/semantics/optimizers.md#optim-names says why
 * each alias is one): torch's fused/foreach kernels, torch_xla's syncfree AdamW, Ascend's
 * NpuFusedAdamW and apex's FusedAdam (adam_w_mode, HF's kwargs) are torch.optim.AdamW;
 * bitsandbytes' 32-bit RMSprop is torch's at momentum 0. */
static const optim_name names[] = {
    {"adamw_torch", "adamw", NULL},
    {"adamw_hf", "adamw_hf", NULL},
    {"adam", "adam", NULL},
    {"sgd", "sgd", NULL},
    {"adafactor", "adafactor", NULL},
    {"adagrad", "adagrad", NULL},
    {"rmsprop", "rmsprop", NULL},
    {"lion_32bit", "lion", NULL},
    {"adamw", "adamw", NULL},
    {"adamw_torch_fused", "adamw", NULL},
    {"adamw_torch_xla", "adamw", NULL},
    {"adamw_torch_npu_fused", "adamw", NULL},
    {"adamw_apex_fused", "adamw", NULL},
    {"rmsprop_bnb", "rmsprop", NULL},
    {"rmsprop_bnb_32bit", "rmsprop", NULL},
    {"lion", "lion", NULL},

    {"adamw_bnb_8bit", NULL, BNB_8BIT " (nearest: adamw_torch)"},
    {"adamw_8bit", NULL, BNB_8BIT " (nearest: adamw_torch)"},
    {"paged_adamw_8bit", NULL, BNB_8BIT_PAGED " (nearest: adamw_torch)"},
    {"lion_8bit", NULL, BNB_8BIT " (the same rule in 32 bits: lion_32bit)"},
    {"paged_lion_8bit", NULL, BNB_8BIT_PAGED " (the same rule in 32 bits: lion_32bit)"},
    {"rmsprop_bnb_8bit", NULL, BNB_8BIT " (the same rule in 32 bits: rmsprop_bnb_32bit)"},
    {"ademamix_8bit", NULL, BNB_8BIT ", and loom has no AdEMAMix"},
    {"paged_ademamix_8bit", NULL, BNB_8BIT_PAGED ", and loom has no AdEMAMix"},
    {"paged_adamw_32bit", NULL,
     BNB_PAGED "; its AdamW also decays after the update, so no loom optimizer is the same (nearest: adamw_torch)"},
    {"paged_lion_32bit", NULL, BNB_PAGED " (the same update unpaged: lion_32bit)"},
    {"paged_ademamix_32bit", NULL, BNB_PAGED ", and loom has no AdEMAMix"},
    {"ademamix", NULL, "AdEMAMix (bitsandbytes): Adam with a second, slow momentum; loom has no such optimizer plugin"},
    {"adamw_torch_4bit", NULL,
     "torchao's AdamW with 4-bit quantised states: loom keeps every optimizer state in fp32 (nearest: adamw_torch)"},
    {"adamw_torch_8bit", NULL,
     "torchao's AdamW with 8-bit quantised states: loom keeps every optimizer state in fp32 (nearest: adamw_torch)"},
    {"adamw_anyprecision", NULL,
     "torchdistx's AnyPrecisionAdamW: states in chosen low-precision dtypes with Kahan summation, and loom keeps every "
     "optimizer state in fp32 (nearest: adamw_torch)"},
    {"galore_adamw", NULL, GALORE},
    {"galore_adamw_8bit", NULL, GALORE},
    {"galore_adafactor", NULL, GALORE},
    {"galore_adamw_layerwise", NULL, GALORE LAYERWISE},
    {"galore_adamw_8bit_layerwise", NULL, GALORE LAYERWISE},
    {"galore_adafactor_layerwise", NULL, GALORE LAYERWISE},
    {"apollo_adamw", NULL, APOLLO},
    {"apollo_adamw_layerwise", NULL, APOLLO LAYERWISE},
    {"lomo", NULL, "LOMO (lomo_optim)" LOMO},
    {"adalomo", NULL, "AdaLomo (lomo_optim)" LOMO},
    {"grokadamw", NULL,
     "GrokAdamW (grokadamw): AdamW that amplifies slow gradient components; loom has no such "
     "optimizer plugin"},
    {"schedule_free_adamw", NULL, SCHEDULE_FREE},
    {"schedule_free_sgd", NULL, SCHEDULE_FREE},
    {"schedule_free_radam", NULL, SCHEDULE_FREE},
    {"stable_adamw", NULL,
     "StableAdamW (torch-optimi): AdamW with per-tensor update clipping; loom has no such optimizer plugin (nearest: "
     "adamw_torch)"},
    {"lamb", NULL,
     "DeepSpeed's Lamb has no HF --optim name; loom runs it with --plugin lamb or a ds_config optimizer of type Lamb"},
};

#define N_NAMES (sizeof names / sizeof *names)

static const optim_name *find(const char *optim)
{
    for (size_t i = 0; optim && i < N_NAMES; i++)
        if (strcmp(optim, names[i].name) == 0) return &names[i];
    return NULL;
}

const char *loom__optim_plugin(const char *optim)
{
    const optim_name *n = find(optim);
    return n ? n->plugin : NULL;
}

loom_status loom__optim_check(const char *optim, const char *where)
{
    const optim_name *n = find(optim);
    if (n && n->plugin) return LOOM_OK;
    if (n) return loom_error(LOOM_E_UNSUPPORTED, "--optim %s%s: %s", optim, where, n->why);
    char list[512];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < N_NAMES && names[i].plugin && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i].name);
    return loom_error(LOOM_E_INVALID, "--optim '%s'%s is not one of: %s", optim ? optim : "none", where, list);
}

size_t loom__optim_trainer_keys(const char *plugin)
{
    static const char *const lr_only[] = {"adafactor", "sgd", "adagrad", "rmsprop"};
    for (size_t i = 0; plugin && i < sizeof lr_only / sizeof *lr_only; i++)
        if (strcmp(plugin, lr_only[i]) == 0) return 2;
    return plugin && strcmp(plugin, "lion") == 0 ? 4 : 5;
}
