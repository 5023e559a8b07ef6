"""loom evaluate/predict --predict_with_generate (docs/seq2seq.md#generation): a small t5 trained
to reverse sequences generates them with greedy and beam search; generated_predictions.txt has
one line per example, in order, and the reported exact match and token error rate are what the
file and the references give when recomputed here; v4.2's --max_length / --num_beams spellings;
the model folder's generation defaults (length_penalty included), and --generation_config's in
their place; HF's max_new_tokens, min_length / min_new_tokens and no_repeat_ngram_size from a
generation config, the keys refused as not supported yet, and the unknown ones warned about;
the one-line refusals."""
import json
import os
import shutil
import tempfile
import unittest

from loomtest import LOOM, free_port, gpt2_byte_chars, loom, run, write_pairs

TINY = ["--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64",
        "--num_layers", "2", "--dropout_rate", "0.0"]


def edits(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, d[j] = d[j], cur
    return d[-1]


class Generate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomtest-gen-")
        cls.train_file = os.path.join(cls.tmp, "train.jsonl")
        cls.dev_file = os.path.join(cls.tmp, "dev.jsonl")
        write_pairs(cls.train_file, 320, 1)
        cls.refs = write_pairs(cls.dev_file, 30, 2)
        cls.model_dir = os.path.join(cls.tmp, "run")
        loom("train", "--train_file", cls.train_file, "--output_dir", cls.model_dir, "--do_train", "--disable_tqdm", "true",
             "--per_device_train_batch_size", "16", "--learning_rate", "5e-3", "--num_train_epochs", "25",
             "--seed", "3", "--save_strategy", "no", "--logging_steps", "50", *TINY)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def predict(self, out, *extra):
        loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file, "--output_dir", out,
             "--disable_tqdm", "true", "--predict_with_generate", "--per_device_eval_batch_size", "8", *extra)
        with open(os.path.join(out, "test_results.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(out, "generated_predictions.txt")) as f:
            lines = f.read().split("\n")
        self.assertEqual(lines[-1], "")
        return metrics, [[int(x) for x in l.split()] for l in lines[:-1]]

    def check_metrics(self, metrics, generated):
        self.assertEqual(len(generated), len(self.refs))
        exact = sum(g == r for g, r in zip(generated, self.refs)) / len(self.refs)
        ter = sum(edits(g, r) for g, r in zip(generated, self.refs)) / sum(len(r) for r in self.refs)
        self.assertAlmostEqual(metrics["test_exact_match"], exact, places=9)
        self.assertAlmostEqual(metrics["test_sequence_error_rate"], 1 - exact, places=9)
        self.assertAlmostEqual(metrics["test_token_error_rate"], ter, places=9)
        for key in ("test_bleu", "test_rouge1", "test_rouge2", "test_rougeL", "test_gen_len", "test_loss"):
            self.assertIn(key, metrics)

    def test_greedy_and_beams(self):
        greedy, g_lines = self.predict(os.path.join(self.tmp, "greedy"), "--generation_max_length", "8")
        self.check_metrics(greedy, g_lines)
        beams, b_lines = self.predict(os.path.join(self.tmp, "beams"), "--generation_num_beams", "4",
                                      "--generation_max_length", "8", "--length_penalty", "1.0")
        self.check_metrics(beams, b_lines)
        # The model has learnt the task: most reversals are right.
        self.assertGreater(beams["test_exact_match"], 0.5)
        self.assertGreater(beams["test_bleu"], 40)
        # evaluate reports the same under eval_ with v4.2's spellings
        ev = os.path.join(self.tmp, "eval")
        loom("evaluate", "--model_name_or_path", self.model_dir, "--validation_file", self.dev_file, "--output_dir", ev,
             "--disable_tqdm", "true", "--predict_with_generate", "--num_beams", "4", "--max_length", "8",
             "--per_device_eval_batch_size", "8")
        with open(os.path.join(ev, "eval_results.json")) as f:
            metrics = json.load(f)
        self.assertEqual(metrics["eval_exact_match"], beams["test_exact_match"])
        self.assertEqual(metrics["eval_bleu"], beams["test_bleu"])

    def test_text_through_the_tokenizer(self):
        """With --tokenizer_name, generated_predictions.txt holds the BPE's text of the ids."""
        # GPT-2's byte alphabet (bytes_to_unicode), ids chosen so that 3..12 are 'a'..'j'.
        byte_char = gpt2_byte_chars()
        order = [ord(c) for c in "xyzabcdefghij"] + [b for b in range(256) if chr(b) not in "xyzabcdefghij"]
        vocab = {byte_char[b]: i for i, b in enumerate(order)}
        tok = os.path.join(self.tmp, "tok")
        os.makedirs(tok, exist_ok=True)
        with open(os.path.join(tok, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        with open(os.path.join(tok, "merges.txt"), "w") as f:
            f.write("#version: 0.2\n")
        _, ids = self.predict(os.path.join(self.tmp, "ids"), "--generation_max_length", "8")
        out = os.path.join(self.tmp, "text")
        loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file, "--output_dir", out,
             "--disable_tqdm", "true", "--predict_with_generate", "--per_device_eval_batch_size", "8",
             "--generation_max_length", "8", "--tokenizer_name", tok)
        with open(os.path.join(out, "generated_predictions.txt")) as f:
            text = f.read().split("\n")[:-1]
        self.assertEqual(text, ["".join(chr(order[i]) for i in row) for row in ids])

    def test_two_ranks_report_the_whole_set(self):
        """Each rank generates its shard; rank 0 writes every example's line, in order, and the
        metrics are over all examples."""
        one, lines = self.predict(os.path.join(self.tmp, "one"), "--num_beams", "2", "--max_length", "8")
        out = os.path.join(self.tmp, "two")
        run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), LOOM, "predict",
            "--model_name_or_path", self.model_dir, "--test_file", self.dev_file, "--output_dir", out,
            "--disable_tqdm", "true", "--predict_with_generate", "--per_device_eval_batch_size", "8",
            "--num_beams", "2", "--max_length", "8")
        with open(os.path.join(out, "test_results.json")) as f:
            two = json.load(f)
        for key in ("test_bleu", "test_rouge1", "test_rougeL", "test_exact_match", "test_token_error_rate",
                    "test_gen_len"):
            self.assertAlmostEqual(two[key], one[key], places=9)
        with open(os.path.join(out, "generated_predictions.txt")) as f:
            self.assertEqual([[int(x) for x in l.split()] for l in f.read().split("\n")[:-1]], lines)
        self.assertFalse([name for name in os.listdir(out) if "-rank" in name])

    def test_max_length_cuts(self):
        _, lines = self.predict(os.path.join(self.tmp, "short"), "--max_length", "3", "--num_beams", "2")
        self.assertTrue(all(len(l) <= 2 for l in lines))

    def test_the_model_folders_generation_defaults(self):
        """Unset generation arguments come from generation_config.json (else config.json), as HF's
        generate() takes them; the run's arguments still win."""
        folder = os.path.join(self.tmp, "with-defaults")
        shutil.copytree(self.model_dir, folder)
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump({"num_beams": 3, "max_length": 4, "early_stopping": True, "decoder_start_token_id": 0}, f)
        explicit, e_lines = self.predict(os.path.join(self.tmp, "explicit"), "--generation_num_beams", "3",
                                         "--generation_max_length", "4", "--early_stopping", "true")
        saved = self.model_dir
        try:
            self.model_dir = folder
            implied, i_lines = self.predict(os.path.join(self.tmp, "implied"))
            wins, w_lines = self.predict(os.path.join(self.tmp, "wins"), "--generation_max_length", "8")
        finally:
            self.model_dir = saved
        self.assertEqual(i_lines, e_lines)
        self.assertEqual(implied["test_bleu"], explicit["test_bleu"])
        self.assertTrue(all(len(l) <= 3 for l in i_lines))
        self.assertTrue(any(len(l) > 3 for l in w_lines))
        # a wrong type is refused in one line naming the file
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump({"num_beams": "four"}, f)
        code, _, stderr = loom("predict", "--model_name_or_path", folder, "--test_file", self.dev_file,
                               "--output_dir", os.path.join(self.tmp, "badcfg"), "--predict_with_generate",
                               check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("generation_config.json: num_beams must be an integer >= 1", stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_the_model_folders_length_penalty(self):
        """An unset --length_penalty takes the folder's length_penalty (HF's generate() falls back
        to it, else to 1.0); an explicit --length_penalty 1.0 still wins over it."""
        folder = os.path.join(self.tmp, "with-penalty")
        shutil.copytree(self.model_dir, folder)
        beams = ("--generation_num_beams", "4", "--generation_max_length", "8")
        # -10 divides a finished hypothesis' log-probability by len ** -10: the shortest win
        _, plain = self.predict(os.path.join(self.tmp, "lp-plain"), *beams)
        _, short = self.predict(os.path.join(self.tmp, "lp-short"), *beams, "--length_penalty", "-10")
        self.assertNotEqual(short, plain)
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump({"length_penalty": -10.0, "decoder_start_token_id": 0}, f)
        saved = self.model_dir
        try:
            self.model_dir = folder
            _, implied = self.predict(os.path.join(self.tmp, "lp-implied"), *beams)
            _, explicit = self.predict(os.path.join(self.tmp, "lp-explicit"), *beams, "--length_penalty", "1.0")
        finally:
            self.model_dir = saved
        self.assertEqual(implied, short)
        self.assertEqual(explicit, plain)
        # a wrong type is refused in one line naming the file
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump({"length_penalty": "short"}, f)
        code, _, stderr = loom("predict", "--model_name_or_path", folder, "--test_file", self.dev_file,
                               "--output_dir", os.path.join(self.tmp, "lp-bad"), "--predict_with_generate",
                               "--generation_num_beams", "2", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("generation_config.json: length_penalty must be a finite number", stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_refusals(self):
        out = os.path.join(self.tmp, "bad")
        code, _, stderr = loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file,
                               "--output_dir", out, "--predict_with_generate", "--generation_num_beams", "0",
                               check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("--generation_num_beams / --num_beams must be >= 1", stderr)
        code, _, stderr = loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file,
                               "--output_dir", out, "--predict_with_generate", "--generation_max_length", "1",
                               check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("must be >= 2", stderr)

    def gen_config(self, name, settings):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(settings, f)
        return path

    def test_generation_config_in_place_of_the_model_folders(self):
        """--generation_config (a folder, a file, inline JSON, a --config dict) decodes as the same
        settings in the model folder's generation_config.json do; --generation_max_length and
        --generation_num_beams still win over it; and it replaces the folder's, key by key."""
        settings = {"num_beams": 3, "max_length": 4, "early_stopping": True}
        folder = os.path.join(self.tmp, "gc-model")
        shutil.copytree(self.model_dir, folder)
        self.gen_config("gc-model/generation_config.json", settings)
        _, default = self.predict(os.path.join(self.tmp, "gc-default"))
        saved = self.model_dir
        try:
            self.model_dir = folder
            _, by_model = self.predict(os.path.join(self.tmp, "gc-by-model"))
            _, by_model_long = self.predict(os.path.join(self.tmp, "gc-by-model-long"), "--generation_max_length", "8")
            _, by_model_greedy = self.predict(os.path.join(self.tmp, "gc-by-model-greedy"), "--generation_num_beams",
                                              "1")
            # the given one replaces the folder's: what it leaves out is HF's default, not the folder's
            _, replaced = self.predict(os.path.join(self.tmp, "gc-replaced"), "--generation_config",
                                       self.gen_config("gc-empty.json", {}))
        finally:
            self.model_dir = saved
        self.assertNotEqual(by_model, default)
        self.assertTrue(all(len(l) <= 3 for l in by_model))
        self.assertNotEqual(by_model_long, by_model)
        self.assertNotEqual(by_model_greedy, by_model_long)
        self.assertEqual(replaced, default)
        file = self.gen_config("gc-any-name.json", settings)
        config = self.gen_config("gc-args.json", {"generation_config": settings})
        for name, extra in (("folder", ["--generation_config", os.path.dirname(self.gen_config(
                                "gc-folder/generation_config.json", settings))]),
                            ("file", ["--generation_config", file]),
                            ("inline", ["--generation_config", json.dumps(settings)]),
                            ("config", ["--config", config])):
            with self.subTest(given=name):
                _, given = self.predict(os.path.join(self.tmp, "gc-" + name), *extra)
                self.assertEqual(given, by_model)
                _, long = self.predict(os.path.join(self.tmp, "gc-long-" + name), *extra, "--generation_max_length",
                                       "8")
                self.assertEqual(long, by_model_long)
                _, greedy = self.predict(os.path.join(self.tmp, "gc-greedy-" + name), *extra,
                                         "--generation_num_beams", "1")
                self.assertEqual(greedy, by_model_greedy)

    def refused_line(self, generation_config):
        """The one line a run with --generation_config refused when the arguments are read says."""
        code, _, stderr = loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file,
                               "--output_dir", os.path.join(self.tmp, "gc-refused"), "--predict_with_generate",
                               "--generation_config", generation_config, check=False)
        self.assertEqual(code, 2, stderr)
        lines = stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, stderr)
        return lines[0]

    def test_generation_config_refusals(self):
        """A missing file, a folder without generation_config.json, malformed JSON or a value of
        the wrong type: one line naming the file (and the key), before anything runs."""
        empty = os.path.join(self.tmp, "gc-no-file")
        os.makedirs(empty, exist_ok=True)
        for value, *expected in (
                (os.path.join(self.tmp, "gc-absent.json"), "--generation_config", "gc-absent.json"),
                (empty, "--generation_config", "gc-no-file/generation_config.json"),
                ('{"num_beams": 2', "--generation_config", "malformed JSON"),
                ('{"num_beams": "two"}', "--generation_config: num_beams must be an integer >= 1"),
                (self.gen_config("gc-list.json", [1]), "gc-list.json: expected a JSON object"),
                (self.gen_config("gc-type.json", {"max_length": 1.5}), "gc-type.json: max_length must be an integer"),
                (self.gen_config("gc-stop.json", {"early_stopping": "never"}), "gc-stop.json: early_stopping")):
            with self.subTest(value=value):
                line = self.refused_line(value)
                for text in expected:
                    self.assertIn(text, line)
        with open(os.path.join(self.tmp, "gc-bad.json"), "w") as f:
            f.write('{"max_length": 4,}')
        code, _, stderr = loom("predict", "--model_name_or_path", self.model_dir, "--test_file", self.dev_file,
                               "--output_dir", os.path.join(self.tmp, "gc-refused"), "--predict_with_generate",
                               "--generation_config", os.path.join(self.tmp, "gc-bad.json"), check=False)
        self.assertEqual(code, 2, stderr)
        self.assertIn("gc-bad.json:1:", stderr)
        self.assertIn("malformed JSON", stderr)

    def predict_with(self, name, settings, *extra, data=None):
        """predict with `settings` as the model folder's generation_config.json; (lines, stderr),
        and the metrics in self.metrics."""
        folder = os.path.join(self.tmp, name + "-model")
        if not os.path.isdir(folder):
            shutil.copytree(self.model_dir, folder)
        self.gen_config(name + "-model/generation_config.json", settings)
        out = os.path.join(self.tmp, name)
        _, _, stderr = loom("predict", "--model_name_or_path", folder, "--test_file", data or self.dev_file,
                            "--output_dir", out, "--disable_tqdm", "true", "--predict_with_generate",
                            "--per_device_eval_batch_size", "8", *extra)
        with open(os.path.join(out, "test_results.json")) as f:
            self.metrics = json.load(f)
        with open(os.path.join(out, "generated_predictions.txt")) as f:
            return [[int(x) for x in l.split()] for l in f.read().split("\n")[:-1]], stderr

    def test_generation_config_lengths(self):
        """max_new_tokens N generates at most N tokens, over max_length and over
        --generation_max_length too (HF's generate() lets it win, and warns); min_new_tokens N
        holds eos back until N tokens are out, as min_length N + 1 does, and replaces min_length
        (HF's _prepare_generated_length). The lines leave out the special tokens, so the lengths
        are the reported gen_len (model tokens, eos included): 4 tokens and an eos at least."""
        beams = ("--generation_num_beams", "2")
        plain, _ = self.predict_with("len-plain", {"max_length": 8}, *beams)
        self.assertTrue(any(len(l) > 2 for l in plain))
        capped, _ = self.predict_with("len-new", {"max_new_tokens": 2, "max_length": 8}, *beams)
        self.assertTrue(all(len(l) <= 2 for l in capped))
        self.assertNotEqual(capped, plain)
        by_length, _ = self.predict_with("len-max", {"max_length": 3}, *beams)
        self.assertEqual(capped, by_length)
        # A length the model cannot hold is refused naming every place it may have come from.
        folder = os.path.join(self.tmp, "len-huge-model")
        shutil.copytree(self.model_dir, folder)
        self.gen_config("len-huge-model/generation_config.json", {"max_new_tokens": 100000})
        code, _, stderr = loom("predict", "--model_name_or_path", folder, "--test_file", self.dev_file, "--output_dir",
                               os.path.join(self.tmp, "len-huge"), "--predict_with_generate", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("the generation length 100001 (--generation_max_length / --max_length, or the generation "
                      "config's max_length, or its max_new_tokens + 1) is longer than the model's n_positions", stderr)
        over_arg, stderr = self.predict_with("len-arg", {"max_new_tokens": 2}, *beams, "--generation_max_length", "8")
        self.assertEqual(over_arg, capped)
        self.assertIn("max_new_tokens 2 wins over --generation_max_length 8", stderr)
        self.predict_with("min-plain", {"max_length": 8}, *beams)
        self.assertLess(self.metrics["test_gen_len"], 5)
        longer, _ = self.predict_with("min-new", {"min_new_tokens": 4, "max_length": 8}, *beams)
        self.assertGreaterEqual(self.metrics["test_gen_len"], 5)
        self.assertNotEqual(longer, plain)
        by_min_length, _ = self.predict_with("min-len", {"min_length": 5, "max_length": 8}, *beams)
        self.assertEqual(by_min_length, longer)
        replaced, _ = self.predict_with("min-both", {"min_new_tokens": 4, "min_length": 7, "max_length": 8}, *beams)
        self.assertEqual(replaced, longer)
        at_least_six, _ = self.predict_with("min-7", {"min_length": 7, "max_length": 8}, *beams)
        self.assertNotEqual(at_least_six, longer)
        self.predict_with("min-greedy-plain", {"max_length": 8})
        self.assertLess(self.metrics["test_gen_len"], 5)
        self.predict_with("min-greedy", {"min_new_tokens": 4, "max_length": 8})
        self.assertGreaterEqual(self.metrics["test_gen_len"], 5)

    def test_no_repeat_ngram_size(self):
        """no_repeat_ngram_size n: no generated line repeats an n-gram, where the same model
        without it repeats one (the targets reverse sources made of repeats)."""
        data = os.path.join(self.tmp, "repeats.jsonl")
        with open(data, "w") as f:
            for s in ([4, 5, 4, 5], [7, 3, 7, 3, 9], [6, 6, 8], [9, 10, 9], [3, 11, 12, 11, 3]):
                f.write(json.dumps({"input_ids": s + [1], "labels": s[::-1] + [1]}) + "\n")

        def repeats(line, n):
            grams = [tuple(line[i:i + n]) for i in range(len(line) + 1 - n)]
            return len(grams) != len(set(grams))

        for n in (1, 2):
            for beams in ("1", "3"):
                with self.subTest(n=n, beams=beams):
                    args = ("--generation_num_beams", beams)
                    plain, _ = self.predict_with(f"ngram-plain-{beams}", {"max_length": 8}, *args, data=data)
                    self.assertTrue(any(repeats(l, n) for l in plain), plain)
                    banned, _ = self.predict_with(f"ngram-{n}-{beams}", {"max_length": 8, "no_repeat_ngram_size": n},
                                                  *args, data=data)
                    self.assertFalse(any(repeats(l, n) for l in banned), banned)

    def test_generation_config_keys(self):
        """A key that would change the output is refused, not supported yet, in one line naming
        the file and the key: --generation_config's when the arguments are read, the model
        folder's when generation is set up. Keys that change nothing are taken; an unknown key
        is a warning naming it."""
        for settings, key in (({"do_sample": True}, "do_sample"), ({"num_return_sequences": 2}, "num_return_sequences"),
                              ({"repetition_penalty": 1.2}, "repetition_penalty"),
                              ({"encoder_repetition_penalty": 1.1}, "encoder_repetition_penalty"),
                              ({"bad_words_ids": [[3]]}, "bad_words_ids"), ({"force_words_ids": [[3]]}, "force_words_ids"),
                              ({"forced_bos_token_id": 3}, "forced_bos_token_id"),
                              ({"forced_eos_token_id": 1}, "forced_eos_token_id"),
                              ({"num_beam_groups": 2}, "num_beam_groups"), ({"diversity_penalty": 0.5}, "diversity_penalty"),
                              ({"exponential_decay_length_penalty": [2, 1.1]}, "exponential_decay_length_penalty"),
                              ({"suppress_tokens": [3]}, "suppress_tokens"),
                              ({"begin_suppress_tokens": [3]}, "begin_suppress_tokens"),
                              ({"sequence_bias": {"3": -1.0}}, "sequence_bias"),
                              ({"renormalize_logits": True}, "renormalize_logits"),
                              ({"constraints": [1]}, "constraints"), ({"penalty_alpha": 0.6}, "penalty_alpha"),
                              ({"guidance_scale": 1.5}, "guidance_scale"), ({"low_memory": True}, "low_memory"),
                              ({"watermarking_config": {"greenlist_ratio": 0.25}}, "watermarking_config"),
                              ({"encoder_no_repeat_ngram_size": 2}, "encoder_no_repeat_ngram_size")):
            with self.subTest(key=key):
                line = self.refused_line(self.gen_config(f"keys/{key}.json", settings))
                self.assertIn(f"{key}.json: {key} is not supported yet", line)
        # the model folder's, where generation is set up; and an eos other than the model's
        for settings, text in (({"repetition_penalty": 1.2}, "generation_config.json: repetition_penalty is not "
                                                             "supported yet"),
                               ({"eos_token_id": 2}, "generation_config.json: eos_token_id 2 is not the model's (1)"),
                               ({"eos_token_id": [1, 2]}, "generation_config.json: eos_token_id with several ids")):
            with self.subTest(settings=settings):
                folder = os.path.join(self.tmp, "keys-model")
                if not os.path.isdir(folder):
                    shutil.copytree(self.model_dir, folder)
                self.gen_config("keys-model/generation_config.json", settings)
                code, _, stderr = loom("predict", "--model_name_or_path", folder, "--test_file", self.dev_file,
                                       "--output_dir", os.path.join(self.tmp, "keys-refused"),
                                       "--predict_with_generate", check=False)
                self.assertNotEqual(code, 0)
                self.assertIn(text, stderr)
        # taken: no effect on the output (the default one's), or an unknown key warned about
        _, default = self.predict(os.path.join(self.tmp, "keys-default"))
        accepted = {"transformers_version": "4.46.0", "_from_model_config": True, "do_sample": False, "top_k": 50,
                    "temperature": 1.0, "num_return_sequences": 1, "repetition_penalty": 1.0, "bad_words_ids": None,
                    "suppress_tokens": [], "eos_token_id": [1], "pad_token_id": 0, "decoder_start_token_id": 0,
                    "bos_token_id": 0, "output_scores": True, "return_dict_in_generate": True, "use_cache": True,
                    "future_knob": 3}
        taken, stderr = self.predict_with("keys-accepted", accepted)
        self.assertEqual(taken, default)
        self.assertIn("unknown generation setting 'future_knob' is ignored", stderr)
        self.assertEqual(stderr.count("future_knob"), 1, stderr)


if __name__ == "__main__":
    unittest.main()
