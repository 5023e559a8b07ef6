"""Elastic restarts: `loom launch --max_restarts K` restarts a job whose rank died, and `loom
train` resumes each restart from the newest complete checkpoint, so a 2-rank run whose rank 1 is
killed three times ends with the model of a run that was never interrupted, bit for bit."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import GPT2_NANO, LOOM, TokensTestCase, free_port, run  # noqa: E402

STEPS = 12


class RestartTest(TokensTestCase):

    def launch(self, out, *launch_opts, env=None, check=True, extra=()):
        args = ["train", "--output_dir", out, "--train_file", self.tokens, "--disable_tqdm", *GPT2_NANO,
                "--per_device_train_batch_size", "4", "--max_steps", str(STEPS), "--learning_rate", "3e-3",
                "--logging_steps", "1", "--save_steps", "2", "--ddp_timeout", "30", "--overwrite_output_dir", *extra]
        return run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), "--timeout", "5",
                   *launch_opts, *args, env=env, check=check)

    def model_bytes(self, out):
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read()

    def losses(self, out):
        return [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]

    def test_model_only_checkpoints_are_refused_in_a_job_that_restarts(self):
        # A restart resumes from the newest checkpoint, which --save_only_model makes one that
        # cannot be resumed: refused before the run, not restart after restart.
        out = self.out("model-only")
        code, _, stderr = self.launch(out, "--max_restarts", "1", check=False, extra=("--save_only_model",))
        self.assertNotEqual(code, 0)
        self.assertIn("--save_only_model in a job that restarts failed ranks (1 restarts allowed)", stderr)
        self.assertFalse(any(n.startswith("checkpoint-") for n in os.listdir(out)) if os.path.isdir(out) else False)
        # Without restarts the same run trains.
        self.launch(out, extra=("--save_only_model",))
        self.assertEqual(len(self.losses(out)), STEPS)

    def test_three_deaths_same_model(self):
        full = self.out("full")
        self.launch(full)
        # Rank 1 dies at the end of step 3 on the first attempt, 6 on the second (a checkpoint
        # step: its checkpoint may or may not be complete), 9 on the third; the fourth runs
        # through. The user's --overwrite_output_dir must not make a restart start over.
        env = dict(os.environ, LOOM_TEST_EXIT_AT_STEP="1:3,6,9")
        elastic = self.out("elastic")
        _, stdout, stderr = self.launch(elastic, "--max_restarts", "3", env=env)
        self.assertEqual(stderr.count("rank 1 exited with signal SIGKILL"), 3, stderr)
        for k in (1, 2, 3):
            self.assertIn(f"restarting the job (restart {k} of 3)", stderr)
            self.assertIn(f"loom: restart {k}: resuming training at {elastic}/checkpoint-", stdout)
        self.assertEqual(self.model_bytes(elastic), self.model_bytes(full))
        self.assertEqual(self.losses(elastic), self.losses(full))
        self.assertEqual(len(self.losses(full)), STEPS)

    def test_restarts_run_out(self):
        env = dict(os.environ, LOOM_TEST_EXIT_AT_STEP="1:3,5")
        out = self.out("out-of-restarts")
        code, _, stderr = self.launch(out, "--max-restarts=1", env=env, check=False)
        self.assertEqual(code, 128 + 9, stderr)
        self.assertIn("restarting the job (restart 1 of 1)", stderr)
        self.assertNotIn("restart 2", stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_no_restart_without_the_option_or_for_bad_options(self):
        env = dict(os.environ, LOOM_TEST_EXIT_AT_STEP="1:3")
        code, _, stderr = self.launch(self.out("plain"), env=env, check=False)
        self.assertEqual(code, 128 + 9, stderr)
        self.assertNotIn("restarting", stderr)
        code, _, stderr = run(LOOM, "launch", "--max_restarts", "2", "--nproc_per_node", "0", "train", check=False)
        self.assertEqual(code, 2)
        self.assertNotIn("restarting", stderr)
        code, _, stderr = run(LOOM, "launch", "--max_restarts", "-1", "train", check=False)
        self.assertEqual(code, 2)
        self.assertIn("--max_restarts wants an integer", stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
