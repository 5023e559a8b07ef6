#!/usr/bin/env python3
"""Phone and word error rates of a G2P run against every reference pronunciation.

    python3 examples/g2p/score.py DEST/text/test.jsonl PREDICT_DIR/generated_predictions.txt

Each line of the predictions is the generated phones of the test word on the same line of
test.jsonl. A word is right when its prediction equals one of the word's pronunciations (its
"references"); WER is the share of words that are wrong. PER is the sum over words of the
Levenshtein distance between the prediction and the closest reference, over the sum of that
reference's length (the usual way CMUdict results count it). Prints one JSON line.
"""
import json
import sys


def distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[len(b)]


def score(test_path, predictions_path):
    with open(test_path) as f:
        examples = [json.loads(line) for line in f if line.strip()]
    with open(predictions_path) as f:
        predictions = [line.split() for line in f.read().split("\n")[:len(examples)]]
    if len(predictions) != len(examples):
        sys.exit(f"score.py: {predictions_path} has {len(predictions)} lines, {test_path} {len(examples)} words")
    errors = phones = wrong = 0
    for example, predicted in zip(examples, predictions):
        references = [r.split() for r in example.get("references", [example["target"]])]
        d, ref = min((distance(predicted, r), r) for r in references)
        errors += d
        phones += len(ref)
        wrong += d > 0
    return {"words": len(examples), "per": errors / phones, "wer": wrong / len(examples)}


if __name__ == "__main__":
    print(json.dumps(score(sys.argv[1], sys.argv[2])))
