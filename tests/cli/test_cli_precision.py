"""Mixed precision end to end: --fp16 / --bf16 / apex levels / a ds_config's fp16 section train
GPT-2 with real ranks; an overflow on ONE rank skips the step on every rank and leaves the
parameters, optimizer states and schedule exactly as they were; zero2 equals ddp bit for bit in
16-bit too; repeated overflow at the minimum scale stops the run with a message."""
import json
import os

from loomtest import BIN, LOOM, LoomTestCase, free_port, read_safetensors, run, write_tokens

INJECT = os.path.join(BIN, "inject_overflow")
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]




def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


class PrecisionTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 20000, 512, 11)

    def train(self, name, world, *args, program=None, check=True):
        out = self.out(name)
        common = ["--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "--ddp_timeout", "30",
                  "--train_file", self.tokens, "--per_device_train_batch_size", "4", "--learning_rate", "3e-3",
                  "--logging_steps", "1", "--seed", "5", *NANO, *args]
        head = [program] if program else [LOOM, "train"]
        if world > 1:
            head = [LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *head]
        code, stdout, stderr = run(*head, *common, check=check)
        return out, code, stdout, stderr

    def test_overflow_on_one_rank_skips_the_step_on_every_rank(self):
        for precision, sharding in (("--fp16", "ddp"), ("--fp16", "zero2"), ("--bf16", "zero1")):
            with self.subTest(precision=precision, sharding=sharding):
                out, _, stdout, stderr = self.train(f"inject-{precision[2:]}-{sharding}", 2, precision, "--plugin", sharding,
                                               "--max_steps", "5", "--save_steps", "1", "--inject_step", "3",
                                               "--inject_rank", "1", program=INJECT)
                before, after = os.path.join(out, "checkpoint-2"), os.path.join(out, "checkpoint-3")
                # Parameters, optimizer states (every shard) and the schedule: untouched.
                names = sorted(n for n in os.listdir(before) if n.startswith(("model.", "optimizer")))
                self.assertTrue(any(n.startswith("optimizer") for n in names), names)
                for n in names:
                    self.assertEqual(read_bytes(os.path.join(before, n)), read_bytes(os.path.join(after, n)), n)
                self.assertEqual(read_json(os.path.join(before, "scheduler.json")),
                                 read_json(os.path.join(after, "scheduler.json")))
                scale2 = read_json(os.path.join(before, "scaler.json"))
                scale3 = read_json(os.path.join(after, "scaler.json"))
                self.assertEqual(scale3["skipped_steps"], 1)
                if precision == "--fp16":   # torch GradScaler: backoff 0.5
                    self.assertEqual(scale2["loss_scale"], 65536)
                    self.assertEqual(scale3["loss_scale"], 32768)
                else:
                    self.assertEqual(scale3["loss_scale"], 1)
                # Training goes on after the skipped step.
                self.assertNotEqual(read_bytes(os.path.join(after, "model.safetensors")),
                                    read_bytes(os.path.join(out, "checkpoint-4", "model.safetensors")))
                logs = [e for e in self.state(out)["log_history"] if "loss" in e]
                self.assertEqual(len(logs), 5)
                self.assertTrue(all("loss_scale" in e and "skipped_steps" in e for e in logs), logs)
                self.assertEqual([e["skipped_steps"] for e in logs], [0, 0, 1, 1, 1])
                self.assertIn("step 3: overflow", stdout + stderr)
                # The skipped step's norm is not finite (null in JSON), not step 2's repeated.
                self.assertIsNone(logs[2]["grad_norm"])
                self.assertTrue(all(e["grad_norm"] > 0 for i, e in enumerate(logs) if i != 2), logs)

    def test_zero2_equals_ddp_bit_for_bit_in_16_bit(self):
        for precision in ("--fp16", "--bf16"):
            results = {}
            for sharding in ("ddp", "zero2", "sharded_ddp"):
                out, _, stdout, _ = self.train(f"parity{precision[2:]}-{sharding}", 2, precision, "--plugin", sharding,
                                               "--max_steps", "8", "--max_grad_norm", "1.0", "--weight_decay", "0.01")
                results[sharding] = read_bytes(os.path.join(out, "model.safetensors"))
                tensors = read_safetensors(os.path.join(out, "model.safetensors"))
                self.assertIn("F16" if precision == "--fp16" else "BF16", {t[0] for t in tensors.values()})
            self.assertEqual(results["zero2"], results["ddp"], precision)
            self.assertEqual(results["sharded_ddp"], results["ddp"], precision)

    def test_memory_budget_follows_the_mixed_precision_formulas(self):
        import re
        psi = None
        for sharding, world in (("none", 1), ("zero1", 2), ("zero2", 2)):
            out, _, stdout, _ = self.train(f"budget-{sharding}", world, "--bf16", "--plugin", sharding, "--max_steps", "1")
            line = next(l for l in stdout.splitlines() if "memory budget" in l and ("rank 0" in l or world == 1))
            b = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+) (\d+) B", line)}
            psi = int(re.search(r"\((\d+) parameters", line).group(1))
            self.assertEqual(b["parameters"], 2 * psi)                         # 16-bit weights
            self.assertEqual(b["gradient workspace"], 0)                       # lent: the activations
            states = b["master weights"] + b["optimizer states"]               # K = 12: f32 master, m, v
            if sharding == "none":
                self.assertEqual(b["gradients"], 2 * psi)
                self.assertEqual(states, 12 * psi)
                self.assertEqual(b["model states"], 16 * psi)                  # (2 + 2 + 12) psi
            else:
                part = b["optimizer states"] // 8                              # this rank's elements
                self.assertEqual(b["master weights"], 4 * part)
                self.assertLess(part, psi)                                     # a partition (rank 0's is whole)
                if sharding == "zero2":
                    self.assertEqual(b["gradients"], 2 * part)                 # 2 psi + 14 psi / N
                else:
                    self.assertGreaterEqual(b["gradients"], 2 * psi)           # 4 psi + 12 psi / N

    def test_the_step_in_pieces_equals_the_whole_range_step(self):
        """With master weights and an element-wise optimizer the step widens the gradients a
        piece at a time (docs/architecture.md#piecewise-step); LOOM_STEP_PIECES=0 takes the
        whole-range path. A model of several pieces (930k parameters, 262144 a piece), the
        pieces cut inside tensors and, on 2 ranks, inside a partition: the same bits, with
        clipping, weight decay, a skipped step, apex O3's re-read master and sgd."""
        wide = ["--gpt2.n_embd", "128", "--gpt2.vocab_size", "4096", "--max_grad_norm", "0.5",
                "--weight_decay", "0.01", "--max_steps", "4", "--save_steps", "4"]
        cases = (("bf16", 1, ["--bf16"], None),
                 ("fp16-skip", 1, ["--fp16", "--inject_step", "2"], INJECT),
                 ("apex-O3", 1, ["--fp16", "--fp16_backend", "apex", "--fp16_opt_level", "O3"], None),
                 ("sgd", 1, ["--bf16", "--optim", "sgd"], None),
                 ("bf16-zero1", 2, ["--bf16", "--plugin", "zero1"], None))
        for name, world, extra, program in cases:
            with self.subTest(case=name):
                runs = {}
                for mode in ("1", "0"):
                    os.environ["LOOM_STEP_PIECES"] = mode
                    try:
                        out, _, _, _ = self.train(f"pieces-{name}-{mode}", world, *wide, *extra, program=program)
                    finally:
                        del os.environ["LOOM_STEP_PIECES"]
                    checkpoint = os.path.join(out, "checkpoint-4")
                    files = sorted(n for n in os.listdir(checkpoint) if n.endswith(".safetensors"))
                    self.assertTrue(any(n.startswith("optimizer") for n in files), files)
                    logs = [e for e in self.state(out)["log_history"] if "loss" in e]
                    runs[mode] = ({n: read_bytes(os.path.join(checkpoint, n)) for n in files},
                                  [e["grad_norm"] for e in logs], [e.get("skipped_steps", 0) for e in logs])
                self.assertEqual(runs["1"], runs["0"])
                self.assertEqual(len(runs["1"][1]), 4)
                self.assertEqual(runs["1"][2], [0, 1, 1, 1] if program else [0] * 4)

    def test_repeated_overflow_at_the_minimum_scale_stops_the_run(self):
        config = os.path.join(self.tmp, "ds_min.json")
        with open(config, "w") as f:
            json.dump({"fp16": {"enabled": True, "initial_scale_power": 2, "hysteresis": 1, "min_loss_scale": 1}}, f)
        out, code, stdout, stderr = self.train("stuck", 1, "--deepspeed", config, "--max_steps", "40",
                                               "--inject_step", "2", "--inject_count", "100", program=INJECT,
                                               check=False)
        self.assertNotEqual(code, 0, stdout + stderr)
        self.assertIn("minimum", stderr)
        self.assertNotIn("Traceback", stderr)

    def test_deepspeed_fp16_section_and_apex_levels_train(self):
        config = os.path.join(self.tmp, "ds_fp16.json")
        with open(config, "w") as f:
            json.dump({"fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 12,
                                "loss_scale_window": 4, "hysteresis": 2, "min_loss_scale": 1},
                       "zero_optimization": {"stage": 2}}, f)
        out, _, stdout, _ = self.train("ds-fp16", 2, "--fp16", "--deepspeed", config, "--max_steps", "12")
        self.assertIn("[precision] amp ", stdout)
        self.assertIn("amp.scaler = deepspeed", stdout)
        logs = [e for e in self.state(out)["log_history"] if "loss" in e]
        # DeepSpeed's scaler: 2^12, doubled after every 4 clean steps (the first at iteration 3).
        self.assertEqual([e["loss_scale"] for e in logs][:9], [4096] * 3 + [8192] * 4 + [16384] * 2)
        out, _, _, _ = self.train("ds-fp32", 2, "--plugin", "zero2", "--max_steps", "12")
        reference = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        for ours, theirs in zip([e["loss"] for e in logs], reference):
            self.assertAlmostEqual(ours, theirs, delta=0.01 * theirs)
        out, _, _, _ = self.train("apex-fp32", 1, "--max_steps", "6")
        reference = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        for level in ("O0", "O1", "O2", "O3"):
            with self.subTest(level=level):
                out, _, stdout, _ = self.train(f"apex-{level}", 1, "--fp16", "--fp16_backend", "apex",
                                               "--fp16_opt_level", level, "--max_steps", "6")
                self.assertIn("[precision] apex ", stdout)
                losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
                self.assertEqual(len(losses), len(reference))
                for ours, theirs in zip(losses, reference):   # the same run, in 16-bit
                    self.assertAlmostEqual(ours, theirs, delta=0.01 * theirs)
                if level == "O0":
                    self.assertEqual(losses, reference)
                tensors = read_safetensors(os.path.join(out, "model.safetensors"))
                self.assertEqual({t[0] for t in tensors.values()}, {"F32" if level in ("O0", "O1") else "F16"})


if __name__ == "__main__":
    import unittest
    unittest.main()
