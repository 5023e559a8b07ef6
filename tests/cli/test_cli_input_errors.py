"""Bad input found by an audit of the command line: each gets one line saying what and where."""
import json
import os
import shutil
import struct
import subprocess
import unittest

from loomtest import LOOM, LoomTestCase, loom, write_byte_vocab, write_token_file, write_tokens


class InputErrorTest(LoomTestCase):
    data_kind = "blobs"

    def args(self, *extra):
        return self.train_args(self.out("bad"), "--max_steps", "2", *extra)

    def write(self, name, data):
        path = self.out(name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return path

    def trained(self):
        """A tiny trained MLP classifier run (made once)."""
        run = self.out("run1")
        if not os.path.exists(os.path.join(run, "config.json")):
            loom(*self.train_args(run, "--max_steps", "2"))
        return run

    # 1: --config and --deepspeed files are read by one strict reader.

    def test_deepspeed_file_with_trailing_text_is_refused(self):
        for name, text in (("trail.json", '{"train_batch_size": 8} garbage'), ("two.json", '{"train_batch_size": 8}{}')):
            with self.subTest(text=text):
                path = self.write(name, text)
                self.assert_error(self.args("--deepspeed", path), path + ":1:", "malformed JSON")
                self.assert_error(self.args("--config", path), path + ":1:", "malformed JSON")

    def test_nul_byte_in_a_json_file_is_refused(self):
        path = self.write("nul.json", b'{"max_steps": 2}\x00{"learning_rate": "x"}')
        for flag in ("--config", "--deepspeed"):
            with self.subTest(flag=flag):
                self.assert_error(self.args(flag, path), path, "NUL byte", "offset 16")

    def test_deepspeed_as_an_inline_dict_in_config(self):
        # HF's TrainingArguments.deepspeed takes a dict as well as a path.
        config = self.write("inline.json", json.dumps({"deepspeed": {"zero_optimization": {"stage": 1},
                                                                     "gradient_clipping": 0.5}}))
        out = self.out("inline")
        _, stdout, _ = loom(*self.train_args(out, "--max_steps", "2", "--config", config))
        self.assertIn("max_grad_norm", stdout)
        self.assertRegex(stdout, r"--max_grad_norm\s+0\.5\s")
        bad = self.write("inline_bad.json", json.dumps({"deepspeed": {"zero_optimization": {"stage": 7}}}))
        self.assert_error(self.args("--config", bad), "--deepspeed (inline dict)", "stage")

    def test_text_that_is_not_utf8_is_refused(self):
        # Every argument goes into training_args.json; json.load refuses a byte that is not UTF-8.
        out = os.fsencode(self.out("caf")) + b"\xe9"
        self.assert_error(self.train_args(out, "--max_steps", "2"), "--output_dir on the command line",
                          "byte 0xe9 at offset", "is not UTF-8")
        self.assertFalse(os.path.exists(out))
        self.assert_error(self.args("--run_name", b"a\xffb"), "--run_name", "byte 0xff at offset 1")
        config = self.write("latin1.json", b'{"run_name": "caf\xe9"}')
        self.assert_error(self.args("--config", config), config, "byte 0xe9 at byte offset 17", "not UTF-8")

    def test_empty_resume_from_checkpoint_is_not_a_fresh_start(self):
        # A script's unset variable: HF looks for a checkpoint at "" and fails; so does loom.
        self.assert_error(self.args("--resume_from_checkpoint", ""), "--resume_from_checkpoint ''", "is empty")

    def test_local_rank_without_a_launcher(self):
        self.assert_error(self.args("--local_rank", "1"), "--local_rank 1", "single process", "loom launch",
                          env={"RANK": None, "WORLD_SIZE": None, "LOCAL_RANK": None})

    def test_hex_floats_are_refused_as_hex_integers_are(self):
        # Python's float() and int(), which parse HF's flags, take neither.
        self.assert_error(self.args("--learning_rate", "0x1p-3"), "--learning_rate", "0x1p-3")
        self.assert_error(self.args("--max_steps", "0x10"), "--max_steps", "0x10")

    # 2: a file name holding glob characters.

    def test_data_file_named_with_glob_characters(self):
        path = self.out("c[1].bin")
        shutil.copy(os.path.join(self.data, "train.bin"), path)
        loom("train", "--output_dir", self.out("globbed"), "--overwrite_output_dir", "--train_file", path,
             "--disable_tqdm", "--max_steps", "2")

    # 3: an empty training file.

    def test_empty_train_file_says_so(self):
        path = self.write("empty.bin", struct.pack("<8sIIIIQ", b"LOOMCLS1", 1, 6, 4, 0, 0))
        line = self.assert_error(["train", "--output_dir", self.out("empty"), "--overwrite_output_dir", "--train_file",
                                  path, "--disable_tqdm", "--max_steps", "2"], path, "holds no examples")
        self.assertNotIn("drop_last", line)

    # 4: generation flags out of range.

    def test_generation_counts_out_of_range(self):
        base = ["predict", "--generate", "--model_name_or_path", self.out("nomodel"), "--prompt", "hi"]
        for value in ("0", "-2"):
            self.assert_error([*base, "--num_beams", value], "--num_beams " + value, "must be >= 1")
        self.assert_error([*base, "--max_new_tokens", "0"], "--max_new_tokens 0", "must be >= 1")

    def test_generation_past_the_context_says_so(self):
        tokens = os.path.join(self.tmp, "gen-tokens.bin")
        write_tokens(tokens, 3000, 256, 5)
        run_dir = self.out("gen-run")
        loom("train", "--output_dir", run_dir, "--overwrite_output_dir", "--train_file", tokens, "--disable_tqdm",
             "--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
             "--gpt2.vocab_size", "256", "--gpt2.n_positions", "16", "--max_steps", "1")
        vocab = write_byte_vocab(self.out("gen-bytes"))
        # Bytes: an untrained model's text need not be UTF-8.
        p = subprocess.run([LOOM, "predict", "--generate", "--model_name_or_path", run_dir, "--tokenizer_name", vocab,
                            "--prompt", "abcd", "--max_new_tokens", "100"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"--max_new_tokens 100: the prompt's 4 tokens leave room for 12 in the model's context of 16",
                      p.stderr)
        self.assertTrue(p.stdout.startswith(b"abcd"))   # the text still comes
        self.assertFalse(os.path.exists(os.path.join(run_dir, "predict")))  # no empty folder left
        # Text that is not UTF-8 comes as U+FFFD (HF's decode(errors="replace")), never as raw bytes.
        p.stdout.decode("utf-8")
        # What predict --generate would ignore, and --generate or --prompt where they are not read.
        gen = ["predict", "--generate", "--model_name_or_path", run_dir, "--tokenizer_name", vocab, "--prompt", "ab"]
        self.assert_error([*gen, "--max_length", "12"], "--max_length 12", "--max_new_tokens")
        self.assert_error([*gen, "--test_file", tokens], "--test_file", "reads --prompt")
        self.assert_error([*gen[:-1], ""], "--prompt is empty")
        self.assert_error(["evaluate", "--model_name_or_path", run_dir, "--validation_file", tokens, "--generate"],
                          "--generate belongs to loom predict")
        self.assert_error(["predict", "--model_name_or_path", run_dir, "--test_file", tokens, "--prompt", "ab"],
                          "--prompt is read by loom predict --generate")
        p = subprocess.run([LOOM, *gen, "--temperature", "0.5", "--max_new_tokens", "2"], capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"--temperature and --top_p apply with --do_sample", p.stderr)

    def test_small_things_of_the_command_line(self):
        # `loom help train` is train's help, as `git help COMMAND`; an unknown one is named.
        _, stdout, _ = loom("help", "train")
        self.assertTrue(stdout.startswith("usage: loom train"), stdout[:200])
        self.assert_error(["help", "trian"], "help: no command 'trian'")
        # A default given by the argument's own text is not given twice.
        _, stdout, _ = loom("train", "--help")
        self.assertIn("seed of the data order (default: seed).", stdout)
        self.assertNotRegex(stdout.replace("\n", " "), r"default:[^)]*\)\s*\(default:")
        # Arguments that are not loom's say so in one line.
        self.assert_error(["plugins", "bogus"], "plugins: unexpected argument 'bogus'")
        self.assert_error(self.args("--validation_split_percentage", "5"), "HF's example scripts",
                          "loom tokenize --validation_fraction")
        self.assert_error(self.args("--pad_to_max_length"), "HF's example scripts", "nothing to set")
        self.assert_error(["launch", "--standalone", "--master_port", "1234", "true"],
                          "--standalone picks a free port; --master_port 1234 contradicts it")
        self.assert_error(["make-data", "--output_dir", ""], "--output_dir is empty")
        self.assert_error(["plugins", "--plugin_dir", os.path.join(self.data, "train.bin")], "not a folder")
        # plot: a file as the output folder is one line (it was a PNG writer's warning, then an
        # error, exit 1); a damaged line of the log is named, not skipped in silence.
        run = self.out("logged")
        loom(*self.train_args(run, "--max_steps", "4", "--logging_steps", "1"))
        self.assert_error(["plot", run, "--output_dir", os.path.join(self.data, "train.bin")],
                          "plot: --output_dir", "not a folder")
        with open(os.path.join(run, "log_history.jsonl"), "a") as f:
            f.write("garbage\n")
        _, _, stderr = loom("plot", run, "--output_dir", self.out("plots"))
        self.assertIn("log_history.jsonl: 1 line(s) that are not a JSON object left out", stderr)

    def test_log_level(self):
        # HF's --log_level: loom's own messages (the startup block, "wrote ...", the metrics block:
        # HF's logger.info lines) go at warning; the log dicts and errors stay.
        quiet = {"LOOM_VERBOSE": "0"}  # --verbose shows everything, whatever the level
        _, stdout, _ = loom(*self.args("--log_level", "warning", "--logging_steps", "1"), env=quiet)
        self.assertNotIn("loom: model", stdout)
        self.assertNotIn("loom: wrote", stdout)
        self.assertIn("{'loss': ", stdout)
        _, stdout, _ = loom(*self.args("--logging_steps", "1"), env=quiet)
        self.assertIn("loom: model", stdout)
        # As HF's scripts: the train metrics block; the printed dicts leave total_flos out.
        self.assertIn("***** train metrics *****", stdout)
        self.assertRegex(stdout, r"\n  total_flos +=  *\d+GF\n")
        self.assertNotIn("'total_flos'", stdout)
        self.assert_error(self.args("--log_level", "loud"), "--log_level 'loud'", "is not one of: passive, debug")

    # 5: `loom version` takes no arguments.

    def test_version_refuses_arguments(self):
        self.assert_error(["version", "--foo"], "version", "--foo")
        code, stdout, _ = loom("version")
        self.assertEqual(code, 0)
        self.assertTrue(stdout.startswith("loom "))

    # 6: tensorboard's folder is a file.

    def test_tensorboard_logging_dir_is_a_file(self):
        afile = self.write("afile", "not a folder\n")
        self.assert_error(self.args("--report_to", "tensorboard", "--logging_dir", afile, "--logging_steps", "1"),
                          afile + "/events", "cannot write: Not a directory")

    # 7: evaluate / predict name what is missing.

    def test_evaluate_without_a_model_asks_for_it(self):
        line = self.assert_error(["evaluate", "--validation_file", os.path.join(self.data, "validation.bin")],
                                 "--model_name_or_path")
        self.assertNotIn("--output_dir", line)

    def test_generate_with_a_classifier_names_the_model_type(self):
        run = self.trained()
        line = self.assert_error(["predict", "--generate", "--model_name_or_path", run, "--prompt", "hi"], run, "'mlp'",
                                 "cannot generate text")
        self.assertNotIn("vocab.json", line)

    def test_an_output_dir_too_long_for_its_files_is_refused_at_once(self):
        deep = "/".join(["d" * 200] * 19 + ["e" * 100])   # 3919 bytes: the folder fits, its files would not
        line = self.assert_error(self.train_args(os.path.join(self.tmp, deep), "--max_steps", "2", "--save_steps", "1"),
                                 "--output_dir: ", "bytes long", "at most 3840")
        self.assertLess(len(line), 200)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "d" * 200)))

    def test_plugin_folders_and_files_named_wrongly(self):
        missing = os.path.join(self.tmp, "no-such-plugins")
        self.assert_error(self.args("--plugin_dir", missing), f"--plugin_dir {missing}: no such folder")
        # "--plugin fake.so" with ./fake.so there: names are looked up in the plugin folders.
        here = os.path.join(self.tmp, "here")
        os.makedirs(here, exist_ok=True)
        with open(os.path.join(here, "fake.so"), "w") as f:
            f.write("x")
        p = subprocess.run([LOOM, *self.args("--plugin", "fake.so")], cwd=here, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("give a path: ./fake.so", p.stderr)

    def test_a_checkpoint_given_as_the_model_is_checked_against_its_manifest(self):
        run = self.out("sealed")
        loom(*self.train_args(run, "--max_steps", "2", "--save_steps", "2"))
        ck = os.path.join(run, "checkpoint-2")
        model = os.path.join(ck, "model.safetensors")
        with open(model, "rb") as f:
            original = f.read()
        flipped = bytearray(original)
        flipped[-5] ^= 16  # inside the last tensor's data: the file still parses
        with open(model, "wb") as f:
            f.write(flipped)
        evaluate = ["evaluate", "--model_name_or_path", ck, "--validation_file",
                    os.path.join(self.data, "validation.bin"), "--output_dir", self.out("sealed-ev")]
        for args in (evaluate, self.train_args(self.out("sealed-tr"), "--max_steps", "1", "--model_name_or_path", ck)):
            self.assert_error(args, "--model_name_or_path", model, "checksum differs",
                              "delete its loom_manifest.json")
        # Optimizer states deleted to ship the model are no damage; the model is used as saved.
        with open(model, "wb") as f:
            f.write(original)
        os.remove(os.path.join(ck, "optimizer.safetensors"))
        loom(*evaluate)
        # The way out for an intended edit: without the manifest it is a plain model folder.
        with open(model, "wb") as f:
            f.write(flipped)
        os.remove(os.path.join(ck, "loom_manifest.json"))
        loom(*evaluate)

    def test_nan_weights_show_in_the_loss(self):
        # ReLU passes NaN as PyTorch's does; it used to make it 0, and the loss looked normal.
        run = self.out("nan")
        loom(*self.train_args(run, "--max_steps", "2"))
        path = os.path.join(run, "model.safetensors")
        with open(path, "rb") as f:
            blob = bytearray(f.read())
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        begin, end = header["layers.0.bias"]["data_offsets"]
        blob[8 + n + begin:8 + n + begin + 4] = struct.pack("<f", float("nan"))
        with open(path, "wb") as f:
            f.write(blob)
        ev = self.out("nan-ev")
        _, stdout, _ = loom("evaluate", "--model_name_or_path", run, "--validation_file",
                            os.path.join(self.data, "validation.bin"), "--output_dir", ev)
        self.assertIn("{'eval_loss': nan,", stdout)
        with open(os.path.join(ev, "eval_results.json")) as f:
            loss = json.load(f)["eval_loss"]
        self.assertIsNone(loss)  # JSON has no NaN; Python's json.dumps would write NaN, cJSON writes null


    def test_a_file_size_limit_is_an_error_not_a_signal(self):
        # ulimit -f: SIGXFSZ used to end the process halfway through a save without a word.
        import resource
        out = self.out("fsize")
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (30 * 1024, 30 * 1024))
        p = subprocess.run([LOOM, *self.train_args(out, "--max_steps", "2", "--save_steps", "2")],
                           capture_output=True, text=True, preexec_fn=limit, timeout=120)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr.strip(), r"^loom: error: .*: write failed: File too large$")
        self.assertFalse(os.path.exists(os.path.join(out, "checkpoint-2")))


    def test_a_tensor_of_another_shape_names_both_shapes(self):
        run = self.trained()
        self.assert_error(["evaluate", "--model_name_or_path", run, "--validation_file",
                           os.path.join(self.data, "validation.bin"), "--output_dir", self.out("shape-ev"),
                           "--mlp.hidden_sizes", "32,64"],
                          "model.safetensors: tensor 'layers.0.weight' is F32 [64, ", "; the model's is [32, ")


    def test_pair_data_for_gpt2_is_refused(self):
        # HF's run_clm rows (labels equal to input_ids): GPT-2 here does not shift, so each token
        # was scored against itself, with a loss that looked normal.
        path = self.out("clm.jsonl")
        with open(path, "w") as f:
            for _ in range(8):
                ids = [5, 6, 7, 8, 9, 10, 11, 12]
                f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
        gpt2 = ["--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
                "--gpt2.vocab_size", "64", "--gpt2.n_positions", "32"]
        self.assert_error(["train", "--output_dir", self.out("clm-run"), "--train_file", path, "--disable_tqdm",
                           "--max_steps", "2", *gpt2], "gpt2: pair data", "loom tokenize --input")

    def test_a_token_id_past_the_vocabulary_names_file_and_position(self):
        # The model named a row of the batch only ("token id 600 at row 0, position 28").
        tokens = [i % 500 for i in range(4000)]
        tokens[1500] = 600
        path = self.out("oov.bin")
        write_token_file(path, tokens)
        gpt2 = ["--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32",
                "--gpt2.vocab_size", "512", "--gpt2.n_positions", "64", "--block_size", "32"]
        self.assert_error(["train", "--output_dir", self.out("oov-run"), "--train_file", path, "--disable_tqdm",
                           "--max_steps", "200", "--per_device_train_batch_size", "8", "--save_strategy", "no",
                           *gpt2],
                          path + ": token id 600 at token 1500 is outside the model's vocabulary [0, 512)")


if __name__ == "__main__":
    unittest.main()
