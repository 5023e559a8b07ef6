"""When a run logs, evaluates and saves: --logging_steps, --eval_steps and --save_steps as ratios
of the run's total steps (HF's floats below 1; docs/semantics/trainer.md#strategies)."""
import json
import math
import os

from loomtest import LoomTestCase, loom
from test_cli_best import hf_replay


def losses(state):
    return [e["loss"] for e in state["log_history"] if "loss" in e]


class StepRatiosTest(LoomTestCase):
    def args(self, out, *extra):
        return self.train_args(out, "--learning_rate", "3e-3", "--seed", "7", *extra)

    def test_ratios_become_steps_of_a_max_steps_run(self):
        out = self.out("ratios")
        loom(*self.args(out, "--max_steps", "20", "--logging_steps", "0.25", "--save_steps", "0.5",
                        "--validation_file", os.path.join(self.data, "validation.bin"), "--evaluation_strategy",
                        "steps", "--eval_steps", "0.3"))
        state = self.state(out)
        # HF's TrainerState.compute_steps: ceil(20 x 0.25) = 5, ceil(20 x 0.3) = 6, ceil(20 x 0.5) = 10.
        self.assertEqual((state["logging_steps"], state["eval_steps"], state["save_steps"]), (5, 6, 10))
        self.assertEqual([e["step"] for e in state["log_history"] if "loss" in e], [5, 10, 15, 20])
        self.assertEqual([e["step"] for e in state["log_history"] if "eval_loss" in e], [6, 12, 18])
        self.assertEqual(sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")),
                         ["checkpoint-10", "checkpoint-20"])
        # The arguments keep the ratios, as HF's training_args.json does; trainer_state.json the steps.
        with open(os.path.join(out, "training_args.json")) as f:
            text = f.read()
        self.assertIn('\n  "logging_steps": 0.25,\n', text)
        self.assertIn('\n  "save_steps": 0.5,\n', text)
        self.assertIn('\n  "eval_steps": 0.3,\n', text)
        with open(os.path.join(out, "checkpoint-10", "trainer_state.json")) as f:
            self.assertEqual(json.load(f)["save_steps"], 10)

    def test_ratio_of_a_run_counted_in_epochs(self):
        # 2400 examples in batches of 8: 300 steps an epoch, 0.2 epoch = 60 steps, 0.1 of them = 6.
        out = self.out("epochs")
        loom(*self.args(out, "--num_train_epochs", "0.2", "--logging_steps", "0.1", "--save_strategy", "no"))
        state = self.state(out)
        self.assertEqual(state["max_steps"], 60)
        self.assertEqual(state["logging_steps"], math.ceil(60 * 0.1))
        self.assertEqual([e["step"] for e in state["log_history"] if "loss" in e], list(range(6, 61, 6)))

    def test_whole_numbers_stay_integers(self):
        out = self.out("whole")
        loom(*self.args(out, "--max_steps", "6", "--logging_steps", "3.0", "--save_steps", "1"))
        with open(os.path.join(out, "training_args.json")) as f:
            text = f.read()
        self.assertIn('\n  "logging_steps": 3,\n', text)
        self.assertIn('\n  "save_steps": 1,\n', text)
        state = self.state(out)
        self.assertEqual((state["logging_steps"], state["save_steps"]), (3, 1))
        self.assertEqual([e["step"] for e in state["log_history"] if "loss" in e], [3, 6])

    def test_a_resumed_run_resolves_its_ratios_again(self):
        full, part = self.out("full"), self.out("part")
        common = ("--max_steps", "20", "--logging_steps", "0.25", "--save_steps", "0.5")
        loom(*self.args(full, *common))
        loom(*self.args(part, *common))
        loom(*self.args(part, *common, "--resume_from_checkpoint", os.path.join(part, "checkpoint-10")))
        a, b = self.state(full), self.state(part)
        self.assertEqual(b["logging_steps"], 5)
        self.assertEqual([e["step"] for e in b["log_history"] if "loss" in e], [5, 10, 15, 20])
        self.assertEqual(losses(a), losses(b))

    def test_load_best_model_at_end_with_ratios(self):
        out = self.out("best")
        loom(*self.args(out, "--max_steps", "20", "--validation_file", os.path.join(self.data, "validation.bin"),
                        "--evaluation_strategy", "steps", "--eval_steps", "0.25", "--save_steps", "0.5",
                        "--load_best_model_at_end", "--learning_rate", "3e-2"))
        state = self.state(out)
        evals = [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e]
        self.assertEqual([s for s, _ in evals], [5, 10, 15, 20])
        best, best_step, _ = hf_replay(evals, False, 10, 100)
        self.assertIsNotNone(best_step)
        self.assertEqual(state["best_metric"], best)
        self.assertEqual(state["best_model_checkpoint"], os.path.join(out, f"checkpoint-{best_step}"))

    def test_bad_intervals_are_refused_naming_the_flag(self):
        never = self.out("never")
        self.assert_error(self.args(never, "--logging_steps", "1.5"), "--logging_steps 1.5",
                          "must be an integer if bigger than 1")
        self.assert_error(self.args(never, "--logging_steps", "0"), "--logging_steps 0", "must be > 0")
        self.assert_error(self.args(never, "--logging_steps", "-0.1"), "--logging_steps -0.1", "must be > 0")
        self.assert_error(self.args(never, "--save_steps", "2.5"), "--save_steps 2.5",
                          "must be an integer if bigger than 1")
        self.assert_error(self.args(never, "--save_steps", "half"), "--save_steps", "'half'")
        self.assert_error(self.args(never, "--validation_file", os.path.join(self.data, "validation.bin"),
                                    "--evaluation_strategy", "steps", "--eval_steps", "0.3", "--save_steps", "10",
                                    "--load_best_model_at_end"),
                          "--load_best_model_at_end", "a ratio and a count of steps")
        self.assertFalse(os.path.exists(never))
