/* ds_config_json.c - the merged DeepSpeed configuration (the file's values with "auto" and the
 * command line resolved) written back as JSON, as DeepSpeed prints its own. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_config_internal.h"
#include "error.h"
#include "json_util.h"
#include "optim_names.h"

/* A number or bool as text -> JSON; anything else is a string. */
static cJSON *entry_json(const char *text)
{
    if (!text) return cJSON_CreateNull();
    if (!strcmp(text, "true")) return cJSON_CreateTrue();
    if (!strcmp(text, "false")) return cJSON_CreateFalse();
    char *end = NULL;
    double d = strtod(text, &end);
    if (end != text && *end == '\0') return cJSON_CreateNumber(d);
    return cJSON_CreateString(text);
}

static void write_value(FILE *out, const cJSON *v, int depth)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        int object = cJSON_IsObject(v);
        if (!v->child) {
            fputs(object ? "{}" : "[]", out);
            return;
        }
        /* Short arrays of scalars (betas) on one line. */
        if (!object) {
            fputc('[', out);
            for (const cJSON *c = v->child; c; c = c->next) {
                if (c != v->child) fputs(", ", out);
                write_value(out, c, depth + 1);
            }
            fputc(']', out);
            return;
        }
        fputc('{', out);
        for (const cJSON *c = v->child; c; c = c->next) {
            fprintf(out, "%s\n%*s", c == v->child ? "" : ",", 2 * (depth + 1), "");
            loom__json_write_string(out, c->string);
            fputs(": ", out);
            write_value(out, c, depth + 1);
        }
        fprintf(out, "\n%*s}", 2 * depth, "");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        char buf[64];
        if (floor(d) == d && fabs(d) < 1e15)
            snprintf(buf, sizeof buf, "%lld", (long long)d);
        else
            loom__format_shortest(buf, sizeof buf, d);
        fputs(buf, out);
    } else if (cJSON_IsString(v)) {
        loom__json_write_string(out, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        fputs(cJSON_IsTrue(v) ? "true" : "false", out);
    } else {
        fputs("null", out);
    }
}

static cJSON *build_json(const loom_ds_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddNumberToObject(root, "train_batch_size", (double)cfg->train_batch_size);
    cJSON_AddNumberToObject(root, "train_micro_batch_size_per_gpu", (double)cfg->train_micro_batch_size_per_gpu);
    cJSON_AddNumberToObject(root, "gradient_accumulation_steps", (double)cfg->gradient_accumulation_steps);
    cJSON_AddNumberToObject(root, "gradient_clipping", cfg->gradient_clipping);
    cJSON_AddNumberToObject(root, "steps_per_print", (double)cfg->steps_per_print);
    cJSON_AddBoolToObject(root, "wall_clock_breakdown", cfg->wall_clock_breakdown);
    cJSON_AddBoolToObject(root, "zero_allow_untested_optimizer",
                          cfg->zero_allow_untested_optimizer || !cfg->optimizer.present);

    cJSON *z = cJSON_AddObjectToObject(root, "zero_optimization");
    if (z) {
        cJSON_AddNumberToObject(z, "stage", cfg->zero.stage);
        cJSON_AddBoolToObject(z, "allgather_partitions", cfg->zero.allgather_partitions);
        cJSON_AddNumberToObject(z, "allgather_bucket_size", (double)cfg->zero.allgather_bucket_size);
        cJSON_AddBoolToObject(z, "reduce_scatter", cfg->zero.reduce_scatter);
        cJSON_AddNumberToObject(z, "reduce_bucket_size", (double)cfg->zero.reduce_bucket_size);
        cJSON_AddBoolToObject(z, "overlap_comm", cfg->zero.overlap_comm);
        cJSON_AddBoolToObject(z, "contiguous_gradients", cfg->zero.contiguous_gradients);
        cJSON_AddBoolToObject(z, "cpu_offload", cfg->zero.cpu_offload);
        cJSON_AddBoolToObject(z, "load_from_fp32_weights", cfg->zero.load_from_fp32_weights);
        cJSON_AddBoolToObject(z, "elastic_checkpoint", cfg->zero.elastic_checkpoint);
        /* Stage 3's tuning keys as zero3 got them: the entries not written above, each an
         * integer, true or false. */
        for (size_t i = 0; cfg->zero.stage == 3 && i < cfg->sharding.n_entries; i++) {
            const loom_config_default *e = &cfg->sharding.entries[i];
            if (cJSON_HasObjectItem(z, e->key)) continue;
            if (!strcmp(e->value, "true") || !strcmp(e->value, "false"))
                cJSON_AddBoolToObject(z, e->key, !strcmp(e->value, "true"));
            else
                cJSON_AddNumberToObject(z, e->key, strtod(e->value, NULL));
        }
        if (cfg->zero.offload_optimizer_present) {
            cJSON *o = cJSON_AddObjectToObject(z, "offload_optimizer");
            if (o) {
                cJSON_AddStringToObject(o, "device", cfg->zero.cpu_offload ? "cpu" : "none");
                cJSON_AddBoolToObject(o, "pin_memory", cfg->zero.offload_pin_memory);
            }
        }
    }

    const char *plugin = cfg->optimizer_choice.plugin ? cfg->optimizer_choice.plugin : "adamw";
    const char *type = cfg->optimizer.type;
    if (!type) {
        type = !strcmp(plugin, "adam")                                   ? "Adam"
               : !strcmp(plugin, "adamw") || !strcmp(plugin, "adamw_hf") ? "AdamW"
               : !strcmp(plugin, "sgd")                                  ? "SGD"
                                                                         : plugin;
    }
    cJSON *o = cJSON_AddObjectToObject(root, "optimizer");
    cJSON *op = o ? (cJSON_AddStringToObject(o, "type", type), cJSON_AddObjectToObject(o, "params")) : NULL;
    if (op) {
        cJSON_AddNumberToObject(op, "lr", cfg->optimizer.lr);
        /* The betas and eps only where HF's Trainer passes them (not SGD's, Adagrad's...), or
         * the file's type takes them (DeepSpeed's Adagrad no betas, its Lion no eps). */
        size_t hf_keys = cfg->optimizer.type ? 5 : loom__optim_trainer_keys(plugin);
        int typed = cfg->optimizer.type != NULL;
        if (typed ? strcmp(plugin, "adagrad") != 0 : hf_keys >= 4) {
            double b[2] = {cfg->optimizer.beta1, cfg->optimizer.beta2};
            cJSON_AddItemToObject(op, "betas", cJSON_CreateDoubleArray(b, 2));
        }
        if (typed ? strcmp(plugin, "lion") != 0 : hf_keys >= 5) cJSON_AddNumberToObject(op, "eps", cfg->optimizer.eps);
        cJSON_AddNumberToObject(op, "weight_decay", cfg->optimizer.weight_decay);
        if (!strcmp(plugin, "adam") || !strcmp(plugin, "adamw")) {
            if (cfg->optimizer.torch_adam) cJSON_AddTrueToObject(op, "torch_adam");
            if (!strcasecmp(type, "adam")) cJSON_AddBoolToObject(op, "adam_w_mode", !strcmp(plugin, "adamw"));
        } else if (!strcmp(plugin, "lamb")) {
            cJSON_AddNumberToObject(op, "max_coeff", cfg->optimizer.max_coeff);
            cJSON_AddNumberToObject(op, "min_coeff", cfg->optimizer.min_coeff);
            cJSON_AddBoolToObject(op, "bias_correction", cfg->optimizer.bias_correction);
        } else if (!strcmp(plugin, "onebit_adam")) {
            cJSON_AddNumberToObject(op, "freeze_step", (double)cfg->optimizer.freeze_step);
            cJSON_AddBoolToObject(op, "cuda_aware", cfg->optimizer.cuda_aware);
            cJSON_AddStringToObject(op, "comm_backend_name", cfg->optimizer.comm_backend_name);
        }
    }

    if (cfg->scheduler_choice.plugin) {
        cJSON *s = cJSON_AddObjectToObject(root, "scheduler");
        cJSON *sp =
            s ? (cJSON_AddStringToObject(s, "type", cfg->scheduler.type), cJSON_AddObjectToObject(s, "params")) : NULL;
        for (size_t i = 0; sp && i < cfg->scheduler_choice.n_entries; i++)
            cJSON_AddItemToObject(sp, cfg->scheduler_choice.entries[i].key,
                                  entry_json(cfg->scheduler_choice.entries[i].value));
    }

    cJSON *f = cJSON_AddObjectToObject(root, "fp16");
    if (f) {
        cJSON_AddBoolToObject(f, "enabled", cfg->fp16.enabled);
        if (cfg->fp16.present) cJSON_AddNumberToObject(f, "loss_scale", cfg->fp16.loss_scale);
        unsigned m = cfg->fp16.explicit_mask;
        if (m & LOOM_DS_FP16_INITIAL_SCALE_POWER)
            cJSON_AddNumberToObject(f, "initial_scale_power", cfg->fp16.initial_scale_power);
        if (m & LOOM_DS_FP16_LOSS_SCALE_WINDOW)
            cJSON_AddNumberToObject(f, "loss_scale_window", (double)cfg->fp16.loss_scale_window);
        if (m & LOOM_DS_FP16_HYSTERESIS) cJSON_AddNumberToObject(f, "hysteresis", cfg->fp16.hysteresis);
        if (m & LOOM_DS_FP16_MIN_LOSS_SCALE) cJSON_AddNumberToObject(f, "min_loss_scale", cfg->fp16.min_loss_scale);
        if (cfg->fp16.consecutive_hysteresis_present)
            cJSON_AddBoolToObject(f, "consecutive_hysteresis", cfg->fp16.consecutive_hysteresis);
    }
    if (cfg->amp.present || cfg->amp.enabled) {
        cJSON *a = cJSON_AddObjectToObject(root, "amp");
        if (a) {
            cJSON_AddBoolToObject(a, "enabled", cfg->amp.enabled);
            cJSON_AddStringToObject(a, "opt_level", cfg->amp.opt_level);
            for (size_t i = 0; i < cfg->amp.n_passthrough; i++)
                cJSON_AddItemToObject(a, cfg->amp.passthrough_keys[i], cJSON_Parse(cfg->amp.passthrough_values[i]));
        }
    }
    if (cfg->bf16.present || cfg->bf16.enabled) {
        cJSON *b = cJSON_AddObjectToObject(root, "bf16");
        if (b) cJSON_AddBoolToObject(b, "enabled", cfg->bf16.enabled);
    }
    return root;
}

loom_status loom_ds_config_write_json(const loom_ds_config *cfg, FILE *out)
{
    cJSON *root = build_json(cfg);
    if (!root) return loom_error(LOOM_E_NOMEM, "out of memory");
    write_value(out, root, 0);
    fputc('\n', out);
    cJSON_Delete(root);
    if (ferror(out)) return loom_error(LOOM_E_IO, "cannot write the merged DeepSpeed config");
    return LOOM_OK;
}
