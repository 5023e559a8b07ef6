"""The schedules HF added after v4.3, end to end: the learning_rate `loom train` logs at every
step is transformers' LambdaLR lambda (optimization.py, rewritten below), and HF's kwargs errors
are one-line refusals. docs/semantics/schedulers.md#hf-schedules"""
import json
import math
import os
import shutil

from loomtest import LOOM, LoomTestCase, free_port, loom, read_safetensors, run


def inverse_sqrt(t, W, T, kw):
    if t < W:
        return t / max(1, W)
    timescale = W or 10_000
    return 1.0 / math.sqrt((t + timescale - W) / timescale)


def min_lr_rate(kw, lr):
    return kw["min_lr"] / lr if "min_lr" in kw else kw["min_lr_rate"]


def cosine_with_min_lr(t, W, T, kw, lr):
    if t < W:
        return t / max(1, W)
    progress = (t - W) / max(1, T - W)
    factor = 0.5 * (1.0 + math.cos(math.pi * kw.get("num_cycles", 0.5) * 2.0 * progress))
    rate = min_lr_rate(kw, lr)
    return max(0, factor * (1 - rate) + rate)


def cosine_warmup_with_min_lr(t, W, T, kw, lr):
    t, W, T = float(t), float(W), float(T)
    if t < W:
        if kw.get("warmup_lr_rate") is None:
            return (t + 1.0) / max(1.0, W)
        w = kw["warmup_lr_rate"]
        return w + (1.0 - w) * t / max(1, W - 1)
    progress = (t - W + 1.0) / max(1.0, T - W)
    factor = 0.5 * (1.0 + math.cos(math.pi * kw.get("num_cycles", 0.5) * 2.0 * progress))
    rate = min_lr_rate(kw, lr)
    return max(0, factor * (1 - rate) + rate)


def warmup_stable_decay(t, W, T, kw):
    D = kw["num_decay_steps"]
    S = kw.get("num_stable_steps", T - W - D)
    m = kw.get("min_lr_ratio", 0)
    up, down = kw.get("warmup_type", "linear"), kw.get("decay_type", "cosine")
    if t < W:
        p = t / max(1, W)
        f = {"linear": p, "cosine": 0.5 * (1.0 - math.cos(math.pi * p)), "1-sqrt": 1.0 - math.sqrt(1.0 - p)}[up]
        return max(0.0, f * (1.0 - m) + m)
    if t < W + S:
        return 1.0
    if t < W + S + D:
        p = (t - W - S) / max(1, D)
        f = {"linear": 1.0 - p, "cosine": 0.5 * (1.0 + math.cos(math.pi * kw.get("num_cycles", 0.5) * 2.0 * p)),
             "1-sqrt": 1.0 - math.sqrt(p)}[down]
        return max(0.0, f * (1.0 - m) + m)
    return m


class SchedulesTest(LoomTestCase):
    def check_logged(self, name, reference, kwargs, warmup=4, total=16, lr=0.02):
        out = self.out(f"{name}-{len(kwargs)}-{warmup}")
        extra = ["--lr_scheduler_kwargs", json.dumps(kwargs)] if kwargs else []
        _, _, stderr = loom(*self.train_args(out, "--learning_rate", str(lr), "--warmup_steps", str(warmup),
                                             "--max_steps", str(total), "--logging_steps", "1",
                                             "--lr_scheduler_type", name, *extra))
        logs = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual([e["step"] for e in logs], list(range(1, total + 1)))
        for e in logs:
            # HF logs get_last_lr() after scheduler.step(): the lambda at t = step.
            want = lr * reference(e["step"], warmup, total, kwargs)
            self.assertAlmostEqual(e["learning_rate"], want, places=12, msg=f"{name} {kwargs} step {e['step']}")
        return stderr

    def test_inverse_sqrt(self):
        self.check_logged("inverse_sqrt", inverse_sqrt, {})
        self.check_logged("inverse_sqrt", inverse_sqrt, {}, warmup=0)

    def test_cosine_with_min_lr(self):
        for kwargs in ({"min_lr": 0.004}, {"min_lr_rate": 0.3, "num_cycles": 1.0}):
            self.check_logged("cosine_with_min_lr", lambda t, W, T, kw: cosine_with_min_lr(t, W, T, kw, 0.02), kwargs)

    def test_cosine_warmup_with_min_lr(self):
        for kwargs in ({"min_lr": 0.002}, {"min_lr_rate": 0.1, "warmup_lr_rate": 0.2}):
            self.check_logged("cosine_warmup_with_min_lr",
                              lambda t, W, T, kw: cosine_warmup_with_min_lr(t, W, T, kw, 0.02), kwargs)

    def test_warmup_stable_decay(self):
        self.check_logged("warmup_stable_decay", warmup_stable_decay, {"num_decay_steps": 6})
        self.check_logged("warmup_stable_decay", warmup_stable_decay,
                          {"num_decay_steps": 5, "warmup_type": "1-sqrt", "decay_type": "linear", "min_lr_ratio": 0.1})
        stderr = self.check_logged("warmup_stable_decay", warmup_stable_decay,
                                   {"num_decay_steps": 4, "num_stable_steps": 3, "warmup_type": "cosine",
                                    "decay_type": "1-sqrt", "min_lr_ratio": 0.05})
        self.assertIn("num_stable_steps is used", stderr)  # HF's warning: S wins over max_steps

    def refused(self, name, kwargs, *expected):
        args = self.train_args(self.out("refused"), "--max_steps", "3", "--lr_scheduler_type", name)
        if kwargs is not None:
            args += ["--lr_scheduler_kwargs", json.dumps(kwargs)]
        self.assert_error(args, *expected)

    def test_kwargs_errors_hf_raises(self):
        for name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
            self.refused(name, None, name, "one of min_lr or min_lr_rate should be set")
            self.refused(name, {"min_lr": 1e-5, "min_lr_rate": 0.1}, name, "only one of min_lr or min_lr_rate")
        self.refused("warmup_stable_decay", None, "warmup_stable_decay", "num_decay_steps", "required")
        self.refused("warmup_stable_decay", {"num_decay_steps": 2, "warmup_type": "exp"}, "unknown warmup type: exp")
        self.refused("warmup_stable_decay", {"num_decay_steps": 2, "decay_type": "sqrt"}, "unknown decay type: sqrt")
        # HF's get_scheduler gives inverse_sqrt no kwargs, so timescale cannot be set.
        self.refused("inverse_sqrt", {"timescale": 100}, "inverse_sqrt", "timescale")


def plateau_rates(kw, lr, metrics):
    """torch 1.13's ReduceLROnPlateau.step(metric) rewritten: the rate after each metric."""
    mode, factor, patience = kw.get("mode", "min"), kw.get("factor", 0.1), kw.get("patience", 10)
    threshold, threshold_mode = kw.get("threshold", 1e-4), kw.get("threshold_mode", "rel")
    cooldown, min_lr, eps = kw.get("cooldown", 0), kw.get("min_lr", 0), kw.get("eps", 1e-8)
    best, bad, cooling, rates = (math.inf if mode == "min" else -math.inf), 0, 0, []
    for a in metrics:
        if mode == "min":
            better = a < best * (1.0 - threshold) if threshold_mode == "rel" else a < best - threshold
        else:
            better = a > best * (threshold + 1.0) if threshold_mode == "rel" else a > best + threshold
        best, bad = (a, 0) if better else (best, bad + 1)
        if cooling > 0:
            cooling, bad = cooling - 1, 0
        if bad > patience:
            new_lr = max(lr * factor, min_lr)
            if lr - new_lr > eps:
                lr = new_lr
            cooling, bad = cooldown, 0
        rates.append(lr)
    return rates


class PlateauTest(LoomTestCase):
    KWARGS = {"patience": 0, "threshold": 0.15, "factor": 0.5, "cooldown": 1}
    # Every evaluation after the first misses KWARGS' threshold, so its rates follow the cooldown
    # alone; at 2% some evaluations improve enough and some do not (by 0.2% of the loss or more,
    # far above the ranks' rounding), so the rates depend on the losses each rank observes.
    DEPENDS_ON_LOSS = {"patience": 0, "threshold": 0.02, "factor": 0.5}

    def train(self, out, *extra, check=True, world=1, kwargs=None):
        """world ranks of 256 / world examples each: the same global batch as one rank."""
        args = self.train_args(out, "--validation_file", os.path.join(self.data, "validation.bin"),
                               "--num_train_epochs", "8", "--per_device_train_batch_size", str(256 // world),
                               "--learning_rate", "0.02", "--warmup_steps", "3", "--logging_steps", "1",
                               "--eval_strategy", "epoch", "--save_strategy", "epoch",
                               "--lr_scheduler_type", "reduce_lr_on_plateau",
                               "--lr_scheduler_kwargs", json.dumps(kwargs or self.KWARGS), "--ddp_timeout", "30",
                               *extra)
        if world == 1:
            return loom(*args, check=check)
        return run(LOOM, "launch", "--nproc_per_node", world, "--master_port", free_port(), *args, check=check)

    def resume_from_fourth_epoch(self, full, name, *extra, world=1, kwargs=None):
        """A copy of full's fourth epoch's checkpoint alone in a new folder, resumed there."""
        evals = [e["step"] for e in self.state(full)["log_history"] if "eval_loss" in e]
        resumed = self.out(name)
        shutil.rmtree(resumed, ignore_errors=True)
        os.makedirs(resumed)
        shutil.copytree(os.path.join(full, f"checkpoint-{evals[3]}"), os.path.join(resumed, f"checkpoint-{evals[3]}"))
        self.train(resumed, "--resume_from_checkpoint", "true", *extra, world=world, kwargs=kwargs)
        return resumed

    def assert_same_bits(self, a, b, what):
        history_a, history_b = self.state(a)["log_history"], self.state(b)["log_history"]
        self.assertEqual([e.get("learning_rate") for e in history_a], [e.get("learning_rate") for e in history_b],
                         what)
        self.assertEqual([e.get("eval_loss") for e in history_a], [e.get("eval_loss") for e in history_b], what)
        with open(os.path.join(a, "model.safetensors"), "rb") as fa, \
                open(os.path.join(b, "model.safetensors"), "rb") as fb:
            self.assertEqual(fa.read(), fb.read(), what)

    def test_rate_follows_eval_loss_and_survives_resume(self):
        full = self.out("plateau-full")
        self.train(full)
        history = self.state(full)["log_history"]
        evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
        logged = [(e["step"], e["learning_rate"]) for e in history if "learning_rate" in e]
        self.assertEqual(len(evals), 8)
        # HF logs a step's rate before that step's evaluation steps the scheduler; no warmup.
        rates = plateau_rates(self.KWARGS, 0.02, [loss for _, loss in evals])
        for step, lr in logged:
            seen = sum(1 for s, _ in evals if s < step)
            self.assertEqual(lr, rates[seen - 1] if seen else 0.02, f"step {step}")
        self.assertLess(logged[-1][1], 0.02)  # the run must reduce, or this proves little
        self.assertGreater(len({lr for _, lr in logged}), 2)

        # A run resumed from the fourth epoch's checkpoint continues bit for bit.
        with open(os.path.join(full, f"checkpoint-{evals[3][0]}", "scheduler.json")) as f:
            self.assertIn("state", json.load(f))
        self.assert_same_bits(full, self.resume_from_fourth_epoch(full, "plateau-resumed"), "resumed")

    def test_two_ranks_equal_one_rank_and_resume(self):
        """Every rank steps its own scheduler with the evaluation's loss, which sums both ranks'
        shares: the rates, the evaluations and the model are one rank's with the same global batch
        (within test_cli_distributed.py's tolerance), under ddp and zero1, and a 2-rank resume from
        the fourth epoch ends where the uninterrupted 2-rank run did, bit for bit."""
        kwargs = self.DEPENDS_ON_LOSS
        one = self.out("plateau-one")
        self.train(one, kwargs=kwargs)
        history = self.state(one)["log_history"]
        rates = [e["learning_rate"] for e in history if "learning_rate" in e]
        evals = [e["eval_loss"] for e in history if "eval_loss" in e]
        # The rate must drop, and not at every evaluation, or this proves little.
        self.assertLess(rates[-1], 0.02)
        self.assertNotEqual(plateau_rates(kwargs, 0.02, evals), plateau_rates(kwargs, 0.02, [1.0] * len(evals)))
        for plugin in ("ddp", "zero1"):
            two = self.out(f"plateau-two-{plugin}")
            self.train(two, "--plugin", plugin, world=2, kwargs=kwargs)
            other = self.state(two)["log_history"]
            self.assertEqual([sorted(e) for e in other], [sorted(e) for e in history], plugin)
            for a, b in zip(history, other):
                for key in ("learning_rate", "eval_loss", "loss"):
                    if key in a:
                        self.assertAlmostEqual(b[key], a[key], delta=2e-5 * max(1.0, abs(a[key])),
                                               msg=f"{plugin} step {a['step']} {key}")
            theirs, mine = (read_safetensors(os.path.join(d, "model.safetensors")) for d in (one, two))
            for name in theirs:
                worst = max(abs(x - y) for x, y in zip(theirs[name][2], mine[name][2]))
                self.assertLess(worst, 2e-5, f"{plugin} {name}")
            resumed = self.resume_from_fourth_epoch(two, f"plateau-two-{plugin}-resumed", "--plugin", plugin, world=2,
                                                    kwargs=kwargs)
            self.assert_same_bits(two, resumed, f"{plugin} resumed")

    def test_refusals(self):
        base = self.train_args(self.out("plateau-refused"), "--max_steps", "3", "--lr_scheduler_type",
                               "reduce_lr_on_plateau")
        self.assert_error(base, "reduce_lr_on_plateau", "requires an eval strategy")
        evaluating = base + ["--validation_file", os.path.join(self.data, "validation.bin"), "--eval_strategy", "steps",
                            "--eval_steps", "1"]
        self.assert_error(evaluating + ["--lr_scheduler_kwargs", '{"mode": "up"}'], "mode up is unknown")
        self.assert_error(evaluating + ["--lr_scheduler_kwargs", '{"threshold_mode": "x"}'], "threshold mode x")
        self.assert_error(evaluating + ["--lr_scheduler_kwargs", '{"factor": 1.0}'], "factor", "< 1.0")
        self.assert_error(evaluating + ["--metric_for_best_model", "accuracy_typo"], "accuracy_typo", "eval_")

        # A checkpoint of another schedule has no plateau state to go on from.
        linear = self.out("plateau-from-linear")
        loom(*self.train_args(linear, "--max_steps", "2", "--save_steps", "1"))
        self.assert_error(evaluating + ["--output_dir", linear, "--resume_from_checkpoint", "true"],
                          "scheduler.json", "no \"state\"", "reduce_lr_on_plateau")
