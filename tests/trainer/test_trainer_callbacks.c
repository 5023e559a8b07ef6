/*
 * test_trainer_callbacks.c - the trainer's callback list (core/trainer/trainer_callbacks.c) without a
 * training run: HF's add_callback / pop_callback / remove_callback, the early_stopping plugin's
 * rule on scripted evaluations (hand-worked expectations), and the stateful-callback state
 * written into trainer_state.json and restored on its own, as resume will call it.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data_classification.h"
#include "error.h"
#include "fileutil.h"
#include "test_util.h"
#include "trainer_internal.h"

static char tmp[256], train_path[300], eval_path[300];

static void make_data(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/loom-callbacks-XXXXXX");
    if (!mkdtemp(tmp)) exit(1);
    snprintf(train_path, sizeof train_path, "%s/train.bin", tmp);
    snprintf(eval_path, sizeof eval_path, "%s/validation.bin", tmp);
    loom_classification_data data;
    if (loom_classification_generate(&data, "blobs", 64, 3, 2, 7) != LOOM_OK) exit(1);
    if (loom_classification_save(train_path, &data) != LOOM_OK || loom_classification_save(eval_path, &data) != LOOM_OK)
        exit(1);
    loom_classification_free(&data);
}

/* A trainer on the tiny data with evaluation on, plus `extra` arguments. NULL on failure
 * (the error is printed). */
static loom_trainer *make_trainer(const char *const *extra, size_t n_extra)
{
    char out[300];
    snprintf(out, sizeof out, "%s/out", tmp);
    const char *base[] = {"--output_dir", out, "--train_file", train_path, "--validation_file", eval_path,
                          "--disable_tqdm", "true", "--evaluation_strategy", "steps", "--eval_steps", "1"};
    size_t n_base = sizeof base / sizeof *base;
    char *argv[64];
    for (size_t i = 0; i < n_base; i++) argv[i] = (char *)base[i];
    for (size_t i = 0; i < n_extra; i++) argv[n_base + i] = (char *)extra[i];
    loom_args args;
    loom_args_init(&args);
    loom_trainer *t = NULL;
    loom_status st = loom_args_parse(&args, (int)(n_base + n_extra), argv);
    args.do_train = 1;
    if (st == LOOM_OK) st = loom_trainer_create(&args, &t);
    else loom_args_free(&args);
    if (st != LOOM_OK) fprintf(stderr, "trainer: %s\n", loom_error_message());
    return t;
}

/* ---- add / pop / remove ------------------------------------------------------------------ */

typedef struct counter {
    int events;
} counter;

static loom_status count_event(loom_callback *self, uint32_t event, const loom_trainer_state *state,
                               loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)event, (void)state, (void)control, (void)payload;
    ((counter *)self)->events++;
    return LOOM_OK;
}

static const loom_callback_vtable counter_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .on_event = count_event,
};

/* Fails without saying why. */
static loom_status silent_failure(loom_callback *self, uint32_t event, const loom_trainer_state *state,
                                  loom_trainer_control *control, const loom_event_payload *payload)
{
    (void)self, (void)event, (void)state, (void)control, (void)payload;
    return LOOM_E_INVALID;
}

static const loom_callback_vtable silent_vtable = {
    LOOM_HEADER_INIT(loom_callback_vtable),
    .on_event = silent_failure,
};

static void test_add_pop_remove(void)
{
    const char *metric[] = {"--metric_for_best_model", "loss"};
    loom_trainer *t = make_trainer(metric, 2);
    CHECK(t != NULL);
    if (!t) return;
    size_t n0 = t->n_callbacks;
    /* The defaults: the printer (--disable_tqdm) and the log_history.jsonl writer. */
    CHECK(n0 == 2 && strcmp(loom_trainer_callback_name(&t->callbacks[0]), "printer") == 0 &&
          strcmp(loom_trainer_callback_name(&t->callbacks[1]), "history") == 0);

    CHECK(loom_trainer_add_callback(t, "early_stopping") == LOOM_OK);
    if (t->n_callbacks == n0) fprintf(stderr, "add_callback: %s\n", loom_error_message());
    CHECK(loom_trainer_add_callback(t, "early_stopping") == LOOM_OK); /* a second one: a warning, as HF */
    CHECK(t->n_callbacks == n0 + 2);
    void *first = t->callbacks[n0].instance, *second = t->callbacks[n0 + 1].instance;
    CHECK(first && second && first != second);

    loom_plugin_instance popped;
    CHECK(loom_trainer_pop_callback(t, "early_stopping", NULL, &popped) == LOOM_OK);
    CHECK(popped.instance == first && strcmp(loom_trainer_callback_name(&popped), "early_stopping") == 0);
    CHECK(t->n_callbacks == n0 + 1 && t->callbacks[n0].instance == second);
    CHECK(loom_trainer_remove_callback(t, NULL, second) == LOOM_OK);
    CHECK(t->n_callbacks == n0);
    CHECK(loom_trainer_remove_callback(t, "early_stopping", NULL) == LOOM_E_NOT_FOUND);
    CHECK(strstr(loom_error_message(), "early_stopping") != NULL);
    CHECK(loom_trainer_pop_callback(t, NULL, NULL, &popped) == LOOM_E_INVALID);
    CHECK(loom_trainer_add_callback(t, "no_such_callback_plugin") == LOOM_E_NOT_FOUND);
    CHECK(t->n_callbacks == n0);
    loom_trainer_callback_destroy(&popped);
    CHECK(popped.instance == NULL);

    /* A program's own callback: called like a plugin, never destroyed by the trainer. */
    counter mine = {0};
    CHECK(loom_trainer_add_callback_instance(t, "counter", &counter_vtable, (loom_callback *)&mine) == LOOM_OK);
    CHECK(loom_trainer_fire(t, LOOM_EVENT_STEP_END, NULL, NULL) == LOOM_OK);
    CHECK(mine.events == 1);
    CHECK(loom_trainer_pop_callback(t, NULL, (loom_callback *)&mine, &popped) == LOOM_OK);
    CHECK(popped.plugin == NULL && strcmp(loom_trainer_callback_name(&popped), "counter") == 0);
    CHECK(loom_trainer_fire(t, LOOM_EVENT_STEP_END, NULL, NULL) == LOOM_OK);
    CHECK(mine.events == 1);
    loom_trainer_callback_destroy(&popped);
    CHECK(loom_trainer_add_callback_instance(t, "counter", &counter_vtable, (loom_callback *)&mine) == LOOM_OK);
    CHECK(loom_trainer_remove_callback(t, "counter", NULL) == LOOM_OK);
    CHECK(loom_trainer_fire(t, LOOM_EVENT_STEP_END, NULL, NULL) == LOOM_OK);
    CHECK(mine.events == 1);

    /* A callback that fails without a message is named, not blamed for an older message that
     * some earlier, handled failure left in the thread's buffer. */
    CHECK(loom_trainer_add_callback_instance(t, "silent", &silent_vtable, (loom_callback *)&mine) == LOOM_OK);
    loom_error(LOOM_E_IO, "an older message nobody reported");
    CHECK(loom_trainer_fire(t, LOOM_EVENT_STEP_END, NULL, NULL) == LOOM_E_INVALID);
    CHECK(strstr(loom_error_message(), "callback 'silent' failed") != NULL);
    CHECK(strstr(loom_error_message(), "older") == NULL);
    loom_trainer_destroy(t);
}

/* ---- the early stopping rule ------------------------------------------------------------- */

/* Feed evaluations of `key` to a trainer whose callbacks include early_stopping; the index of
 * the evaluation after which it asked to stop, or -1. */
static int stop_index(loom_trainer *t, const char *key, const double *values, int n)
{
    for (int i = 0; i < n; i++) {
        loom_metrics m;
        loom_metrics_clear(&m);
        loom_metrics_set(&m, key, values[i]);
        loom_metrics_set(&m, "eval_runtime", 0.5);
        t->state.global_step = i + 1;
        if (loom_trainer_fire(t, LOOM_EVENT_EVALUATE, &m, NULL) != LOOM_OK) return -2;
        if (t->control.should_training_stop) return i;
    }
    return -1;
}

static int run_rule(const char *patience, const char *threshold, const char *metric, const char *greater,
                    const char *key, const double *values, int n)
{
    const char *extra[12];
    size_t k = 0;
    extra[k++] = "--plugin", extra[k++] = "early_stopping";
    extra[k++] = "--early_stopping.early_stopping_patience", extra[k++] = patience;
    extra[k++] = "--early_stopping.early_stopping_threshold", extra[k++] = threshold;
    extra[k++] = "--metric_for_best_model", extra[k++] = metric;
    if (greater) extra[k++] = "--greater_is_better", extra[k++] = greater;
    loom_trainer *t = make_trainer(extra, k);
    if (!t) return -3;
    int at = stop_index(t, key, values, n);
    loom_trainer_destroy(t);
    return at;
}

static void test_early_stopping_rule(void)
{
    /* Equal is not better: stop at the second evaluation with patience 1. */
    const double flat[] = {1.0, 0.9, 0.9, 0.5};
    CHECK(run_rule("1", "0", "loss", NULL, "eval_loss", flat, 4) == 2);
    CHECK(run_rule("1", "0", "eval_loss", NULL, "eval_loss", flat, 4) == 2); /* already prefixed */
    /* Counters 0 0 1 2: patience 2 stops at the fourth. */
    const double bumpy[] = {1.0, 0.9, 0.95, 0.91, 0.8};
    CHECK(run_rule("2", "0", "loss", NULL, "eval_loss", bumpy, 5) == 3);
    CHECK(run_rule("3", "0", "loss", NULL, "eval_loss", bumpy, 5) == -1);
    /* The threshold, and the best value it is measured from: 0.97 is not 0.04 better than 1.0
     * (counter 1) but becomes the best, as HF's best_metric does; 0.95 is then only 0.02
     * better (counter 2: stop). Measured from 1.0 it would have been an improvement. */
    const double slow[] = {1.0, 0.97, 0.95, 0.90};
    CHECK(run_rule("2", "0.04", "loss", NULL, "eval_loss", slow, 4) == 2);
    CHECK(run_rule("2", "0.01", "loss", NULL, "eval_loss", slow, 4) == -1);
    /* An improvement resets the counter: 0 1 2 0 1 2 3. */
    const double reset[] = {1.0, 2.0, 3.0, 0.5, 0.6, 0.7, 0.8};
    CHECK(run_rule("3", "0", "loss", NULL, "eval_loss", reset, 7) == 6);
    /* A metric that is not a loss is greater-is-better by default: 0 0 1 2. */
    const double accuracy[] = {0.5, 0.6, 0.55, 0.6};
    CHECK(run_rule("2", "0", "accuracy", NULL, "eval_accuracy", accuracy, 4) == 3);
    /* ... unless told otherwise: rising accuracy is then no improvement, 0 1 2. */
    const double rising[] = {0.5, 0.6, 0.7};
    CHECK(run_rule("2", "0", "accuracy", "false", "eval_accuracy", rising, 3) == 2);
    /* The metric is missing from the evaluation: early stopping is off (a warning). */
    CHECK(run_rule("1", "0", "loss", NULL, "eval_other", flat, 4) == -1);

    /* Configuration errors stop at creation, in one line. */
    const char *no_eval[] = {"--evaluation_strategy", "no", "--metric_for_best_model", "loss"};
    loom_trainer *t = make_trainer(no_eval, 4);
    CHECK(t != NULL);
    if (t) {
        CHECK(loom_trainer_add_callback(t, "early_stopping") == LOOM_E_INVALID);
        CHECK(strstr(loom_error_message(), "early_stopping") && strstr(loom_error_message(), "evaluation_strategy"));
        CHECK(!strchr(loom_error_message(), '\n'));
        loom_trainer_destroy(t);
    }
    const char *negative[] = {"--plugin", "early_stopping", "--early_stopping.early_stopping_patience", "-1"};
    CHECK(make_trainer(negative, 4) == NULL);
    CHECK(strstr(loom_error_message(), "early_stopping_patience") != NULL);
}

/* ---- stateful callbacks: save and restore ------------------------------------------------ */

static double attribute(const cJSON *state, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(state, "attributes"), key);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsNull(v) ? -999 : -1;
}

static loom_trainer *early_stopping_trainer(const char *patience)
{
    const char *extra[] = {"--plugin", "early_stopping", "--early_stopping.early_stopping_patience", patience,
                           "--metric_for_best_model", "loss"};
    return make_trainer(extra, 6);
}

static void test_state_and_restore(void)
{
    /* A trainer without stateful callbacks writes no stateful_callbacks. */
    loom_trainer *plain = make_trainer(NULL, 0);
    CHECK(plain && loom_trainer_callbacks_state(plain) == NULL);
    loom_trainer_destroy(plain);

    loom_trainer *t = early_stopping_trainer("3");
    CHECK(t != NULL);
    if (!t) return;
    cJSON *state = loom_trainer_callbacks_state(t);
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(state, "EarlyStoppingCallback");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(es, "args");
    CHECK(cJSON_IsObject(es) && cJSON_GetArraySize(state) == 1);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(args, "early_stopping_patience")) == 3);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(args, "early_stopping_threshold")) == 0);
    CHECK(attribute(es, "early_stopping_patience_counter") == 0 && attribute(es, "best_metric") == -999);
    cJSON_Delete(state);
    const double seen[] = {1.0, 1.5};
    CHECK(stop_index(t, "eval_loss", seen, 2) == -1);
    state = loom_trainer_callbacks_state(t);
    es = cJSON_GetObjectItemCaseSensitive(state, "EarlyStoppingCallback");
    CHECK(attribute(es, "early_stopping_patience_counter") == 1 && attribute(es, "best_metric") == 1.0);

    /* trainer_state.json carries it (loom_trainer_write_state). */
    char dir[300], path[340];
    snprintf(dir, sizeof dir, "%s/state", tmp);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    CHECK(loom_mkdir_p(dir) == LOOM_OK && loom_trainer_write_state(t, dir) == LOOM_OK);
    char *text = NULL;
    size_t len = 0;
    CHECK(loom_read_file(path, &text, &len) == LOOM_OK);
    cJSON *file = text ? cJSON_Parse(text) : NULL;
    /* Beside the callback, HF's TrainerControl, keys sorted (EarlyStoppingCallback first). */
    const cJSON *kept = cJSON_GetObjectItemCaseSensitive(file, "stateful_callbacks");
    CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(kept, "EarlyStoppingCallback"), es, 1));
    CHECK(cJSON_GetArraySize(kept) == 2 && kept && kept->child &&
          !strcmp(kept->child->string, "EarlyStoppingCallback"));
    const cJSON *control = cJSON_GetObjectItemCaseSensitive(kept, "TrainerControl");
    const char *flags[] = {"should_epoch_stop", "should_evaluate", "should_log", "should_save", "should_training_stop"};
    const cJSON *flag = cJSON_GetObjectItemCaseSensitive(control, "args")
                            ? cJSON_GetObjectItemCaseSensitive(control, "args")->child
                            : NULL;
    for (int i = 0; i < 5; i++, flag = flag ? flag->next : NULL)
        CHECK(flag && !strcmp(flag->string, flags[i]) && cJSON_IsFalse(flag));
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(control, "attributes")) == 0);
    t->control.should_save = 1;
    CHECK(loom_trainer_write_state(t, dir) == LOOM_OK);
    free(text);
    text = NULL;
    CHECK(loom_read_file(path, &text, &len) == LOOM_OK);
    cJSON *saving = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(saving, "stateful_callbacks"),
                                             "TrainerControl"),
            "args"),
        "should_save")));
    cJSON_Delete(saving);
    t->control.should_save = 0;
    free(text);

    /* Round trip into a fresh trainer: the same state, and the same next decision. */
    loom_trainer *resumed = early_stopping_trainer("3");
    CHECK(resumed && loom_trainer_callbacks_restore(
                         resumed, cJSON_GetObjectItemCaseSensitive(file, "stateful_callbacks")) == LOOM_OK);
    cJSON *again = resumed ? loom_trainer_callbacks_state(resumed) : NULL;
    CHECK(cJSON_Compare(again, state, 1));
    cJSON_Delete(again);
    cJSON_Delete(file);
    cJSON_Delete(state);
    loom_trainer_destroy(resumed);
    loom_trainer_destroy(t);

    /* Counter 2 of patience 3 with best 0.5: the next worse evaluation stops; a fresh callback
     * would not. HF's TrainerControl and unknown names are ignored. */
    cJSON *stored =
        cJSON_Parse("{\"EarlyStoppingCallback\": {\"args\": {\"early_stopping_patience\": 3, "
                    "\"early_stopping_threshold\": 0.0}, \"attributes\": {\"early_stopping_patience_counter\": 2, "
                    "\"best_metric\": 0.5}}, \"TrainerControl\": {\"args\": {\"should_save\": true}, "
                    "\"attributes\": {}}, \"SomeoneElsesCallback\": {\"args\": {}, \"attributes\": {}}}");
    const double worse[] = {0.6};
    t = early_stopping_trainer("3");
    CHECK(t && loom_trainer_callbacks_restore(t, stored) == LOOM_OK);
    if (t) CHECK(stop_index(t, "eval_loss", worse, 1) == 0);
    loom_trainer_destroy(t);
    t = early_stopping_trainer("3");
    if (t) CHECK(stop_index(t, "eval_loss", worse, 1) == -1);
    loom_trainer_destroy(t);
    cJSON_Delete(stored);

    /* An HF checkpoint keeps no best value of the callback's: it comes from state.best_metric. */
    stored =
        cJSON_Parse("{\"EarlyStoppingCallback\": {\"args\": {\"early_stopping_patience\": 3, "
                    "\"early_stopping_threshold\": 0.0}, \"attributes\": {\"early_stopping_patience_counter\": 2}}}");
    t = early_stopping_trainer("3");
    CHECK(t && loom_trainer_callbacks_restore(t, stored) == LOOM_OK);
    if (t) {
        t->state.best_metric = 0.5;
        CHECK(loom_trainer_fire(t, LOOM_EVENT_TRAIN_BEGIN, NULL, NULL) == LOOM_OK);
        CHECK(stop_index(t, "eval_loss", worse, 1) == 0);
    }
    loom_trainer_destroy(t);
    cJSON_Delete(stored);

    /* Two instances share a name: a list, one item each, in order. The second comes from
     * add_callback, as HF's does: --plugin refuses a name given twice (its flags would reach both). */
    const char *two[] = {"--plugin", "early_stopping", "--plugin", "early_stopping", "--metric_for_best_model", "loss"};
    CHECK(make_trainer(two, 6) == NULL && strstr(loom_error_message(), "given twice") != NULL);
    t = make_trainer(two + 2, 4);
    CHECK(t != NULL && loom_trainer_add_callback(t, "early_stopping") == LOOM_OK);
    if (t) {
        stored = cJSON_Parse("{\"EarlyStoppingCallback\": [{\"attributes\": {\"early_stopping_patience_counter\": 4}}, "
                             "{\"attributes\": {\"early_stopping_patience_counter\": 5}}]}");
        CHECK(loom_trainer_callbacks_restore(t, stored) == LOOM_OK);
        state = loom_trainer_callbacks_state(t);
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(state, "EarlyStoppingCallback");
        CHECK(cJSON_IsArray(list) && cJSON_GetArraySize(list) == 2);
        CHECK(attribute(cJSON_GetArrayItem(list, 0), "early_stopping_patience_counter") == 4);
        CHECK(attribute(cJSON_GetArrayItem(list, 1), "early_stopping_patience_counter") == 5);
        cJSON_Delete(state);
        cJSON_Delete(stored);
        loom_trainer_destroy(t);
    }

    /* What cannot be restored is refused by name. */
    t = early_stopping_trainer("3");
    if (t) {
        stored =
            cJSON_Parse("{\"EarlyStoppingCallback\": {\"attributes\": {\"early_stopping_patience_counter\": -1}}}");
        CHECK(loom_trainer_callbacks_restore(t, stored) == LOOM_E_FORMAT);
        CHECK(strstr(loom_error_message(), "early_stopping_patience_counter") != NULL);
        cJSON_Delete(stored);
        stored = cJSON_Parse("[1, 2]");
        CHECK(loom_trainer_callbacks_restore(t, stored) == LOOM_E_FORMAT);
        cJSON_Delete(stored);
        stored = cJSON_Parse("{\"EarlyStoppingCallback\": 3}");
        CHECK(loom_trainer_callbacks_restore(t, stored) == LOOM_E_FORMAT);
        CHECK(strstr(loom_error_message(), "EarlyStoppingCallback") != NULL);
        cJSON_Delete(stored);
        CHECK(loom_trainer_callbacks_restore(t, NULL) == LOOM_OK);
        loom_trainer_destroy(t);
    }
}

int main(void)
{
    make_data();
    test_add_pop_remove();
    test_early_stopping_rule();
    test_state_and_restore();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_trainer_callbacks");
}
