"""Causal self-attention alone, forward + backward, in PyTorch: the peer of bench_attention.
One process per measurement (its peak RSS is the measurement's own). Prints one JSON line.

  torch_attention.py --T 1024 --kind sdpa|eager [--B 1 --C 768 --NH 12 --threads 2 --reps 3]
                     [--dtype fp32|bf16]

sdpa: F.scaled_dot_product_attention(is_causal=True) where this PyTorch has it (2.0+); 1.13, the
version Debian ships, has only the private F._scaled_dot_product_attention, which is used then
(on the CPU both 1.13 paths build the [T, T] weights). eager: q k^T / sqrt(d), a causal mask,
softmax, @ v, as GPT-2's HF implementation writes it. kept_bytes: the tensors autograd saved for
backward (distinct storages, inputs q, k, v left out), counted with saved_tensors_hooks.
--dtype bf16: qkv and dout in bf16, as a bf16 GPT-2 under autocast hands its attention (its
products run on oneDNN); the side is then "torch-<kind>-bf16".
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

p = argparse.ArgumentParser()
p.add_argument("--B", type=int, default=1)
p.add_argument("--T", type=int, default=1024)
p.add_argument("--C", type=int, default=768)
p.add_argument("--NH", type=int, default=12)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--kind", choices=["sdpa", "eager"], default="sdpa")
p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
a = p.parse_args()
os.environ["OMP_NUM_THREADS"] = str(a.threads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(a.threads)
hd = a.C // a.NH
g = torch.Generator().manual_seed(1)
dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
qkv = (torch.rand(a.B, a.T, 3 * a.C, generator=g) - 0.5).to(dt).requires_grad_(True)
dout = (torch.rand(a.B, a.T, a.C, generator=g) - 0.5).to(dt)
mask = torch.tril(torch.ones(a.T, a.T, dtype=torch.bool))


def sdpa(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F._scaled_dot_product_attention(q, k, v, None, 0.0, False, True)[0]


def eager(q, k, v):
    w = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    w = w.masked_fill(~mask, float("-inf"))
    return torch.softmax(w, dim=-1) @ v


def attention(x):
    q, k, v = x.split(a.C, dim=2)
    q, k, v = (t.view(a.B, a.T, a.NH, hd).transpose(1, 2) for t in (q, k, v))
    y = (sdpa if a.kind == "sdpa" else eager)(q, k, v)
    return y.transpose(1, 2).contiguous().view(a.B, a.T, a.C)


kept = {}


def pack(t):
    s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    kept[s.data_ptr()] = s.nbytes() if hasattr(s, "nbytes") else s.size() * t.element_size()
    return t


fwd, bwd = [], []
for r in range(a.reps + 1):
    kept.clear()
    qkv.grad = None
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = attention(qkv)
    t1 = time.perf_counter()
    y.backward(dout)
    t2 = time.perf_counter()
    if r > 0:
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    q_storage = qkv.untyped_storage() if hasattr(qkv, "untyped_storage") else qkv.storage()
    kept.pop(q_storage.data_ptr(), None)
total = sorted(f + b for f, b in zip(fwd, bwd))
print(json.dumps(dict(side=f"torch-{a.kind}" + ("-bf16" if a.dtype == "bf16" else ""), B=a.B, T=a.T, C=a.C, NH=a.NH, threads=a.threads,
                      fwd_ms=1e3 * statistics.median(fwd), bwd_ms=1e3 * statistics.median(bwd),
                      ms_median=1e3 * statistics.median(total), ms_min=1e3 * total[0], ms_max=1e3 * total[-1],
                      kept_bytes=sum(kept.values()),
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      torch=torch.__version__, sdpa_public=hasattr(F, "scaled_dot_product_attention"))),
      flush=True)
