"""Arguments as a user meets them: a typo is reported as a typo before any required-argument or
data check, with "did you mean"; unknown commands too; an evaluation that cannot happen stops
before training; a run's own training_args.json is accepted by --config and reproduces the run's
resolved configuration."""
import os
import re

from loomtest import BUILD, LoomTestCase, loom, write_tokens


def values(path):
    """name -> value of every argument in a resolved_config.txt (where it came from is left out)."""
    rows = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^  --(\S+)\s+(.*?)\s+\(([^()]*)\)$", line.rstrip("\n"))
            if m:
                rows[m.group(1)] = m.group(2)
    return rows


class ArgumentsTest(LoomTestCase):
    data_kind = "blobs"

    def assert_error(self, args, *expected):
        code, stdout, stderr = loom(*args, check=False)
        self.assertEqual(code, 2, f"{args}\n{stdout}\n{stderr}")
        lines = [l for l in stderr.splitlines() if l.strip() and not l.startswith("loom: warning:")]
        self.assertEqual(len(lines), 1, stderr)
        for text in expected:
            self.assertIn(text, lines[0])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "never", "model.safetensors")))
        return lines[0]

    def test_a_misspelt_required_flag_is_reported_as_unknown_first(self):
        train = os.path.join(self.data, "train.bin")
        self.assert_error(["train", "--outputdir", "o", "--train_file", train],
                          "unknown argument --outputdir", "did you mean --output_dir")
        self.assert_error(["train", "--output_dir", self.out("never"), "--trainfile", "x"],
                          "unknown argument --trainfile", "did you mean --train_file")
        # Before the data is looked at: the file named by the typo's neighbour does not exist.
        self.assert_error(["train", "--outputdir", "o", "--train_file", "/nonexistent.bin"], "--outputdir")
        # A plugin's key is not unknown; a misspelt one of a known plugin is named with it.
        self.assert_error(["train", "--output_dir", self.out("never"), "--train_file", train, "--mlp.hiden_sizes", "8"],
                          "hiden_sizes", "'mlp'")

    def test_a_plugins_dotted_key_opens_that_plugin_only(self):
        """--mlp.hidden_sizes used to have every plugin on the path opened to look for the key's
        owner, the CUDA backend's cuBLAS among them: some 200 MB touched for a 19 KiB model."""
        if not os.path.exists(os.path.join(BUILD, "plugins", "cuda.so")):
            self.skipTest("no CUDA backend built: nothing large to open by mistake")
        # A plain key the model declares (HF's config overrides: --n_layer, --hidden_sizes) too.
        for key in ("--mlp.hidden_sizes", "--hidden_sizes"):
            with self.subTest(key=key):
                _, stdout, _ = loom(*self.train_args(self.out("dotted"), "--max_steps", "2", key, "8,8"))
                peak, budget = re.search(
                    r"peak resident memory, rank 0: ([0-9.]+) MiB \(the budget above: ([0-9.]+) MiB", stdout).groups()
                self.assertLess(float(peak), float(budget) + 32, stdout)

    def test_unknown_command_suggests_the_closest(self):
        code, _, stderr = loom("trian", check=False)
        self.assertEqual(code, 2)
        self.assertIn("unknown command 'trian'", stderr)
        self.assertIn("did you mean 'train'", stderr)
        code, _, stderr = loom("evalute", check=False)
        self.assertIn("did you mean 'evaluate'", stderr)

    def test_evaluation_that_cannot_happen_stops_before_training(self):
        train, validation = os.path.join(self.data, "train.bin"), os.path.join(self.data, "validation.bin")
        base = ["train", "--output_dir", self.out("never"), "--overwrite_output_dir", "--train_file", train]
        self.assert_error(base + ["--do_eval"], "--do_eval needs validation data", "--validation_file")
        self.assert_error(base + ["--evaluation_strategy", "steps", "--eval_steps", "5"],
                          "--evaluation_strategy steps needs validation data", "--validation_file")
        self.assert_error(base + ["--eval_strategy", "epoch"], "--evaluation_strategy epoch needs validation data")
        # Too short for one evaluation batch: 200 examples cannot fill a batch of 500 with drop_last.
        self.assert_error(base + ["--do_eval", "--validation_file", validation, "--dataloader_drop_last",
                                  "--per_device_eval_batch_size", "500"],
                          validation, "no evaluation batch", "--per_device_eval_batch_size 500")
        # Token data shorter than one sequence.
        short = os.path.join(self.tmp, "short.bin")
        write_tokens(short, 20, 512, 3)
        tokens = os.path.join(self.tmp, "tokens.bin")
        write_tokens(tokens, 2000, 512, 4)
        self.assert_error(["train", "--output_dir", self.out("never"), "--overwrite_output_dir", "--train_file", tokens,
                           "--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
                           "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32",
                           "--do_eval", "--validation_file", short], short, "no example")
        self.assert_error(["evaluate", "--model_name_or_path", self.out("never")], "loom evaluate needs --validation_file")
        # With the data, the same flags run.
        code, _, _ = loom("train", "--output_dir", self.out("evaluated"), "--train_file", train, "--do_eval",
                          "--validation_file", validation, "--max_steps", "1", "--disable_tqdm", check=False)
        self.assertEqual(code, 0)

    def test_training_args_json_round_trips_through_config(self):
        out = self.out("round")
        loom(*self.train_args(out, "--max_steps", "3", "--learning_rate", "3e-3", "--mlp.hidden_sizes", "16,8",
                              "--adamw.beta1", "0.8", "--lr_scheduler_type", "cosine", "--validation_file",
                              os.path.join(self.data, "validation.bin"), "--evaluation_strategy", "steps",
                              "--eval_steps", "2"))
        first = os.path.join(self.tmp, "first_resolved.txt")
        os.replace(os.path.join(out, "resolved_config.txt"), first)
        with open(first) as f:
            first_text = f.read()
        loom("train", "--config", os.path.join(out, "training_args.json"), "--verbose")
        second = os.path.join(out, "resolved_config.txt")
        with open(second) as f:
            second_text = f.read()
        a, b = values(first), values(second)
        self.assertEqual(a.pop("config"), "none")
        self.assertEqual(b.pop("config"), os.path.join(out, "training_args.json"))
        self.assertEqual(a, b)
        self.assertEqual(a["learning_rate"], "0.003")
        # The plugin sections (and their keys given as flags) are the same too.
        plugins = lambda text: [l for l in text.splitlines() if not l.startswith("  --") and "resolved configuration" not in l]
        self.assertEqual(plugins(first_text), plugins(second_text))
        self.assertIn("  mlp.hidden_sizes = 16,8", second_text)
        self.assertIn("  adamw.beta1 = 0.8", second_text)
        # A hand-written config still cannot name another config.
        nested = os.path.join(self.tmp, "nested.json")
        with open(nested, "w") as f:
            f.write('{"config": "other.json"}')
        self.assert_error(self.train_args(self.out("never"), "--config", nested), "cannot name another")
