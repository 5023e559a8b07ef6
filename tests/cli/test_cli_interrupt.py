"""A run stopped at any moment (Ctrl-C, SIGTERM, a scheduler's kill) leaves an output folder the
next run goes on from, bit for bit, with nothing half-deleted or half-written that looks like a
checkpoint (docs/checkpoints.md#saving)."""
import os
import unittest

from loomtest import BUILD, LoomTestCase, loom

SHIM = os.path.join(BUILD, "tests", "preload", "kill_on_unlink.so")


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
        env = {"LD_PRELOAD": SHIM, "LOOM_TEST_KILL_ON_UNLINK": "*/checkpoint-1*/loom_manifest.json",
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
