"""What a transformers v5 user writes, end to end through `loom train`: a float --warmup_steps
(docs/semantics/schedulers.md#warmup); training_args.json's debug and mp_parameters as HF writes
them (docs/semantics/trainer.md#every-hf-argument); a null in --lr_scheduler_kwargs where HF's
schedule function defaults the parameter to None (docs/semantics/schedulers.md#hf-schedules);
a ds_config's Adagrad and Lion optimizers (docs/semantics/deepspeed.md); v5's string forms of
--include_num_input_tokens_seen (docs/semantics/trainer.md#every-hf-argument).
The references are HF v5's rules written out
again below."""
import json
import math
import os

from loomtest import LoomTestCase, loom, write_pairs
from test_cli_schedules import cosine_warmup_with_min_lr, cosine_with_min_lr, warmup_stable_decay


def linear(t, W, T):
    """transformers' get_linear_schedule_with_warmup lambda."""
    if t < W:
        return t / max(1, W)
    return max(0.0, (T - t) / max(1, T - W))


def hf_v5_warmup(warmup_steps, T):
    """TrainingArguments.get_warmup_steps in v5."""
    return int(warmup_steps) if warmup_steps >= 1 else math.ceil(T * warmup_steps)


class WarmupStepsTest(LoomTestCase):
    def logged_lrs(self, name, *extra, total=10, lr=0.02):
        out = self.out(name)
        loom(*self.train_args(out, "--learning_rate", str(lr), "--max_steps", str(total), "--logging_steps", "1",
                              "--save_strategy", "no", *extra))
        logs = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual([e["step"] for e in logs], list(range(1, total + 1)))
        with open(os.path.join(out, "training_args.json")) as f:
            return [e["learning_rate"] for e in logs], json.load(f)

    def check(self, text, total=10, lr=0.02):
        lrs, args = self.logged_lrs(f"warmup-{text}", "--warmup_steps", text, total=total, lr=lr)
        W = hf_v5_warmup(float(text), total)
        for t, got in enumerate(lrs, 1):
            self.assertAlmostEqual(got, lr * linear(t, W, total), places=12, msg=f"--warmup_steps {text} step {t}")
        return args

    def test_a_float_below_one_is_a_ratio_of_the_run(self):
        # 10 x 0.25 = 2.5: HF's ceil makes it 3 warmup steps.
        args = self.check("0.25")
        self.assertEqual(args["warmup_steps"], 0.25)
        self.assertEqual(args["warmup_ratio"], 0.0)
        self.check("0.3", total=16)

    def test_a_float_from_one_up_is_its_int(self):
        self.check("2.7")
        args = self.check("3")
        self.assertEqual(args["warmup_steps"], 3)

    def test_the_ratio_agrees_with_v4_warmup_ratio(self):
        a, _ = self.logged_lrs("ratio-v5", "--warmup_steps", "0.35")
        b, _ = self.logged_lrs("ratio-v4", "--warmup_ratio", "0.35")
        self.assertEqual(a, b)

    def test_negative_is_refused(self):
        self.assert_error(self.train_args(self.out("neg"), "--warmup_steps", "-0.5"), "--warmup_steps", "-0.5",
                          ">= 0")

    def test_a_ratio_under_deepspeed_becomes_warmup_num_steps(self):
        def config(name, warmup):
            path = self.out(name)
            with open(path, "w") as f:
                json.dump({"train_micro_batch_size_per_gpu": "auto",
                           "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto", "warmup_min_lr": 0,
                                                                        "warmup_num_steps": warmup,
                                                                        "warmup_type": "linear"}}}, f)
            return path
        lr = 0.02
        lrs, _ = self.logged_lrs("ds-ratio", "--deepspeed", config("auto.json", "auto"), "--warmup_steps", "0.25",
                                 lr=lr)
        # DeepSpeed's WarmupLR, linear: min(1, t / W) of warmup_max_lr, W = ceil(10 x 0.25) = 3.
        self.assertEqual(len(lrs), 10)
        for t, got in enumerate(lrs, 1):
            self.assertAlmostEqual(got, lr * min(1.0, t / 3), places=12, msg=f"step {t}")
        self.assert_error(self.train_args(self.out("ds-3"), "--deepspeed", config("four.json", 4), "--warmup_steps",
                                          "0.25", "--max_steps", "10"),
                          "warmup_num_steps=4", "--warmup_steps 0.25 gives 3 steps", status=None)


class TrainingArgsJsonTest(LoomTestCase):
    def test_debug_and_mp_parameters_are_written_as_hf_writes_them(self):
        out = self.out("plain")
        loom(*self.train_args(out, "--max_steps", "1", "--save_strategy", "no"))
        with open(os.path.join(out, "training_args.json")) as f:
            written = json.load(f)
        # HF's __post_init__: debug "" -> [DebugOption(s) for s in "".split()] == []; mp_parameters
        # keeps its dataclass default "".
        self.assertEqual(written["debug"], [])
        self.assertEqual(written["mp_parameters"], "")
        # The file goes back in through --config and comes out the same.
        again = self.out("again")
        loom(*self.train_args(again, "--config", os.path.join(out, "training_args.json"), "--max_steps", "1",
                              "--save_strategy", "no"))
        with open(os.path.join(again, "training_args.json")) as f:
            rewritten = json.load(f)
        self.assertEqual((rewritten["debug"], rewritten["mp_parameters"]), ([], ""))

    def test_debug_tpu_metrics_has_no_effect_and_v42s_bool_is_it(self):
        plain = self.out("no-debug")
        loom(*self.train_args(plain, "--max_steps", "3", "--save_strategy", "no"))
        for form in (["--debug"], ["--debug", "true"], ["--debug", "tpu_metrics_debug"]):
            with self.subTest(form=form):
                out = self.out("tpu-debug")
                _, _, stderr = loom(*self.train_args(out, "--max_steps", "3", "--save_strategy", "no", *form))
                self.assertEqual(stderr.count("--debug tpu_metrics_debug on the command line has no effect"), 1)
                with open(os.path.join(out, "training_args.json")) as f:
                    self.assertEqual(json.load(f)["debug"], ["tpu_metrics_debug"])
                with open(os.path.join(out, "model.safetensors"), "rb") as a, \
                        open(os.path.join(plain, "model.safetensors"), "rb") as b:
                    self.assertEqual(a.read(), b.read())


class SchedulerKwargsNullTest(LoomTestCase):
    def check(self, name, kwargs, reference, W=4, T=16, lr=0.02):
        """The logged rates of a run given `kwargs` (with nulls) against HF's lambda without them."""
        out = self.out(f"{name}-{len(kwargs)}")
        loom(*self.train_args(out, "--learning_rate", str(lr), "--warmup_steps", str(W), "--max_steps", str(T),
                              "--logging_steps", "1", "--save_strategy", "no", "--lr_scheduler_type", name,
                              "--lr_scheduler_kwargs", json.dumps(kwargs)))
        logs = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual(len(logs), T)
        given = {k: v for k, v in kwargs.items() if v is not None}  # HF: None is the parameter's default
        for e in logs:
            self.assertAlmostEqual(e["learning_rate"], lr * reference(e["step"], W, T, given, lr), places=12,
                                   msg=f"{name} {kwargs} step {e['step']}")

    def test_null_is_the_none_default(self):
        self.check("cosine_with_min_lr", {"min_lr": None, "min_lr_rate": 0.3}, cosine_with_min_lr)
        self.check("cosine_warmup_with_min_lr", {"min_lr": 0.002, "min_lr_rate": None, "warmup_lr_rate": None},
                   cosine_warmup_with_min_lr)
        self.check("warmup_stable_decay", {"num_decay_steps": 6, "num_stable_steps": None},
                   lambda t, W, T, kw, lr: warmup_stable_decay(t, W, T, kw))

    def test_null_where_hf_has_no_none_default_is_refused(self):
        for name, key in (("cosine", "num_cycles"), ("warmup_stable_decay", "num_decay_steps")):
            self.assert_error(self.train_args(self.out("never"), "--max_steps", "2", "--lr_scheduler_type", name,
                                              "--lr_scheduler_kwargs", json.dumps({key: None})), key)


class DeepSpeedAdagradLionTest(LoomTestCase):
    def run_bytes(self, name, *extra):
        out = self.out(name)
        loom(*self.train_args(out, "--max_steps", "6", "--logging_steps", "1", "--save_strategy", "no",
                              "--lr_scheduler_type", "constant", *extra))
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            weights = f.read()
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        self.assertEqual(len(losses), 6)
        return weights, losses

    def ds(self, name, optimizer):
        path = self.out(name + ".json")
        with open(path, "w") as f:
            json.dump({"train_micro_batch_size_per_gpu": "auto", "optimizer": optimizer}, f)
        return path

    def test_adagrad_is_the_optim_adagrad_run(self):
        # DeepSpeed builds torch.optim.Adagrad / DeepSpeedCPUAdagrad(lr, eps, weight_decay).
        ds = self.ds("adagrad", {"type": "Adagrad", "params": {"lr": 0.05, "eps": 1e-6, "weight_decay": 0.01}})
        self.assertEqual(self.run_bytes("ds-adagrad", "--deepspeed", ds),
                         self.run_bytes("optim-adagrad", "--optim", "adagrad", "--learning_rate", "0.05",
                                        "--weight_decay", "0.01", "--adagrad.eps", "1e-6"))
        # Without eps, DeepSpeed's Adagrad keeps its own 1e-10 (torch's and DeepSpeedCPUAdagrad's).
        ds = self.ds("adagrad-noeps", {"type": "adagrad", "params": {"lr": 0.05}})
        self.assertEqual(self.run_bytes("ds-adagrad-noeps", "--deepspeed", ds),
                         self.run_bytes("optim-adagrad-noeps", "--optim", "adagrad", "--learning_rate", "0.05",
                                        "--adagrad.eps", "1e-10"))

    def test_lion_is_the_optim_lion_run(self):
        # FusedLion / DeepSpeedCPULion(lr, betas, weight_decay).
        ds = self.ds("lion", {"type": "Lion", "params": {"lr": 0.003, "betas": [0.8, 0.95], "weight_decay": 0.1}})
        self.assertEqual(self.run_bytes("ds-lion", "--deepspeed", ds),
                         self.run_bytes("optim-lion", "--optim", "lion_32bit", "--learning_rate", "0.003",
                                        "--adam_beta1", "0.8", "--adam_beta2", "0.95", "--weight_decay", "0.1"))

    def test_a_key_the_type_lacks_is_refused(self):
        for optimizer, key in (({"type": "Lion", "params": {"eps": 1e-8}}, "eps"),
                               ({"type": "Adagrad", "params": {"betas": [0.9, 0.99]}}, "betas"),
                               ({"type": "RAdam", "params": {}}, "RAdam")):
            self.assert_error(self.train_args(self.out("never"), "--max_steps", "2", "--deepspeed",
                                              self.ds("bad", optimizer)), key, status=None)


class TokensSeenTest(LoomTestCase):
    TINY = ["--vocab_size", "16", "--d_model", "16", "--d_kv", "4", "--num_heads", "2", "--d_ff", "32",
            "--num_layers", "1"]

    def counted(self, name, *mode):
        pairs = self.out("pairs.jsonl")
        if not os.path.exists(pairs):
            self.sources = [len(r) + 1 for r in write_pairs(pairs, 40, 7, longest=6)]  # + eos
        out = self.out(name)
        loom("train", "--train_file", pairs, "--output_dir", out, "--overwrite_output_dir", "--disable_tqdm",
             "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--logging_steps", "1",
             "--save_strategy", "no", *self.TINY, *mode)
        state = self.state(out)
        with open(os.path.join(out, "training_args.json")) as f:
            written = json.load(f)["include_num_input_tokens_seen"]
        logged = [e.get("num_input_tokens_seen") for e in state["log_history"] if "loss" in e]
        return state["num_input_tokens_seen"], logged, written

    def test_the_modes(self):
        # One whole epoch: every source is seen once, whatever the order, so "non_padding" (the
        # attention mask's ones) is the sum of the source lengths.
        total, logged, written = self.counted("non-padding", "--include_num_input_tokens_seen", "non_padding")
        self.assertEqual(total, sum(self.sources))
        self.assertEqual((len(logged), logged[-1], written), (5, total, "non_padding"))
        # "all" counts the padded batches' every position: more, here.
        everything, logged, written = self.counted("all", "--include_num_input_tokens_seen", "all")
        self.assertGreater(everything, total)
        self.assertEqual((logged[-1], written), (everything, "all"))
        # v4's bool: true (or the flag alone) is "all", false "no" (HF v5's __post_init__).
        self.assertEqual(self.counted("flag", "--include_num_input_tokens_seen")[::2], (everything, "all"))
        self.assertEqual(self.counted("true", "--include_num_input_tokens_seen", "true")[::2], (everything, "all"))
        config = self.out("v4.json")  # a v4 training_args.json holds the bool
        with open(config, "w") as f:
            json.dump({"include_num_input_tokens_seen": True}, f)
        self.assertEqual(self.counted("v4-file", "--config", config)[::2], (everything, "all"))
        for name, mode in (("false", ["--include_num_input_tokens_seen", "false"]),
                           ("no", ["--include_num_input_tokens_seen", "no"]), ("default", [])):
            total, logged, written = self.counted(name, *mode)
            self.assertEqual((total, set(logged), written), (0, {None}, "no"), name)

    def test_an_unknown_mode_is_refused(self):
        self.assert_error(self.train_args(self.out("never"), "--include_num_input_tokens_seen", "some"),
                          "--include_num_input_tokens_seen", "'some'", "all, non_padding, no")
