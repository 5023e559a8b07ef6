"""What loom's tools (consolidate, make-data, tokenize) do to a folder that already holds files."""
import hashlib
import json
import os
import shutil
import subprocess
import unittest

from loomtest import LOOM, LoomTestCase, gpt2_byte_chars, loom, write_byte_vocab, write_tokens

GPT2 = ["--model", "gpt2", "--gpt2.n_layer", "1", "--gpt2.n_head", "2", "--gpt2.n_embd", "32", "--gpt2.vocab_size",
        "256", "--gpt2.n_positions", "32", "--block_size", "16"]


def tree_digests(folder):
    """relative path -> sha256 of every file below folder (short enough for a readable diff)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


class ToolOutputsTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A finished run with a bf16 model in its checkpoints and f32 master weights beside it.
        cls.tokens = os.path.join(cls.tmp, "tokens.bin")
        write_tokens(cls.tokens, 4000, 256, 17)
        cls.run_dir = os.path.join(cls.tmp, "run")
        loom(*cls.train_gpt2(cls.run_dir))
        cls.checkpoint = os.path.join(cls.run_dir, "checkpoint-2")

    @classmethod
    def train_gpt2(cls, out):
        return ["train", "--output_dir", out, "--train_file", cls.tokens, "--disable_tqdm", *GPT2,
                "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_steps", "2", "--bf16"]

    def copy(self, source, name):
        path = self.out(name)
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(source, path, symlinks=True)
        return path

    # ---- consolidate --------------------------------------------------------------------------

    def test_consolidate_never_writes_into_the_checkpoint(self):
        ckb = self.copy(self.checkpoint, "ckb")
        before = tree_digests(ckb)
        link = self.out("ckb-link")
        if not os.path.lexists(link):
            os.symlink(ckb, link)
        outside = self.out("holder")
        os.makedirs(outside, exist_ok=True)
        held = self.copy(self.checkpoint, os.path.join("holder", "ck"))
        for out, checkpoint, what in ((ckb, ckb, "or a folder inside it"),
                                      (os.path.join(ckb, "consolidated"), ckb, "or a folder inside it"),
                                      (os.path.join(ckb, "new", "deeper"), ckb, "or a folder inside it"),
                                      (link, ckb, "or a folder inside it"),
                                      (ckb + "/.", link, "or a folder inside it")):
            for extra in ([], ["--overwrite_output_dir"]):
                with self.subTest(out=out, checkpoint=checkpoint, extra=extra):
                    message = self.assert_error(["consolidate", checkpoint, out, *extra], what)
                    self.assertIn(f"output directory {out} ", message)
                    self.assertIn(f"the checkpoint {checkpoint}", message)
        self.assertEqual(tree_digests(ckb), before, "the checkpoint was written into")
        # The folder that holds it (the run's own) is a folder with files: asked, it is written,
        # and the checkpoint below stays as it is.
        held_before = tree_digests(held)
        self.assert_error(["consolidate", held, outside], "not empty", "--overwrite_output_dir")
        loom("consolidate", held, outside, "--overwrite_output_dir")
        self.assertTrue(os.path.isfile(os.path.join(outside, "model.safetensors")))
        self.assertEqual(tree_digests(held), held_before)
        self.assertFalse(os.path.exists(os.path.join(ckb, "consolidated")))
        # The checkpoint still resumes: its files are the ones its manifest lists.
        run = self.out("ckb-run")
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run)
        shutil.copytree(ckb, os.path.join(run, "checkpoint-2"))
        _, stdout, _ = loom(*self.train_gpt2(run))
        self.assertIn(f"resuming training at {run}/checkpoint-2: step 2", stdout)

    def test_consolidate_asks_before_writing_into_a_folder_with_files(self):
        victim = self.copy(self.run_dir, "victim")
        with open(os.path.join(victim, "vocab.json"), "w") as f:
            f.write("{}")  # a tokenizer the checkpoint does not have
        before = tree_digests(victim)
        message = self.assert_error(["consolidate", self.checkpoint, victim], "--overwrite_output_dir")
        self.assertIn(victim, message)
        self.assertEqual(tree_digests(victim), before)
        # A file where the folder should be is refused too.
        as_file = self.out("a-file")
        with open(as_file, "w") as f:
            f.write("x")
        self.assert_error(["consolidate", self.checkpoint, as_file], as_file)
        # Asked: the model is replaced, the other files of the folder stay, the stale tokenizer goes.
        _, stdout, stderr = loom("consolidate", "--overwrite_output_dir", self.checkpoint, victim)
        self.assertIn("f32 master weights", stdout)
        self.assertIn("loom: warning: consolidate: removed " + os.path.join(victim, "vocab.json"), stderr)
        after = tree_digests(victim)
        self.assertNotEqual(after["model.safetensors"], before["model.safetensors"])
        self.assertNotIn("vocab.json", after)
        self.assertEqual(after["trainer_state.json"], before["trainer_state.json"])
        self.assertFalse([n for n in after if n.endswith(".tmp")], after.keys())
        # A new folder and an empty one need no flag.
        empty = self.out("cons-empty")
        shutil.rmtree(empty, ignore_errors=True)
        os.makedirs(empty)
        for out in (empty, self.out("cons-new")):
            loom("consolidate", self.checkpoint, out)
            self.assertEqual(sorted(os.listdir(out)), ["config.json", "model.safetensors"])
        self.assert_error(["consolidate", self.checkpoint, self.out("x"), "--overwrite_output_dir", "maybe"],
                          "usage: loom consolidate CHECKPOINT OUTPUT_DIR")

    # ---- make-data ------------------------------------------------------------------------------

    def test_make_data_removes_the_splits_of_an_earlier_data_set(self):
        out = self.out("mds")
        shutil.rmtree(out, ignore_errors=True)
        loom("make-data", "--kind", "blobs", "--n_samples", "200", "--n_features", "4", "--output_dir", out)
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("not make-data's")
        os.makedirs(os.path.join(out, "test.bin.d"))
        _, stdout, stderr = loom("make-data", "--kind", "blobs", "--n_samples", "5", "--n_features", "8",
                                 "--output_dir", out)
        self.assertEqual(sorted(os.listdir(out)), ["notes.txt", "test.bin.d", "train.bin"])
        self.assertIn("wrote " + os.path.join(out, "train.bin") + ": 5 samples", stdout)
        warnings = stderr.splitlines()
        self.assertEqual(len(warnings), 2, stderr)
        self.assertTrue(warnings[0].startswith("loom: warning: make-data: removed " +
                                               os.path.join(out, "validation.bin")), stderr)
        self.assertIn("(no validation split: --validation_fraction 0.1 of 5 samples)", warnings[0])
        self.assertIn(os.path.join(out, "test.bin"), warnings[1])
        # Only the split left out goes; an explicit 0 is left out too.
        loom("make-data", "--n_samples", "100", "--test_fraction", "0", "--output_dir", out)
        self.assertEqual(sorted(os.listdir(out)), ["notes.txt", "test.bin.d", "train.bin", "validation.bin"])

    def test_make_data_numbers_out_of_range(self):
        out = self.out("md-bad")
        cases = [
            (["--n_samples", "-5"], "--n_samples -5: must be a whole number >= 1"),
            (["--n_samples", "0"], "--n_samples 0: must be a whole number >= 1"),
            (["--n_samples", "12x"], "--n_samples 12x"),
            (["--n_samples", "99999999999999999999"], "--n_samples 99999999999999999999"),
            (["--n_features", "0"], "--n_features 0: must be a whole number from 1 to 4294967295"),
            (["--n_features", "4294967297"], "--n_features 4294967297: must be a whole number from 1"),
            (["--n_classes", "1"], "--n_classes 1: must be a whole number from 2 to 2147483647"),
            (["--seed", "-1"], "--seed -1: must be a whole number >= 0"),
            (["--validation_fraction", "1.5"], "--validation_fraction 1.5: must be a number in [0, 1)"),
            (["--validation_fraction", "-0.1"], "--validation_fraction -0.1: must be a number in [0, 1)"),
            (["--test_fraction", "nan"], "--test_fraction nan: must be a number in [0, 1)"),
            (["--test_fraction", "abc"], "--test_fraction abc: must be a number in [0, 1)"),
            (["--validation_fraction", "0.6", "--test_fraction", "0.5"],
             "--validation_fraction 0.6 + --test_fraction 0.5 must be less than 1"),
            (["--n_sample", "5"], "unknown argument '--n_sample'"),
            (["--n_samples"], "--n_samples needs a value"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assert_error(["make-data", "--output_dir", out, *args], "make-data: " + expected)
        self.assertFalse(os.path.exists(out))

    # ---- tokenize -------------------------------------------------------------------------------

    def test_tokenize_removes_the_validation_split_of_an_earlier_text(self):
        vocab = write_byte_vocab(self.out("bytes"))
        text, tiny, out = self.out("long.txt"), self.out("tiny.txt"), self.out("tok")
        shutil.rmtree(out, ignore_errors=True)
        with open(text, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog. " * 4)
        with open(tiny, "w") as f:
            f.write("ab")
        loom("tokenize", "--input", text, "--vocab_dir", vocab, "--output_dir", out)
        self.assertEqual(sorted(os.listdir(out)), ["train.bin", "validation.bin"])
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("not tokenize's")
        _, stdout, stderr = loom("tokenize", "--input", tiny, "--vocab_dir", vocab, "--output_dir", out)
        self.assertEqual(sorted(os.listdir(out)), ["notes.txt", "train.bin"])
        self.assertEqual(stderr.strip(), "loom: warning: tokenize: removed " + os.path.join(out, "validation.bin") +
                         ", left by an earlier run (no validation split: --validation_fraction 0.1 of 2 tokens)")
        self.assertIn("no validation split", stdout)

    def test_tokenize_numbers_out_of_range(self):
        vocab = write_byte_vocab(self.out("bytes"))
        text = self.out("t.txt")
        with open(text, "w") as f:
            f.write("abc")
        bpe = ["tokenize", "--input", text, "--vocab_dir", vocab, "--output_dir", self.out("tok-bad")]
        for value in ("1.5", "1", "-0.5", "nan", "x"):
            with self.subTest(value=value):
                self.assert_error([*bpe, "--validation_fraction", value],
                                  f"tokenize: --validation_fraction {value}: must be a number in [0, 1)")
        self.assert_error([*bpe, "--validation_franction", "0.1"], "unknown argument '--validation_franction'")
        self.assert_error([*bpe, "--validation_fraction"], "--validation_fraction needs a value")
        pairs = ["tokenize", "--train_file", text, "--output_dir", self.out("pairs-bad"), "--char_vocab"]
        for flag in ("--max_source_length", "--max_target_length", "--val_max_target_length"):
            for value in ("0", "-3", "2000000000", "8x"):
                with self.subTest(flag=flag, value=value):
                    self.assert_error([*pairs, flag, value],
                                      f"tokenize: {flag} {value}: must be a whole number from 1 to 1073741823")
        self.assert_error([*pairs, "--truncation", "yes"], "--truncation yes: must be true or false")
        self.assert_error([*pairs, "--source_split", "word"], "--source_split word: must be char or space")
        self.assert_error([*pairs, "--max_length", "5"], "unknown argument '--max_length'")
        self.assertFalse(os.path.exists(self.out("tok-bad")))


    def test_tokenize_never_writes_over_its_input(self):
        # The text was read, then train.bin renamed over it: the input was gone, exit 0.
        vocab = write_byte_vocab(self.out("bytes"))
        same = self.out("same")
        os.makedirs(same, exist_ok=True)
        text = os.path.join(same, "train.bin")
        with open(text, "w") as f:
            f.write("a text that was named train.bin by mistake")
        self.assert_error(["tokenize", "--input", text, "--vocab_dir", vocab, "--output_dir", same],
                          f"tokenize: --input {text} is the file tokenize writes as {text}")
        with open(text) as f:
            self.assertEqual(f.read(), "a text that was named train.bin by mistake")
        # Pairs: another split's output is as gone as its own.
        good = json.dumps({"source": "ab", "target": "c"}) + "\n"
        train, other = os.path.join(same, "a.jsonl"), os.path.join(same, "train.jsonl")
        for path in (train, other):
            with open(path, "w") as f:
                f.write(good)
        self.assert_error(["tokenize", "--train_file", train, "--validation_file", other, "--output_dir", same,
                           "--char_vocab"], f"tokenize: --validation_file {other} is the file tokenize writes as")
        with open(other) as f:
            self.assertEqual(f.read(), good)


    def test_decoded_text_that_is_not_utf8_is_replaced(self):
        # HF's decode(errors="replace"): a character cut short by the last token is one U+FFFD.
        vocab = write_byte_vocab(self.out("bytes"))
        ids = {b: i for i, b in enumerate(gpt2_byte_chars())}
        text = b"caf\xc3\xa9 \xe2\x82"  # "cafe", then the first two of the euro sign's three bytes
        p = subprocess.run([LOOM, "tokenize", "--vocab_dir", vocab, "--decode", " ".join(str(ids[b]) for b in text)],
                           capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "caf\u00e9 \ufffd\n".encode())


if __name__ == "__main__":
    unittest.main()
