"""--save_only_model: a checkpoint holds the model, config.json, the tokenizer, trainer_state.json
and training_args.json, and nothing that only a resume reads (HF's _save_checkpoint skips
_save_optimizer_and_scheduler and _save_rng_state), under every strategy, ZeRO's per-rank
optimizer shards included; training itself is the same run bit for bit; rotation and the best
model work on such checkpoints; resuming one is refused in one line; starting from one
(--model_name_or_path) works. docs/checkpoints.md#model-only."""
import hashlib
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOM, LoomTestCase, free_port, run, write_byte_vocab, write_tokens  # noqa: E402

STEPS, SAVE = 6, 2
GPT2 = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]
# What a model-only checkpoint of a GPT-2 run with a tokenizer holds, its manifest aside.
MODEL_ONLY = ["config.json", "merges.txt", "model.safetensors", "trainer_state.json", "training_args.json",
              "vocab.json"]
# What a full checkpoint holds besides (one rank, or whole states).
RESUME_ONLY = ["loss_tracker.json", "optimizer.safetensors", "rng_state.json", "scaler.json", "scheduler.json"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def checkpoints(out):
    return sorted(int(n.split("-")[1]) for n in os.listdir(out) if n.startswith("checkpoint-"))


class SaveOnlyModelTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 30000, 512, 17)
        cls.vocab = write_byte_vocab(os.path.join(cls.tmp, "vocab"))

    def train(self, out, world, *extra, check=True, steps=STEPS):
        args = ["train", "--output_dir", out, "--train_file", self.tokens, "--tokenizer_name", self.vocab,
                "--disable_tqdm", *GPT2, "--per_device_train_batch_size", str(4 // world), "--max_steps", str(steps),
                "--gradient_accumulation_steps", "2", "--learning_rate", "3e-3", "--weight_decay", "0.1",
                "--logging_steps", "1", "--save_steps", str(SAVE), "--ddp_timeout", "30", *extra]
        if world == 1:
            return run(LOOM, *args, check=check)
        return run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args, check=check)

    def losses(self, out):
        return [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]

    def assert_model_only(self, folder):
        self.assertEqual(sorted(os.listdir(folder)), sorted(MODEL_ONLY + ["loom_manifest.json"]), folder)
        # The seal lists exactly the files there, each with its own size and checksum.
        with open(os.path.join(folder, "loom_manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual([e["name"] for e in manifest["files"]], MODEL_ONLY)
        for entry in manifest["files"]:
            data = read(os.path.join(folder, entry["name"]))
            self.assertEqual(entry["bytes"], len(data), entry["name"])
            self.assertEqual(entry["sha256"], hashlib.sha256(data).hexdigest(), entry["name"])
        with open(os.path.join(folder, "training_args.json")) as f:
            self.assertIs(json.load(f)["save_only_model"], True)

    def assert_same_model(self, only, full, step):
        """checkpoint-<step> of `only` (model-only) holds the very model, config, tokenizer and
        state of `full`'s."""
        a, b = os.path.join(only, f"checkpoint-{step}"), os.path.join(full, f"checkpoint-{step}")
        for name in ("model.safetensors", "config.json", "vocab.json", "merges.txt", "trainer_state.json"):
            self.assertEqual(read(os.path.join(a, name)), read(os.path.join(b, name)), f"{a}/{name}")

    def test_a_checkpoint_holds_the_model_and_the_state_only(self):
        full, only = self.out("one-full"), self.out("one-only")
        self.train(full, 1, "--overwrite_output_dir")
        self.train(only, 1, "--overwrite_output_dir", "--save_only_model")
        self.assertEqual(checkpoints(only), [2, 4, 6])
        for step in checkpoints(only):
            with self.subTest(step=step):
                self.assert_model_only(os.path.join(only, f"checkpoint-{step}"))
                # What is left out is what a full checkpoint adds, no more.
                self.assertEqual(sorted(os.listdir(os.path.join(full, f"checkpoint-{step}"))),
                                 sorted(MODEL_ONLY + RESUME_ONLY + ["loom_manifest.json"]))
                self.assert_same_model(only, full, step)
        # The flag changes what is saved, not how the run trains.
        self.assertEqual(len(self.losses(only)), STEPS)
        self.assertEqual(self.losses(only), self.losses(full))
        self.assertEqual(read(os.path.join(only, "model.safetensors")), read(os.path.join(full, "model.safetensors")))
        with open(os.path.join(full, "checkpoint-2", "training_args.json")) as f:
            self.assertIs(json.load(f)["save_only_model"], False)

    def test_no_strategy_writes_optimizer_state_on_two_ranks(self):
        for strategy in ("ddp", "zero1", "zero2", "sharded_ddp"):
            with self.subTest(strategy=strategy):
                full, only = self.out(f"two-full-{strategy}"), self.out(f"two-only-{strategy}")
                self.train(full, 2, "--overwrite_output_dir", "--plugin", strategy, "--bf16")
                _, stdout, _ = self.train(only, 2, "--overwrite_output_dir", "--plugin", strategy, "--bf16",
                                          "--save_only_model")
                self.assertIn(f"[sharding] {strategy} ", stdout)
                if strategy != "ddp":   # the files the flag must leave out
                    self.assertIn("optimizer.rank-1-of-2.safetensors", os.listdir(os.path.join(full, "checkpoint-2")))
                self.assertEqual(checkpoints(only), [2, 4, 6])
                for step in checkpoints(only):
                    self.assert_model_only(os.path.join(only, f"checkpoint-{step}"))
                    self.assert_same_model(only, full, step)
                for root, _, files in os.walk(only):
                    self.assertEqual([f for f in files if f.startswith("optimizer")], [], root)
                self.assertEqual(self.losses(only), self.losses(full))
                self.assertEqual(read(os.path.join(only, "model.safetensors")),
                                 read(os.path.join(full, "model.safetensors")))

    def test_rotation_and_the_best_model(self):
        # Evaluation losses that rise after step 6 (a constant, too high learning rate): the best
        # checkpoint is neither the first nor the newest, and --save_total_limit 1 keeps both.
        runs = {}
        for name, extra in (("best-full", []), ("best-only", ["--save_only_model"])):
            out = self.out(name)
            args = self.train_args(out, "--validation_file", os.path.join(self.data, "validation.bin"),
                                   "--max_steps", "12", "--lr_scheduler_type", "constant", "--learning_rate", "2",
                                   "--evaluation_strategy", "steps", "--eval_steps", "2", "--save_steps", "2",
                                   "--logging_steps", "2", "--plugin", "zero2", "--save_total_limit", "1",
                                   "--load_best_model_at_end", "--ddp_timeout", "30", *extra)
            _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), *args)
            runs[name] = (out, stdout)
        out, stdout = runs["best-only"]
        evals = [(e["step"], e["eval_loss"]) for e in self.state(out)["log_history"] if "eval_loss" in e]
        self.assertEqual([s for s, _ in evals], [2, 4, 6, 8, 10, 12])
        best_step, best = min(evals, key=lambda e: e[1])
        self.assertNotIn(best_step, (2, 12))   # the case this test is for
        state = self.state(out)
        self.assertEqual(state["best_metric"], best)
        self.assertEqual(state["best_model_checkpoint"], os.path.join(out, f"checkpoint-{best_step}"))
        self.assertEqual(checkpoints(out), [best_step, 12])
        for step in checkpoints(out):
            folder = os.path.join(out, f"checkpoint-{step}")
            self.assertEqual(sorted(os.listdir(folder)), ["config.json", "loom_manifest.json", "model.safetensors",
                                                          "trainer_state.json", "training_args.json"])
        self.assertIn(f"loading best model from {out}/checkpoint-{best_step} (score: ", stdout)
        model = read(os.path.join(out, "model.safetensors"))
        self.assertEqual(model, read(os.path.join(out, f"checkpoint-{best_step}", "model.safetensors")))
        self.assertNotEqual(model, read(os.path.join(out, "checkpoint-12", "model.safetensors")))
        # The run with full checkpoints keeps the same folders and ends with the same model.
        full, _ = runs["best-full"]
        self.assertEqual(checkpoints(full), [best_step, 12])
        self.assertEqual(self.state(full)["best_metric"], best)
        self.assertEqual(read(os.path.join(full, "model.safetensors")), model)

    def test_resuming_one_is_refused_in_one_line(self):
        only = self.out("refuse")
        self.train(only, 1, "--overwrite_output_dir", "--save_only_model")
        newest = os.path.join(only, f"checkpoint-{STEPS}")
        before = {n: read(os.path.join(newest, n)) for n in os.listdir(newest)}
        ck = os.path.join(only, "checkpoint-2")
        common = ["train", "--train_file", self.tokens, "--disable_tqdm", *GPT2, "--max_steps", str(STEPS + 2),
                  "--save_steps", str(SAVE)]
        why = "was saved with --save_only_model: it holds no optimizer, scheduler or RNG state to resume from"
        elsewhere = self.out("refuse-elsewhere")
        self.assert_error(common + ["--output_dir", elsewhere, "--overwrite_output_dir", "--resume_from_checkpoint",
                                    ck],
                          f"--resume_from_checkpoint: {ck} {why}", f"use --model_name_or_path {ck}")
        self.assert_error(common + ["--output_dir", only, "--overwrite_output_dir", "--resume_from_checkpoint",
                                    "true"],
                          f"--resume_from_checkpoint true: the newest checkpoint, {newest}, {why}",
                          f"use --model_name_or_path {newest}")
        # Found by itself in the run folder (HF's example scripts' resume): the same refusal, and
        # the way to train from scratch instead.
        self.assert_error(common + ["--output_dir", only],
                          f"checkpoint detected at {newest}, but it {why}", f"--model_name_or_path {newest}",
                          "add --overwrite_output_dir to train from scratch")
        # On two ranks every rank refuses and the job ends: no rank waits in a collective.
        code, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), *common,
                                   "--output_dir", only, "--plugin", "zero2",
                                   "--ddp_timeout", "30", check=False, timeout=120)
        self.assertNotEqual(code, 0)
        self.assertIn(f"[rank 0] loom: error: checkpoint detected at {newest}, but it {why}", stdout + stderr)
        self.assertNotIn("Traceback", stderr)
        # Nothing was written into the checkpoint: it still verifies and starts a run (below).
        self.assertEqual({n: read(os.path.join(newest, n)) for n in os.listdir(newest)}, before)
        self.assertEqual(checkpoints(only), [2, 4, 6])

    def test_a_full_checkpoint_resumes_into_model_only_ones(self):
        # The flag is about what this run saves: a full checkpoint still resumes under it, bit
        # for bit, and the checkpoints after it are model-only.
        full = self.out("into-full")
        self.train(full, 1, "--overwrite_output_dir")
        half = self.out("into-half")
        shutil.rmtree(half, ignore_errors=True)
        os.makedirs(half)
        shutil.copytree(os.path.join(full, "checkpoint-4"), os.path.join(half, "checkpoint-4"))
        _, stdout, _ = self.train(half, 1, "--save_only_model")
        self.assertIn(f"resuming training at {half}/checkpoint-4: step 4", stdout)
        self.assert_model_only(os.path.join(half, f"checkpoint-{STEPS}"))
        self.assert_same_model(half, full, STEPS)
        self.assertEqual(self.losses(half), self.losses(full))

    def test_a_warm_start_from_one(self):
        full, only = self.out("warm-full"), self.out("warm-only")
        self.train(full, 1, "--overwrite_output_dir")
        self.train(only, 1, "--overwrite_output_dir", "--save_only_model")
        # Learning rate 0: the weights come through the run unchanged, so they are the checkpoint's.
        still = self.out("warm-still")
        ck = os.path.join(only, "checkpoint-4")
        self.train(still, 1, "--overwrite_output_dir", "--model_name_or_path", ck, "--learning_rate", "0", steps=2)
        self.assertEqual(read(os.path.join(still, "model.safetensors")), read(os.path.join(ck, "model.safetensors")))
        # Training from it is training from the full checkpoint's weights, bit for bit: a warm
        # start takes the weights alone (a fresh optimizer and schedule, step 0), from either.
        warm = {}
        for name, source in (("warm-from-only", only), ("warm-from-full", full)):
            out = self.out(name)
            self.train(out, 1, "--overwrite_output_dir", "--model_name_or_path", os.path.join(source, "checkpoint-4"),
                       steps=4)
            warm[name] = out
            self.assertEqual(self.state(out)["global_step"], 4)
            self.assertEqual(sorted(os.listdir(os.path.join(out, "checkpoint-2"))),
                             sorted(MODEL_ONLY + RESUME_ONLY + ["loom_manifest.json"]))
        a, b = warm["warm-from-only"], warm["warm-from-full"]
        self.assertEqual(read(os.path.join(a, "model.safetensors")), read(os.path.join(b, "model.safetensors")))
        self.assertEqual(self.losses(a), self.losses(b))
        # ... and not from scratch: the first loss is the trained model's, below a fresh one's.
        self.assertLess(self.losses(a)[0], self.losses(full)[0])


if __name__ == "__main__":
    import unittest
    unittest.main()
