"""The PyTorch side of bench/adamw_bandwidth: torch.optim.AdamW's step on the same parameters,
counted as loom's is (28 bytes per parameter: f32 param, grad, exp_avg, exp_avg_sq read;
param, exp_avg, exp_avg_sq written), once with foreach=True (the multi-tensor path) and once
with foreach=False (one tensor at a time). Prints one JSON line per (threads, foreach). Run with
Debian's /usr/bin/python3.

  torch_adamw_bandwidth.py --n 33554432 --layout flat|gpt2 --threads 1 --reps 10

The first step of each optimizer is not timed: it allocates the state (torch creates exp_avg
and exp_avg_sq lazily) and pays for their page faults.
"""
import argparse
import json
import os
import statistics
import time

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=1 << 25)
p.add_argument("--layout", choices=["flat", "gpt2"], default="flat")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--reps", type=int, default=10)
a = p.parse_args()
os.environ["OMP_NUM_THREADS"] = str(a.threads)
import torch  # noqa: E402

torch.set_num_threads(a.threads)


def shapes():
    """(numel, weight decay) per tensor, as bench_adamw_bandwidth lays them out."""
    if a.layout == "flat":
        return [(a.n, 0.1)]
    C, V, P = 768, 50257, 1024
    out = [(V * C, 0.1), (P * C, 0.1)]
    block = [(C, 0), (C, 0), (C * 3 * C, 1), (3 * C, 0), (C * C, 1), (C, 0), (C, 0), (C, 0),
             (C * 4 * C, 1), (4 * C, 0), (4 * C * C, 1), (C, 0)]
    for _ in range(12):
        out += [(k, 0.1 if d else 0.0) for k, d in block]
    return out + [(C, 0.0), (C, 0.0)]


def run(foreach):
    sizes = shapes()
    g = torch.Generator().manual_seed(1234)
    params = []
    for k, _ in sizes:
        t = torch.rand(k, generator=g) - 0.5
        t.requires_grad_(True)
        t.grad = (torch.rand(k, generator=g) - 0.5) * 0.02
        params.append(t)
    groups = [{"params": [t for t, (_, d) in zip(params, sizes) if d > 0], "weight_decay": 0.1},
              {"params": [t for t, (_, d) in zip(params, sizes) if d == 0], "weight_decay": 0.0}]
    groups = [grp for grp in groups if grp["params"]]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=foreach)
    times = []
    for r in range(a.reps + 1):
        t0 = time.perf_counter()
        opt.step()
        dt = time.perf_counter() - t0
        if r:
            times.append(dt)
    n = sum(k for k, _ in sizes)
    best, median = min(times), statistics.median(times)
    bytes_ = 28.0 * n
    print(json.dumps({"side": "torch", "what": "adamw_foreach" if foreach else "adamw_single",
                      "threads": a.threads, "n": n, "bytes": bytes_, "best_s": best, "median_s": median,
                      "gbps_best": bytes_ / best * 1e-9, "gbps_median": bytes_ / median * 1e-9,
                      "spans": len(sizes), "torch": torch.__version__}), flush=True)


for fe in (True, False):
    run(fe)
