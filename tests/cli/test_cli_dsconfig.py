"""The seed's DeepSpeed rules: "supply most of the configuration inside the file, and just use a
few required command line arguments". A value written in --deepspeed FILE wins over a
command-line default; only a flag the user gave that disagrees is an error (one line, both
values); "auto" takes the command line's value; the resolved configuration says where each
value came from. The three configurations under ds_seed/ are the seed's examples (the ZeRO-2
section with cpu_offload, the fp16 section, and the full ds_config.json with AdamW lr 3e-5 and
WarmupLR), run with the seed's command lines on a tiny GPT-2."""
import json
import math
import os
import re

from loomtest import LOOM, LoomTestCase, free_port, loom, run, write_tokens

SEED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ds_seed")
NANO = ["--model", "gpt2", "--gpt2.n_layer", "2", "--gpt2.n_head", "2", "--gpt2.n_embd", "64",
        "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]


def resolved(out):
    """name -> (value, origin) from <out>/resolved_config.txt."""
    rows = {}
    with open(os.path.join(out, "resolved_config.txt")) as f:
        for line in f:
            m = re.match(r"^  --(\S+)\s+(.*?)\s+\(([^()]*)\)$", line.rstrip("\n"))
            if m:
                rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def training_args(out):
    with open(os.path.join(out, "training_args.json")) as f:
        return json.load(f)


class DeepSpeedRulesTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 1200, 512, 11)  # 36 examples of 32 tokens: 5 steps of 8 an epoch

    def write(self, name, config):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def gpt2(self, out, *extra):
        return ["train", "--output_dir", out, "--train_file", self.tokens, *NANO, *extra]

    def assert_one_line_error(self, args, *expected):
        code, _, stderr = loom(*args, check=False)
        self.assertEqual(code, 2, stderr)
        lines = [l for l in stderr.splitlines() if l.strip() and not l.startswith("loom: warning:")]
        self.assertEqual(len(lines), 1, stderr)
        for text in expected:
            self.assertIn(text, lines[0])
        return lines[0]

    def test_full_config_with_only_the_required_arguments(self):
        full = os.path.join(SEED, "full.json")
        out = self.out("full")
        loom(*self.gpt2(out, "--deepspeed", full))                  # no --learning_rate: the file's 3e-5
        rows, args = resolved(out), training_args(out)
        self.assertEqual(args["learning_rate"], 3e-5)
        self.assertEqual(rows["learning_rate"], ("3e-05", full))
        self.assertEqual((args["adam_beta1"], args["adam_beta2"]), (0.8, 0.999))
        self.assertEqual(args["weight_decay"], 3e-7)
        self.assertEqual(args["warmup_steps"], 500)
        self.assertTrue(args["fp16"])
        self.assertEqual(rows["fp16"], ("true", full))
        self.assertEqual(rows["max_grad_norm"], ("1.0", "default"))  # the file has no gradient_clipping
        self.assertEqual(rows["output_dir"][1], "command line")
        self.assertEqual(len(self.state(out)["log_history"]), 1)    # 3 default epochs ran to the end

        # The logged learning rate is the file's: WarmupLR's log warm-up to 3e-5 over 500 steps,
        # counting the steps taken (fp16's first steps overflow and are skipped).
        out = self.out("full-logged")
        loom(*self.gpt2(out, "--deepspeed", full, "--max_steps", "20", "--logging_steps", "1", "--disable_tqdm"))
        logged = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual(len(logged), 20)
        self.assertTrue(any(e["learning_rate"] > 0 for e in logged))
        for e in logged:
            taken = e["step"] - e["skipped_steps"]
            want = 3e-5 * math.log(taken + 1) / math.log(500) if taken > 0 else 0.0
            self.assertAlmostEqual(e["learning_rate"], want, delta=1e-12, msg=e)

    def test_zero2_offload_section_with_two_ranks(self):
        out = self.out("zero2")
        run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
            *self.gpt2(out, "--deepspeed", os.path.join(SEED, "zero2_offload.json"), "--max_steps", "3",
                       "--disable_tqdm", "--ddp_timeout", "30"))
        with open(os.path.join(out, "resolved_config.txt")) as f:
            text = f.read()
        self.assertIn("[sharding] zero2 ", text)
        self.assertIn("zero2.cpu_offload = true", text)
        self.assertIn("zero2.reduce_bucket_size = 500000000", text)
        self.assertEqual(resolved(out)["learning_rate"], ("5e-05", "default"))  # nothing in the file for it

    def test_fp16_section(self):
        fp16 = os.path.join(SEED, "fp16.json")
        out = self.out("fp16")
        loom(*self.gpt2(out, "--deepspeed", fp16, "--max_steps", "2", "--disable_tqdm"))
        rows = resolved(out)
        self.assertEqual(rows["fp16"], ("true", fp16))
        with open(os.path.join(out, "resolved_config.txt")) as f:
            self.assertIn("[precision] amp ", f.read())

    def test_a_given_flag_that_disagrees_is_an_error_showing_both(self):
        full = os.path.join(SEED, "full.json")
        line = self.assert_one_line_error(self.gpt2(self.out("x"), "--deepspeed", full, "--learning_rate", "1e-3"),
                                          "optimizer.params.lr=3e-05", full, "--learning_rate 0.001",
                                          "on the command line")
        self.assertNotIn("5e-05", line)
        # The same value as the flag's default still counts: it was given.
        clip = self.write("clip.json", {"gradient_clipping": 0.5})
        self.assert_one_line_error(self.gpt2(self.out("x"), "--deepspeed", clip, "--max_grad_norm", "1.0"),
                                   "gradient_clipping=0.5", "--max_grad_norm 1.0")
        # A --config file's value is given too, and the message names it.
        config = self.write("config.json", {"adam_beta1": 0.9})
        self.assert_one_line_error(self.gpt2(self.out("x"), "--config", config, "--deepspeed", full),
                                   "optimizer.params.betas[0]=0.8", "--adam_beta1 0.9", config)
        # Two precisions, one from the file, one from the command line.
        bf16 = self.write("bf16.json", {"bf16": {"enabled": True}})
        self.assert_one_line_error(self.gpt2(self.out("x"), "--deepspeed", bf16, "--fp16"),
                                   "bf16.enabled=true", "--fp16")

    def test_the_file_wins_over_defaults(self):
        clip = self.write("clip-only.json", {"gradient_clipping": 0.5, "train_micro_batch_size_per_gpu": 4,
                                             "zero_optimization": {"stage": 0}})
        out = self.out("clip")
        loom(*self.gpt2(out, "--deepspeed", clip, "--max_steps", "2", "--disable_tqdm"))
        rows = resolved(out)
        self.assertEqual(rows["max_grad_norm"], ("0.5", clip))
        self.assertEqual(rows["per_device_train_batch_size"], ("4", clip))
        self.assertEqual(training_args(out)["max_grad_norm"], 0.5)

    def test_auto_takes_the_command_line_value_given_or_default(self):
        auto = self.write("auto.json", {"gradient_clipping": "auto", "train_micro_batch_size_per_gpu": "auto",
                                        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto"}},
                                        "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto",
                                                                                     "warmup_num_steps": "auto"}}})
        out = self.out("auto-given")
        loom(*self.gpt2(out, "--deepspeed", auto, "--learning_rate", "2e-3", "--max_steps", "2", "--disable_tqdm"))
        rows = resolved(out)
        self.assertEqual(rows["learning_rate"], ("0.002", "command line"))
        with open(os.path.join(out, "resolved_config.txt")) as f:
            text = f.read()
        self.assertIn('"lr": 0.002', text)                      # the merged DeepSpeed JSON
        self.assertIn("warmup_lr.warmup_max_lr = 0.002", text)
        out = self.out("auto-default")
        loom(*self.gpt2(out, "--deepspeed", auto, "--max_steps", "2", "--disable_tqdm"))
        rows = resolved(out)
        self.assertEqual(rows["learning_rate"], ("5e-05", "default"))
        self.assertEqual(rows["max_grad_norm"], ("1.0", "default"))
        with open(os.path.join(out, "resolved_config.txt")) as f:
            text = f.read()
        self.assertIn('"lr": 5e-05', text)
        self.assertIn("warmup_lr.warmup_max_lr = 5e-05", text)
