"""--enable_jit_checkpoint (HF v5): SIGTERM during training saves checkpoint-N of the last
finished step on every rank, stops, and exits 143 without a final model; resuming from that
checkpoint ends with the model of a run that was never stopped, bit for bit.

LOOM_TEST_SIGTERM_AT_STEP=R:N makes rank R raise SIGTERM on itself when step N ends (the real
handler, at a known step); one test sends a real SIGTERM from outside at an unknown step."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import GPT2_NANO, LOOM, TokensTestCase, free_port, run  # noqa: E402

STEPS = 12
SIGTERM_EXIT = 128 + signal.SIGTERM


class JitCheckpointTest(TokensTestCase):

    def args(self, out, *extra):
        return ["train", "--output_dir", out, "--train_file", self.tokens, "--disable_tqdm", *GPT2_NANO,
                "--per_device_train_batch_size", "4", "--max_steps", str(STEPS), "--learning_rate", "3e-3",
                "--logging_steps", "1", "--save_steps", "5", "--ddp_timeout", "30", *extra]

    def train(self, out, *extra, ranks=1, env=None, check=True):
        args = self.args(out, *extra)
        if ranks > 1:
            return run(LOOM, "launch", "--nproc_per_node", str(ranks), "--master_port", free_port(), "--timeout",
                       "20", *args, env=env, check=check)
        return run(LOOM, *args, env=env, check=check)

    def signalled(self, out, rank_step, *extra, ranks=1):
        env = dict(os.environ, LOOM_TEST_SIGTERM_AT_STEP=rank_step)
        return self.train(out, "--enable_jit_checkpoint", "true", *extra, ranks=ranks, env=env, check=False)

    def checkpoints(self, out):
        return sorted(int(n.split("-")[1]) for n in os.listdir(out) if n.startswith("checkpoint-")
                      and not n.endswith(".tmp"))

    def model_bytes(self, out):
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            return f.read()

    def losses(self, out):
        return [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]

    def resume_matches(self, stopped, full, ranks=1, *extra):
        self.train(stopped, "--resume_from_checkpoint", "true", *extra, ranks=ranks)
        self.assertEqual(self.model_bytes(stopped), self.model_bytes(full))
        self.assertEqual(self.losses(stopped), self.losses(full))

    def test_one_rank_stops_at_the_step_and_resumes_bit_for_bit(self):
        full = self.out("full-1")
        self.train(full)
        stopped = self.out("stopped-1")
        code, stdout, stderr = self.signalled(stopped, "0:7")
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        self.assertIn("loom: SIGTERM: saving a checkpoint when this step ends", stderr)
        self.assertIn(f"loom: stopped by SIGTERM (--enable_jit_checkpoint): --resume_from_checkpoint true goes on "
                      f"from {stopped}/checkpoint-7", stderr)
        # checkpoint-5 by --save_steps, checkpoint-7 by the signal; no final model, no metrics.
        self.assertEqual(self.checkpoints(stopped), [5, 7])
        for name in ("model.safetensors", "train_results.json", "trainer_state.json"):
            self.assertFalse(os.path.exists(os.path.join(stopped, name)), name)
        self.assertEqual(self.state(os.path.join(stopped, "checkpoint-7"))["global_step"], 7)
        self.assertEqual(stdout.count("{'loss'"), 7)
        self.resume_matches(stopped, full)

    def test_the_step_end_saves_before_evaluating_and_between_steps_after(self):
        evaluating = ("--validation_file", self.tokens, "--eval_strategy", "steps", "--eval_steps", "7",
                      "--save_strategy", "no")
        full = self.out("full-eval")
        self.train(full, *evaluating)
        # During step 7: logged, saved, not evaluated (HF saves in on_step_end, before evaluating).
        during = self.out("during-step")
        code, stdout, stderr = self.signalled(during, "0:7", *evaluating)
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        self.assertEqual(self.checkpoints(during), [7])
        history = self.state(os.path.join(during, "checkpoint-7"))["log_history"]
        self.assertEqual([e["step"] for e in history if "loss" in e], list(range(1, 8)))
        self.assertFalse(any("eval_loss" in e for e in history))
        self.assertNotIn("eval_loss", stdout)
        # Signalled after step 7's evaluation: saved before step 8, with the evaluation in it.
        after = self.out("after-eval")
        code, stdout, stderr = self.signalled(after, "0:7+", *evaluating)
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        self.assertEqual(self.checkpoints(after), [7])
        history = self.state(os.path.join(after, "checkpoint-7"))["log_history"]
        self.assertEqual([e["step"] for e in history if "eval_loss" in e], [7])
        for stopped in (during, after):
            self.train(stopped, "--resume_from_checkpoint", "true", *evaluating)
            self.assertEqual(self.model_bytes(stopped), self.model_bytes(full))

    def test_a_step_just_saved_is_not_saved_again(self):
        stopped = self.out("on-a-save-step")
        code, _, stderr = self.signalled(stopped, "0:5", "--save_total_limit", "1")
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        self.assertEqual(self.checkpoints(stopped), [5])
        self.assertIn("goes on from " + stopped + "/checkpoint-5", stderr)

    def test_signal_in_the_last_step_gives_its_checkpoint_not_a_final_model(self):
        stopped = self.out("last-step")
        code, _, stderr = self.signalled(stopped, f"0:{STEPS}")
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        self.assertEqual(self.checkpoints(stopped), [5, 10, STEPS])
        self.assertFalse(os.path.exists(os.path.join(stopped, "model.safetensors")))
        # Resuming has no step left: it writes the final model of the 12 steps.
        full = self.out("full-last")
        self.train(full)
        self.train(stopped, "--resume_from_checkpoint", "true")
        self.assertEqual(self.model_bytes(stopped), self.model_bytes(full))

    def test_a_signal_to_one_rank_stops_both_at_one_step(self):
        # zero1: each rank's optimizer shard must be in the checkpoint for the resume.
        extra = ("--plugin", "zero1")
        full = self.out("full-2")
        self.train(full, *extra, ranks=2)
        stopped = self.out("stopped-2")
        code, _, stderr = self.signalled(stopped, "1:3", *extra, ranks=2)
        self.assertEqual(code, SIGTERM_EXIT, stderr)
        # Rank 0 learns of it through the flag's reduction (the launcher may also pass it a SIGTERM
        # once rank 1 has exited: too late to matter, the checkpoint is sealed before any rank leaves).
        self.assertIn("[rank 1] loom: SIGTERM: saving a checkpoint", stderr)
        self.assertIn(f"[rank 0] loom: stopped by SIGTERM (--enable_jit_checkpoint): --resume_from_checkpoint "
                      f"true goes on from {stopped}/checkpoint-3", stderr)
        self.assertEqual(self.checkpoints(stopped), [3])
        shards = sorted(n for n in os.listdir(os.path.join(stopped, "checkpoint-3")) if n.startswith("optimizer"))
        self.assertEqual(len(shards), 2, shards)
        self.resume_matches(stopped, full, 2, *extra)

    def test_without_the_flag_sigterm_ends_the_run_as_before(self):
        out = self.out("no-flag")
        code, _, stderr = self.train(out, env=dict(os.environ, LOOM_TEST_SIGTERM_AT_STEP="0:3"), check=False)
        self.assertEqual(code, -signal.SIGTERM, stderr)
        self.assertIn("loom: interrupted by SIGTERM", stderr)
        self.assertEqual(self.checkpoints(out), [])

    def test_a_real_sigterm_from_outside(self):
        # The launcher passes the signal on to its ranks; they save at whatever step they are at.
        out = self.out("outside")
        args = self.args(out, "--enable_jit_checkpoint", "true", "--max_steps", "100000", "--save_strategy", "no")
        env = dict(os.environ, LOOM_VERBOSE="1")
        p = subprocess.Popen([LOOM, "launch", "--nproc_per_node", "2", "--master_port", str(free_port()), "--timeout",
                              "20", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        # Wait for training to be under way: the first log line.
        seen = ""
        deadline = time.time() + 120
        while "{'loss'" not in seen and time.time() < deadline:
            seen += p.stdout.readline()
        self.assertIn("{'loss'", seen)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
        self.assertEqual(p.returncode, SIGTERM_EXIT, stderr)
        steps = self.checkpoints(out)
        self.assertEqual(len(steps), 1, os.listdir(out))
        self.assertIn(f"goes on from {out}/checkpoint-{steps[0]}", stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))
        # Not on a terminal: the notice starts its own line without an empty one before it.
        self.assertNotIn("[rank 0] \n", stderr)
        self.assertNotIn("[rank 1] \n", stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
