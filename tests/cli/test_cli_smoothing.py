"""--label_smoothing_factor, --adafactor and GPT-2's dropout end to end on a tiny gpt2.

The smoothed evaluation loss loom reports is checked against HF's LabelSmoother computed here
from the saved weights by an independent GPT-2 forward in plain Python (float64; no numpy or
torch on this machine): (1 - eps) nll + eps mean over the vocabulary of -log p, averaged over
the targets. Adafactor trains the same model (HF's --adafactor defaults), also under zero1. Dropout (resid/embd/attn_pdrop): a run resumed from a checkpoint logs the same
losses and ends with the same weights as the uninterrupted run; the masks differ from step to
step; evaluation is dropout-free (the loss of the saved weights without dropout)."""
import shutil
import json
import math
import os
import struct
import unittest

from loomtest import LoomTestCase, loom, read_safetensors, write_token_file, write_tokens

V, C, NH, L, P, BLOCK = 48, 8, 2, 1, 16, 8


def read_tokens(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<256i", blob[:1024])[2]
    return list(struct.unpack(f"<{n}H", blob[1024:1024 + 2 * n]))


def layernorm(x, w, b):
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    r = 1.0 / math.sqrt(var + 1e-5)
    return [(v - mean) * r * wi + bi for v, wi, bi in zip(x, w, b)]


def conv1d(x, w, b, out):  # HF Conv1D: w [in, out]
    return [b[o] + sum(x[i] * w[i * out + o] for i in range(len(x))) for o in range(out)]


def gelu(u):
    return 0.5 * u * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def gpt2_logits(weights, tokens):
    """GPT2LMHeadModel's logits for one sequence, from HF-named tensors."""
    W = {k: v[2] for k, v in weights.items()}
    T, hs = len(tokens), C // NH
    x = [[W["transformer.wte.weight"][tok * C + c] + W["transformer.wpe.weight"][t * C + c] for c in range(C)]
         for t, tok in enumerate(tokens)]
    for layer in range(L):
        p = lambda name: W[f"transformer.h.{layer}.{name}"]
        qkv = [conv1d(layernorm(row, p("ln_1.weight"), p("ln_1.bias")), p("attn.c_attn.weight"),
                      p("attn.c_attn.bias"), 3 * C) for row in x]
        y = [[0.0] * C for _ in range(T)]
        for h in range(NH):
            for t in range(T):
                scores = [sum(qkv[t][h * hs + i] * qkv[s][C + h * hs + i] for i in range(hs)) / math.sqrt(hs)
                          for s in range(t + 1)]
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                z = sum(e)
                for i in range(hs):
                    y[t][h * hs + i] = sum(e[s] / z * qkv[s][2 * C + h * hs + i] for s in range(t + 1))
        for t in range(T):
            a = conv1d(y[t], p("attn.c_proj.weight"), p("attn.c_proj.bias"), C)
            x[t] = [u + v for u, v in zip(x[t], a)]
            hdn = [gelu(u) for u in conv1d(layernorm(x[t], p("ln_2.weight"), p("ln_2.bias")),
                                             p("mlp.c_fc.weight"), p("mlp.c_fc.bias"), 4 * C)]
            m = conv1d(hdn, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"), C)
            x[t] = [u + v for u, v in zip(x[t], m)]
    wte = W["transformer.wte.weight"]
    out = []
    for t in range(T):
        h = layernorm(x[t], W["transformer.ln_f.weight"], W["transformer.ln_f.bias"])
        out.append([sum(h[c] * wte[v * C + c] for c in range(C)) for v in range(V)])
    return out


def smoothed_loss(logits_rows, labels, eps):
    """HF's LabelSmoother (trainer_pt_utils.py) on rows of logits: sums, then the means."""
    nll, smooth, n = 0.0, 0.0, 0
    for row, label in zip(logits_rows, labels):
        if label == -100:
            continue
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        log_probs = [lse - v for v in row]          # -log_softmax
        nll += log_probs[label]
        smooth += sum(log_probs)
        n += 1
    return (1 - eps) * nll / n + eps * smooth / (n * len(logits_rows[0]))


class TinyGpt2:
    """A one-layer gpt2 over V token ids for a LoomTestCase: 400 training tokens and three
    evaluation blocks written once per class, and its `loom train` arguments (the class's own
    `run_args` after the common ones)."""

    run_args = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.train = os.path.join(cls.tmp, "train.bin")
        cls.valid = os.path.join(cls.tmp, "valid.bin")
        write_tokens(cls.train, 400, V, 11)
        write_tokens(cls.valid, 3 * BLOCK + 1, V, 12)

    def gpt2_args(self, out, *extra):
        return ["train", "--output_dir", out, "--overwrite_output_dir", "--model", "gpt2", "--gpt2.n_layer", str(L),
                "--gpt2.n_head", str(NH), "--gpt2.n_embd", str(C), "--gpt2.vocab_size", str(V),
                "--gpt2.n_positions", str(P), "--block_size", str(BLOCK), "--train_file", self.train,
                "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "3", "--learning_rate", "1e-2",
                "--logging_steps", "1", "--disable_tqdm", *self.run_args, *extra]

    def eval_loss(self, out):
        with open(os.path.join(out, "eval_results.json")) as f:
            return json.load(f)["eval_loss"]


class SmoothingTest(TinyGpt2, LoomTestCase):
    data_kind = None
    run_args = ("--save_strategy", "no")

    def python_loss(self, out, eps):
        weights = read_safetensors(os.path.join(out, "model.safetensors"))
        tokens = read_tokens(self.valid)
        rows, labels = [], []
        for i in range((len(tokens) - 1) // BLOCK):
            block = tokens[i * BLOCK:i * BLOCK + BLOCK + 1]
            rows += gpt2_logits(weights, block[:-1])
            labels += block[1:]
        return smoothed_loss(rows, labels, eps)

    def test_smoothed_eval_loss_matches_hf_label_smoother(self):
        out = self.out("smooth")
        _, stdout, _ = loom(*self.gpt2_args(out, "--max_steps", "3", "--label_smoothing_factor", "0.2",
                                            "--do_eval", "--validation_file", self.valid))
        got = self.eval_loss(out)
        want = self.python_loss(out, 0.2)
        self.assertAlmostEqual(got, want, delta=2e-5 * abs(want))
        # Not the plain loss of the same weights: the smoothing is in it.
        self.assertGreater(abs(got - self.python_loss(out, 0.0)), 1e-3)
        # The saved config.json describes the model, not how it was trained.
        with open(os.path.join(out, "config.json")) as f:
            self.assertNotIn("label_smoothing_factor", json.load(f))

    def test_adafactor_trains_gpt2(self):
        # A learnable sequence (a period of 5 tokens), unlike the pseudo-random training file.
        periodic = os.path.join(self.tmp, "periodic.bin")
        n = 400
        write_token_file(periodic, [(7 * (i % 5) + 3) % V for i in range(n)])
        out = self.out("adafactor")
        args = [a if a != self.train else periodic for a in self.gpt2_args(out)]
        _, stdout, _ = loom(*args, "--max_steps", "12", "--adafactor", "--lr_scheduler_type", "constant",
                            "--weight_decay", "0.01")
        self.assertIn("[optimizer] adafactor", stdout)
        logs = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        self.assertEqual(len(logs), 12)
        self.assertLess(sum(logs[-3:]) / 3, sum(logs[:3]) / 3)
        # HF's Trainer gives Adafactor the learning rate only: beta1 stays None, relative_step off.
        self.assertIn("adafactor.relative_step = false", stdout)
        self.assertNotIn("adafactor.beta1 =", stdout)

    def test_zero1_takes_adafactor(self):
        # ZeRO cuts its partitions at tensor boundaries for Adafactor (multi-rank runs:
        # test_cli_zero_adafactor.py); on one rank it owns everything and trains the same bits.
        models = []
        for name, extra in (("zero1", ("--plugin", "zero1")), ("plain", ())):
            out = self.out(f"adafactor-{name}")
            _, stdout, _ = loom(*self.gpt2_args(out, "--max_steps", "3", "--optim", "adafactor", *extra))
            self.assertIn("[optimizer] adafactor", stdout)
            self.assertEqual("[sharding] zero1" in stdout, name == "zero1")
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                models.append(f.read())
        self.assertEqual(models[0], models[1])

    def test_dropout_resume_is_exact_and_eval_is_dropout_free(self):
        drop = ("--gpt2.resid_pdrop", "0.2", "--gpt2.embd_pdrop", "0.1", "--gpt2.attn_pdrop", "0.3")
        full = self.out("drop-full")
        args = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--lr_scheduler_type",
                "constant", "--do_eval", "--validation_file", self.valid, *drop]
        loom(*self.gpt2_args(full, *args))
        half = self.out("drop-half")
        os.makedirs(half)
        shutil.copytree(os.path.join(full, "checkpoint-3"), os.path.join(half, "checkpoint-3"))
        args_resume = [a for a in self.gpt2_args(half, *args) if a != "--overwrite_output_dir"]
        _, stdout, _ = loom(*args_resume)
        self.assertIn("checkpoint detected, resuming training at", stdout)
        losses = lambda out: [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        self.assertEqual(len(losses(full)), 6)
        self.assertEqual(losses(half), losses(full)[3:] if len(losses(half)) == 3 else losses(full))
        with open(os.path.join(full, "model.safetensors"), "rb") as a, open(os.path.join(half, "model.safetensors"),
                                                                             "rb") as b:
            self.assertEqual(a.read(), b.read())
        # Evaluation without dropout: the plain loss of the final weights.
        self.assertAlmostEqual(self.eval_loss(full), self.python_loss(full, 0.0), delta=2e-5 * self.eval_loss(full))
        # Dropout is on in training: the same weights and data without it give other losses.
        nodrop = self.out("drop-none")
        loom(*self.gpt2_args(nodrop, "--max_steps", "6", "--lr_scheduler_type", "constant"))
        self.assertNotEqual(losses(nodrop)[0], losses(full)[0])


if __name__ == "__main__":
    unittest.main()
