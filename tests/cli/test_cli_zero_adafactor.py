"""Adafactor (HF's --adafactor / --optim adafactor) under ZeRO stages 1 and 2, with real rank
processes over Gloo. Adafactor needs whole tensors (RMS and row/column means), so zero1/zero2 cut
their partitions at tensor boundaries for it (plugins/sharding/zero_whole.h). Adafactor is per
tensor and the gradients are the same bits (canonical rank-order sums), so zero1 and zero2 train
the very model ddp trains, byte for byte, with the same factored second moments in their
checkpoint shards (each a whole tensor, on exactly one rank). A rank that owns no tensor (more
ranks than the partition needs; fp32 or bf16) trains, checkpoints and resumes like the others;
a zero2 checkpoint resumes exactly, under zero2 or another strategy."""
import json
import os
import random
import re
import shutil
import unittest

from loomtest import LOOM, LoomTestCase, free_port, loom, read_safetensors, run, write_tokens

GPT2 = ("--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64", "--gpt2.vocab_size",
        "512", "--gpt2.n_positions", "64", "--block_size", "32")
# tests/cli/test_cli_seq2seq.py's tiny t5, without dropout.
T5 = ("--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64", "--num_layers",
      "2", "--dropout_rate", "0")
STATES = ("exp_avg", "exp_avg_sq", "exp_avg_sq_col")


class ZeroAdafactorTest(LoomTestCase):
    data_kind = "blobs"

    def train(self, name, world, plugin, *extra, model=GPT2, batch=8, resume=None, data=None):
        tokens = os.path.join(self.tmp, "tokens.bin")
        if not os.path.exists(tokens):
            write_tokens(tokens, 30000, 512, 23)
        out = self.out(name)
        data = data if data is not None else ("--train_file", tokens) if model else ()
        args = self.train_args(out, *model, *data, "--per_device_train_batch_size", str(batch // world),
                               "--max_steps", "10", "--max_grad_norm", "0.5", "--weight_decay", "0.1",
                               "--learning_rate", "3e-3", "--logging_steps", "1", "--save_steps", "5",
                               "--ddp_timeout", "30", *extra)
        if resume:
            args += ["--resume_from_checkpoint", resume]
        if plugin != "none":
            args += ["--plugin", plugin]
        if world == 1:
            _, stdout, _ = loom(*args)
        else:
            _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args)
        self.assertIn(f"[sharding] {plugin} ", stdout)
        self.assertIn("[optimizer] adafactor ", stdout)
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return out, f.read(), stdout

    def states(self, checkpoint):
        """Every optimizer state entry of a checkpoint, from whichever file holds it, and which
        file that was (an entry in two files is an error)."""
        found, where = {}, {}
        for name in sorted(os.listdir(checkpoint)):
            if not name.startswith("optimizer"):
                continue
            for key, value in read_safetensors(os.path.join(checkpoint, name)).items():
                self.assertNotIn(key, found, f"{key} in {where.get(key)} and {name}")
                found[key], where[key] = value, name
        return found, where

    def test_gpt2_zero1_zero2_equal_ddp_bitwise(self):
        self.train("none1", 1, "none", "--optim", "adafactor")
        ddp_out, ddp, _ = self.train("ddp2", 2, "ddp", "--optim", "adafactor")
        z1_out, z1, stdout = self.train("zero1", 2, "zero1", "--optim", "adafactor")
        z2_out, z2, _ = self.train("zero2", 2, "zero2", "--adafactor")
        z2o_out, z2o, _ = self.train("zero2o", 2, "zero2", "--adafactor", "--zero2.overlap_comm", "true")
        self.assertEqual(z1, ddp, "zero1 + adafactor != ddp + adafactor")
        self.assertEqual(z2, ddp, "zero2 + adafactor != ddp + adafactor")
        self.assertEqual(z2o, ddp)
        # One process sums the batch's gradients in another order: the same training to
        # round-off, except where the gradient is round-off only. The key third of c_attn.bias
        # cannot change the attention (softmax ignores a shift of every score of a row), so its
        # exact gradient is zero, and Adafactor scales whatever noise is there up to lr-sized
        # steps (as HF's does): those elements differ by ~lr x steps (2e-2 here), the rest of
        # that small-gradient bias by up to ~2e-4, every other tensor by ~1e-5.
        losses = {n: [e["loss"] for e in self.state(self.out(n))["log_history"] if "loss" in e]
                  for n in ("none1", "ddp2")}
        for x, y in zip(losses["none1"], losses["ddp2"]):
            self.assertAlmostEqual(x, y, delta=1e-5 * abs(x))
        a, b = (read_safetensors(os.path.join(self.out(n), "model.safetensors")) for n in ("none1", "ddp2"))
        for name in a:
            keys = range(64, 128) if name.endswith("attn.c_attn.bias") else ()
            worst = max(abs(x - y) for i, (x, y) in enumerate(zip(a[name][2], b[name][2])) if i not in keys)
            self.assertLess(worst, 1e-3 if keys else 5e-5, name)
        # Each rank's optimizer states are a run of whole tensors, about half of them each.
        budgets = {int(r): int(n) for r, n in
                   re.findall(r"\[rank (\d+)\] loom: memory budget.*optimizer states (\d+) B", stdout)}
        self.assertEqual(len(budgets), 2)
        self.assertTrue(all(n > 0 for n in budgets.values()), budgets)
        # The checkpoints: every state (the factored row and column moments included) the same
        # bits as ddp's, each whole tensor in exactly one rank's shard.
        want, _ = self.states(os.path.join(ddp_out, "checkpoint-10"))
        self.assertEqual(sorted(k.rsplit(".", 1)[1] for k in want if k.startswith("transformer.h.0.mlp.c_fc.weight.")),
                         sorted(STATES))
        for out in (z1_out, z2_out, z2o_out):
            got, where = self.states(os.path.join(out, "checkpoint-10"))
            self.assertEqual(sorted(set(where.values())), ["optimizer.rank-0-of-2.safetensors",
                                                           "optimizer.rank-1-of-2.safetensors"])
            self.assertFalse([k for k in got if "@" in k])         # no tensor cut between ranks
            self.assertEqual(got.keys(), want.keys())
            for key in want:
                self.assertEqual(got[key][2], want[key][2], f"{out}: {key}")
            col = [k for k in got if k.endswith(".exp_avg_sq_col")]
            self.assertTrue(any(any(x != 0.0 for x in got[k][2]) for k in col))   # really factored

    def test_t5_zero1_zero2_equal_ddp_bitwise(self):
        pairs = os.path.join(self.tmp, "pairs.jsonl")
        r = random.Random(3)
        with open(pairs, "w") as f:
            for _ in range(200):
                s = [r.randint(3, 12) for _ in range(r.randint(1, 6))]
                f.write(json.dumps({"input_ids": s + [1], "labels": s[::-1] + [1]}) + "\n")
        models = {p: self.train(f"t5-{p}", 2, p, "--adafactor", model=T5, batch=16, data=("--train_file", pairs))[1]
                  for p in ("ddp", "zero1", "zero2")}
        self.assertEqual(models["zero1"], models["ddp"])
        self.assertEqual(models["zero2"], models["ddp"])

    def test_zero2_resume_is_exact(self):
        full_out, full, _ = self.train("full", 2, "zero2", "--adafactor")
        part_out, _, _ = self.train("part", 2, "zero2", "--adafactor")
        shutil.rmtree(os.path.join(part_out, "checkpoint-10"))
        checkpoint = os.path.join(part_out, "checkpoint-5")
        _, resumed, _ = self.train("part", 2, "zero2", "--adafactor", resume=checkpoint)
        self.assertEqual(resumed, full, "zero2 + adafactor resumed != uninterrupted")
        # The shards name whole tensors, so another strategy re-cuts them and goes on exactly.
        for plugin in ("zero1", "ddp"):
            _, other, _ = self.train(f"from-zero2-{plugin}", 2, plugin, "--adafactor", resume=checkpoint)
            self.assertEqual(other, full, f"zero2 checkpoint resumed under {plugin}")

    def test_a_rank_that_owns_nothing(self):
        # The default MLP's six tensors (384, 64, 4096, 64, 256, 4 elements) on 4 ranks: the
        # 4096-element weight sets the partition, the others fit beside it in 3 ranks, the 4th
        # owns nothing.
        results = {}
        for plugin in ("ddp", "zero1", "zero2"):
            out, model, stdout = self.train(f"mlp-{plugin}", 4, plugin, "--adafactor", model=(), batch=32)
            results[plugin] = model
            if plugin != "ddp":
                budgets = {int(r): int(n) for r, n in
                           re.findall(r"\[rank (\d+)\] loom: memory budget.*optimizer states (\d+) B", stdout)}
                self.assertEqual(budgets[3], 0, stdout)
                self.assertEqual(sum(budgets.values()), 3 * 4 * (384 + 64 + 4096 + 64 + 256 + 4))
        self.assertEqual(results["zero1"], results["ddp"])
        self.assertEqual(results["zero2"], results["ddp"])
        # Its (empty) shard is written and read back: a resume ends where the run did.
        part = self.out("mlp-zero2")
        shutil.rmtree(os.path.join(part, "checkpoint-10"))
        _, resumed, _ = self.train("mlp-zero2", 4, "zero2", "--adafactor", model=(), batch=32,
                                   resume=os.path.join(part, "checkpoint-5"))
        self.assertEqual(resumed, results["ddp"])

    def test_ranks_that_own_nothing_in_bf16(self):
        # A gpt2 whose embedding (4096 elements) outweighs the rest (~1000) together: on 4 ranks
        # rank 0 owns the embedding, rank 1 the rest, ranks 2 and 3 nothing; in bf16 the master
        # weights are partitioned the same way.
        tiny = ("--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "8",
                "--gpt2.vocab_size", "512", "--gpt2.n_positions", "16", "--block_size", "8", "--bf16")
        models = {p: self.train(f"bf16-{p}", 4, p, "--adafactor", model=tiny)[1] for p in ("ddp", "zero1", "zero2")}
        self.assertEqual(models["zero1"], models["ddp"])
        self.assertEqual(models["zero2"], models["ddp"])
        checkpoint = os.path.join(self.out("bf16-zero2"), "checkpoint-10")
        held = [len(read_safetensors(os.path.join(checkpoint, f"optimizer.rank-{r}-of-4.safetensors")))
                for r in range(4)]
        self.assertEqual(held[0], 4)                  # wte's three states and its fp32 master
        self.assertGreater(held[1], 4)
        self.assertEqual(held[2:], [0, 0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
