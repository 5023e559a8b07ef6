"""Arguments as a user meets them: a typo is reported as a typo before any required-argument or
data check, with "did you mean"; unknown commands too; an evaluation that cannot happen stops
before training; a run's own training_args.json is accepted by --config and reproduces the run's
resolved configuration."""
import json
import os
import re

from hf_training_args import ACCELERATOR_CONFIG, HF_DEFAULTS, LOOM_WRITES_OTHERWISE, cli_text
from loomtest import BUILD, LoomTestCase, loom, write_pairs, write_tokens
from test_cli_smoothing import TinyGpt2


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


def losses(out):
    with open(os.path.join(out, "trainer_state.json")) as f:
        return [e["loss"] for e in json.load(f)["log_history"] if "loss" in e]


def training_args(out):
    with open(os.path.join(out, "training_args.json")) as f:
        return json.load(f)


class HfArgumentsTest(LoomTestCase):
    """Every HF TrainingArguments field is known (hf_training_args.py lists them from HF's file);
    the later ones do what docs/semantics/trainer.md#every-hf-argument says."""
    data_kind = "blobs"

    def run_args(self, out, *extra):
        return self.train_args(out, "--max_steps", "4", "--logging_steps", "1", "--save_strategy", "no", *extra)

    def test_every_hf_field_is_taken_at_its_default(self):
        fields = dict(HF_DEFAULTS)
        # From a --config file, as HF's JSON: every field, nulls included.
        config = os.path.join(self.tmp, "hf_defaults.json")
        with open(config, "w") as f:
            json.dump(fields, f)
        out = self.out("hf_defaults")
        _, _, stderr = loom(*self.run_args(out, "--config", config))
        self.assertNotIn("has no effect", stderr)
        written = training_args(out)
        this_run = {"max_steps", "logging_steps", "save_strategy", "do_train", "overwrite_output_dir"}
        for name, value in fields.items():
            with self.subTest(name=name):
                self.assertIn(name, written)
                if name not in LOOM_WRITES_OTHERWISE | this_run:
                    self.assertEqual(written[name], value)
        self.assertEqual(written["accelerator_config"], ACCELERATOR_CONFIG)
        self.assertEqual(written["push_to_hub_token"], None)
        # On the command line: every field whose default has a text.
        flags = [t for k, v in fields.items() if cli_text(v) is not None and k not in ("max_steps", "logging_steps",
                 "save_strategy", "output_dir", "overwrite_output_dir", "disable_tqdm") for t in ("--" + k, cli_text(v))]
        _, _, stderr = loom(*self.run_args(self.out("hf_cli"), *flags))
        self.assertNotIn("has no effect", stderr)
        # And the help lists every one of them.
        _, stdout, _ = loom("train", "--help")
        for name in fields:
            self.assertRegex(stdout, r"(?m)^  --%s\b" % name)

    def test_no_effect_fields_warn_once_and_change_nothing(self):
        reference = self.out("plain")
        loom(*self.run_args(reference))
        out = self.out("no_effect")
        given = {"use_liger_kernel": "true", "torch_empty_cache_steps": "3", "ddp_broadcast_buffers": "false",
                 "jit_mode_eval": "true", "use_ipex": "true", "include_for_metrics": "inputs",
                 "batch_eval_metrics": "true", "eval_do_concat_batches": "false", "use_legacy_prediction_loop": "true",
                 "ray_scope": "all", "hub_revision": "main", "push_to_hub_token": "secret", "torchdynamo": "inductor",
                 "mp_parameters": "x", "use_mps_device": "true", "xpu_backend": "ccl", "use_cache": "true",
                 "project": "p", "optim_target_modules": "all-linear", "dataloader_num_workers": "2",
                 "dataloader_prefetch_factor": "4", "dataloader_persistent_workers": "true"}
        _, _, stderr = loom(*self.run_args(out, *[t for k, v in given.items() for t in ("--" + k, v)]))
        for name in given:
            self.assertEqual(stderr.count("loom: warning: --%s has no effect here (" % name), 1, f"{name}\n{stderr}")
        self.assertEqual(losses(out), losses(reference))
        self.assertEqual(len(losses(out)), 4)
        written = training_args(out)
        self.assertEqual(written["push_to_hub_token"], "<PUSH_TO_HUB_TOKEN>")
        self.assertEqual((written["torch_empty_cache_steps"], written["use_liger_kernel"]), (3, True))

    def test_refused_values_stop_in_one_line(self):
        base = self.train_args(self.out("never"), "--max_steps", "2")
        accel = lambda text: base + ["--accelerator_config", text]
        cases = [
            (["--tf32", "true"], "TF32 needs an Ampere or newer NVIDIA GPU, and this run is on the CPU"),
            (["--dataloader_prefetch_factor", "2"], "--dataloader_prefetch_factor", "--dataloader_num_workers > 0"),
            (["--dataloader_persistent_workers"], "--dataloader_persistent_workers", "--dataloader_num_workers > 0"),
            (["--torch_empty_cache_steps", "0"], "--torch_empty_cache_steps 0", "bigger than 0"),
            (["--fp16_backend", "apex", "--half_precision_backend", "cpu_amp"], "--fp16_backend apex", "disagree"),
            (["--bf16", "--half_precision_backend", "apex"], "GPU bf16 is not supported by apex"),
            (["--half_precision_backend", "fast"], "--half_precision_backend 'fast'", "not one of"),
            (["--split_batches", "true"], "--split_batches true", "not supported yet", "data split"),
            (["--dispatch_batches", "true"], "--dispatch_batches true", "not supported yet"),
            (["--tp_size", "2"], "--tp_size 2", "not supported yet"),
            (["--train_sampling_strategy", "sequential", "--group_by_length"], "sequential", "pick one order"),
            (["--train_sampling_strategy", "shuffled"], "'shuffled'", "not one of"),
            (["--ddp_backend", "mpi"], "--ddp_backend mpi", "not supported yet"),
            (["--parallelism_config", "{}"], "--parallelism_config", "not supported yet"),
            (["--debug", "underflow_overflow"], "--debug underflow_overflow", "not supported yet"),
            (["--debug", "tpu_metrics_debug overflow"], "--debug", "'overflow' is not one of"),
            (["--generation_config", "gen"], "--generation_config", "gen: cannot open"),
        ]
        for extra, *expected in cases:
            with self.subTest(extra=extra):
                self.assert_error(base + extra, *expected)
        for text, *expected in [
                ('{"split_batches": true}', "split_batches=true", "not supported yet"),
                ('{"even_batches": false}', "even_batches=false", "not supported yet"),
                ('{"dispatch_batches": true}', "dispatch_batches=true", "not supported yet"),
                ('{"use_seedable_sampler": false}', "use_seedable_sampler=false", "not supported yet"),
                ('{"use_configured_state": true}', "use_configured_state=true"),
                ('{"gradient_accumulation_kwargs": {"num_steps": 2}}', "gradient_accumulation_kwargs"),
                ('{"even_batch": true}', "unknown key 'even_batch'"),
                ('{"even_batches": "yes"}', "'even_batches' must be true or false"),
                ('{"even_batches": true', "--accelerator_config"),
                (self.write_config_text("[1]"), "expected a JSON object"),
                (os.path.join(self.tmp, "absent.json"), "--accelerator_config", "absent.json")]:
            with self.subTest(accelerator_config=text):
                self.assert_error(accel(text), *expected)
        # From a file, naming the file.
        bad = os.path.join(self.tmp, "accel_bad.json")
        with open(bad, "w") as f:
            f.write('{"split_batches": true}')
        self.assert_error(base + ["--config", self.write_config(accelerator_config=bad)], "split_batches=true")

    def write_config_text(self, text):
        path = os.path.join(self.tmp, "cfg_%d.json" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            f.write(text)
        return path

    def write_config(self, **values):
        return self.write_config_text(json.dumps(values))

    def test_accelerator_config_keeps_what_is_loom_s_own(self):
        out = self.out("accel")
        _, _, stderr = loom(*self.run_args(out, "--accelerator_config",
                                           '{"even_batches": true, "non_blocking": true, "dispatch_batches": false}'))
        self.assertEqual(stderr.count("--accelerator_config non_blocking has no effect here"), 1, stderr)
        want = dict(ACCELERATOR_CONFIG, non_blocking=True, dispatch_batches=False)
        self.assertEqual(training_args(out)["accelerator_config"], want)
        # The same from a file, and from a --config dict; HF's own defaults round-trip as None.
        path = os.path.join(self.tmp, "accel.json")
        with open(path, "w") as f:
            json.dump({"non_blocking": True, "dispatch_batches": False}, f)
        loom(*self.run_args(self.out("accel_file"), "--accelerator_config", path))
        self.assertEqual(training_args(self.out("accel_file"))["accelerator_config"], want)
        loom(*self.run_args(self.out("accel_dict"), "--config", self.write_config(accelerator_config=want)))
        self.assertEqual(training_args(self.out("accel_dict"))["accelerator_config"], want)
        self.assertEqual(losses(out), losses(self.out("accel_file")))

    def test_generation_config_is_written_as_given(self):
        """HF's to_dict keeps a path as its text, and a --config dict as a dict."""
        path = self.write_config(num_beams=2)
        loom(*self.run_args(self.out("gen_path"), "--generation_config", path))
        self.assertEqual(training_args(self.out("gen_path"))["generation_config"], path)
        loom(*self.run_args(self.out("gen_dict"), "--config", self.write_config(generation_config={"num_beams": 2})))
        self.assertEqual(training_args(self.out("gen_dict"))["generation_config"], {"num_beams": 2})

    def test_train_sampling_strategy_group_by_length_is_group_by_length(self):
        """On pair files of different lengths: the v5 spelling gives --group_by_length's order."""
        train = os.path.join(self.tmp, "pairs.jsonl")
        write_pairs(train, 160, 1, longest=6)
        t5 = ["train", "--train_file", train, "--overwrite_output_dir", "--disable_tqdm", "--max_steps", "6",
              "--logging_steps", "1", "--save_strategy", "no", "--per_device_train_batch_size", "16", "--vocab_size",
              "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64", "--num_layers", "2"]
        runs = {}
        for name, extra in (("old", ["--group_by_length"]), ("new", ["--train_sampling_strategy", "group_by_length"]),
                            ("random", ["--train_sampling_strategy", "random"])):
            loom(*t5, "--output_dir", self.out("t5_" + name), *extra)
            runs[name] = losses(self.out("t5_" + name))
        self.assertEqual(runs["new"], runs["old"])
        self.assertNotEqual(runs["random"], runs["old"])
        self.assertTrue(training_args(self.out("t5_new"))["group_by_length"])


class HfPrecisionTest(TinyGpt2, LoomTestCase):
    """half_precision_backend and tf32 on a model that runs in 16 bits (a tiny gpt2)."""
    data_kind = None
    run_args = ("--save_strategy", "no", "--max_steps", "4")

    def test_half_precision_backend_picks_the_precision_plugin(self):
        reference = self.out("apex_old_name")
        _, stdout, _ = loom(*self.gpt2_args(reference, "--fp16", "--fp16_backend", "apex", "--fp16_opt_level", "O1"))
        self.assertIn("[precision] apex ", stdout)
        out = self.out("apex_new_name")
        _, stdout, _ = loom(*self.gpt2_args(out, "--fp16", "--half_precision_backend", "apex"))
        self.assertIn("[precision] apex ", stdout)
        self.assertEqual(losses(out), losses(reference))
        self.assertEqual(training_args(out)["half_precision_backend"], "apex")
        # The deprecated name sets the new one, as HF's __post_init__ does.
        self.assertEqual(training_args(reference)["half_precision_backend"], "apex")
        native = self.out("native")
        _, stdout, _ = loom(*self.gpt2_args(native, "--fp16"))
        self.assertIn("[precision] amp ", stdout)
        for backend in ("cpu_amp", "cuda_amp"):
            with self.subTest(backend=backend):
                _, stdout, _ = loom(*self.gpt2_args(self.out(backend), "--fp16", "--half_precision_backend", backend))
                self.assertIn("[precision] amp ", stdout)
                self.assertEqual(losses(self.out(backend)), losses(native))
        # tf32 false is what a CPU run computes anyway: the same numbers as no flag.
        loom(*self.gpt2_args(self.out("tf32_off"), "--tf32", "false"))
        loom(*self.gpt2_args(self.out("tf32_unset")))
        self.assertEqual(losses(self.out("tf32_off")), losses(self.out("tf32_unset")))


if __name__ == "__main__":
    import unittest
    unittest.main()
