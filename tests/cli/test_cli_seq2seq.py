"""loom train/evaluate on pair files (docs/seq2seq.md): the t5 model picked from the data, a
loss that falls, evaluation without dropout that a warm start reproduces, a resume that ends
exactly where an uninterrupted run with dropout does, and bad pair files named by line."""
import json
import os
import shutil
import tempfile
import unittest

from loomtest import LOOM, free_port, loom, read_safetensors, run, write_pairs

TINY = ["--vocab_size", "16", "--d_model", "32", "--d_kv", "8", "--num_heads", "4", "--d_ff", "64",
        "--num_layers", "2", "--dropout_rate", "0.1"]


def history(out):
    with open(os.path.join(out, "trainer_state.json")) as f:
        return json.load(f)["log_history"]


class Seq2Seq(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loomtest-s2s-")
        cls.train_file = os.path.join(cls.tmp, "train.jsonl")
        cls.dev_file = os.path.join(cls.tmp, "dev.jsonl")
        write_pairs(cls.train_file, 320, 1, longest=6)
        write_pairs(cls.dev_file, 40, 2, longest=6)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def train(self, out, *extra, check=True):
        return loom("train", "--train_file", self.train_file, "--validation_file", self.dev_file, "--output_dir", out,
                    "--overwrite_output_dir", "--disable_tqdm", "true", "--per_device_train_batch_size", "16",
                    "--learning_rate", "3e-3", "--seed", "11", *TINY, *extra, check=check)

    def test_train_evaluate_warm_start(self):
        out = os.path.join(self.tmp, "run")
        self.train(out, "--do_train", "--do_eval", "--num_train_epochs", "6", "--logging_steps", "20")
        losses = [e["loss"] for e in history(out) if "loss" in e]
        self.assertLess(losses[-1], 0.8 * losses[0])
        with open(os.path.join(out, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["model_type"], "t5")
        self.assertEqual(config["architectures"], ["T5ForConditionalGeneration"])
        with open(os.path.join(out, "eval_results.json")) as f:
            eval_loss = json.load(f)["eval_loss"]
        # The saved folder evaluates to the same loss: dropout is off in evaluation.
        again = os.path.join(self.tmp, "again")
        loom("evaluate", "--model_name_or_path", out, "--validation_file", self.dev_file, "--output_dir", again,
             "--disable_tqdm", "true")
        with open(os.path.join(again, "eval_results.json")) as f:
            self.assertEqual(json.load(f)["eval_loss"], eval_loss)

    def test_resume_is_exact_with_dropout(self):
        full = os.path.join(self.tmp, "full")
        self.train(full, "--do_train", "--max_steps", "12", "--logging_steps", "1", "--save_steps", "6")
        part = os.path.join(self.tmp, "part")
        self.train(part, "--do_train", "--max_steps", "12", "--logging_steps", "1", "--save_steps", "6")
        shutil.rmtree(os.path.join(part, "checkpoint-12"))
        self.train(part, "--do_train", "--max_steps", "12", "--logging_steps", "1", "--save_steps", "6",
                   "--resume_from_checkpoint", os.path.join(part, "checkpoint-6"))
        a = [e["loss"] for e in history(full) if "loss" in e]
        b = [e["loss"] for e in history(part) if "loss" in e]
        self.assertEqual(a[-1], b[-1])
        # another seed draws other dropout masks (and data order): other losses
        other = os.path.join(self.tmp, "other")
        self.train(other, "--do_train", "--max_steps", "12", "--logging_steps", "1", "--seed", "12")
        self.assertNotEqual([e["loss"] for e in history(other) if "loss" in e][-1], a[-1])

    def test_length_grouped_orders_resume_exactly(self):
        plain = os.path.join(self.tmp, "plain")
        self.train(plain, "--do_train", "--max_steps", "12", "--logging_steps", "1")
        random_order = [e["loss"] for e in history(plain) if "loss" in e]
        for flag in ("--sortish_sampler", "--group_by_length"):
            name = flag.strip("-")
            full, part = os.path.join(self.tmp, name + "_full"), os.path.join(self.tmp, name + "_part")
            args = ("--do_train", "--max_steps", "12", "--logging_steps", "1", "--save_steps", "6", flag)
            self.train(full, *args)
            self.train(part, *args)
            shutil.rmtree(os.path.join(part, "checkpoint-12"))
            self.train(part, *args, "--resume_from_checkpoint", os.path.join(part, "checkpoint-6"))
            a = [e["loss"] for e in history(full) if "loss" in e]
            b = [e["loss"] for e in history(part) if "loss" in e]
            self.assertEqual(a, b, flag)
            self.assertNotEqual(a, random_order, flag + " changes the order")
        code, _, stderr = self.train(os.path.join(self.tmp, "both"), "--do_train", "--max_steps", "1",
                                     "--sortish_sampler", "--group_by_length", check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("--sortish_sampler and --group_by_length are both set", stderr)

    def test_length_grouped_order_under_two_ranks_resumes_exactly(self):
        def launch(out, *extra):
            run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), "train", "--train_file",
                self.train_file, "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "true",
                "--ddp_timeout", "60", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--seed",
                "11", *TINY, "--do_train", "--max_steps", "8", "--logging_steps", "1", "--save_steps", "4", *extra)

        for flag in ("--sortish_sampler", "--group_by_length"):
            full, part = os.path.join(self.tmp, "ranks_full"), os.path.join(self.tmp, "ranks_part")
            launch(full, flag)
            launch(part, flag)
            shutil.rmtree(os.path.join(part, "checkpoint-8"))
            launch(part, flag, "--resume_from_checkpoint", os.path.join(part, "checkpoint-4"))
            self.assertEqual([e["loss"] for e in history(full) if "loss" in e],
                             [e["loss"] for e in history(part) if "loss" in e], flag)

    def test_generation_settings_are_checked_before_training(self):
        def refused(args, *words):
            code, _, stderr = loom(*args, check=False)
            self.assertEqual(code, 2, stderr)
            for word in words:
                self.assertIn(word, stderr)
            return stderr
        out = os.path.join(self.tmp, "gen_settings")
        # Found at the first evaluation, after checkpoints had been written.
        refused(["train", "--train_file", self.train_file, "--validation_file", self.dev_file, "--do_train",
                 "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm", "true", "--max_steps", "20",
                 "--evaluation_strategy", "steps", "--eval_steps", "10", "--save_steps", "5",
                 "--predict_with_generate", "--generation_max_length", "1", *TINY],
                "--generation_max_length / --max_length must be >= 2")
        self.assertFalse(os.path.exists(os.path.join(out, "checkpoint-5")))
        # Two spellings that disagree; sampling flags that beam search would ignore.
        predict = ["predict", "--model_name_or_path", os.path.join(self.tmp, "run"), "--test_file", self.dev_file,
                   "--output_dir", out, "--predict_with_generate"]
        refused(predict + ["--num_beams", "4", "--generation_num_beams", "1"],
                "--num_beams 4 and --generation_num_beams 1 disagree")
        refused(predict + ["--do_sample", "true"], "--do_sample", "decodes by beam search")
        refused(predict + ["--max_new_tokens", "3"], "--max_new_tokens", "applies to loom predict --generate")

    def test_weight_decay_leaves_the_relative_attention_bias_alone(self):
        # HF decays no parameter with "bias" in its name: relative_attention_bias.weight included.
        runs = {}
        for decay in ("0", "0.5"):
            out = os.path.join(self.tmp, "decay" + decay)
            loom("train", "--train_file", self.train_file, "--do_train", "--output_dir", out, "--overwrite_output_dir",
                 "--disable_tqdm", "true", "--max_steps", "1", "--optim", "sgd", "--learning_rate", "0.1",
                 "--weight_decay", decay, "--seed", "5", *TINY)
            runs[decay] = read_safetensors(os.path.join(out, "model.safetensors"))
        for name in runs["0"]:
            decayed = runs["0"][name][2] != runs["0.5"][name][2]
            expected = not (name.endswith("relative_attention_bias.weight") or "layer_norm" in name)
            self.assertEqual(decayed, expected, name)

    def test_targets_of_one_token(self):
        # Empty references (a test set to translate): every target is the eos alone. The model
        # was bound at the longest target, 1, and refused sources of 3 tokens.
        path = os.path.join(self.tmp, "eos_only.jsonl")
        with open(path, "w") as f:
            for i in range(8):
                f.write(json.dumps({"input_ids": [3 + i % 5, 4, 1], "labels": [1]}) + "\n")
        out = os.path.join(self.tmp, "eos_only")
        loom("train", "--train_file", path, "--do_train", "--output_dir", out, "--overwrite_output_dir",
             "--disable_tqdm", "true", "--max_steps", "2", "--per_device_train_batch_size", "4", *TINY)
        loom("predict", "--model_name_or_path", out, "--test_file", path, "--predict_with_generate",
             "--output_dir", os.path.join(self.tmp, "eos_only_predict"), "--disable_tqdm", "true")

    def test_bad_pair_files(self):
        cases = [('{"input_ids": [3, 1]}\n', ":1: no \"labels\""),
                 ('{"input_ids": [3, 1], "labels": [4, 1]}\n{"input_ids": [], "labels": [4]}\n', ":2: \"input_ids\" must be a non-empty"),
                 ('{"input_ids": [3, 1], "labels": [4, 1.5]}\n', ":1: \"labels\"[1] is not a token id"),
                 ('{"input_ids": [3, 1], "labels": [4, 1]}\n[1, 2]\n', ":2: not a JSON object"),
                 # All of the line is one value, as for json.loads; a key given twice (json.loads keeps
                 # the last, cJSON the first) is refused.
                 ('{"input_ids": [3, 1], "labels": [4, 1]} {"x": 1}\n', ":1: not a JSON object"),
                 ('{"input_ids": [3, 1], "labels": [4, 1], "labels": [5, 1]}\n', ':1: key "labels" given twice')]
        for i, (text, message) in enumerate(cases):
            path = os.path.join(self.tmp, "bad%d.jsonl" % i)
            with open(path, "w") as f:
                f.write(text)
            code, stdout, stderr = loom("train", "--train_file", path, "--do_train", "--output_dir",
                                        os.path.join(self.tmp, "bad"), "--overwrite_output_dir", *TINY, check=False)
            self.assertNotEqual(code, 0)
            self.assertIn(path + message, stderr)
        # a token the vocabulary does not cover
        path = os.path.join(self.tmp, "oov.jsonl")
        with open(path, "w") as f:
            f.write('{"input_ids": [3, 40, 1], "labels": [4, 1]}\n')
        code, _, stderr = loom("train", "--train_file", path, "--do_train", "--output_dir", os.path.join(self.tmp, "bad"),
                               "--overwrite_output_dir", *TINY, check=False)
        self.assertNotEqual(code, 0)
        self.assertIn("token id 40 at row 0, position 1 is outside the vocabulary [0, 16)", stderr)


if __name__ == "__main__":
    unittest.main()
