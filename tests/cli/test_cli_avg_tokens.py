"""--average_tokens_across_devices (docs/semantics/trainer.md#gradient-accumulation) with real
ranks. Two ranks whose micro-batches hold different numbers of targets (seq2seq pairs of
different lengths, some labels -100) take one SGD step at learning rate 1, so the parameters
move by exactly the gradient; the reference is four one-rank runs, one per example, combined by
the formulas: `false`, the mean over the ranks of each rank's per-target mean gradient; `true`,
every target weighted alike. The logged loss is HF's in both. One rank: `false` is `true`, bit
for bit. ddp, zero1 and sharded_ddp agree bit for bit under `false`, and a static loss scale
changes nothing. gpt2 and mlp, whose ranks always hold as many targets, give `false` the same
parameters as `true`."""
import itertools
import json
import os
import random

from loomtest import LOOM, LoomTestCase, free_port, read_safetensors, run, write_tokens

T5 = ["--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64",
      "--num_layers", "2", "--dropout_rate", "0.0"]
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
        "--gpt2.vocab_size", "128", "--gpt2.n_positions", "32", "--block_size", "16"]
# Targets per example, counted without the -100 labels: far apart, so that the two
# normalisations and the three ways of sharing the examples between two ranks all differ.
LENGTHS = [2, 3, 7, 10]


def write_pair_rows(path, rows):
    with open(path, "w") as f:
        for source, labels in rows:
            f.write(json.dumps({"input_ids": source, "labels": labels}) + "\n")


def make_rows(seed):
    """One pair per entry of LENGTHS: a source of 2..6 tokens and a target with that many
    counted labels; the longest target also has two labels of -100 (left out of the count)."""
    r = random.Random(seed)
    rows = []
    for n in LENGTHS:
        source = [r.randint(3, 12) for _ in range(r.randint(2, 6))] + [1]
        labels = [r.randint(3, 12) for _ in range(n - 1)] + [1]
        if n == max(LENGTHS):
            labels[2:2] = [-100, -100]
        rows.append((source, labels))
    return rows


class AverageTokensTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rows = make_rows(4)
        cls.pairs = os.path.join(cls.tmp, "pairs.jsonl")
        write_pair_rows(cls.pairs, cls.rows)
        cls.one = []
        for i, row in enumerate(cls.rows):
            cls.one.append(os.path.join(cls.tmp, f"pair{i}.jsonl"))
            write_pair_rows(cls.one[-1], [row])
        cls.many = os.path.join(cls.tmp, "many.jsonl")
        r = random.Random(9)
        write_pair_rows(cls.many, [make_rows(r.randint(0, 1000))[r.randint(0, 3)] for _ in range(16)])
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 8000, 128, 3)

    def train(self, name, world, *args):
        """A run on `world` ranks; returns (logged entries with a loss, parameters, raw bytes)."""
        out = self.out(name)
        common = ["train", "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "true", "--ddp_timeout",
                  "60", "--seed", "7", "--logging_steps", "1", *args]
        if world == 1:
            run(LOOM, *common)
        else:
            run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *common)
        path = os.path.join(out, "model.safetensors")
        with open(path, "rb") as f:
            raw = f.read()
        logs = [e for e in self.state(out)["log_history"] if "loss" in e]
        return logs, read_safetensors(path), raw

    def sgd_step(self, name, world, train_file, ga, *extra):
        return self.train(name, world, "--train_file", train_file, *T5, "--optim", "sgd", "--learning_rate", "1",
                          "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--max_steps", "1",
                          "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", ga, *extra)

    def combine(self, singles, weights):
        """sum_i w_i p_i over every parameter (the weights sum to 1: p0 - lr sum_i w_i G_i)."""
        names = singles[0][1].keys()
        return {n: [sum(w * s[1][n][2][k] for w, s in zip(weights, singles)) for k in range(len(singles[0][1][n][2]))]
                for n in names}

    @staticmethod
    def worst(params, expected):
        return max(max(abs(a - b) for a, b in zip(params[n][2], expected[n])) for n in expected)

    @staticmethod
    def tolerance(params):
        """A few float32 roundings of the largest parameter: the update's own, and the reference's."""
        return 2e-6 * max(max(abs(v) for v in t[2]) for t in params.values())

    def test_first_step_against_the_formulas(self):
        # Each example alone: its per-target mean gradient G_i = p0 - p_i, and its mean loss L_i.
        singles = [self.sgd_step(f"single{i}", 1, path, "1") for i, path in enumerate(self.one)]
        losses = [s[0][0]["loss"] for s in singles]
        n, total = LENGTHS, sum(LENGTHS)
        # true: every target alike, whichever rank holds it.
        true_w = [k / total for k in n]
        # false: rank r's micro-batches hold the examples of one half of a split; which split the
        # sampler made is not this test's business, so each of the three is tried.
        splits = []
        for first in itertools.combinations(range(4), 2):
            if 0 not in first:
                continue
            halves = (first, tuple(i for i in range(4) if i not in first))
            w = [0.0] * 4
            for half in halves:
                for i in half:
                    w[i] = n[i] / sum(n[j] for j in half) / 2
            splits.append((halves, w))

        logs, params, _ = self.sgd_step("world_true", 2, self.pairs, "2")
        tolerance = self.tolerance(params)
        expected_true = self.combine(singles, true_w)
        self.assertLess(self.worst(params, expected_true), tolerance)
        self.assertAlmostEqual(logs[0]["loss"], sum(w * l for w, l in zip(true_w, losses)), delta=1e-6)

        logs, params, _ = self.sgd_step("world_false", 2, self.pairs, "2", "--average_tokens_across_devices",
                                        "false")
        errors = sorted((self.worst(params, self.combine(singles, w)), halves, w) for halves, w in splits)
        best, halves, w = errors[0]
        self.assertLess(best, tolerance, f"split {halves}; every split: {errors}")
        # Measurably not `true`, nor another split.
        self.assertGreater(self.worst(params, expected_true), 100 * tolerance)
        self.assertGreater(errors[1][0], 100 * tolerance)
        # HF's logged loss: the mean over the ranks of each rank's per-target mean.
        self.assertAlmostEqual(logs[0]["loss"], sum(wi * l for wi, l in zip(w, losses)), delta=1e-6)
        self.assertGreater(abs(logs[0]["loss"] - sum(wi * l for wi, l in zip(true_w, losses))), 1e-4)

    def test_a_rank_without_targets_adds_nothing(self):
        # One example whose labels are all -100, one with targets, a rank each. Alone, the first
        # moves nothing (its step has no target): its run keeps the initial parameters p0.
        rows = [(self.rows[0][0], [-100] * 3), self.rows[1]]
        both, empty, full = (os.path.join(self.tmp, name) for name in ("both.jsonl", "empty.jsonl", "full.jsonl"))
        write_pair_rows(both, rows)
        write_pair_rows(empty, rows[:1])
        write_pair_rows(full, rows[1:])
        p0 = self.sgd_step("empty", 1, empty, "1")[1]
        alone = self.sgd_step("full", 1, full, "1")
        # false: the other rank's mean gradient over the 2 ranks (HF would divide 0 by 0 here).
        logs, params, _ = self.sgd_step("half", 2, both, "1", "--average_tokens_across_devices", "false")
        self.assertLess(self.worst(params, self.combine([(None, p0), alone], [0.5, 0.5])), self.tolerance(params))
        self.assertAlmostEqual(logs[0]["loss"], alone[0][0]["loss"] / 2, delta=1e-6)
        # true: every target is on the other rank.
        logs, params, _ = self.sgd_step("whole", 2, both, "1")
        self.assertLess(self.worst(params, {n: t[2] for n, t in alone[1].items()}), self.tolerance(params))
        self.assertAlmostEqual(logs[0]["loss"], alone[0][0]["loss"], delta=1e-6)

    def test_one_rank_false_is_true(self):
        args = ("--train_file", self.many, *T5, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                "2", "--max_steps", "3", "--learning_rate", "3e-3")
        logs, _, raw = self.train("one_true", 1, *args)
        logs_false, _, raw_false = self.train("one_false", 1, *args, "--average_tokens_across_devices", "false")
        self.assertEqual(raw, raw_false)
        self.assertEqual([e["loss"] for e in logs], [e["loss"] for e in logs_false])

    def test_strategies_agree_bit_for_bit(self):
        args = ("--train_file", self.many, *T5, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                "2", "--max_steps", "3", "--learning_rate", "3e-3", "--average_tokens_across_devices", "false")
        ddp = self.train("ddp", 2, *args, "--plugin", "ddp")
        for sharding in ("zero1", "sharded_ddp"):
            with self.subTest(sharding=sharding):
                other = self.train(sharding, 2, *args, "--plugin", sharding)
                self.assertEqual(ddp[2], other[2])
                self.assertEqual([e["loss"] for e in ddp[0]], [e["loss"] for e in other[0]])
        # zero2 reduces each micro-batch as it comes: the same up to round-off (docs/semantics/deepspeed.md).
        zero2 = self.train("zero2", 2, *args, "--plugin", "zero2")
        self.assertLess(self.worst(zero2[1], {n: t[2] for n, t in ddp[1].items()}), 1e-5)
        # A static loss scale multiplies each rank's seed and is divided out again.
        scaled = self.train("scaled", 2, *args, "--plugin", "ddp", "--fp16", "--fp16_backend", "apex",
                            "--fp16_opt_level", "O0", "--apex.loss_scale", "1024")
        self.assertEqual([e["loss_scale"] for e in scaled[0]], [1024] * 3)
        self.assertEqual(ddp[2], scaled[2])
        # And `false` is not `true` here (the ranks' targets differ).
        true = self.train("ddp_true", 2, *args[:-2], "--plugin", "ddp")
        self.assertNotEqual(ddp[2], true[2])

    def test_equal_counts_give_true_parameters(self):
        # Token blocks and classification rows: every rank holds as many targets, so the two
        # divisors are the same number; fp16 runs through the dynamic loss scale.
        cases = {"gpt2-fp16": ("--train_file", self.tokens, *NANO, "--fp16", "--per_device_train_batch_size", "2"),
                 "mlp": ("--train_file", os.path.join(self.data, "train.bin"), "--per_device_train_batch_size", "8")}
        for name, args in cases.items():
            with self.subTest(model=name):
                args = (*args, "--gradient_accumulation_steps", "2", "--max_steps", "3", "--learning_rate", "3e-3")
                true = self.train(f"{name}_true", 2, *args)
                false = self.train(f"{name}_false", 2, *args, "--average_tokens_across_devices", "false")
                self.assertEqual(true[2], false[2])
                for a, b in zip(true[0], false[0]):
                    self.assertAlmostEqual(a["loss"], b["loss"], delta=1e-6 * a["loss"])


if __name__ == "__main__":
    import unittest
    unittest.main()
