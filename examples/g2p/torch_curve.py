#!/usr/bin/env python3
"""torch_curve.py - the G2P job's model and recipe in PyTorch, for comparing learning curves with
`loom train`: the T5 of tests/model/t5_torch_test.py (HF's equations, written with torch) in f32,
HF's T5 initialisation, AdamW with weight decay off for the norms, 300 warm-up steps and a linear
decay over 6,000, gradients clipped at 1, no dropout, batches of 64 shuffled pairs; prints the
mean training loss every 100 steps. --abs_positions adds a learned absolute position table to
both sides' inputs (not T5): the difference is what T5's relative-only positions cost on this
task (docs/benchmarks.md#g2p). --order sortish reads the batches in the order of the seq2seq
examples' sortish_sampler_indices (what `loom train --sortish_sampler` does, with Python's random
draws); --loom_order PRINT_ORDER reads loom's own training order of each epoch, as
build/tests/data/print_order prints it (--order names the sampler, --seed its seed).
  /usr/bin/python3 examples/g2p/torch_curve.py runs/g2p/data --steps 600 [--heads 8 --d_kv 32]
  /usr/bin/python3 examples/g2p/torch_curve.py runs/g2p/data --steps 300 --order sortish
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "model"))
import t5_torch_test as t5  # noqa: E402  (re-executes under /usr/bin/python3 when torch is elsewhere)
import torch  # noqa: E402


def sortish_sampler_indices(lengths, bs, rng):
    """The seq2seq examples' sortish_sampler_indices: chunks of 50 * bs of a shuffle sorted by
    decreasing length, cut into batches; the batch with the longest first row first, the rest
    shuffled."""
    idxs = list(range(len(lengths)))
    rng.shuffle(idxs)
    sz = 50 * bs
    ck = [sorted(idxs[i:i + sz], key=lambda i: lengths[i], reverse=True) for i in range(0, len(idxs), sz)]
    sort_idx = sum(ck, [])
    batches = [sort_idx[i:i + bs] for i in range(0, len(sort_idx), bs)]
    k = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
    batches[0], batches[k] = batches[k], batches[0]
    rest = batches[1:]
    rng.shuffle(rest)
    return sum([batches[0]] + rest, [])


def epoch_order(a, pairs, rng, epoch):
    if a.loom_order:
        out = subprocess.run([a.loom_order, os.path.join(a.data, "train.jsonl"), a.order, "64", str(a.seed), "1", "0",
                              str(epoch)], check=True, capture_output=True, text=True).stdout
        return [int(i) for i in out.split()]
    if a.order == "sortish":
        return sortish_sampler_indices([len(p["input_ids"]) for p in pairs], 64, rng)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    return order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="the folder prepare.py wrote (train.jsonl, char_vocab.json)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d_kv", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--abs_positions", action="store_true")
    ap.add_argument("--order", choices=("random", "sortish", "group_by_length"), default="random")
    ap.add_argument("--loom_order", metavar="PRINT_ORDER", help="read loom's order from this print_order binary")
    ap.add_argument("--seed", type=int, default=1, help="the order's seed (with --loom_order, loom's --seed)")
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
    if a.order == "group_by_length" and not a.loom_order:
        ap.error("--order group_by_length needs --loom_order")
    rng, order, at, epoch, total, n, t0 = random.Random(a.seed), [], 0, -1, 0.0, 0, time.time()
    for step in range(1, a.steps + 1):
        if at + 64 > len(order):
            epoch += 1
            order, at = epoch_order(a, pairs, rng, epoch), 0
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
