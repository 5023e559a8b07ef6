"""What a person sees first: every command's --help exits 0 within 80 columns (train's grouped as
HF's docs, without internal notes); a run starts with one short block, the full resolved
configuration going to resolved_config.txt (and to the terminal with --verbose); metrics are
printed rounded as HF rounds them."""
import json
import os
import re

from loomtest import LoomTestCase, loom as verbose_loom


def loom(*args, **kw):
    """What a person sees: no LOOM_VERBOSE (the other tests turn it on)."""
    return verbose_loom(*args, env={"LOOM_VERBOSE": "0"}, **kw)

COMMANDS = ["train", "evaluate", "predict", "plugins", "make-data", "convert", "tokenize", "launch", "plot",
            "consolidate", "version", "help"]


class StartupTest(LoomTestCase):
    data_kind = "blobs"

    def test_every_help_exits_0_within_80_columns(self):
        for command in COMMANDS:
            with self.subTest(command=command):
                code, stdout, stderr = loom(command, "--help", check=False)
                self.assertEqual(code, 0, stderr)
                self.assertTrue(stdout.strip())
                for line in stdout.splitlines():
                    self.assertLessEqual(len(line), 80, f"{command}: {line!r}")
        _, train, _ = loom("train", "--help")
        _, predict, _ = loom("predict", "--help")
        self.assertNotEqual(train, predict)
        self.assertTrue(predict.startswith("usage: loom predict"))
        for heading in ("Training:", "Evaluation:", "Logging:", "Saving:", "Precision:", "Distributed:",
                        "DeepSpeed:", "Plugin keys:"):
            self.assertIn("\n" + heading + "\n", train)
        self.assertNotIn("(later", train)
        self.assertIsNone(re.search(r"issue \d", train))
        # Every argument is listed once.
        self.assertEqual(len(re.findall(r"^  --learning_rate ", train, re.M)), 1)
        self.assertEqual(len(re.findall(r"^  --hub_always_push", train, re.M)), 1)

    def test_start_up_is_one_short_block(self):
        out = self.out("quiet")
        _, stdout, _ = loom("train", "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin"),
                            "--max_steps", "3", "--disable_tqdm", "--learning_rate", "2e-3")
        before_step_1 = stdout.split("{'")[0].splitlines()
        self.assertLessEqual(len(before_step_1), 15, stdout)
        self.assertTrue(all(len(l) <= 100 for l in before_step_1), stdout)
        text = "\n".join(before_step_1)
        for key in ("model ", "device ", "precision ", "data ", "steps ", "memory "):
            self.assertIn("loom: " + key, text)
        self.assertIn("world size 1", text)
        self.assertIn("MiB", text)
        self.assertNotIn("[optimizer]", text)                    # the full configuration is not printed
        self.assertNotRegex(text, r"\d{6,} B")                   # nor raw byte counts
        with open(os.path.join(out, "resolved_config.txt")) as f:
            resolved = f.read()
        self.assertRegex(resolved, r"(?m)^  --learning_rate\s+0\.002\s+\(command line\)$")
        self.assertRegex(resolved, r"(?m)^  --seed\s+42\s+\(default\)$")
        self.assertIn("[optimizer] adamw ", resolved)
        # --verbose: the same configuration on the terminal, and the byte-exact budget.
        _, verbose, _ = loom("train", "--output_dir", out, "--overwrite_output_dir", "--train_file",
                             os.path.join(self.data, "train.bin"), "--max_steps", "3", "--disable_tqdm", "--verbose")
        self.assertIn("[optimizer] adamw ", verbose)
        self.assertRegex(verbose, r"memory budget, rank 0 of 1 .* total \d+ B")

    def test_metrics_are_printed_rounded_as_hf_does(self):
        out = self.out("metrics")
        loom("train", "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin"), "--max_steps", "2",
             "--disable_tqdm")
        _, stdout, _ = loom("evaluate", "--model_name_or_path", out, "--validation_file",
                            os.path.join(self.data, "validation.bin"), "--disable_tqdm")
        with open(os.path.join(out, "evaluate", "eval_results.json")) as f:   # never over the run's own
            results = json.load(f)
        printed = dict(re.findall(r"^  (\w+)\s+=\s+(\S+)$", stdout, re.M))
        self.assertEqual(printed["eval_loss"], repr(round(results["eval_loss"], 4)))
        self.assertRegex(printed["eval_runtime"], r"^\d+:\d\d:\d\d\.\d\d$")
