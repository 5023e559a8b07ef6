"""Resume: a run stopped at a checkpoint and continued ends where one that never stopped ends,
bit for bit (same world size), or to round-off (another world size); damaged checkpoints are
refused by name; a save killed half-way loses nothing; `loom consolidate` joins the shards."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOM, LoomTestCase, free_port, read_safetensors, run, write_tokens  # noqa: E402

STEPS, HALF = 12, 6
GPT2 = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]
V, C, P, T = 512, 64, 64, 32


class ResumeTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 30000, V, 17)

    def train(self, out, world, *extra, env=None, check=True, batch=8):
        args = ["train", "--output_dir", out, "--train_file", self.tokens, "--disable_tqdm", *GPT2,
                "--per_device_train_batch_size", str(batch // world), "--max_steps", str(STEPS),
                "--gradient_accumulation_steps", "2", "--max_grad_norm", "0.5", "--weight_decay", "0.1",
                "--learning_rate", "3e-3", "--logging_steps", "1", "--save_steps", str(HALF),
                "--ddp_timeout", "30", *extra]
        if world == 1:
            return run(LOOM, *args, check=check, env=env)
        return run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args, check=check, env=env)

    def model_bytes(self, out):
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read()

    def losses(self, out):
        return [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]

    def resumed_copy(self, full, name, step=HALF):
        """A fresh output_dir holding only checkpoint-<step> of `full`."""
        out = self.out(name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        shutil.copytree(os.path.join(full, f"checkpoint-{step}"), os.path.join(out, f"checkpoint-{step}"))
        return out

    def test_bitwise_for_every_strategy_and_precision(self):
        for precision in ([], ["--bf16"]):
            for strategy in ("ddp", "zero1", "zero2", "sharded_ddp"):
                with self.subTest(strategy=strategy, precision=precision):
                    tag = f"{strategy}{'-bf16' if precision else ''}"
                    full = self.out(f"full-{tag}")
                    _, stdout, _ = self.train(full, 2, "--overwrite_output_dir", "--plugin", strategy, *precision)
                    self.assertIn(f"[sharding] {strategy} ", stdout)
                    half = self.resumed_copy(full, f"half-{tag}")
                    # No --overwrite_output_dir: HF's scripts resume from the checkpoint they find.
                    _, stdout, _ = self.train(half, 2, "--plugin", strategy, *precision)
                    self.assertIn(f"resuming training at {half}/checkpoint-{HALF}: step {HALF}", stdout)
                    self.assertEqual(self.model_bytes(half), self.model_bytes(full), tag)
                    self.assertEqual(self.losses(half), self.losses(full), tag)
                    self.assertEqual(len(self.losses(full)), STEPS)
                    a, b = self.state(full), self.state(half)
                    self.assertEqual(a["total_flos"], b["total_flos"])
                    self.assertEqual(a["log_history"][-1]["train_loss"], b["log_history"][-1]["train_loss"])
                    # The checkpoint at the end is the same too, shard for shard.
                    for name in os.listdir(os.path.join(full, f"checkpoint-{STEPS}")):
                        if name.endswith(".safetensors"):
                            with open(os.path.join(full, f"checkpoint-{STEPS}", name), "rb") as f1, \
                                    open(os.path.join(half, f"checkpoint-{STEPS}", name), "rb") as f2:
                                self.assertEqual(f1.read(), f2.read(), f"{tag} {name}")

    def test_another_world_size_recuts_the_partitions(self):
        """Not bitwise: a rank's micro-batch gradient is a sum inside its matrix products, whose
        split follows the per-rank batch. The restored states are exact (test_checkpoint_shards);
        training goes on to round-off of the 2-rank run."""
        full = self.out("z2-full")
        self.train(full, 2, "--overwrite_output_dir", "--plugin", "zero2", "--bf16")
        reference = read_safetensors(os.path.join(full, "model.safetensors"))
        for world in (1, 4):
            out = self.resumed_copy(full, f"z2-on-{world}")
            _, stdout, stderr = self.train(out, world, "--plugin", "zero2", "--bf16")
            self.assertIn(f"optimizer states written by 2 rank(s), re-cut for {world}", stdout)
            # 8 examples a step on any world size: the data position stands, and nothing warns.
            self.assertNotIn("examples a step", stdout + stderr)
            params = read_safetensors(os.path.join(out, "model.safetensors"))
            for name, (_, _, values) in reference.items():
                worst = max(abs(x - y) for x, y in zip(values, params[name][2]))
                self.assertLess(worst, 2e-2, f"{name} on {world} ranks")   # bf16 weights: 1 ulp at 1 is 8e-3
            for x, y in zip(self.losses(out), self.losses(full)):
                self.assertAlmostEqual(x, y, delta=1e-3)

    def test_total_flos_and_train_results(self):
        out = self.out("flos")
        self.train(out, 1, "--overwrite_output_dir", "--include_tokens_per_second")
        params = read_safetensors(os.path.join(out, "model.safetensors"))
        psi = sum(len(v[2]) for v in params.values())
        non_embedding = psi - V * C - P * C
        tokens = STEPS * 8 * 2 * T               # steps x batch x accumulation x block
        self.assertEqual(self.state(out)["total_flos"], 6 * non_embedding * tokens)
        with open(os.path.join(out, "train_results.json")) as f:
            results = json.load(f)
        for key in ("train_runtime", "train_samples_per_second", "train_steps_per_second",
                    "train_tokens_per_second", "total_flos", "train_loss", "epoch"):
            self.assertIn(key, results)
        self.assertEqual(results["total_flos"], 6 * non_embedding * tokens)
        self.assertAlmostEqual(results["train_tokens_per_second"],
                               tokens / results["train_runtime"], delta=0.01 * results["train_tokens_per_second"])
        with open(os.path.join(out, "all_results.json")) as f:
            self.assertEqual(json.load(f)["train_loss"], results["train_loss"])
        with open(os.path.join(out, f"checkpoint-{HALF}", "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["total_flos"], 6 * non_embedding * tokens // 2)

    def test_damaged_checkpoints_are_refused_by_name(self):
        full = self.out("damage-full")
        self.train(full, 1, "--overwrite_output_dir")
        cases = {
            "missing": ("scheduler.json", lambda p: os.remove(p), "missing"),
            "truncated": ("model.safetensors", lambda p: os.truncate(p, os.path.getsize(p) - 10), "truncated"),
            "altered": ("optimizer.safetensors", None, "altered"),
            # There but unreadable: named as such, not as an unfinished save.
            "manifest a folder": ("loom_manifest.json", lambda p: (os.remove(p), os.mkdir(p)), "is a folder"),
        }
        for case, (name, damage, word) in cases.items():
            with self.subTest(case=case):
                out = self.resumed_copy(full, f"damage-{case}")
                path = os.path.join(out, f"checkpoint-{HALF}", name)
                if damage:
                    damage(path)
                else:
                    with open(path, "r+b") as f:
                        f.seek(os.path.getsize(path) // 2)
                        byte = f.read(1)
                        f.seek(-1, 1)
                        f.write(bytes([byte[0] ^ 1]))
                code, stdout, stderr = self.train(out, 1, "--overwrite_output_dir", "--resume_from_checkpoint",
                                                  os.path.join(out, f"checkpoint-{HALF}"), check=False)
                self.assertNotEqual(code, 0)
                self.assertIn(name, stderr)
                self.assertIn(word, stderr)
                self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
        # The run's folder, or a file, where a checkpoint belongs: named for what it is.
        for given, words in ((full, ["a run's output folder, not a checkpoint", f"checkpoint-{STEPS}"]),
                             (os.path.join(full, "config.json"), ["a file, not a checkpoint folder"])):
            code, _, stderr = self.train(self.out("damage-which"), 1, "--overwrite_output_dir",
                                         "--resume_from_checkpoint", given, check=False)
            self.assertNotEqual(code, 0)
            for word in words:
                self.assertIn(word, stderr)

    def test_true_skips_incomplete_checkpoints(self):
        full = self.out("skip-full")
        self.train(full, 1, "--overwrite_output_dir")
        os.remove(os.path.join(full, f"checkpoint-{STEPS}", "loom_manifest.json"))
        code, stdout, stderr = self.train(full, 1, "--overwrite_output_dir", "--resume_from_checkpoint", "true",
                                          "--max_steps", str(STEPS + 2))
        self.assertIn(f"skipping checkpoint-{STEPS}: ", stdout + stderr)
        self.assertIn(f"resuming from {full}/checkpoint-{HALF}", stdout)
        # Found by itself in the run folder (no --resume_from_checkpoint), the newest sealed
        # checkpoint damaged: one line names the checkpoint it really resumes and why.
        found = self.out("skip-found")
        shutil.rmtree(found, ignore_errors=True)
        shutil.copytree(full, found)
        with open(os.path.join(found, f"checkpoint-{STEPS}", "loom_manifest.json"), "w") as f:
            f.write("{")
        _, stdout, stderr = self.train(found, 1, "--max_steps", str(STEPS + 2))
        self.assertIn(f"skipping checkpoint-{STEPS}: ", stdout + stderr)
        with open(os.path.join(found, f"checkpoint-{HALF}", "trainer_state.json")) as f:
            epoch = json.load(f)["epoch"]
        said = [line for line in stdout.splitlines() if line.startswith("loom:") and "resum" in line]
        self.assertEqual(said, [f"loom: checkpoint detected, resuming training at {found}/checkpoint-{HALF}: step "
                                f"{HALF}, epoch {epoch:.4g}. To avoid "
                                "this, change --output_dir or add --overwrite_output_dir to train from scratch."])
        empty = self.out("skip-empty")
        os.makedirs(empty, exist_ok=True)
        code, _, stderr = self.train(empty, 1, "--overwrite_output_dir", "--resume_from_checkpoint", "true",
                                     check=False)
        self.assertEqual(code, 2)
        self.assertIn("no valid checkpoint found in output directory", stderr)

    def test_save_total_limit_keeps_this_runs_checkpoints(self):
        # A run over an older, longer one (--overwrite_output_dir): the old checkpoint-4 goes
        # first, not this run's own; a checkpoint-N loom did not save is left alone, named once.
        out = self.out("limit-over")
        mlp = self.train_args(out, "--per_device_train_batch_size", "8", "--logging_steps", "1")
        run(LOOM, *mlp, "--max_steps", "4", "--save_steps", "2")
        foreign = os.path.join(out, "checkpoint-3")
        os.makedirs(foreign)
        with open(os.path.join(foreign, "notes.txt"), "w") as f:
            f.write("mine")
        _, stdout, stderr = run(LOOM, *mlp, "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "1")
        self.assertEqual(sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")),
                         ["checkpoint-2", "checkpoint-3"])
        with open(os.path.join(out, "checkpoint-2", "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["max_steps"], 2)   # this run's, not the old run's
        self.assertTrue(os.path.isfile(os.path.join(foreign, "notes.txt")))
        self.assertEqual((stdout + stderr).count(f"leaving {foreign} alone"), 1, stdout + stderr)
        # Resuming from an earlier checkpoint: the later ones of the abandoned run go first.
        again = self.out("limit-resume")
        run(LOOM, *self.train_args(again, "--per_device_train_batch_size", "8"), "--max_steps", "6",
            "--save_steps", "2")
        run(LOOM, *self.train_args(again, "--per_device_train_batch_size", "8"), "--max_steps", "4",
            "--save_steps", "1", "--save_total_limit", "2", "--resume_from_checkpoint",
            os.path.join(again, "checkpoint-2"))
        self.assertEqual(sorted(n for n in os.listdir(again) if n.startswith("checkpoint-")),
                         ["checkpoint-3", "checkpoint-4"])

    def test_ctrl_c_says_where_the_checkpoints_are(self):
        out = self.out("interrupted")
        args = self.train_args(out, "--per_device_train_batch_size", "8", "--max_steps", "1000000", "--save_steps",
                               "2", "--logging_steps", "1")
        p = subprocess.Popen([LOOM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in p.stdout:   # the first logged step: training has begun
                if "'loss'" in line:
                    break
            while not os.path.isdir(os.path.join(out, "checkpoint-2")):
                self.assertIsNone(p.poll())
                time.sleep(0.01)
            p.send_signal(signal.SIGINT)
            _, stderr = p.communicate(timeout=60)
        finally:
            p.kill()
        self.assertEqual(p.returncode, -signal.SIGINT)   # still ended by the signal, as before
        self.assertEqual(stderr.strip().splitlines(),
                         [f"loom: interrupted by SIGINT: the checkpoints saved so far are in {out} "
                          "(--resume_from_checkpoint true goes on from the newest)"])
        _, stdout, _ = run(LOOM, *self.train_args(out, "--per_device_train_batch_size", "8", "--max_steps", "2"),
                           "--resume_from_checkpoint", "true")
        self.assertIn(f"resuming from {out}/checkpoint-", stdout)

    def test_a_save_killed_half_way_loses_nothing(self):
        full = self.out("kill-full")
        self.train(full, 1, "--overwrite_output_dir")
        out = self.out("kill")
        code, _, _ = self.train(out, 1, "--overwrite_output_dir", env={"LOOM_TEST_KILL_DURING_SAVE": str(STEPS)},
                                check=False)
        self.assertEqual(code, -9)
        self.assertTrue(os.path.isdir(os.path.join(out, f"checkpoint-{STEPS}.tmp")))   # the half-written save
        self.assertFalse(os.path.exists(os.path.join(out, f"checkpoint-{STEPS}")))
        _, stdout, _ = self.train(out, 1)   # the run dir has a checkpoint: it resumes
        self.assertIn("removed 1 unfinished checkpoint folder", stdout)
        self.assertIn(f"checkpoint detected, resuming training at {out}/checkpoint-{HALF}: step {HALF}", stdout)
        self.assertFalse(os.path.exists(os.path.join(out, f"checkpoint-{STEPS}.tmp")))
        self.assertEqual(self.model_bytes(out), self.model_bytes(full))
        # Saving a step whose folder exists replaces it whole (the old one kept until then).
        again = self.resumed_copy(full, "kill-again")
        shutil.copytree(os.path.join(full, f"checkpoint-{STEPS}"), os.path.join(again, f"checkpoint-{STEPS}"))
        with open(os.path.join(again, f"checkpoint-{STEPS}", "marker"), "w") as f:
            f.write("old")
        self.train(again, 1, "--overwrite_output_dir", "--resume_from_checkpoint",
                   os.path.join(again, f"checkpoint-{HALF}"))
        self.assertFalse(os.path.exists(os.path.join(again, f"checkpoint-{STEPS}", "marker")))
        self.assertEqual(self.model_bytes(os.path.join(again, f"checkpoint-{STEPS}")),
                         self.model_bytes(os.path.join(full, f"checkpoint-{STEPS}")))

    def test_ignore_data_skip_starts_the_epoch_over(self):
        full = self.out("skip-data-full")
        self.train(full, 1, "--overwrite_output_dir")
        out = self.resumed_copy(full, "skip-data")
        _, stdout, _ = self.train(out, 1, "--ignore_data_skip")
        self.assertIn("--ignore_data_skip: the epoch starts over", stdout)
        resumed = self.losses(out)
        self.assertEqual(resumed[:HALF], self.losses(full)[:HALF])
        self.assertNotEqual(resumed[HALF:], self.losses(full)[HALF:])

    def test_a_changed_batch_is_named(self):
        """HF warns when per_device_train_batch_size changes at a resume; the data position moves
        with accumulation and the rank count as much, so loom compares their product."""
        full = self.out("batch-full")
        self.train(full, 1, "--overwrite_output_dir")
        out = self.resumed_copy(full, "batch-half")
        _, stdout, stderr = self.train(out, 1, batch=4)
        self.assertIn(f"{out}/checkpoint-{HALF} was written at 16 examples a step (per_device_train_batch_size 8 x "
                      "gradient_accumulation_steps 2 x 1 rank(s)), this run takes 8 (4 x 2 x 1)", stderr)
        self.assertEqual(len([l for l in stderr.splitlines() if "examples a step" in l]), 1, stderr)
        # The same product from other factors is the same position: no warning.
        out = self.resumed_copy(full, "batch-traded")
        _, stdout, stderr = self.train(out, 1, "--gradient_accumulation_steps", "4", batch=4)
        self.assertIn(f"resuming training at {out}/checkpoint-{HALF}", stdout)
        self.assertNotIn("examples a step", stdout + stderr)

    def test_consolidate_joins_the_master_weights(self):
        full = self.out("cons-full")
        self.train(full, 2, "--overwrite_output_dir", "--plugin", "zero2", "--bf16")
        checkpoint = os.path.join(full, f"checkpoint-{STEPS}")
        masters = {}
        for r in range(2):
            for name, (_, _, values) in read_safetensors(
                    os.path.join(checkpoint, f"optimizer.rank-{r}-of-2.safetensors")).items():
                tensor, rest = name.split(".fp32_master") if ".fp32_master" in name else (None, None)
                if tensor is None:
                    continue
                offset = int(rest[1:]) if rest.startswith("@") else 0
                masters.setdefault(tensor, {})[offset] = values
        out = self.out("cons-out")
        _, stdout, _ = run(LOOM, "consolidate", checkpoint, out)
        self.assertIn("from", stdout)
        joined = read_safetensors(os.path.join(out, "model.safetensors"))
        bf16 = read_safetensors(os.path.join(checkpoint, "model.safetensors"))
        self.assertEqual(set(joined), set(bf16))
        for name, (dtype, shape, values) in joined.items():
            self.assertEqual(dtype, "F32")
            self.assertEqual(shape, bf16[name][1])
            pieces = masters[name]
            expected = [v for offset in sorted(pieces) for v in pieces[offset]]
            self.assertEqual(values, expected, name)
        # An f32 run loads it.
        code, stdout, _ = run(LOOM, "evaluate", "--model_name_or_path", out, "--validation_file", self.tokens,
                              "--block_size", "32", "--output_dir", self.out("cons-eval"))
        self.assertIn("eval_loss", stdout)
        code, _, stderr = run(LOOM, "consolidate", checkpoint, check=False)
        self.assertEqual(code, 2)
        self.assertIn("usage: loom consolidate CHECKPOINT OUTPUT_DIR", stderr)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
