/*
 * early_stopping.c - HF's EarlyStoppingCallback: stop training when metric_for_best_model has
 * not improved for early_stopping_patience evaluations in a row.
 *
 * At each evaluation the metric (metric_for_best_model, "eval_" prefixed unless it already is)
 * improves when there is no best value yet, or when it is better than the best (greater or
 * smaller, per greater_is_better) by more than early_stopping_threshold; an improvement resets
 * the counter, anything else adds one, and the counter reaching the patience sets
 * should_training_stop.
 *
 * The best value it compares with is its own copy of what HF's state.best_metric holds when
 * on_evaluate runs: the best of the EARLIER evaluations, kept on any strict improvement
 * whatever the threshold (HF's trainer updates best_metric after the callbacks saw the
 * evaluation, and without the threshold). Keeping a copy makes the rule independent of when
 * loom's trainer updates state.best_metric. Both the counter and that best value are saved
 * in trainer_state.json's stateful_callbacks (HF's layout, under "EarlyStoppingCallback"), so
 * a resumed run stops where the uninterrupted one would have. On resume the configuration of
 * the new run wins over the checkpoint's "args" (a user resuming with another patience means
 * it); a checkpoint without best_metric (written by HF) takes state.best_metric at train begin.
 *
 * --eval_on_start's evaluation (before the run's first step) is counted but never kept as the
 * best: HF's trainer judges best_metric only at step-end evaluations, so the untrained model's
 * loss is not one a later evaluation has to beat.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <loom/callback.h>
#include <loom/plugin.h>

typedef struct early_stopping {
    loom_host *host;
    const loom_host_api *api;
    const loom_trainer_api *trainer;
    int64_t patience;
    double threshold;
    char metric[128];          /* the key looked up in the evaluation's metrics            */
    int32_t greater_is_better;
    int32_t warned_missing;
    int32_t warn_no_best_model;
    int64_t counter;           /* evaluations in a row without improvement                  */
    double best;               /* NaN: none yet                                             */
    int32_t before_first_step; /* from train begin to the first step's end: eval_on_start's time */
    char state[512];           /* save_state's text                                         */
} early_stopping;

static const loom_param_spec early_stopping_params[] = {
    {"early_stopping_patience", LOOM_PARAM_INT, 0, "1",
     "stop after this many evaluations in a row without improvement of metric_for_best_model"},
    {"early_stopping_threshold", LOOM_PARAM_FLOAT, 0, "0.0",
     "how much the metric must improve on the best value to count as an improvement"},
    {NULL, 0, 0, NULL, NULL},
};

/* A training argument as text ("none" for None); "" when it cannot be read. */
static void argument(const early_stopping *self, const char *name, char *buf, size_t size)
{
    size_t length = 0;
    if (self->trainer->argument(self->host, name, buf, size, &length) != LOOM_OK) buf[0] = '\0';
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* HF's TrainingArguments rules: metric_for_best_model defaults to "loss" under
 * load_best_model_at_end; greater_is_better defaults to "the metric is not a loss". */
static loom_status read_arguments(early_stopping *self)
{
    char metric[96], strategy[32], greater[16], load_best[16];
    argument(self, "metric_for_best_model", metric, sizeof metric);
    argument(self, "evaluation_strategy", strategy, sizeof strategy);
    argument(self, "greater_is_better", greater, sizeof greater);
    argument(self, "load_best_model_at_end", load_best, sizeof load_best);
    int load_best_model = strcmp(load_best, "true") == 0;
    if (!metric[0] || strcmp(metric, "none") == 0) {
        if (!load_best_model)
            return self->api->fail(self->host, LOOM_E_INVALID,
                                   "requires --metric_for_best_model (HF: EarlyStoppingCallback requires "
                                   "metric_for_best_model to be defined)");
        snprintf(metric, sizeof metric, "loss");
    }
    if (!strategy[0] || strcmp(strategy, "no") == 0)
        return self->api->fail(self->host, LOOM_E_INVALID,
                               "requires --evaluation_strategy steps or epoch, not \"%s\" (HF: EarlyStoppingCallback "
                               "requires IntervalStrategy of steps or epoch)", strategy[0] ? strategy : "no");
    snprintf(self->metric, sizeof self->metric, "%s%s", strncmp(metric, "eval_", 5) == 0 ? "" : "eval_", metric);
    if (strcmp(greater, "true") == 0) self->greater_is_better = 1;
    else if (strcmp(greater, "false") == 0) self->greater_is_better = 0;
    else self->greater_is_better = !ends_with(metric, "loss");
    self->warn_no_best_model = !load_best_model;
    return LOOM_OK;
}

static loom_status early_stopping_create(loom_host *host, const loom_host_api *api, const loom_config *config,
                                         loom_callback **out)
{
    const loom_trainer_api *trainer = api->service(host, LOOM_TRAINER_SERVICE, 2);
    if (!trainer)
        return api->fail(host, LOOM_E_UNSUPPORTED,
                         "needs a trainer that lends the loom.trainer/1 service (loom ABI 1.2)");
    int64_t patience = 1;
    double threshold = 0.0;
    if (api->cfg_i64(config, "early_stopping_patience", &patience) == LOOM_CFG_WRONG_TYPE || patience < 0)
        return api->fail(host, LOOM_E_INVALID, "early_stopping_patience must be an integer >= 0");
    if (api->cfg_f64(config, "early_stopping_threshold", &threshold) == LOOM_CFG_WRONG_TYPE || !(threshold >= 0))
        return api->fail(host, LOOM_E_INVALID, "early_stopping_threshold must be a number >= 0");
    early_stopping *self = api->alloc(host, sizeof *self, 0, LOOM_DEVICE_CPU, 0);
    if (!self) return api->fail(host, LOOM_E_NOMEM, "out of memory");
    memset(self, 0, sizeof *self);
    self->host = host;
    self->api = api;
    self->trainer = trainer;
    self->patience = patience;
    self->threshold = threshold;
    self->best = NAN;
    loom_status st = read_arguments(self);
    if (st != LOOM_OK) {
        api->free_memory(host, self);
        return st;
    }
    *out = (loom_callback *)self;
    return LOOM_OK;
}

static void early_stopping_destroy(loom_callback *self_)
{
    early_stopping *self = (early_stopping *)self_;
    if (self) self->api->free_memory(self->host, self);
}

static int improves(const early_stopping *self, double value, double best, double threshold)
{
    return self->greater_is_better ? value > best && value - best > threshold
                                   : value < best && best - value > threshold;
}

static void check_metric(early_stopping *self, const loom_trainer_state *state, loom_trainer_control *control,
                         const loom_event_payload *payload)
{
    const loom_metric *found = NULL;
    for (size_t i = 0; payload && i < payload->n_metrics; i++)
        if (strcmp(payload->metrics[i].key, self->metric) == 0) found = &payload->metrics[i];
    if (!found) {
        if (!self->warned_missing && state->is_world_process_zero)
            self->api->log(self->host, LOOM_LOG_WARNING,
                           "the evaluation has no %s (metric_for_best_model), so early stopping is disabled",
                           self->metric);
        self->warned_missing = 1;
        return;
    }
    double value = found->value;
    if (isnan(self->best) || improves(self, value, self->best, self->threshold)) self->counter = 0;
    else self->counter++;
    if (!self->before_first_step && (isnan(self->best) || improves(self, value, self->best, 0.0))) self->best = value;
    if (self->counter >= self->patience && !control->should_training_stop) {
        control->should_training_stop = 1;
        if (state->is_world_process_zero)
            self->api->log(self->host, LOOM_LOG_INFO,
                           "%s has not improved by more than %g on its best (%g) for %lld evaluation(s): stopping at "
                           "step %lld", self->metric, self->threshold, self->best, (long long)self->counter,
                           (long long)state->global_step);
    }
}

static loom_status early_stopping_on_event(loom_callback *self_, uint32_t event, const loom_trainer_state *state,
                                           loom_trainer_control *control, const loom_event_payload *payload)
{
    early_stopping *self = (early_stopping *)self_;
    if (event == LOOM_EVENT_TRAIN_BEGIN) {
        self->before_first_step = 1;
        /* A resume from a checkpoint that kept no best value of ours. */
        if (isnan(self->best) && isfinite(state->best_metric)) self->best = state->best_metric;
        if (self->warn_no_best_model && state->is_world_process_zero)
            self->api->log(
                self->host, LOOM_LOG_WARNING,
                "used without --load_best_model_at_end: once training is finished, the best model will not be "
                "loaded automatically");
        self->warn_no_best_model = 0;
    } else if (event == LOOM_EVENT_STEP_END || event == LOOM_EVENT_TRAIN_END) {
        self->before_first_step = 0;
    } else if (event == LOOM_EVENT_EVALUATE) {
        check_metric(self, state, control, payload);
    }
    return LOOM_OK;
}

static loom_status early_stopping_save_state(loom_callback *self_, const char **json)
{
    early_stopping *self = (early_stopping *)self_;
    char best[64];
    if (isfinite(self->best)) snprintf(best, sizeof best, "%.17g", self->best);
    else snprintf(best, sizeof best, "null");
    snprintf(self->state, sizeof self->state,
             "{\"args\": {\"early_stopping_patience\": %lld, \"early_stopping_threshold\": %.17g}, "
             "\"attributes\": {\"early_stopping_patience_counter\": %lld, \"best_metric\": %s}}",
             (long long)self->patience, self->threshold, (long long)self->counter, best);
    *json = self->state;
    return LOOM_OK;
}

static loom_status early_stopping_load_state(loom_callback *self_, const char *json)
{
    early_stopping *self = (early_stopping *)self_;
    const loom_trainer_api *tr = self->trainer;
    double counter = 0, best = NAN, patience = 0;
    if (tr->json_number(self->host, json, "attributes.early_stopping_patience_counter", &counter) == LOOM_OK) {
        if (!(counter >= 0 && counter == floor(counter) && counter < 9e15))
            return self->api->fail(self->host, LOOM_E_FORMAT,
                                   "stateful_callbacks: early_stopping_patience_counter %g is not a count", counter);
        self->counter = (int64_t)counter;
    }
    if (tr->json_number(self->host, json, "attributes.best_metric", &best) == LOOM_OK) self->best = best;
    if (tr->json_number(self->host, json, "args.early_stopping_patience", &patience) == LOOM_OK &&
        patience != (double)self->patience)
        self->api->log(self->host, LOOM_LOG_INFO,
                       "the checkpoint was written with early_stopping_patience %g; this run's %lld applies", patience,
                       (long long)self->patience);
    return LOOM_OK;
}

static const loom_callback_vtable early_stopping_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .create = early_stopping_create,
    .destroy = early_stopping_destroy,
    .on_event = early_stopping_on_event,
    .state_name = "EarlyStoppingCallback",
    .save_state = early_stopping_save_state,
    .load_state = early_stopping_load_state,
};

static const loom_plugin_desc early_stopping_desc = {
    LOOM_HEADER_INIT(loom_plugin_desc),
    .kind = LOOM_KIND_CALLBACK,
    .name = "early_stopping",
    .version = "1.0.0",
    .summary = "stops training when metric_for_best_model stops improving (HF EarlyStoppingCallback)",
    .vtable = &early_stopping_vtable,
    .params = early_stopping_params,
};

LOOM_PLUGIN_EXPORT(&early_stopping_desc)
