#!/usr/bin/env python3
"""torch_curve.py - the G2P job's model and recipe in PyTorch, for comparing learning curves with
`loom train`: the T5 of tests/model/t5_torch_test.py (HF's equations, written with torch) in f32,
HF's T5 initialisation, AdamW with weight decay off for the norms, 300 warm-up steps and a linear
decay over 6,000, gradients clipped at 1, no dropout, batches of 64 shuffled pairs; prints the
mean training loss every 100 steps. --abs_positions adds a learned absolute position table to
both sides' inputs (not T5): the difference is what T5's relative-only positions cost on this
task (docs/benchmarks.md#g2p).
  /usr/bin/python3 examples/g2p/torch_curve.py runs/g2p/data --steps 600 [--heads 8 --d_kv 32]
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "model"))
import t5_torch_test as t5  # noqa: E402  (re-executes under /usr/bin/python3 when torch is elsewhere)
import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="the folder prepare.py wrote (train.jsonl, char_vocab.json)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d_kv", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--abs_positions", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin in OpenMP barriers
    V = len(json.load(open(os.path.join(a.data, "char_vocab.json")))["tokens"])
    t5.V, t5.D, t5.KV, t5.H, t5.F, t5.L, t5.NB, t5.MD = V, 256, a.d_kv, a.heads, 1024, 3, 32, 128
    t5.DT = torch.float32
    W = t5.init_weights(False, hf_init=True, seed=1)
    pos = torch.randn(128, 256).requires_grad_() if a.abs_positions else None
    params = list(W.values()) + ([pos] if pos is not None else [])
    decay = [w for k, w in W.items() if "layer_norm" not in k] + ([pos] if pos is not None else [])
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": [w for k, w in W.items() if "layer_norm" in k], "weight_decay": 0.0}], lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 300 if s < 300 else max(0.0, (6000 - s) / 5700))
    pairs = [json.loads(line) for line in open(os.path.join(a.data, "train.jsonl"))]
    rng, order, at, total, n, t0 = random.Random(1), [], 0, 0.0, 0, time.time()
    for step in range(1, a.steps + 1):
        if at + 64 > len(order):
            order, at = list(range(len(pairs))), 0
            rng.shuffle(order)
        batch = [pairs[j] for j in order[at:at + 64]]
        at += 64
        S, T = max(len(b["input_ids"]) for b in batch), max(len(b["labels"]) for b in batch)
        src = torch.tensor([b["input_ids"] + [0] * (S - len(b["input_ids"])) for b in batch])
        smask = torch.tensor([[1] * len(b["input_ids"]) + [0] * (S - len(b["input_ids"])) for b in batch])
        labels = torch.tensor([b["labels"] + [-100] * (T - len(b["labels"])) for b in batch])
        loss = t5.loss_of(W, src, smask, labels, False, pos)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        total, n = total + loss.item(), n + 1
        if step % 100 == 0:
            print(f"step {step} loss {total / n:.4f} ({time.time() - t0:.0f} s)", flush=True)
            total, n = 0.0, 0


if __name__ == "__main__":
    main()
