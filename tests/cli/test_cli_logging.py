"""When a run logs, evaluates and saves, and what its logged loss is made of: --logging_steps,
--eval_steps and --save_steps as ratios of the run's total steps (HF's floats below 1), and HF's
--logging_nan_inf_filter (docs/semantics/trainer.md#strategies, #logging)."""
import json
import math
import os

from loomtest import LOOM, LoomTestCase, free_port, loom, run
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

    def test_ratios_whose_steps_never_meet_are_named(self):
        # 0.5 and 0.25 pass HF's check, but over 10 steps they save at 5, 10 and evaluate at 3, 6,
        # 9: no checkpoint is ever judged, and HF would say nothing. Over 20 steps they meet.
        args = ["--validation_file", os.path.join(self.data, "validation.bin"), "--evaluation_strategy", "steps",
                "--eval_steps", "0.25", "--save_steps", "0.5", "--load_best_model_at_end"]
        out = self.out("never-meet")
        _, _, stderr = loom(*self.args(out, "--max_steps", "10", *args))
        self.assertIn("--load_best_model_at_end: over 10 steps, --save_steps 0.5 saves every 5 steps and "
                      "--eval_steps 0.25 evaluates every 3", stderr)
        self.assertIsNone(self.state(out)["best_model_checkpoint"])
        _, _, stderr = loom(*self.args(out, "--max_steps", "20", *args))
        self.assertNotIn("may never be judged best", stderr)

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


class NanInfFilterTest(LoomTestCase):
    """A loss made NaN or inf for the log only (LOOM_TEST_NAN_LOSS_AT_STEP), so the run itself is
    the reference run's and its per-step losses give the numbers HF's formula logs."""

    def run_losses(self, name, *extra, bad=None, world=1):
        out = self.out(name)
        env = {"LOOM_TEST_NAN_LOSS_AT_STEP": bad} if bad else None
        args = self.train_args(out, "--max_steps", "8", "--learning_rate", "3e-3", "--save_strategy", "no", *extra)
        if world == 1:
            loom(*args, env=env)
        else:
            run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args, "--ddp_timeout", "30",
                env=env)
        return out, self.state(out)

    @staticmethod
    def hf_logged(per_step, bad, logging_steps, micro_batches):
        """Trainer._inner_training_loop on one rank: tr_loss += tr_loss_step, or with the filter,
        for a nan/inf micro-batch tr_loss += tr_loss / (1 + global_step - last logged step)."""
        logged, tr, last = [], 0.0, 0
        for step, loss in enumerate(per_step):  # step = global_step before this step
            if step + 1 in bad:
                for _ in range(micro_batches):
                    tr += tr / (1 + step - last)
            else:
                tr += loss
            if (step + 1) % logging_steps == 0:
                logged.append(tr / (step + 1 - last))
                tr, last = 0.0, step + 1
        return logged

    def check_filtered(self, *extra, micro_batches=1, world=1):
        name = f"{micro_batches}x{world}"
        _, ref = self.run_losses(f"ref{name}", "--logging_steps", "1", *extra, world=world)
        per_step = losses(ref)
        self.assertEqual(len(per_step), 8)
        out, state = self.run_losses(f"filtered{name}", "--logging_steps", "4", *extra, bad="3,7:inf", world=world)
        want = self.hf_logged(per_step, {3, 7}, 4, micro_batches)
        got = losses(state)
        self.assertEqual(len(got), 2)
        for g, w in zip(got, want):
            self.assertAlmostEqual(g, w, delta=1e-12)
        # Not the plain mean of the finite losses: the filter's own formula.
        self.assertGreater(abs(got[0] - (per_step[0] + per_step[1] + per_step[3]) / 3), 1e-4)
        # train_loss is made of the same sums (HF's _total_loss_scalar / steps).
        self.assertAlmostEqual(state["log_history"][-1]["train_loss"], sum(want) / 2, delta=1e-12)
        # Only what is logged changed: the model is the reference run's, bit for bit.
        with open(os.path.join(out, "model.safetensors"), "rb") as f, \
                open(os.path.join(self.out(f"ref{name}"), "model.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_a_nan_or_inf_loss_logs_the_mean_so_far(self):
        self.check_filtered()

    def test_each_micro_batch_is_filtered(self):
        # Both micro-batches of a bad step add tr_loss / (1 + steps since the log): (4/3)^2 at step 3.
        self.check_filtered("--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "4",
                            micro_batches=2)

    def test_every_rank_filters_its_own_share(self):
        # Each rank puts the mean of its own sum in place of its bad micro-batch, before the ranks
        # are averaged; bad on every rank, that averages to the formula over the logged losses.
        self.check_filtered("--per_device_train_batch_size", "4", world=2)

    def test_without_the_filter_the_log_is_nan(self):
        _, ref = self.run_losses("ref-off", "--logging_steps", "1")
        out, state = self.run_losses("off", "--logging_steps", "4", "--logging_nan_inf_filter", "false", bad="3")
        logs = [e for e in state["log_history"] if "loss" in e]
        # JSON has no NaN: loom writes null, in trainer_state.json and the final metrics.
        self.assertIsNone(logs[0]["loss"])
        self.assertAlmostEqual(logs[1]["loss"], sum(losses(ref)[4:8]) / 4, delta=1e-12)
        self.assertIsNone(state["log_history"][-1]["train_loss"])
        with open(os.path.join(out, "training_args.json")) as f:
            self.assertIs(json.load(f)["logging_nan_inf_filter"], False)


class EvalScheduleTest(LoomTestCase):
    """HF's --eval_delay (DefaultFlowCallback: no evaluation before that step, or that epoch) and
    --eval_on_start (one evaluation after on_train_begin)."""

    def args(self, out, *extra):
        return self.train_args(out, "--learning_rate", "3e-3", "--seed", "7", "--save_strategy", "no",
                               "--validation_file", os.path.join(self.data, "validation.bin"), *extra)

    def evals(self, out):
        return [(e["step"], e["epoch"], e["eval_loss"]) for e in self.state(out)["log_history"] if "eval_loss" in e]

    def test_delay_in_steps(self):
        out = self.out("delay-steps")
        loom(*self.args(out, "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps", "4",
                        "--eval_delay", "10"))
        # eval_delay <= global_step: 12, 16 and 20 of the multiples of 4.
        self.assertEqual([s for s, _, _ in self.evals(out)], [12, 16, 20])
        # A delay that is a multiple itself counts (<=).
        loom(*self.args(out, "--max_steps", "20", "--evaluation_strategy", "steps", "--eval_steps", "4",
                        "--eval_delay", "8"))
        self.assertEqual([s for s, _, _ in self.evals(out)], [8, 12, 16, 20])

    def test_delay_in_epochs(self):
        # 300 steps an epoch (2400 examples, batches of 8): the epoch ends are 1.0, 2.0, 3.0.
        out = self.out("delay-epochs")
        loom(*self.args(out, "--num_train_epochs", "3", "--evaluation_strategy", "epoch", "--eval_delay", "1.5"))
        self.assertEqual([(s, e) for s, e, _ in self.evals(out)], [(600, 2.0), (900, 3.0)])

    def test_eval_on_start(self):
        out = self.out("on-start")
        _, stdout, _ = loom(*self.args(out, "--max_steps", "4", "--evaluation_strategy", "steps", "--eval_steps",
                                       "2", "--eval_on_start"))
        evals = self.evals(out)
        # Printed as HF logs it: training has begun, so the entry has its epoch, 0.
        first = next(line for line in stdout.splitlines() if line.startswith("{'eval_loss'"))
        self.assertTrue(first.endswith("'epoch': 0}"), first)
        self.assertEqual([(s, e) for s, e, _ in evals], [(0, 0), (2, 0.0066666666666666671), (4, 0.013333333333333334)])
        # The evaluation before the first step is of the initial model: with a learning rate of 0
        # the model never moves, and the step-1 evaluation gives the same loss.
        frozen = self.out("on-start-frozen")
        loom(*self.args(frozen, "--max_steps", "1", "--evaluation_strategy", "steps", "--eval_steps", "1",
                        "--eval_on_start", "--learning_rate", "0"))
        (s0, _, first), (s1, _, second) = self.evals(frozen)
        self.assertEqual((s0, s1), (0, 1))
        self.assertEqual(first, second)
        self.assertEqual(first, evals[0][2])           # the same initial model (seed 7) in both runs
        self.assertNotEqual(evals[0][2], evals[1][2])  # and training moved it
        # With no evaluation strategy at all it still evaluates once, at the start; no best model
        # is judged on it.
        alone = self.out("on-start-alone")
        loom(*self.args(alone, "--max_steps", "2", "--eval_on_start"))
        self.assertEqual([s for s, _, _ in self.evals(alone)], [0])
        self.assertIsNone(self.state(alone)["best_metric"])

    def test_eval_on_start_of_a_resumed_run(self):
        full = self.out("on-start-full")
        loom(*self.args(full, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3"))
        half = self.out("on-start-half")
        loom(*self.args(half, "--max_steps", "6", "--eval_on_start", "--resume_from_checkpoint",
                        os.path.join(full, "checkpoint-3")))
        # At the step it resumes from, before its first step.
        self.assertEqual([s for s, _, _ in self.evals(half)], [3])

    def test_refusals(self):
        self.assert_error(self.train_args(self.out("x"), "--max_steps", "2", "--eval_on_start"), "--eval_on_start",
                          "--validation_file")
        self.assert_error(self.args(self.out("x"), "--max_steps", "2", "--evaluation_strategy", "steps",
                                    "--eval_delay", "-1"), "--eval_delay", "must be >= 0")
