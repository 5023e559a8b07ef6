"""--neftune_noise_alpha (HF's NEFTune) end to end on a tiny gpt2 and a tiny t5.

Training forwards add uniform noise of +-alpha / sqrt(T x hidden) to the input embedding's
output; evaluation does not. Checked here: the training losses differ from alpha 0 from the
first step; the same seed repeats the run bit for bit; the run's final evaluation is noise-free
(`loom evaluate` of the saved model, which carries no alpha, gives the same eval_loss, and so
does `loom evaluate --neftune_noise_alpha 5`); a run resumed from a checkpoint logs the same
losses and ends with the same weights as the uninterrupted one (the noise is a function of the
seed, the step and the micro-batch); a model without an input embedding (mlp) refuses the flag
in one line, and a negative alpha is refused."""
import json
import os
import shutil
import unittest

from loomtest import LoomTestCase, loom, write_pairs
from test_cli_smoothing import BLOCK, TinyGpt2

T5 = ["--vocab_size", "16", "--d_model", "16", "--d_kv", "4", "--num_heads", "4", "--d_ff", "32", "--num_layers",
      "1", "--dropout_rate", "0.0"]


def losses(state):
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def read(path):
    with open(path, "rb") as f:
        return f.read()


class NEFTuneTest(TinyGpt2, LoomTestCase):
    data_kind = "spirals"  # the mlp's refusal needs classification data
    run_args = ("--gradient_accumulation_steps", "2", "--lr_scheduler_type", "constant")

    def test_noise_in_training_only_repeatable_and_resumable(self):
        common = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--do_eval",
                  "--validation_file", self.valid]
        full, again, plain = self.out("nef-full"), self.out("nef-again"), self.out("nef-plain")
        _, stdout, _ = loom(*self.gpt2_args(full, *common, "--neftune_noise_alpha", "5"))
        self.assertIn("gpt2.neftune_noise_alpha = 5", stdout)
        loom(*self.gpt2_args(again, *common, "--neftune_noise_alpha", "5"))
        loom(*self.gpt2_args(plain, *common))
        noisy = losses(self.state(full))
        self.assertEqual(len(noisy), 6)
        # The same seed: the same noise, bit for bit (losses at full precision, weights).
        self.assertEqual(losses(self.state(again)), noisy)
        self.assertEqual(read(os.path.join(again, "model.safetensors")), read(os.path.join(full, "model.safetensors")))
        # The noise is in the first step's loss already (the same weights and data without it).
        clean = losses(self.state(plain))
        self.assertNotEqual(noisy[0], clean[0])
        self.assertGreater(abs(noisy[0] - clean[0]), 1e-4 * clean[0])

        # The final evaluation is noise-free: the saved model (config.json has no alpha, it
        # describes the model, not how it was trained) evaluates to the same loss, with or
        # without the flag.
        with open(os.path.join(full, "config.json")) as f:
            self.assertNotIn("neftune_noise_alpha", json.load(f))
        for name, extra in (("nef-eval", ()), ("nef-eval-alpha", ("--neftune_noise_alpha", "5"))):
            ev = self.out(name)
            loom("evaluate", "--model_name_or_path", full, "--validation_file", self.valid, "--block_size",
                 str(BLOCK), "--per_device_eval_batch_size", "3", "--output_dir", ev, "--disable_tqdm", *extra)
            self.assertEqual(self.eval_loss(ev), self.eval_loss(full))

        # Resumed from checkpoint-3: the same losses and the same final weights.
        half = self.out("nef-half")
        os.makedirs(half)
        shutil.copytree(os.path.join(full, "checkpoint-3"), os.path.join(half, "checkpoint-3"))
        resume = [a for a in self.gpt2_args(half, *common, "--neftune_noise_alpha", "5") if a != "--overwrite_output_dir"]
        _, stdout, _ = loom(*resume)
        self.assertIn("checkpoint detected, resuming training at", stdout)
        resumed = losses(self.state(half))
        self.assertEqual(resumed, noisy[3:] if len(resumed) == 3 else noisy)
        self.assertEqual(read(os.path.join(half, "model.safetensors")), read(os.path.join(full, "model.safetensors")))
        self.assertEqual(self.eval_loss(half), self.eval_loss(full))

    def test_another_seed_draws_other_noise(self):
        # The data order is --data_seed's here, so only the noise differs between the runs.
        a, b = self.out("nef-seed1"), self.out("nef-seed2")
        loom(*self.gpt2_args(a, "--max_steps", "1", "--save_strategy", "no", "--neftune_noise_alpha", "5",
                             "--seed", "1", "--data_seed", "7"))
        loom(*self.gpt2_args(b, "--max_steps", "1", "--save_strategy", "no", "--neftune_noise_alpha", "5",
                             "--seed", "2", "--data_seed", "7"))
        self.assertNotEqual(losses(self.state(a)), losses(self.state(b)))

    def test_t5_noise_in_training_only(self):
        train_file, dev_file = os.path.join(self.tmp, "pairs.jsonl"), os.path.join(self.tmp, "dev.jsonl")
        write_pairs(train_file, 48, 1, longest=6)
        write_pairs(dev_file, 12, 2, longest=6)
        runs = {}
        for alpha in ("5", "0"):
            out = self.out(f"nef-t5-{alpha}")
            loom("train", "--train_file", train_file, "--validation_file", dev_file, "--output_dir", out,
                 "--overwrite_output_dir", "--disable_tqdm", "true", "--per_device_train_batch_size", "8",
                 "--learning_rate", "3e-3", "--seed", "11", "--do_train", "--do_eval", "--max_steps", "3",
                 "--logging_steps", "1", "--save_strategy", "no", "--neftune_noise_alpha", alpha, *T5)
            runs[alpha] = out
        self.assertNotEqual(losses(self.state(runs["5"]))[0], losses(self.state(runs["0"]))[0])
        ev = self.out("nef-t5-eval")
        loom("evaluate", "--model_name_or_path", runs["5"], "--validation_file", dev_file, "--output_dir", ev,
             "--disable_tqdm", "true")
        self.assertEqual(self.eval_loss(ev), self.eval_loss(runs["5"]))

    def test_refusals(self):
        # mlp has no input embedding: NEFTune would silently do nothing.
        self.assert_error(self.train_args(self.out("nef-mlp"), "--model", "mlp", "--max_steps", "1",
                                          "--neftune_noise_alpha", "5"), "--neftune_noise_alpha", "'mlp'",
                          "input embedding")
        self.assert_error(self.gpt2_args(self.out("nef-neg"), "--max_steps", "1", "--neftune_noise_alpha", "-1"),
                          "gpt2", "neftune_noise_alpha is -1")
        # alpha 0 is NEFTune off, for every model (HF's None).
        loom(*self.train_args(self.out("nef-mlp0"), "--model", "mlp", "--max_steps", "1", "--neftune_noise_alpha",
                              "0"))


if __name__ == "__main__":
    unittest.main()
