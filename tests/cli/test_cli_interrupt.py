"""A run stopped at any moment (Ctrl-C, SIGTERM, a scheduler's kill) leaves an output folder the
next run goes on from, bit for bit, with nothing half-deleted or half-written that looks like a
checkpoint (docs/checkpoints.md#saving)."""
import os
import signal
import subprocess
import time
import unittest

from loomtest import BUILD, LOOM, SOURCE, LoomTestCase, free_port, loom

SHIM = os.path.join(BUILD, "tests", "preload", "kill_on_unlink.so")


def killing(variable, pattern):
    """The environment of a run the shim kills right after it unlinks or renames onto a path
    that matches `pattern` (tests/cli/kill_on_unlink.c)."""
    return {"LD_PRELOAD": SHIM, variable: pattern,
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}


class InterruptTest(LoomTestCase):
    data_kind = "blobs"

    def run_to(self, out, steps, *extra, env=None, check=True):
        return loom("train", "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin"),
                    "--disable_tqdm", "--max_steps", str(steps), "--save_steps", "1", "--save_total_limit", "2",
                    "--logging_steps", "1", *extra, env=env, check=check)

    def model(self, out):
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read()

    def test_stopped_while_rotating(self):
        # Step 3's save deletes checkpoint-1. The shim kills the run just after that folder's
        # manifest is gone and before the rest of its files are: before, checkpoint-1 stayed, a
        # folder with part of a checkpoint that no later rotation would touch (no manifest: "not
        # loom's"), warned about by every later run.
        out = self.out("rotating")
        env = killing("LOOM_TEST_KILL_ON_UNLINK", "*/checkpoint-1*/loom_manifest.json")
        code, _, _ = self.run_to(out, 6, env=env, check=False)
        self.assertEqual(code, -9)
        self.assertFalse(os.path.exists(os.path.join(out, "checkpoint-1")))
        _, stdout, stderr = self.run_to(out, 6, "--resume_from_checkpoint", "true")
        self.assertIn("resuming from", stdout + stderr)
        self.assertNotIn("leaving", stderr)
        names = sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))
        self.assertEqual(names, ["checkpoint-5", "checkpoint-6"])
        full = self.out("rotating-full")
        self.run_to(full, 6)
        self.assertEqual(self.model(out), self.model(full))

    def test_final_save_stopped_mid_file_leaves_no_temporary_behind(self):
        # A run killed while its final save writes model.safetensors leaves model.safetensors.tmp
        # (model-sized) in output_dir. Before, it stayed there through the whole next run, until
        # that run's own final save replaced it; now the next run removes it as training starts,
        # as it does checkpoint-N.tmp folders. Only loom's own names: a user's *.tmp stays.
        out = self.out("stale")
        code, _, _ = self.run_to(out, 2, env=killing("LOOM_TEST_KILL_ON_CREATE", "*/stale/model.safetensors.tmp"),
                                 check=False)
        self.assertEqual(code, -9)
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors.tmp")))
        for name in ("trainer_state.json.tmp", "vocab.json.tmp", "all_results.json.tmp", "notes.tmp",
                     "model.safetensors.tmp.mine"):
            with open(os.path.join(out, name), "w") as f:
                f.write("{")
        # The next run, stopped in its first checkpoint (training has begun, its own final save
        # is far off).
        code, _, _ = self.run_to(out, 4, "--overwrite_output_dir", check=False,
                                 env=killing("LOOM_TEST_KILL_ON_RENAME", "*/stale/checkpoint-1.tmp/model.safetensors"))
        self.assertEqual(code, -9)
        names = set(os.listdir(out))
        self.assertNotIn("model.safetensors", names)
        for name in ("model.safetensors.tmp", "trainer_state.json.tmp", "vocab.json.tmp", "all_results.json.tmp"):
            self.assertNotIn(name, names)
        for name in ("notes.tmp", "model.safetensors.tmp.mine"):
            self.assertIn(name, names)

    def test_make_data_stopped_between_its_files_leaves_no_mix(self):
        # A tool replaces each of its files atomically, but one stopped after the new train.bin
        # used to leave the previous data set's validation.bin (and test.bin) beside it, which the
        # next `loom train --validation_file` read as this data set's.
        env = killing("LOOM_TEST_KILL_ON_RENAME", "*/train.bin")
        out = self.out("made")
        blobs = ("make-data", "--kind", "blobs", "--n_samples", "200", "--n_classes", "3", "--output_dir", out)
        loom(*blobs, "--n_features", "4")
        self.assertTrue(os.path.exists(os.path.join(out, "validation.bin")))
        code, _, _ = loom(*blobs, "--n_features", "6", env=env, check=False)
        self.assertEqual(code, -9)
        self.assertTrue(os.path.exists(os.path.join(out, "train.bin")))
        for split in ("validation.bin", "test.bin"):
            self.assertFalse(os.path.exists(os.path.join(out, split)), split)

    def test_tokenize_stopped_between_its_two_files_leaves_no_mix(self):
        gpt2 = os.path.join(SOURCE, "runs", "deps", "gpt2")
        if not os.path.exists(os.path.join(gpt2, "vocab.json")):
            self.skipTest(f"no GPT-2 vocabulary at {gpt2} (scripts/fetch-data.sh)")
        env = killing("LOOM_TEST_KILL_ON_RENAME", "*/train.bin")
        text = os.path.join(self.tmp, "text.txt")
        with open(text, "w") as f:
            f.write("Call me Ishmael. Some years ago, never mind how long precisely. " * 40)
        tok = self.out("tokens")
        tokenize = ("tokenize", "--input", text, "--vocab_dir", gpt2, "--output_dir", tok)
        loom(*tokenize)
        self.assertTrue(os.path.exists(os.path.join(tok, "validation.bin")))
        code, _, _ = loom(*tokenize, env=env, check=False)
        self.assertEqual(code, -9)
        self.assertTrue(os.path.exists(os.path.join(tok, "train.bin")))
        self.assertFalse(os.path.exists(os.path.join(tok, "validation.bin")))

    def test_stopped_before_training_begins(self):
        # Rank 0 of a world of two whose rank 1 never comes waits at the rendezvous, before any
        # training: a Ctrl-C there used to end the process without a word.
        env = dict(os.environ, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        args = ["train", "--output_dir", self.out("waiting"), "--train_file", os.path.join(self.data, "train.bin"),
                "--disable_tqdm", "--max_steps", "2"]
        p = subprocess.Popen([LOOM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            time.sleep(1.5)
            self.assertIsNone(p.poll())
            p.send_signal(signal.SIGINT)
            _, stderr = p.communicate(timeout=60)
        finally:
            p.kill()
        self.assertEqual(p.returncode, -signal.SIGINT)   # still ended by the signal
        self.assertEqual(stderr.strip().splitlines(), ["loom: interrupted by SIGINT"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
