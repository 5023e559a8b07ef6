/*
 * custom_loss.c - overriding Trainer.compute_loss in C, the way HF's documentation does it in
 * Python:
 *
 *     class CustomTrainer(Trainer):
 *         def compute_loss(self, model, inputs, return_outputs=False):
 *             logits = model(**inputs).logits
 *             loss_fct = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
 *             return loss_fct(logits.view(-1, num_labels), labels.view(-1))
 *
 * In C there is no autograd, so the hook returns the loss AND its gradient with respect to the
 * model's outputs; the trainer hands that gradient to the model's backward_outputs. The loss
 * is a SUM over targets, like every loss in loom: the trainer divides by the number of targets
 * of the whole accumulated batch once (torch's weighted mean divides by the sum of the weights
 * instead; with all weights 1 the two agree).
 *
 *   custom_loss --class_weights 1,2,3 [every `loom train` argument]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "trainer.h"

typedef struct class_weights {
    double values[256];
    int count;
} class_weights;

/* Weighted softmax cross-entropy: loss_b = w[y_b] * -log softmax(z_b)[y_b];
 * d loss_b / d z_bc = w[y_b] * (softmax(z_b)_c - [c == y_b]). */
static loom_status weighted_cross_entropy(loom_trainer *t, const loom_batch *batch, const loom_tensor_view *outputs,
                                          double *loss_sum, float *doutputs)
{
    const class_weights *w = t->hooks.user_data;
    const float *logits = outputs->data;
    const int32_t *labels = batch->labels.data;
    int64_t rows = batch->batch_size, classes = outputs->shape[1];
    double total = 0;
    for (int64_t b = 0; b < rows; b++) {
        int32_t y = labels[b];
        if (y == -100) continue;
        if (y < 0 || y >= classes || y >= w->count)
            return loom_error(LOOM_E_INVALID, "label %d has no class weight (--class_weights has %d)", y, w->count);
        const float *z = logits + b * classes;
        double max = z[0];
        for (int64_t c = 1; c < classes; c++) max = z[c] > max ? z[c] : max;
        double sum = 0;
        for (int64_t c = 0; c < classes; c++) sum += exp(z[c] - max);
        total += w->values[y] * (log(sum) - (z[y] - max));
        if (!doutputs) continue;
        for (int64_t c = 0; c < classes; c++) {
            double p = exp(z[c] - max) / sum;
            doutputs[b * classes + c] = (float)(w->values[y] * (p - (c == y)));
        }
    }
    *loss_sum = total;
    return LOOM_OK;
}

static int parse_weights(const char *text, class_weights *w)
{
    w->count = 0;
    const char *p = text;
    while (*p && w->count < 256) {
        char *end = NULL;
        double v = strtod(p, &end);
        if (end == p || v < 0) return 0;
        w->values[w->count++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return w->count > 0;
}

int main(int argc, char **argv)
{
    class_weights weights;
    int n = 0;
    char **rest = malloc((size_t)argc * sizeof *rest);
    if (!rest) return 1;
    int have_weights = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--class_weights") && i + 1 < argc) {
            if (!parse_weights(argv[++i], &weights)) {
                fprintf(stderr, "custom_loss: error: --class_weights wants non-negative numbers: %s\n", argv[i]);
                return 2;
            }
            have_weights = 1;
        } else {
            rest[n++] = argv[i];
        }
    }
    if (!have_weights) {
        fprintf(stderr, "usage: custom_loss --class_weights W0,W1,... [loom train arguments]\n");
        return 2;
    }

    loom_args args;
    loom_args_init(&args);
    loom_status st = loom_args_parse(&args, n, rest);
    free(rest);
    args.do_train = 1;
    loom_trainer *trainer = NULL;
    if (st == LOOM_OK) st = loom_trainer_create(&args, &trainer);
    if (st == LOOM_OK) {
        trainer->hooks.compute_loss = weighted_cross_entropy;   /* the override */
        trainer->hooks.user_data = &weights;
        st = loom_trainer_train(trainer);
    }
    if (st == LOOM_OK) st = loom_trainer_save_final(trainer);
    if (st == LOOM_OK && trainer->eval_dataset) {
        loom_metrics metrics;
        st = loom_trainer_evaluate(trainer, &metrics);
        for (size_t i = 0; st == LOOM_OK && i < metrics.count; i++)
            printf("%s = %.6g\n", metrics.keys[i], metrics.values[i]);
    }
    if (st != LOOM_OK) fprintf(stderr, "custom_loss: error: %s\n", loom_error_message());
    if (!trainer) loom_args_free(&args);
    loom_trainer_destroy(trainer);
    return st == LOOM_OK ? 0 : (st == LOOM_E_INVALID || st == LOOM_E_NOT_FOUND || st == LOOM_E_FORMAT) ? 2 : 1;
}
