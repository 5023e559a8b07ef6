"""The PyTorch side of bench/gpt2_step: the same GPT-2 (pre-LN blocks, fused qkv, GELU tanh,
tied LM head, GPT-2 init) trained the same way (AdamW lr 1e-4, no clipping, random tokens, a new
batch every step), timed step by step. Prints one JSON line. Run with Debian's /usr/bin/python3.

  torch_gpt2_step.py --config gpt2-mini --B 8 --T 64 --threads 2 --warmup 3 --steps 10 [--precision bf16]

--precision bf16 runs forward and loss under torch.autocast("cpu", dtype=torch.bfloat16), as
PyTorch users train in bf16 on a CPU (f32 weights, bf16 matrix products through oneDNN).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--config", default="gpt2-mini")
p.add_argument("--B", type=int, default=8)
p.add_argument("--T", type=int, default=64)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
a = p.parse_args()
# Debian's torch uses the system OpenBLAS, whose pool only listens to the environment.
os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
os.environ["OMP_NUM_THREADS"] = str(a.threads)
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2 import SIZES, build  # noqa: E402

L, H, C, V, P = SIZES[a.config]
torch.set_num_threads(a.threads)
torch.manual_seed(1234)
model = build(a.config)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
gen = torch.Generator().manual_seed(1234)
times = []
for step in range(a.warmup + a.steps):
    tokens = torch.randint(0, V, (a.B, a.T + 1), generator=gen)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    opt.step()
    if step >= a.warmup:
        times.append(time.perf_counter() - t0)
n_params = sum(p_.numel() for p_ in model.parameters())
median = statistics.median(times)
flops_token = 6 * (n_params - P * C) + 12 * L * C * a.T
print(json.dumps(dict(side="torch", precision=a.precision, config=a.config, n_params=n_params, B=a.B, T=a.T, threads=a.threads,
                      steps=a.steps, ms_min=1e3 * min(times), ms_median=1e3 * median, ms_max=1e3 * max(times),
                      tok_per_s_median=a.B * a.T / median,
                      model_gflops_per_s_median=flops_token * a.B * a.T / median * 1e-9,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      torch=torch.__version__, OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", ""))))
