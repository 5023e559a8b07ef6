"""Training end to end: the loss falls, accumulation is exact, the schedule is HF's, plugins swap."""
import json
import math
import os

from loomtest import LoomTestCase, loom, read_safetensors


class TrainTest(LoomTestCase):
    def test_loss_falls_and_model_learns(self):
        out = self.out("learn")
        _, stdout, _ = loom(*self.train_args(out, "--validation_file", os.path.join(self.data, "validation.bin"),
                                             "--do_eval", "--num_train_epochs", "20", "--learning_rate", "3e-3",
                                             "--per_device_train_batch_size", "32", "--logging_steps", "100",
                                             "--mlp.hidden_sizes", "64,64"))
        logs = [e for e in self.state(out)["log_history"] if "loss" in e]
        self.assertGreater(len(logs), 5)
        self.assertLess(logs[-1]["loss"], 0.5 * logs[0]["loss"])
        self.assertLess(logs[-1]["loss"], 0.35)
        self.assertIn("eval_accuracy", stdout)
        with open(os.path.join(out, "eval_results.json")) as f:
            self.assertGreater(json.load(f)["eval_accuracy"], 0.85)

    def run_accumulated(self, name, batch, accumulation):
        out = self.out(name)
        loom(*self.train_args(out, "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps",
                              str(accumulation), "--max_steps", "40", "--logging_steps", "1", "--learning_rate", "1e-2",
                              "--weight_decay", "0.1", "--max_grad_norm", "0.5", "--warmup_steps", "4"))
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        return losses, read_safetensors(os.path.join(out, "model.safetensors"))

    def test_gradient_accumulation_equals_the_bigger_batch(self):
        # Each optimizer step sees the same 32 examples; the loss is normalised over the whole
        # accumulated batch in one place, so only float round-off may differ.
        base_losses, base = self.run_accumulated("ga1", 32, 1)
        for batch, accumulation in ((16, 2), (8, 4)):
            losses, params = self.run_accumulated(f"ga{accumulation}", batch, accumulation)
            self.assertEqual(len(losses), 40)
            for a, b in zip(losses, base_losses):
                self.assertAlmostEqual(a, b, delta=1e-5 * max(1.0, abs(b)))
            for name, (_, shape, values) in base.items():
                self.assertEqual(params[name][1], shape)
                worst = max(abs(x - y) for x, y in zip(params[name][2], values))
                self.assertLess(worst, 1e-4, name)

    def test_logged_learning_rate_follows_linear_schedule(self):
        out = self.out("schedule")
        base, warmup, total = 0.01, 5, 20
        loom(*self.train_args(out, "--learning_rate", str(base), "--warmup_steps", str(warmup), "--max_steps",
                              str(total), "--logging_steps", "1"))
        logs = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual([e["step"] for e in logs], list(range(1, total + 1)))
        for e in logs:
            t = e["step"]  # HF logs get_last_lr() after scheduler.step(): the factor at t = step
            factor = t / max(1, warmup) if t < warmup else max(0.0, (total - t) / max(1, total - warmup))
            self.assertAlmostEqual(e["learning_rate"], base * factor, places=12)

    def test_cosine_schedule_with_warmup_ratio(self):
        out = self.out("cosine")
        loom(*self.train_args(out, "--learning_rate", "0.02", "--warmup_ratio", "0.25", "--max_steps", "10",
                              "--logging_steps", "1", "--lr_scheduler_type", "cosine"))
        warmup = math.ceil(0.25 * 10)
        for e in self.state(out)["log_history"]:
            if "learning_rate" not in e:
                continue
            t = e["step"]
            if t < warmup:
                factor = t / warmup
            else:
                p = (t - warmup) / (10 - warmup)
                factor = max(0.0, 0.5 * (1 + math.cos(math.pi * 0.5 * 2 * p)))
            self.assertAlmostEqual(e["learning_rate"], 0.02 * factor, places=12)

    def test_swapping_optimizer_and_scheduler_plugins(self):
        adamw, sgd = self.out("adamw"), self.out("sgd")
        common = ("--max_steps", "15", "--logging_steps", "1", "--learning_rate", "0.05")
        loom(*self.train_args(adamw, *common))
        scheduler_path = os.path.join(os.environ.get("LOOM_BUILD_DIR", ""), "plugins", "constant.so")
        _, stdout, _ = loom(*self.train_args(sgd, *common, "--plugin", "sgd.so", "--plugin", scheduler_path,
                                             "--sgd.momentum", "0.9"))
        self.assertIn("[optimizer] sgd", stdout)
        self.assertIn("sgd.momentum = 0.9", stdout)
        rates = {e["learning_rate"] for e in self.state(sgd)["log_history"] if "learning_rate" in e}
        self.assertEqual(rates, {0.05})
        a = read_safetensors(os.path.join(adamw, "model.safetensors"))
        b = read_safetensors(os.path.join(sgd, "model.safetensors"))
        self.assertNotEqual(a["classifier.weight"][2], b["classifier.weight"][2])

    def test_optim_argument_selects_hf_variants(self):
        for optim, plugin in (("adamw_hf", "adamw_hf"), ("adam", "adam"), ("sgd", "sgd"), ("adamw_torch", "adamw")):
            out = self.out(f"optim-{optim}")
            _, stdout, _ = loom(*self.train_args(out, "--optim", optim, "--max_steps", "3"))
            self.assertIn(f"[optimizer] {plugin} ", stdout)

    def test_config_file_with_command_line_override(self):
        out = self.out("config")
        config = os.path.join(self.tmp, "args.json")
        with open(config, "w") as f:
            json.dump({"learning_rate": 0.1, "max_steps": 6, "logging_steps": 2, "lr_scheduler_type": "constant",
                       "mlp.hidden_sizes": "16"}, f)
        loom(*self.train_args(out, "--config", config, "--learning_rate", "0.02"))
        state = self.state(out)
        self.assertEqual(state["global_step"], 6)
        self.assertEqual({e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}, {0.02})
        weights = read_safetensors(os.path.join(out, "model.safetensors"))
        self.assertEqual(weights["layers.0.weight"][1], [16, 2])

    def test_epochs_steps_and_drop_last(self):
        out = self.out("epochs")
        loom(*self.train_args(out, "--num_train_epochs", "2", "--per_device_train_batch_size", "7",
                              "--gradient_accumulation_steps", "3", "--logging_steps", "1000"))
        # 2400 training examples: 343 batches of 7 -> 115 optimizer steps per epoch (the last
        # takes the one leftover micro-batch).
        state = self.state(out)
        self.assertEqual(state["global_step"], 230)
        self.assertEqual(state["epoch"], 2.0)
        out = self.out("drop")
        loom(*self.train_args(out, "--num_train_epochs", "1", "--per_device_train_batch_size", "7",
                              "--dataloader_drop_last"))
        self.assertEqual(self.state(out)["global_step"], 342)
        out = self.out("fraction")
        loom(*self.train_args(out, "--num_train_epochs", "0.5", "--per_device_train_batch_size", "24"))
        self.assertEqual(self.state(out)["global_step"], 50)


class CallbackTest(LoomTestCase):
    data_kind = "blobs"

    def test_events_in_hf_order_and_control_flags_steer_the_loop(self):
        out, trace = self.out("trace"), os.path.join(self.tmp, "trace.txt")
        plugin = os.path.join(os.environ.get("LOOM_BUILD_DIR", ""), "tests", "trainer-fixtures", "trace_callback.so")
        loom(*self.train_args(out, "--plugin", plugin, "--trace_callback.trace_file", trace,
                              "--trace_callback.stop_at_step", "7", "--trace_callback.log_at_step", "3",
                              "--logging_steps", "5", "--gradient_accumulation_steps", "2",
                              "--validation_file", os.path.join(self.data, "validation.bin"),
                              "--evaluation_strategy", "steps", "--eval_steps", "4", "--save_steps", "6"))
        with open(trace) as f:
            events = [line.split()[:2] for line in f.read().splitlines()]
        names = [e[0] for e in events]
        self.assertEqual(names[:4], ["init_end", "train_begin", "epoch_begin", "step_begin"])
        self.assertEqual(names[4:6], ["substep_end", "step_end"])   # 2 micro-batches per step
        end = names.index("train_end")
        self.assertEqual(names[end - 1], "log")                     # train_runtime, train_loss...
        self.assertEqual([n for n in names[end + 1:] if n != "prediction_step"], ["log", "evaluate"])
        self.assertGreater(names.count("prediction_step"), 0)       # one per evaluation batch
        state = self.state(out)
        self.assertEqual(state["global_step"], 7)                  # stopped by the callback
        logged = [int(s) for n, s in events if n == "log"]
        self.assertEqual(logged, [3, 4, 5, 7, 7])  # own flag at 3, eval at 4, logging_steps at 5, final
        self.assertEqual([int(s) for n, s in events if n == "evaluate"], [4, 7])
        self.assertEqual([int(s) for n, s in events if n == "save"], [6])
        self.assertEqual(names.count("step_end"), 7)
        self.assertEqual(names.count("substep_end"), 7)


class MemoryBudgetTest(LoomTestCase):
    data_kind = "blobs"

    def budget(self, out, *extra):
        import re
        _, stdout, _ = loom(*self.train_args(out, "--max_steps", "2", *extra))
        line = next(l for l in stdout.splitlines() if "memory budget" in l)
        numbers = {name: int(value) for name, value in re.findall(r"([a-z ]+) (\d+) B", line)}
        psi = sum(math.prod(shape) for _, shape, _ in read_safetensors(os.path.join(out, "model.safetensors")).values())
        return {k.strip(): v for k, v in numbers.items()}, psi

    def test_budget_follows_the_formulas(self):
        b, psi = self.budget(self.out("adamw"))
        self.assertEqual(b["parameters"], 4 * psi)
        self.assertEqual(b["gradients"], 4 * psi)
        self.assertEqual(b["optimizer states"], 8 * psi)          # Adam: m and v, fp32
        self.assertEqual(b["master weights"], 0)                  # fp32: the parameters are the master copy
        self.assertGreater(b["process before the run"], 1 << 20)   # code and libraries, measured
        self.assertEqual(b["total"], 16 * psi + b["activations"] + b["communication buckets"] + b["process before the run"])
        b, psi = self.budget(self.out("sgdm"), "--optim", "sgd", "--sgd.momentum", "0.9")
        self.assertEqual(b["optimizer states"], 4 * psi)
        b, psi = self.budget(self.out("sgd"), "--optim", "sgd")
        self.assertEqual(b["optimizer states"], 4 * psi)          # the buffer slot exists even at momentum 0
