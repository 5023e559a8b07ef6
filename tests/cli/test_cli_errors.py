"""Bad input: one line saying what and where, exit status 2, never a crash."""
import os
import re
import subprocess

from loomtest import BUILD, LoomTestCase, loom, write_tokens


class ErrorTest(LoomTestCase):
    data_kind = "blobs"

    def args(self, *extra):
        return self.train_args(self.out("bad"), *extra)

    def test_unknown_flag_suggests_the_closest(self):
        self.assert_error(self.args("--learnig_rate", "1e-3"), "--learnig_rate", "did you mean --learning_rate")

    def test_unknown_plugin_key_names_key_and_plugin(self):
        self.assert_error(self.args("--mlp.hiden_sizes", "8"), "hiden_sizes", "'mlp'", "hidden_sizes")
        self.assert_error(self.args("--adamw.beta3", "0.9"), "beta3", "'adamw'")

    def test_bad_values(self):
        self.assert_error(self.args("--evaluation_strategy", "sometimes"), "evaluation_strategy", "sometimes", "steps")
        self.assert_error(self.args("--max_steps", "12x"), "max_steps", "12x")
        self.assert_error(self.args("--gradient_accumulation_steps", "0"), "gradient_accumulation_steps")
        self.assert_error(self.args("--mlp.hidden_sizes", "8,x"), "hidden_sizes")
        self.assert_error(self.args("stray"), "stray")
        self.assert_error(self.args("--adam_epsilon", "0"), "adam_epsilon", "must be > 0")

    def test_feature_of_a_later_issue_is_refused_only_when_set(self):
        self.assert_error(self.args("--past_index", "1"), "--past_index", "not supported yet")
        self.assert_error(self.args("--fp16", "--bf16"), "--fp16 and --bf16")
        self.assert_error(self.args("--fp16", "--fp16_opt_level", "O4"), "fp16_opt_level", "O4")
        self.assert_error(self.args("--model_parallel"), "--model_parallel", "not supported yet")
        self.assert_error(self.args("--deepspeed", "nosuch.json"), "--deepspeed", "nosuch.json")
        code, _, _ = loom(*self.args("--past_index", "-1", "--max_steps", "1"), check=False)
        self.assertEqual(code, 0)
        # Memory advice with nothing to do here: a warning, and the run goes on.
        code, _, stderr = loom(*self.args("--eval_accumulation_steps", "4", "--max_steps", "1"), check=False)
        self.assertEqual(code, 0, stderr)
        self.assertIn("--eval_accumulation_steps has no effect here", stderr)
        code, _, stderr = loom(*self.args("--gradient_checkpointing_kwargs", '{"use_reentrant": false}',
                                          "--max_steps", "1"), check=False)
        self.assertEqual(code, 0, stderr)
        self.assertIn("--gradient_checkpointing_kwargs has no effect here", stderr)
        code, _, stderr = loom(*self.args("--optim_args", "beta3=0.99", "--max_steps", "1"), check=False)
        self.assertEqual(code, 0, stderr)
        self.assertIn("--optim_args has no effect here", stderr)
        # HF scripts that spell the label input out name "labels", the one loom's data has.
        code, _, stderr = loom(*self.args("--label_names", "labels", "--max_steps", "1"), check=False)
        self.assertEqual(code, 0, stderr)
        self.assert_error(self.args("--label_names", "start_positions", "end_positions"), "--label_names",
                          "'start_positions' is not an input of loom's data")

    def test_a_plugin_that_contradicts_a_flag_is_refused(self):
        # --plugin replaces a default, not what another flag asked for, nor another --plugin.
        zero1 = os.path.join(os.environ["LOOM_SOURCE_DIR"], "examples", "deepspeed", "ds_zero1.json")
        self.assert_error(self.args("--optim", "sgd", "--plugin", "adamw"), "--plugin adamw", "--optim", "'sgd'")
        self.assert_error(self.args("--bf16", "--plugin", "amp"), "--plugin amp", "--fp16/--bf16", "'bf16'")
        self.assert_error(self.args("--deepspeed", zero1, "--plugin", "zero2"), "--plugin zero2",
                          "zero_optimization", "'zero1'")
        self.assert_error(self.args("--sharded_ddp", "--plugin", "zero1"), "--plugin zero1", "--sharded_ddp")
        self.assert_error(self.args("--plugin", "zero1", "--plugin", "zero2"), "zero1", "zero2", "give one")
        for agreeing in (["--sharded_ddp", "--plugin", "sharded_ddp"], ["--optim", "sgd", "--plugin", "sgd"],
                         ["--plugin", "zero2"]):
            code, _, err = loom(*self.args("--max_steps", "1", *agreeing), check=False)
            self.assertEqual(code, 0, f"{agreeing}: {err}")

    def test_max_steps_near_the_int64_limit_trains(self):
        # (max_steps + steps_per_epoch - 1) overflowed: 0 steps over a negative epoch count, exit 0.
        p = subprocess.Popen([os.path.join(os.environ["LOOM_BIN"], "loom"),
                              *self.args("--max_steps", str(2**63 - 1), "--logging_steps", "1")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        try:
            for line in p.stdout:
                seen.append(line)
                if "'loss'" in line or len(seen) > 200:
                    break
        finally:
            p.kill()
            p.wait()
        text = "".join(seen)
        self.assertIn("'loss'", text)
        epochs = re.search(r"steps\s+9223372036854775807 over (-?\d+) epoch", text.replace(",", ""))
        self.assertTrue(epochs and int(epochs.group(1)) > 0, text)

    def test_data_files_that_do_not_fit_the_model_are_refused_before_step_1(self):
        other = os.path.join(self.tmp, "seven")
        loom("make-data", "--kind", "blobs", "--n_samples", "100", "--n_features", "7", "--n_classes", "4",
             "--output_dir", other)
        wide = os.path.join(other, "validation.bin")
        tokens = os.path.join(self.tmp, "tokens.bin")
        write_tokens(tokens, 2000, 50, 3)
        evaluating = ("--evaluation_strategy", "steps", "--eval_steps", "1", "--max_steps", "2")
        line = self.assert_error(self.args("--validation_file", wide, *evaluating), "--validation_file", wide,
                                 "7 features per example", "'mlp' takes 6")
        self.assert_error(self.args("--validation_file", tokens, *evaluating), tokens, "token data",
                          "classification (LOOMCLS1)")
        self.assertNotIn("loss", line)
        run_dir = self.out("fits")
        loom(*self.train_args(run_dir, "--max_steps", "1"))
        self.assert_error(["evaluate", "--model_name_or_path", run_dir, "--validation_file", tokens], tokens,
                          "token data", "the model 'mlp' takes classification data")
        self.assert_error(["predict", "--model_name_or_path", run_dir, "--test_file", wide], wide,
                          "7 features per example")

    def test_malformed_and_duplicate_json(self):
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"learning_rate": 0.1,,}')
        self.assert_error(self.args("--config", bad), bad)
        dup = os.path.join(self.tmp, "dup.json")
        with open(dup, "w") as f:
            f.write('{"learning_rate": 0.1, "max_steps": 3, "learning_rate": 0.2}')
        self.assert_error(self.args("--config", dup), dup, "learning_rate", "duplicate")
        typed = os.path.join(self.tmp, "typed.json")
        with open(typed, "w") as f:
            f.write('{"max_steps": "many"}')
        self.assert_error(self.args("--config", typed), "max_steps", typed)

    def test_unbounded_inputs_are_refused(self):
        # A device or FIFO where a file belongs: refused at once (no hang, no flood of memory).
        fifo = os.path.join(self.tmp, "fifo.json")
        os.mkfifo(fifo)
        self.assert_error(self.args("--config", "/dev/zero"), "--config", "/dev/zero", "device")
        self.assert_error(self.args("--config", fifo), "--config", fifo, "FIFO")
        self.assert_error(self.args("--deepspeed", "/dev/zero"), "--deepspeed", "/dev/zero", "device")
        self.assert_error(self.args("--train_file", fifo), fifo, "regular file")
        huge = os.path.join(self.tmp, "huge.json")
        with open(huge, "wb") as f:
            f.truncate(17 << 20)  # sparse: over the 16 MiB a config may have
        self.assert_error(self.args("--config", huge), "--config", huge, "bytes")

    def test_counts_out_of_range_name_the_argument(self):
        self.assert_error(self.args("--num_train_epochs", "1e18"), "--num_train_epochs", "1e6")
        self.assert_error(self.args("--per_device_train_batch_size", "100000000000"), "--per_device_train_batch_size")
        self.assert_error(self.args("--gradient_accumulation_steps", "99999999999"), "--gradient_accumulation_steps")
        self.assert_error(self.args("--num_threads", "1000000"), "--num_threads")
        self.assert_error(self.args("--ddp_timeout", "9999999999"), "--ddp_timeout")

    def test_a_run_that_cannot_fit_is_refused_up_front(self):
        # LOOM_MEMORY_LIMIT states the room (as a cgroup limit would): a 900M-parameter model is
        # refused before anything is allocated; a 4M-parameter one passes that floor but not its
        # whole budget (Adam's states, activations); with room it trains.
        big = self.args("--max_steps", "1", "--mlp.hidden_sizes", "30000,30000")
        line = self.assert_error(big, "900360004 parameters", "512.0 MiB", "LOOM_MEMORY_LIMIT=512M",
                                 "--per_device_train_batch_size", "ZeRO", status=None,
                                 env=dict(os.environ, LOOM_MEMORY_LIMIT="512M"))
        self.assertIn("rank 0", line)
        mid = self.args("--max_steps", "1", "--mlp.hidden_sizes", "2000,2000")
        # What the floor and the whole budget need here (the process's own size varies with the
        # build): the floor's need from its refusal, the budget from --verbose with room.
        _, _, err = loom(*mid, check=False, env={"LOOM_MEMORY_LIMIT": "1M"})
        floor = float(re.search(r"needs ([\d.]+) MiB", err).group(1))
        _, out, _ = loom(*mid, "--verbose", env=dict(os.environ, LOOM_MEMORY_LIMIT="64G"))
        budget = int(re.search(r"memory budget, rank 0 .*?, total (\d+) B", out).group(1)) / 1048576
        self.assertGreater(budget, floor + 8)
        room = (floor + budget) / 2
        code, _, err = loom(*mid, check=False, env={"LOOM_MEMORY_LIMIT": f"{room:.0f}M"})
        errors = [l for l in err.splitlines() if l.startswith("loom: error:")]
        self.assertNotEqual(code, 0, err)
        self.assertEqual(len(errors), 1, err)
        self.assertIn("the memory budget needs", errors[0])
        self.assertIn(f"may use {round(room):.1f} MiB", errors[0])
        code, _, err = loom(*mid, check=False, env=dict(os.environ, LOOM_MEMORY_LIMIT="64G"))
        self.assertEqual(code, 0, err)
        self.assert_error(mid, "LOOM_MEMORY_LIMIT", "lots", env=dict(os.environ, LOOM_MEMORY_LIMIT="lots"),
                          status=None)

    def test_bad_data_files(self):
        good = os.path.join(self.data, "train.bin")
        with open(good, "rb") as f:
            blob = f.read()
        truncated = os.path.join(self.tmp, "truncated.bin")
        with open(truncated, "wb") as f:
            f.write(blob[: len(blob) // 2])
        self.assert_error(self.train_args(self.out("t"), "--train_file", truncated), truncated, "truncated")
        foreign = os.path.join(self.tmp, "foreign.bin")
        with open(foreign, "wb") as f:
            f.write(b"GIF89a" + bytes(100))
        self.assert_error(self.train_args(self.out("f"), "--train_file", foreign), foreign, "magic")
        self.assert_error(self.train_args(self.out("m"), "--train_file", os.path.join(self.tmp, "missing.bin")),
                          "missing.bin")

    def test_output_dir_is_protected(self):
        out = self.out("protected")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "keep.txt"), "w") as f:
            f.write("precious")
        self.assert_error(["train", "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin")],
                          out, "--overwrite_output_dir")
        with open(os.path.join(out, "keep.txt")) as f:
            self.assertEqual(f.read(), "precious")

    def test_plugin_errors(self):
        fixtures = os.path.join(BUILD, "tests", "fixtures")
        self.assert_error(self.args("--plugin", "nosuch"), "nosuch", "plugins")
        self.assert_error(self.args("--lr_scheduler_type", "linear", "--optim", "sgd", "--plugin", "adamw",
                                    "--model", "linear"), "linear", "scheduler", "model")
        self.assert_error(self.args("--plugin", os.path.join(fixtures, "abi_major.so")), "ABI 2", "ABI 1")
        self.assert_error(self.args("--plugin", os.path.join(fixtures, "no_entry.so")), "loom_plugin_query")
        self.assert_error(self.args("--plugin", os.path.join(fixtures, "undefined_symbol.so")),
                          "undefined symbol: loom_missing_function")
        self.assert_error(self.args("--plugin", "x"), "x", env={"LOOM_PLUGIN_PATH": "/nonexistent/dir"})

    def test_unknown_command_and_missing_arguments(self):
        code, _, stderr = loom("frobnicate", check=False)
        self.assertEqual(code, 2)
        self.assertIn("unknown command", stderr)
        self.assert_error(["train", "--train_file", os.path.join(self.data, "train.bin")], "--output_dir")
        self.assert_error(["train", "--output_dir", self.out("nodata")], "train_file")
        self.assert_error(["predict", "--model_name_or_path", self.out("never-trained"), "--test_file",
                           os.path.join(self.data, "test.bin")], "never-trained")
