"""HF's --optim names end to end (docs/semantics/optimizers.md#optim-names): the names that are
torch.optim.AdamW under another kernel (adamw_torch_fused, HF's default with torch >= 2.8, and
the xla, npu and apex ones) train the very bytes adamw_torch trains; adagrad, rmsprop and
lion_32bit get the hyper-parameters HF's Trainer gives them, learn, train the same bytes under
ddp, zero1 and zero2 with the same states in their checkpoints, and resume exactly; every other
OptimizerNames value is refused in one line that names the optimizer and why."""
import os
import re
import shutil
import unittest

from loomtest import GPT2_NANO, LOOM, LoomTestCase, free_port, loom, read_safetensors, run, write_tokens

# Slots of each new optimizer, in the order their checkpoint entries are named.
STATES = {"adagrad": ["sum"], "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"], "lion": ["exp_avg"]}
# A learning rate each rule trains the blobs model with, and extra keys that exercise its state.
RULES = {"adagrad": ("5e-2", ()), "rmsprop": ("1e-3", ("--rmsprop.momentum", "0.9", "--rmsprop.centered", "true")),
         "lion_32bit": ("1e-3", ())}
# Every OptimizerNames value loom refuses (transformers main at 00349ae8), with a word its line must hold.
REFUSED = {
    "adamw_bnb_8bit": "8 bits", "adamw_8bit": "8 bits", "paged_adamw_8bit": "paged", "lion_8bit": "lion_32bit",
    "paged_lion_8bit": "lion_32bit", "rmsprop_bnb_8bit": "rmsprop_bnb_32bit", "ademamix_8bit": "AdEMAMix",
    "paged_ademamix_8bit": "AdEMAMix", "paged_adamw_32bit": "paged", "paged_lion_32bit": "lion_32bit",
    "paged_ademamix_32bit": "AdEMAMix", "ademamix": "AdEMAMix", "adamw_torch_4bit": "torchao",
    "adamw_torch_8bit": "torchao", "adamw_anyprecision": "AnyPrecisionAdamW", "galore_adamw": "GaLore",
    "galore_adamw_8bit": "GaLore", "galore_adafactor": "GaLore", "galore_adamw_layerwise": "layer-wise",
    "galore_adamw_8bit_layerwise": "layer-wise", "galore_adafactor_layerwise": "layer-wise",
    "apollo_adamw": "APOLLO", "apollo_adamw_layerwise": "layer-wise", "lomo": "LOMO", "adalomo": "AdaLomo",
    "grokadamw": "GrokAdamW", "schedule_free_adamw": "schedule-free", "schedule_free_sgd": "schedule-free",
    "schedule_free_radam": "schedule-free", "stable_adamw": "StableAdamW", "lamb": "--plugin lamb",
}


def model_bytes(out):
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        return f.read()


def whole_states(checkpoint):
    """Every optimizer state of a checkpoint as whole tensors: pieces "<key>@<offset>" from the
    rank shards put back in offset order (an independent reassembly)."""
    pieces = {}
    for name in sorted(os.listdir(checkpoint)):
        if name.startswith("optimizer"):
            for key, (_, _, values) in read_safetensors(os.path.join(checkpoint, name)).items():
                base, _, offset = key.partition("@")
                pieces.setdefault(base, []).append((int(offset or 0), values))
    return {k: [x for _, v in sorted(p) for x in v] for k, p in pieces.items()}


class OptimTest(LoomTestCase):
    data_kind = "blobs"

    def train(self, name, *extra):
        out = self.out(name)
        _, stdout, _ = loom(*self.train_args(out, "--max_steps", "20", "--logging_steps", "1", "--weight_decay",
                                             "0.1", "--max_grad_norm", "0.5", "--warmup_steps", "3", "--save_steps", "10",
                                             *extra))
        return out, stdout

    def test_adamw_aliases_train_the_same_bytes(self):
        base, _ = self.train("adamw_torch", "--optim", "adamw_torch", "--learning_rate", "1e-2")
        for alias in ("adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_apex_fused", "adamw"):
            out, stdout = self.train(alias, "--optim", alias, "--learning_rate", "1e-2")
            self.assertIn("[optimizer] adamw ", stdout)
            self.assertEqual(model_bytes(out), model_bytes(base), alias)
            self.assertEqual(whole_states(os.path.join(out, "checkpoint-20")),
                             whole_states(os.path.join(base, "checkpoint-20")), alias)
        # HF's name is what the run records, as HF's training_args.json would.
        self.assertEqual(self.args_json(self.out("adamw_torch_fused"))["optim"], "adamw_torch_fused")

    def test_rmsprop_and_lion_aliases(self):
        for alias, name in (("rmsprop_bnb", "rmsprop"), ("rmsprop_bnb_32bit", "rmsprop"), ("lion", "lion_32bit")):
            base, _ = self.train(f"{name}-for-{alias}", "--optim", name, "--learning_rate", "1e-3")
            out, stdout = self.train(alias, "--optim", alias, "--learning_rate", "1e-3")
            self.assertIn(f"[optimizer] {name.split('_')[0]} ", stdout)
            self.assertEqual(model_bytes(out), model_bytes(base), alias)

    def args_json(self, out):
        import json
        with open(os.path.join(out, "training_args.json")) as f:
            return json.load(f)

    def test_hf_hands_each_optimizer_its_own_keys(self):
        # HF passes lr (and the groups' weight decay) to Adagrad and RMSprop, the betas to Lion,
        # never --adam_epsilon to any of them: their own defaults stand.
        hf = ("--adam_beta1", "0.8", "--adam_beta2", "0.95", "--adam_epsilon", "1e-6")
        _, stdout = self.train("keys-adagrad", "--optim", "adagrad", *hf)
        self.assertIn("adagrad.eps = 1e-10", stdout)
        self.assertIn("adagrad.weight_decay = 0.1", stdout)
        _, stdout = self.train("keys-rmsprop", "--optim", "rmsprop", *hf)
        self.assertIn("rmsprop.eps = 1e-8", stdout)
        self.assertIn("rmsprop.alpha = 0.99", stdout)
        _, stdout = self.train("keys-lion", "--optim", "lion_32bit", *hf)
        self.assertIn("lion.beta1 = 0.8", stdout)
        self.assertIn("lion.beta2 = 0.95", stdout)
        _, stdout = self.train("keys-lion-default", "--optim", "lion_32bit")
        self.assertIn("lion.beta2 = 0.999", stdout)              # --adam_beta2's default, not bitsandbytes' 0.99
        _, stdout = self.train("keys-lion-flag", "--optim", "lion_32bit", "--lion.beta2", "0.98")
        self.assertIn("lion.beta2 = 0.98", stdout)

    def test_new_optimizers_learn(self):
        for optim, (lr, extra) in RULES.items():
            out = self.out(f"learn-{optim}")
            loom(*self.train_args(out, "--optim", optim, "--learning_rate", lr, "--max_steps", "150",
                                  "--logging_steps", "10", "--weight_decay", "0.1", *extra))
            losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
            self.assertLess(losses[-1], 0.6 * losses[0], f"{optim}: {losses}")

    def test_every_other_hf_name_is_refused_naming_why(self):
        for name, word in REFUSED.items():
            line = self.assert_error(self.train_args(self.out("refused"), "--optim", name), f"--optim {name} ", word)
            self.assertNotIn("not supported yet", line)
            self.assertNotIn("not one of", line)
        line = self.assert_error(self.train_args(self.out("refused"), "--optim", "adamw_torch_fusd"), "not one of",
                                 "adamw_torch_fused", "lion_32bit")


class OptimShardingTest(LoomTestCase):
    """adagrad, rmsprop (momentum and centered: all three slots) and lion on gpt2-nano over two
    ranks: zero1 and zero2 cut tensors between ranks, and must still train ddp's bytes with
    ddp's states; a checkpoint resumes to the uninterrupted run's bytes."""
    data_kind = "blobs"

    def launch(self, name, optim, plugin, world=2, resume=None, extra=()):
        tokens = os.path.join(self.tmp, "tokens.bin")
        if not os.path.exists(tokens):
            write_tokens(tokens, 30000, 512, 29)
        out = self.out(name)
        lr, keys = RULES[optim]
        args = self.train_args(out, *GPT2_NANO, "--train_file", tokens, "--optim", optim, "--learning_rate", lr,
                               "--per_device_train_batch_size", str(8 // world), "--max_steps", "10",
                               "--max_grad_norm", "0.5", "--weight_decay", "0.1", "--logging_steps", "1",
                               "--save_steps", "5", "--ddp_timeout", "30", *keys, *extra)
        if plugin != "none":
            args += ["--plugin", plugin]
        if resume:
            args += ["--resume_from_checkpoint", resume]
        if world == 1:
            _, stdout, _ = loom(*args)
        else:
            _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args)
        self.assertIn(f"[sharding] {plugin} ", stdout)
        return out, stdout

    def test_zero1_zero2_equal_ddp_bitwise(self):
        for optim in RULES:
            plugin = optim.split("_")[0]
            ddp, _ = self.launch(f"{optim}-ddp", optim, "ddp")
            want = whole_states(os.path.join(ddp, "checkpoint-10"))
            self.assertEqual(sorted({k.rsplit(".", 1)[1] for k in want} - {"fp32_master"}), sorted(STATES[plugin]))
            self.assertTrue(any(any(v != 0.0 for v in values) for values in want.values()))
            for zero in ("zero1", "zero2"):
                out, stdout = self.launch(f"{optim}-{zero}", optim, zero)
                self.assertIn(f"[optimizer] {plugin} ", stdout)
                self.assertEqual(model_bytes(out), model_bytes(ddp), f"{optim}: {zero} != ddp")
                checkpoint = os.path.join(out, "checkpoint-10")
                self.assertEqual(sorted(n for n in os.listdir(checkpoint) if n.startswith("optimizer")),
                                 ["optimizer.rank-0-of-2.safetensors", "optimizer.rank-1-of-2.safetensors"])
                budgets = {int(r): int(n) for r, n in
                           re.findall(r"\[rank (\d+)\] loom: memory budget.*optimizer states (\d+) B", stdout)}
                self.assertTrue(budgets and all(n > 0 for n in budgets.values()), budgets)   # really split
                self.assertEqual(whole_states(checkpoint), want, f"{optim}: {zero} states != ddp's")

    def test_bf16_zero2_equals_ddp(self):
        # In bf16 the host converts the gradients to f32 a piece at a time and steps each piece
        # (the rules are element-wise), over f32 master weights that zero2 partitions too.
        for optim in ("rmsprop", "lion_32bit"):
            ddp, _ = self.launch(f"bf16-{optim}-ddp", optim, "ddp", extra=("--bf16",))
            zero2, _ = self.launch(f"bf16-{optim}-zero2", optim, "zero2", extra=("--bf16",))
            self.assertEqual(model_bytes(zero2), model_bytes(ddp), f"{optim} in bf16: zero2 != ddp")
            self.assertEqual(whole_states(os.path.join(zero2, "checkpoint-10")),
                             whole_states(os.path.join(ddp, "checkpoint-10")))

    def test_resume_is_exact(self):
        for optim, plugin, world in (("adagrad", "none", 1), ("rmsprop", "none", 1), ("lion_32bit", "none", 1),
                                     ("lion_32bit", "zero2", 2), ("rmsprop", "zero1", 2)):
            tag = f"resume-{optim}-{plugin}"
            full, _ = self.launch(f"{tag}-full", optim, plugin, world)
            part, _ = self.launch(f"{tag}-part", optim, plugin, world)
            shutil.rmtree(os.path.join(part, "checkpoint-10"))
            checkpoint = os.path.join(part, "checkpoint-5")
            names = whole_states(checkpoint)
            for state in STATES[optim.split("_")[0]]:
                self.assertTrue(any(k.endswith("." + state) for k in names), f"{optim}: no {state} in {checkpoint}")
            _, stdout = self.launch(f"{tag}-part", optim, plugin, world, resume=checkpoint)
            self.assertEqual(model_bytes(part), model_bytes(full), f"{optim} under {plugin}: resumed != uninterrupted")


if __name__ == "__main__":
    unittest.main(verbosity=2)
