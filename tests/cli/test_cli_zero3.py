"""ZeRO stage 3 (docs/architecture.md#zero-3) with real processes over Gloo: the parameters are
partitioned between uses and gathered block by block, so every rank holds its own range plus
the model's working set; the update is zero2's, bit for bit. Evaluation, checkpoints, resuming
and the best model gather the whole model for their span; the models that cannot read a
parameter source are refused in one line."""
import json
import os
import re
import unittest

import shutil

from loomtest import BUILD, GPT2_NANO, LOOM, TokensTestCase, free_port, loom, read_safetensors, run, write_pairs, write_tokens

class Zero3Test(TokensTestCase):

    def train(self, name, world, plugin, *extra, steps=12, accumulation=1, env=None):
        out = self.out(name)
        choose = ["--plugin", plugin] if plugin else []
        args = self.train_args(out, *choose, *GPT2_NANO, "--train_file", self.tokens, "--per_device_train_batch_size",
                               str(8 // world), "--max_steps", str(steps), "--gradient_accumulation_steps",
                               str(accumulation), "--max_grad_norm", "0.5", "--weight_decay", "0.1",
                               "--learning_rate", "3e-3", "--logging_steps", "1", "--ddp_timeout", "30", *extra)
        if world == 1:
            _, stdout, stderr = loom(*args, env=env)
        else:
            _, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args,
                                    env=env)
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            model = f.read()
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        return out, model, losses, stdout + stderr

    def budget(self, text, rank, what):
        return int(re.search(rf"\[rank {rank}\] loom: memory budget.*{what} (\d+) B", text).group(1))

    def test_zero3_trains_zero2s_bits(self):
        """One micro-batch: zero2's and ddp's bits; with accumulation, zero2's (the same
        reduction order, micro-batch by micro-batch); fp32, bf16 and fp16 (with NEFTune and label
        smoothing, which read the gathered embeddings), with gradient checkpointing,
        overlap_comm and 2 or 3 ranks (a partition boundary inside a block)."""
        for world in (2, 3):
            _, ddp, ddp_losses, _ = self.train(f"d{world}", world, "ddp")
            _, z3, z3_losses, text = self.train(f"z{world}", world, "zero3")
            self.assertIn("[sharding] zero3 ", text)
            self.assertEqual(z3, ddp, f"zero3 != ddp at {world} ranks")
            self.assertEqual(z3_losses, ddp_losses)
        cases = {"plain": ([], []), "bf16": (["--bf16"], []), "checkpointing": (["--gradient_checkpointing"], []),
                 "overlap": ([], ["--zero3.overlap_comm", "true"]),
                 "fp16": (["--fp16", "--neftune_noise_alpha", "5", "--label_smoothing_factor", "0.1"], [])}
        for name, (both, only3) in cases.items():
            _, z2, z2_losses, _ = self.train(f"z2a-{name}", 2, "zero2", *both, accumulation=3)
            _, z3, z3_losses, _ = self.train(f"z3a-{name}", 2, "zero3", *both, *only3, accumulation=3)
            self.assertEqual(z3, z2, f"zero3 != zero2: {name}")
            self.assertEqual(z3_losses, z2_losses)

    def test_mlp(self):
        """The mlp acquires a layer at a time: 2 ranks of zero3 train ddp's bits and evaluate
        to ddp's losses."""
        models, evals = {}, {}
        for plugin in ("ddp", "zero3"):
            out = self.out(f"mlp-{plugin}")
            run(LOOM, "launch", "--nproc_per_node", 2, "--master_port", free_port(),
                *self.train_args(out, "--plugin", plugin, "--max_steps", "20", "--per_device_train_batch_size", "8",
                                 "--ddp_timeout", "30", "--eval_strategy", "steps", "--eval_steps", "10",
                                 "--validation_file", os.path.join(self.data, "train.bin")))
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                models[plugin] = f.read()
            evals[plugin] = [e["eval_loss"] for e in self.state(out)["log_history"] if "eval_loss" in e]
        self.assertEqual(models["zero3"], models["ddp"])
        self.assertEqual(len(evals["zero3"]), 2)
        self.assertEqual(evals["zero3"], evals["ddp"])

    def test_evaluation_checkpoints_resume_and_best(self):
        """Evaluation gathers block by block in lockstep: 93 examples in batches of 23 are 3
        batches on one rank and 2 on the other, which runs one more forward that counts for
        nothing; a rank without any batch makes the pass gather the whole model instead. Both
        give ddp's eval losses. A checkpoint of zero3 resumes into the same bits as the run that
        went on; the best model loads back on every rank."""
        eval_file = os.path.join(self.tmp, "z3eval.bin")
        write_tokens(eval_file, 3000, 512, 29)
        common = ["--validation_file", eval_file, "--eval_strategy", "steps", "--eval_steps", "4",
                  "--save_strategy", "steps", "--save_steps", "4", "--per_device_eval_batch_size", "23"]
        tiny = os.path.join(self.tmp, "z3tiny.bin")
        write_tokens(tiny, 40, 512, 31)
        one = ["--validation_file", tiny, "--eval_strategy", "steps", "--eval_steps", "4"]
        out1, _, _, _ = self.train("one3", 2, "zero3", *one, steps=8)
        out1d, _, _, _ = self.train("oned", 2, "ddp", *one, steps=8)
        evals = [[e["eval_loss"] for e in self.state(o)["log_history"] if "eval_loss" in e] for o in (out1, out1d)]
        self.assertEqual(len(evals[0]), 2)
        self.assertEqual(evals[0], evals[1])
        out, full, losses, _ = self.train("full", 2, "zero3", *common, steps=12)
        _, ddp, ddp_losses, _ = self.train("fullddp", 2, "ddp", *common, steps=12)
        self.assertEqual(full, ddp)
        evals = [e["eval_loss"] for e in self.state(out)["log_history"] if "eval_loss" in e]
        ddp_evals = [e["eval_loss"] for e in self.state(self.out("fullddp"))["log_history"] if "eval_loss" in e]
        self.assertEqual(len(evals), 3)
        self.assertEqual(evals, ddp_evals)
        # The checkpoint holds the whole model (gathered) and zero2's shard layout.
        ckpt = os.path.join(out, "checkpoint-8")
        tensors = read_safetensors(os.path.join(ckpt, "model.safetensors"))
        self.assertEqual(len(tensors["transformer.wte.weight"][2]), 512 * 64)
        self.assertTrue(any(abs(v) > 0 for v in tensors["transformer.h.1.mlp.c_proj.weight"][2]))
        self.assertTrue(os.path.exists(os.path.join(ckpt, "optimizer.rank-1-of-2.safetensors")))
        # Resume from step 8: the same final bits.
        out2 = self.out("resumed")
        shutil.rmtree(out2, ignore_errors=True)
        shutil.copytree(ckpt, os.path.join(out2, "checkpoint-8"))
        args = self.train_args(out2, "--plugin", "zero3", *GPT2_NANO, "--train_file", self.tokens,
                               "--per_device_train_batch_size", "4", "--max_steps", "12", "--max_grad_norm", "0.5",
                               "--weight_decay", "0.1", "--learning_rate", "3e-3", "--logging_steps", "1",
                               "--ddp_timeout", "30", *common, "--resume_from_checkpoint",
                               os.path.join(out2, "checkpoint-8"))
        args.remove("--overwrite_output_dir")
        run(LOOM, "launch", "--nproc_per_node", 2, "--master_port", free_port(), *args)
        with open(os.path.join(out2, "model.safetensors"), "rb") as f:
            self.assertEqual(f.read(), full)
        # load_best_model_at_end: the best checkpoint's weights end on every rank.
        out3, best_model, _, _ = self.train("best", 2, "zero3", *common, "--load_best_model_at_end", "true",
                                            "--metric_for_best_model", "loss", steps=12)
        best = self.state(out3)["best_model_checkpoint"]
        with open(os.path.join(best, "model.safetensors"), "rb") as f:
            self.assertEqual(best_model, f.read())

    def test_ranks_hold_their_partition_only(self):
        """Between uses a rank keeps only its own range of the parameters (the plugin gives the
        other pages back): with 12 blocks of 384 wide (21.5 M parameters, 86 MB in f32) on 2
        ranks, each rank's peak RSS over two steps, an evaluation and a checkpoint is below
        zero2's by at least a quarter of the model (half of it less one block's working set is
        what it saves), and the printed budget says so."""
        eval_file = os.path.join(self.tmp, "memeval.bin")
        write_tokens(eval_file, 3000, 512, 37)
        # An evaluation and a checkpoint too: neither may gather the whole model on any rank.
        big = ["--gpt2.n_layer", "12", "--gpt2.n_embd", "384", "--gpt2.n_head", "6", "--log_level", "debug",
               "--log_level_replica", "debug", "--validation_file", eval_file, "--eval_strategy", "steps",
               "--eval_steps", "2", "--save_steps", "2"]
        model_bytes = 4 * (12 * (12 * 384 * 384 + 13 * 384) + 576 * 384 + 2 * 384)
        peaks, budgets = {}, {}
        for plugin in ("zero2", "zero3"):
            _, _, _, text = self.train(f"mem{plugin}", 2, plugin, *big, steps=2)
            peaks[plugin] = [float(re.search(rf"peak resident memory, rank {r}: ([0-9.]+) MiB", text).group(1))
                             * 1048576 for r in range(2)]
            budgets[plugin] = [self.budget(text, r, "parameters") for r in range(2)]
        for r in range(2):
            self.assertEqual(budgets["zero2"][r], model_bytes)
            self.assertLess(budgets["zero3"][r], model_bytes * 0.7)
            self.assertLess(peaks["zero3"][r], peaks["zero2"][r] - model_bytes / 4, f"rank {r}: {peaks}")

    def test_hf_routes(self):
        """The ways an HF user asks for ZeRO-3 run zero3 and train what their ZeRO-2 twins
        train: DeepSpeed's stage 3 (the shipped example config), FSDP's full_shard and
        FairScale's zero_dp_3."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "examples", "deepspeed", "ds_zero3.json")) as f:
            config = json.load(f)
        stage2 = dict(config, zero_optimization={k: v for k, v in config["zero_optimization"].items()
                                                 if not k.startswith("stage3_") and k != "offload_param"})
        stage2["zero_optimization"]["stage"] = 2
        stage2_path = os.path.join(self.tmp, "ds_stage2.json")
        with open(stage2_path, "w") as f:
            json.dump(stage2, f)
        routes = {"ds": (["--deepspeed", os.path.join(root, "examples", "deepspeed", "ds_zero3.json")],
                         ["--deepspeed", stage2_path]),
                  "fsdp": (["--fsdp", "full_shard"], ["--fsdp", "shard_grad_op"]),
                  "fairscale": (["--sharded_ddp", "zero_dp_3"], ["--sharded_ddp", "zero_dp_2"])}
        for name, (three, two) in routes.items():
            _, z3, z3_losses, text = self.train(f"route3-{name}", 2, None, *three)
            _, z2, z2_losses, text2 = self.train(f"route2-{name}", 2, None, *two)
            self.assertIn("[sharding] zero3 ", text, name)
            self.assertIn("[sharding] zero2 ", text2, name)
            self.assertEqual(z3, z2, name)
            self.assertEqual(z3_losses, z2_losses, name)

    def test_t5(self):
        """t5 acquires `shared` for a forward, each block and final norm while it runs: 2 ranks
        of zero3 train zero2's bits on pairs and log the same evaluation (11 examples in batches
        of 3, with predict_with_generate, which gathers the whole model for generation)."""
        pairs = os.path.join(self.tmp, "pairs.jsonl")
        write_pairs(pairs, 96, 3)
        dev = os.path.join(self.tmp, "pairs-dev.jsonl")
        write_pairs(dev, 11, 4)
        common = ["--train_file", pairs, "--validation_file", dev, "--max_steps", "4", "--logging_steps", "1",
                  "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "3", "--eval_strategy",
                  "steps", "--eval_steps", "4", "--predict_with_generate", "--generation_max_length", "6",
                  "--ddp_timeout", "30", "--disable_tqdm", "true", "--overwrite_output_dir"]
        got = {}
        for plugin in ("zero2", "zero3"):
            out = self.out(f"t5-{plugin}")
            _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", 2, "--master_port", free_port(), "train",
                               "--output_dir", out, "--plugin", plugin, *common)
            self.assertIn(f"[sharding] {plugin} ", stdout)
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                got[plugin] = (f.read(), [{k: v for k, v in e.items() if not k.endswith(("_runtime", "_per_second"))}
                                          for e in self.state(out)["log_history"]])
        self.assertEqual(got["zero3"], got["zero2"])
        self.assertTrue(any("eval_loss" in e for e in got["zero3"][1]))

    def test_refusals(self):
        """A model plugin built before ABI 1.12 reads its parameters whole: refused in one line,
        naming both plugins."""
        old = os.path.join(BUILD, "tests", "trainer-fixtures", "mlp_abi19.so")
        line = self.assert_error(["train", "--output_dir", self.out("old"), "--overwrite_output_dir", "--plugin",
                                  "zero3", "--model", old, "--train_file", os.path.join(self.data, "train.bin"),
                                  "--max_steps", "1", "--disable_tqdm", "true"], "zero3", status=None)
        self.assertIn("'mlp'", line)
        self.assertIn("ABI 1.12", line)


if __name__ == "__main__":
    unittest.main()
