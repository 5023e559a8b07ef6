"""Callbacks that reach the trainer ("loom.trainer/1"), early stopping, old-ABI callbacks: real runs.

Every value a callback reads through the service is held to a source that shares no code with it:
the checkpoint files (read by our own Python safetensors reader), the linear schedule's formula, the
data files' headers and trainer_state.json.
"""
import json
import math
import os
import shutil
import struct

from loomtest import BUILD, LoomTestCase, loom

FIXTURES = os.path.join(BUILD, "tests", "trainer-fixtures")
PROBE = os.path.join(FIXTURES, "probe_callback.so")
OLD = os.path.join(FIXTURES, "old_abi_callback.so")


def n_samples(path):
    """Examples in a LOOMCLS1 file, from its header."""
    with open(path, "rb") as f:
        magic, _, _, _, _, n = struct.unpack("<8sIIIIQ", f.read(32))
    assert magic == b"LOOMCLS1"
    return n


def raw_tensors(path):
    """name -> (dtype, shape, raw bytes as hex), read independently of loom."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, t in header.items():
        if name != "__metadata__":
            b, e = t["data_offsets"]
            out[name] = (t["dtype"], t["shape"], blob[8 + n + b:8 + n + e].hex())
    return out


def hf_stop_step(evals, patience, threshold, on_start=False):
    """HF's EarlyStoppingCallback over (step, eval_loss) pairs: the step it stops at, or None.
    on_start: the first pair is --eval_on_start's, which HF's trainer never judges for best_metric."""
    best, counter = None, 0
    for i, (step, value) in enumerate(evals):
        counter = 0 if best is None or (value < best and best - value > threshold) else counter + 1
        if (best is None or value < best) and not (on_start and i == 0):
            best = value  # HF's state.best_metric: any strict improvement
        if counter >= patience:
            return step, counter
    return None, counter


class TrainerServiceTest(LoomTestCase):
    def test_callback_reads_the_trainer_during_a_run(self):
        out, dump, tokenizer = self.out("probe"), os.path.join(self.tmp, "probe.jsonl"), self.out("tok")
        os.makedirs(tokenizer, exist_ok=True)
        for name, text in (("vocab.json", "{}"), ("merges.txt", "#version: 0.2\n")):
            with open(os.path.join(tokenizer, name), "w") as f:
                f.write(text)
        train, validation = os.path.join(self.data, "train.bin"), os.path.join(self.data, "validation.bin")
        lr, steps, batch, ga, eval_batch = 0.01, 30, 32, 2, 48
        loom(*self.train_args(out, "--plugin", PROBE, "--probe_callback.out_file", dump,
                              "--validation_file", validation, "--evaluation_strategy", "steps", "--eval_steps", "10",
                              "--save_steps", "10", "--logging_steps", "5", "--max_steps", str(steps),
                              "--learning_rate", str(lr), "--lr_scheduler_type", "linear", "--adam_beta1", "0.85",
                              "--weight_decay", "0.01", "--per_device_train_batch_size", str(batch),
                              "--per_device_eval_batch_size", str(eval_batch), "--gradient_accumulation_steps", str(ga),
                              "--tokenizer_name", tokenizer))
        with open(dump) as f:
            records = [json.loads(line) for line in f]
        by = lambda kind: [r for r in records if r["event"] == kind]

        # Before the parameters exist there are none to see; other names and newer minors are refused.
        self.assertEqual(by("create"), [{"event": "create", "tensors": 0, "unknown_service": 0, "future_minor": 0}])
        self.assertEqual(by("init_end")[0]["tensors"], 0)

        # Data loaders: sizes from the files, the position from the step count.
        n_train, n_eval = n_samples(train), n_samples(validation)
        batches = math.ceil(n_train / batch)  # dataloader_drop_last is false
        updates = math.ceil(batches / ga)
        step_ends = by("step_end")
        self.assertEqual([r["step"] for r in step_ends], list(range(1, steps + 1)))
        for r in step_ends:
            s = r["step"]
            self.assertEqual((r["lr_status"], r["data_status"]), (0, 0))
            self.assertEqual((r["train_examples"], r["train_batches"]), (n_train, batches))
            self.assertEqual((r["eval_examples"], r["eval_batches"]), (n_eval, math.ceil(n_eval / eval_batch)))
            self.assertEqual((r["updates_per_epoch"], r["gradient_accumulation_steps"]), (updates, ga))
            self.assertEqual(r["epoch"], (s - 1) // updates)
            self.assertEqual(r["batch"], min(((s - 1) % updates + 1) * ga, batches))
            # HF's linear schedule without warm-up: lr * (T - k) / T after k steps.
            self.assertEqual(r["scheduler_steps"], s)
            self.assertAlmostEqual(r["lr_next"], lr * (steps - s) / steps, delta=1e-15)
            self.assertAlmostEqual(r["lr_last"], lr * (steps - s + 1) / steps, delta=1e-15)

        # The logged learning rate is the service's, and the newest log_history entry is the payload.
        logs = [r for r in by("log") if "learning_rate" in r["payload"]]
        self.assertEqual([r["step"] for r in logs], [5, 10, 15, 20, 25, 30])
        for r in logs:
            self.assertEqual(r["payload"]["learning_rate"], r["lr_next"])
            self.assertEqual(r["last"][0]["loss"], r["payload"]["loss"])
            self.assertEqual(r["last"][0]["step"], r["step"])

        # At each checkpoint: every tensor and both Adam moments byte for byte as saved.
        saves = by("save")
        self.assertEqual([r["step"] for r in saves], [10, 20, 30])
        for r in saves:
            self.assertEqual(r["optimizer"], "adamw")
            self.assertAlmostEqual(r["hparams"].pop("lr"), lr * (steps - r["step"]) / steps, delta=1e-15)
            self.assertEqual(r["hparams"], {"initial_lr": lr, "beta1": 0.85, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01})
            self.assertEqual((r["missing_hparam"], r["missing_tensor"]), (8, 8))  # LOOM_E_NOT_FOUND
            self.assertEqual(r["states"], ["exp_avg", "exp_avg_sq"])
            model = raw_tensors(os.path.join(r["folder"], "model.safetensors"))
            optimizer = raw_tensors(os.path.join(r["folder"], "optimizer.safetensors"))
            self.assertEqual(sorted(t["name"] for t in r["tensors"]), sorted(model))
            for t in r["tensors"]:
                dtype, shape, data = model[t["name"]]
                self.assertEqual((t["dtype"].upper(), t["shape"], t["data"]), (dtype, shape, data))
                self.assertTrue(t["by_name_same"])
                for state in r["states"]:
                    self.assertEqual(t[state], optimizer[t["name"] + "." + state][2])
                    self.assertEqual((t[state + "_offset"], t[state + "_second_piece"]), (0, 8))
            self.assertNotEqual(saves[0]["tensors"][0]["data"], saves[-1]["tensors"][0]["data"])

        # At the end: log_history as trainer_state.json has it, the tokenizer, the arguments.
        end = by("train_end")[0]
        history = self.state(out)["log_history"]
        self.assertEqual(end["log_history"], history)
        self.assertEqual(end["log_history_len"], len(history))
        self.assertEqual((end["json_status"], end["first_loss"]), (0, history[0]["loss"]))
        self.assertEqual(end["tokenizer"], tokenizer)
        self.assertEqual((end["gradient_accumulation_steps"], end["missing_argument"]), (str(ga), 8))

    def test_abi_1_0_callback_keeps_loading(self):
        out, trace = self.out("old"), os.path.join(self.tmp, "old.txt")
        loom(*self.train_args(out, "--plugin", OLD, "--old_abi_callback.trace_file", trace, "--max_steps", "6",
                              "--save_steps", "3", "--plugin", "early_stopping", "--metric_for_best_model", "loss",
                              "--validation_file", os.path.join(self.data, "validation.bin"),
                              "--evaluation_strategy", "steps", "--eval_steps", "3"))
        with open(trace) as f:
            events = [tuple(map(int, line.split())) for line in f]
        self.assertEqual(events[0], (1, 0))                                 # init_end
        self.assertEqual([s for e, s in events if e == 8], list(range(1, 7)))  # step_end
        self.assertEqual([s for e, s in events if e == 10], [3, 6])         # save
        # Its short vtable has no state; the 1.2 callback beside it has.
        with open(os.path.join(out, "checkpoint-6", "trainer_state.json")) as f:
            kept = json.load(f)["stateful_callbacks"]
        self.assertEqual(list(kept), ["EarlyStoppingCallback", "TrainerControl"])
        # HF's TrainerControl as it stood at the save of the last step.
        self.assertEqual(kept["TrainerControl"], {"args": {
            "should_epoch_stop": False, "should_evaluate": False, "should_log": False, "should_save": True,
            "should_training_stop": True}, "attributes": {}})


class EarlyStoppingTest(LoomTestCase):
    def run_early(self, name, patience, threshold, lr, *extra):
        out = self.out(name)
        _, stdout, _ = loom(*self.train_args(out, "--plugin", "early_stopping", "--metric_for_best_model", "loss",
                                             "--early_stopping.early_stopping_patience", str(patience),
                                             "--early_stopping.early_stopping_threshold", str(threshold),
                                             "--validation_file", os.path.join(self.data, "validation.bin"),
                                             "--evaluation_strategy", "steps", "--eval_steps", "1", "--save_steps", "1",
                                             "--logging_steps", "1", "--max_steps", "60", "--learning_rate", str(lr),
                                             "--per_device_train_batch_size", "64", *extra))
        state = self.state(out)
        evals = [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e]
        return out, state, evals, stdout

    def test_stops_where_hf_rule_says(self):
        # A learning rate far too large: the eval loss jumps about, and every step is evaluated.
        for patience, threshold in ((1, 0.0), (2, 0.0), (3, 0.05)):
            with self.subTest(patience=patience, threshold=threshold):
                out, state, evals, _ = self.run_early(f"es{patience}", patience, threshold, 0.5)
                expected, counter = hf_stop_step(evals, patience, threshold)
                self.assertIsNotNone(expected, "the run must stop early for the test to mean something")
                self.assertLess(expected, 60)
                self.assertEqual(state["global_step"], expected)
                self.assertEqual(evals[-1][0], expected)  # nothing evaluated after the stop
                # The checkpoint of the stopping step keeps HF's state of the callback.
                with open(os.path.join(out, f"checkpoint-{expected}", "trainer_state.json")) as f:
                    kept = json.load(f)["stateful_callbacks"]["EarlyStoppingCallback"]
                self.assertEqual(kept["args"], {"early_stopping_patience": patience, "early_stopping_threshold": threshold})
                self.assertEqual(kept["attributes"]["early_stopping_patience_counter"], counter)
                self.assertEqual(kept["attributes"]["best_metric"], min(v for _, v in evals))
                # Each earlier checkpoint has the counter as it stood then.
                earlier = expected - 1
                with open(os.path.join(out, f"checkpoint-{earlier}", "trainer_state.json")) as f:
                    kept = json.load(f)["stateful_callbacks"]["EarlyStoppingCallback"]
                self.assertEqual(kept["attributes"]["early_stopping_patience_counter"],
                                 hf_stop_step(evals[:-1], 10**9, threshold)[1])

    def test_patience_survives_a_resume(self):
        out, state, evals, _ = self.run_early("es-full", 3, 0.0, 0.5)
        expected, _ = hf_stop_step(evals, 3, 0.0)
        self.assertEqual(state["global_step"], expected)
        # Resume from the step before the stop, where the patience counter is already running.
        before = expected - 1
        with open(os.path.join(out, f"checkpoint-{before}", "trainer_state.json")) as f:
            counter = json.load(f)["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"][
                "early_stopping_patience_counter"]
        self.assertGreater(counter, 0)
        half = self.out("es-half")
        shutil.rmtree(half, ignore_errors=True)
        os.makedirs(half)
        shutil.copytree(os.path.join(out, f"checkpoint-{before}"), os.path.join(half, f"checkpoint-{before}"))
        _, resumed, _, _ = self.run_early("es-half", 3, 0.0, 0.5, "--resume_from_checkpoint",
                                          os.path.join(half, f"checkpoint-{before}"),
                                          "--restore_callback_states_from_checkpoint")
        self.assertEqual(resumed["global_step"], expected)   # a fresh counter would run 3 more evaluations
        with open(os.path.join(out, "model.safetensors"), "rb") as f, \
                open(os.path.join(half, "model.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        # HF's default: the callbacks start afresh, so the counter runs its patience again.
        fresh = self.out("es-fresh")
        shutil.rmtree(fresh, ignore_errors=True)
        os.makedirs(fresh)
        shutil.copytree(os.path.join(out, f"checkpoint-{before}"), os.path.join(fresh, f"checkpoint-{before}"))
        _, restarted, _, _ = self.run_early("es-fresh", 3, 0.0, 0.5, "--resume_from_checkpoint",
                                            os.path.join(fresh, f"checkpoint-{before}"))
        self.assertGreater(restarted["global_step"], expected)

    def test_the_eval_on_start_loss_is_not_the_best_to_beat(self):
        # HF's on_evaluate reads state.best_metric, which the trainer sets at step-end evaluations
        # only: the untrained model's loss (low next to a learning rate far too large) counts for
        # the patience but is not the best. Keeping it as the best stopped this run at step 2.
        _, state, evals, _ = self.run_early("es-start", 2, 0.0, 0.5, "--eval_on_start")
        self.assertEqual(evals[0][0], 0)
        expected, _ = hf_stop_step(evals, 2, 0.0, on_start=True)
        self.assertEqual(hf_stop_step(evals[:3], 2, 0.0)[0], 2)  # the start's loss as the best would stop here
        self.assertEqual(state["global_step"], expected if expected is not None else 60)

    def test_trainer_state_keys_sorted_at_every_level(self):
        # HF writes trainer_state.json with json.dumps(sort_keys=True), which sorts nested
        # objects too: the callbacks' attributes and every log_history entry.
        out = self.out("es-sorted")
        loom(*self.train_args(out, "--plugin", "early_stopping", "--metric_for_best_model", "loss",
                              "--validation_file", os.path.join(self.data, "validation.bin"), "--evaluation_strategy",
                              "steps", "--eval_steps", "1", "--save_steps", "3", "--logging_steps", "1",
                              "--max_steps", "3"))
        unsorted = []

        def pairs(items):
            keys = [k for k, _ in items]
            if keys != sorted(keys):
                unsorted.append(keys)
            return dict(items)

        for path in (os.path.join(out, "trainer_state.json"), os.path.join(out, "checkpoint-3", "trainer_state.json")):
            with open(path) as f:
                state = json.load(f, object_pairs_hook=pairs)
            self.assertIn("best_metric", state["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"])
            self.assertTrue(any("eval_loss" in e for e in state["log_history"]))
        self.assertEqual(unsorted, [])

    def test_requires_evaluation(self):
        code, _, stderr = loom(*self.train_args(self.out("noeval"), "--plugin", "early_stopping",
                                                "--metric_for_best_model", "loss", "--max_steps", "2"), check=False)
        self.assertNotEqual(code, 0)
        lines = [l for l in stderr.splitlines() if "early_stopping" in l]
        self.assertEqual(len(lines), 1, stderr)
        self.assertIn("evaluation_strategy", lines[0])
