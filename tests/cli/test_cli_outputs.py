"""What a run leaves on disk: HF's layout, readable by an independent reader."""
import json
import os
import re

from loomtest import LoomTestCase, loom, read_safetensors


class OutputsTest(LoomTestCase):
    data_kind = "blobs"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_dir = os.path.join(cls.tmp, "run")
        loom("train", "--output_dir", cls.run_dir, "--train_file", os.path.join(cls.data, "train.bin"),
             "--validation_file", os.path.join(cls.data, "validation.bin"), "--evaluation_strategy", "steps",
             "--eval_steps", "15", "--max_steps", "30", "--logging_steps", "10", "--save_steps", "10",
             "--save_total_limit", "2", "--learning_rate", "5e-3", "--disable_tqdm")

    def test_trainer_state_is_hf_shaped(self):
        with open(os.path.join(self.run_dir, "trainer_state.json")) as f:
            text = f.read()
        state = json.loads(text)
        self.assertEqual(list(state), sorted(state))
        for key in ("best_global_step", "best_metric", "best_model_checkpoint", "epoch", "global_step", "is_world_process_zero",
                    "log_history", "logging_steps", "max_steps", "num_train_epochs", "save_steps", "total_flos",
                    "train_batch_size"):
            self.assertIn(key, state)
        self.assertEqual(state["global_step"], 30)
        self.assertEqual(state["max_steps"], 30)
        history = state["log_history"]
        train_logs = [e for e in history if "loss" in e]
        self.assertEqual([e["step"] for e in train_logs], [10, 20, 30])
        for e in train_logs:
            self.assertEqual(set(e) >= {"loss", "learning_rate", "epoch", "step", "grad_norm"}, True)
        self.assertEqual([e["step"] for e in history if "eval_loss" in e], [15, 30])
        self.assertIn("train_runtime", history[-1])
        self.assertTrue(text.startswith('{\n  "best_global_step"'))

    def test_input_tokens_are_counted_when_asked(self):
        # HF: 0 unless --include_num_input_tokens_seen, which also logs it (a classifier's example
        # is one input; token data counts every id).
        self.assertEqual(self.state(self.run_dir)["num_input_tokens_seen"], 0)
        out = os.path.join(self.tmp, "tokens-seen")
        loom("train", "--output_dir", out, "--train_file", os.path.join(self.data, "train.bin"), "--max_steps", "3",
             "--logging_steps", "1", "--per_device_train_batch_size", "4", "--include_num_input_tokens_seen",
             "--disable_tqdm")
        state = self.state(out)
        self.assertEqual(state["num_input_tokens_seen"], 12)
        self.assertEqual([e["num_input_tokens_seen"] for e in state["log_history"] if "loss" in e], [4, 8, 12])

    def test_checkpoints_rotate_and_are_complete(self):
        names = sorted(n for n in os.listdir(self.run_dir) if n.startswith("checkpoint"))
        self.assertEqual(names, ["checkpoint-20", "checkpoint-30"])
        for name in names:
            files = set(os.listdir(os.path.join(self.run_dir, name)))
            self.assertTrue({"model.safetensors", "config.json", "optimizer.safetensors", "scheduler.json",
                             "rng_state.json", "trainer_state.json", "training_args.json"} <= files, files)
        final = read_safetensors(os.path.join(self.run_dir, "model.safetensors"))
        last = read_safetensors(os.path.join(self.run_dir, "checkpoint-30", "model.safetensors"))
        self.assertEqual(final, last)
        earlier = read_safetensors(os.path.join(self.run_dir, "checkpoint-20", "model.safetensors"))
        self.assertNotEqual(earlier["classifier.weight"][2], last["classifier.weight"][2])
        optimizer = read_safetensors(os.path.join(self.run_dir, "checkpoint-30", "optimizer.safetensors"))
        for name, (_, shape, _) in final.items():
            numel = 1
            for d in shape:
                numel *= d
            for slot in ("exp_avg", "exp_avg_sq"):
                self.assertEqual(optimizer[f"{name}.{slot}"][1], [numel])
        self.assertTrue(all(v >= 0 for v in optimizer["classifier.weight.exp_avg_sq"][2]))
        with open(os.path.join(self.run_dir, "checkpoint-30", "scheduler.json")) as f:
            self.assertEqual(json.load(f)["step"], 30)
        self.assertFalse([n for n in os.listdir(self.run_dir) if n.endswith(".tmp")])

    def test_model_layout_and_config(self):
        weights = read_safetensors(os.path.join(self.run_dir, "model.safetensors"))
        self.assertEqual(weights["layers.0.weight"][1], [64, 6])
        self.assertEqual(weights["layers.0.bias"][1], [64])
        self.assertEqual(weights["classifier.weight"][1], [4, 64])
        with open(os.path.join(self.run_dir, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["model_type"], "mlp")
        self.assertEqual((config["input_size"], config["num_classes"]), (6, 4))
        with open(os.path.join(self.run_dir, "training_args.json")) as f:
            args = json.load(f)
        self.assertEqual(args["learning_rate"], 5e-3)
        self.assertEqual(args["save_total_limit"], 2)

    def test_predict_writes_predictions_that_match_the_reported_accuracy(self):
        _, stdout, _ = loom("predict", "--model_name_or_path", self.run_dir, "--test_file",
                            os.path.join(self.data, "test.bin"), "--disable_tqdm")
        reported = float(re.search(r"test_accuracy\s+=\s+([0-9.e+-]+)", stdout).group(1))
        # Without --output_dir the outputs go to RUN/predict, and say so; the run's own stay.
        predictions = os.path.join(self.run_dir, "predict", "predictions.txt")
        self.assertIn(f"loom: wrote {predictions}", stdout)
        self.assertIn(os.path.join(self.run_dir, "predict", "test_results.json"), stdout)
        self.assertFalse(os.path.exists(os.path.join(self.run_dir, "predictions.txt")))
        with open(predictions) as f:
            rows = [line.split("\t") for line in f.read().splitlines()[1:]]
        self.assertEqual(len(rows), 200)
        labels = read_labels(os.path.join(self.data, "test.bin"))
        correct = sum(int(p) == y for (_, p), y in zip(rows, labels))
        self.assertAlmostEqual(correct / len(labels), reported, places=5)
        self.assertGreater(reported, 0.8)

    def test_evaluate_a_saved_model(self):
        run_files = {n: open(os.path.join(self.run_dir, n), "rb").read() for n in os.listdir(self.run_dir)
                     if n.endswith(".json") or n.endswith(".jsonl")}
        _, stdout, _ = loom("evaluate", "--model_name_or_path", self.run_dir, "--validation_file",
                            os.path.join(self.data, "validation.bin"), "--disable_tqdm")
        self.assertIn("eval_loss", stdout)
        with open(os.path.join(self.run_dir, "trainer_state.json")) as f:
            last_eval = [e for e in json.load(f)["log_history"] if "eval_loss" in e][-1]
        got = float(re.search(r"eval_loss\s+=\s+([0-9.e+-]+)", stdout).group(1))
        self.assertAlmostEqual(got, last_eval["eval_loss"], delta=0.5e-4 + 1e-12)   # printed as HF rounds it
        # The training run's results are untouched; the evaluation's are in RUN/evaluate.
        for name, blob in run_files.items():
            self.assertEqual(open(os.path.join(self.run_dir, name), "rb").read(), blob, name)
        written = os.path.join(self.run_dir, "evaluate", "eval_results.json")
        self.assertIn(f"loom: wrote {written}", stdout)
        with open(written) as f:
            text = f.read()
        results = json.loads(text)
        self.assertAlmostEqual(results["eval_loss"], got, delta=0.5e-4 + 1e-12)
        # As HF's save_metrics writes it: json.dump(indent=4, sort_keys=True), speed metrics rounded
        # as speed_metrics rounds them, floats as Python prints them.
        self.assertEqual(text, json.dumps(results, indent=4, sort_keys=True))
        self.assertEqual(results["eval_runtime"], round(results["eval_runtime"], 4))
        self.assertEqual(results["eval_samples_per_second"], round(results["eval_samples_per_second"], 3))
        self.assertIsInstance(results["eval_accuracy"], float)
        # --output_dir naming the run itself is the way to update its results.
        _, stdout, _ = loom("evaluate", "--model_name_or_path", self.run_dir, "--output_dir", self.run_dir,
                            "--validation_file", os.path.join(self.data, "validation.bin"), "--disable_tqdm")
        self.assertIn(f"loom: wrote {os.path.join(self.run_dir, 'eval_results.json')}", stdout)

    def test_plugins_command_lists_every_shipped_plugin(self):
        _, version, _ = loom("version")
        abi = re.search(r"ABI (\d+\.\d+)", version).group(1).replace(".", r"\.")
        _, stdout, _ = loom("plugins")
        for kind, name in (("optimizer", "adamw"), ("optimizer", "adamw_hf"), ("optimizer", "adam"),
                           ("optimizer", "sgd"), ("scheduler", "constant"), ("scheduler", "constant_with_warmup"),
                           ("scheduler", "linear"), ("scheduler", "cosine"), ("scheduler", "cosine_with_restarts"),
                           ("scheduler", "polynomial"), ("precision", "fp32"), ("sharding", "none"),
                           ("comm", "local"), ("callback", "printer"), ("callback", "progress"),
                           ("callback", "early_stopping"), ("callback", "history"), ("callback", "curves"),
                           ("model", "mlp"), ("model", "gpt2"), ("model", "t5"), ("backend", "cuda")):
            self.assertRegex(stdout, rf"(?m)^{kind}\s+{name}\s+\S+\s+{abi}\s+\S+{name}\.so")
        _, stdout, _ = loom("plugins", "--help", "adamw")
        self.assertIn("--adamw.beta1", stdout)


def read_labels(path):
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    _, _, features, _, _, n = struct.unpack("<8sIIIIQ", blob[:32])
    offset = 32 + 4 * n * features
    return list(struct.unpack(f"<{n}i", blob[offset:offset + 4 * n]))


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """(field number, wire type, value) of a protocol buffer message."""
    import struct
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", buf[i:i + 4])[0], i + 4
        else:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        yield number, wire, value


def read_events(path):
    """[(step, {tag: value})] from a TensorBoard event file, checking every CRC."""
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    events, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack("<Q", blob[i:i + 8])
        (length_crc,) = struct.unpack("<I", blob[i + 8:i + 12])
        assert length_crc == masked(crc32c(blob[i:i + 8])), "length CRC"
        data = blob[i + 12:i + 12 + n]
        (data_crc,) = struct.unpack("<I", blob[i + 12 + n:i + 16 + n])
        assert data_crc == masked(crc32c(data)), "data CRC"
        i += 16 + n
        step, scalars, version = 0, {}, None
        for number, _, value in fields(data):
            if number == 2:
                step = value
            elif number == 3:
                version = value
            elif number == 5:
                for _, _, v in fields(value):
                    parts = {num: val for num, _, val in fields(v)}
                    if 2 in parts:
                        scalars[parts[1].decode()] = parts[2]
                    else:  # a plugin's value: (plugin name, content, tensor)
                        plugin = dict((num, val) for num, _, val in fields(dict(
                            (num, val) for num, _, val in fields(parts[9]))[1]))
                        scalars[parts[1].decode()] = (plugin[1].decode(), plugin.get(2), parts.get(8))
        events.append((step, scalars, version))
    return events


class TensorBoardTest(LoomTestCase):
    data_kind = "blobs"

    def test_report_to_tensorboard_writes_hf_tagged_scalars(self):
        out = self.out("tb")
        logs = os.path.join(self.tmp, "tblogs")
        loom(*self.train_args(out, "--report_to", "tensorboard", "--logging_dir", logs, "--max_steps", "12",
                              "--logging_steps", "4", "--validation_file", os.path.join(self.data, "validation.bin"),
                              "--evaluation_strategy", "steps", "--eval_steps", "6"))
        files = [f for f in os.listdir(logs) if f.startswith("events.out.tfevents.")]
        self.assertEqual(len(files), 1)
        events = read_events(os.path.join(logs, files[0]))
        self.assertEqual(events[0][2], b"brain.Event:2")
        with open(os.path.join(out, "trainer_state.json")) as f:
            history = json.load(f)["log_history"]
        train = [(s, v) for s, v, _ in events if "train/loss" in v]
        self.assertEqual([s for s, _ in train], [e["step"] for e in history if "loss" in e])
        for (s, v), e in zip(train, [e for e in history if "loss" in e]):
            self.assertAlmostEqual(v["train/loss"], e["loss"], places=5)
            self.assertAlmostEqual(v["train/learning_rate"], e["learning_rate"], places=9)
        evals = [(s, v) for s, v, _ in events if "eval/loss" in v]
        self.assertEqual([s for s, _ in evals], [6, 12, 12])   # eval_steps, and the final evaluation
        # HF's TensorBoardCallback also logs the epoch, the arguments as text, and the hparams.
        for (s, v), e in zip(train, [e for e in history if "loss" in e]):
            self.assertAlmostEqual(v["train/epoch"], e["epoch"], places=5)
        plugins = {tag: value for _, v, _ in events for tag, value in v.items() if isinstance(value, tuple)}
        plugin, _, tensor = plugins["args/text_summary"]
        self.assertEqual(plugin, "text")
        tensor = {num: val for num, _, val in fields(tensor)}
        self.assertEqual(tensor[1], 7)  # DT_STRING
        args = json.loads(tensor[8])
        self.assertEqual(args["output_dir"], out)
        self.assertEqual(args["logging_steps"], 4)
        plugin, content, _ = plugins["_hparams_/experiment"]
        self.assertEqual(plugin, "hparams")
        experiment = dict((n, v) for n, _, v in fields(content))[2]
        infos = {}
        for n, _, info in fields(experiment):
            info = {k: v for k, _, v in fields(info)}
            infos[info[1].decode()] = info[4]
        self.assertEqual(infos["learning_rate"], 3)  # FLOAT64
        self.assertEqual(infos["output_dir"], 1)  # STRING
        _, content, _ = plugins["_hparams_/session_start_info"]
        start = dict((n, v) for n, _, v in fields(content))[3]
        values = {}
        for n, _, entry in fields(start):
            if n == 1:
                entry = {k: v for k, _, v in fields(entry)}
                values[entry[1].decode()] = {k: v for k, _, v in fields(entry[2])}
        self.assertEqual(values["learning_rate"][2], args["learning_rate"])
        self.assertEqual(values["output_dir"][3].decode(), out)
        code, _, stderr = loom(*self.train_args(self.out("tb2"), "--report_to", "tensorbored"), check=False)
        self.assertEqual(code, 2)
        self.assertIn("tensorbored", stderr)
