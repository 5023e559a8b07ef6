#!/usr/bin/env python3
"""test_sched_plateau.py - reduce_lr_on_plateau against torch.optim.lr_scheduler.ReduceLROnPlateau
(torch 1.13): the same metric sequences, for every argument HF's lr_scheduler_kwargs pass on
(mode min/max, factor, patience, threshold, threshold_mode rel/abs, cooldown, min_lr, eps), must
give the same learning rate after every step, bit for bit, also when the instance is saved and
restored half way (a resumed run). Needs python3-torch (exit 77, skipped, without it).
usage: test_sched_plateau.py PLATEAU_DRIVER
"""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_or_skip import torch_or_skip  # noqa: E402

torch = torch_or_skip("test_sched_plateau.py")

DRIVER = sys.argv[1]
BASE = 0.01


def torch_rates(kwargs, metrics):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    rates = []
    for m in metrics:
        scheduler.step(m)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def loom_rates(kwargs, metrics, resume_at=0):
    args = [DRIVER, repr(BASE), str(resume_at)]
    for key, value in kwargs.items():
        args += [key, str(value)]
    args += ["--"] + [repr(m) for m in metrics]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return [float.fromhex(line) for line in p.stdout.split()]


def sequences():
    r = random.Random(11)
    # A loss that falls, then stalls with noise, then falls again; an accuracy that rises then
    # stalls; plateaus made of equal values; tiny improvements below the threshold; a NaN.
    falling = [1.0 / (1 + 0.3 * i) for i in range(8)] + [0.3 + 0.001 * r.random() for _ in range(25)]
    falling += [0.2 - 0.01 * i for i in range(6)] + [0.25] * 12
    rising = [0.5 + 0.04 * i for i in range(8)] + [0.8 + 0.0001 * r.random() for _ in range(30)]
    flat = [2.0] * 40
    creeping = [1.0 - 0.00005 * i for i in range(40)]
    noisy = [r.uniform(0.9, 1.1) for _ in range(60)]
    with_nan = [1.0, 0.9, float("nan"), 0.95, 0.9, 0.91, float("nan"), 0.92, 0.93, 0.94, 0.95, 0.8]
    return {"falling": falling, "rising": rising, "flat": flat, "creeping": creeping, "noisy": noisy,
            "with_nan": with_nan}


CONFIGS = [
    {},
    {"patience": 2},
    {"patience": 0, "factor": 0.5},
    {"mode": "max", "patience": 3, "factor": 0.3},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 1},
    {"threshold_mode": "abs", "threshold": 0.001, "patience": 2, "cooldown": 3},
    {"patience": 1, "cooldown": 2, "min_lr": 0.0007, "factor": 0.5},
    {"patience": 1, "factor": 0.9, "eps": 0.0002},
    {"threshold": 0.0, "patience": 4, "cooldown": 1},
    {"mode": "max", "threshold": 0.05, "patience": 2, "min_lr": 0.001},
]


def main():
    failures = checks = 0
    for name, metrics in sequences().items():
        for kwargs in CONFIGS:
            want = torch_rates(kwargs, metrics)
            for resume_at in (0, len(metrics) // 3, len(metrics) // 2 + 1):
                got = loom_rates(kwargs, metrics, resume_at)
                checks += 1
                if got != want:
                    failures += 1
                    first = next(i for i, (a, b) in enumerate(zip(got + [None] * len(want), want)) if a != b)
                    print(f"FAIL {name} {kwargs} resume_at={resume_at}: step {first}: loom {got[first:first + 3]} "
                          f"torch {want[first:first + 3]}")
    # The sequences must exercise reductions, or equality would prove little.
    reduced = sum(1 for m in sequences().values() for k in CONFIGS if torch_rates(k, m)[-1] < BASE)
    if reduced < len(CONFIGS) * 3:
        failures += 1
        print(f"FAIL only {reduced} runs reduced the rate")
    print(f"test_sched_plateau.py: {checks} sequences, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
