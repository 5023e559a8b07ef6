"""ZeRO-Offload (zero2 with cpu_offload) on the CPU, with real rank processes: the gradient
partition is copied to host buffers during backward, the step runs on host copies of the
partition, and the update is copied back before the all-gather. Copies move bits, so a run with
offload trains the very same model as one without (and as ddp, with one micro-batch per step),
in fp32, bf16 and fp16, on 1 and 2 ranks; a checkpoint written with offload has the usual layout
and resumes bit for bit, with or without offload; the budget shows device and host states with
the documented formulas; stage 1 refuses cpu_offload in one line."""
import json
import os
import re
import shutil

from loomtest import LOOM, LoomTestCase, free_port, read_safetensors, run, write_tokens

NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]
OFFLOAD = ["--zero2.cpu_offload", "true"]


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def partition(psi, world):
    """zero2's partition length: ceil(psi / world) rounded up to 16384 elements."""
    even = -(-psi // world)
    return -(-even // 16384) * 16384


def budget_line(stdout):
    line = next(l for l in stdout.splitlines() if "memory budget, rank 0" in l)
    values = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+) (\d+) B", line)}
    return line, values


class OffloadTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 20000, 512, 19)

    def train(self, name, world, *extra, check=True, overwrite=True):
        out = self.out(name)
        args = ["train", "--output_dir", out, "--disable_tqdm", "--ddp_timeout", "30", "--train_file", self.tokens,
                "--per_device_train_batch_size", str(4 // world), "--learning_rate", "3e-3", "--logging_steps", "1",
                "--seed", "7", "--max_grad_norm", "0.5", "--weight_decay", "0.1", *NANO, *extra]
        if overwrite:
            args.append("--overwrite_output_dir")
        head = [LOOM]
        if world > 1:
            head = [LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), LOOM]
        code, stdout, stderr = run(*head, *args, check=check)
        return out, code, stdout, stderr

    def losses(self, out):
        with open(os.path.join(out, "trainer_state.json")) as f:
            return [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]

    def test_offload_trains_the_same_bits(self):
        for world in (1, 2):
            for precision in ([], ["--bf16"], ["--fp16"]):
                tag = f"{world}{precision[0][2:] if precision else 'fp32'}"
                with self.subTest(world=world, precision=tag):
                    models, losses = {}, {}
                    for name, extra in (("ddp", ["--plugin", "ddp"]), ("zero2", ["--plugin", "zero2"]),
                                        ("offload", ["--plugin", "zero2", *OFFLOAD])):
                        out, _, stdout, _ = self.train(f"{name}-{tag}", world, *precision, *extra, "--max_steps", "6",
                                                       "--save_strategy", "no")
                        self.assertIn(f"[sharding] {name if name != 'offload' else 'zero2'} ", stdout)
                        models[name] = read_bytes(os.path.join(out, "model.safetensors"))
                        losses[name] = self.losses(out)
                    self.assertEqual(len(losses["offload"]), 6)
                    self.assertEqual(models["offload"], models["zero2"], tag)
                    self.assertEqual(models["offload"], models["ddp"], tag)
                    self.assertEqual(losses["offload"], losses["ddp"], tag)
                    # The model really trained: the weights moved.
                    self.assertNotEqual(losses["offload"][0], losses["offload"][-1])

    def test_offload_with_accumulation_and_overlap(self):
        # Accumulation: zero2's partition sums per micro-batch; the host copy is taken on the last
        # one, and pieces the last micro-batch did not release come from the partition at the end.
        results = {}
        for name, extra in (("zero2", []), ("offload", OFFLOAD),
                            ("offload-overlap", [*OFFLOAD, "--zero2.overlap_comm", "true"])):
            out, _, _, _ = self.train(f"ga-{name}", 2, "--bf16", "--plugin", "zero2", "--max_steps", "5",
                                      "--gradient_accumulation_steps", "3", "--save_strategy", "no", *extra)
            results[name] = read_bytes(os.path.join(out, "model.safetensors"))
        self.assertEqual(results["offload"], results["zero2"])
        self.assertEqual(results["offload-overlap"], results["zero2"])

    def test_budget_splits_device_and_host(self):
        for world, precision, param_bytes in ((2, ["--bf16"], 2), (2, [], 4), (1, ["--fp16"], 2)):
            with self.subTest(world=world, precision=precision):
                _, _, stdout, _ = self.train(f"budget-{world}-{param_bytes}", world, *precision, "--plugin", "zero2",
                                             *OFFLOAD, "--max_steps", "1", "--save_strategy", "no")
                line, b = budget_line(stdout)
                psi = int(re.search(r"\((\d+) parameters", line).group(1))
                p = partition(psi, world)
                mine = min(p, psi)                                  # rank 0's partition
                # Device: the weights and the gradient partition (2 psi + 2 psi / N in 16-bit).
                self.assertEqual(b["device model states"], param_bytes * psi + param_bytes * p)
                # Host: f32 master weights and Adam's two moments of the partition (12 psi / N).
                self.assertEqual(b["host model states"], 12 * mine)
                self.assertEqual(b["master weights"], 4 * mine)
                self.assertEqual(b["optimizer states"], 8 * mine)
                self.assertEqual(b["device total"] + b["host total"], b["total"])
                self.assertIn("device states", stdout)               # the table rank 0 prints
                self.assertIn("host total", stdout)
                # Without offload the optimizer states are the device's.
                _, _, plain, _ = self.train(f"budget-plain-{world}-{param_bytes}", world, *precision, "--plugin",
                                            "zero2", "--max_steps", "1", "--save_strategy", "no")
                _, c = budget_line(plain)
                self.assertEqual(c["device model states"], b["device model states"] + 8 * mine)
                self.assertNotIn("device states", plain)             # a CPU run without offload: no split

    def test_resume_from_an_offload_checkpoint(self):
        full, _, _, _ = self.train("resume-full", 2, "--bf16", "--plugin", "zero2", *OFFLOAD, "--max_steps", "6",
                                   "--save_steps", "3")
        # zero2's layout (docs/checkpoints.md): the model, one optimizer shard per rank with the
        # f32 master weights beside Adam's moments.
        names = set(os.listdir(os.path.join(full, "checkpoint-3")))
        self.assertLessEqual({"model.safetensors", "optimizer.rank-0-of-2.safetensors",
                              "optimizer.rank-1-of-2.safetensors"}, names)
        states = read_safetensors(os.path.join(full, "checkpoint-3", "optimizer.rank-0-of-2.safetensors"))
        self.assertTrue(any("fp32_master" in n for n in states), list(states)[:5])
        for again in (OFFLOAD, []):               # the layout is zero2's: resumable either way
            with self.subTest(offload=bool(again)):
                half = self.out(f"resume-half-{len(again)}")
                shutil.rmtree(half, ignore_errors=True)
                os.makedirs(half)
                shutil.copytree(os.path.join(full, "checkpoint-3"), os.path.join(half, "checkpoint-3"))
                _, _, stdout, _ = self.train(os.path.basename(half), 2, "--bf16", "--plugin", "zero2", *again,
                                             "--max_steps", "6", "--save_steps", "3", overwrite=False)
                self.assertIn("checkpoint detected, resuming training at", stdout)
                self.assertEqual(read_bytes(os.path.join(half, "model.safetensors")),
                                 read_bytes(os.path.join(full, "model.safetensors")))
                self.assertEqual(self.losses(half), self.losses(full))
                for name in os.listdir(os.path.join(full, "checkpoint-6")):
                    if name.endswith(".safetensors"):
                        self.assertEqual(read_bytes(os.path.join(half, "checkpoint-6", name)),
                                         read_bytes(os.path.join(full, "checkpoint-6", name)), name)

    def test_offload_needs_stage_2(self):
        _, code, _, stderr = self.train("zero1-offload", 1, "--plugin", "zero1", "--zero1.cpu_offload", "true",
                                        "--max_steps", "1", check=False)
        self.assertNotEqual(code, 0)
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, stderr)
        self.assertIn("cpu_offload needs ZeRO stage 2", lines[0])
        config = os.path.join(self.tmp, "ds1.json")
        with open(config, "w") as f:
            json.dump({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}, f)
        _, code, _, stderr = self.train("ds1-offload", 1, "--deepspeed", config, "--max_steps", "1", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("requires stage 2", stderr)

    def test_deepspeed_offload_optimizer_turns_it_on(self):
        config = os.path.join(self.tmp, "ds2.json")
        with open(config, "w") as f:
            json.dump({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, f)
        _, _, stdout, _ = self.train("ds2-offload", 1, "--deepspeed", config, "--max_steps", "1",
                                     "--save_strategy", "no")
        self.assertIn("zero2.cpu_offload = true", stdout)
        _, b = budget_line(stdout)
        self.assertEqual(b["optimizer states"] + b["master weights"], b["host model states"])


if __name__ == "__main__":
    import unittest
    unittest.main()
