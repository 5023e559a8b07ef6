"""Best model: best_metric / best_model_checkpoint chosen as HF chooses them, rotation that
never deletes the best nor the newest checkpoint, load_best_model_at_end; each checked against
the run's own logged evaluations replayed through HF's rules written here."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOM, LoomTestCase, run  # noqa: E402


def hf_replay(evals, greater, save_steps, limit):
    """Current HF's _determine_best_metric (best_global_step at every evaluation), _save_checkpoint
    (best_model_checkpoint: the best step's folder when it exists at a save) and
    _rotate_checkpoints over (step, metric) evaluations: returns (best_metric, the step of
    best_model_checkpoint or None, the checkpoint steps left)."""
    best, best_step, saved_best, kept = None, None, None, []
    for step, value in evals:
        if best is None or (value > best if greater else value < best):
            best, best_step = value, step
        if step % save_steps:
            continue
        kept.append(step)
        if best_step in kept:
            saved_best = best_step
        order = sorted(kept)
        if saved_best in order:
            i = order.index(saved_best)
            for j in range(i, len(order) - 2):
                order[j], order[j + 1] = order[j + 1], order[j]
        keep = limit
        if limit == 1 and order[-1] != saved_best:
            keep = 2
        kept = [s for s in kept if s not in order[:max(0, len(order) - keep)]]
    return best, saved_best, sorted(kept)


class BestModelTest(LoomTestCase):
    data_kind = "blobs"

    def run_best(self, name, *extra, check=True):
        out = self.out(name)
        result = run(LOOM, *self.train_args(out, "--validation_file", os.path.join(self.data, "validation.bin"),
                                            "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps",
                                            "2", "--save_steps", "2", "--learning_rate", "2", "--logging_steps", "2",
                                            *extra), check=check)
        return out, result

    def evals(self, out, key):
        return [(e["step"], e[key]) for e in self.state(out)["log_history"] if key in e]

    def checkpoints(self, out):
        return sorted(int(n.split("-")[1]) for n in os.listdir(out) if n.startswith("checkpoint-"))

    def check_against_hf(self, out, key, greater, limit):
        evals = self.evals(out, key)
        self.assertEqual(len(evals), 10)
        best, best_step, kept = hf_replay(evals, greater, 2, limit)
        state = self.state(out)
        self.assertEqual(state["best_metric"], best)
        self.assertEqual(state["best_model_checkpoint"], os.path.join(out, f"checkpoint-{best_step}"))
        self.assertEqual(self.checkpoints(out), kept)
        return best_step

    def test_loss_lower_is_better_and_the_best_model_is_loaded(self):
        out, _ = self.run_best("loss", "--save_total_limit", "2", "--load_best_model_at_end")
        best_step = self.check_against_hf(out, "eval_loss", False, 2)
        # The sequence is not monotonic, so the best is neither the first nor the last.
        self.assertNotIn(best_step, (2, 20))
        with open(os.path.join(out, "model.safetensors"), "rb") as f, \
                open(os.path.join(out, f"checkpoint-{best_step}", "model.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_limit_one_keeps_the_best_and_the_newest(self):
        out, _ = self.run_best("limit1", "--save_total_limit", "1", "--load_best_model_at_end")
        best_step = self.check_against_hf(out, "eval_loss", False, 1)
        self.assertEqual(self.checkpoints(out), sorted({best_step, 20}))

    def test_greater_is_better_for_a_metric_not_named_loss(self):
        out, _ = self.run_best("accuracy", "--save_total_limit", "3", "--metric_for_best_model", "accuracy")
        self.check_against_hf(out, "eval_accuracy", True, 3)
        with open(os.path.join(out, "training_args.json")) as f:
            args = json.load(f)
        self.assertEqual(args["greater_is_better"], True)   # HF's default for a metric not ending in "loss"
        out, _ = self.run_best("explicit", "--save_total_limit", "3", "--metric_for_best_model", "loss",
                               "--greater_is_better", "true")
        self.check_against_hf(out, "eval_loss", True, 3)

    def test_without_a_metric_nothing_is_tracked(self):
        out, _ = self.run_best("none", "--save_total_limit", "2")
        state = self.state(out)
        self.assertIsNone(state["best_metric"])
        self.assertIsNone(state["best_model_checkpoint"])
        self.assertEqual(self.checkpoints(out), [18, 20])

    def test_hf_rules_are_enforced(self):
        for extra, message in (
                (["--save_strategy", "epoch"], "requires the save and evaluation strategies to match"),
                (["--save_steps", "3"], "round multiple of --eval_steps"),
                (["--metric_for_best_model", "f1"], "the evaluation has no 'eval_f1'")):
            with self.subTest(extra=extra):
                _, (code, _, stderr) = self.run_best("rules", "--load_best_model_at_end", *extra, check=False)
                self.assertEqual(code, 2)
                self.assertIn(message, stderr)
                self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_a_best_evaluation_on_a_step_without_a_save(self):
        # Evaluations every 2 steps, saves every 4: the best evaluation may fall on a step that
        # saves nothing. best_model_checkpoint used to name that folder anyway, and the end of
        # the run then failed to load it (exit 2, no final model). HF names the best saved one.
        out, (_, stdout, _) = self.run_best("unsaved", "--save_steps", "4", "--max_steps", "20",
                                            "--load_best_model_at_end")
        evals = self.evals(out, "eval_loss")
        best, saved_best, kept = hf_replay(evals, False, 4, 10**9)
        state = self.state(out)
        self.assertEqual(state["best_metric"], best)
        self.assertEqual(state["best_global_step"], min(evals, key=lambda e: e[1])[0])
        self.assertNotEqual(state["best_global_step"] % 4, 0)  # the case this test is for
        self.assertEqual(state["best_model_checkpoint"], os.path.join(out, f"checkpoint-{saved_best}"))
        for name in os.listdir(out):
            if name.startswith("checkpoint-"):
                self.assertTrue(os.path.isdir(os.path.join(out, name)))
        with open(os.path.join(out, "model.safetensors"), "rb") as f, \
                open(os.path.join(out, f"checkpoint-{saved_best}", "model.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.assertIn(f"loading best model from {out}/checkpoint-{saved_best}", stdout)
        # Without saves there is no best checkpoint to name, as in HF.
        out, _ = self.run_best("unsaved-no-save", "--save_strategy", "no", "--metric_for_best_model", "loss")
        self.assertIsNone(self.state(out)["best_model_checkpoint"])
        self.assertIsNone(self.state(out)["best_global_step"])

    def test_best_survives_a_resume_spelt_another_way(self):
        # The checkpoint's trainer_state.json has the output folder as the first run spelt it;
        # rotation compared strings and deleted the best checkpoint of a resume spelt otherwise.
        args = ["--save_total_limit", "1", "--metric_for_best_model", "accuracy", "--greater_is_better", "false",
                "--load_best_model_at_end"]
        full, _ = self.run_best("spelt-full", *args)
        half = self.out("spelt-half")
        code, _, _ = run(LOOM, *self.train_args(half, "--validation_file", os.path.join(self.data, "validation.bin"),
                                                "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps",
                                                "2", "--save_steps", "2", "--learning_rate", "2", "--logging_steps",
                                                "2", *args),
                         env={"LOOM_TEST_KILL_DURING_SAVE": "12"}, check=False)
        self.assertEqual(code, -9)
        spelt = os.path.join(os.path.dirname(half), ".", os.path.basename(half))
        run(LOOM, *self.train_args(spelt, "--validation_file", os.path.join(self.data, "validation.bin"),
                                   "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps", "2",
                                   "--save_steps", "2", "--learning_rate", "2", "--logging_steps", "2", *args,
                                   "--resume_from_checkpoint", "true"))
        self.assertEqual(os.path.basename(self.state(half)["best_model_checkpoint"]),
                         os.path.basename(self.state(full)["best_model_checkpoint"]))
        with open(os.path.join(full, "model.safetensors"), "rb") as f, \
                open(os.path.join(half, "model.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_best_survives_a_resume(self):
        out, _ = self.run_best("resume-full", "--load_best_model_at_end")
        full = self.state(out)
        half = self.out("resume-half")
        code, _, _ = run(LOOM, *self.train_args(half, "--validation_file", os.path.join(self.data, "validation.bin"),
                                                "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps",
                                                "2", "--save_steps", "2", "--learning_rate", "2", "--logging_steps",
                                                "2", "--load_best_model_at_end"),
                         env={"LOOM_TEST_KILL_DURING_SAVE": "12"}, check=False)
        self.assertEqual(code, -9)
        self.run_best("resume-half", "--load_best_model_at_end", "--resume_from_checkpoint", "true")
        resumed = self.state(half)
        self.assertEqual(resumed["best_metric"], full["best_metric"])
        self.assertEqual(os.path.basename(resumed["best_model_checkpoint"]),
                         os.path.basename(full["best_model_checkpoint"]))
        self.assertEqual([e["eval_loss"] for e in resumed["log_history"] if "eval_loss" in e],
                         [e["eval_loss"] for e in full["log_history"] if "eval_loss" in e])

if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
